"""``python -m training evaluate``: score water masks on a split, one path for every method.

Methods (any number in one run; Otsu first, as the first row of the results table):

- ``--otsu [VV|VH]``: Otsu's threshold on one Sentinel-1 band in dB
  (``backend.otsu``), per chip; with ``--otsu-scope event``, one threshold per
  flood event from the pooled histogram of its chips in the split, as
  Sen1Floods11's own ``S1OtsuLabel`` layers used one VH threshold per event
  (``VH_thresh`` in its metadata);
- ``--model M.onnx``: a backend model, run through ``backend.engine.predict``
  exactly as a user would, its masks then scored;
- ``--masks DIR``: ready mask GeoTIFFs, ``DIR/<chip>.tif`` or ``DIR/<chip>_*.tif``
  (backend masks 0/1/255, or Sen1Floods11-style -1/0/1), each on its chip's S1 grid;
- ``--s2-index s1f11|ndwi``: a Sentinel-2 index rule (``training.data.s2index``)
  applied to the chip's S2 (what the weak labels are made of).

Splits: the hand-labelled ``train``/``valid``/``test``/``bolivia`` are scored
against LabelHand; ``weak`` and ``external`` (synthetic data only) against the
generator's truth. Metrics and their definition: ``training.metrics``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import refused_output, write_text_atomic
from .cli import DEVICES
from .data import s2index
from .data.io import grid_of, read_label, read_mask, read_s1, read_s2
from .data.layout import HAND_SPLITS, ChipFiles, DatasetError, Layout, problems_message
from .data.sets import external_chips, hand_chips, weak_chips
from .metrics import Scoreboard
from .synth.writer import check_complete

SPLITS = HAND_SPLITS + ("weak", "external")
# a predictor maps a chip (and its S1 in dB, already read) to 1 water / 0 dry / -1 none
Predictor = Callable[[ChipFiles, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Method:
    name: str
    predict: Predictor
    # runs once on all chips before any is predicted: checks inputs, or learns from them
    prepare: Callable[[list[ChipFiles]], None] = lambda chips: None
    needs_s2: bool = False


def load_split(data: str | Path, split: str, split_file: str | Path | None = None,
               s2: bool = False) -> tuple[list[ChipFiles], str]:
    """The split's chips with ``label`` set to the reference they are scored against."""
    check_complete(Layout.find(data).root)
    if split in HAND_SPLITS or split_file:
        return hand_chips(data, split, split_file=split_file, s2=s2), "LabelHand"
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    chips = weak_chips(data, s2=s2) if split == "weak" else external_chips(data, s2=s2)
    no_truth = [c.chip_id for c in chips if c.truth is None]
    if len(no_truth) == len(chips):   # the real dataset: its weak labels are all there is
        raise DatasetError(f"split {split!r} can be scored only on synthetic data, against its "
                           f"synthetic_truth files, and {data} has none; score the "
                           f"hand-labelled splits ({', '.join(HAND_SPLITS)})")
    if no_truth:
        raise DatasetError(problems_message(
            f"split {split!r} has no hand labels and is scored against synthetic truth",
            [f"chip {c}: no synthetic_truth file" for c in no_truth]))
    return [replace(c, label=c.truth) for c in chips], "synthetic truth"


def event_of(chip_id: str) -> str:
    """Sen1Floods11 chip ids are ``Event_Chip``."""
    return chip_id.rsplit("_", 1)[0]


