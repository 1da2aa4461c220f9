"""Raster input and output: open and check VV/VH inputs, read windows, write GeoTIFFs atomically.

Inputs are one raster with VV and VH bands, or two single-band rasters. Bands are
named from their descriptions (``VV``, ``Sigma0_VH_db``, ...) or, for single-band
files, from the file name; without names the order is VV, VH; ``--bands`` chooses them
by number in one multi-band file. Every problem is an
:class:`InputError` or :class:`OutputError` whose one-line message names the file.

Outputs are written to a hidden temporary file in the destination folder and
renamed into place when complete, so a reader never sees a partial file and a
failed or cancelled run leaves nothing behind.
"""
from __future__ import annotations

import functools
import math
import os
import re
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.warp import transform, transform_bounds
from rasterio.windows import Window

from .errors import InputError, OutputError, UsageError, first_line

BAND_NAMES = ("VV", "VH")
GDAL_CACHE_MB = 64   # GDAL's block cache, bounded: memory must not grow with the raster


def gdal_env() -> rasterio.Env:
    """GDAL settings for a run: a bounded block cache, and uncompressed GeoTIFFs read
    straight into our buffers (GTIFF_DIRECT_IO; about 2x faster, no cache copies)."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GTIFF_DIRECT_IO="YES")


_BAND_RE = re.compile(r"(?<![a-z])(vv|vh)(?![a-z])", re.IGNORECASE)
# Sentinel-1's other dual polarisation (HH + HV, over polar regions and sea ice)
_OTHER_POL_RE = re.compile(r"(?<![a-z])(hh|hv)(?![a-z])", re.IGNORECASE)


# --------------------------------------------------------------------------- grid

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

    @property
    def row_areas_vary(self) -> bool:
        """Pixels of different rows cover different ground areas (see :meth:`row_area_m2`)."""
        return self.geographic or self._scaled

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
        latitude on a geographic grid; on a projected grid far from true scale, measured at
        each row's middle column (Web Mercator's scale varies with latitude only)."""
        a, e = abs(self.transform.a), abs(self.transform.e)
        r = np.arange(row0, row0 + rows, dtype=np.float64)
        if self.geographic:
            mx, my = metres_per_degree(self.transform.f + self.transform.e * (r + 0.5))
            return a * mx * e * my
        if self._scaled:
            gx, gy = self._ground_per_unit(r, np.full(rows, self.width / 2))
            return a * gx * e * gy
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


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class BandSource:
    """One input band: which file and band index, its name, nodata value and metadata text."""
    path: str
    index: int            # 1-based band index in the file
    name: str             # VV or VH
    nodata: float | None
    text: str             # description, unit and tags: what units detection reads
    named_by: str         # how it was named: description, file name, position, brightness, --bands


@dataclass
class InputSet:
    """The opened inputs: band sources by name, their common grid, and the open datasets."""
    paths: list[str]
    bands: dict[str, BandSource]
    grid: Grid
    datasets: dict[str, rasterio.io.DatasetReader]
    notes: list[str] = field(default_factory=list)

    def dataset(self, band: str):
        return self.datasets[self.bands[band].path]

    def mapping(self) -> dict[str, dict]:
        """Which file and band each name comes from, and how it was named (for results)."""
        return {n: {"path": s.path, "band": s.index, "named_by": s.named_by}
                for n, s in self.bands.items()}

    def close(self) -> None:
        for ds in self.datasets.values():
            ds.close()


def _one_named(pattern: re.Pattern, text: str) -> str | None:
    found = {m.upper() for m in pattern.findall(text or "")}
    return found.pop() if len(found) == 1 else None


def band_name_in(text: str) -> str | None:
    """'VV' or 'VH' if the text names exactly one of them as a word, else None."""
    return _one_named(_BAND_RE, text)


