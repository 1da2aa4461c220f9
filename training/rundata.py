"""Open the data a method trains on, from a dataset folder, through ``training.data``.

Everything is opened and checked before a run starts, so a wrong path, an empty
split or a missing layer is one :class:`~training.data.layout.DatasetError`
message before any training. With ``cache`` (the ``cpu`` preset), decoded chips
are kept in memory for the life of the process (images as float16, labels as
int8): a GeoTIFF chip costs 40-60 ms to decode here, longer than a training step
of the ``cpu`` preset, and ``reproduce`` reads the same chips for every row.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import rasterio
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from .data.conventions import CHIP_PIXEL_M
from .data.datasets import external, hand_labeled, weakly_labeled
from .data.layout import (HAND_KINDS, HAND_SPLITS, WEAK_KINDS, DatasetError, Layout,
                          parse_split)
from .methods import (BY_NAME, EVAL_SPLITS, EXTERNAL, HAND_VALID, METHODS, S1F11_WEAK, Method,
                      with_needs)
from .synth.writer import MANIFEST, check_complete
from .train import RunData

# chips are read at 10 m ground pixels (training.data.datasets; the synthetic generator
# writes 10 m near the equator); a run resamples its crops from them to the preset's
# pixel_size_m (cpu 10 m, paper 16 m as Garg et al. did)
PIXEL_SIZE_M = CHIP_PIXEL_M

_OPENED: dict[tuple, Dataset] = {}


class ChipCache(Dataset):
    """A dataset whose items are decoded once, then served from memory."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.items: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index not in self.items:
            self.items[index] = {k: _pack(v) for k, v in self.dataset[index].items()}
        return {k: _unpack(v) for k, v in self.items[index].items()}


def _pack(v: Any) -> Any:
    if not torch.is_tensor(v):
        return v
    if v.is_floating_point():
        return v.half()
    return v.to(torch.int8) if v.dtype == torch.int64 else v


def _unpack(v: Any) -> Any:
    if not torch.is_tensor(v):
        return v
    if v.dtype == torch.float16:
        return v.float()
    return v.long() if v.dtype == torch.int8 else v


# the training sets a dataset folder may lack: what each is, and what brings it back
OPTIONAL_SETS = {
    S1F11_WEAK: ("weakly labelled set", "Sen1Floods11's weakly labelled chips "
                 "(v1.1/data/flood_events/WeaklyLabeled)"),
    EXTERNAL: ("external set (the paper's ED is not public)",
               "paired S1 + S2 chips with an NDWI weak label in the layout of training/README.md")}


def _set_folder(root: Path, split: str) -> Path:
    """The set's folder, or the first of its layer folders missing (a partial download:
    S1Weak without S2IndexLabelWeak, say)."""
    layout = Layout.find(root)
    if split != S1F11_WEAK:
        return layout.external
    folders = [layout.weak / WEAK_KINDS.s1, layout.weak / WEAK_KINDS.label]
    return next((f for f in folders if not f.is_dir()), folders[0])


def missing_sets(root: Path) -> list[str]:
    """The sets of :data:`OPTIONAL_SETS` the dataset folder lacks."""
    return [split for split in OPTIONAL_SETS if not _set_folder(root, split).is_dir()]


def _trains_on(method: Method, splits: set[str]) -> bool:
    """Whether the method, or a row it needs (teacher, pretraining), trains on a split."""
    return any(BY_NAME[n].splits & splits for n in with_needs([method.name]))


def open_split(root: Path, split: str, s2: bool, cache: bool) -> Dataset:
    """A split as a torch dataset: hand-labelled splits, ``weak`` or ``external``."""
    check_complete(Layout.find(root).root)   # train and reproduce open every split first
    missing = missing_sets(root)
    if split in missing:
        what, source = OPTIONAL_SETS[split]
        needing = ", ".join(m.name for m in METHODS if _trains_on(m, {split}))
        runnable = ",".join(m.name for m in METHODS
                            if m.kind != "otsu" and not _trains_on(m, set(missing)))
        raise DatasetError(f"{_set_folder(root, split)} not found: the data has no {what}; the "
                           f"rows {needing} train on it: give {source}, or leave those rows "
                           f"out (reproduce --methods {runnable})")
    key = (str(Path(root).resolve()), split, s2)
    if cache:
        # a cached split with S2 also serves runs that do not read S2
        for k in (key, key[:2] + (True,)):
            if k in _OPENED:
                return _OPENED[k]
    if split == S1F11_WEAK:
        ds = weakly_labeled(root, s2=s2)
    elif split == EXTERNAL:
        ds = external(root, s2=s2)
    else:
        ds = hand_labeled(root, split, s2=s2)
    if len(ds) == 0:
        raise DatasetError(f"{root}: split {split!r} holds no chips")
    if cache:
        ds = _OPENED.setdefault(key, ChipCache(ds))
    return ds


