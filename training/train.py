"""The training loop: one method, one seed, one (lr, weight decay) pair, one folder.

What a run folder holds:

- ``last.pt``: everything needed to resume (weights, optimiser, scheduler, step,
  best-so-far), written every ``checkpoint_every`` steps, at the end, and when the
  run is interrupted (SIGINT/SIGTERM finish the current step, save, then stop);
- ``best.pt``: the weights with the best validation IoU so far (checkpoint
  selection on the validation split, Garg et al., Appendix B); for the chip
  classifier (stage 1 of seed paper 002), the best balanced accuracy on tiles;
  with what the run learnt from, and what its teacher or stage-1 run learnt from;
- ``train.log``: a line per logged step and per validation;
- ``summary.json``: written once the run is complete.

Rerunning the same command resumes from ``last.pt``. Once the run is complete,
``best.pt`` and ``summary.json`` are all it needs: a finished run whose ``last.pt``
was deleted (the largest file) is still finished; this run's ``best.pt`` alone
trains again from step 0 to the same ``best.pt``, and another run's ``best.pt``, or
``summary.json`` alone, is refused rather than trained over. Batches and
augmentations are a pure function of (seed, step) (see :mod:`training.batches`) and
the dropout RNG is reseeded from (seed, step, rank) every step, so on CPU a resumed
run repeats exactly the steps an uninterrupted one would have taken. On CUDA the
batches and dropout masks are the same, but the steps only up to rounding: the
backward of bilinear interpolation and of adaptive average pooling, and the NLL
loss, have no deterministic CUDA kernel.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from . import ddp
from .atomic import remove_stale, write_text_atomic
from .batches import (StepBatches, classify_builder, derive_seed, distill_builder,
                      flora_builder, stack_inputs, supervised_builder)
from .checkpoint import (CheckpointError, diverged_summary, load_checkpoint, load_model,
                         load_weights, save_checkpoint, unfinished_at)
from .cli import worker_error
from .config import TrainConfig
from .data.conventions import IGNORE
from .data.layout import DatasetError
from .losses import (charbonnier, dice_loss, distillation_loss, edge_weighted_ce,
                     feature_distillation_loss, fft_magnitude_loss, ssim_loss, weighted_mean)
from .methods import INPUT_CHANNELS, OPTICAL, Method, get_method
from .multitask import ChipClassifier, FloraTrainee, holds_water, teacher_pyramid
from .metrics import Scoreboard
from .models import DEEPLAB, CompactSegNet, build_model, display_name
from .precise_bn import calibration_batches, recalibrate
from .transforms import resize, to_grid


class RunError(ValueError):
    """A run cannot start (or resume) as asked."""


class Diverged(RunError):
    """The loss is no longer finite: the run diverged (raised on every rank at once)."""


class Interrupted(Exception):
    """The run stopped early on request; ``last.pt`` holds its finished steps.
    ``at_stop_step``: it stopped where ``stop_at`` asked, not on a signal."""

    def __init__(self, step: int, out_dir: Path, message: str | None = None,
                 at_stop_step: bool = False):
        super().__init__(message or f"stopped after step {step}; rerun the same command to "
                         f"resume from {out_dir / 'last.pt'}")
        self.step = step
        self.at_stop_step = at_stop_step


@dataclass(frozen=True)
class RunSpec:
    """What defines a run: resuming requires all of it to match."""
    method: Method
    config: TrainConfig
    seed: int
    lr: float
    weight_decay: float

    @property
    def model_spec(self) -> dict[str, Any]:
        cfg = self.config
        arch, width, rates = ((cfg.compact_arch, cfg.compact_width, cfg.compact_rates)
                              if self.method.compact else (cfg.arch, cfg.width, cfg.rates))
        spec = {"arch": arch, "in_channels": self.method.in_channels, "width": width,
                "rates": list(rates)}
        if arch == DEEPLAB:
            spec["zero_init_residual"] = cfg.zero_init_residual
        return spec

    def identity(self) -> dict[str, Any]:
        return {"method": self.method.name, "seed": self.seed, "lr": self.lr,
                "weight_decay": self.weight_decay, "model_spec": self.model_spec,
                "config": self.config.to_dict()}


@dataclass
class RunData:
    """The datasets a run reads: one dataset per batch pool, and the validation split;
    ``pixel_size_m`` is the chips' own grid.

    Chips are dicts with ``s1`` (2, H, W), ``s2`` (4, H, W) where the method needs
    it, labels ``(H, W)`` int64 with -1 ignored, and ``valid`` (H, W) bool.
    """
    pools: list[Dataset]
    valid: Dataset
    description: str
    pixel_size_m: float
    # which chips the pools and validation hold (training.rundata.fingerprint); a run
    # resumes, or is taken as done, only on the same; "" is not checked
    fingerprint: str = ""
    # a digest of each split's chip ids by split name (training.rundata.split_digests): a
    # teacher's run and its student's read some of the same splits; {} is not checked
    split_digests: dict[str, str] = field(default_factory=dict)


@contextmanager
def stop_requests() -> Iterator[dict[str, bool]]:
    """SIGINT/SIGTERM set a flag instead of killing the process mid-step."""
    flag = {"stop": False}

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stops_left_to_the_main_process(worker_id: int) -> None:  # noqa: ARG001 - worker_init_fn
    """A DataLoader worker ignores SIGINT, and SIGTERM unless its main process sends it.
    Sent to the whole process group (Ctrl-C, Slurm, systemd), torch's own SIGTERM handler
    in the worker ended it, and the run with it; the main process stops between steps,
    then ends its workers, with SIGTERM those that do not stop (at exit, too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):   # POSIX; elsewhere torch's own handling stays
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # a thread below takes it
        threading.Thread(target=_end_on_sigterm_from_parent, daemon=True).start()