def _refuse_hh_hv(labels: list[tuple[str, str]], where: str, how: str) -> None:
    """HH/HV bands (no VV/VH among them) are another polarisation, not unnamed VV/VH.

    ``labels``: (what, text) per band, e.g. ("band 1", its description).
    """
    named = [(what, _one_named(_OTHER_POL_RE, text)) for what, text in labels]
    named = [(what, pol) for what, pol in named if pol]
    if named:
        said = " and ".join(f"{what} is {pol}" for what, pol in named)
        raise InputError(f"{where}: {said} (from the {how}); the model reads VV and VH, the "
                         "polarisations of Sentinel-1 over land, and HH/HV (polar and sea-ice "
                         "scenes) back-scatter differently; --bands VV_INDEX,VH_INDEX uses "
                         "them as VV and VH all the same")


def open_mask(path: str):
    """Open a water mask (one uint8 band: 0 dry, 1 water, 255 no data); InputError if not."""
    ds = open_raster(path)
    if ds.count != 1 or ds.dtypes[0] != "uint8":
        found = f"{ds.count} band(s) of {ds.dtypes[0]}"
        ds.close()
        raise InputError(f"{path}: expected a water mask, one uint8 band (0 dry, 1 water, "
                         f"255 no data); found {found}")
    return ds


def input_name(path: str) -> str:
    """An input as provenance names it: absolute, a GDAL virtual path as given."""
    return path if path.startswith("/vsi") else os.path.abspath(path)


def open_raster(path: str):
    """Open a georeferenced, north-up, non-complex raster; InputError naming the file if not.

    GDAL's virtual paths (``/vsizip/``, ``/vsigzip/``, ...: a GeoTIFF inside an ASF HyP3
    zip, read in place) go straight to GDAL, which says if they do not exist.
    """
    if not path.startswith("/vsi"):
        if not os.path.exists(path):
            raise InputError(f"{path}: file not found")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a folder, not a raster file")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot be read (permission denied)")
    try:
        with warnings.catch_warnings():  # a missing grid gets our own one-line error below
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioError as exc:
        raise InputError(f"{path}: not a raster GDAL can read ({first_line(exc)})") from None
    try:
        _check_dataset(path, ds)
    except InputError:
        ds.close()
        raise
    return ds


def _check_dataset(path: str, ds) -> None:
    if ds.gcps[0] and ds.transform == Affine.identity():
        raise InputError(f"{path}: is located by ground control points only, as a Sentinel-1 "
                         "GRD is as delivered: calibrate it to sigma0 and terrain-correct it "
                         "onto a map grid first (e.g. SNAP: Calibration, then Terrain-Correction)")
    if ds.crs is None or ds.transform == Affine.identity():
        raise InputError(f"{path}: has no georeferencing (CRS and geotransform); the mask "
                         "must lie on a known grid and the pixel size must be known")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise InputError(f"{path}: the grid is rotated or sheared; warp it to a north-up "
                         "grid first (e.g. gdalwarp)")
    for dtype in ds.dtypes:
        if np.dtype(dtype).kind == "c":
            raise InputError(f"{path}: complex ({dtype}) bands are not supported; give "
                             "calibrated backscatter (GRD), not SLC data")


def _band_text(ds, i: int) -> str:
    parts = [ds.descriptions[i - 1] or "", ds.units[i - 1] or ""]
    parts += [f"{k}={v}" for k, v in ds.tags(i).items()]
    return " ".join(p for p in parts if p)


def _source(path: str, ds, i: int, name: str, named_by: str) -> BandSource:
    text = " ".join(filter(None, [_band_text(ds, i), os.path.basename(path)]))
    return BandSource(path, i, name, ds.nodatavals[i - 1], text, named_by)


