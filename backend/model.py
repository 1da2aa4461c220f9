"""An ONNX water model with its card: load, pick an execution provider, normalise, run.

This is the only place that talks to ONNX Runtime. The engine feeds it batches of
tiles already converted to the card's units; it returns water probability.
"""
from __future__ import annotations

import functools
import io
import math
import mmap
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .card import CLASS_KINDS, ModelCard, card_from_metadata
from .errors import CardError, ModelError, first_line
from .tiling import BLOCK_MULTIPLE

DEVICES = ("auto", "cpu", "cuda")
_CUDA = "CUDAExecutionProvider"
PROBABILITY_SLACK = 1e-5   # float rounding of a sigmoid or softmax output beyond 0..1
# a softmax's classes sum to 1 within float32 rounding (about 1e-7 a class), far inside
# this; logits never do at every pixel of a run
SUM_TOLERANCE = 1e-3
SUM_ROWS = 8   # of a batch's rows, every 8th is summed over the classes: the check's cost
_CPU = "CPUExecutionProvider"
MAX_STREAMS = 8   # concurrent CPU calls at most: each holds a tile's activations
# The first ONNX Runtime that refuses external data outside the model's folder
# (microsoft/onnxruntime#26776): an older one read /etc/passwd as a crafted model's weights.
CHECKS_EXTERNAL_DATA = (1, 24)
# An initializer's external_data entry whose key is "location" (StringStringEntryProto field 1,
# 8 bytes long): how a tensor names the file that holds its bytes.
_LOCATION_KEY = b"\x0a\x08location"


@dataclass
class SeenOutputs:
    """What a run's raw outputs looked like over all its calls (:meth:`OnnxModel.kind_doubt`)."""
    calls: int = 0
    low: float = math.inf
    high: float = -math.inf
    sum_off: float = 0.0   # the largest |sum over the classes - 1| of the rows summed


@dataclass(frozen=True)
class ProviderChoice:
    """Which ONNX Runtime execution providers to ask for, and why."""
    providers: list[str]
    notes: list[str]


def choose_providers(device: str, available: list[str] | None = None) -> ProviderChoice:
    """Map ``auto|cpu|cuda`` to ORT providers, explaining every provider not used."""
    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    available = list(ort.get_available_providers() if available is None else available)
    has_cuda = _CUDA in available
    no_cuda_why = ("CUDA not used: this onnxruntime build has no CUDAExecutionProvider "
                   "(install onnxruntime-gpu and an NVIDIA driver to use a GPU)")
    if device == "cpu":
        notes = ["CUDA not used: device 'cpu' was asked for"] if has_cuda else [no_cuda_why]
        return ProviderChoice([_CPU], notes)
    if device == "cuda" and not has_cuda:
        raise ModelError("device 'cuda' was asked for, but " + no_cuda_why[len("CUDA not used: "):]
                         + "; use --device auto or cpu")
    if has_cuda:
        return ProviderChoice([_CUDA, _CPU], [])
    return ProviderChoice([_CPU], [no_cuda_why])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def stderr_captured(into: list[str]) -> Iterator[None]:
    """Append to ``into`` what native code writes to this process's stderr (fd 2) meanwhile.

    ONNX Runtime reports a CUDA provider that fails to start on stderr itself, past the
    session's log level: a few coloured lines among a run's output. Captured, they give
    the run's one-line reason instead.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            into.append(_ANSI.sub("", log.read().decode("utf-8", "replace")))


@functools.cache
def preload_cuda_libraries() -> str:
    """Load the CUDA and cuDNN libraries of NVIDIA's pip packages (``pip install
    onnxruntime-gpu[cuda,cudnn]``), which the dynamic loader does not search, so that a
    CUDA session finds them; returns what ONNX Runtime printed meanwhile.

    ``onnxruntime.preload_dlls`` (1.21+) prints on stdout, which is our JSON channel: that
    goes to the returned text instead.
    """
    preload = getattr(ort, "preload_dlls", None)
    printed = io.StringIO()
    if preload is not None:
        with redirect_stdout(printed):
            try:
                preload()
            except Exception as exc:  # a broken install: the session's start says the rest
                print(first_line(exc))
    return printed.getvalue()


def cuda_failure(ort_log: str) -> str:
    """ONNX Runtime's own reason that its CUDA provider did not start, in one line: the
    library it could not load and the CUDA and cuDNN it requires, or the CUDA error the
    provider raised ('' if it gave none)."""
    raised = re.search(r"EP Error (.+?) when using", ort_log, re.DOTALL)
    if raised:   # the provider loaded and then failed: no device visible, an old driver
        cuda_error = re.search(r"CUDA failure \d+: [^;\n]+", raised.group(1))
        return (cuda_error.group(0) if cuda_error else raised.group(1)).strip().splitlines()[0]
    parts = []
    library = re.search(r"with error: ([^\n]+)", ort_log)
    if library and "libcuda.so" in library.group(1):  # the driver's library, not the toolkit's
        return f"no NVIDIA driver: {library.group(1).strip()}"
    if library:
        parts.append(library.group(1).strip())
    needs = re.search(r"Require ([^\n]+?)\.(?: |$)", ort_log, re.MULTILINE)
    if needs:
        parts.append(f"this onnxruntime needs {needs.group(1).strip()}")
    return "; ".join(parts)


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", version)[:2])


def cuda_options() -> dict[str, str]:
    """The CUDA provider's options: TF32 off (ONNX Runtime turns it on by default on
    Ampere and newer GPUs since 1.18), so that a GPU's probabilities are the float32 ones
    the export's parity check and the CPU give, not ones with 10-bit mantissas."""
    return {"use_tf32": "0"} if _major_minor(ort.__version__) >= (1, 18) else {}


