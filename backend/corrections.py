"""An analyst's corrections to a water mask: polygons that set pixels to water or dry.

A corrections file is GeoJSON (RFC 7946: longitude and latitude on WGS 84, or the CRS
a pre-RFC ``crs`` member names): a FeatureCollection of Polygon or MultiPolygon
features, each with the property ``water``: true or 1 marks its pixels water, false
or 0 dry. A pixel is corrected
when its centre lies inside a polygon (GDAL's rasterize rule); where polygons
overlap, the later one in the file wins (the plugin writes them in the order they
were drawn). No-data pixels stay no data: nothing was observed
there to correct.

``python -m backend correct MASK --corrections FILE --out OUT.tif`` applies them to
a mask on disk; ``finalize --corrections FILE`` applies them to the mask it writes.
Either way the blocks are corrected as they stream, so memory stays bounded. ``correct``
refuses a probability or uncertainty that ``predict`` wrote (its SARFLOOD_OUTPUT tag):
finalize it into a mask first.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.features import bounds as geometry_bounds, rasterize
from rasterio.transform import Affine
from rasterio.warp import transform_geom
from rasterio.windows import Window

from .errors import InputError, first_line
from .grid import grid_of
from .inputs import open_mask
from .progress import Reporter
from .raster_io import check_outputs, gdal_env, unreadable_rows
from .sink import MASK_NODATA, OutputSink, fill_sink, utc_stamp

BLOCK = 512
_POLYGONS = ("Polygon", "MultiPolygon")
_UNBURNT = 254   # not a mask code: where no polygon lies


@dataclass
class Corrections:
    """Polygons in a raster's CRS, each with the value it sets (0 dry, 1 water)."""
    path: str
    shapes: list[tuple[dict, int]]
    bounds: list[tuple[float, float, float, float]]   # of each shape: xmin, ymin, xmax, ymax
    nodata_left: int = 0   # pixels under the polygons that were no data, and stay so

    def describe(self) -> str:
        water = sum(v for _, v in self.shapes)
        return (f"{len(self.shapes)} polygons ({water} water, {len(self.shapes) - water} dry) "
                f"from {os.path.abspath(self.path)}")

    def apply(self, mask: np.ndarray, transform: Affine) -> int:
        """Correct a block (uint8 mask codes) in place, ``transform`` its own; pixels changed.
        The no-data pixels under the polygons, left as they are, add to ``nodata_left``."""
        h, w = mask.shape
        left, top = transform @ (0, 0)
        right, bottom = transform @ (w, h)
        block = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        here = [s for s, box in zip(self.shapes, self.bounds) if _overlap(box, block)]
        if not here:
            return 0
        burnt = rasterize(here, out_shape=(h, w), transform=transform, fill=_UNBURNT,
                          dtype="uint8")
        under = burnt != _UNBURNT
        nodata = mask == MASK_NODATA
        self.nodata_left += int(np.count_nonzero(under & nodata))
        change = under & ~nodata & (burnt != mask)
        mask[change] = burnt[change]
        return int(np.count_nonzero(change))

    def warn_nodata_left(self, reporter: Reporter) -> None:
        """Once every block is corrected: corrections over no data changed nothing there,
        which is said rather than left to a silent count."""
        if self.nodata_left:
            reporter.warning(f"{self.nodata_left} pixels under the corrections are no data and "
                             "were left so (nothing was observed there to correct)")


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (xmin, ymin, xmax, ymax) boxes meet."""
    return a[0] <= b[2] and a[2] >= b[0] and a[1] <= b[3] and a[3] >= b[1]


def _value(props: dict | None, where: str) -> int:
    if props is not None and not isinstance(props, dict):
        raise InputError(f"{where}: its properties are not a JSON object")
    value = (props or {}).get("water")
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    raise InputError(f"{where}: property 'water' is {value!r}; expected true or 1 (water), "
                     "false or 0 (dry)")


def _declared_crs(doc: dict, path: str):
    """WGS 84 (RFC 7946), unless the file names another CRS the pre-RFC way, as GDAL and
    QGIS write GeoJSON in a projected CRS: ``"crs": {"properties": {"name": ...}}``."""
    crs = doc.get("crs")
    if crs is None:
        return "EPSG:4326"
    name = crs.get("properties") if isinstance(crs, dict) else None
    name = name.get("name") if isinstance(name, dict) else None
    if not isinstance(name, str) or not name:
        raise InputError(f'{path}: its crs member is not of the form {{"type": "name", '
                         f'"properties": {{"name": "EPSG:..."}}}}; remove it for longitude, latitude')
    try:
        return CRS.from_user_input(name)
    except CRSError:
        raise InputError(f"{path}: its crs {name!r} is not a CRS rasterio understands") from None


def load_corrections(path: str, grid, reporter: Reporter) -> Corrections:
    """Read a corrections file and bring its polygons into the grid's CRS; warn about those
    that lie off the grid. Raises InputError."""
    try:
        with open(path, encoding="utf-8-sig") as f:   # a byte-order mark, as Notepad writes, too
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a GeoJSON file ({first_line(exc, 'unreadable')})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise InputError(f"{path}: expected a GeoJSON FeatureCollection of polygons")
    source = _declared_crs(doc, path)
    features = doc.get("features") or []
    if not isinstance(features, list):
        raise InputError(f"{path}: its features member is not an array")
    # the layer the file was written from, by the name it has there (GDAL's name member)
    name = doc.get("name")
    label = f"{name} ({path})" if isinstance(name, str) and name else path
    shapes, bounds, numbers = [], [], []
    for i, feature in enumerate(features, start=1):
        if not isinstance(feature, dict):
            raise InputError(f"{label}: feature {i} is not a GeoJSON object")
        number = _number(feature, i)
        where = f"{label}: feature {number}"
        geometry = feature.get("geometry") or {}
        if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGONS:
            kind = geometry.get("type") if isinstance(geometry, dict) else None
            raise InputError(f"{where} is a {kind or 'feature without a GeoJSON geometry'}; "
                             "corrections are polygons")
        value = _value(feature.get("properties"), where)
        if not _has_area(geometry, where):
            reporter.warning(f"{where}: its polygon has no area, and corrects nothing")
            continue
        try:
            _check_degrees(geometry, source, where)
            local = transform_geom(source, grid.crs, geometry)
            shapes.append((local, value))
            bounds.append(geometry_bounds(local))
            numbers.append(number)
        except InputError:
            raise
        except Exception as exc:  # PROJ's failures come as rasterio's private CPLE_* classes
            raise InputError(f"{where}: not a valid polygon in {_crs_name(source)} "
                             f"({first_line(exc, 'bad coordinates')})") from None
    on_grid = grid.bounds()
    off = [n for n, box in zip(numbers, bounds) if not _overlap(box, on_grid)]
    if off:
        shown = ", ".join(str(n) for n in off[:10]) + (", ..." if len(off) > 10 else "")
        # read as longitude, latitude for want of a crs member: perhaps they are not
        hint = f"; their coordinates are read in {_crs_name(source)}" if "crs" not in doc else ""
        reporter.warning(f"{label}: {len(off)} of {len(shapes)} polygons lie outside the mask "
                         f"and correct nothing (feature{'s' if len(off) > 1 else ''} {shown}"
                         f"{hint})")
    return Corrections(path, shapes, bounds)


def _number(feature: dict, i: int) -> int:
    """A feature's number as the analyst knows it: its ``id`` (the plugin writes its place
    in the layer, which skipped empty sketches would shift), else its place in the file."""
    number = feature.get("id")
    return number if isinstance(number, int) and not isinstance(number, bool) else i


def _has_area(geometry: dict, where: str) -> bool:
    """Whether a Polygon or MultiPolygon encloses any area; InputError if its coordinates are
    not rings of number positions (strings there crashed GDAL)."""
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if geometry["type"] == "Polygon" else coordinates
    if not isinstance(polygons, list) or not all(isinstance(p, list) for p in polygons):
        raise InputError(f"{where}: its coordinates are not a {geometry['type']}'s arrays")
    area = 0.0
    for polygon in polygons:
        for k, ring in enumerate(polygon):
            if not isinstance(ring, list) or len(ring) < 4 or not all(_position(p) for p in ring):
                raise InputError(f"{where}: its coordinates are not rings of four or more "
                                 "[x, y] number positions (RFC 7946)")
            if k == 0:   # the outer ring (shoelace); holes never make a polygon of no area
                x, y = np.array([p[0] for p in ring]), np.array([p[1] for p in ring])
                area += abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))
    return area > 0


def _position(p) -> bool:
    return isinstance(p, list) and len(p) >= 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in p)


def _check_degrees(geometry: dict, source, where: str) -> None:
    """InputError for longitudes/latitudes out of range: metres in a file that says (or,
    saying nothing, is taken to be) WGS 84, as a layer whose CRS was lost writes them."""
    if not CRS.from_user_input(source).is_geographic:
        return
    west, south, east, north = geometry_bounds(geometry)
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise InputError(f"{where}: coordinates ({west:.6g}, {south:.6g}, {east:.6g}, "
                         f"{north:.6g}) lie outside longitude -180..180 and latitude -90..90, "
                         f"as {_crs_name(source)} wants: are the polygons in a projected CRS "
                         f"that the file does not name? (check the layer's CRS)")


def _crs_name(crs) -> str:
    return ("longitude, latitude on WGS 84" if crs == "EPSG:4326"
            else f"the file's crs, {crs.to_string()}")


def correct_mask(mask: str, corrections: str, out: str, overwrite: bool = False,
                 reporter: Reporter | None = None, cancel: threading.Event | None = None,
                 compress: str = "zstd") -> dict:
    """Write ``out``: the mask with the corrections burnt in, its tags kept, areas counted."""
    started = time.perf_counter()
    reporter = reporter or Reporter()
    cancel = cancel or threading.Event()
    with gdal_env():
        with open_mask(mask) as src:
            check_outputs({"mask": out}, [mask], overwrite)
            grid = grid_of(src)
            fixes = load_corrections(corrections, grid, reporter)
            tags = {k: v for k, v in src.tags().items() if k.startswith("SARFLOOD_")}
            tags.update(SARFLOOD_CORRECTIONS=fixes.describe(), SARFLOOD_CORRECTED=utc_stamp())
            sink = OutputSink(grid, BLOCK, None, tags, overwrite, mask=out, compress=compress)
            changed = 0
            # another tool's mask may mark no data otherwise: it stays no data, written as ours
            other_nodata = src.nodata if src.nodata not in (None, MASK_NODATA) else None
            if other_nodata is not None:
                reporter.info(f"{mask}: its no-data value {other_nodata:g} is written as "
                              f"{MASK_NODATA}, as SAR Flood Mapper's masks mark no data")

            def read(win: Window) -> dict:
                nonlocal changed
                try:
                    block = src.read(1, window=win)
                except RasterioError as exc:
                    raise unreadable_rows(mask, win.row_off, win.row_off + win.height,
                                          exc) from None
                if other_nodata is not None:
                    block[block == other_nodata] = MASK_NODATA
                changed += fixes.apply(block, src.window_transform(win))
                return {"mask": block}
            fill_sink(sink, BLOCK, read, reporter, cancel, "correct")
    fixes.warn_nodata_left(reporter)
    return {"outputs": {"mask": out}, "corrections": tags["SARFLOOD_CORRECTIONS"],
            "corrected_pixels": changed, "nodata_pixels_left": fixes.nodata_left,
            "width": grid.width, "height": grid.height,
            **sink.stats.fields(), "seconds": round(time.perf_counter() - started, 3)}