def _end_on_sigterm_from_parent() -> None:
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != os.getppid():
        pass
    os._exit(0)


@torch.no_grad()
def predict_probability(model: nn.Module, x: Tensor, scale: float = 1.0) -> Tensor:
    """P(water) ``(N, H, W)`` for chips ``x``; a model trained at another grid
    (``scale`` of its pixels per chip pixel) sees ``x`` resampled to its grid, and
    its output is resampled back, as the backend does for a card's pixel size."""
    return resize(model.water_probability(to_grid(x, scale)), tuple(x.shape[-2:]))[:, 0]


def chip_batches(dataset: Dataset, batch: int) -> Iterator[dict[str, Any]]:
    """Whole chips in order, collated up to ``batch`` at a time; a chip of another size
    (read on another ground grid: :mod:`training.data.datasets`) starts a new batch."""
    def size(item: dict[str, Any]) -> tuple[int, ...]:
        return next(tuple(v.shape[-2:]) for v in item.values() if torch.is_tensor(v))

    group: list[dict[str, Any]] = []
    for i in range(len(dataset)):
        item = dataset[i]
        if group and (len(group) == batch or size(item) != size(group[0])):
            yield default_collate(group)
            group = []
        group.append(item)
    if group:
        yield default_collate(group)


@torch.no_grad()
def score(model: nn.Module, dataset: Dataset, inputs: tuple[str, ...], batch: int,
          device: torch.device, scale: float = 1.0) -> Scoreboard:
    """Score a network's masks (P(water) > 0.5) against the items' ``label`` on whole
    chips, at the chips' grid, with the data issue's metric (:mod:`training.metrics`)."""
    was_training = model.training
    model.eval()
    board = Scoreboard()
    for chips in chip_batches(dataset, batch):
        x = stack_inputs(chips, inputs, dim=1).to(device)
        pred = (predict_probability(model, x, scale) > 0.5).to(torch.int8).cpu().numpy()
        for i, chip_id in enumerate(chips["id"]):
            board.add(chip_id, pred[i], chips["label"][i].numpy(), chips["valid"][i].numpy())
    model.train(was_training)
    return board


_LOGGED_STEP = re.compile(r"^\S+ \S+ step (\d+) loss ", re.MULTILINE)


