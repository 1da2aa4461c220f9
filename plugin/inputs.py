"""Turn QGIS raster layers into the backend's scene input, or say exactly what is wrong.

Shared by the run dialog and the Processing algorithms, so both refuse the same
inputs with the same words. Checks here are about layers (file, band count,
band names); checks about pixel values (units, no valid pixels) are the backend's.
"""
from __future__ import annotations

import os

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsCsException,
                       QgsPointXY, QgsProject, QgsRasterLayer)

from .bands import guess_bands
from .params import SceneInput, is_gdal_name


class InputProblem(ValueError):
    """A layer cannot be used as Sentinel-1 input; the message names it."""


def layer_file(layer: QgsRasterLayer, role: str) -> str:
    """The file behind a layer: the backend reads files and GDAL dataset names
    (/vsizip/ paths, NetCDF subdatasets), not QGIS layers."""
    path = layer.source().split("|")[0]
    if path.startswith("/vsimem/"):   # QGIS's own memory: the backend child cannot see it
        raise InputProblem(f"{role} layer '{layer.name()}' lies in QGIS's memory ({path}), "
                           f"which the backend, another process, cannot read; save it as a "
                           f"GeoTIFF first (Export > Save As)")
    if layer.providerType() == "gdal" and not is_gdal_name(path) and not os.path.exists(path):
        raise InputProblem(f"{role} layer '{layer.name()}': its file no longer exists: {path} "
                           f"(moved, renamed or deleted?)")
    if not layer.isValid():   # a corrupt file, or an unavailable layer a project kept
        raise InputProblem(f"{role} layer '{layer.name()}' cannot be read as a raster: {path} is "
                           f"not a file GDAL can open")
    readable = os.path.isfile(path) or is_gdal_name(path)
    if layer.providerType() != "gdal" or not readable:
        raise InputProblem(f"{role} layer '{layer.name()}' is not a raster file the backend can read "
                           f"(source: {layer.source()}); save it as a GeoTIFF first (Export > Save As)")
    file_crs = layer.dataProvider().crs()
    if not _same_crs(layer, file_crs):
        # the backend reads the file: the map would land where the file's CRS puts it
        said = f"says {file_crs.userFriendlyIdentifier()}" if file_crs.isValid() else "has none"
        raise InputProblem(f"{role} layer '{layer.name()}': its CRS was set in QGIS to "
                           f"{layer.crs().userFriendlyIdentifier()}, but its file {said}, and the "
                           f"backend reads the file; write the CRS into it (Raster > Projections > "
                           f"Assign Projection) or save a copy with it (Export > Save As)")
    return path


def crs_for_backend(crs: QgsCoordinateReferenceSystem) -> str:
    """How the backend is told a CRS: its authority id (EPSG:3857), or its WKT for one that
    only QGIS knows by id: a custom CRS (Settings > Custom Projections) is USER:n, which
    no other software can look up, and the run failed on it."""
    ident = crs.authid()
    if ident and not ident.upper().startswith("USER:"):
        return ident
    return crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED)


def _same_crs(layer: QgsRasterLayer, file_crs: QgsCoordinateReferenceSystem) -> bool:
    """Whether the file's CRS puts the layer's pixels where the layer's CRS does: equal, or
    the same in other words (a project written by another QGIS or PROJ keeps a layer's
    CRS in its own words), so that the layer's corners move by under 1% of a pixel."""
    crs = layer.crs()
    if crs == file_crs:
        return True
    if not (crs.isValid() and file_crs.isValid()):
        return False
    move = QgsCoordinateTransform(file_crs, crs, QgsProject.instance())
    e, tolerance = layer.extent(), 0.01 * layer.rasterUnitsPerPixelX()
    try:
        return all(move.transform(QgsPointXY(x, y)).distance(QgsPointXY(x, y)) < tolerance
                   for x in (e.xMinimum(), e.xMaximum()) for y in (e.yMinimum(), e.yMaximum()))
    except QgsCsException:   # not even defined at the layer's corners: not the same
        return False


def is_sarflood_output(layer: QgsRasterLayer) -> bool:
    """Whether the layer's file is a mask, probability or uncertainty this plugin's backend
    wrote (its SARFLOOD_OUTPUT tag, which QGIS lists among the GDAL metadata)."""
    return layer.providerType() == "gdal" and "SARFLOOD_OUTPUT=" in layer.htmlMetadata()


