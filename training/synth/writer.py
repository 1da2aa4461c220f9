"""Write a synthetic dataset in the Sen1Floods11 v1.1 layout (see ``training.data.layout``).

Sets and their sizes (``chips`` hand-labelled chips, by default the real 446):

- hand-labelled: S1Hand, S2Hand, LabelHand, split over train/valid/test in the
  real proportions 252:89:90, plus a held-out ``bolivia`` split (15 of 446)
  drawn from the held-out event only;
- weakly labelled: S1Weak and S2IndexLabelWeak (NDVI/MNDWI rule); no S2 file,
  as in the real dataset (Garg et al. Section 3.2 footnote);
- external: S1, S2 and LabelWeak (NDWI rule), clouds capped at 12% and the
  S1-S2 gap at 12 hours as the paper's ED (Section 2.2), listed in
  ``external/splits/external_train_data.csv``;
- ``synthetic_truth/``: the true water of every chip; the manifest scores each set's
  labels against it (``label_quality``).

A set of 0 chips is not written at all, as the real dataset without it (no
``external/`` folder: ``reproduce`` leaves its rows out).

Files match the real ones: 512 x 512, EPSG:4326, 8.983e-05 deg pixels, deflate
(or zstd on request: same pixels, twice as fast to write), band-interleaved; S1 float32 VV/VH dB with NaN nodata; S2 int16 13 bands, nodata
0; labels int16 -1/0/1 without a nodata tag. Every file is written to a temporary
name and renamed, so a crash leaves no half-written chip.

Chip ``k`` of a set draws everything from ``np.random.default_rng([seed, set, k])``,
so a dataset is identical for a seed whatever the number of workers.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
from rasterio.transform import from_origin

from ..atomic import atomic_path, write_text_atomic
from ..data.conventions import IGNORE, S1_BANDS, S2_BANDS, WATER
from ..data.layout import (EXTERNAL_KINDS, HAND_KINDS, HAND_SPLITS, TRUTH_KIND, WEAK_KINDS,
                           DatasetError, Layout, chip_file)
from . import events, scene

PIXEL_DEG = 8.983152841195215e-05        # Sen1Floods11's pixel: 10 m at the equator
MANIFEST = "synth_manifest.json"
GENERATOR_VERSION = 3
REAL_SPLIT_SIZES = {"train": 252, "valid": 89, "test": 90, "bolivia": 15}
ED_MAX_CLOUD = 0.12
ED_MAX_LAG_DAYS = 0.5
_SET_CODES = {"hand": 1, "weak": 2, "external": 3}
_ID_BASE = {"hand": 100000, "weak": 200000, "external": 300000}
_GTIFF = dict(driver="GTiff", width=scene.SIZE, height=scene.SIZE, crs="EPSG:4326", interleave="band")
# deflate is what Sen1Floods11 uses; zstd (GDAL >= 2.3, QGIS reads it) writes about twice as fast
COMPRESSION = {"deflate": dict(compress="deflate", zlevel=1), "zstd": dict(compress="zstd", zstd_level=1)}


@dataclass(frozen=True)
class Task:
    kind: str      # hand | weak | external
    index: int
    split: str     # train | valid | test | bolivia | weak | external


def hand_split_sizes(n: int) -> dict[str, int]:
    """Split n hand-labelled chips in Sen1Floods11's proportions (each split >= 1 when n >= 4)."""
    total = sum(REAL_SPLIT_SIZES.values())
    sizes = {s: max(1 if n >= 4 else 0, round(n * k / total)) for s, k in REAL_SPLIT_SIZES.items()}
    sizes["train"] = n - sizes["valid"] - sizes["test"] - sizes["bolivia"]
    if sizes["train"] < 0:
        raise ValueError(f"{n} hand-labelled chips are too few to split")
    return sizes


def plan(chips: int, weak: int, external: int, seed: int) -> list[Task]:
    """Every chip to write, with its split; the hand splits are a seeded shuffle."""
    sizes = hand_split_sizes(chips)
    tasks = [Task("hand", i, "bolivia") for i in range(sizes["bolivia"])]
    rest = [s for s in ("train", "valid", "test") for _ in range(sizes[s])]
    order = np.random.default_rng([seed, 0]).permutation(len(rest))
    tasks += [Task("hand", sizes["bolivia"] + i, rest[j]) for i, j in enumerate(order)]
    tasks += [Task("weak", i, "weak") for i in range(weak)]
    tasks += [Task("external", i, "external") for i in range(external)]
    return tasks


def write_tif(path: Path, data: np.ndarray, transform, *, nodata: float | None = None,
              descriptions: tuple[str, ...] = (), compress: str = "deflate") -> None:
    """Write a GeoTIFF atomically (temporary file in the same folder, then rename)."""
    data = data if data.ndim == 3 else data[None]
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **_GTIFF, **COMPRESSION[compress], count=data.shape[0], dtype=data.dtype,
                           transform=transform, nodata=nodata) as ds:
            ds.write(data)
            # every file says what it is, should it travel without the manifest
            ds.update_tags(SARFLOOD_SYNTHETIC=f"training.synth generator v{GENERATOR_VERSION}")
            for i, d in enumerate(descriptions, start=1):
                ds.set_band_description(i, d)


