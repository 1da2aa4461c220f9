"""Export a trained Sentinel-1 model to one ONNX file carrying its model card.

``python -m training export RUN/best.pt --out MODEL.onnx``:

1. rebuilds the checkpoint's network (loaded with ``weights_only=True``);
2. exports ``P(water)`` as ``N x 1 x H x W`` (the activation inside the graph)
   with dynamic batch, height and width, weights embedded (one file);
3. fills the card (backend/MODEL_CARD.md) from the run: bands and normalisation
   of Garg et al., Appendix A, pixel size, tiling, metrics, training data;
4. checks parity with torch on two input shapes (max abs difference printed;
   above :data:`PARITY_TOL` the export fails, and says whether torch's own float32
   rounding, measured against float64, accounts for the difference);
5. checks that the backend accepts the file: ``python -m backend card`` and
   ``python -m backend predict`` on a generated scene.

The file appears at ``--out`` only when every check passed.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from backend.card import CARD_KEY, BandSpec, ModelCard
from backend.model import OnnxModel

from .atomic import atomic_path, remove_stale, unwritable
from .checkpoint import CheckpointError, load_model, unfinished_at
from .data.conventions import S1_BANDS, S1_WINDOWS
from .methods import EXTERNAL, HAND_TRAIN, S1F11_WEAK, Method, get_method
from .models import display_name

INPUT, OUTPUT = "s1", "water_probability"
OPSET = 18
# float32 rounding differs between ONNX Runtime's fused kernels and torch; through the
# ~70 layers of a trained DeepLab student it reached 1.8e-4 on P(water) (cpu preset,
# synthetic data), so the bound is 1e-3: far below anything that moves a mask
PARITY_TOL = 1e-3
REPO = Path(__file__).resolve().parents[1]


class ExportError(ValueError):
    """The checkpoint cannot be exported, or the exported file failed a check."""


class _Probability(nn.Module):
    """The exported graph: normalised S1 in, P(water) out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.water_probability(x)


def build_card(doc: dict[str, Any], metrics: dict[str, float], version: str,
               size_multiple: int, reached_step: int | None = None) -> ModelCard:
    """The model card of a checkpoint (``doc``) with the given measured metrics;
    ``reached_step``: the step an unfinished run had reached (None: finished or unknown)."""
    run = doc.get("run", {})
    method = get_method(run.get("method", "hand"))
    spec = doc["model_spec"]
    data = doc.get("data", {})
    cfg = run.get("config", {})
    bands = tuple(BandSpec(b, "dB", S1_WINDOWS[b], S1_WINDOWS[b][0],
                           S1_WINDOWS[b][1] - S1_WINDOWS[b][0]) for b in S1_BANDS)
    best = doc.get("best", {})
    return ModelCard(
        name=f"sarflood-{method.name.replace('_', '-')}", version=version,
        task="water_segmentation",
        description=(f"{method.title}: {display_name(spec)} on Sentinel-1 VV and VH (dB), "
                     f"after {_SOURCES.get(method.paper, _BASELINE)}. Outputs the probability "
                     f"of water."),
        bands=bands, input_name=INPUT, output_name=OUTPUT, output_kind="water_probability",
        default_threshold=0.5, pixel_size_m=float(cfg.get("pixel_size_m", 10.0)),
        tile_size=int(cfg.get("tile_size", 512)), margin=int(cfg.get("tile_margin", 64)),
        size_multiple=size_multiple,
        training_data=f"{data.get('description', 'unknown')}; {learnt_from(method, data)}",
        metrics={k: round(float(v), 4) for k, v in metrics.items()},
        notes=(f"preset {cfg.get('preset', '?')}, seed {run.get('seed')}, lr {run.get('lr')}, "
               f"weight decay {run.get('weight_decay')}, {cfg.get('steps')} steps of batch "
               f"{cfg.get('batch_size')} x {cfg.get('crop')} px; checkpoint of step "
               f"{best.get('step')} chosen on validation IoU"
               + (f", from an UNFINISHED run (stopped at step {reached_step} of "
                  f"{cfg.get('steps')})." if reached_step is not None else ".")),
        license="MIT",
        extra={"method": method.name, "architecture": display_name(spec), "model_spec": spec,
               "seed": run.get("seed"), "config": cfg})


# the seed papers a row comes from (training/methods.py Method.paper)
_SOURCES = {
    "001": "Garg et al., 'Cross Modal Distillation for Flood Extent Mapping'",
    "002": "the seed paper 'SAR-based landslide classification pretraining leads to better "
           "segmentation' (two-stage chip-classification pretraining)",
    "003": "FLoRA (cross-modal distillation of optical priors into a SAR network, with "
           "SAR-to-optical reconstruction)",
}
_BASELINE = "the seed papers 002 and 003 (the baseline of their comparisons)"
# what a row learns from each of its sources (training/methods.py Method.pools): the data
# line names the dataset, not which of its sets a row read (the external set is no part
# of Sen1Floods11) nor with which labels
_SOURCE_TEXT = {
    (HAND_TRAIN, "label"): "the train split's hand labels",
    (HAND_TRAIN, None): "the train split's chips (unlabelled)",
    (S1F11_WEAK, "weak_label"): "the weakly labelled set's weak labels",
    (EXTERNAL, "weak_label"): "the external set's NDWI weak labels",
    (EXTERNAL, None): "the external set's paired S1 + S2 chips (unlabelled)",
}
_FROM_TEACHER = {"distill": "its teacher's soft labels",
                 "flora": "its optical teacher's features, and the chips' RGB + NDVI to "
                          "reconstruct"}