def _names_external_data(path: str) -> bool:
    """Whether the ONNX file holds the bytes of an external data "location" key.

    A scan of the bytes, as the backend has no onnx package to parse the file with, mapped
    rather than read so that a large model is not held twice. It also finds a metadata key, a
    node's input or attribute, or a graph's input or output named "location" (the same field 1
    of 8 bytes): such a model is refused too, with the message that says what to do.
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:   # mmap refuses an empty file: ORT says the rest
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(_LOCATION_KEY) >= 0


def external_data_refusal(path: str, ort_version: str) -> str | None:
    """Why ONNX Runtime ``ort_version`` must not load the model at ``path``, or None: an
    ONNX Runtime older than 1.24 reads external data from any path a model names."""
    if _major_minor(ort_version) >= CHECKS_EXTERNAL_DATA or not _names_external_data(path):
        return None
    return (f"{path}: the model keeps weights in external data (files it names, whose bytes "
            f"ONNX Runtime loads as tensors), and onnxruntime {ort_version} loads them from any "
            "path, even outside the model's folder: a crafted model could copy a file you can "
            "read into its output. Use onnxruntime >= 1.24 (Python >= 3.11), which refuses "
            "paths outside the model's folder, or a model with its weights inside the .onnx file")


def device_report(model_path: str) -> dict:
    """What ``python -m backend devices`` prints: providers, and whether CUDA really starts."""
    available = ort.get_available_providers()
    report = {"onnxruntime": ort.__version__, "available_providers": available,
              "cuda_usable": False}
    try:
        report["cuda_usable"] = OnnxModel(model_path, device="cuda").provider == _CUDA
        report["reason"] = "CUDA starts: --device auto will use it"
    except (ModelError, CardError) as exc:
        # the error is worded for a run that asked for cuda; nobody asked here
        why = str(exc).split("was asked for, but ", 1)[-1].removesuffix("; use --device auto or cpu")
        report["reason"] = f"CUDA cannot be used: {why}"
    return report


def default_threads() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _session_options(cuda: bool, threads: int, card_only: bool = False) -> ort.SessionOptions:
    """A session's options: ``threads`` per call (on the CPU)."""
    options = ort.SessionOptions()
    if card_only:   # constant folding computes as the session is made: a 1.7 KB model took 2 GB
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT's own warnings would bypass our JSON protocol
    # idle pool threads must not spin: the reader and writer threads need those cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # on the CPU a recorded memory pattern only makes the second call allocate (and
    # page in) one more big block: measured 35 ms against 16 for the bundled model's
    # tile, with no steady-state difference; CUDA keeps ORT's default
    options.enable_mem_pattern = cuda
    return options