def _bands_of_one(path: str, ds, notes: list[str]) -> dict[str, BandSource]:
    names = [band_name_in(ds.descriptions[i] or "") for i in range(ds.count)]
    if not any(names):
        _refuse_hh_hv([(f"band {i + 1}", ds.descriptions[i] or "") for i in range(ds.count)],
                      path, "band descriptions")
    if ds.count == 1:
        if not names[0]:
            _refuse_hh_hv([("its band", os.path.basename(path))], path, "file name")
        name = names[0] or band_name_in(os.path.basename(path)) or "VV"
        how = "description" if names[0] else ("file name" if band_name_in(os.path.basename(path))
                                              else "position")
        return {name: _source(path, ds, 1, name, how)}
    found = {n: i + 1 for i, n in enumerate(names) if n}
    if set(found) == set(BAND_NAMES) and names.count("VV") == 1 and names.count("VH") == 1:
        if ds.count > 2:
            notes.append(f"{path}: using band {found['VV']} (VV) and band {found['VH']} (VH) "
                         f"of {ds.count}")
        return {n: _source(path, ds, i, n, "description") for n, i in found.items()}
    if ds.count != 2:
        raise InputError(f"{path}: has {ds.count} bands; expected 2 bands (VV, VH), or two "
                         "single-band files, or --bands VV_INDEX,VH_INDEX to choose two")
    if names[0] and names[0] == names[1]:
        raise InputError(f"{path}: both bands are described as {names[0]}; expected VV and VH")
    if names[0] or names[1]:  # one named: the other is the other polarisation
        other = _one_named(_OTHER_POL_RE, ds.descriptions[1 if names[0] else 0] or "")
        if other:
            raise InputError(f"{path}: band {1 if names[0] else 2} is {names[0] or names[1]} "
                             f"but band {2 if names[0] else 1} is {other}; expected VV and VH")
        first = names[0] or ("VH" if names[1] == "VV" else "VV")
        order = (first, "VH" if first == "VV" else "VV")
        how = "description"
    else:  # unnamed: ordered by brightness in open_inputs
        order = BAND_NAMES
        how = "position"
    return {n: _source(path, ds, i + 1, n, how) for i, n in enumerate(order)}


def _same_grid(a: str, da, b: str, db) -> None:
    if (da.width, da.height) != (db.width, db.height):
        raise InputError(f"{a} and {b} are on different grids: {da.width}x{da.height} "
                         f"vs {db.width}x{db.height} pixels")
    if da.crs != db.crs:
        raise InputError(f"{a} and {b} are on different grids: CRS {da.crs.to_string()} "
                         f"vs {db.crs.to_string()}")
    tol = 1e-6 * max(abs(da.transform.a), abs(da.transform.e))
    if not da.transform.almost_equals(db.transform, precision=tol):
        raise InputError(f"{a} and {b} are on different grids: the geotransforms differ "
                         f"({tuple(da.transform)[:6]} vs {tuple(db.transform)[:6]})")


def _bands_chosen(path: str, ds, bands: tuple[int, int], notes: list[str]
                  ) -> dict[str, BandSource]:
    """``--bands VV_INDEX,VH_INDEX`` (1-based): the user's choice, checked against the file."""
    given = f"--bands {bands[0]},{bands[1]}"
    for i in bands:
        if not 1 <= i <= ds.count:
            raise InputError(f"{path}: has {ds.count} band{'s' if ds.count > 1 else ''}; "
                             f"{given} names band {i} (bands are numbered from 1)")
    if bands[0] == bands[1]:
        raise InputError(f"{path}: {given} gives band {bands[0]} as both VV and VH")
    chosen = dict(zip(BAND_NAMES, bands))
    for name, i in chosen.items():
        text = ds.descriptions[i - 1] or ""
        said = band_name_in(text) or _one_named(_OTHER_POL_RE, text)
        if said and said != name:  # the user may know better (a mislabelled export): say it
            notes.append(f"{path}: band {i} is described as {said}, but {given} uses it as {name}")
    return {n: _source(path, ds, i, n, "--bands") for n, i in chosen.items()}


