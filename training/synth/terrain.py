"""Terrain and water: a river valley whose floodplain floods to a stage.

The layout of a scene follows from its terrain, as in a real valley:

- A meandering river crosses the chip (two superposed sine meanders); the
  valley floor falls gently downstream.
- The ground rises away from the river (valley sides) and carries fractal hills
  whose amplitude grows with distance, so the floodplain is flat and the
  uplands rough (terrain spectrum ``k^-beta``, Turcotte 1997).
- Flooding follows the height above the nearest drainage, HAND (Renno et al.
  2008, "HAND, a new terrain descriptor using SRTM-DEM", RSE 112): ground less
  than the flood stage above the river is under water. The stage is set so that
  the chip's drawn flood share is reached. Floodplain microrelief
  makes the flood edge follow contours, with islands and embayments.
- Ponds and oxbow lakes fill the lowest parts of the floodplain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import noise
from .events import ChipParams

PIXEL_M = 10.0  # Sen1Floods11 chips are 10 m pixels (Bonafilia et al. 2020)


@dataclass
class Terrain:
    height: np.ndarray        # m, float32
    hand: np.ndarray          # height above the river level, m
    river_dist: np.ndarray    # distance from the river centreline, px
    stage: float              # flood level above the river at the label (Sentinel-2) time, m
    water: np.ndarray         # bool: under water at that time (open or under vegetation)
    depth: np.ndarray         # water depth then, m (0 on dry land)
    permanent: np.ndarray     # bool: river channel and lakes
    gx: np.ndarray            # height gradient along rows (eastward), m/m
    gy: np.ndarray            # height gradient down columns (southward), m/m


def _meander(u: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Centreline offset v_c(u) and its slope dv_c/du, in pixels."""
    vc = np.zeros_like(u)
    dvc = np.zeros_like(u)
    for wavelength, amp in ((rng.uniform(0.8, 2.0) * size, rng.uniform(0.05, 0.25) * size),
                            (rng.uniform(0.15, 0.4) * size, rng.uniform(0.01, 0.05) * size)):
        k = 2 * np.pi / wavelength
        phase = rng.uniform(0, 2 * np.pi)
        vc += amp * np.sin(k * u + phase)
        dvc += amp * k * np.cos(k * u + phase)
    return vc, dvc


def make_terrain(p: ChipParams, size: int, rng: np.random.Generator) -> Terrain:
    yy, xx = noise.grid(size)
    yy, xx = yy - size / 2, xx - size / 2
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)       # along the valley
    v = -xx * np.sin(angle) + yy * np.cos(angle)      # across it
    vc, dvc = _meander(u, size, rng)
    # without a river in the chip the valley axis lies off the chip's edge
    shift = rng.uniform(-0.35, 0.35) * size if p.river else rng.choice([-1, 1]) * rng.uniform(0.6, 1.2) * size
    dist = np.abs(v - vc - shift) / np.sqrt(1.0 + dvc * dvc)

    half_width = p.river_width_px / 2
    beyond = np.maximum(dist - half_width, 0.0)
    floor = 1e-4 * u * PIXEL_M                        # 0.1 m/km downstream gradient
    floodplain_px = rng.uniform(40, 160)
    upland = 1.0 - np.exp(-beyond / floodplain_px)    # 0 on the floodplain, 1 far from it
    hills = noise.fractal(rng, size, beta=3.4, min_wavelength=4.0) * p.relief_m
    micro = noise.fractal(rng, size, beta=2.6, min_wavelength=8.0) * rng.uniform(0.15, 0.5)
    rise = p.valley_slope * beyond * PIXEL_M
    # hills stand on the valley sides (never below the river), so uplands stay
    # dry while their low hollows next to the floodplain flood as embayments
    hand = rise + upland * (hills - hills.min()) + micro
    # the channel is cut below the floodplain: never emergent, always water
    channel = dist < half_width
    hand = np.where(channel, -rng.uniform(1.5, 4.0), hand).astype(np.float32)
    # the flood stage is the level that puts the event's share of the chip under water
    # (never below the river: the channel itself always holds water)
    stage = max(0.0, float(np.quantile(hand[::4, ::4], p.flood_frac)))

    lakes_field = noise.blobs(rng, size, scale=rng.uniform(20, 60))
    low = hand < stage + 1.0
    lakes = low & (lakes_field > noise.threshold_for_fraction(lakes_field, p.lake_frac, where=low))
    hand = np.where(lakes, np.minimum(hand, stage - rng.uniform(0.5, 2.0)), hand).astype(np.float32)

    water, depth = flood(hand, stage)
    height = (floor + hand).astype(np.float32)
    gy, gx = np.gradient(height, PIXEL_M)
    return Terrain(height=height, hand=hand, river_dist=dist.astype(np.float32), stage=stage,
                   water=water, depth=depth, permanent=channel | lakes, gx=gx, gy=gy)


def flood(hand: np.ndarray, stage: float) -> tuple[np.ndarray, np.ndarray]:
    """Water and its depth for a flood level ``stage`` (m above the river)."""
    water = hand < stage
    return water, np.where(water, stage - hand, 0.0).astype(np.float32)


def slope_deg(t: Terrain) -> np.ndarray:
    return np.degrees(np.arctan(np.hypot(t.gx, t.gy))).astype(np.float32)