def band_names(layer: QgsRasterLayer) -> list[str]:
    return [layer.bandName(i) for i in range(1, layer.bandCount() + 1)]


def user_nodata(layers: list[QgsRasterLayer]) -> float | None:
    """The no-data value set on the layers in QGIS (Properties > Transparency: Additional
    no data value), which the backend, reading the files, would not know; None if none.
    The backend takes one value for every band: several, or a range, are refused."""
    values = set()
    for layer in layers:
        provider = layer.dataProvider()
        for band in range(1, layer.bandCount() + 1):
            for limits in provider.userNoDataValues(band):
                if limits.min() != limits.max():
                    raise InputProblem(f"layer '{layer.name()}': its no-data range {limits.min():g} "
                                       f"to {limits.max():g} (set in QGIS) cannot be passed on: the "
                                       f"backend takes one no-data value; set one, or none")
                values.add(limits.min())
    if len(values) > 1:
        listed = ", ".join(f"{v:g}" for v in sorted(values))
        raise InputProblem(f"{', '.join(repr(layer.name()) for layer in layers)}: no-data values "
                           f"{listed} are set in QGIS; the backend takes one for every band: keep one")
    return values.pop() if values else None


def scene_from_stack(layer: QgsRasterLayer | None, bands: tuple[int, int] | None = None,
                     needs_vh: bool = True) -> SceneInput:
    """One multi-band layer; ``bands`` (VV, VH), 1-based, or None to guess from band names.

    Chosen bands go to the backend as ``--bands``, so it reads exactly those, whatever
    the band descriptions say; without a choice the backend names them itself. Where
    VV alone is read (``needs_vh`` False: a VV-only model, Otsu), a single-band layer
    goes to the backend, which names its band and holds it against what it reads.
    """
    if layer is None:
        raise InputProblem("Sentinel-1 input: no raster layer chosen")
    path = layer_file(layer, "Sentinel-1 input")
    if layer.bandCount() < 2 and not needs_vh:
        return SceneInput(path, nodata=user_nodata([layer]))
    if layer.bandCount() < 2:
        raise InputProblem(f"Sentinel-1 input '{layer.name()}' has {layer.bandCount()} band; the model "
                           f"needs VV and VH: give a 2-band VV/VH stack, or separate VV and VH layers")
    if bands is None:
        # two unnamed bands: the backend takes the brighter as VV
        if guess_bands(band_names(layer)) is None and layer.bandCount() != 2:
            raise InputProblem(f"Sentinel-1 input '{layer.name()}': cannot tell VV from VH by band names "
                               f"({', '.join(band_names(layer))}); choose the VV and VH bands")
        return SceneInput(path, nodata=user_nodata([layer]))
    for band in bands:
        if not 1 <= band <= layer.bandCount():
            raise InputProblem(f"Sentinel-1 input '{layer.name()}' has no band {band}")
    if bands[0] == bands[1]:
        raise InputProblem(f"Sentinel-1 input '{layer.name()}': VV and VH are both band {bands[0]}")
    return SceneInput(path, bands=tuple(bands), nodata=user_nodata([layer]))


def scene_from_pair(vv: QgsRasterLayer | None, vh: QgsRasterLayer | None,
                    needs_vh: bool = True) -> SceneInput:
    """A single-band VV layer and a single-band VH layer; the VV layer alone where VV
    alone is read (``needs_vh`` False)."""
    if vv is None or (vh is None and needs_vh):
        raise InputProblem("Separate VV and VH input: choose both a VV and a VH layer")
    if vh is not None and vv.id() == vh.id():
        raise InputProblem(f"Separate VV and VH input: '{vv.name()}' is chosen as both VV and VH")
    chosen = [(layer, role) for layer, role in ((vv, "VV"), (vh, "VH")) if layer is not None]
    files = [layer_file(layer, role) for layer, role in chosen]
    for layer, role in chosen:
        if layer.bandCount() != 1:
            raise InputProblem(f"{role} layer '{layer.name()}' has {layer.bandCount()} bands; with "
                               f"separate VV and VH layers each must have exactly one band")
    return SceneInput(*files, nodata=user_nodata([layer for layer, _ in chosen]))
