"""Sen1Floods11 v1.1 conventions and the paper's input normalisation.

File contents (Bonafilia et al. 2020, "Sen1Floods11: a georeferenced dataset to
train and test deep learning flood algorithms for Sentinel-1", CVPR Workshops;
and the dataset's README):

- S1: float32, 2 bands VV, VH, sigma0 in dB, NaN where there is no data.
- S2: 13 bands B1..B12 (with B8A and B10), Level-1C TOA reflectance x 10000,
  stored as int16 with nodata 0 (the dataset README says UInt16).
- Labels: int16, -1 no data / not valid, 0 not water, 1 water.

Normalisation (Garg et al. 2023, "Cross Modal Distillation for Flood Extent
Mapping", Appendix A): VV clipped to [-20, 0] dB and VH to [-30, 0] dB, S2
bands B2, B3, B4, B8 clipped to [0, 3000], each scaled linearly to [0, 1].
No-data pixels become 0 after normalisation, as the model card specifies.
"""
from __future__ import annotations

import numpy as np

S1_BANDS = ("VV", "VH")
# Sen1Floods11 chips are 512 x 512 at 10 m (Bonafilia et al., 2020), stored in EPSG:4326
# at 8.983e-5 degree pixels: 10 m only near the equator (7.9 m wide in Spain)
CHIP_PIXEL_M = 10.0
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_SCALE = 10000.0          # stored value = reflectance x 10000
S2_NODATA = 0
TEACHER_S2_BANDS = ("B2", "B3", "B4", "B8")

IGNORE, DRY, WATER = -1, 0, 1

# Appendix A windows, (low, high) in the band's units
S1_WINDOWS = {"VV": (-20.0, 0.0), "VH": (-30.0, 0.0)}
S2_WINDOW = (0.0, 3000.0)


def normalise_s1(db: np.ndarray, bands: tuple[str, ...] = S1_BANDS) -> tuple[np.ndarray, np.ndarray]:
    """``(C, H, W)`` dB -> values in [0, 1] and the validity mask (all bands finite).

    Invalid pixels are 0 in every band.
    """
    valid = np.isfinite(db).all(axis=0)
    out = np.empty(db.shape, np.float32)
    for i, band in enumerate(bands):
        lo, hi = S1_WINDOWS[band]
        out[i] = (np.clip(db[i], lo, hi) - lo) / (hi - lo)
    out[:, ~valid] = 0.0
    return out, valid


def normalise_s2(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, H, W)`` stored S2 values (reflectance x 10000) -> [0, 1] and validity.

    A pixel is valid where no band holds the nodata value 0 (or NaN).
    """
    v = values.astype(np.float32, copy=False)
    valid = (np.isfinite(v) & (v != S2_NODATA)).all(axis=0)
    lo, hi = S2_WINDOW
    out = (np.clip(np.nan_to_num(v), lo, hi) - lo) / (hi - lo)
    out[:, ~valid] = 0.0
    return out.astype(np.float32, copy=False), valid


def ndvi01(b4: np.ndarray, b8: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """NDVI = (B8 - B4) / (B8 + B4) of stored S2 values, mapped from [-1, 1] to [0, 1]
    like the other inputs (the optical input of FLoRA-style distillation: RGB + NDVI);
    0 where S2 has no data or both bands are 0."""
    b4, b8 = b4.astype(np.float32), b8.astype(np.float32)
    total = b8 + b4
    ndvi = np.divide(b8 - b4, total, out=np.zeros_like(total), where=total > 0)
    out = (np.clip(ndvi, -1.0, 1.0) + 1.0) / 2.0
    out[~valid] = 0.0
    return out[None]