def _transform(event: events.EventSpec, task: Task):
    # chips of one event tile a grid, 64 chips a row, the sets side by side in
    # longitude (so a set of thousands of chips spans only a few degrees of latitude)
    row = task.index // 64
    col = (_SET_CODES[task.kind] - 1) * 64 + task.index % 64
    span = scene.SIZE * PIXEL_DEG
    return from_origin(event.lon + col * span, event.lat - row * span, PIXEL_DEG, PIXEL_DEG)


def make_and_write(task: Task, seed: int, root: Path, compress: str = "deflate") -> dict:
    """Generate one chip, write its files, return its manifest record."""
    rng = np.random.default_rng([seed, _SET_CODES[task.kind], task.index])
    event = events.BOLIVIA if task.split == "bolivia" else events.pick_event(rng)
    ed = task.kind == "external"
    params = events.draw(event, rng, max_cloud_frac=ED_MAX_CLOUD if ed else 1.0,
                         max_lag_days=ED_MAX_LAG_DAYS if ed else None)
    chip = scene.make_chip(params, rng)
    chip_id = f"{event.name}_{_ID_BASE[task.kind] + task.index}"
    layout = Layout.standard(root)
    tr = _transform(event, task)
    s1_args = dict(nodata=float("nan"), descriptions=S1_BANDS, compress=compress)
    s2_args = dict(nodata=0, descriptions=S2_BANDS, compress=compress)
    if task.kind == "hand":
        write_tif(chip_file(layout.hand, chip_id, HAND_KINDS.s1), chip.s1, tr, **s1_args)
        write_tif(chip_file(layout.hand, chip_id, HAND_KINDS.s2), chip.s2, tr, **s2_args)
        label = chip.hand
        write_tif(chip_file(layout.hand, chip_id, HAND_KINDS.label), label, tr, compress=compress)
        truth_group = "HandLabeled"
    elif task.kind == "weak":
        write_tif(chip_file(layout.weak, chip_id, WEAK_KINDS.s1), chip.s1, tr, **s1_args)
        label = scene.weak_label(chip, "s1f11")
        write_tif(chip_file(layout.weak, chip_id, WEAK_KINDS.label), label, tr, compress=compress)
        truth_group = "WeaklyLabeled"
    else:
        write_tif(chip_file(layout.external, chip_id, EXTERNAL_KINDS.s1), chip.s1, tr, **s1_args)
        write_tif(chip_file(layout.external, chip_id, EXTERNAL_KINDS.s2), chip.s2, tr, **s2_args)
        label = scene.weak_label(chip, "ndwi")
        write_tif(chip_file(layout.external, chip_id, EXTERNAL_KINDS.label), label, tr,
                  compress=compress)
        truth_group = "external"
    write_tif(layout.truth / truth_group / f"{chip_id}_{TRUTH_KIND}.tif", chip.truth, tr, compress=compress)
    return {"chip_id": chip_id, "set": task.kind, "split": task.split,
            "params": asdict(params), "stats": {k: round(v, 5) for k, v in chip.stats.items()},
            "label_vs_truth": label_counts(label, chip.truth)}