def open_inputs(paths: list[str], needed: tuple[str, ...] = BAND_NAMES,
                bands: tuple[int, int] | None = None) -> InputSet:
    """Open and check the inputs; name their bands. Raises InputError.

    ``bands`` (VV, VH), 1-based, chooses the bands of a single multi-band input
    instead of naming them from their descriptions.
    """
    if not 1 <= len(paths) <= 2:
        raise InputError(f"expected one 2-band raster or two single-band rasters, got "
                         f"{len(paths)} inputs")
    paths = [str(p) for p in paths]
    if bands is not None and len(paths) != 1:
        raise UsageError(f"--bands chooses the VV and VH bands of one multi-band input; with two "
                         f"inputs ({', '.join(paths)}) each file is one band: leave --bands out")
    datasets: dict[str, rasterio.io.DatasetReader] = {}
    notes: list[str] = []
    try:
        for p in paths:
            if p in datasets:
                raise InputError(f"{p}: given twice; give VV and VH as two different files")
            datasets[p] = open_raster(p)
        if len(paths) == 1 and bands is not None:
            named = _bands_chosen(paths[0], datasets[paths[0]], bands, notes)
        elif len(paths) == 1:
            p = paths[0]
            named = _bands_of_one(p, datasets[p], notes)
            if len(named) == 1 and set(needed) - set(named):
                raise InputError(f"{p}: has 1 band ({next(iter(named))}); the model needs "
                                 f"{', '.join(needed)}: give a 2-band raster or two "
                                 "single-band rasters")
        else:
            named = _bands_of_two(paths, datasets, notes)
        # the bands of one file have no order anyone chose; two files were given in an order
        # (VV, VH), kept, and find_units warns if it looks swapped
        if len(paths) == 1 and len(named) == 2 and all(s.named_by == "position"
                                                       for s in named.values()):
            named = _brighter_is_vv(named, datasets, notes)
    except BaseException:
        for ds in datasets.values():
            ds.close()
        raise
    for name, src in named.items():
        ds = datasets[src.path]
        scale, offset = band_scaling(ds, src.index)
        if (scale, offset) != (1.0, 0.0):
            notes.append(f"{src.path}: band {src.index} ({name}) is stored scaled: values are "
                         f"read as stored x {scale:g} + {offset:g} (its scale and offset)")
        if gdal_masked(ds, src.index):
            notes.append(f"{src.path}: band {src.index} ({name}) has a GDAL mask (internal "
                         "mask or alpha band): the pixels it masks are no data")
    grid = grid_of(datasets[paths[0]])
    return InputSet(paths, named, grid, datasets, notes)


def gdal_masked(ds, index: int) -> bool:
    """A GDAL mask (an internal mask, or an alpha band) marks the band's no data, rather
    than (or besides) a nodata value."""
    return bool({MaskFlags.per_dataset, MaskFlags.alpha} & set(ds.mask_flag_enums[index - 1]))


def band_scaling(ds, index: int) -> tuple[float, float]:
    """(scale, offset) of a band: value = stored x scale + offset (GDAL's convention,
    which QGIS follows when it shows the band); (1, 0) where the file sets none."""
    scale, offset = ds.scales[index - 1], ds.offsets[index - 1]
    return (1.0 if scale is None or scale == 0 else float(scale),
            0.0 if offset is None else float(offset))


def _bands_of_two(paths: list[str], datasets: dict, notes: list[str]) -> dict[str, BandSource]:
    for p in paths:
        if datasets[p].count != 1:
            raise InputError(f"{p}: has {datasets[p].count} bands; with two inputs each must "
                             "hold one band (VV, then VH)")
    a, b = paths
    _same_grid(a, datasets[a], b, datasets[b])
    named = []
    for p in paths:
        ds = datasets[p]
        by_desc = band_name_in(ds.descriptions[0] or "")
        by_file = band_name_in(os.path.basename(p))
        named.append((by_desc or by_file, "description" if by_desc else "file name"))
    (na, ha), (nb, hb) = named
    if not (na or nb):
        _refuse_hh_hv([(p, f"{datasets[p].descriptions[0] or ''} {os.path.basename(p)}")
                       for p in paths], f"{a} and {b}", "descriptions or file names")
    if na and na == nb:
        raise InputError(f"{a} and {b} are both {na}; expected one VV and one VH")
    if na or nb:
        first = na or ("VH" if nb == "VV" else "VV")
        order = (first, "VH" if first == "VV" else "VV")
        if order[0] == "VH":
            notes.append(f"{a} is VH and {b} is VV (from their {ha if na else hb}); using them so")
        hows = (ha if na else "position", hb if nb else "position")
    else:
        order, hows = BAND_NAMES, ("position", "position")
        notes.append(f"the inputs are not named VV/VH; taking {a} as VV and {b} as VH, the "
                     "order given")
    return {n: _source(p, datasets[p], 1, n, h) for p, n, h in zip(paths, order, hows)}


