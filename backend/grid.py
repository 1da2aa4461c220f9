"""Raster grids: CRS, transform and size, pixel sizes and areas in ground metres, extents.

A grid's pixel size in metres is what the model card's pixel size is compared with, and
each row's pixel area is what water areas are summed from; both hold for geographic
grids (Sen1Floods11's EPSG:4326) and for projected ones far from true scale.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform, transform_bounds
from rasterio.windows import Window

from .errors import InputError, UsageError


def metres_per_degree(lat_deg: float) -> tuple[float, float]:
    """(east-west, north-south) metres per degree on the WGS 84 ellipsoid at a latitude.

    The standard series (e.g. Wikipedia, "Geographic coordinate system", section
    "Length of a degree"): 111412.84 cos(phi) - 93.5 cos(3 phi) + 0.118 cos(5 phi) for
    longitude and 111132.92 - 559.82 cos(2 phi) + 1.175 cos(4 phi) - 0.0023 cos(6 phi)
    for latitude; at the equator they give 111319.5 m and 110574.3 m.
    """
    phi = np.radians(lat_deg)
    lon = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    lat = (111132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi)
           - 0.0023 * np.cos(6 * phi))
    return lon, lat


# A projected grid's units are taken as ground metres while the projection's scale stays
# within this of 1 over the grid (UTM: 0.9996-1.001 in its zone); beyond (Web Mercator
# away from the equator: 1 / cos(latitude)) the true ground size is computed.
SCALE_TOLERANCE = 0.01
# areas are held to a closer bound: a projected grid's pixel area is its units squared
# only where the areal scale stays within this of 1 over the grid (UTM inside its zone:
# 0.9992-1.002); elsewhere each pixel's area is measured (1 % in length is 2 % in area)
AREA_TOLERANCE = 0.002
AREA_COLUMNS = 9   # columns of every row where a pixel's area is measured; linear between


@dataclass(frozen=True)
class Grid:
    """An axis-aligned raster grid: CRS, affine transform and size.

    North-up (row 0 at the north edge) or flipped (south-up, or columns running
    west): ``open_inputs`` refuses rotated and sheared grids.
    """
    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def geographic(self) -> bool:
        return bool(self.crs.is_geographic)

    def _unit_m(self) -> float:
        _, factor = self.crs.linear_units_factor
        return float(factor)

    def _ground_per_unit(self, rows: np.ndarray, cols: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Ground metres per CRS unit along x and along y at pixel centres of a projected
        grid: a step of one pixel each way, measured on WGS 84 after transforming to it."""
        t = self.transform
        x = t.c + t.a * (cols + 0.5)
        y = t.f + t.e * (rows + 0.5)
        d = abs(t.a)
        lon, lat = transform(self.crs, "EPSG:4326", np.concatenate([x, x + d, x]),
                             np.concatenate([y, y, y + d]))
        lon, lat = np.reshape(lon, (3, -1)), np.reshape(lat, (3, -1))
        mx, my = metres_per_degree(lat[0])
        steps = []
        for k in (1, 2):
            dlon = (lon[k] - lon[0] + 180.0) % 360.0 - 180.0
            steps.append(np.hypot(dlon * mx, (lat[k] - lat[0]) * my) / d)
        return steps[0], steps[1]

    @functools.cached_property
    def _scaled(self) -> bool:
        """A projected grid whose scale strays from 1 by more than SCALE_TOLERANCE."""
        if self.geographic:
            return False
        rows = np.array([0, self.height / 2, self.height - 1] * 3)
        cols = np.repeat([0, self.width / 2, self.width - 1], 3)
        try:
            gx, gy = self._ground_per_unit(rows, cols)
        except Exception:  # a local CRS with no way to the ellipsoid: its units as they are
            return False
        unit = self._unit_m()
        return bool(max(np.abs(gx / unit - 1).max(), np.abs(gy / unit - 1).max())
                    > SCALE_TOLERANCE)

    @functools.cached_property
    def _area_scaled(self) -> bool:
        """A projected grid whose areal scale strays from 1 by more than AREA_TOLERANCE."""
        if self.geographic:
            return False
        rows = np.repeat(np.linspace(0, self.height - 1, 5), 5)
        cols = np.tile(np.linspace(0, self.width - 1, 5), 5)
        try:
            gx, gy = self._ground_per_unit(rows, cols)
        except Exception:  # a local CRS with no way to the ellipsoid: its units as they are
            return False
        return bool(np.abs(gx * gy / self._unit_m() ** 2 - 1).max() > AREA_TOLERANCE)

    @property
    def row_areas_vary(self) -> bool:
        """Pixels of different rows cover different ground areas, and on a projected grid
        far from true scale pixels along a row too (see :meth:`row_area_m2`)."""
        return self.geographic or self._area_scaled

    @property
    def column_areas_vary(self) -> bool:
        """A projected grid far from true scale: :meth:`row_area_m2` gives each row's areas
        at :meth:`area_columns`, and :meth:`column_weights` spreads them along the row."""
        return self._area_scaled

    def area_columns(self) -> np.ndarray:
        """The columns where :meth:`row_area_m2` measures a projected grid far from true scale."""
        return np.linspace(0, self.width - 1, min(AREA_COLUMNS, self.width))

    def column_weights(self, col0: int, cols: int) -> np.ndarray:
        """(k, cols) weights that interpolate areas at :meth:`area_columns` linearly to the
        columns [col0, col0 + cols)."""
        at = self.area_columns()
        target = np.arange(col0, col0 + cols, dtype=np.float64)
        if len(at) == 1:
            return np.ones((1, cols))
        return np.stack([np.interp(target, at, np.eye(len(at))[k]) for k in range(len(at))])

    def pixel_size_m(self) -> tuple[float, float]:
        """Pixel (width, height) in ground metres at the grid's centre; for a projected grid
        within SCALE_TOLERANCE of true scale, its units as metres."""
        a, e = abs(self.transform.a), abs(self.transform.e)
        if self.geographic:
            mx, my = metres_per_degree(self.centre_latitude())
            return float(a * mx), float(e * my)
        if self._scaled:
            gx, gy = self._ground_per_unit(np.array([self.height / 2]),
                                           np.array([self.width / 2]))
            return float(a * gx[0]), float(e * gy[0])
        unit = self._unit_m()
        return a * unit, e * unit

    def centre_latitude(self) -> float:
        return float(self.transform.f + self.transform.e * self.height / 2)

    def row_area_m2(self, row0: int, rows: int) -> np.ndarray:
        """Area in m^2 of one pixel in each of ``rows`` rows from ``row0`` (float64): by
        latitude on a geographic grid; on a projected grid far from true scale, (rows, k)
        areas measured at the k :meth:`area_columns` of each row (polar stereographic,
        Lambert conic or UTM outside its zone change scale along a row too)."""
        a, e = abs(self.transform.a), abs(self.transform.e)
        r = np.arange(row0, row0 + rows, dtype=np.float64)
        if self.geographic:
            mx, my = metres_per_degree(self.transform.f + self.transform.e * (r + 0.5))
            return a * mx * e * my
        if self._area_scaled:
            at = self.area_columns()
            gx, gy = self._ground_per_unit(np.repeat(r, len(at)), np.tile(at, rows))
            return (a * gx * e * gy).reshape(rows, len(at))
        unit = self._unit_m()
        return np.full(rows, a * e * unit * unit)

    @property
    def north_up(self) -> bool:
        return self.transform.a > 0 and self.transform.e < 0

    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north), whichever way the rows and columns run
        (``rasterio.transform.array_bounds`` assumes north-up)."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def north_up_twin(self) -> "Grid":
        """The same pixels in north-up order: rows north to south, columns west to east."""
        west, _, _, north = self.bounds()
        t = self.transform
        return Grid(self.crs, Affine(abs(t.a), 0.0, west, 0.0, -abs(t.e), north),
                    self.width, self.height)

    def window_grid(self, window: Window) -> "Grid":
        return Grid(self.crs, rasterio.windows.transform(window, self.transform),
                    int(window.width), int(window.height))