class OnnxModel:
    """A validated ONNX model and its card, ready to run on batches of tiles.

    :meth:`normalize` takes float32 ``(N, C, H, W)`` in the card's units and band
    order, NaN where the input had no data, and gives the model's input and the mask
    of valid pixels; :meth:`infer` runs the graph on it and returns ``(N, H, W)``
    water probability (the engine sets NaN where a pixel was not valid).
    """

    def __init__(self, path: str, device: str = "auto", streams: int | None = None,
                 card_only: bool = False):
        """``streams``: concurrent calls on the CPU (by default half the cores, at most
        ``MAX_STREAMS``); CUDA runs one call at a time. ``card_only``: for the card and the
        graph's inputs and outputs, not to run: the graph is not optimised."""
        self.path = str(path)
        if os.path.isdir(self.path):
            raise ModelError(f"{self.path}: is a folder, not an ONNX model file")
        if not os.path.isfile(self.path):
            raise ModelError(f"{self.path}: model file not found")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as exc:   # ORT would call it not a loadable model
            raise ModelError(f"{self.path}: cannot be read ({exc.strerror or exc})") from None
        refusal = external_data_refusal(self.path, ort.__version__)
        if refusal:
            raise ModelError(refusal)
        choice = choose_providers(device)
        cuda = _CUDA in choice.providers
        threads = default_threads()
        # On many cores the CPU runs tiles as concurrent calls (the engine's model pool), of
        # cores / streams threads each: at batch 1 the bundled model's operators do not
        # spread over many threads (16 cores of the GPU machine ran it no faster than 2;
        # BENCHMARKS.md). Two cores keep one call at a time: two calls of one thread made
        # the model alone 18 % faster there but predict no faster, its reader and writer
        # needing the slack, for 50 MB more (each call holds its own activations).
        cpu_streams = streams or max(1, min(threads // 2, MAX_STREAMS))
        self.streams = 1 if cuda else cpu_streams
        options = _session_options(cuda, threads // self.streams, card_only)
        ort_log: list[str] = []
        printed = io.StringIO()   # a CUDA provider that raises as it starts: ORT print()s
        try:                      # why, then retries on the CPU; stdout is our JSON channel
            with stderr_captured(ort_log) if cuda else nullcontext(), redirect_stdout(printed):
                if cuda:
                    ort_log.append(preload_cuda_libraries())
                self.session = ort.InferenceSession(
                    self.path, options,
                    providers=[(p, cuda_options()) if p == _CUDA else p for p in choice.providers])
        except Exception as exc:  # ORT raises several private exception types
            sys.stderr.write("".join(ort_log) + printed.getvalue())
            raise ModelError(f"{self.path}: not a loadable ONNX model "
                             f"({first_line(exc)})") from None
        ort_log.append(printed.getvalue())
        if cuda:   # a provider failing later would be swapped for the CPU, print()ing too
            self.session.disable_fallback()
        try:
            metadata = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:
            raise CardError(f"{self.path}: the model's metadata is not UTF-8 text, so its card "
                            "cannot be read (write every metadata value as UTF-8)") from None
        self.card: ModelCard = card_from_metadata(metadata, self.path)
        used = self.session.get_providers()
        self.provider = used[0]
        self.provider_notes = list(choice.notes)
        # ORT falls back to the CPU when the CUDA libraries or driver are missing
        fell_back = cuda and used[0] != _CUDA
        why = cuda_failure("".join(ort_log)) if fell_back else ""
        if not why:  # nothing that the reason below sums up: pass it on as it came
            sys.stderr.write("".join(ort_log))
        if fell_back:
            why = why or "the NVIDIA driver or the CUDA/cuDNN libraries are missing"
            if device == "cuda":
                raise ModelError(f"{self.path}: device 'cuda' was asked for, but ONNX Runtime "
                                 f"could not start its CUDA provider ({why})")
            self.provider_notes.append(f"CUDA not used: ONNX Runtime could not start its CUDA "
                                       f"provider ({why})")
            if cpu_streams > 1:   # the CPU's concurrent calls, not CUDA's one over every core
                self.streams = cpu_streams
                self.session = ort.InferenceSession(
                    self.path, _session_options(False, threads // cpu_streams, card_only),
                    providers=[_CPU])
        self._check_tensors()
        self._warming: threading.Thread | None = None
        self._seen_lock = threading.Lock()   # the model pool's threads call infer at once
        self.seen = SeenOutputs()
        bands = self.card.bands
        self._lo = np.array([b.clip[0] for b in bands], np.float32).reshape(1, -1, 1, 1)
        self._hi = np.array([b.clip[1] for b in bands], np.float32).reshape(1, -1, 1, 1)
        self._offset = np.array([b.offset for b in bands], np.float32).reshape(1, -1, 1, 1)
        self._scale = np.array([b.scale for b in bands], np.float32).reshape(1, -1, 1, 1)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph insists on, or None when it is dynamic."""
        n = self.session.get_inputs()[0].shape[0]
        return n if isinstance(n, int) else None

    @property
    def fixed_tile(self) -> int | None:
        """The tile edge the graph insists on (square), or None when H and W are dynamic."""
        h, w = self.session.get_inputs()[0].shape[2:]
        if isinstance(h, int) or isinstance(w, int):
            if h != w:
                raise CardError(f"{self.path}: the graph's input is {h} x {w}; the backend "
                                "feeds square tiles, so H and W must be equal or dynamic")
            return h
        return None

    @property
    def device_name(self) -> str:
        return "cuda" if self.provider == _CUDA else "cpu"

    def _check_tensors(self) -> None:
        card = self.card
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        problems = []
        if card.input_name not in inputs:
            problems.append(f"card input tensor {card.input_name!r} is not in the graph "
                            f"(graph inputs: {', '.join(inputs)})")
        else:
            shape = inputs[card.input_name].shape
            bands = len(card.bands)
            if len(shape) != 4:
                problems.append(f"input {card.input_name!r} must be 4-D NCHW, graph has {shape}")
            elif shape[3] == bands and shape[1] != bands:
                problems.append(f"input {card.input_name!r} has shape {shape}: it looks "
                                f"channels-last (NHWC), {bands} bands last; the backend feeds "
                                f"channels-first (NCHW) tensors, (N, {bands}, H, W): export it "
                                "so, or put Transposes around it")
            elif isinstance(shape[1], int) and shape[1] != len(card.bands):
                problems.append(f"input {card.input_name!r} has {shape[1]} channels but the card "
                                f"lists {len(card.bands)} bands")
        if card.input_name in inputs and inputs[card.input_name].type != "tensor(float)":
            problems.append(f"input {card.input_name!r} is {inputs[card.input_name].type}; the "
                            "backend feeds float32 (tensor(float))")
        if len(inputs) != 1:
            problems.append(f"graph must have exactly one input, it has {len(inputs)}")
        if card.output_name not in outputs:
            problems.append(f"card output tensor {card.output_name!r} is not in the graph "
                            f"(graph outputs: {', '.join(outputs)})")
        else:
            out = outputs[card.output_name]
            if out.type != "tensor(float)":
                problems.append(f"output {card.output_name!r} is {out.type}; the backend "
                                "reads float32 (tensor(float)) scores")
            channels = out.shape[1] if len(out.shape) == 4 else 1
            if card.output_kind in CLASS_KINDS:
                if len(out.shape) != 4:
                    problems.append(f"output {card.output_name!r} has shape {out.shape}; kind "
                                    f"{card.output_kind} needs (N, classes, H, W)")
                elif isinstance(channels, int) and not card.water_channel < channels:
                    problems.append(f"output {card.output_name!r} has {channels} channels; "
                                    f"the card's output.water_channel is {card.water_channel}")
                elif channels == 1:   # a softmax over one class is 1 everywhere: all water
                    problems.append(f"output {card.output_name!r} has 1 channel; kind "
                                    f"{card.output_kind} needs two classes or more (one water "
                                    "score: kind water_probability or water_logit)")
            elif len(out.shape) not in (3, 4) or (isinstance(channels, int) and channels != 1):
                problems.append(f"output {card.output_name!r} has shape {out.shape}; expected "
                                f"(N, 1, H, W) or (N, H, W) for kind {card.output_kind} (class "
                                "scores: kind class_probabilities or class_logits with "
                                "output.water_channel)")
        if problems:
            raise CardError(f"{self.path}: model does not match its card: " + "; ".join(problems))
        fixed = self.fixed_tile
        if fixed is not None and fixed - 2 * card.margin < BLOCK_MULTIPLE:
            # tiles overlap by twice the margin at least, and the rest is the cell, at least
            # a block; a run's --overlap (the default, wider, too) is checked with the run
            most = (fixed - BLOCK_MULTIPLE) // 2
            raise CardError(f"{self.path}: model does not match its card: the graph's fixed "
                            f"{fixed}-pixel tiles, overlapping by twice tiling.margin "
                            f"({card.margin}), leave cells under {BLOCK_MULTIPLE} px; "
                            + (f"give a margin of at most {most}" if most >= 0 else
                               f"the backend needs tiles of {BLOCK_MULTIPLE} px or more"))

    def normalize(self, batch: np.ndarray, out: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Clip, offset and scale per band; NaN/inf -> 0. Returns (x, valid_mask).

        ``batch`` is ``(N, C, H, W)`` float32 (it may be a strided view); ``out``
        (contiguous, same shape, may be ``batch`` itself) receives the result.
        A pixel is valid when every band is finite. Offset 0 and scale 1 are
        skipped: they change nothing.
        """
        if out is None:
            out = np.empty(batch.shape, np.float32)
        if out is not batch:
            out[...] = batch  # numpy is several times faster on contiguous data
        # one cheap reduction tells whether anything is NaN or inf (a sum overflowing
        # to inf only sends us down the exact path)
        all_finite = bool(np.isfinite(out.sum()))
        finite = None if all_finite else np.isfinite(out)
        # clip (inf becomes finite: hence `finite`); maximum then minimum give what
        # np.clip gives, NaN included, in about half its time
        np.maximum(out, self._lo, out=out)
        np.minimum(out, self._hi, out=out)
        if self._offset.any():
            out -= self._offset
        if (self._scale != 1).any():
            out /= self._scale
        if finite is None:
            valid = np.ones((out.shape[0], *out.shape[2:]), bool)
        else:
            valid = finite.all(axis=1)
            np.copyto(out, 0.0, where=~finite)
        return out, valid

    def warm_up(self, batch: int, tile: int) -> None:
        """Start one call on zeros of the run's batch shape, on a background thread.

        ONNX Runtime's first call on a shape sets up its buffers and kernels: on 2 CPU
        cores about twice a steady call for the bundled model (35 against 16 ms), and on
        CUDA cuDNN chooses its algorithms then. Started before the inputs are opened, it
        runs while they are read. :meth:`infer` waits for it. Its errors are not kept:
        the first real call meets them again and raises them. One call, whatever
        ``streams``: each concurrent call keeps its own buffers, so warming them all made
        a one-tile run (--batch-size 4) with 8 concurrent calls peak at 1.1 GB instead of 0.3.
        """
        x = np.zeros((batch, len(self.card.bands), tile, tile), np.float32)

        def run() -> None:
            try:
                self.session.run([self.card.output_name], {self.card.input_name: x})
            except Exception:  # noqa: BLE001 - raised again by the first real call
                pass
        self._warming = threading.Thread(target=run, name="sarflood-warm-up", daemon=True)
        self._warming.start()

    def finish_warm_up(self) -> None:
        """Wait for :meth:`warm_up`'s call, if one is running (before the first real call,
        and before the process may exit: a thread must not be inside ORT then)."""
        warming = self._warming   # read once: the model pool's threads all call this
        if warming is not None:
            warming.join()
            self._warming = None

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the graph on an already normalised batch; returns (N, H, W) probability."""
        self.finish_warm_up()
        try:
            (out,) = self.session.run([self.card.output_name], {self.card.input_name: x})
        except Exception as exc:  # ORT raises several private exception types
            advice = ("out of GPU memory or a CUDA error: try a smaller --batch-size, or "
                      "--device cpu" if self.provider == _CUDA else
                      "a graph that takes only some tile sizes must say so in its card "
                      "(tiling.size_multiple) or take a fixed size")
            channels = self.session.get_inputs()[0].shape[1]
            if not isinstance(channels, int):   # not checked against the card at load
                advice = (f"its input does not fix its channel count: does the graph take "
                          f"the card's {len(self.card.bands)} band(s), "
                          f"{', '.join(self.card.band_names)}? Else {advice}")
            raise ModelError(
                f"{self.path}: ONNX Runtime could not run the graph on a batch of shape "
                f"{x.shape} ({first_line(exc)}); {advice}") from None
        raw, out = out, self._water_probability(out, x.shape)
        self._remember(raw)
        lo, hi = float(out.min()), float(out.max())   # NaN if any is
        if not (math.isfinite(lo) and math.isfinite(hi)):
            # no data is fed as numbers (normalize), so it is the graph: left through,
            # NaN became no data in the outputs without a word
            raise ModelError(f"{self.path}: output {self.card.output_name!r} holds NaN or "
                             f"infinite values on a batch of shape {x.shape}: the graph "
                             f"cannot be used as it is")
        if lo < -PROBABILITY_SLACK or hi > 1 + PROBABILITY_SLACK:
            raise ModelError(f"{self.path}: output {self.card.output_name!r} holds values from "
                             f"{lo:.4g} to {hi:.4g}, not a probability in 0..1: logits? Say so "
                             f"in the card (output.kind water_logit or class_logits), not "
                             f"{self.card.output_kind}")
        out = out.astype(np.float32, copy=False)
        if lo < 0 or hi > 1:   # the slack excuses a graph's rounding; the outputs hold 0..1
            np.clip(out, 0, 1, out=out)
        return out

    def _remember(self, raw: np.ndarray) -> None:
        """Keep what :meth:`kind_doubt` needs of a call's raw output: the range of a water
        logit, how far a sample of class scores' sums lie from 1."""
        kind = self.card.output_kind
        lo, hi, off = math.inf, -math.inf, 0.0
        if kind == "water_logit":
            lo, hi = float(raw.min()), float(raw.max())
        elif kind in CLASS_KINDS:
            off = float(np.abs(raw[:, :, ::SUM_ROWS].sum(axis=1) - 1).max())
            off = math.inf if math.isnan(off) else off   # infinite logits: inf - inf
        with self._seen_lock:
            seen = self.seen
            seen.calls += 1
            seen.low, seen.high = min(seen.low, lo), max(seen.high, hi)
            seen.sum_off = max(seen.sum_off, off)

    def kind_doubt(self) -> str | None:
        """A warning when the outputs since :attr:`seen` was reset look like another kind
        than the card's: a logit never leaving 0..1 or class logits summing to 1 (both
        probabilities: sigmoid or softmax made them 0.5..0.73 or so, all water at 0.5), or
        class probabilities that do not sum to 1. Judged on a whole run, not a batch: a
        logit may well stay within 0..1 on one tile."""
        seen, card = self.seen, self.card
        name = f"{self.path}: output {card.output_name!r} (kind {card.output_kind})"
        advice = "its output looks like probabilities: check output.kind in its card"
        if not seen.calls:
            return None
        if (card.output_kind == "water_logit" and seen.low >= -PROBABILITY_SLACK
                and seen.high <= 1 + PROBABILITY_SLACK):
            return (f"{name} stayed within 0..1 over the whole run, so its sigmoid made "
                    f"probabilities of 0.5 to 0.73 only: {advice} (water_probability?)")
        if card.output_kind == "class_logits" and seen.sum_off <= SUM_TOLERANCE:
            return (f"{name} summed to 1 over its classes at every pixel checked, so a "
                    f"softmax again squeezed them towards an even share: {advice} "
                    "(class_probabilities?)")
        if card.output_kind == "class_probabilities" and seen.sum_off > SUM_TOLERANCE:
            return (f"{name} does not sum to 1 over its classes (off by up to "
                    f"{seen.sum_off:.3g}), as a softmax's probabilities do: check output.kind "
                    "in its card (class_logits, if these are logits; independent sigmoids per "
                    "class are read as they are)")
        return None

    def _shape_error(self, out: np.ndarray, shape: tuple[int, ...], expected: str) -> ModelError:
        """The error for an output of another shape than the batch's, with the likely cause:
        a channels-last graph, or one that takes only some tile sizes."""
        n, c, h, w = shape
        if out.ndim == 4 and out.shape[1:3] == (c, h):
            # a channels-last graph reads (N, C, H, W) as N, H = C, W = H, C = W
            why = ("the graph looks channels-last (NHWC): the backend feeds and reads "
                   "channels-first (NCHW) tensors; export it so, or put Transposes around it")
        elif out.shape[-2:] != (h, w):
            why = ("its height and width differ from the tile's: a graph that takes only "
                   "some tile sizes (one that pools and upsamples, say) must say so in its "
                   "card (tiling.size_multiple)")
        else:
            why = ""
        return ModelError(f"{self.path}: output {self.card.output_name!r} has shape "
                          f"{out.shape} for a batch of shape {shape}, expected {expected}"
                          + (f"; {why}" if why else ""))

    def _water_probability(self, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(N, H, W) P(water) from the graph's output, as the card's ``output.kind`` says."""
        card = self.card
        n, _, h, w = shape
        if card.output_kind in CLASS_KINDS:
            k = card.water_channel
            if (out.ndim != 4 or out.shape[0] != n or out.shape[2:] != (h, w)
                    or out.shape[1] <= max(k, 1)):
                raise self._shape_error(out, shape, f"({n}, classes > {max(k, 1)}, {h}, {w})")
            if card.output_kind == "class_probabilities":
                return out[:, k]
            # softmax's water channel, exp(l_k - logsumexp(l)), without overflow
            top = out.max(axis=1)
            if np.isinf(top).any():   # an infinite logit: its limit, 0 or 1 (inf - inf is NaN)
                big = np.finfo(np.float32).max
                out = np.nan_to_num(out, nan=np.nan, posinf=big, neginf=-big)
                top = out.max(axis=1)
            with np.errstate(over="ignore"):   # -big - big: -inf, whose exp is 0
                total = np.exp(out - top[:, None]).sum(axis=1)
                return np.exp(out[:, k] - top - np.log(total))
        if out.shape not in ((n, 1, h, w), (n, h, w)):
            raise self._shape_error(out, shape, f"{(n, 1, h, w)} or {(n, h, w)}")
        out = out.reshape(n, h, w)
        if card.output_kind == "water_logit":   # sigmoid, exp(-log(1 + exp(-l))) for any l
            return np.exp(-np.logaddexp(np.float32(0), -out))
        return out


__all__ = ["OnnxModel", "ModelError", "CardError", "choose_providers", "device_report", "DEVICES"]
