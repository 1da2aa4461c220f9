"""The chip lists of the three training sets, checked up front.

- :func:`hand_chips`: a hand-labelled split (S1Hand, LabelHand, optionally S2Hand).
- :func:`weak_chips`: the weakly labelled set (S1Weak, S2IndexLabelWeak).
- :func:`external_chips`: the external paired set (S1, S2, LabelWeak).

Each validates the whole list before returning it: missing files, unreadable
headers, headers the readers refuse (bands, their names, the S1 dtype) and grids
that differ between a chip's layers are all collected and reported together (the
first few and the count) in one :class:`DatasetError`. Only headers are read: what
shows only in the pixels (label codes, a corrupt block) is a :class:`DatasetError`
naming the file when the chip is read.
"""
from __future__ import annotations

from pathlib import Path

from .io import check_layer
from .layout import (EXTERNAL_KINDS, HAND_KINDS, HAND_SPLITS, TRUTH_KIND, WEAK_KINDS, ChipFiles,
                     DatasetError, Kinds, Layout, chip_file, parse_split, problems_message)

_LAYERS = ("s1", "label", "s2", "truth")


def check_chips(chips: list[ChipFiles], what: str, problems: list[str] | None = None) -> None:
    """Raise :class:`DatasetError` listing every missing file, refused header and grid
    mismatch."""
    problems = list(problems or [])
    # a layer's whole folder missing (a partial download) is one line, not one per chip
    folders = {getattr(c, layer).parent for c in chips for layer in _LAYERS if getattr(c, layer)}
    absent = sorted(f for f in folders if not f.is_dir())
    problems += [f"{f}: folder not found (no chip has its file there)" for f in absent]
    for chip in chips:
        present = [(layer, getattr(chip, layer)) for layer in _LAYERS if getattr(chip, layer)]
        missing = [(layer, p) for layer, p in present if not p.is_file()]
        problems += [f"chip {chip.chip_id}: {layer} file missing: {p}" for layer, p in missing
                     if p.parent not in absent]
        if missing:
            continue
        grids = {}
        for layer, path in present:
            try:
                grids[layer] = check_layer(path, layer)
            except DatasetError as exc:
                problems.append(f"chip {chip.chip_id}: {exc}")
        for layer, path in present[1:]:
            why = ("s1" in grids and layer in grids
                   and grids["s1"].mismatch(grids[layer], ("s1", layer)))
            if why:
                problems.append(f"chip {chip.chip_id}: {layer} grid differs from s1 ({why}): {path}")
    if problems:
        raise DatasetError(problems_message(what, problems))


def _truth(layout: Layout, group: str, chip_id: str) -> Path | None:
    path = layout.truth / group / f"{chip_id}_{TRUTH_KIND}.tif"
    return path if path.is_file() else None


def _split_chips(layout: Layout, path: Path, folder: Path, kinds: Kinds, truth_group: str,
                 s2: bool, what: str) -> list[ChipFiles]:
    ids, problems = parse_split(path, kinds.s1, kinds.label)
    chips = [ChipFiles(chip_id=c, s1=chip_file(folder, c, kinds.s1),
                       label=chip_file(folder, c, kinds.label),
                       s2=chip_file(folder, c, kinds.s2) if s2 else None,
                       truth=_truth(layout, truth_group, c))
             for c in ids]
    check_chips(chips, f"{what} ({path})", problems)
    return chips


def hand_chips(root: str | Path, split: str, *, split_file: str | Path | None = None,
               s2: bool = False) -> list[ChipFiles]:
    """Chips of a hand-labelled split, from ``flood_<split>_data.csv`` (or ``split_file``)."""
    layout = Layout.find(root)
    if split_file is None and split not in HAND_SPLITS:
        raise DatasetError(f"unknown split {split!r}; Sen1Floods11 splits are {', '.join(HAND_SPLITS)}")
    path = Path(split_file) if split_file else layout.hand_split_file(split)
    if layout.hand == layout.root and not path.exists():  # a flat folder, as in ../shared
        raise DatasetError(f"{layout.root}: a flat folder of hand-labelled chips without "
                           f"{path.name}: training and reproduce need the v1.1 layout with its "
                           f"split files; evaluate and figure take a flat folder with --split-file")
    return _split_chips(layout, path, layout.hand, HAND_KINDS, "HandLabeled", s2,
                        f"hand-labelled split {split!r}")


def weak_chips(root: str | Path, *, s2: bool = False) -> list[ChipFiles]:
    """Every ``S1Weak`` chip with its ``S2IndexLabelWeak`` label (and ``S2Weak`` if asked)."""
    layout = Layout.find(root)
    folder = layout.weak / WEAK_KINDS.s1
    if not folder.is_dir():
        raise DatasetError(f"{folder}: weakly labelled folder not found")
    suffix = f"_{WEAK_KINDS.s1}.tif"
    ids = sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))
    if not ids:
        raise DatasetError(f"{folder}: holds no *{suffix} chips")
    chips = [ChipFiles(chip_id=c, s1=chip_file(layout.weak, c, WEAK_KINDS.s1),
                       label=chip_file(layout.weak, c, WEAK_KINDS.label),
                       s2=chip_file(layout.weak, c, WEAK_KINDS.s2) if s2 else None,
                       truth=_truth(layout, "WeaklyLabeled", c))
             for c in ids]
    check_chips(chips, f"weakly labelled set ({layout.weak})")
    return chips


def external_chips(root: str | Path, split: str = "train", *, s2: bool = True) -> list[ChipFiles]:
    """Chips of the external paired set, from ``external/splits/external_<split>_data.csv``."""
    layout = Layout.find(root)
    return _split_chips(layout, layout.external_split_file(split), layout.external,
                        EXTERNAL_KINDS, "external", s2, f"external split {split!r}")
