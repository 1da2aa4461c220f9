"""Checks and measures for water-mask rasters, shared by the mask-based algorithms."""
from __future__ import annotations

import math
import os

from qgis.core import (Qgis, QgsDistanceArea, QgsGeometry, QgsProcessingException, QgsProject,
                       QgsRasterLayer, QgsRectangle, QgsUnitTypes)

INTEGER_TYPES = (Qgis.DataType.Byte, Qgis.DataType.UInt16, Qgis.DataType.Int16,
                 Qgis.DataType.UInt32, Qgis.DataType.Int32)
# Areas need an ellipsoid; when the caller's context has none (qgis_process, scripts), use WGS 84.
DEFAULT_ELLIPSOID = "EPSG:7030"
MASK_SAMPLE = 1_000_000   # pixels read to check a mask's values (the whole of a small one)
# memoryview formats of the integer types, in the machine's byte order as QgsRasterBlock holds them
_FORMATS = {Qgis.DataType.Byte: "B", Qgis.DataType.UInt16: "H", Qgis.DataType.Int16: "h",
            Qgis.DataType.UInt32: "I", Qgis.DataType.Int32: "i"}


def check_mask_layer(layer: QgsRasterLayer | None, role: str, given=None) -> QgsRasterLayer:
    """A mask is one integer band (0 dry, 1 water, 255 no data) of a file with a CRS; say what
    is wrong otherwise.

    ``given``: the parameter's value, which names the file when it opened no layer (one
    deleted since it was chosen, as a run's mask the analyst removed from disk)."""
    if layer is None:
        raise QgsProcessingException(f"{role}: {unopened(given)}")
    if not layer.isValid():   # a map layer whose file went away (a copy of it: no layer is None)
        raise QgsProcessingException(f"{role} '{layer.name()}': {unopened(layer.source())}")
    check_file_crs(layer, role)
    if layer.bandCount() != 1:
        raise QgsProcessingException(f"{role} '{layer.name()}' has {layer.bandCount()} bands; "
                                     f"a water mask has one")
    if layer.dataProvider().dataType(1) not in INTEGER_TYPES:
        raise QgsProcessingException(
            f"{role} '{layer.name()}' holds non-integer values; it looks like a probability raster, "
            f"not a water mask (0 dry, 1 water): give the mask output")
    return layer


def check_file_crs(layer: QgsRasterLayer, role: str) -> None:
    """The algorithms hand the mask's file to GDAL and the backend, which read its CRS
    from the file: without one the polygons came out with no area and the water with no
    km², and a CRS set on the layer in QGIS (by hand, or as QGIS's default for layers
    without one) stays in QGIS. One set on the layer over the file's own split the
    algorithms: zonalwater placed the polygons by the layer's, the others by the file's."""
    in_file = layer.dataProvider().crs()
    if in_file.isValid() and layer.crs() != in_file:
        raise QgsProcessingException(
            f"{role} '{layer.name()}': its layer's CRS, {layer.crs().userFriendlyIdentifier()}, "
            f"is set in QGIS over its file's, {in_file.userFriendlyIdentifier()}, which GDAL and "
            f"the backend read; set the layer's CRS back to the file's, or write the right one "
            f"into the file (gdal_edit.py -a_srs EPSG:CODE) and load it again")
    if in_file.isValid():
        return
    set_in_qgis = (f" (its layer's, {layer.crs().userFriendlyIdentifier()}, is set in QGIS only, and "
                   f"GDAL and the backend read the file)" if layer.crs().isValid() else "")
    raise QgsProcessingException(
        f"{role} '{layer.name()}': its file {layer.source().split('|')[0]} has no CRS{set_in_qgis}; "
        f"write the right one into the file (Raster > Projections > Assign Projection, or "
        f"gdal_edit.py -a_srs EPSG:CODE)")


def unopened(given) -> str:
    """Why a raster parameter's value ``given`` opened no layer, naming it."""
    if not isinstance(given, str) or not given.strip():
        return "no raster layer given"
    path = given.split("|")[0]
    if not os.path.exists(path):
        return f"{path}: file not found"
    return f"{given}: cannot be opened as a raster layer"