class _Log:
    """Appends timestamped lines to ``train.log``; validation lines also go above the bar."""

    def __init__(self, path: Path, bar: tqdm | None):
        self.path, self.bar = path, bar

    def __call__(self, line: str, show: bool = False) -> None:
        with self.path.open("a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        if show and self.bar is not None:
            self.bar.write(line)

    def last_step(self) -> int:
        """The last training step the log records (0 for none): past a resume's step, one
        a kill (SIGKILL, a crash) lost before its checkpoint."""
        if not self.path.exists():
            return 0
        steps = _LOGGED_STEP.findall(self.path.read_text(errors="replace"))
        return int(steps[-1]) if steps else 0


def _poly(steps: int, power: float):
    """Polynomial decay of the learning rate from its initial value to 0 at ``steps``."""
    return lambda step: max(0.0, 1.0 - step / steps) ** power


def require_checkpoints(method: Method, config: TrainConfig, teacher: Path | None,
                        init: Path | None = None) -> dict[str, dict[str, Any]]:
    """The teacher and pretraining checkpoints given exist, are each the best.pt of a
    finished run on ``config``'s pixel size, and a method that needs one has it (the CLI
    checks it before reading the data; :func:`train` again). Returns those given, read,
    by role ("teacher", "pretraining")."""
    docs = {}
    for option, role, path, needed in (("--teacher", "teacher", teacher, method.teacher),
                                       ("--init", "pretraining", init, method.init_from)):
        if path is not None and not Path(path).is_file():
            raise RunError(f"{option} {path}: file not found")
        if needed and path is None:
            raise RunError(f"method {method.name!r} needs {option} CHECKPOINT "
                           f"(a best.pt of the {needed!r} method)")
        if path is not None and not needed:
            raise RunError(f"method {method.name!r} takes no {option}")
        if path is not None:
            docs[role] = _of_a_finished_run(option, Path(path))
            _same_pixel_size(option, Path(path), docs[role], config)
    return docs


def _same_pixel_size(option: str, path: Path, doc: dict[str, Any], config: TrainConfig) -> None:
    """RunError where the checkpoint's run worked on another grid: a frozen teacher (or a
    stage-1 encoder) fed this run's pixels sees every feature at another scale than it
    learnt. (Bands and normalisation are fixed by the method, checked by channel count.)"""
    theirs = doc.get("run", {}).get("config", {}).get("pixel_size_m")
    if theirs is not None and theirs != config.pixel_size_m:
        raise RunError(f"{option} {path}: trained on {theirs:g} m pixels, this run works on "
                       f"{config.pixel_size_m:g} m (the setting pixel_size_m): it would see "
                       f"its inputs at another scale than it learnt; train it with this "
                       f"run's preset, or give this run --set pixel_size_m={theirs:g}")


def _of_a_finished_run(option: str, path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, refused where it is a run's last state or the best.pt
    of a run that has not finished: a student learnt from a half-trained teacher without a
    word. (``export`` only warns: a model from a long run's progress is worth a look.)"""
    try:
        doc = load_checkpoint(path)
    except CheckpointError as exc:
        raise RunError(f"{option}: {exc}") from None
    if "optimizer" in doc:
        raise RunError(f"{option} {path}: is a run's last state, not its checkpoint chosen "
                       f"on validation; give {path.parent / 'best.pt'}")
    reached = unfinished_at(path, doc)
    if reached is not None:
        steps = doc.get("run", {}).get("config", {}).get("steps")
        if diverged_summary(path.parent) is not None:
            raise RunError(f"{option} {path}: its run diverged (its summary.json says so) after "
                           f"step {reached} of {steps}: this best.pt is from before; train "
                           f"again at a lower learning rate, or copy it out of its run folder "
                           f"to learn from it as it is")
        raise RunError(f"{option} {path}: its run is unfinished (no summary.json; stopped at "
                       f"step {reached} of {steps}): finish it by rerunning its train "
                       f"command, or copy this best.pt out of its run folder to learn from "
                       f"it as it is")
    return doc


def _data_record(data: RunData, splits: dict[str, str], upstream: dict[str, dict[str, Any]]
                 ) -> dict[str, Any]:
    """What best.pt records of the data: its line, grid and split digests, and by role the
    lines of the data its teacher's and stage-1 runs learnt from (``upstream``: their
    checkpoints), which the model card names: a student of a teacher trained on synthetic
    data has learnt from synthetic data too."""
    return {"description": data.description, "chip_pixel_size_m": data.pixel_size_m,
            "splits": splits,
            **{role: doc["data"]["description"] for role, doc in upstream.items()
               if "description" in doc.get("data", {})}}


def _other_chips(upstream: dict[str, dict[str, Any]], paths: dict[str, Path | None],
                 splits: dict[str, str], data: RunData) -> list[str]:
    """A warning per teacher or stage-1 checkpoint whose run read a split of the same name
    as this run with other chips: other split files (it may have learnt from this run's
    validation or test chips) or another dataset. Not refused: an outside teacher can be
    deliberate."""
    notes = []
    for role, doc in upstream.items():
        theirs = doc.get("data", {}).get("splits", {})
        split = next((k for k in sorted(theirs) if k in splits and theirs[k] != splits[k]), None)
        if split is not None:
            notes.append(f"the {role} checkpoint {paths[role]} was trained on other chips: its "
                         f"{split!r} split's chips differ ({theirs[split]} there, "
                         f"{splits[split]} here; its data: {doc['data'].get('description')}; "
                         f"this run's: {data.description}); "
                         f"it may have seen this run's validation or test chips")
    return notes


def _load_teacher(run: RunSpec, teacher: Path | None, device: torch.device) -> nn.Module | None:
    if run.method.teacher is None:
        return None
    want = get_method(run.method.teacher).in_channels
    try:
        model, _ = load_model(teacher, expect_in_channels=want)
    except CheckpointError as exc:
        raise RunError(f"teacher: {exc}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


# config fields a run resumes under other values of: those that only choose a run's lr
# and weight decay (its identity holds them itself), and those that change neither the
# batches (a pure function of seed and step) nor the weights. Not eval_batch (precise
# batch norm averages over batches of that size), nor cache (cached chips are float16)
_NOT_RESULT = ("lr", "weight_decay", "lr_grid", "wd_grid", "method_lr",
               "workers", "log_every", "checkpoint_every")
# a mismatch is named by the most telling setting first; model_spec last, as it
# follows from the config keys, which name the setting
_TELLING = ("method", "config preset", "seed", "lr", "weight_decay")


# fields whose default is not how runs behaved before the field existed
_BEFORE_FIELD = {"zero_init_residual": False, "decay_all": True}


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    # a field added after a run was made is read as the behaviour before it existed:
    # its default, or its _BEFORE_FIELD value
    config = {**TrainConfig().to_dict(), **_BEFORE_FIELD, **identity.get("config", {})}
    spec = identity.get("model_spec")
    if isinstance(spec, dict) and spec.get("arch") == DEEPLAB:
        spec = {"zero_init_residual": _BEFORE_FIELD["zero_init_residual"], **spec}
    # one key per setting, so that a mismatch names the setting, not the whole config
    return {**{k: v for k, v in identity.items() if k != "config"}, "model_spec": spec,
            **{f"config {k}": v for k, v in config.items() if k not in _NOT_RESULT}}


def _order(key: str) -> tuple[int, str]:
    if key in _TELLING:
        return _TELLING.index(key), key
    return len(_TELLING) + (key == "model_spec"), key


def _of_this_run(run: RunSpec, path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, refused unless it was written by a run with ``run``'s
    settings (those that change the result)."""
    try:
        doc = load_checkpoint(path)
    except CheckpointError as exc:
        raise RunError(f"cannot resume: {exc}") from None
    same_settings(run, doc.get("run", {}), path)
    return doc


def same_settings(run: RunSpec, identity: dict[str, Any], path: Path) -> None:
    """RunError, naming a setting, where ``identity`` (what the run that wrote ``path``
    was) differs from ``run`` in a setting that changes the result."""
    # through JSON, as a summary holds it: its lists and the config's tuples compare equal
    theirs = _comparable(json.loads(json.dumps(identity)))
    ours = _comparable(json.loads(json.dumps(run.identity())))
    diff = [k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k)]
    if diff:
        k = min(diff, key=_order)
        raise RunError(f"{path} belongs to a run with other settings ({k}: "
                       f"{theirs.get(k)!r} there, {ours.get(k)!r} now); give that setting "
                       f"as it was to resume it, or use another --out folder")


def _read_summary(path: Path) -> dict[str, Any] | None:
    """A finished run's summary; None where it is not readable JSON (cut short by a copy
    or a full disk: it is written atomically)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    return doc if isinstance(doc, dict) else None


def _finished_without_last(run: RunSpec, out_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run whose ``last.pt`` was deleted; None where ``out_dir``
    holds no run, or this run's ``best.pt`` alone: it was stopped between its first
    validation and its first ``last.pt`` (a validation more often than checkpoints), and
    runs again from step 0, seeded, to the same ``best.pt``. Another ``best.pt``, or a
    ``summary.json`` alone, is refused: a run from step 0 would replace them."""
    best, summary = out_dir / "best.pt", out_dir / "summary.json"
    if not best.exists() and not summary.exists():
        return None
    if best.exists() and not summary.exists():
        _of_this_run(run, best)   # another run's is refused, naming the setting
        return None
    if not (best.exists() and summary.exists()):
        have = best if best.exists() else summary
        raise RunError(f"{out_dir} holds {have.name} but no last.pt to resume from: a run "
                       f"there would start over and replace it; use another --out folder, "
                       f"or move {have.name} away to train the run again")
    _of_this_run(run, best)
    doc = _read_summary(summary)
    if doc is None:
        raise RunError(f"{summary}: not readable JSON (cut short?), and no last.pt to write "
                       f"it again from; use another --out folder")
    return doc


def _digest(path: Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path is not None else None


def _same_checkpoints(doc: dict[str, Any] | None, digests: dict[str, str | None], where: Path,
                      teacher: Path | None, init: Path | None) -> None:
    """RunError where ``doc`` (a run's last.pt or summary) was trained from another teacher
    or stage-1 checkpoint than those given; one that names none (older) is not checked."""
    for what, path in (("teacher", teacher), ("pretraining", init)):
        if doc is not None and doc.get(f"{what}_sha256", digests[what]) != digests[what]:
            raise RunError(f"{where} was trained from another {what} than {path}; use "
                           f"another --out folder or the same {what}")


def _same_data(doc: dict[str, Any] | None, data: RunData, where: Path) -> None:
    """RunError where ``doc`` (a run's last.pt or summary) was trained on other chips than
    ``data``'s: a run folder of the synthetic set reused on the real one kept the synthetic
    model and named the real data. One that names no fingerprint (older) is not checked."""
    theirs = (doc or {}).get("data_fingerprint")
    if theirs and data.fingerprint and theirs != data.fingerprint:
        named = doc.get("data", "not named")
        what = (f"other data ({named}) than {data.description}" if named != data.description
                else f"other chips of {data.description} (a split's chip list or files changed)")
        raise RunError(f"{where} was trained on {what}; use another --out folder")


def _read_every_chip(dataset: Dataset) -> bool:
    """Decode every chip once (kept, where the split is cached): a chip bad in its
    pixels (a corrupt block, label codes) fails now, not at the first validation,
    which would lose the steps trained since the last checkpoint. Whether any pixel
    can be scored (a label that is not -1, with S1 data)."""
    scored = False
    for i in range(len(dataset)):
        scored = _labelled(dataset[i], "label") or scored
    return scored


def _has_label(dataset: Dataset, key: str) -> bool:
    """Whether any chip has a labelled pixel; stops at the first."""
    return any(_labelled(dataset[i], key) for i in range(len(dataset)))


def _labelled(chip: dict[str, Any], key: str) -> bool:
    """Whether the chip has a pixel labelled under ``key`` (not -1: labelled, with S1 data)."""
    return bool((chip[key] != IGNORE).any())


def _files_state(out_dir: Path) -> list:
    """What a run's checks read in ``out_dir``: its checkpoints' and summary's sizes and
    times. Taken before the folder lock and again under it: a run that ended meanwhile
    (its lock gone) must not be trained over unchecked."""
    state = []
    for name in ("last.pt", "best.pt", "summary.json"):
        try:
            st = (out_dir / name).stat()
            state.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            state.append((name, None, None))
    return state


@contextmanager
def folder_lock(out_dir: Path, hold: bool) -> Iterator[None]:
    """Hold ``out_dir`` for this run (``hold``: the process that writes it): a second run
    started on the same folder is refused, instead of both training and each overwriting
    the other's checkpoints. An advisory lock on the folder itself (no file is left),
    dropped when the process ends, however it ends; none where fcntl is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if not hold or fcntl is None:
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{out_dir}: another run is training in this folder; wait for it "
                           f"to end, or give another --out") from None
        yield
    finally:
        os.close(fd)


def _check_finite(model: nn.Module, step: int) -> None:
    """No checkpoint holds NaN or infinite weights: a diverged run stops instead."""
    if not all(torch.isfinite(t).all() for t in model.state_dict().values()
               if t.is_floating_point()):
        raise RunError(f"the weights are no longer finite at step {step}: the run diverged")


def decay_groups(net: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: every parameter decayed, or (``decay_all``
    false) only the kernels of full convolutions and linear layers, as DeepLab's
    reference code regularises them (Chen et al., 2018; its batch norm, biases and
    depthwise kernels go undecayed)."""
    if decay_all:
        return [{"params": list(net.parameters()), "weight_decay": weight_decay}]
    decayed = {id(m.weight) for m in net.modules()
               if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and (
                   m.groups == 1 or m.groups != m.in_channels))}
    params = list(net.parameters())
    return [{"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]


def make_trainee(method: Method, model: nn.Module, teacher: nn.Module | None) -> nn.Module:
    """What trains: the network, or the network inside the method's training heads."""
    if method.kind == "classify":
        return ChipClassifier(model)
    if method.kind == "flora":
        return FloraTrainee(model, teacher, sum(INPUT_CHANNELS[b] for b in OPTICAL))
    return model


def _forward(net: nn.Module, x: Tensor, cfg: TrainConfig) -> Any:
    """``net(x)``, under bfloat16 autocast where ``cfg.precision`` asks for it; its
    outputs float32 either way, so that every loss (FFT and SSIM among them) sees float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16,
                        enabled=cfg.precision == "bfloat16"):
        out = net(x)
    return _float32(out)


def _float32(out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        return type(out)(_float32(o) for o in out)
    return out.float()


def method_loss(net: nn.Module, teacher: nn.Module | None, batch: dict[str, Tensor],
                cfg: TrainConfig, d: ddp.Dist | None, kind: str) -> Tensor:
    """The method's loss; under DDP, this rank's share of the global batch's loss.

    supervised: edge-weighted CE on labels; distill: the distillation loss against the
    frozen teacher; classify: binary CE of the chip-level label; flora: edge-weighted
    CE + Dice on the labels there are, Charbonnier + SSIM + FFT magnitude of the
    reconstructed optical image, and feature distillation, all weighted 1 (the seed
    paper's summary gives no weights).
    """
    if kind == "classify":
        target = batch["holds_water"]
        bce = F.binary_cross_entropy_with_logits(_forward(net, batch["x"], cfg),
                                                 target.clamp(min=0), reduction="none")
        return weighted_mean(bce, (target >= 0).float(), d)
    if kind == "flora":
        logits, optical, adapted = _forward(net, batch["x"], cfg)
        target, valid = batch["x_teacher"], batch["valid_optical"]
        with torch.no_grad():
            taught = teacher_pyramid(teacher, target)
        label = batch["label"]
        return (edge_weighted_ce(logits, label, cfg.edge_weight, cfg.edge_radius, d)
                + dice_loss(logits, label, d)
                + charbonnier(optical, target, valid, d=d) + ssim_loss(optical, target, valid, d)
                + fft_magnitude_loss(optical, target, valid, d)
                + feature_distillation_loss(adapted, taught, valid, d))
    logits = _forward(net, batch["x"], cfg)
    if teacher is None:
        return edge_weighted_ce(logits, batch["label"], cfg.edge_weight, cfg.edge_radius, d)
    with torch.no_grad():
        p_t = torch.softmax(_forward(teacher, batch["x_teacher"], cfg), dim=1)
    return distillation_loss(logits, p_t, batch["valid"], d)


@torch.no_grad()
def chip_accuracy(classifier: nn.Module, dataset: Dataset, inputs: tuple[str, ...],
                  batch: int, device: torch.device, scale: float, tile: int) -> float | None:
    """Balanced accuracy (the mean of the recalls of both answers) of "holds water" on the
    tiles of the validation chips, each cut into tiles of ``tile`` model pixels (the
    training crop), a tile's label from its hand labels (:func:`holds_water`). Whole
    chips would not do: nearly every Sen1Floods11 chip holds some water, so "always yes"
    scored 0.99 on the synthetic validation split. A tile is at most half a chip each way
    (the paper preset's crop, 321 px at 16 m, is a whole 512 px chip at 10 m: no tile fit,
    and no checkpoint was ever chosen)."""
    was_training = classifier.training
    classifier.eval()
    right, seen = [0, 0], [0, 0]         # per true answer: no, yes
    for chips in chip_batches(dataset, batch):
        x, label = stack_inputs(chips, inputs, dim=1), chips["label"]
        h, w = label.shape[-2:]
        side = max(1, min(round(tile / scale), h // 2, w // 2))   # chip pixels per tile
        for r in range(0, h - side + 1, side):
            for c in range(0, w - side + 1, side):
                said = classifier(to_grid(x[..., r:r + side, c:c + side].to(device), scale)) > 0
                for i, yes in enumerate(said.cpu().tolist()):
                    truth = int(holds_water(label[i, r:r + side, c:c + side]))
                    if truth >= 0:
                        seen[truth] += 1
                        right[truth] += int(yes == bool(truth))
    classifier.train(was_training)
    recalls = [k / n for k, n in zip(right, seen) if n]
    return sum(recalls) / len(recalls) if recalls else None


def _start_encoder_from(model: nn.Module, init: Path, stage_one: str) -> None:
    """Replace the network's encoder stages with those of a stage-1 checkpoint (seed
    paper 002), checked to fit; its decoder stays as initialised."""
    if not isinstance(model, CompactSegNet):
        raise RunError(f"method pretrained starts the compact network from a stage-1 encoder; "
                       f"this run builds {type(model).__name__} (the setting compact_arch)")
    try:
        doc = load_checkpoint(init)
    except CheckpointError as exc:
        raise RunError(f"--init: {exc}") from None
    made_by = (doc.get("run") or {}).get("method")
    if made_by != stage_one:
        raise RunError(f"--init {init}: a checkpoint of a {made_by or 'unnamed'} run; give the "
                       f"best.pt of a {stage_one} run (stage 1)")
    if doc["model_spec"].get("arch") != "compact":
        raise RunError(f"--init {init}: not a checkpoint of the compact network's chip "
                       f"classifier")
    ours = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in model.encoder}
    encoder = {k: v for k, v in doc["model"].items() if k.split(".")[0] in model.encoder}
    if set(ours) != set(encoder) or any(v.shape != ours[k].shape for k, v in encoder.items()):
        raise RunError(f"--init {init}: its encoder does not fit this network "
                       f"(another width or number of input channels)")
    model.load_state_dict(encoder, strict=False)


def train(run: RunSpec, data: RunData, out_dir: Path, teacher: Path | None = None,
          d: ddp.Dist | None = None, progress: bool = True,
          stop_at: int | None = None, init: Path | None = None
          ) -> tuple[dict[str, Any], nn.Module | None]:
    """Train (or resume) one run in ``out_dir``; returns its summary and the trained
    network in its last state (``None`` when the folder held a finished run).
    ``teacher``: the checkpoint a student learns from; ``init``: the stage-1 chip
    classifier whose encoder a ``pretrained`` run starts from.

    ``stop_at`` stops after that step as an interruption would (for job-time
    limits), at once where the run has reached it; every check happens before the
    first step.
    """
    d = d or ddp.Dist(0, 1, torch.device("cpu"))
    cfg, method = run.config, run.method
    upstream = require_checkpoints(method, cfg, teacher, init)
    metric = "accuracy_valid" if method.kind == "classify" else "iou_valid"
    summary_path, last_path = out_dir / "summary.json", out_dir / "last.pt"
    # a student resumed with another teacher would mix two teachers' lessons, and a
    # finished one asked for with another would pass for its student
    digests = {"teacher": _digest(teacher), "pretraining": _digest(init)}
    checked = _files_state(out_dir)   # what the checks below read, to compare under the lock
    state = _of_this_run(run, last_path) if last_path.exists() else None
    _same_checkpoints(state, digests, last_path, teacher, init)
    _same_data(state, data, last_path)
    if state is None:
        finished = _finished_without_last(run, out_dir)
        if finished is not None:
            _same_checkpoints(finished, digests, summary_path, teacher, init)
            _same_data(finished, data, summary_path)
            return finished, None
    elif summary_path.exists():
        # unreadable, it is written again: the loop below has no step left to run
        summary = _read_summary(summary_path)
        if summary is not None:
            if not (out_dir / "best.pt").exists():
                raise RunError(f"{out_dir} holds a finished run (summary.json, last.pt) but no "
                               f"best.pt: its best checkpoint is lost; use another --out folder "
                               f"to train the run again")
            _of_this_run(run, out_dir / "best.pt")   # cut short by a copy, or another run's
            return summary, None
    start = 0 if state is None else state["step"]
    if stop_at is not None and stop_at <= start < cfg.steps:
        raise Interrupted(start, out_dir, f"already at step {start}, at or past --stop-at "
                                          f"{stop_at}: nothing trained; give a later one, or "
                                          f"none, to continue from {last_path}",
                          at_stop_step=True)
    teacher_model = _load_teacher(run, teacher, d.device)
    torch.manual_seed(derive_seed(run.seed, "init"))
    model = build_model(run.model_spec).to(d.device)
    if init is not None and state is None:
        _start_encoder_from(model, init, method.init_from)
    try:   # a trainee of another network than its method trains (compact_arch): one line
        trainee = make_trainee(method, model, teacher_model).to(d.device)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if d.is_main and not _read_every_chip(data.valid):   # only rank 0 validates
        raise RunError("the validation split has no pixel to score (every label is -1, or "
                       "S1 has no data under it): the best checkpoint could not be chosen")
    if method.kind in ("supervised", "classify"):
        for sources, pool in zip(method.pools, data.pools):
            if not _has_label(pool, sources[0].label):
                raise RunError(f"the training split {'+'.join(src.split for src in sources)} "
                               "has no labelled pixel (every label is -1, or S1 has no data "
                               "under it): there is nothing to learn from")
    splits = data.split_digests
    out_dir.mkdir(parents=True, exist_ok=True)  # after the checks: a refused run leaves none
    with folder_lock(out_dir, d.is_main):
        if d.is_main and _files_state(out_dir) != checked:   # the checks above are stale
            raise RunError(f"{out_dir}: another run wrote this folder while this one "
                           f"started; give the command again to check it anew")
        if d.is_main:
            for note in _other_chips(upstream, {"teacher": teacher, "pretraining": init},
                                     splits, data):
                print(f"warning: {note}", file=sys.stderr, flush=True)
                _Log(out_dir / "train.log", None)(f"warning: {note}")
        try:
            return _train_steps(run, data, out_dir, d, progress, stop_at, start, state,
                                digests, _data_record(data, splits, upstream), teacher_model,
                                model, trainee, metric)
        except (RunError, CheckpointError) as exc:   # a DatasetError logs its own line
            if d.is_main:
                _log_error(out_dir, exc)
            raise


def _log_error(out_dir: Path, exc: Exception) -> None:
    """The error that ends a run, in its train.log too: a divergence or a full disk is read
    there after the terminal is gone. On a full disk the line may not fit: stderr has it."""
    try:
        _Log(out_dir / "train.log", None)(f"stopped: {exc}")
    except OSError:
        pass


def batch_builder(method: Method, cfg: TrainConfig, scale: float):
    """What makes one training sample of ``method`` from a chip (crop, flips, jitter, its
    targets); ``scale``: model pixels per chip pixel."""
    if method.kind == "distill":
        return distill_builder(cfg, method.inputs, get_method(method.teacher).inputs, scale)
    if method.kind == "flora":
        return flora_builder(cfg, method.inputs, OPTICAL, scale)
    if method.kind == "classify":
        return classify_builder(cfg, method.inputs, method.pools[0][0].label, scale)
    return supervised_builder(cfg, method.inputs, method.pools[0][0].label, scale)


def _train_steps(run: RunSpec, data: RunData, out_dir: Path, d: ddp.Dist, progress: bool,
                 stop_at: int | None, start: int, state: dict[str, Any] | None,
                 digests: dict[str, str | None], data_record: dict[str, Any],
                 teacher_model: nn.Module | None, model: nn.Module, trainee: nn.Module,
                 metric: str) -> tuple[dict[str, Any], nn.Module | None]:
    """The steps of :func:`train` from ``start``, its checks passed and its folder held."""
    cfg, method = run.config, run.method
    summary_path, last_path = out_dir / "summary.json", out_dir / "last.pt"
    if d.is_main:  # what a save killed by SIGKILL left (summary.json: as it is written)
        for name in ("last.pt", "best.pt"):
            remove_stale(out_dir / name)
    scale = data.pixel_size_m / cfg.pixel_size_m  # model pixels per chip pixel
    build = batch_builder(method, cfg, scale)
    try:
        batches = StepBatches(data.pools, cfg.batch_size, build, run.seed, cfg.steps,
                              d.rank, d.world)
    except ValueError as exc:
        raise RunError(str(exc)) from None

    heads = getattr(trainee, "heads", None)
    optimiser = torch.optim.SGD(decay_groups(trainee, run.weight_decay, cfg.decay_all),
                                lr=run.lr, momentum=cfg.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _poly(cfg.steps, cfg.poly_power))
    best, elapsed = {"step": 0, metric: None}, 0.0
    if state is not None:
        load_weights(model, state["model"], str(last_path))
        if heads is not None:
            load_weights(heads, state["heads"], str(last_path))
        optimiser.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best, elapsed = state["best"], state["seconds"]
    net = ddp.wrap(trainee, d)

    def save_last(step: int) -> None:
        _check_finite(trainee, step)
        save_checkpoint(last_path, {
            "run": run.identity(), "model_spec": run.model_spec, "model": model.state_dict(),
            **({"heads": heads.state_dict()} if heads is not None else {}),
            "optimizer": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "best": best, "seconds": elapsed + time.perf_counter() - t0,
            "data": data.description, "data_fingerprint": data.fingerprint,
            **{f"{what}_sha256": digest for what, digest in digests.items()}})

    bar = tqdm(total=cfg.steps, initial=start, desc=f"{method.name} seed {run.seed}",
               disable=not (progress and d.is_main), dynamic_ncols=True)
    log = _Log(out_dir / "train.log", None if bar.disable else bar)
    if d.is_main:
        logged = log.last_step() if start else 0
        redone = (f" (the log above runs to step {logged}: the steps after {start} were lost "
                  f"with a killed process, before a checkpoint held them, and run again)"
                  if logged > start else "")
        log(f"{'resume' if start else 'start'} {method.name} seed {run.seed} at step {start}/"
            f"{cfg.steps}{redone}: {display_name(run.model_spec)}, lr {run.lr:g}, wd "
            f"{run.weight_decay:g}, batch {cfg.batch_size} x {cfg.crop}px, {d.world} "
            f"process(es) on {d.device}; data: {data.description}")
    loader = DataLoader(batches, batch_size=None, sampler=range(start, cfg.steps),
                        num_workers=cfg.workers, generator=torch.Generator(),
                        worker_init_fn=_stops_left_to_the_main_process,
                        # page-locked batches: what lets the copy below overlap the GPU's work
                        pin_memory=d.device.type == "cuda", persistent_workers=False)
    t0 = time.perf_counter()
    calib: list[Tensor] = []  # whole training chips for precise batch norm, made once
    with bar, stop_requests() as stop:  # the bar is closed before any message
        net.train()
        batches_in = iter(loader)
        for step in range(start, cfg.steps):
            try:
                batch = next(batches_in)
            except DatasetError as exc:
                # a chip bad only in its pixels (label codes, a corrupt block): the steps
                # done are saved (a multiple of checkpoint_every is already), so that a
                # rerun once the file is fixed resumes from them
                reason = worker_error(str(exc)).strip()
                if not d.is_main:
                    raise DatasetError(reason) from None
                if step > start and step % cfg.checkpoint_every:
                    save_last(step)
                log(f"stopped after step {step}: {reason}")
                raise DatasetError(reason + (
                    f" (steps 1-{step} are saved: once the file is fixed, rerun the same "
                    f"command to resume from {last_path})" if step else "")) from None
            torch.manual_seed(derive_seed(run.seed, "step", step, d.rank))  # dropout
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            loss = method_loss(net, teacher_model, batch, cfg, d, method.kind)
            # before the step: no checkpoint holds NaN weights; on every rank at once, so
            # that a grid search carries on with all of them
            if ddp.any_rank(not torch.isfinite(loss), d):
                raise Diverged(f"the loss is {loss.item()} at step {step + 1}: the run diverged "
                               f"(is the learning rate {run.lr:g} too high?)")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                # the global batch's loss: the mean of the ranks' shares
                value = (ddp.all_sum(loss, d) / d.world).item()
                if d.is_main:
                    lr = scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                    log(f"step {done} loss {value:.6f} lr {lr:.6g}")
            if done % cfg.eval_every == 0 or done == cfg.steps:
                if cfg.precise_bn_chips:
                    # on every rank, so the replicas keep the same statistics; on GPUs
                    # the layers are SyncBatchNorm, which recalibrate runs as plain
                    # batch norm (see there)
                    calib = calib or calibration_batches(
                        data.pools, method.inputs, cfg.precise_bn_chips, cfg.eval_batch,
                        run.seed, d.device, scale)
                    recalibrate(model, calib)
                if d.is_main:
                    if method.kind == "classify":
                        value = chip_accuracy(trainee, data.valid, method.inputs,
                                              cfg.eval_batch, d.device, scale, cfg.crop)
                    else:
                        value = score(model, data.valid, method.inputs, cfg.eval_batch,
                                      d.device, scale).summary()["iou"]
                    log(f"valid step {done} {metric.split('_')[0]} {value}", show=True)
                    if best["step"] == 0 or (value is not None and (best[metric] is None
                                                                    or value > best[metric])):
                        best = {"step": done, metric: value}
                        _check_finite(model, done)
                        save_checkpoint(out_dir / "best.pt", {
                            "run": run.identity(), "model_spec": run.model_spec,
                            "model": model.state_dict(), "best": best,
                            "data": data_record})
                ddp.barrier(d)
            halt = ddp.any_rank(stop["stop"] or done == stop_at, d) and done < cfg.steps
            if d.is_main and (done % cfg.checkpoint_every == 0 or done == cfg.steps or halt):
                save_last(done)
            if halt:
                asked = done == stop_at and not stop["stop"]   # not a signal
                if d.is_main:
                    log(f"stopped after step {done} as --stop-at asked" if asked
                        else f"interrupted after step {done}")
                ddp.barrier(d)
                raise Interrupted(done, out_dir, at_stop_step=asked)
    seconds = elapsed + time.perf_counter() - t0
    summary = {"method": method.name, "title": method.title, "seed": run.seed,
               "lr": run.lr, "weight_decay": run.weight_decay, "steps": cfg.steps,
               "model": display_name(run.model_spec), "model_spec": run.model_spec,
               "best_step": best["step"], "iou_valid": best.get("iou_valid"),
               **({metric: best[metric]} if metric != "iou_valid" else {}),
               "train_seconds": round(seconds, 1), "processes": d.world,
               "device": d.device.type, "data": data.description,
               "data_fingerprint": data.fingerprint,
               **{f"{what}_sha256": digest for what, digest in digests.items() if digest}}
    if d.is_main:
        log(f"done: best valid {metric.split('_')[0]} {best[metric]} at step {best['step']}")
        write_text_atomic(summary_path, json.dumps(summary, indent=1))
    # only rank 0 validated: every rank returns its summary (reproduce picks a grid
    # point from it on every rank, and all must pick the same)
    return ddp.from_main(summary, d), model