def _synthetic_tag(layout: Layout) -> str | None:
    """The generator's tag on the first hand-labelled S1 chip: synthetic chips copied
    without the manifest beside ``v1.1/`` (sets written before the tag have none)."""
    first = min((layout.hand / HAND_KINDS.s1).glob(f"*_{HAND_KINDS.s1}.tif"), default=None)
    if first is None:
        return None
    with rasterio.open(first) as ds:
        return ds.tags().get("SARFLOOD_SYNTHETIC")


def _origin(layout: Layout) -> tuple[dict[str, Any], str | None]:
    """Where the chips come from: the generator's manifest beside ``v1.1/`` ({} where there
    is none) and, without one, the generator's tag on the files (None: real data, or a
    synthetic set written before the tag)."""
    manifest = layout.root / MANIFEST
    doc = json.loads(manifest.read_text()) if manifest.is_file() else {}
    return doc, (None if doc else _synthetic_tag(layout))


def describe(root: Path, origin: tuple[dict[str, Any], str | None] | None = None) -> str:
    """One line on what the data is; says plainly when it is synthetic (the generator's
    manifest lies beside ``v1.1/``, which ``root`` may name itself; failing that, its
    files' tag). ``origin``: :func:`_origin`'s answer, where the caller has it."""
    doc, tag = origin or _origin(Layout.find(root))
    if doc:
        counts = doc.get("counts", {})
        return (f"SYNTHETIC data (training.synth generator v{doc.get('generator_version')}, "
                f"seed {doc.get('seed')}: {counts.get('hand')} hand-labelled, "
                f"{counts.get('weak')} weak, {counts.get('external')} external chips) in the "
                f"Sen1Floods11 v1.1 layout, 10 m; not real Sentinel data")
    if tag:
        return (f"SYNTHETIC data ({tag}; its {MANIFEST} is not beside v1.1/) in the "
                f"Sen1Floods11 v1.1 layout at {Path(root).resolve()}; not real Sentinel data")
    return f"Sen1Floods11 v1.1 (Bonafilia et al., 2020) at {Path(root).resolve()}"


def _parts(datasets: list[Dataset]) -> list[Dataset]:
    """The datasets under the pools' concatenations and held-out subsets."""
    out = []
    for ds in datasets:
        if isinstance(ds, ConcatDataset):
            out += _parts(list(ds.datasets))
        elif isinstance(ds, Subset):
            out += _parts([ds.dataset])
        else:
            out.append(ds)
    return out


def chip_ids(ds: Dataset) -> list[str]:
    """The chip ids of a split's dataset, through the wrappers put around it here."""
    if isinstance(ds, ConcatDataset):
        return [i for part in ds.datasets for i in chip_ids(part)]
    if isinstance(ds, ChipCache):
        return chip_ids(ds.dataset)
    if isinstance(ds, Subset):
        ids = chip_ids(ds.dataset)
        return [ids[i] for i in ds.indices]
    return [c.chip_id for c in ds.chips]


def split_digests(method: Method, pools: list[Dataset], valid: Dataset) -> dict[str, str]:
    """A digest of the chip ids of each split a run reads, by split name (a pool of one
    split, and validation), for comparing with its teacher's or stage-1 run's."""
    named = {sources[0].split: pool for sources, pool in zip(method.pools, pools)
             if len(sources) == 1}
    named[HAND_VALID] = valid
    return {split: hashlib.sha256(",".join(chip_ids(ds)).encode()).hexdigest()[:12]
            for split, ds in named.items()}