def otsu(band: str = "VV", scope: str = "chip") -> Method:
    """Otsu's threshold on ``band`` in dB, per chip or per event (``scope``)."""
    from backend.otsu import Histogram, otsu_from_histogram, otsu_threshold, water_mask

    index = ("VV", "VH").index(band)
    event_thresholds: dict[str, float | None] = {}

    def prepare(chips: list[ChipFiles]) -> None:
        if scope == "chip":
            return
        hists: dict[str, Histogram] = {}
        for chip in chips:
            hists.setdefault(event_of(chip.chip_id), Histogram()).add(read_s1(chip.s1)[index])
        event_thresholds.update({e: otsu_from_histogram(h.counts, h.edges) for e, h in hists.items()})

    def predict(chip: ChipFiles, s1: np.ndarray) -> np.ndarray:
        threshold = (otsu_threshold(s1[index]) if scope == "chip"
                     else event_thresholds[event_of(chip.chip_id)])
        if threshold is None:   # no valid pixel, or a single value: nothing to threshold
            return np.full(s1.shape[1:], -1, np.int8)
        mask = water_mask(s1[index], threshold)
        return np.where(mask == 255, -1, mask).astype(np.int8)

    if scope not in ("chip", "event"):
        raise ValueError(f"unknown Otsu scope {scope!r}; expected chip or event")
    return Method(f"otsu ({band}{', per event' if scope == 'event' else ''})", predict, prepare)


def mask_path(folder: Path, chip_id: str) -> Path | None:
    exact = folder / f"{chip_id}.tif"
    if exact.is_file():
        return exact
    found = sorted(folder.glob(f"{chip_id}_*.tif"))
    return found[0] if len(found) == 1 else None


def masks(folder: str | Path) -> Method:
    folder = Path(folder)

    def check(chips: list[ChipFiles]) -> None:
        """Every chip has its mask, on its S1's grid: a mask of the chip's size on another
        grid (another transform or CRS) would be scored as if it lay on the chip."""
        if not folder.is_dir():
            raise DatasetError(f"{folder}: mask folder not found")
        problems = []
        for c in chips:
            path = mask_path(folder, c.chip_id)
            if path is None:
                problems.append(f"chip {c.chip_id}: no mask {folder}/{c.chip_id}.tif (or a "
                                f"single {c.chip_id}_*.tif)")
                continue
            why = grid_of(c.s1).mismatch(grid_of(path), ("S1", "mask"))
            if why:
                problems.append(f"chip {c.chip_id}: {path} lies on another grid than its S1 "
                                f"{c.s1.name} ({why})")
        if problems:
            raise DatasetError(problems_message(f"masks in {folder}", problems))

    def predict(chip: ChipFiles, s1: np.ndarray) -> np.ndarray:
        return read_mask(mask_path(folder, chip.chip_id))

    return Method(f"masks ({folder.name})", predict, check)


def s2_index(rule: str) -> Method:
    def predict(chip: ChipFiles, s1: np.ndarray) -> np.ndarray:
        return s2index.RULES[rule](read_s2(chip.s2)).astype(np.int8)

    return Method(f"S2 index ({rule})", predict, needs_s2=True)


def model(path: str | Path, workdir: Path, device: str = "auto",
          threshold: float | None = None) -> Method:
    """A backend model through ``backend.engine.predict``, one chip at a time, on one
    session (loaded here, so a bad model fails early, with the backend's message)."""
    from backend.engine import PredictOptions, predict as backend_predict
    from backend.model import OnnxModel

    loaded = OnnxModel(str(path), device)
    card = loaded.card

    def predict(chip: ChipFiles, s1: np.ndarray) -> np.ndarray:
        out = workdir / f"{chip.chip_id}.tif"
        backend_predict(PredictOptions(inputs=[str(chip.s1)], mask=str(out), model=str(path),
                                       device=device, threshold=threshold, overwrite=True),
                        model=loaded)
        return read_mask(out)

    return Method(f"model {card.name} {card.version}", predict)


