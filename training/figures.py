"""``python -m training figure``: chips side by side, like Garg et al.'s Figure 2.

Columns: Sentinel-1 false colour (R VV, G VH, B VV-VH), Sentinel-2 true colour
(B4, B3, B2), the hand label, the weak label (the Sen1Floods11 S2 index rule of
``training.data.s2index`` applied to the chip's S2), and a prediction (Otsu, a
backend model or a mask folder, through the same code as ``evaluate``), titled
with its IoU on that chip. Colours as in the paper: dry green, water blue, not
labelled (clouds, or no S2 data) white, no radar data black.

``--compare-data``/``--compare-split-file`` add rows from a second dataset, e.g.
a real Sen1Floods11 chip under synthetic ones.

matplotlib comes with Debian's QGIS (python3-qgis-common depends on
python3-matplotlib), which the venv sees through its system site packages.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import evaluate
from .atomic import atomic_path, refused_output, remove_stale
from .cli import DEVICES
from .data import s2index
from .data.io import read_label, read_s1, read_s2
from .data.layout import HAND_KINDS, ChipFiles, DatasetError, Layout, chip_file
from .data.sets import check_chips
from .metrics import confusion

DRY, WATER, UNLABELLED, NO_DATA = (0.20, 0.60, 0.25), (0.10, 0.35, 0.90), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)


def s1_false_colour(s1: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1]: VV over [-25, 0] dB, VH over [-32, -5] dB, VV-VH over [0, 15] dB."""
    vv, vh = s1
    rgb = np.dstack([(vv + 25) / 25, (vh + 32) / 27, (vv - vh) / 15])
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0), 0, 1)
    rgb[~np.isfinite(s1).all(axis=0)] = NO_DATA
    return rgb


def s2_true_colour(s2_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) from stored B4, B3, B2 over the paper's [0, 3000] window."""
    rgb = np.clip(np.moveaxis(s2_rgb.astype(np.float32), 0, -1) / 3000.0, 0, 1)
    rgb[(s2_rgb == 0).any(axis=0)] = NO_DATA
    return rgb


def label_colours(codes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3): 0 dry, 1 water, other (-1) not labelled; ``valid`` False -> no data."""
    out = np.empty(codes.shape + (3,), np.float32)
    out[:] = UNLABELLED
    out[codes == 0] = DRY
    out[codes == 1] = WATER
    if valid is not None:
        out[~valid] = NO_DATA
    return out


def draw(rows: list[tuple[ChipFiles, str]], method: evaluate.Method, out: Path) -> None:
    """One figure row per (chip, caption); writes a PNG atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    titles = ["Sentinel-1 (VV, VH, VV-VH)", "Sentinel-2 (B4, B3, B2)", "hand label",
              "weak label (S2 NDVI/MNDWI)", f"prediction: {method.name}"]
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.1 * len(rows) + 0.6), squeeze=False)
    for r, (chip, caption) in enumerate(rows):
        s1 = read_s1(chip.s1)
        valid = np.isfinite(s1).all(axis=0)
        label = read_label(chip.label)
        pred = method.predict(chip, s1)
        iou = confusion(pred, label, valid).iou
        s2 = read_s2(chip.s2) if chip.s2 else None
        panels = [s1_false_colour(s1),
                  s2_true_colour(s2[[3, 2, 1]]) if s2 is not None else np.zeros(s1.shape[1:] + (3,)),
                  label_colours(label),
                  label_colours(s2index.s1f11_weak(s2)) if s2 is not None else np.ones(s1.shape[1:] + (3,)),
                  label_colours(pred, valid)]
        for c, (ax, img) in enumerate(zip(axes[r], panels)):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
        axes[r, 0].set_ylabel(caption, fontsize=9)
        axes[r, 4].set_xlabel("IoU " + ("-" if iou is None else f"{100 * iou:.1f}%"), fontsize=9)
    legend = [Patch(color=DRY, label="dry"), Patch(color=WATER, label="water"),
              Patch(facecolor=UNLABELLED, edgecolor="0.5", label="not labelled (cloud or no S2)"),
              Patch(color=NO_DATA, label="no data")]
    fig.legend(handles=legend, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    remove_stale(out)  # what a figure killed by SIGKILL left
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)


