"""sarflood:correctmask: an analyst's water/dry polygons burnt into a water mask.

The polygons go to the backend as GeoJSON (:mod:`~sarflood.plugin.corrections`);
``python -m backend correct`` writes the corrected mask with the input's provenance
tags and counts the areas again.
"""
from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
                       QgsProcessingUtils)

from .. import styles
from ..corrections import FIELD, CorrectionsProblem, write_geojson
from ..inputs import InputProblem, layer_file
from ..params import CorrectParams
from .common import SceneAlgorithm
from .masks import check_binary_mask, check_mask_layer


class CorrectMaskAlgorithm(SceneAlgorithm):
    ID = "correctmask"
    TITLE = "Correct a water mask with polygons"
    GROUP_ID = "analysis"
    HELP = ("Burns polygons drawn by the analyst into a water mask (0 dry, 1 water, 255 no data): "
            f"where the field (default '{FIELD}') is 1 the pixels become water, where it is 0 dry. "
            "A pixel is corrected when its centre lies inside a polygon; a later polygon wins "
            "where two overlap; no-data pixels stay no data. The output keeps the mask's "
            "provenance tags and records the corrections; the water area is counted again.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Water mask"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "CORRECTIONS", "Correction polygons", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "FIELD", "Field: 1 water, 0 dry", FIELD, "CORRECTIONS", optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Corrected mask"))
        self.add_area_outputs()
        self.addOutput(QgsProcessingOutputNumber("CORRECTED_PIXELS", "Pixels changed"))

    def processAlgorithm(self, parameters, context, feedback):
        mask = check_mask_layer(self.parameterAsRasterLayer(parameters, "INPUT", context),
                                "Water mask")
        check_binary_mask(mask, "Water mask")
        try:
            mask_file = layer_file(mask, "Water mask")
        except InputProblem as problem:
            raise QgsProcessingException(str(problem)) from None
        source = self.parameterAsSource(parameters, "CORRECTIONS", context)
        if source is None:
            raise QgsProcessingException("Correction polygons: no layer given")
        field = self.parameterAsString(parameters, "FIELD", context) or FIELD
        out = self.output_path(parameters, "OUTPUT", context, feedback)
        geojson = QgsProcessingUtils.generateTempFilename("corrections.geojson")
        try:
            count = write_geojson(source.getFeatures(), source.sourceCrs(), field,
                                  f"Correction polygons '{source.sourceName()}'", geojson)
        except CorrectionsProblem as problem:
            raise QgsProcessingException(str(problem)) from None
        feedback.pushInfo(f"{count} correction polygons")
        params = CorrectParams(mask=mask_file, corrections=geojson, out=out,
                               overwrite=Path(out).exists())
        try:
            result = self.run_backend(params.argv(), feedback)
        finally:
            os.remove(geojson)
        self.style_output(context, out, styles.mask_renderer)
        return {"OUTPUT": out, **self.area_results(result),
                "CORRECTED_PIXELS": int(result["corrected_pixels"])}