def grid_of(ds) -> Grid:
    return Grid(ds.crs, ds.transform, ds.width, ds.height)


def check_extent_options(extent: tuple | None, extent_crs: str | None) -> None:
    if extent_crs and not extent:
        raise UsageError("--extent-crs needs --extent")


def run_window(grid: Grid, extent: tuple[float, float, float, float] | None,
               extent_crs: str | None, path: str,
               note: Callable[[str], None] | None = None) -> Window:
    """The window a run covers: the extent's (:func:`extent_window`), or the whole grid.
    The options were checked before any work (:func:`check_extent_options`)."""
    if extent is None:
        return Window(0, 0, grid.width, grid.height)
    return extent_window(grid, extent, extent_crs, path, note)


def extent_window(grid: Grid, extent: tuple[float, float, float, float],
                  extent_crs: str | None, path: str,
                  note: Callable[[str], None] | None = None) -> Window:
    """The input-grid window covering an extent, snapped outward to whole pixels; where
    the extent reaches past the raster, clipped to it, and ``note`` told so. A box in
    longitude and latitude may cross the antimeridian (XMIN > XMAX, as GeoJSON and STAC
    write it), and on a geographic raster is matched to the raster's turn of longitude."""
    xmin, ymin, xmax, ymax = extent
    given = _rounded(extent)
    src = grid.crs
    if extent_crs:
        try:
            src = CRS.from_user_input(extent_crs)
        except Exception:  # rasterio raises CRSError, pyproj-style strings vary
            raise UsageError(f"extent CRS {extent_crs!r} is not a CRS rasterio "
                             "understands") from None
    across = _full_turn(src) is not None and xmin > xmax
    if not ((xmin < xmax or across) and ymin < ymax):
        raise UsageError(f"extent {extent}: expected XMIN,YMIN,XMAX,YMAX with XMIN < XMAX "
                         "and YMIN < YMAX")
    if src != grid.crs:
        xmin, ymin, xmax, ymax = transform_bounds(src, grid.crs, xmin, ymin, xmax, ymax,
                                                  densify_pts=21)
        name = src.to_string()
        given = (f"{_rounded(extent)} (in {name if len(name) <= 40 else 'the given CRS'}; "
                 f"{_rounded((xmin, ymin, xmax, ymax))} in the raster's)")
    turn = _full_turn(grid.crs)
    if turn is not None:
        if xmin > xmax:  # across the antimeridian: one box, its east edge a turn further
            xmax += turn
        xmin, xmax = _same_turn(xmin, xmax, grid.bounds(), turn)
    # the extent's corners in pixel coordinates: any axis-aligned grid, flipped ones too
    cols, rows = ~grid.transform @ (np.array([xmin, xmax]), np.array([ymax, ymin]))
    col0, row0 = math.floor(cols.min() + 1e-9), math.floor(rows.min() + 1e-9)
    col1, row1 = math.ceil(cols.max() - 1e-9), math.ceil(rows.max() - 1e-9)
    whole = (col0, row0, col1, row1)
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, grid.width), min(row1, grid.height)
    bounds = grid.bounds()  # XMIN,YMIN,XMAX,YMAX, like --extent
    if col1 <= col0 or row1 <= row0:
        hint = ("; an extent in longitude and latitude is west,south,east,north"
                if src.is_geographic else "")
        raise InputError(f"{path}: the extent {given} does not overlap the raster "
                         f"(bounds {_rounded(bounds)} in {grid.crs.to_string()}){hint}")
    if note is not None and (col0, row0, col1, row1) != whole:
        note(f"the extent {given} reaches past the raster: the outputs cover only its part "
             f"inside ({col1 - col0} x {row1 - row0} pixels; the raster's bounds "
             f"{_rounded(bounds)} in {grid.crs.to_string()})")
    return Window(col0, row0, col1 - col0, row1 - row0)


