"""Read Sen1Floods11 rasters with rasterio, checking what they hold.

Every function raises :class:`DatasetError` naming the file and what is wrong
(missing, unreadable, wrong bands, unexpected values) instead of letting a bad
file fail deep inside a data loader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError

from .conventions import IGNORE, S1_BANDS, S2_BANDS, TEACHER_S2_BANDS
from .layout import DatasetError

# grids match when pixel sizes agree to 1e-6 relative and origins to 1e-3 pixel:
# Sen1Floods11's S1 and label transforms differ in the last digits
_REL_TOL = 1e-6
_ORIGIN_TOL_PX = 1e-3


@dataclass(frozen=True)
class Grid:
    width: int
    height: int
    crs: str
    transform: Affine

    def mismatch(self, other: Grid, names: tuple[str, str] = ("s1", "the file")) -> str | None:
        """Why two grids differ, each value labelled by ``names`` (this grid's, then
        ``other``'s), or None if they are the same grid."""
        this, that = names
        if (self.width, self.height) != (other.width, other.height):
            return f"size {this} {self.width}x{self.height} vs {that} {other.width}x{other.height}"
        if self.crs != other.crs:
            # "" is a file without one: said so, not as another CRS
            return f"CRS {this} {self.crs or 'none'} vs {that} {other.crs or 'none'}"
        a, b = self.transform, other.transform
        for name, x, y in (("pixel width", a.a, b.a), ("pixel height", a.e, b.e)):
            if not math.isclose(x, y, rel_tol=_REL_TOL):
                return f"{name} {this} {x:.6g} vs {that} {y:.6g}"
        if a.b or a.d or b.b or b.d:
            return None if a.almost_equals(b) else "rotated grids differ"
        if abs(a.c - b.c) > _ORIGIN_TOL_PX * abs(a.a) or abs(a.f - b.f) > _ORIGIN_TOL_PX * abs(a.e):
            return (f"origin {this} ({a.c:.8f}, {a.f:.8f}) vs {that} ({b.c:.8f}, "
                    f"{b.f:.8f})")
        return None


def _open(path: Path):
    if not Path(path).is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise DatasetError(f"{path}: not a readable raster ({exc})") from None


def _grid(ds) -> Grid:
    return Grid(ds.width, ds.height, ds.crs.to_string() if ds.crs else "", ds.transform)


def grid_of(path: Path) -> Grid:
    with _open(path) as ds:
        return _grid(ds)


def _read(path: Path, ds, indexes):
    """``ds.read``; a corrupt block (found only now: the header was fine) names the file."""
    try:
        return ds.read(indexes)
    except RasterioError as exc:
        raise DatasetError(f"{path}: corrupt data, its pixels cannot be read "
                           f"({exc.__cause__ or exc})") from None


def _band_order(path: Path, descriptions: tuple, count: int, wanted: tuple[str, ...],
                default: tuple[str, ...]) -> list[int]:
    """1-based band indices of ``wanted``, by band description, else by the dataset's order."""
    names = [d for d in descriptions]
    if all(n is None for n in names):
        if count != len(default):
            raise DatasetError(f"{path}: {count} unnamed bands; expected {len(default)} "
                               f"({', '.join(default)})")
        names = list(default)
    missing = [w for w in wanted if w not in names]
    if missing:
        raise DatasetError(f"{path}: bands {', '.join(missing)} not found "
                           f"(bands are {', '.join(str(n) for n in names)})")
    return [names.index(w) + 1 for w in wanted]


def _s1_bands(path: Path, ds) -> list[int]:
    bands = _band_order(path, ds.descriptions, ds.count, S1_BANDS, S1_BANDS)
    if not np.issubdtype(np.dtype(ds.dtypes[0]), np.floating):
        raise DatasetError(f"{path}: Sentinel-1 values are {ds.dtypes[0]}; expected float dB")
    return bands


def _s2_bands(path: Path, ds, bands: tuple[str, ...]) -> list[int]:
    return _band_order(path, ds.descriptions, ds.count, bands, S2_BANDS)


def _one_band(path: Path, ds, what: str) -> None:
    if ds.count != 1:
        raise DatasetError(f"{path}: a {what} has 1 band, this file has {ds.count}")


# a chip layer's header checks, those its reader makes before reading pixels; S2 as
# training reads it (the teacher's bands)
_HEADER_CHECKS = {"s1": _s1_bands, "s2": lambda path, ds: _s2_bands(path, ds, TEACHER_S2_BANDS),
                  "label": lambda path, ds: _one_band(path, ds, "label"),
                  "truth": lambda path, ds: _one_band(path, ds, "label")}


def ground_pixel_m(path: Path) -> tuple[float, float] | None:
    """(height, width) of a raster's pixels in ground metres, measured as the backend
    measures an input grid (:meth:`backend.grid.Grid.pixel_size_m`: for EPSG:4326, WGS 84
    lengths of a degree at the centre latitude); None without a CRS."""
    from backend.grid import Grid as GroundGrid
    with _open(path) as ds:
        if ds.crs is None:
            return None
        width, height = GroundGrid(ds.crs, ds.transform, ds.width, ds.height).pixel_size_m()
    return height, width


def check_layer(path: Path, layer: str) -> Grid:
    """The grid of a chip's ``s1``, ``s2``, ``label`` or ``truth`` file, once its header
    passes the checks its reader makes (bands, their names, the S1 dtype); no pixel is
    read, so a whole set is checked in seconds."""
    with _open(path) as ds:
        _HEADER_CHECKS[layer](path, ds)
        return _grid(ds)


def read_s1(path: Path) -> np.ndarray:
    """(2, H, W) float32 VV, VH in dB; NaN where there is no data."""
    with _open(path) as ds:
        data = _read(path, ds, _s1_bands(path, ds)).astype(np.float32, copy=False)
        nodata = ds.nodata
    if nodata is not None and not math.isnan(nodata):
        data[data == nodata] = np.nan
    data[~np.isfinite(data)] = np.nan
    _check_db(path, data[S1_BANDS.index("VV")])
    return data


def _check_db(path: Path, vv: np.ndarray) -> None:
    """Refuse VV in linear power or amplitude (never below 0) read as dB: every pixel would
    clip to the top of the window. sigma0 of land and water lies well below 0 dB, and only
    a few bright (urban) pixels of a real dB chip reach 0 dB, never half of them."""
    # counted in place (NaN compares false): every chip read passes here
    finite, below = np.count_nonzero(np.isfinite(vv)), np.count_nonzero(vv < 0)
    if finite and below * 2 < finite:
        raise DatasetError(f"{path}: VV holds {below} of {finite} values below 0 dB (median "
                           f"{np.nanmedian(vv):.3g}): linear power? Sen1Floods11 S1 chips are "
                           "in dB; convert with 10*log10")


def read_s2(path: Path, bands: tuple[str, ...] = S2_BANDS) -> np.ndarray:
    """(len(bands), H, W) stored values (reflectance x 10000), 0 where there is no data."""
    with _open(path) as ds:
        data = _read(path, ds, _s2_bands(path, ds, bands))
        nodata = ds.nodata
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        data = np.where(bad, 0, data)
    if nodata is not None and not math.isnan(nodata) and nodata != 0:
        data = np.where(data == nodata, 0, data)
    return data


def _check_codes(path: Path, data: np.ndarray, allowed: tuple[int, ...], what: str) -> None:
    bad = np.setdiff1d(np.unique(data), allowed)
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise DatasetError(f"{path}: {what} holds values {shown}; expected only "
                           f"{', '.join(str(a) for a in allowed)}")


def _read_coded(path: Path, what: str, extra_nodata: tuple[int, ...] = ()) -> np.ndarray:
    """One band of -1/0/1 codes; NaN, the nodata tag and ``extra_nodata`` become -1."""
    with _open(path) as ds:
        _one_band(path, ds, what)
        data = _read(path, ds, 1)
        nodata = ds.nodata
    if np.issubdtype(data.dtype, np.floating):
        data = np.where(np.isfinite(data), data, IGNORE)
    else:  # signed and wide: numpy 2 refuses -1 beside a uint8 array
        data = data.astype(np.int64)
    for value in ((nodata,) if nodata is not None and not math.isnan(nodata) else ()) + extra_nodata:
        data = np.where(data == value, IGNORE, data)
    _check_codes(path, data, (-1, 0, 1), what)
    return data


def read_label(path: Path) -> np.ndarray:
    """(H, W) int16 label: -1 no data, 0 not water, 1 water (a nodata tag also means -1)."""
    return _read_coded(path, "label").astype(np.int16)


def read_mask(path: Path) -> np.ndarray:
    """A predicted water mask as (H, W) int8: 1 water, 0 dry, -1 no prediction.

    Accepts the backend's uint8 masks (0, 1, 255 no data) and Sen1Floods11-style
    int16 masks (-1, 0, 1), with or without a nodata tag.
    """
    return _read_coded(path, "mask", extra_nodata=(255,)).astype(np.int8)