def _brighter_is_vv(named: dict[str, BandSource], datasets: dict, notes: list[str]
                    ) -> dict[str, BandSource]:
    """Two bands of one file that nothing names: the brighter is VV.

    Co-polarised backscatter exceeds cross-polarised over land and water alike (C band:
    VH some 5-10 dB below VV; the generator's constants in training/synth/sar.py give
    their sources), so taking a VH-first stack in file order would feed the model VH as
    VV. Medians keep their order in dB, power and amplitude, so the units need not be
    known yet; the pixels are the units sample's (25 windows).
    """
    first, second = named["VV"], named["VH"]
    ds = datasets[first.path]
    reader = WindowReader([(ds, s.index, s.nodata) for s in (first, second)], 0, 0)
    sample = sample_grid(reader, ds.height, ds.width)
    finite = [v[np.isfinite(v)] for v in sample]
    label = [f"band {first.index}", f"band {second.index}"]
    where = f"{first.path}: bands"
    if not all(v.size for v in finite):
        notes.append(f"{where} are not named VV/VH and have no valid pixel to tell them apart "
                     f"by: taking {label[0]} as VV and {label[1]} as VH")
        return named
    m = [float(np.median(v)) for v in finite]
    vv = 0 if m[0] >= m[1] else 1
    notes.append(f"{where} are not named VV/VH; {label[vv]} is the brighter (median "
                 f"{m[vv]:.4g} against {m[1 - vv]:.4g}), as co-polarised VV is: taking "
                 f"{label[vv]} as VV and {label[1 - vv]} as VH")
    pair = (first, second) if vv == 0 else (second, first)
    return {n: replace(s, name=n, named_by="brightness") for n, s in zip(BAND_NAMES, pair)}


def extent_window(grid: Grid, extent: tuple[float, float, float, float],
                  extent_crs: str | None, path: str) -> Window:
    """The input-grid window covering an extent, snapped outward to whole pixels."""
    xmin, ymin, xmax, ymax = extent
    given = _rounded(extent)
    if not (xmin < xmax and ymin < ymax):
        raise UsageError(f"extent {extent}: expected XMIN,YMIN,XMAX,YMAX with XMIN < XMAX "
                         "and YMIN < YMAX")
    if extent_crs:
        try:
            src = CRS.from_user_input(extent_crs)
        except Exception:  # rasterio raises CRSError, pyproj-style strings vary
            raise UsageError(f"extent CRS {extent_crs!r} is not a CRS rasterio "
                             "understands") from None
        if src != grid.crs:
            xmin, ymin, xmax, ymax = transform_bounds(src, grid.crs, xmin, ymin, xmax, ymax,
                                                      densify_pts=21)
            name = src.to_string()
            given = (f"{_rounded(extent)} (in {name if len(name) <= 40 else 'the given CRS'}; "
                     f"{_rounded((xmin, ymin, xmax, ymax))} in the raster's)")
    # the extent's corners in pixel coordinates: any axis-aligned grid, flipped ones too
    cols, rows = ~grid.transform @ (np.array([xmin, xmax]), np.array([ymax, ymin]))
    col0, row0 = math.floor(cols.min() + 1e-9), math.floor(rows.min() + 1e-9)
    col1, row1 = math.ceil(cols.max() - 1e-9), math.ceil(rows.max() - 1e-9)
    col0, row0 = max(col0, 0), max(row0, 0)
    col1, row1 = min(col1, grid.width), min(row1, grid.height)
    if col1 <= col0 or row1 <= row0:
        bounds = grid.bounds()  # XMIN,YMIN,XMAX,YMAX, like --extent
        raise InputError(f"{path}: the extent {given} does not overlap the raster "
                         f"(bounds {_rounded(bounds)} in {grid.crs.to_string()})")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _rounded(values) -> str:
    """Coordinates to 7 significant digits, never in exponent form (4038000, not 4.038e+06)."""
    return ",".join(np.format_float_positional(float(v), precision=7, unique=True,
                                               fractional=False, trim="-") for v in values)