def same_crs(a: CRS, b: CRS) -> bool:
    """Whether rasters in CRS ``a`` and ``b`` with the same geotransform lie in the same place.

    rasterio's ``==`` also weighs the axis order a geographic CRS declares: EPSG:4326 is
    latitude first, OGC:CRS84 and the ESRI WKT of ENVI headers (GCS_WGS_1984) longitude
    first. GDAL's geotransforms are longitude first whatever the CRS says, so for rasters
    two geographic CRSs of the same datum, prime meridian and units are one.
    """
    if a == b:
        return True
    if not (a.is_geographic and b.is_geographic):
        return False
    described = a.to_dict()
    return bool(described) and described == b.to_dict()


def _full_turn(crs: CRS) -> float | None:
    """360 degrees in a geographic CRS's angular unit; None for a projected CRS."""
    return 2 * math.pi / crs.units_factor[1] if crs.is_geographic else None


def _same_turn(xmin: float, xmax: float, bounds: tuple[float, ...],
               turn: float) -> tuple[float, float]:
    """Longitudes ``xmin..xmax`` moved by a whole turn where that overlaps the raster's
    more (a raster written at 179..181 and an extent at -179.5..-179.2)."""
    def overlap(k: int) -> float:
        return min(xmax + k * turn, bounds[2]) - max(xmin + k * turn, bounds[0])
    k = max((0, -1, 1), key=overlap)  # ties keep the extent as given
    return xmin + k * turn, xmax + k * turn


def _rounded(values) -> str:
    """Coordinates to 7 significant digits, never in exponent form (4038000, not 4.038e+06)."""
    return ",".join(np.format_float_positional(float(v), precision=7, unique=True,
                                               fractional=False, trim="-") for v in values)
