"""An analyst's correction polygons, handed to the backend as GeoJSON.

The analyst draws polygons over the map where the mask is wrong, with a field that
says what each area is (``water``: 1 water, 0 dry). The backend (``correct``,
``finalize --corrections``) burns them into the mask; here they are only written out,
in their layer's CRS, which the file names the pre-RFC 7946 way (its ``crs`` member, as
GDAL writes it): the review dock's copy of the layer is in the mask's CRS already. Written
in longitude/latitude on WGS 84 instead, they went through two datum transforms, QGIS's
there and rasterio's back, which PROJ may pick differently (a pixel off on NAD27).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransformContext,
                       QgsDefaultValue, QgsEditorWidgetSetup, QgsFeature, QgsField, QgsProject,
                       QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from .outputs import hidden_path

FIELD = "water"
NAME = "Mask corrections"   # the layer's name in the legend
LAYER = "corrections"       # the table in a corrections GeoPackage
# a GeoJSON foreign member (RFC 7946, 6.1) telling the files this plugin wrote from the user's
_MARK = {"sarflood": "correction polygons written by SAR Flood Mapper"}
_WORDS = {"1": 1, "true": 1, "water": 1, "wet": 1, "0": 0, "false": 0, "dry": 0, "land": 0}


class CorrectionsProblem(ValueError):
    """The polygons cannot be used; the message names the layer and the feature."""


def _water(value, label: str, number: int, field: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    empty = value is None or (hasattr(value, "isNull") and value.isNull())   # NULL: a QVariant (None on QGIS 4)
    word = None if empty else _WORDS.get(str(value).strip().lower())
    if word is None:
        shown = f"no {field} value" if empty else f"{field} = {value!r}"
        raise CorrectionsProblem(f"{label}: feature {number} has {shown}; use 1 (water) or 0 (dry)")
    return word


def write_geojson(features: Iterable[QgsFeature], crs: QgsCoordinateReferenceSystem,
                  field: str, label: str, path: str) -> int:
    """Write the polygons with their water/dry value to GeoJSON at ``path``, in ``crs``
    (theirs), which the file names; their count."""
    if not crs.isValid():   # the backend would read the coordinates as longitude, latitude
        raise CorrectionsProblem(f"{label}: has no CRS; set the one its polygons were drawn in "
                                 "(Layer Properties > Source)")
    out = []
    # counted from 1 in drawing order: an unsaved feature's id is a negative internal number
    for number, feature in enumerate(features, start=1):
        if field not in feature.fields().names():
            raise CorrectionsProblem(f"{label}: has no field '{field}' (1 water, 0 dry)")
        geometry = feature.geometry()
        if geometry.isEmpty():
            continue   # an unfinished sketch: nothing to burn
        if geometry.type() != QgsWkbTypes.GeometryType.PolygonGeometry:
            raise CorrectionsProblem(f"{label}: feature {number} is not a polygon")
        water = _water(feature[field], label, number, field)
        # the id: its number in the layer, which the backend's messages give
        out.append({"type": "Feature", "id": number, "properties": {"water": water},
                    "geometry": json.loads(geometry.asJson(9))})
    # a file the user keeps is replaced whole or not at all; a killed run's hidden file is
    # removed by the next run to the same path (outputs.remove_stale)
    partial = hidden_path(path)
    try:
        with open(partial, "w", encoding="utf-8") as f:
            json.dump({"type": "FeatureCollection", "name": label, **_MARK,
                       "crs": _crs_member(crs), "features": out}, f)
        os.replace(partial, path)
    except OSError as exc:   # said as the backend says it of its outputs, without the .part name
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CorrectionsProblem(f"{path}: the folder {folder} does not exist") from None
        raise CorrectionsProblem(f"{path}: cannot write in the folder {folder} "
                                 f"({exc.strerror or exc})") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return len(out)


def _crs_member(crs: QgsCoordinateReferenceSystem) -> dict:
    """The GeoJSON ``crs`` member naming ``crs``: its EPSG (or other PROJ authority) code, or
    its WKT where it has none (a user-defined CRS)."""
    code = crs.authid()
    name = code if code and not code.startswith("USER:") else crs.toWkt()
    return {"type": "name", "properties": {"name": name}}


def written_by_plugin(path: str) -> bool:
    """Whether ``path`` is a corrections file :func:`write_geojson` wrote (and may replace)."""
    try:
        if os.path.getsize(path) > 100_000_000:   # not read whole to find out
            return False
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and all(doc.get(k) == v for k, v in _MARK.items())


def sidecar_path(mask: str, given: str | None) -> tuple[Path, bool, str | None]:
    """Where the polygons burnt into ``mask`` are kept: ``<mask>.corrections.geojson``, or
    the first of ``-2``, ``-3``... that is free or replaceable; whether a file there is
    replaced; and a note when the first name is kept. A file is replaced only when this
    plugin wrote it, never when it is the polygons given (``given``, their file) or the
    user's own."""
    first = Path(mask).with_suffix(".corrections.geojson")
    path, number, note = first, 1, None
    while path.exists():
        same = given is not None and os.path.realpath(given) == os.path.realpath(path)
        if not same and written_by_plugin(str(path)):
            return path, True, note
        if path == first:
            why = "the correction polygons given" if same else "a file this plugin did not write"
            note = f"{path} is {why}: it is kept"
        number += 1
        path = first.with_name(f"{Path(mask).stem}.corrections-{number}.geojson")
    return path, False, note