def pick(chips: list[ChipFiles], ids: list[str], n: int) -> list[ChipFiles]:
    """The chips named in ``ids``, else ``n`` chips evenly spread over the split."""
    if ids:
        by_id = {c.chip_id: c for c in chips}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DatasetError(f"chips not in the split: {', '.join(unknown)}")
        return [by_id[i] for i in ids]
    idx = np.linspace(0, len(chips) - 1, min(n, len(chips))).round().astype(int)
    return [chips[i] for i in dict.fromkeys(idx)]


def with_s2(data: str | Path, chips: list[ChipFiles]) -> list[ChipFiles]:
    """The chips drawn, with their S2Hand files, checked: the split's other chips may
    have none (a partial download)."""
    folder = Layout.find(data).hand
    chips = [replace(c, s2=chip_file(folder, c.chip_id, HAND_KINDS.s2)) for c in chips]
    check_chips(chips, "chips to draw")
    return chips


def image_formats() -> list[str]:
    """The suffixes matplotlib writes an image for: it picks the format from --out's."""
    from matplotlib.backend_bases import FigureCanvasBase
    return sorted(FigureCanvasBase.get_supported_filetypes())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="test", choices=evaluate.SPLITS[:4])
    p.add_argument("--split-file", help="chips from this split file instead")
    p.add_argument("--chip", action="append", default=[], help="chip id to show (repeatable)")
    p.add_argument("--chips", type=int, default=4, help="number of chips when no --chip is given")
    p.add_argument("--compare-data", help="second dataset to add rows from (e.g. real chips)")
    p.add_argument("--compare-split-file", help="split file of --compare-data (its chips are added)")
    # one prediction column: given both, --masks was dropped without a word
    prediction = p.add_mutually_exclusive_group()
    prediction.add_argument("--model", help="ONNX model for the prediction column (default: Otsu on VV)")
    prediction.add_argument("--masks", help="mask folder for the prediction column")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--out", required=True,
                   help="image to write: .png, or another suffix matplotlib writes (.pdf, .svg)")
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from backend.errors import BackendError

    from .cli import fail

    out = Path(args.out)
    problem = refused_output(out, args.overwrite)
    if problem:
        return fail(problem)
    formats = image_formats()
    if out.suffix.lower().lstrip(".") not in formats:
        return fail(f"--out {out}: name an image file, ending in .png or another suffix "
                    f"matplotlib writes ({', '.join(formats)})")
    if args.chips < 1:
        return fail(f"--chips {args.chips}: give at least 1")
    if bool(args.compare_data) != bool(args.compare_split_file):
        return fail("--compare-data and --compare-split-file go together")
    try:
        with tempfile.TemporaryDirectory(prefix="sarflood-figure-") as tmp:
            if args.model:
                method = evaluate.model(args.model, Path(tmp), args.device)
            elif args.masks:
                method = evaluate.masks(args.masks)
            else:
                method = evaluate.otsu("VV")
            # a split file's chips are named after the file, as evaluate names them
            name = Path(args.split_file).stem if args.split_file else args.split
            chips, _ = evaluate.load_split(args.data, name, args.split_file)
            rows = [(c, c.chip_id) for c in with_s2(args.data, pick(chips, args.chip, args.chips))]
            if args.compare_data:
                extra, _ = evaluate.load_split(args.compare_data, Path(args.compare_split_file).stem,
                                               args.compare_split_file, s2=True)
                rows += [(c, f"{c.chip_id} (compare)") for c in extra]
            method.prepare([c for c, _ in rows])
            draw(rows, method, out)
    except (DatasetError, BackendError) as exc:
        return fail(str(exc))
    print(f"wrote {out} ({len(rows)} chips)")
    return 0
