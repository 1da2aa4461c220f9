"""Synthetic flood events: the statistics each chip's scene is drawn from.

Sen1Floods11 holds 11 real flood events; its hand-labelled train/valid/test
splits mix chips of the same events, and Bolivia is held out as a region never
seen in training (Bonafilia et al. 2020). The synthetic events below span the
kinds of scene those events show (a crop delta, a hilly valley, a forested
highland with steep slopes, dry savanna, forested lowland, a peri-urban plain).
``SynthBolivia`` plays the held-out region: flat Amazonian lowland savanna with
tall grass and forest standing in shallow water, windier and cloudier, so an
S1 model meets more flooded vegetation and wind-roughened water than it learnt.

Every range is (low, high) of a uniform draw per chip. Values are scene
parameters (relief, flood stage, fractions); the radar and optical constants
they feed live in ``sar.py`` and ``optical.py`` with their sources.

Sentinel-1 and Sentinel-2 do not see the flood at the same moment: in
Sen1Floods11 the S2 image is 2 days before to 1 day after the S1 image
(per-event dates in the dataset's Sen1Floods11_Metadata.geojson), and the
satellites pass at different hours. Labels are drawn on S2, so the radar
sees the flood level of its own time: the level changes by a rate (floods
more often recede) times the gap.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Range = tuple[float, float]
MOUNTAIN_RELIEF_M = (70.0, 150.0)  # std of mountain terrain: median slopes 15-35 deg, a few beyond 50


@dataclass(frozen=True)
class EventSpec:
    name: str
    lon: float                     # west edge of the event's chip grid, degrees
    lat: float                     # north edge, degrees
    weight: float                  # share of the event among non-held-out chips
    relief_m: Range                # std of the hill terrain away from the river, m
    mountain_prob: float           # chance a chip is steep mountain terrain (MOUNTAIN_RELIEF_M)
    valley_slope: Range            # rise of the valley sides, m per m from the river
    river_prob: float              # chance a river channel crosses the chip
    river_width_px: Range
    flood_frac: Range              # share of the chip under the flood (sets the flood stage)
    lake_frac: Range               # floodplain ponds and oxbows, share of low ground
    forest_frac: Range
    urban_frac: Range
    bare_frac: Range               # share of farm parcels that are bare soil
    grass_height_m: Range          # height of grass and crops: shallower water leaves them emergent
    wind_ms: Range                 # 10 m wind speed over open water
    turbidity: Range               # 0 clear .. 1 sediment-laden flood water
    cloud_prob: float              # chance a chip has clouds at all
    cloud_frac: Range
    haze: Range                    # scale of the atmospheric path reflectance
    s2_lag_days: Range             # Sentinel-2 date minus Sentinel-1 date (Sen1Floods11 metadata)
    incidence_deg: Range = (30.0, 45.0)   # Sentinel-1 IW swath spans 29.1-46.0 deg (ESA S1 User Guide)
    stage_rate_m_day: Range = (-0.3, 0.15)  # flood level change; recession is the commoner
    tags: tuple[str, ...] = field(default_factory=tuple)


# Weights sum to 1. lon/lat place each event's chips for the GeoTIFF
# georeferencing (chips of one event tile a grid, none overlap). All events lie
# within 12 deg of the equator, where Sen1Floods11's 8.983e-05 deg pixel is 10 m
# within 2.5% both ways: the physics is simulated on a square 10 m grid.
EVENTS: tuple[EventSpec, ...] = (
    EventSpec("SynthDelta", 90.00, 10.00, 0.22, relief_m=(0.5, 3.0), mountain_prob=0.0,
              valley_slope=(0.0005, 0.003), river_prob=0.7, river_width_px=(15, 60),
              flood_frac=(0.1, 0.6), lake_frac=(0.02, 0.10), forest_frac=(0.02, 0.10),
              urban_frac=(0.01, 0.05), bare_frac=(0.1, 0.4), grass_height_m=(0.3, 1.2),
              wind_ms=(0.0, 5.0), turbidity=(0.3, 0.9), cloud_prob=0.5, cloud_frac=(0.05, 0.35),
              haze=(0.9, 1.4), s2_lag_days=(-1.0, 0.0)),
    EventSpec("SynthValley", -0.80, 5.00, 0.20, relief_m=(10.0, 40.0), mountain_prob=0.1,
              valley_slope=(0.005, 0.03), river_prob=0.8, river_width_px=(6, 25),
              flood_frac=(0.02, 0.25), lake_frac=(0.0, 0.04), forest_frac=(0.05, 0.25),
              urban_frac=(0.02, 0.08), bare_frac=(0.2, 0.6), grass_height_m=(0.2, 1.0),
              wind_ms=(0.0, 6.0), turbidity=(0.2, 0.8), cloud_prob=0.35, cloud_frac=(0.05, 0.3),
              haze=(0.7, 1.1), s2_lag_days=(0.0, 1.0)),
    EventSpec("SynthHighland", -1.50, 8.00, 0.14, relief_m=(20.0, 60.0), mountain_prob=0.5,
              valley_slope=(0.02, 0.08), river_prob=0.9, river_width_px=(4, 20),
              flood_frac=(0.0, 0.1), lake_frac=(0.0, 0.03), forest_frac=(0.3, 0.7),
              urban_frac=(0.0, 0.03), bare_frac=(0.1, 0.3), grass_height_m=(0.3, 1.0),
              wind_ms=(0.0, 4.0), turbidity=(0.3, 0.8), cloud_prob=0.5, cloud_frac=(0.05, 0.4),
              haze=(0.9, 1.3), s2_lag_days=(-2.0, 1.0)),
    EventSpec("SynthSavanna", 45.00, 2.00, 0.14, relief_m=(2.0, 15.0), mountain_prob=0.05,
              valley_slope=(0.001, 0.01), river_prob=0.7, river_width_px=(8, 40),
              flood_frac=(0.02, 0.3), lake_frac=(0.0, 0.05), forest_frac=(0.0, 0.1),
              urban_frac=(0.0, 0.03), bare_frac=(0.4, 0.8), grass_height_m=(0.1, 0.6),
              wind_ms=(1.0, 7.0), turbidity=(0.4, 1.0), cloud_prob=0.25, cloud_frac=(0.02, 0.2),
              haze=(1.0, 1.5), s2_lag_days=(-2.0, -1.0)),
    EventSpec("SynthLowland", -57.80, -6.00, 0.16, relief_m=(1.0, 8.0), mountain_prob=0.0,
              valley_slope=(0.001, 0.006), river_prob=0.6, river_width_px=(10, 50),
              flood_frac=(0.1, 0.5), lake_frac=(0.03, 0.12), forest_frac=(0.2, 0.5),
              urban_frac=(0.0, 0.03), bare_frac=(0.1, 0.3), grass_height_m=(0.3, 1.2),
              wind_ms=(0.0, 5.0), turbidity=(0.2, 0.7), cloud_prob=0.4, cloud_frac=(0.05, 0.3),
              haze=(0.8, 1.2), s2_lag_days=(0.0, 0.0)),
    EventSpec("SynthPeriurban", 78.00, 12.00, 0.14, relief_m=(1.0, 10.0), mountain_prob=0.0,
              valley_slope=(0.001, 0.01), river_prob=0.6, river_width_px=(8, 35),
              flood_frac=(0.05, 0.3), lake_frac=(0.0, 0.06), forest_frac=(0.02, 0.1),
              urban_frac=(0.05, 0.2), bare_frac=(0.2, 0.5), grass_height_m=(0.2, 1.0),
              wind_ms=(0.0, 5.0), turbidity=(0.3, 0.9), cloud_prob=0.4, cloud_frac=(0.05, 0.3),
              haze=(1.1, 1.6), s2_lag_days=(0.0, 0.0)),
)

# The held-out region: different statistics, never in any training set.
BOLIVIA = EventSpec(
    "SynthBolivia", -65.00, -12.00, 0.0, relief_m=(0.5, 4.0), mountain_prob=0.0,
    valley_slope=(0.0003, 0.002), river_prob=0.5, river_width_px=(10, 45),
    flood_frac=(0.1, 0.5), lake_frac=(0.05, 0.15), forest_frac=(0.25, 0.55),
    urban_frac=(0.0, 0.02), bare_frac=(0.0, 0.15), grass_height_m=(1.0, 2.2),
    wind_ms=(3.0, 9.0), turbidity=(0.5, 1.0), cloud_prob=0.6, cloud_frac=(0.05, 0.4),
    haze=(0.9, 1.4), s2_lag_days=(0.0, 0.0), tags=("held-out",))


@dataclass(frozen=True)
class ChipParams:
    """One chip's draw from its event."""
    event: str
    mountain: bool
    relief_m: float
    valley_slope: float
    river: bool
    river_width_px: float
    flood_frac: float
    lake_frac: float
    forest_frac: float
    urban_frac: float
    bare_frac: float
    grass_height_m: float
    wind_ms: float
    turbidity: float
    cloud_frac: float
    haze: float
    incidence_deg: float
    s1_stage_shift_m: float        # flood level at the S1 time minus at the S2 (label) time
    look_from_east: bool           # descending pass: the radar looks west
    sun_elevation_deg: float
    sun_azimuth_deg: float