def fingerprint(origin: tuple[dict[str, Any], str | None], pools: list[Dataset],
                valid: Dataset) -> str:
    """What the run learns from, as a hash: synthetic (the generator's version and seed,
    from :func:`_origin`) or not, and the chip ids of each pool and of validation. Not the
    folder's path, so a dataset moved elsewhere still resumes its runs."""
    doc, tag = origin
    kind = (f"synthetic v{doc.get('generator_version')} seed {doc.get('seed')}" if doc
            else tag or "real")
    parts = [kind, *(",".join(chip_ids(ds)) for ds in (*pools, valid))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


HELD_OUT_SPLIT = "bolivia"   # Sen1Floods11's test of an event no training set may show


def _event(chip_id: str) -> str:
    return chip_id.rsplit("_", 1)[0]   # Sen1Floods11 chip ids are Event_Chip


def scored_splits(root: Path) -> tuple[list[str], str | None]:
    """The hand-labelled splits every row is scored on (:data:`EVAL_SPLITS`), and a note
    where the held-out split's file is missing (some repackagings of Sen1Floods11 keep
    train, valid and test alone): the rows are then scored on the others."""
    path = Layout.find(root).hand_split_file(HELD_OUT_SPLIT)
    if path.is_file():
        return list(EVAL_SPLITS), None
    return ([s for s in EVAL_SPLITS if s != HELD_OUT_SPLIT],
            f"{path} not found: the rows are scored without the {HELD_OUT_SPLIT} split, whose "
            f"column stays empty (Sen1Floods11 v1.1 keeps it in splits/flood_handlabeled)")


def held_out_events(layout: Layout) -> set[str]:
    """The events of the held-out split's chips ({} without its split file)."""
    path = layout.hand_split_file(HELD_OUT_SPLIT)
    if not path.is_file():
        return set()
    ids, _problems = parse_split(path, HAND_KINDS.s1, HAND_KINDS.label)  # reported when scored
    return {_event(c) for c in ids}


def _without_events(ds: Dataset, events: set[str]) -> tuple[Dataset, int]:
    """``ds`` without the chips of ``events``, and how many were left out."""
    ids = chip_ids(ds)
    kept = [i for i, c in enumerate(ids) if _event(c) not in events]
    if len(kept) == len(ids):
        return ds, 0
    if not kept:
        raise DatasetError(f"every chip of a training set belongs to a held-out event "
                           f"({', '.join(sorted(events))}): nothing is left to train on")
    return Subset(ds, kept), len(ids) - len(kept)


def cache_note(datasets: list[Dataset], memory_bytes: int) -> str | None:
    """A warning when the chips ``datasets`` keep in memory (:class:`ChipCache`, measured
    on each one's first chip) would take over half of ``memory_bytes``: Sen1Floods11's
    4385 weak chips and its hand-labelled ones with S2 come to about 8.6 GiB."""
    caches = [ds for ds in {id(d): d for d in datasets}.values() if isinstance(ds, ChipCache)]
    if not caches:
        return None
    def chip_bytes(ds: ChipCache) -> int:
        ds[0]   # decoded and kept, as training would
        return sum(v.element_size() * v.nelement() for v in ds.items[0].values()
                   if torch.is_tensor(v))
    total = sum(len(ds) * chip_bytes(ds) for ds in caches)
    if total <= memory_bytes / 2:
        return None
    return (f"note: the preset keeps decoded chips in memory (cache=true): about "
            f"{total / 2 ** 30:.1f} GiB for these {sum(len(ds) for ds in caches)} chips, of this "
            f"machine's {memory_bytes / 2 ** 30:.1f} GiB; --set cache=false reads them from "
            f"disk at every step instead")


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_disjoint_splits(layout: Layout) -> None:
    """Refuse hand-labelled split files that list a chip twice: a chip trained on (or used
    to choose the checkpoint) and then scored would raise its split's IoU unseen."""
    first: dict[str, str] = {}
    shared = []
    for split in HAND_SPLITS:
        ids, _problems = parse_split(layout.hand_split_file(split), HAND_KINDS.s1,
                                     HAND_KINDS.label)   # problems: reported when read
        for chip in ids:
            if chip in first:
                shared.append(f"{chip} ({first[chip]} and {split})")
            else:
                first[chip] = split
    if shared:
        raise DatasetError(f"{layout.splits}: the hand-labelled splits share {len(shared)} "
                           f"chip(s): {', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''}"
                           "; list each chip in one split")


def open_run_data(root: Path, method: Method, cache: bool) -> RunData:
    """The training pools and validation split of ``method``, checked. Weak and external
    chips of the held-out split's events are left out: Sen1Floods11's weakly labelled set
    holds chips of Bolivia's flood, whose 15 hand-labelled chips are the held-out test."""
    root = Path(root)
    layout = Layout.find(root)  # a wrong path fails here, with the data reader's message
    check_disjoint_splits(layout)
    needs_s2 = method.reads_s2
    held_out = held_out_events(layout)
    pools, left_out = [], 0
    for pool in method.pools:
        parts = []
        for src in pool:
            part = open_split(root, src.split, needs_s2, cache)
            if src.split in OPTIONAL_SETS:
                part, n = _without_events(part, held_out)
                left_out += n
            parts.append(part)
        pools.append(parts[0] if len(parts) == 1 else ConcatDataset(parts))
    # validation scores the network being trained, on its own inputs
    valid = open_split(root, HAND_VALID, method.inputs_need_s2, cache)
    note = cache_note([*_parts(pools), valid], _memory_bytes()) if cache else None
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    origin = _origin(layout)   # read once: the manifest, or the files' tag
    description = describe(root, origin)
    if left_out:
        description += (f"; {left_out} weak or external chips of the held-out event(s) "
                        f"{', '.join(sorted(held_out))} left out of training")
    return RunData(pools=pools, valid=valid, description=description,
                   pixel_size_m=PIXEL_SIZE_M, fingerprint=fingerprint(origin, pools, valid),
                   split_digests=split_digests(method, pools, valid))

