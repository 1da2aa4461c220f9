"""sarflood:zonalwater: water statistics per polygon (admin areas, catchments...).

native:zonalstatisticsfb counts valid and water pixels of the mask in each polygon;
this algorithm turns the counts into water share and km² per polygon. A pixel's ground
area changes from row to row of a geographic (EPSG:4326) or Web Mercator mask, so each
polygon is cut, in the mask's CRS, at the edges of strips of pixel rows over which that
area varies by less than STRIP_SPREAD, and each piece's water is measured at its own rows.
On a projected grid near true scale the mask is one strip and the polygons stay whole.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from contextlib import nullcontext

from qgis.core import (QgsFeature, QgsFeatureRequest, QgsFeatureSink, QgsField, QgsFields, QgsGeometry,
                       QgsMemoryProviderUtils, QgsPointXY, QgsProcessing, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterRasterLayer,
                       QgsProcessingUtils, QgsRectangle, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from ..outputs import is_plain_file, written_beside
from .base import (SarFloodAlgorithm, check_polygons, frees_inputs, source_file,
                   unchecked_features, unchecked_input)
from .masks import check_binary_mask, check_mask_layer, ellipsoid_of, pixel_area_m2
from .steps import Steps, free_layers

_PREFIX = "sfz_"
# QVariant, not QMetaType: QgsField takes a QMetaType from QGIS 3.38 on; QGIS 4's qgis.PyQt maps QVariant.Double
NEW_FIELDS = (("valid_px", QVariant.Double), ("water_px", QVariant.Double),
              ("water_frac", QVariant.Double), ("water_km2", QVariant.Double))
# most and least pixel area within one strip differ by at most this share: the backend's
# AREA_TOLERANCE (backend/grid.py); measured at a strip's middle, a pixel is within half of it
STRIP_SPREAD = 0.002


class ZonalWaterAlgorithm(SarFloodAlgorithm):
    ID = "zonalwater"
    TITLE = "Water statistics per polygon"
    GROUP_ID = "analysis"
    HELP = ("For each polygon (for example admin areas): valid_px, the mask pixels with data; "
            "water_px, the water pixels; water_frac, their share of the valid pixels; water_km2, "
            "the water area, each pixel at its own ground area on the ellipsoid: on a mask whose "
            "pixel area changes from row to row (EPSG:4326, Web Mercator) the polygons are cut "
            "at pixel-row edges into strips over which it varies by under 0.2 %, and each "
            "strip's pixels are measured at its middle.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFeatureSource(
            "POLYGONS", "Polygons", [QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterRasterLayer("MASK", "Water mask"))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", "Water per polygon", QgsProcessing.SourceType.TypeVectorPolygon))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 (QGIS's name)
        # the polygons' own file, before prepareAlgorithm swaps a project layer for a copy
        self._polygons_file = source_file(parameters.get("POLYGONS"), context)
        return super().prepareAlgorithm(parameters, context, feedback)

    @frees_inputs
    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        mask = check_mask_layer(self.parameterAsRasterLayer(parameters, "MASK", context), "Water mask",
                                parameters.get("MASK"))
        check_binary_mask(mask, "Water mask")   # water_px is the sum of its values
        source = self.parameterAsSource(parameters, "POLYGONS", context)
        if source is None:
            raise QgsProcessingException("Polygons: no polygon layer given")
        check_polygons(source, "Polygons")
        # asked of a context of its own first: for a memory layer, the run's context would be
        # told to load a layer that parameterAsSink makes under another name
        destination = self.parameterAsOutputLayer(parameters, "OUTPUT", QgsProcessingContext())
        to_file = is_plain_file(destination)
        if to_file:
            destination = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        self.check_destination(destination, "OUTPUT", [getattr(self, "_polygons_file", None), mask],
                               feedback, raster=False)
        # the polygons may hold these fields already (a layer this algorithm wrote), in any
        # case: they are replaced, since QgsFields.append silently refuses a second field of
        # a name, a GeoPackage a second column, and a shapefile renames the new one
        ours = {name for name, _ in NEW_FIELDS}
        if to_file and destination.lower().endswith(".gpkg") and unusable_fid(source):
            ours.add("fid")
            feedback.pushInfo("the polygons' field fid holds no distinct whole numbers (as after "
                              "Merge vector layers); the GeoPackage gives the features ids of its own")
        kept = [f for f in source.fields() if f.name().lower() not in ours]
        fields = QgsFields()
        for field in kept:
            fields.append(field)
        for name, kind in NEW_FIELDS:
            fields.append(QgsField(name, kind))
        # one progress over the steps: each restarted the caller's at 0 (backwards in batch mode)
        with Steps(4, context, feedback, self.step_files()) as steps:
            totals = self.water_per_polygon(source, mask, context, steps)
            feedback.setProgressText("water share and area per polygon")
            # a file is written beside the destination and renamed into place at the end: a
            # cancelled, failed or killed run leaves the file that was there
            with written_beside(destination) if to_file else nullcontext() as target:
                if to_file:
                    sink, dest = QgsProcessingUtils.createFeatureSink(target, context, fields, source.wkbType(),
                                                                      source.sourceCrs())
                else:
                    sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, fields, source.wkbType(),
                                                      source.sourceCrs())
                try:
                    self.write_features(sink, source, totals, fields, kept, destination, steps.at(3))
                finally:
                    del sink   # closes the file before it is moved or removed
        if to_file:
            self.reload_output(context, destination)
        return {"OUTPUT": destination if to_file else dest}

    def water_per_polygon(self, source, mask, context, steps: Steps) -> dict[int, tuple[float, float, float]]:
        """valid_px, water_px and water km² of each polygon of ``source`` with pixels, by
        feature id: steps 0 to 2 of ``steps``."""
        pieces = cut_polygons(source, MaskRows(mask, ellipsoid_of(context), context.transformContext()),
                              context, steps.at(0))
        counts = self.count("counting pixels per polygon", pieces.layer(), mask, context, steps.at(1))
        doubtful = pieces.doubtful(counts)
        recounted = self.count(f"counting the pixels of {len(doubtful)} polygon(s) whole",
                               pieces.whole_layer(doubtful), mask, context, steps.at(2)) if doubtful else {}
        return pieces.totals(counts, recounted)

    def count(self, label, layer, mask, context, feedback) -> dict[int, tuple[float, float]]:
        """The valid and water pixels of each feature of ``layer``, by its key. QGIS counts
        the pixels of an invalid polygon as of any other: it is read unchecked."""
        layer_id = layer.id()
        try:
            zonal = self.run_child(label, "native:zonalstatisticsfb", {
                "INPUT": unchecked_input(layer, context), "INPUT_RASTER": mask, "RASTER_BAND": 1,
                "COLUMN_PREFIX": _PREFIX, "STATISTICS": [0, 1], "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT},
                context, feedback)["OUTPUT"]
        finally:   # its polygons' memory, now if on the main thread (see free_layers)
            free_layers(context, lambda held: held.id() == layer_id)
        if feedback.isCanceled():  # the child stops early and returns what it had counted
            raise QgsProcessingException("cancelled: the statistics are incomplete")
        counted = QgsProcessingUtils.mapLayerFromString(zonal, context)
        return {f["key"]: (float(f[f"{_PREFIX}count"] or 0), float(f[f"{_PREFIX}sum"] or 0))
                for f in counted.getFeatures()}

    @staticmethod
    def write_features(sink, source, totals, fields, kept, destination, feedback) -> None:
        total = max(1, source.featureCount())
        for i, feature in enumerate(unchecked_features(source)):
            if feedback.isCanceled():
                raise QgsProcessingException("cancelled: the statistics are incomplete")
            valid, water, km2 = totals.get(feature.id(), (0.0, 0.0, 0.0))
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            attributes = [feature[f.name()] for f in kept]
            out.setAttributes(attributes + [valid, water, water / valid if valid else None, km2])
            if not sink.addFeature(out, QgsFeatureSink.Flag.FastInsert):
                raise QgsProcessingException(f"OUTPUT: polygon {feature.id()} could not be written to "
                                             f"{destination}: {sink.lastError()}")
            feedback.setProgress(100.0 * (i + 1) / total)


def unusable_fid(source) -> bool:
    """Whether the polygons' field fid (in any case), which a GeoPackage takes for its
    features' ids, cannot be those: not whole numbers, empty, or repeated (as after Merge
    vector layers, which keeps each layer's own)."""
    index = next((i for i, f in enumerate(source.fields()) if f.name().lower() == "fid"), None)
    if index is None:
        return False
    if source.fields().at(index).type() not in (QVariant.Int, QVariant.LongLong):
        return True
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes([index])
    seen = set()
    for feature in source.getFeatures(request):
        value = feature[index]
        if not isinstance(value, int) or value in seen:   # NULL is no int
            return True
        seen.add(value)
    return False


