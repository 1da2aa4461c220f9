"""sarflood:zonalwater: water statistics per polygon (admin areas, catchments...).

native:zonalstatisticsfb counts valid and water pixels of the mask in each polygon;
this algorithm turns the counts into water share and km² per polygon.
"""
from __future__ import annotations

from contextlib import nullcontext

from qgis.core import (QgsCoordinateTransform, QgsFeature, QgsFeatureSink, QgsField, QgsFields,
                       QgsProcessing, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterRasterLayer,
                       QgsProcessingUtils)
from qgis.PyQt.QtCore import QVariant

from ..outputs import is_plain_file, written_beside
from .base import SarFloodAlgorithm, check_polygons, frees_inputs_on_failure, source_file
from .masks import check_binary_mask, check_mask_layer, ellipsoid_of, pixel_area_m2

_PREFIX = "sfz_"
# QVariant, not QMetaType: QgsField takes a QMetaType from QGIS 3.38 on; QGIS 4's qgis.PyQt maps QVariant.Double
NEW_FIELDS = (("valid_px", QVariant.Double), ("water_px", QVariant.Double),
              ("water_frac", QVariant.Double), ("water_km2", QVariant.Double))


class ZonalWaterAlgorithm(SarFloodAlgorithm):
    ID = "zonalwater"
    TITLE = "Water statistics per polygon"
    GROUP_ID = "analysis"
    HELP = ("For each polygon (for example admin areas): valid_px, the mask pixels with data; "
            "water_px, the water pixels; water_frac, their share of the valid pixels; water_km2, "
            "the water area (pixel area measured on the ellipsoid at the polygon's centroid).")

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

    @frees_inputs_on_failure
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
        zonal = self.run_child("counting pixels per polygon", "native:zonalstatisticsfb", {
            "INPUT": parameters["POLYGONS"], "INPUT_RASTER": mask, "RASTER_BAND": 1,
            "COLUMN_PREFIX": _PREFIX, "STATISTICS": [0, 1], "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT},
            context, feedback)["OUTPUT"]
        if feedback.isCanceled():  # the child stops early and returns what it had counted
            raise QgsProcessingException("cancelled: the statistics are incomplete")
        feedback.setProgressText("water share and area per polygon")
        counted = QgsProcessingUtils.mapLayerFromString(zonal, context)

        # the polygons may hold these fields already (a layer this algorithm wrote): they
        # are replaced, since QgsFields.append silently refuses a second field of a name
        ours = {name for name, _ in NEW_FIELDS}
        kept = [f for f in source.fields() if f.name() not in ours]
        fields = QgsFields()
        for field in kept:
            fields.append(field)
        for name, kind in NEW_FIELDS:
            fields.append(QgsField(name, kind))
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
                self.write_features(sink, counted, fields, kept, mask, context, feedback)
            finally:
                del sink   # closes the file before it is moved or removed
        if to_file:
            self.reload_output(context, destination)
        return {"OUTPUT": destination if to_file else dest}

    @staticmethod
    def write_features(sink, counted, fields, kept, mask, context, feedback) -> None:
        to_raster = QgsCoordinateTransform(counted.crs(), mask.crs(), context.transformContext())
        ellipsoid = ellipsoid_of(context)
        transforms = context.transformContext()
        total = max(1, counted.featureCount())
        for i, feature in enumerate(counted.getFeatures()):
            if feedback.isCanceled():
                raise QgsProcessingException("cancelled: the statistics are incomplete")
            valid = float(feature[f"{_PREFIX}count"] or 0)
            water = float(feature[f"{_PREFIX}sum"] or 0)
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            attributes = [feature[f.name()] for f in kept]
            centre = to_raster.transform(feature.geometry().centroid().asPoint()) if water else None
            km2 = water * pixel_area_m2(mask, ellipsoid, centre, transforms) / 1e6 if water else 0.0
            out.setAttributes(attributes + [valid, water, water / valid if valid else None, km2])
            sink.addFeature(out, QgsFeatureSink.Flag.FastInsert)
            feedback.setProgress(100.0 * (i + 1) / total)
