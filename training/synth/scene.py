"""One synthetic chip: terrain -> water -> land cover -> Sentinel-1, Sentinel-2, labels.

Hand labels are the water a labeller can see on Sentinel-2, as Sen1Floods11's
labellers drew water on it (Garg et al., Fig. 2): under thick cloud (opacity > 0.5)
and where Sentinel-2 has no data they are -1; water under plants that cover more
than half of the pixel from above (flooded forest, tall dense crops) looks like
the plants and is labelled dry. Everywhere else they are the truth. The truth
(``Chip.truth``) keeps all the water, for scoring the labels themselves.
Weak labels come from the S2 indices in ``training.data.s2index``.

Sentinel-1 and Sentinel-2 have no-data areas at swath and tile edges: a few
chips get a straight no-data edge (NaN in S1, 0 in S2), and a rare chip has no
valid radar at all (Sen1Floods11 holds such chips).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import s2index
from ..data.conventions import IGNORE
from . import noise, optical, sar
from .events import ChipParams
from .landcover import CLASS_NAMES, FLOODED_VEG, flood, make_landcover
from .terrain import flood as flood_terrain
from .terrain import make_terrain

SIZE = 512
S1_EDGE_PROB = 0.08
S1_EMPTY_PROB = 0.01
S2_EDGE_PROB = 0.04
THICK_CLOUD = 0.5
HIDING_CANOPY = 0.5   # plant cover above which a labeller sees plants, not water


@dataclass
class Chip:
    s1: np.ndarray            # (2, H, W) float32 dB, NaN no data
    s2: np.ndarray            # (13, H, W) int16 TOA x 10000, 0 no data
    truth: np.ndarray         # (H, W) int16 0/1: water under the sky or under plants
    hand: np.ndarray          # (H, W) int16 -1/0/1: the water a labeller sees
    stats: dict[str, float]


def _edge_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """True beyond a straight edge that cuts off 5-60% of the chip."""
    yy, xx = noise.grid(size)
    a = rng.uniform(0, 2 * np.pi)
    proj = xx * np.cos(a) + yy * np.sin(a)
    return proj > np.quantile(proj[::8, ::8], 1.0 - rng.uniform(0.05, 0.6))


def make_chip(p: ChipParams, rng: np.random.Generator, size: int = SIZE) -> Chip:
    terrain = make_terrain(p, size, rng)
    lc = make_landcover(p, terrain, rng)
    # the radar sees the flood at its own time, up to days from the Sentinel-2 and label time
    water_s1, depth_s1 = flood_terrain(terrain.hand, max(0.0, terrain.stage + p.s1_stage_shift_m))
    lc_s1 = flood(lc, p, water_s1, depth_s1, terrain.permanent)
    tex = noise.fractal(rng, size, beta=1.5, min_wavelength=4.0)
    s1, sar_stats = sar.simulate(p, terrain, lc_s1, tex, rng)
    s2, cloud, opt_stats = optical.simulate(p, terrain, lc, tex, rng)

    r = rng.random()
    if r < S1_EMPTY_PROB:
        s1[:] = np.nan
    elif r < S1_EMPTY_PROB + S1_EDGE_PROB:
        s1[:, _edge_mask(size, rng)] = np.nan
    s2_missing = _edge_mask(size, rng) if rng.random() < S2_EDGE_PROB else np.zeros((size, size), bool)
    s2[:, s2_missing] = 0

    truth = terrain.water.astype(np.int16)
    hidden = lc.canopy > HIDING_CANOPY   # canopy is 0 outside flooded vegetation
    hand = np.where(hidden, 0, truth).astype(np.int16)
    hand[(cloud > THICK_CLOUD) | s2_missing] = IGNORE
    counts = np.bincount(lc.cls.ravel(), minlength=len(CLASS_NAMES)) / lc.cls.size
    stats = {f"frac_{name}": float(c) for name, c in zip(CLASS_NAMES, counts)}
    stats["water_frac"] = float(truth.mean())
    stats["flooded_veg_share_of_water"] = float((lc.cls == FLOODED_VEG).sum() / max(truth.sum(), 1))
    stats["hidden_share_of_water"] = float(hidden.sum() / max(truth.sum(), 1))
    stats["s1_water_frac"] = float(water_s1.mean())
    stats["s1_valid_frac"] = float(np.isfinite(s1).all(axis=0).mean())
    stats.update(sar_stats)
    stats.update(opt_stats)
    return Chip(s1=s1, s2=s2, truth=truth, hand=hand, stats=stats)


def weak_label(chip: Chip, rule: str) -> np.ndarray:
    """The weak label of a chip by one of ``s2index.RULES``."""
    return s2index.RULES[rule](chip.s2)