def evaluate(chips: list[ChipFiles], method: Method) -> Scoreboard:
    """Score one method on chips whose ``label`` is the reference."""
    method.prepare(chips)
    board = Scoreboard()
    for chip in chips:
        s1 = read_s1(chip.s1)
        valid = np.isfinite(s1).all(axis=0)
        board.add(chip.chip_id, method.predict(chip, s1), read_label(chip.label), valid)
    return board


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_table(rows: list[dict]) -> str:
    w = max([34, *(len(r["method"]) for r in rows)])   # whole names: a version cut is another
    ws = max([8, *(len(r["split"]) for r in rows)])    # a --split-file's name, whole too
    head = (f"{'method':{w}} {'split':{ws}} {'IoU %':>7} {'chip-mean %':>11} {'precision %':>11} "
            f"{'recall %':>8} {'chips':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:{w}} {r['split']:{ws}} {_pct(r['iou']):>7} "
                     f"{_pct(r['mean_chip_iou']):>11} {_pct(r['precision']):>11} "
                     f"{_pct(r['recall']):>8} {r['chips']:>5}")
    return "\n".join(lines)


def write_json(path: Path, doc: dict, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise DatasetError(f"{path}: exists; pass --overwrite to replace it")
    write_text_atomic(path, json.dumps(doc, indent=1))


# --- command line ------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder (holding v1.1/, or S1Hand/ directly)")
    p.add_argument("--split", action="append", choices=SPLITS,
                   help="split to score (repeatable; default test)")
    p.add_argument("--split-file", help="score the chips of this split file instead (.csv or .txt)")
    p.add_argument("--otsu", nargs="?", const="VV", choices=("VV", "VH"), action="append", default=[],
                   help="Otsu's threshold on VV (default) or VH, per chip (repeatable)")
    p.add_argument("--otsu-scope", choices=("chip", "event"), default="chip",
                   help="one Otsu threshold per chip (default) or per event of the split")
    p.add_argument("--model", action="append", default=[], help="ONNX model with a card (repeatable)")
    p.add_argument("--masks", action="append", default=[], help="folder of mask GeoTIFFs (repeatable)")
    p.add_argument("--s2-index", choices=sorted(s2index.RULES), action="append", default=[],
                   help="score a Sentinel-2 index rule (the weak labellers)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threshold", type=float, help="model probability threshold (default: card)")
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run(args: argparse.Namespace) -> int:
    from .cli import fail
    from backend.errors import BackendError

    # a split file's chips are named after the file unless --split names them
    splits = args.split or ([Path(args.split_file).stem] if args.split_file else ["test"])
    splits = list(dict.fromkeys(splits))   # a split given twice is scored once
    if args.split_file and len(splits) > 1:
        return fail("--split-file scores one split; give one --split (its name in the table)")
    if not (args.otsu or args.model or args.masks or args.s2_index):
        return fail("nothing to score: give --otsu, --model, --masks or --s2-index")
    if args.threshold is not None and not args.model:
        return fail("--threshold is a model's probability threshold: give --model too")
    for m in args.model:   # ONNX Runtime's answer was a protobuf parsing error
        if Path(m).suffix in (".pt", ".pth"):
            return fail(f"--model {m}: a PyTorch checkpoint; evaluate runs exported ONNX "
                        f"models: python -m training export {m} --out MODEL.onnx first")
    problem = refused_output(Path(args.json), args.overwrite) if args.json else None
    if problem:
        return fail(problem)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="sarflood-eval-") as tmp:
            methods = [otsu(band, args.otsu_scope) for band in args.otsu]
            methods += [model(m, Path(tmp), args.device, args.threshold) for m in args.model]
            methods += [masks(m) for m in args.masks] + [s2_index(r) for r in args.s2_index]
            for split in splits:
                for method in methods:
                    chips, reference = load_split(args.data, split, args.split_file, s2=method.needs_s2)
                    board = evaluate(chips, method)
                    rows.append({"method": method.name, "split": split, "reference": reference,
                                 **board.summary(),
                                 "per_chip": {c: {"iou": k.iou, "tp": k.tp, "fp": k.fp, "fn": k.fn,
                                                  "tn": k.tn} for c, k in board.chips.items()}})
    except (DatasetError, BackendError) as exc:
        return fail(str(exc))
    print(format_table(rows))
    print("IoU: water class over all scored pixels of the split (see training/metrics.py)")
    if args.json:
        write_json(Path(args.json), {"data": str(args.data), "results": rows}, args.overwrite)
    return 0
