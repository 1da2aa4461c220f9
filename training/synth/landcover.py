"""Land cover on the terrain: forest, settlements, farm parcels, and what the flood does to them.

- Forest favours slopes and uplands (fields are cleared on flat ground first).
- Settlements sit on dry, gentle ground near the river (towns grow along rivers
  but above the usual flood line).
- The rest is farmland in rectangular parcels on a rotated grid; each parcel has
  a crop vigour (0 bare soil .. 1 full canopy) and its own soil roughness and
  moisture, which is why real fields differ in radar brightness.
- A few straight roads cross the dry land, one or two pixels wide (more near
  towns): smooth tarmac, a thin dark line to the radar.
- Under a flood, vegetation taller than the water stands out of it: flooded
  forest and emergent crops and grass are *flooded vegetation* (water in the
  truth, but radar and optics see the plants). Deeper water is open water.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import noise
from .events import ChipParams
from .terrain import Terrain, slope_deg

# class codes of the scene map
OPEN_WATER, FLOODED_VEG, CROP, BARE, FOREST, URBAN, ROAD = range(7)
CLASS_NAMES = ("open_water", "flooded_vegetation", "crop", "bare_soil", "forest", "urban", "road")
BARE_VIGOUR = 0.15   # parcels with less green cover than this are bare soil
_TABLE = 4096        # size of the per-parcel random table (hashed parcel ids)


@dataclass
class LandCover:
    cls: np.ndarray          # uint8 class code
    vigour: np.ndarray       # green-vegetation cover of farm parcels and grass, 0..1
    canopy: np.ndarray       # vegetation cover seen from above flooded vegetation, 0..1
    parcel_gain: np.ndarray  # per-parcel radar brightness factor (roughness, moisture), linear
    grain: np.ndarray        # per-pixel texture of built-up land, unit std, 0 elsewhere
    under: np.ndarray        # class the flooded-vegetation pixels would have if dry


def _parcels(size: int, rng: np.random.Generator) -> np.ndarray:
    """Integer parcel id per pixel: a rotated grid of fields with staggered rows."""
    yy, xx = noise.grid(size)
    angle = rng.uniform(0, np.pi / 2)
    a_len, b_len = rng.uniform(15, 60), rng.uniform(10, 40)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    a = np.floor(u / a_len).astype(np.int64)
    stagger = rng.uniform(0, b_len, _TABLE)
    b = np.floor((v + stagger[a % _TABLE]) / b_len).astype(np.int64)
    return (a * 73856093 ^ b * 19349663) % _TABLE


def _roads(size: int, rng: np.random.Generator, mean_count: float) -> np.ndarray:
    """Straight roads 1-2.2 px wide at random positions and bearings."""
    yy, xx = noise.grid(size)
    roads = np.zeros((size, size), bool)
    for _ in range(rng.poisson(mean_count)):
        a = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.5, 0.5) * size
        across = (xx - size / 2) * np.cos(a) + (yy - size / 2) * np.sin(a) - offset
        roads |= np.abs(across) < rng.uniform(0.5, 1.1)
    return roads


def make_landcover(p: ChipParams, t: Terrain, rng: np.random.Generator) -> LandCover:
    size = t.height.shape[0]
    slope = slope_deg(t)
    dry = ~t.water

    forest_score = noise.blobs(rng, size, scale=rng.uniform(40, 120)) + 0.05 * slope
    forest = forest_score > noise.threshold_for_fraction(forest_score, p.forest_frac)

    urban_score = noise.blobs(rng, size, scale=rng.uniform(25, 60)) - t.river_dist / 400.0
    eligible = dry & (slope < 8.0) & ~forest
    urban = eligible & (urban_score > noise.threshold_for_fraction(urban_score, p.urban_frac, where=eligible))

    parcel = _parcels(size, rng)
    bare_parcel = rng.random(_TABLE) < p.bare_frac
    parcel_vigour = np.where(bare_parcel, rng.uniform(0.0, BARE_VIGOUR, _TABLE),
                             rng.uniform(0.3, 1.0, _TABLE)).astype(np.float32)
    vigour = parcel_vigour[parcel]
    # radar brightness of each field from its roughness and moisture: crops vary
    # by about 1.5 dB; bare soil from smooth (dark, water-like) to ploughed (bright)
    parcel_db = np.where(bare_parcel, rng.normal(0.0, 2.5, _TABLE), rng.normal(0.0, 1.5, _TABLE))
    parcel_gain = np.power(10.0, parcel_db / 10.0).astype(np.float32)[parcel]

    cls = np.where(vigour < BARE_VIGOUR, BARE, CROP).astype(np.uint8)
    cls[forest] = FOREST
    cls[urban] = URBAN
    cls[_roads(size, rng, 1.0 + 10.0 * p.urban_frac) & ~t.water] = ROAD
    # buildings, streets and yards vary pixel by pixel (unit std; 0 outside towns)
    grain = np.zeros(cls.shape, np.float32)
    grain[urban] = rng.standard_normal(int(urban.sum()), dtype=np.float32)
    vigour = np.where(forest, 1.0, vigour).astype(np.float32)

    dry_land = LandCover(cls=cls, vigour=vigour, canopy=np.zeros(cls.shape, np.float32),
                         parcel_gain=parcel_gain, grain=grain, under=cls.copy())
    return flood(dry_land, p, t.water, t.depth, t.permanent)


def flood(lc: LandCover, p: ChipParams, water: np.ndarray, depth: np.ndarray,
          permanent: np.ndarray) -> LandCover:
    """The land cover under a given flood: plants taller than the water stay visible above it."""
    under, vigour = lc.under, lc.vigour
    forest = under == FOREST
    crop_height = p.grass_height_m * (0.4 + 0.6 * vigour)
    emergent = forest | ((vigour >= BARE_VIGOUR) & (depth < crop_height) & (under < FOREST))
    flooded_veg = water & ~permanent & emergent
    cls = under.copy()
    cls[water & (under != URBAN)] = OPEN_WATER   # towns stand on raised ground: left as they are
    cls[flooded_veg] = FLOODED_VEG
    # seen from above, emergent plants cover part of the water: more the taller they stand out
    stand_out = np.clip(1.0 - depth / np.maximum(crop_height, 1e-3), 0.0, 1.0)
    canopy = np.where(forest, 0.85, 0.8 * vigour * (0.3 + 0.7 * stand_out))
    canopy = np.where(flooded_veg, canopy, 0.0).astype(np.float32)
    return replace(lc, cls=cls, canopy=canopy)