# --------------------------------------------------------------------------- reading

def mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside [0, n) into it by mirror reflection (edge pixel repeated).

    Period 2n, so any index maps, even far outside a tiny raster.
    """
    m = np.mod(idx, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


class WindowReader:
    """Reads float32 windows of a processing grid from band sources, NaN for no data.

    Values equal to a band's nodata value become NaN; infinities are left as they
    are, and every consumer treats non-finite values as no data. A band stored with a
    scale and offset (:func:`band_scaling`) is read in its values, not as stored.

    ``sources`` are (dataset, band index, nodata) in model band order; the processing
    grid is the window (row_off, col_off, height, width) of those datasets. Windows
    may reach outside the processing grid: real pixels are read where the dataset
    has them, and mirror padding is used beyond the dataset's edges. The value at a
    grid position therefore never depends on how the grid is cut into windows.
    """

    def __init__(self, sources: list[tuple[object, int, float | None]], row_off: int,
                 col_off: int):
        self.sources = sources
        self.row_off, self.col_off = row_off, col_off
        ds0 = sources[0][0]
        self.src_height, self.src_width = ds0.height, ds0.width
        self._scaling = [band_scaling(ds, index) for ds, index, _ in sources]
        self._masked = [gdal_masked(ds, index) for ds, index, _ in sources]
        # bands of one dataset are read in one call
        self._groups: list[tuple[object, list[int], list[int]]] = []
        for pos, (ds, index, _) in enumerate(sources):
            for g in self._groups:
                if g[0] is ds:
                    g[1].append(index)
                    g[2].append(pos)
                    break
            else:
                self._groups.append((ds, [index], [pos]))

    def _read_box(self, out: np.ndarray, r0: int, c0: int) -> None:
        h, w = out.shape[1:]
        win = Window(c0, r0, w, h)
        for ds, indexes, positions in self._groups:
            try:
                if positions == list(range(len(self.sources))):
                    ds.read(indexes, window=win, out=out, out_dtype=np.float32)
                else:
                    out[positions] = ds.read(indexes, window=win, out_dtype=np.float32)
                for index, p in zip(indexes, positions):
                    if self._masked[p]:
                        out[p][ds.read_masks(index, window=win) == 0] = np.nan
            except RasterioError as exc:  # a truncated or corrupt file fails only here
                raise InputError(f"{ds.name}: cannot read rows {r0}-{r0 + h} "
                                 f"({first_line(exc, 'read error')})") from None

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Grid rows [r0, r1) and columns [c0, c1) as (bands, rows, cols) float32."""
        h, w = r1 - r0, c1 - c0
        sr0, sc0 = r0 + self.row_off, c0 + self.col_off
        out = np.empty((len(self.sources), h, w), np.float32)
        # the part inside the dataset is read in place; the rest mirrors it
        ir0, ir1 = max(sr0, 0), min(sr0 + h, self.src_height)
        ic0, ic1 = max(sc0, 0), min(sc0 + w, self.src_width)
        rows = mirror_index(np.arange(sr0, sr0 + h), self.src_height)
        cols = mirror_index(np.arange(sc0, sc0 + w), self.src_width)
        if (ir0 < ir1 and ic0 < ic1 and rows.min() >= ir0 and rows.max() < ir1
                and cols.min() >= ic0 and cols.max() < ic1):
            self._read_box(out[:, ir0 - sr0:ir1 - sr0, ic0 - sc0:ic1 - sc0], ir0, ic0)
            r_out = np.flatnonzero(np.arange(sr0, sr0 + h) != rows)
            c_out = np.flatnonzero(np.arange(sc0, sc0 + w) != cols)
            if r_out.size:
                out[:, r_out] = out[:, rows[r_out] - sr0]
            if c_out.size:
                out[:, :, c_out] = out[:, :, cols[c_out] - sc0]
        else:  # a raster smaller than the padding: gather from a box around it
            rlo, clo = int(rows.min()), int(cols.min())
            box = np.empty((len(self.sources), int(rows.max()) + 1 - rlo,
                            int(cols.max()) + 1 - clo), np.float32)
            self._read_box(box, rlo, clo)
            out[:] = box[:, (rows - rlo)[:, None], (cols - clo)[None, :]]
        for k, (_, _, nodata) in enumerate(self.sources):
            band = out[k]
            if nodata is not None and not math.isnan(nodata):  # the stored value
                band[band == np.float32(nodata)] = np.nan
            scale, offset = self._scaling[k]
            if scale != 1.0:
                band *= np.float32(scale)
            if offset != 0.0:
                band += np.float32(offset)
        return out