def label_counts(label: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Pixel counts of a stored label against the true water: how wrong the label is."""
    scored = label != IGNORE
    water, true_water = label == WATER, truth == 1
    return {"true_water": int((water & true_water).sum()),
            "false_water": int((water & ~true_water & scored).sum()),
            "missed_water": int((~water & true_water & scored).sum()),
            "scored": int(scored.sum()), "ignored": int((~scored).sum())}


def label_quality(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per set, its labels against the truth: water IoU, precision, recall and share ignored.

    Hand labels are the water a labeller could see (``scene``), so theirs shows the
    water they leave out (under cloud, or hidden by plants); the weak sets show
    their rules' errors.
    """
    quality = {}
    for kind in _SET_CODES:
        counts = [r["label_vs_truth"] for r in records if r["set"] == kind]
        if not counts:
            continue
        tp, fp, fn, scored, ignored = (sum(c[k] for c in counts) for k in
                                       ("true_water", "false_water", "missed_water", "scored", "ignored"))
        quality[kind] = {"iou": round(tp / max(tp + fp + fn, 1), 4),
                         "precision": round(tp / max(tp + fp, 1), 4),
                         "recall": round(tp / max(tp + fn, 1), 4),
                         "ignored": round(ignored / max(scored + ignored, 1), 4)}
    return quality


def _folders(layout: Layout, counts: dict[str, int]) -> list[Path]:
    # a set of 0 chips is left out, as the real dataset without it: no empty set to refuse
    hand = [layout.hand / k for k in HAND_KINDS] + [layout.splits, layout.truth / "HandLabeled"]
    weak = ([layout.weak / k for k in (WEAK_KINDS.s1, WEAK_KINDS.label)]  # no S2: the real set has none
            + [layout.truth / "WeaklyLabeled"])
    external = ([layout.external / k for k in EXTERNAL_KINDS]
                + [layout.external / "splits", layout.truth / "external"])
    return hand + (weak if counts["weak"] else []) + (external if counts["external"] else [])


def partial(root: Path) -> bool:
    """Whether ``root`` holds a dataset this generator began and did not finish."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text()).get("complete") is False
    except (OSError, ValueError, AttributeError):
        return False


def check_complete(root: Path) -> None:
    """Refuse to read a dataset an interrupted synth left (:func:`partial`): it lacks
    chips or split files, and a reader would score or train on what is there."""
    if partial(root):
        raise DatasetError(f"{root}: a partial synthetic dataset (an interrupted synth); "
                           "rerun synth with --overwrite to replace it")


def prepare(root: Path, overwrite: bool, counts: dict[str, int]) -> Layout:
    """Create the folders of the sets with chips in ``counts`` (hand, weak, external);
    refuse to touch an existing dataset unless asked.

    With ``overwrite`` only a dataset this generator wrote (it has our manifest) is
    cleared, never a folder of real data. The manifest is written first, marked
    ``"complete": false``, and replaced by the whole one last, so an interrupted run
    leaves a dataset that ``overwrite`` still knows as ours.
    """
    layout = Layout.standard(root)
    existing = [p for p in (root / "v1.1", layout.external, layout.truth) if p.exists()]
    if existing:
        if not overwrite and partial(root):
            raise DatasetError(f"{root}: holds a partial synthetic dataset (an interrupted "
                               "synth); pass --overwrite to replace it")
        if not overwrite:
            raise DatasetError(f"{root}: already holds a dataset ({existing[0].name}); "
                               "pass --overwrite to replace a synthetic one")
        if not (root / MANIFEST).is_file():
            raise DatasetError(f"{root}: holds data without {MANIFEST}: not a synthetic dataset "
                               "this tool wrote, so it is left alone")
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / MANIFEST, json.dumps(
        {"generator_version": GENERATOR_VERSION, "complete": False, "counts": counts}, indent=1))
    for p in existing:
        shutil.rmtree(p)
    for folder in _folders(layout, counts):
        folder.mkdir(parents=True, exist_ok=True)
    return layout


def _die_with_parent() -> None:
    """Pool initializer: end this worker as soon as the synth that started it is gone.
    A SIGKILLed synth left its workers writing its chips, into the folders that a
    rerun with --overwrite had just cleared. ``parent_process()`` waits on a pipe the
    parent holds (its process handle on Windows), so this holds with every start method
    and OS; ``os.getppid()`` would not: it names the forkserver under forkserver, and
    on Windows still the dead parent."""
    parent = multiprocessing.parent_process()

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _run(tasks: list[Task], seed: int, root: Path, workers: int, compress: str) -> Iterator[dict]:
    if workers <= 1:
        for t in tasks:
            yield make_and_write(t, seed, root, compress)
        return
    n = len(tasks)
    with ProcessPoolExecutor(workers, initializer=_die_with_parent) as pool:
        yield from pool.map(make_and_write, tasks, [seed] * n, [root] * n, [compress] * n, chunksize=4)


def generate(root: str | Path, chips: int = 446, weak: int | None = None,
             external: int | None = None, seed: int = 0, workers: int = 1,
             overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
             compress: str = "deflate") -> dict:
    """Write the whole dataset; returns the manifest (also saved as ``synth_manifest.json``).

    ``weak`` and ``external`` default to ``chips`` each.
    """
    root = Path(root)
    weak = chips if weak is None else weak
    external = chips if external is None else external
    if min(chips, weak, external) < 0 or chips < 4:
        raise ValueError("need at least 4 hand-labelled chips (one per split) and no negative counts")
    if compress not in COMPRESSION:
        raise ValueError(f"unknown compression {compress!r}; expected one of {', '.join(COMPRESSION)}")
    tasks = plan(chips, weak, external, seed)
    counts = {"hand": chips, "weak": weak, "external": external}
    layout = prepare(root, overwrite, counts)
    start = time.perf_counter()
    records = []
    for n, record in enumerate(_run(tasks, seed, root, workers, compress), start=1):
        records.append(record)
        if progress:
            progress(n, len(tasks))
    seconds = time.perf_counter() - start

    for split in HAND_SPLITS:
        ids = [r["chip_id"] for r in records if r["set"] == "hand" and r["split"] == split]
        write_text_atomic(layout.hand_split_file(split),
                    "".join(f"{c}_S1Hand.tif,{c}_LabelHand.tif\n" for c in ids))
    ids = [r["chip_id"] for r in records if r["set"] == "external"]
    if external:
        write_text_atomic(layout.external_split_file("train"),
                          "".join(f"{c}_S1.tif,{c}_LabelWeak.tif\n" for c in ids))
    manifest = {"generator_version": GENERATOR_VERSION, "complete": True, "seed": seed, "counts": counts,
                "hand_splits": hand_split_sizes(chips), "workers": workers, "compress": compress,
                "seconds": round(seconds, 2), "label_quality": label_quality(records), "chips": records}
    write_text_atomic(root / MANIFEST, json.dumps(manifest, indent=1))
    return manifest
