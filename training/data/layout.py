"""Where Sen1Floods11 v1.1 keeps its files, and the chip lists of each split.

The real dataset (Bonafilia et al. 2020; its bucket ``gs://sen1floods11/v1.1``)::

    v1.1/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv
        no header, one chip a line: ``Event_Chip_S1Hand.tif,Event_Chip_LabelHand.tif``
    v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}/Event_Chip_<Kind>.tif
    v1.1/data/flood_events/WeaklyLabeled/{S1Weak,S2IndexLabelWeak}/Event_Chip_<Kind>.tif

Some repackagings use a ``.txt`` split with one chip id a line (``Spain_7370579``);
both are read. The weakly labelled set has no split file: its chips are the
``S1Weak`` files. We assume the weak files are named ``Event_Chip_S1Weak.tif``
and ``Event_Chip_S2IndexLabelWeak.tif``, the scheme of the dataset's other
layers and of public loaders of it. The weak set has no Sentinel-2 (nor do our
synthetic sets): only ``evaluate --split weak`` with a Sentinel-2 method looks for an
``S2Weak`` folder.

Two additions that are not part of Sen1Floods11:

- ``external/``: the paper's external paired set (ED: Sentinel-1, Sentinel-2
  and an NDWI weak label, Garg et al. Section 2.2), in the same style::

      external/splits/external_{split}_data.csv   (``X_S1.tif,X_LabelWeak.tif``)
      external/{S1,S2,LabelWeak}/X_{S1,S2,LabelWeak}.tif

- ``synthetic_truth/{HandLabeled,WeaklyLabeled,external}/X_Truth.tif``: the
  true water of synthetic chips (written by ``training.synth`` only), so weak
  and teacher labels can be scored where no hand label exists.

A folder holding ``S1Hand``/``S2Hand``/``LabelHand`` directly (as the fixture
chips in ``../shared``) is accepted as a flat hand-labelled set; pass its
split file explicitly.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


class Kinds(NamedTuple):
    """A set's layer kinds: each is a folder name and its files' suffix (``X_<kind>.tif``)."""
    s1: str
    s2: str
    label: str


HAND_SPLITS = ("train", "valid", "test", "bolivia")
HAND_KINDS = Kinds(s1="S1Hand", s2="S2Hand", label="LabelHand")
WEAK_KINDS = Kinds(s1="S1Weak", s2="S2Weak", label="S2IndexLabelWeak")  # S2Weak: read only if asked
EXTERNAL_KINDS = Kinds(s1="S1", s2="S2", label="LabelWeak")
TRUTH_KIND = "Truth"
MAX_LISTED = 10

_HAND = Path("v1.1/data/flood_events/HandLabeled")
_WEAK = Path("v1.1/data/flood_events/WeaklyLabeled")
_SPLITS = Path("v1.1/splits/flood_handlabeled")
# Sen1Floods11's ids are Event_Chip (Spain_7370579); a user's own chips may be named freely
_CHIP_ID = re.compile(r"^[^\s/\\,]+$")


class DatasetError(ValueError):
    """A dataset folder or split is missing, malformed or inconsistent."""


def problems_message(what: str, problems: list[str]) -> str:
    """``what: problem`` for one; else ``what: N problems`` then the first few, one a
    line, and how many more."""
    if len(problems) == 1:
        return f"{what}: {problems[0]}"
    lines = [f"{what}: {len(problems)} problems"]
    lines += [f"  - {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  - ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


def chip_file(folder: Path, chip_id: str, kind: str) -> Path:
    return folder / kind / f"{chip_id}_{kind}.tif"


@dataclass(frozen=True)
class ChipFiles:
    """The files of one chip; ``None`` where the set has no such layer."""
    chip_id: str
    s1: Path
    label: Path | None = None
    s2: Path | None = None
    truth: Path | None = None


@dataclass(frozen=True)
class Layout:
    """Resolved folders of one dataset root (see module notes)."""
    root: Path
    hand: Path
    weak: Path
    splits: Path
    external: Path
    truth: Path

    @classmethod
    def standard(cls, root: str | Path) -> Layout:
        """The full v1.1 layout under ``root`` (what the generator writes)."""
        root = Path(root)
        return cls(root=root, hand=root / _HAND, weak=root / _WEAK, splits=root / _SPLITS,
                   external=root / "external", truth=root / "synthetic_truth")

    @classmethod
    def find(cls, root: str | Path) -> Layout:
        """Resolve ``root``: a folder holding ``v1.1/``, ``v1.1`` itself, or a flat folder
        with ``S1Hand/`` in it. Raises :class:`DatasetError` if it is none of these."""
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        if (root / "v1.1").is_dir():
            return cls.standard(root)
        if root.name == "v1.1" and (root / "data").is_dir():
            return cls.standard(root.parent)
        if (root / "S1Hand").is_dir():
            return cls(root=root, hand=root, weak=root, splits=root, external=root / "external",
                       truth=root / "synthetic_truth")
        if (root / "data" / "flood_events").is_dir() and (root / "splits").is_dir():
            # gsutil rsync of gs://sen1floods11/v1.1 into a folder of another name
            raise DatasetError(f"{root}: holds v1.1's data/ and splits/ under another name; "
                               f"rename it v1.1 (then give it, or the folder holding it)")
        raise DatasetError(f"{root}: not a Sen1Floods11 folder (expected v1.1/ or S1Hand/ in it)")

    def hand_split_file(self, split: str) -> Path:
        csv_path = self.splits / f"flood_{split}_data.csv"
        txt_path = csv_path.with_suffix(".txt")
        return txt_path if txt_path.exists() and not csv_path.exists() else csv_path

    def external_split_file(self, split: str) -> Path:
        return self.external / "splits" / f"external_{split}_data.csv"


def parse_split(path: Path, s1_kind: str, label_kind: str) -> tuple[list[str], list[str]]:
    """Chip ids of a split file, and the problems found (with line numbers).

    ``.csv``: ``X_<s1_kind>.tif,X_<label_kind>.tif`` per line; ``.txt``: one chip id
    (or one ``X_<s1_kind>.tif``) per line. Blank lines are skipped.
    """
    if not path.is_file():
        return [], [f"split file not found: {path}"]
    ids: list[str] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first chip
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f)) if path.suffix == ".csv" else [[ln] for ln in f.read().splitlines()]
    for n, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        where = f"{path.name} line {n}"
        chip_id = _entry_id(cells, s1_kind, label_kind, path.suffix == ".csv")
        if chip_id is None:
            problems.append(f"{where}: cannot read a chip from {','.join(cells)!r} (expected "
                            + (f"'X_{s1_kind}.tif,X_{label_kind}.tif')" if path.suffix == ".csv"
                               else "one chip id such as 'Spain_7370579')"))
        elif chip_id in seen:
            problems.append(f"{where}: chip {chip_id} already listed on line {seen[chip_id]}")
        else:
            seen[chip_id] = n
            ids.append(chip_id)
    if not ids and not problems:
        problems.append(f"{path}: lists no chips")
    return ids, problems


def _entry_id(cells: list[str], s1_kind: str, label_kind: str, is_csv: bool) -> str | None:
    suffix = f"_{s1_kind}.tif"
    if is_csv:
        if len(cells) != 2 or not cells[0].endswith(suffix):
            return None
        chip_id = cells[0][: -len(suffix)]
        if cells[1] != f"{chip_id}_{label_kind}.tif":
            return None
    else:
        if len(cells) != 1:
            return None
        chip_id = cells[0][: -len(suffix)] if cells[0].endswith(suffix) else cells[0]
    return chip_id if _CHIP_ID.match(chip_id) else None