# --------------------------------------------------------------------------- outputs

def check_outputs(outputs: dict[str, str | None], inputs: list[str], overwrite: bool) -> None:
    """Refuse outputs that would clash or fail, before any work is done. Raises OutputError."""
    seen: dict[str, str] = {}
    in_real = {os.path.realpath(p): p for p in inputs}
    for kind, path in outputs.items():
        if not path:
            continue
        real = os.path.realpath(path)
        if real in in_real:
            raise OutputError(f"{path}: the {kind} output is also an input; choose another path")
        if real in seen:
            raise OutputError(f"{path}: given as both the {seen[real]} and the {kind} output")
        seen[real] = kind
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise OutputError(f"{path}: is a folder; give a file name for the {kind} output")
        if not os.path.isdir(folder):
            raise OutputError(f"{path}: the folder {folder} does not exist")
        if os.path.exists(path) and not overwrite:
            raise OutputError(f"{path}: exists; use --overwrite to replace it")
        try:  # os.access is no proof (root, read-only mounts): try it
            fd, probe = tempfile.mkstemp(prefix=".sarflood-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write in the folder {folder} "
                              f"({exc.strerror or exc})") from None


FULL_DISK_BYTES = 16 << 20   # a failed write with less free than this: the disk is full


STRIP_SAMPLE_BYTES = 64 << 20   # whole-row reads for the sample up to this size


def sample_grid(reader: WindowReader, grid_h: int, grid_w: int, n: int = 5,
                size: int = 128) -> np.ndarray:
    """Up to n x n windows of size x size spread over the grid: (bands, pixels).

    The default, 25 windows of 128 x 128 (409,600 pixels per band), is read and
    judged in about 20 ms on a tiled scene; 256 x 256 windows took about 55 ms,
    5% of a 4096 x 4096 run with the bundled model (2 cores).

    In a file stored in strips (blocks of whole rows, common for compressed
    GeoTIFFs) GDAL decodes the whole rows for each window, so each row of windows
    is read once, full width, and cut up: the same pixels, several times faster.
    """
    parts = []
    k = len(reader.sources)
    hs, ws = min(size, grid_h), min(size, grid_w)
    strips = (all(ds.block_shapes[i - 1][1] >= ds.width for ds, i, _ in reader.sources)
              and k * hs * grid_w * 4 <= STRIP_SAMPLE_BYTES)
    cols = np.unique(np.linspace(0, grid_w - ws, n).astype(int))
    for r in np.unique(np.linspace(0, grid_h - hs, n).astype(int)):
        row = reader.read(int(r), int(r) + hs, 0, grid_w) if strips else None
        for c in cols:
            window = (row[:, :, c:c + ws] if strips
                      else reader.read(int(r), int(r) + hs, int(c), int(c) + ws))
            parts.append(window.reshape(k, -1))
    return np.concatenate(parts, axis=1)