def new_corrections_layer(crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """An empty polygon layer with the ``water`` field, ready to draw corrections in."""
    layer = QgsVectorLayer("Polygon", NAME, "memory")
    layer.setCrs(crs)   # any CRS, one without an authority code too
    # QVariant, not QMetaType: QgsField takes a QMetaType from QGIS 3.38 on; QGIS 4's qgis.PyQt maps QVariant.Int
    layer.dataProvider().addAttributes([QgsField(FIELD, QVariant.Int)])
    layer.updateFields()
    _set_up(layer)
    return layer


def _set_up(layer: QgsVectorLayer) -> None:
    """What a corrections layer is drawn with (kept in the project with a file's layer)."""
    # a polygon drawn without filling the form is water, the commoner correction (not NULL)
    layer.setDefaultValueDefinition(layer.fields().indexOf(FIELD), QgsDefaultValue("1"))
    fid = layer.fields().indexOf("fid")   # a GeoPackage's own feature id: not the analyst's to fill
    if fid >= 0:
        layer.setEditorWidgetSetup(fid, QgsEditorWidgetSetup("Hidden", {}))


def new_corrections_file(path: str, crs: QgsCoordinateReferenceSystem,
                         transform_context: QgsCoordinateTransformContext | None = None) -> QgsVectorLayer:
    """:func:`new_corrections_layer` as a new GeoPackage at ``path`` (whose polygons the
    project keeps, as it does not a memory layer's); :class:`CorrectionsProblem` says why
    it cannot be written."""
    if os.path.exists(path):   # never replaces a file: the caller picks a free name
        raise CorrectionsProblem(f"{path}: exists already")
    if transform_context is None:
        transform_context = QgsProject.instance().transformContext()
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = LAYER
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        new_corrections_layer(crs), path, transform_context, options)
    layer = QgsVectorLayer(f"{path}|layername={LAYER}", NAME, "ogr")
    if error != QgsVectorFileWriter.WriterError.NoError or not layer.isValid():
        if os.path.exists(path):
            os.remove(path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CorrectionsProblem(f"{path}: the folder {folder} does not exist")
        raise CorrectionsProblem(f"{path}: cannot write in the folder {folder}"
                                 + (f" ({message})" if message else ""))
    _set_up(layer)
    return layer
