"""Weak water labels from Sentinel-2 spectral indices.

Two labellers, both run on the stored 13-band S2 stack (TOA reflectance x 10000):

- ``s1f11_weak``: the kind of rule behind Sen1Floods11's ``S2IndexLabelWeak``,
  which thresholds NDVI and MNDWI (Bonafilia et al. 2020). Their exact
  thresholds and cloud screen are not restated here; we assume water where
  MNDWI > 0 (Xu 2006, "Modification of normalised difference water index (NDWI)
  to enhance open water features", IJRS 27(14), whose natural threshold is 0)
  and NDVI < 0.2 (vegetation cover starts near NDVI 0.2; Tucker 1979, RSE 8),
  and a bright-blue cloud screen (TOA B2 >= 0.25 is cloud, label -1).
- ``ndwi_weak``: the paper's external-dataset labels, NDWI (McFeeters 1996,
  "The use of the normalized difference water index (NDWI) in the delineation
  of open water features", IJRS 17(7)) above 0; no cloud screen.

They are wrong exactly where the indices are: thin cloud and haze, cloud
shadow (the path radiance that shadows do not dim lifts green over SWIR),
shallow or vegetated water, built-up land. Pixels where a band the rule reads holds
S2's nodata (0) get -1; the other bands do not count (a real Sen1Floods11 stack has
exact zeros in B10, the cirrus band, over clear land and water).
"""
from __future__ import annotations

import numpy as np

from .conventions import DRY, IGNORE, S2_BANDS, S2_NODATA, S2_SCALE, WATER

MNDWI_MIN = 0.0
NDVI_MAX = 0.2
NDWI_MIN = 0.0
CLOUD_BLUE_MIN = 0.25


def _band(s2: np.ndarray, name: str) -> np.ndarray:
    return s2[S2_BANDS.index(name)].astype(np.float32) / S2_SCALE


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b)


def _valid(s2: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Where none of the bands ``names`` holds the nodata value."""
    return (s2[[S2_BANDS.index(n) for n in names]] != S2_NODATA).all(axis=0)


def ndvi(s2: np.ndarray) -> np.ndarray:
    return _nd(_band(s2, "B8"), _band(s2, "B4"))


def mndwi(s2: np.ndarray) -> np.ndarray:
    return _nd(_band(s2, "B3"), _band(s2, "B11"))


def ndwi(s2: np.ndarray) -> np.ndarray:
    return _nd(_band(s2, "B3"), _band(s2, "B8"))


def s1f11_weak(s2: np.ndarray) -> np.ndarray:
    """int16 label from a ``(13, H, W)`` S2 stack: MNDWI and NDVI, clouds -1."""
    water = (mndwi(s2) > MNDWI_MIN) & (ndvi(s2) < NDVI_MAX)
    out = np.where(water, WATER, DRY).astype(np.int16)
    out[_band(s2, "B2") >= CLOUD_BLUE_MIN] = IGNORE
    out[~_valid(s2, ("B2", "B3", "B4", "B8", "B11"))] = IGNORE
    return out


def ndwi_weak(s2: np.ndarray) -> np.ndarray:
    """int16 label from a ``(13, H, W)`` S2 stack: NDWI > 0."""
    out = np.where(ndwi(s2) > NDWI_MIN, WATER, DRY).astype(np.int16)
    out[~_valid(s2, ("B3", "B8"))] = IGNORE
    return out


RULES = {"s1f11": s1f11_weak, "ndwi": ndwi_weak}