def pick_event(rng: np.random.Generator) -> EventSpec:
    weights = np.array([e.weight for e in EVENTS])
    return EVENTS[int(rng.choice(len(EVENTS), p=weights / weights.sum()))]


def draw(event: EventSpec, rng: np.random.Generator, max_cloud_frac: float = 1.0,
         max_lag_days: float | None = None) -> ChipParams:
    """Draw one chip's parameters. ``max_cloud_frac`` caps clouds and ``max_lag_days``
    the S1-S2 time gap (the paper's ED kept Sentinel-2 images within 12 hours of
    Sentinel-1 with less than 12% cloud cover)."""
    u = lambda r: float(rng.uniform(r[0], r[1]))  # noqa: E731 - one-line helper
    mountain = bool(rng.random() < event.mountain_prob)
    relief = u(MOUNTAIN_RELIEF_M) if mountain else u(event.relief_m)
    cloudy = rng.random() < event.cloud_prob
    # S1 passes near 06:00 or 18:00 local time, S2 near 10:30: hours apart even on the same day
    lag = u(event.s2_lag_days) + rng.uniform(-0.35, 0.35)
    if max_lag_days is not None:
        lag = float(np.clip(lag, -max_lag_days, max_lag_days))
    return ChipParams(
        event=event.name, mountain=mountain, relief_m=relief,
        valley_slope=u(event.valley_slope) * (3.0 if mountain else 1.0),
        river=bool(rng.random() < event.river_prob), river_width_px=u(event.river_width_px),
        flood_frac=u(event.flood_frac), lake_frac=u(event.lake_frac),
        forest_frac=u(event.forest_frac), urban_frac=u(event.urban_frac),
        bare_frac=u(event.bare_frac), grass_height_m=u(event.grass_height_m),
        wind_ms=u(event.wind_ms), turbidity=u(event.turbidity),
        cloud_frac=min(u(event.cloud_frac), max_cloud_frac) if cloudy else 0.0,
        haze=u(event.haze), incidence_deg=u(event.incidence_deg),
        s1_stage_shift_m=-u(event.stage_rate_m_day) * lag,
        look_from_east=bool(rng.random() < 0.5),
        # tropics to mid-latitudes near local 10:30, the Sentinel-2 overpass time
        sun_elevation_deg=float(rng.uniform(35.0, 70.0)),
        sun_azimuth_deg=float(rng.uniform(100.0, 260.0)),
    )