def _sources(method: Method) -> str:
    return " and ".join(_SOURCE_TEXT[(src.split, src.label)]
                        for pool in method.pools for src in pool)


def learnt_from(method: Method, data: dict[str, Any]) -> str:
    """Every source a run learnt from, for its card: its sets and labels, and those of
    its teacher and stage-1 runs with the data they were trained on (as ``data``, the
    run's best.pt record, names it by role): a student of a teacher trained on synthetic
    data learnt from synthetic data, whatever its own data."""
    def of(role: str) -> str:
        theirs = data.get(role)
        if theirs is None:   # a checkpoint from before best.pt recorded it
            return "data its checkpoint does not name"
        return "the same data" if theirs == data.get("description") else theirs

    text = f"learnt from {_sources(method)}"
    if method.teacher:
        text += (f", with {_FROM_TEACHER[method.kind]}; its teacher ({method.teacher} run) "
                 f"learnt from {_sources(get_method(method.teacher))} of {of('teacher')}")
    if method.init_from:
        text += (f"; its encoder first learnt from {_sources(get_method(method.init_from))} "
                 f"(stage 1, {method.init_from}) of {of('pretraining')}")
    return text


def run_metrics(checkpoint: Path, doc: dict[str, Any]) -> dict[str, float]:
    """Validation IoU from the checkpoint, plus test metrics the run folder holds
    (``metrics.json``, written by ``reproduce``)."""
    metrics = {}
    if doc.get("best", {}).get("iou_valid") is not None:  # None: no water to score yet
        metrics["iou_valid"] = float(doc["best"]["iou_valid"])
    extra = checkpoint.parent / "metrics.json"
    if extra.is_file():
        try:
            doc = json.loads(extra.read_text(encoding="utf-8"))
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ExportError(f"{extra}: not readable JSON ({exc}); rerun the reproduce "
                              f"that wrote it, or move it away to export without test "
                              f"metrics") from None
        if not isinstance(doc, dict):
            raise ExportError(f"{extra}: not a JSON object of metrics")
        metrics.update({k: float(v) for k, v in doc.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return metrics


def _onnx_export(model: nn.Module, path: Path) -> None:
    wrapped = _Probability(model).eval()
    dyn = torch.export.Dim.DYNAMIC
    # the exporter logs a warning per torchvision op it cannot register (none is used
    # here) and prints its stages on stdout, which belongs to our report
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped, (torch.zeros(1, model.in_channels, 128, 128),), dynamo=True,
            input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
            dynamic_shapes={"x": {0: dyn, 2: dyn, 3: dyn}}, external_data=False,
            verbose=False)
    program.save(str(path), external_data=False)


def parity(model: nn.Module, path: Path) -> float:
    """Max abs difference of P(water) between ONNX Runtime and torch on two shapes;
    above :data:`PARITY_TOL`, or NaN in either, an :class:`ExportError` saying where
    and why (:func:`_mismatch`)."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    # normalised inputs lie in [0, 1]
    xs = [torch.rand(shape, generator=g)
          for shape in [(1, model.in_channels, 256, 256), (2, model.in_channels, 200, 328)]]
    refs, outs = [], []
    for x in xs:
        with torch.no_grad():
            refs.append(model.water_probability(x).numpy())
        outs.append(session.run([OUTPUT], {INPUT: x.numpy()})[0])
        if outs[-1].shape != refs[-1].shape:
            raise ExportError(f"{path}: ONNX output shape {outs[-1].shape} != torch "
                              f"{refs[-1].shape}")
    # a NaN difference compares below any tolerance: name it instead
    nan = [name for name, ps in (("torch", refs), ("ONNX Runtime", outs))
           if any(np.isnan(p).any() for p in ps)]
    if nan:
        raise ExportError(f"{path}: P(water) is NaN in {' and '.join(nan)} on the parity "
                          f"inputs: the network overflows float32")
    worst = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))
    if worst > PARITY_TOL:
        raise ExportError(_mismatch(model, xs, refs, outs))
    return worst


def _mismatch(model: nn.Module, xs: list[Tensor], refs: list[np.ndarray],
              outs: list[np.ndarray]) -> str:
    """Where ONNX and torch differ most, and whether torch's own float32 rounding
    accounts for it: both are measured against the model run in float64. A network
    that amplifies rounding moves torch as far from float64 as ONNX (measured: 2
    cpu-preset steps of DeepLab with zero_init_residual=false, 9.5e-3 to 1.8e-2, the
    float64 export exact to 2e-11); a wrong graph leaves torch close to it."""
    diffs = [np.abs(o - r) for o, r in zip(outs, refs)]
    i = max(range(len(xs)), key=lambda k: diffs[k].max())
    n, _, row, col = np.unravel_index(diffs[i].argmax(), diffs[i].shape)
    exact_model = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = [exact_model.water_probability(x.double()).numpy() for x in xs]
    onnx_err = max(float(np.abs(o - e).max()) for o, e in zip(outs, exact))
    torch_err = max(float(np.abs(r - e).max()) for r, e in zip(refs, exact))
    text = (f"ONNX and torch differ by {diffs[i].max():.2e} in P(water) (> {PARITY_TOL:g}), "
            f"most at image {n + 1}, row {row}, column {col} of the "
            f"{' x '.join(map(str, xs[i].shape))} parity input (torch "
            f"{refs[i][n, 0, row, col]:.4f}, ONNX {outs[i][n, 0, row, col]:.4f}); against "
            f"torch in float64, ONNX is off by {onnx_err:.2e} and torch in float32 by "
            f"{torch_err:.2e}")
    if torch_err >= onnx_err / 10:
        return (text + ": the network itself amplifies float32 rounding, as a barely "
                "trained one can (e.g. a few steps with zero_init_residual=false), not an "
                "export fault; train it further and export again")
    return text + ": torch is close to exact, so the exported graph computes something else"


def _backend(args: list[str]) -> str:
    """``python -m backend ARGS`` from the repository (paths in ARGS must be absolute)."""
    proc = subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ExportError(f"backend {args[0]} refused the export: "
                          f"{msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return proc.stdout


def backend_accepts(path: Path) -> dict[str, Any]:
    """Load through ``backend.model.OnnxModel``, then run ``python -m backend card``
    and ``predict`` on a generated 600 x 600 scene; returns predict's result."""
    path = Path(path).resolve()   # the backend runs from the repository, not from here
    OnnxModel(str(path), device="cpu")
    with tempfile.TemporaryDirectory(prefix="sarflood-export-") as tmp:
        tmp_dir = Path(tmp).resolve()
        _backend(["card", str(path), "--json"])
        scene, mask = tmp_dir / "scene.tif", tmp_dir / "mask.tif"
        _backend(["scene", str(scene), "--size", "600", "--seed", "1"])
        out = _backend(["predict", str(scene), "--mask", str(mask), "--model", str(path),
                        "--device", "cpu", "--progress", "json"])
        results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        result = next((r for r in results if r.get("event") == "result"), None)
        if result is None or not mask.is_file():
            raise ExportError("backend predict wrote no mask and no result for the export")
        return result


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that cannot be written before any export work."""
    problem = unwritable(out)
    if problem:
        raise ExportError(problem)


def export(checkpoint: Path, out: Path, version: str = "1.0.0") -> dict[str, Any]:
    """Export ``checkpoint`` to ``out``; returns a report (parity, card, backend result)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if checkpoint.name == "best.pt" and not checkpoint.exists() and \
            (checkpoint.parent / "last.pt").exists():   # a run stopped before it validated
        raise ExportError(f"{checkpoint}: not written yet: a run writes best.pt at its first "
                          f"validation (step eval_every), which this one has not reached; "
                          f"resume it past that step")
    try:
        model, doc = load_model(checkpoint)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if model.in_channels != len(S1_BANDS):
        raise ExportError(f"{checkpoint}: {display_name(doc['model_spec'])} takes "
                          f"{model.in_channels} input channels; the plugin feeds Sentinel-1 "
                          f"VV and VH only (2), so export a Sentinel-1 model, not the teacher")
    if doc.get("run", {}).get("method") == "chip_classifier":
        raise ExportError(f"{checkpoint}: is a chip classifier (stage 1 of the two-stage "
                          f"method), which maps no water: export its stage 2 (pretrained)")
    if "optimizer" in doc:  # last.pt: its card would give best.pt's step and metrics
        raise ExportError(f"{checkpoint}: is a run's last state, not the checkpoint chosen on "
                          f"validation; export {checkpoint.parent / 'best.pt'}")
    _check_out(out)
    reached = unfinished_at(checkpoint, doc)
    card = build_card(doc, run_metrics(checkpoint, doc), version, model.size_multiple, reached)
    remove_stale(out)  # what an export killed by SIGKILL left
    with atomic_path(out) as tmp:
        _onnx_export(model, tmp)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {CARD_KEY: card.to_json()})
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        diff = parity(model, tmp)
        result = backend_accepts(tmp)
    return {"out": str(out), "max_abs_diff": diff, "card": json.loads(card.to_json()),
            "backend_predict": result, "bytes": out.stat().st_size, "unfinished_at_step": reached}
