"""Reading a raster at the pixels of a grid that only scales and shifts its own.

The resampled path's way back (``engine._predict_resampled``) reads the model-grid
file at the input's pixels. Where those are no larger than the file's (an input finer
than the model, the usual case: 10 m-by-degrees grids away from the equator) each is
the bilinear blend of the 2 x 2 file pixels around its centre, done here with numpy:
4 gathers and 2 blends. In a 4096 px run at 45 N that stage cost 20 CPU ns per pixel,
against 33 with GDAL's read-time bilinear (3 interleaved runs each, 2 cores). Alone, on
a file without no data, numpy was no faster (21-27 against 19): the run's gain is likely
where no data touches a window, which GDAL reads a second time (nearest) and numpy
takes from the block it has. Coarser input pixels take GDAL's read-time bilinear, which
widens its kernel to their footprint.
"""
from __future__ import annotations

import numpy as np
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.windows import Window

NUMPY_SCALE = 1.05   # file pixels per window pixel up to which 2 x 2 taps cover the kernel
NEAREST_REACH = 2    # file pixels searched for data around a pixel left without


def read_scaled(ds, to_file: Affine, win: Window) -> np.ndarray:
    """``ds``'s bands, bilinear, at the pixels of ``win`` of a grid; ``to_file`` maps
    that grid's pixel coordinates to ``ds``'s (a scale and a shift only).

    The window should lie inside ``ds`` (the model grid reaches beyond the output on
    every side); a tap beyond the file's last pixel takes that pixel. Where a pixel's
    2 x 2 taps touch no data (NaN) it takes the nearest file pixel instead, so that no
    data does not grow.
    """
    if to_file.a > NUMPY_SCALE or to_file.e > NUMPY_SCALE:
        return _read_gdal(ds, to_file, win)
    # pixel centres in the file's pixel coordinates; taps at floor(u - 0.5) and the next
    u = to_file.c + (win.col_off + np.arange(int(win.width)) + 0.5) * to_file.a
    v = to_file.f + (win.row_off + np.arange(int(win.height)) + 0.5) * to_file.e
    x0, y0 = np.floor(u - 0.5).astype(np.int64), np.floor(v - 0.5).astype(np.int64)
    fx, fy = (u - 0.5 - x0).astype(np.float32), (v - 0.5 - y0).astype(np.float32)[:, None]
    cols, rows = _taps(x0, ds.width), _taps(y0, ds.height)
    c_lo, r_lo = cols[0][0], rows[0][0]
    block = ds.read(window=Window(c_lo, r_lo, cols[1][-1] + 1 - c_lo, rows[1][-1] + 1 - r_lo),
                    out_dtype=np.float32)
    left, right = block[:, :, cols[0] - c_lo], block[:, :, cols[1] - c_lo]
    across = left + (right - left) * fx
    top, bottom = across[:, rows[0] - r_lo], across[:, rows[1] - r_lo]
    cell = top + (bottom - top) * fy
    gaps = np.isnan(cell)
    if gaps.any():   # the file pixel holding each centre
        near_c = np.clip(np.floor(u).astype(np.int64), c_lo, cols[1][-1]) - c_lo
        near_r = np.clip(np.floor(v).astype(np.int64), r_lo, rows[1][-1]) - r_lo
        np.copyto(cell, block[:, near_r[:, None], near_c[None, :]], where=gaps)
    return cell


def nearest_with_data(ds, to_file: Affine, win: Window, cell: np.ndarray, wanted: np.ndarray
                      ) -> np.ndarray:
    """``cell`` (:func:`read_scaled` of ``win``) with each ``wanted`` pixel given the nearest
    file pixel with data within ``NEAREST_REACH`` file pixels of its centre, if any; in place.

    Where the file's pixels and the grid's differ in shape (5.6 x 11.1 m degrees at 60 N
    against the model's 10 m), an input pixel with data at a slanted no-data edge can hold
    its centre, and its taps, in model pixels without: it was written as no data (111
    pixels of a 512 px scene).
    """
    rows, cols = np.nonzero(wanted)
    if not rows.size:
        return cell
    u = np.floor(to_file.c + (win.col_off + cols + 0.5) * to_file.a).astype(np.int64)
    v = np.floor(to_file.f + (win.row_off + rows + 0.5) * to_file.e).astype(np.int64)
    reach = NEAREST_REACH
    c0, r0 = max(int(u.min()) - reach, 0), max(int(v.min()) - reach, 0)
    c1, r1 = min(int(u.max()) + reach + 1, ds.width), min(int(v.max()) + reach + 1, ds.height)
    if c0 >= c1 or r0 >= r1:
        return cell
    block = ds.read(window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=np.float32)
    has_data = np.isfinite(block).all(axis=0)
    open_ = np.ones(rows.size, bool)
    offsets = sorted(((dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)),
                     key=lambda o: o[0] ** 2 + o[1] ** 2)
    for dy, dx in offsets:
        y, x = v + dy - r0, u + dx - c0
        take = open_ & (y >= 0) & (y < r1 - r0) & (x >= 0) & (x < c1 - c0)
        take[take] = has_data[y[take], x[take]]
        if take.any():
            cell[:, rows[take], cols[take]] = block[:, y[take], x[take]]
            open_ &= ~take
        if not open_.any():
            break
    return cell


def _taps(first: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's two taps, ``first`` and the next, kept inside 0..n-1."""
    return np.clip(first, 0, n - 1), np.clip(first + 1, 0, n - 1)


def _read_gdal(ds, to_file: Affine, win: Window) -> np.ndarray:
    """GDAL resamples (bilinear, its kernel widened when shrinking) as it reads a
    fractional window, several times faster than a warped view. At a raster's edge GDAL
    would shift the samples: hence a window inside it."""
    src = Window(to_file.c + to_file.a * win.col_off, to_file.f + to_file.e * win.row_off,
                 to_file.a * win.width, to_file.e * win.height)
    shape = (ds.count, int(win.height), int(win.width))
    cell = ds.read(window=src, out_shape=shape, resampling=Resampling.bilinear)
    gaps = np.isnan(cell)
    if gaps.any():
        np.copyto(cell, ds.read(window=src, out_shape=shape, resampling=Resampling.nearest),
                  where=gaps)
    return cell