def check_binary_mask(layer: QgsRasterLayer, role: str) -> None:
    """Values other than 0 and 1 (no data aside) mean another raster, such as a flood extent
    (2: water before and after) or a mask without its 255 declared as no data: counting
    them as water would be wrong. Checked on the pixels themselves: the whole of a small
    raster, an even grid of at most MASK_SAMPLE pixels of a large one (GDAL's cached
    statistics, a .aux.xml, may describe an earlier file written at the same path)."""
    provider = layer.dataProvider()
    values = sample_values(layer)
    if values and (max(values) > 1 or min(values) < 0):
        declared = (f"no data {provider.sourceNoDataValue(1):g}"
                    if provider.sourceHasNoDataValue(1) else "no no-data value declared")
        said = f"{role} '{layer.name()}' holds values from {min(values):g} to {max(values):g} ({declared})"
        if values <= {0, 1, 2}:
            # the table row's default boundaries are min < value <= max: 1 to 2 takes the 2s
            raise QgsProcessingException(
                f"{said}: it looks like a flood extent (floodextent's output: 0 not flooded, 1 newly "
                f"flooded, 2 water before and after), not a water mask (0 dry, 1 water); reclassify it "
                f"first with native:reclassifybytable (Reclassify by table), table row minimum 1, "
                f"maximum 2, value 0 to keep the newly flooded water only (zonalwater then gives the "
                f"flooded area per polygon) or value 1 for all water after the event, output no data "
                f"value 255, output data type Byte")
        raise QgsProcessingException(f"{said}; a water mask holds 0 (dry) and 1 (water), with 255 "
                                     f"declared as no data")


def check_nodata_in_file(layer: QgsRasterLayer, role: str, made_nodata=()) -> None:
    """For a mask whose file GDAL reads (floodextent's gdal steps, correctmask's backend),
    which knows only the file's no data: pixels of a no-data value set in QGIS only (Layer Properties >
    Transparency) would be taken there for dry land. ``made_nodata``: values the GDAL step
    makes no data itself."""
    ranges = layer.dataProvider().userNoDataValues(1)
    if not ranges:
        return
    hidden = sorted(v for v in sample_values(layer, in_qgis=False)
                    if v not in made_nodata and any(r.contains(v) for r in ranges))
    if hidden:
        raise QgsProcessingException(
            f"{role} '{layer.name()}': {', '.join(map(str, hidden))} is no data in QGIS only "
            f"(Layer Properties > Transparency), and GDAL reads the file, where those pixels "
            f"would be taken for dry land; write the no-data value into the file (gdal_edit.py "
            f"-a_nodata {hidden[0]} {layer.source().split('|')[0]}), or clear it in QGIS")


def sample_values(layer: QgsRasterLayer, in_qgis: bool = True) -> set[int]:
    """The distinct values, no data left out, of band 1 of an integer raster (as
    :func:`check_mask_layer` requires), read from at most about MASK_SAMPLE pixels.
    ``in_qgis``: the no data set in QGIS is left out too, not only the file's."""
    provider = layer.dataProvider()
    if not in_qgis and provider.userNoDataValues(1):
        # a block read through them holds the file's no data where they are: the file's own
        # values are read without them
        provider = provider.clone()
        provider.setUserNoDataValue(1, [])
    width, height = layer.width(), layer.height()
    step = max(1, math.ceil(math.sqrt(width * height / MASK_SAMPLE)))
    block = provider.block(1, layer.extent(), math.ceil(width / step), math.ceil(height / step))
    kind = _FORMATS.get(block.dataType())
    if kind is None or not block.isValid():
        raise QgsProcessingException(f"'{layer.name()}': its pixels cannot be read")
    values = set(memoryview(bytes(block.data())).cast(kind))
    if provider.sourceHasNoDataValue(1) and provider.useSourceNoDataValue(1):
        values.discard(provider.sourceNoDataValue(1))
    for excluded in provider.userNoDataValues(1):   # none left on the clone
        values = {v for v in values if not excluded.contains(v)}
    return values


def ellipsoid_of(context) -> str:
    ellipsoid = context.ellipsoid()
    return DEFAULT_ELLIPSOID if ellipsoid in ("", "NONE") else ellipsoid


def pixel_area_m2(layer: QgsRasterLayer, ellipsoid: str, at=None, transform_context=None) -> float:
    """Ellipsoidal area of one pixel of ``layer``, at point ``at`` (layer CRS) or the centre.

    ``transform_context``: the run's (its context's) on a worker thread, where the
    project's, read by default, may be changing.

    On a projected grid, the ground area of the pixel at that point (UTM's scale factor
    makes it up to about 0.1 % more than the nominal 10 x 10 m that the backend's areas, and
    the review dock's, count within 0.2 % of true areal scale, backend/grid.py
    AREA_TOLERANCE); on a geographic grid (EPSG:4326)
    pixel area shrinks with latitude, so a measure at one latitude is within about 1 % over
    100 km north-south at mid-latitudes.
    """
    centre = at if at is not None else layer.extent().center()
    dx, dy = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    pixel = QgsRectangle(centre.x() - dx / 2, centre.y() - dy / 2, centre.x() + dx / 2, centre.y() + dy / 2)
    measure = QgsDistanceArea()
    if transform_context is None:
        transform_context = QgsProject.instance().transformContext()
    measure.setSourceCrs(layer.crs(), transform_context)
    measure.setEllipsoid(ellipsoid)
    area = measure.measureArea(QgsGeometry.fromRect(pixel))
    return measure.convertAreaMeasurement(area, QgsUnitTypes.AreaUnit.AreaSquareMeters)