def temporary_path(folder: str, name: str) -> str:
    """A hidden file in ``folder`` for one being written: ``.<name>.<pid>-<hex>.sarflood-tmp``.

    A run removes its own on every error and on cancel; the process id lets whoever
    started a run that was killed (the plugin) find and remove what it left, and nothing
    of another run writing into the same folder.
    """
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.sarflood-tmp")


class GeoTiffOut:
    """One single-band output GeoTIFF: tiled, compressed (``options``), internal overviews.

    It is written to a hidden temporary file beside ``path``; :meth:`finish` builds
    the overviews, :meth:`publish` renames it into place, :meth:`abort` deletes it.
    """

    def __init__(self, path: str, grid: Grid, dtype: str, nodata: float | None, block: int,
                 tags: dict[str, str], description: str, overview_resampling: Resampling,
                 overwrite: bool, options: dict[str, object], scale: float | None = None):
        self.path = path
        self.overwrite = overwrite
        self.overview_resampling = overview_resampling
        folder, base = os.path.split(os.path.abspath(path))
        self.tmp = temporary_path(folder, base)
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1,
                       dtype=dtype, crs=grid.crs, transform=grid.transform, nodata=nodata,
                       tiled=True, blockxsize=block, blockysize=block, bigtiff="IF_SAFER",
                       **options)
        try:
            self.ds = rasterio.open(self.tmp, "w", **profile)
            self.ds.update_tags(**tags)
            self.ds.set_band_description(1, description)
            if scale is not None:
                self.ds.scales = (scale,)
        except (RasterioError, OSError) as exc:
            self._remove()
            raise OutputError(f"{path}: cannot be written ({exc})") from None

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        try:
            self.ds.write(data, 1, window=Window(col, row, data.shape[1], data.shape[0]))
        except (RasterioError, OSError) as exc:   # a full disk fails here
            raise OutputError(f"{self.path}: cannot be written "
                              f"({why_write_failed(exc, self.tmp)})") from None

    def finish(self) -> None:
        """Build the overviews and close the temporary file."""
        try:
            factors = overview_factors(self.ds.width, self.ds.height)
            if factors:
                self.ds.build_overviews(factors, self.overview_resampling)
                self.ds.update_tags(ns="rio_overview", resampling=self.overview_resampling.name)
            self.ds.close()
        except (RasterioError, OSError) as exc:
            self.abort()
            raise OutputError(f"{self.path}: cannot be written "
                              f"({why_write_failed(exc, self.tmp)})") from None

    def publish(self) -> None:
        """Rename the finished temporary file into place."""
        try:
            if os.path.exists(self.path) and not self.overwrite:
                raise OutputError(f"{self.path}: appeared while running; use --overwrite to "
                                  "replace it")
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise OutputError(f"{self.path}: cannot be written ({exc.strerror or exc})") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            if not self.ds.closed:
                self.ds.close()
        except Exception:  # closing a half-written file may fail; it is deleted next
            pass
        self._remove()

    def _remove(self) -> None:
        for p in (self.tmp, self.tmp + ".aux.xml"):
            if os.path.exists(p):
                os.unlink(p)


def why_write_failed(exc: BaseException, path: str) -> str:
    """One line on a failed write: GDAL's own cause (rasterio chains it), and whether the
    disk is full (GDAL says so only on stderr)."""
    text = first_line(exc.__cause__ or exc)
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        free = None
    if free is not None and free < FULL_DISK_BYTES:
        text += f"; the disk is full ({free / 1e6:.1f} MB free)"
    return text


def overview_factors(width: int, height: int, smallest: int = 128) -> list[int]:
    """2, 4, 8, ... until the overview's longer side is below ``smallest`` pixels."""
    factors, f = [], 2
    while max(width, height) / f >= smallest:
        factors.append(f)
        f *= 2
    return factors