class MaskRows:
    """The pixel rows of a mask, the ground area of its pixels, and the strips of rows
    over which that area varies by less than STRIP_SPREAD."""

    def __init__(self, mask, ellipsoid: str, transform_context):
        self.mask, self.ellipsoid, self.transform_context = mask, ellipsoid, transform_context
        self.extent = mask.extent()
        self.step = mask.rasterUnitsPerPixelY()
        self.edges = self.strip_edges(mask.height())

    def y(self, row: float) -> float:
        """The y of the top edge of ``row``; of its centre for row + 0.5."""
        return self.extent.yMaximum() - row * self.step

    def area_m2(self, x: float, y: float) -> float:
        """The ground area of the pixel around (x, y)."""
        return pixel_area_m2(self.mask, self.ellipsoid, QgsPointXY(x, y), self.transform_context)

    def even(self, top: int, end: int) -> bool:
        """Whether rows ``top`` to ``end`` - 1 hold pixels of one area, within STRIP_SPREAD
        (measured on the top, middle and bottom rows: the area may peak between, at the equator)."""
        x = self.extent.center().x()
        areas = [self.area_m2(x, self.y(row + 0.5)) for row in (top, (top + end - 1) // 2, end - 1)]
        return max(areas) <= min(areas) * (1 + STRIP_SPREAD)

    def strip_edges(self, height: int) -> list[int]:
        """The first row of each strip, then ``height``: strips as tall as STRIP_SPREAD allows
        (one on a projected grid near true scale), found by doubling, then halving, a
        strip's height."""
        edges = [0]
        while edges[-1] < height:
            top, rest = edges[-1], height - edges[-1]
            fits, too_many = 1, rest + 1   # rows known to fit in the strip, and not to
            while fits < rest:
                trial = min(2 * fits, rest)
                if not self.even(top, top + trial):
                    too_many = trial
                    break
                fits = trial
            while too_many - fits > 1:
                middle = (fits + too_many) // 2
                fits, too_many = (middle, too_many) if self.even(top, top + middle) else (fits, middle)
            edges.append(top + fits)
        return edges

    def strips(self, box: QgsRectangle) -> list[QgsRectangle]:
        """The strips, across the mask, holding the pixel rows whose centres lie inside ``box``
        (a centre on its edge is on the polygon's, and QGIS does not count it)."""
        top = self.extent.yMaximum()
        first = max(math.floor((top - box.yMaximum()) / self.step - 0.5) + 1, 0)
        last = min(math.ceil((top - box.yMinimum()) / self.step - 0.5) - 1, self.edges[-1] - 1)
        return [QgsRectangle(self.extent.xMinimum(), self.y(self.edges[k + 1]),
                             self.extent.xMaximum(), self.y(self.edges[k]))
                for k in range(bisect_right(self.edges, first) - 1, bisect_right(self.edges, last))]


class Pieces:
    """The polygons cut at the strips' edges, in the mask's CRS: a layer of pieces, each
    keyed by its number in ``owners``, which holds its polygon's feature id and the pixel
    area at its middle."""

    def __init__(self, name: str, crs):
        fields = QgsFields()
        fields.append(QgsField("key", QVariant.LongLong))
        self.name, self.fields, self.crs = name, fields, crs   # the polygons' name, for QGIS's messages
        self.features: list[QgsFeature] = []
        self.owners: list[tuple[int, float]] = []
        # the polygons cut into several pieces, by feature id: their whole geometries
        self.cut: dict[int, QgsGeometry] = {}
        # polygons GEOS found invalid: pieces of their repaired geometries give the areas
        # their pixels are measured at; their own geometries, counted whole, the pixels
        self.invalid: set[int] = set()

    def add(self, fid: int, piece: QgsGeometry, area_m2: float) -> None:
        self.features.append(self._keyed(len(self.owners), piece))
        self.owners.append((fid, area_m2))

    def _keyed(self, key: int, geometry: QgsGeometry) -> QgsFeature:
        feature = QgsFeature(self.fields)
        feature.setGeometry(geometry)
        feature.setAttributes([key])
        return feature

    def _layer(self, features):
        layer = QgsMemoryProviderUtils.createMemoryLayer(self.name, self.fields, QgsWkbTypes.Type.MultiPolygon,
                                                         self.crs)
        layer.dataProvider().addFeatures(features)
        return layer

    def layer(self):
        return self._layer(self.features)

    def doubtful(self, counts) -> set[int]:
        """The cut polygons to count whole: where QGIS finds at most one pixel centre in a
        piece, it counts the pixels the piece touches by the share it covers (a fraction, or
        a pixel the whole polygon would not count); and the invalid ones."""
        return self.invalid | {self.owners[key][0] for key, (valid, _) in counts.items()
                               if self.owners[key][0] in self.cut and (valid % 1 or 0 < valid < 2)}

    def whole_layer(self, fids):
        return self._layer([self._keyed(fid, self.cut[fid]) for fid in fids])

    def totals(self, counts, recounted) -> dict[int, tuple[float, float, float]]:
        """valid_px, water_px and water km² by feature id: each piece's water at its own pixel area."""
        by_polygon: dict[int, list[tuple[float, float, float]]] = {}
        for key, (valid, water) in counts.items():
            fid, area_m2 = self.owners[key]
            by_polygon.setdefault(fid, []).append((valid, water, area_m2))
        result = {}
        for fid, pieces in by_polygon.items():
            valid, water = sum(p[0] for p in pieces), sum(p[1] for p in pieces)
            # counted whole, a polygon's water takes the mean area of its pieces' water (of
            # its pieces if they hold none: an invalid one's repaired shape may miss a pixel)
            mean_m2 = (sum(p[1] * p[2] for p in pieces) / water if water
                       else sum(p[2] for p in pieces) / len(pieces))
            valid, water = recounted.get(fid, (valid, water))
            result[fid] = (valid, water, water * mean_m2 / 1e6)
        return result


def cut_polygons(source, rows: MaskRows, context, feedback) -> Pieces:
    """The polygons of ``source`` in the mask's CRS, cut at the edges of the strips of rows
    they cross; one in a single strip stays whole. Parts outside the mask are dropped."""
    feedback.setProgressText("cutting the polygons at the mask's pixel rows")
    pieces = Pieces(source.sourceName(), rows.mask.crs())
    total = max(1, source.featureCount())
    # moved as native:zonalstatisticsfb moves them (a transform error reported as it would be)
    request = QgsFeatureRequest().setNoAttributes().setDestinationCrs(rows.mask.crs(), context.transformContext())
    # an invalid polygon is counted whole (Pieces.invalid), whatever Processing's setting
    for number, feature in enumerate(unchecked_features(source, request), start=1):
        if feedback.isCanceled():
            raise QgsProcessingException("cancelled: the statistics are incomplete")
        feedback.setProgress(100.0 * number / total)
        if not feature.hasGeometry():
            continue
        geometry = feature.geometry()
        box = geometry.boundingBox().intersect(rows.extent)
        if box.isEmpty():
            continue
        strips = rows.strips(box)
        if len(strips) <= 1:
            centre = box.center()
            pieces.add(feature.id(), geometry, rows.area_m2(centre.x(), centre.y()))
            continue
        pieces.cut[feature.id()] = geometry
        if not geometry.isGeosValid():
            pieces.invalid.add(feature.id())
            geometry = geometry.makeValid()
        for strip in strips:
            piece = polygon_parts(geometry.intersection(QgsGeometry.fromRect(strip)))
            if piece is not None:
                centre = piece.boundingBox().center()
                pieces.add(feature.id(), piece, rows.area_m2(centre.x(), centre.y()))
    return pieces


def polygon_parts(geometry: QgsGeometry) -> QgsGeometry | None:
    """The polygons of an intersection, without the lines and points where it only touches;
    None when there are none."""
    if geometry.type() != QgsWkbTypes.GeometryType.PolygonGeometry and \
            not geometry.convertGeometryCollectionToSubclass(QgsWkbTypes.GeometryType.PolygonGeometry):
        return None
    return None if geometry.isEmpty() else geometry
