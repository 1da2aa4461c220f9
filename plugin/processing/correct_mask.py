"""sarflood:correctmask: an analyst's water/dry polygons burnt into a water mask.

The polygons go to the backend as GeoJSON (:mod:`~sarflood.plugin.corrections`);
``python -m backend correct`` writes the corrected mask with the input's provenance
tags and counts the areas again.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from .. import styles
from ..corrections import FIELD, CorrectionsProblem, sidecar_path, write_geojson
from ..inputs import InputProblem, layer_file
from ..outputs import recover_aside, set_aside, settle
from ..params import CorrectParams
from .base import frees_inputs, source_file, unchecked_features
from .common import SceneAlgorithm
from .masks import check_binary_mask, check_mask_layer, check_nodata_in_file


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
            "CORRECTIONS", "Correction polygons", [QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "FIELD", "Field: 1 water, 0 dry", FIELD, "CORRECTIONS", optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Corrected mask"))
        self.add_area_outputs()
        self.addOutput(QgsProcessingOutputNumber("CORRECTED_PIXELS", "Pixels changed"))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 (QGIS's name)
        # the polygons' own file, before prepareAlgorithm swaps a project layer for a copy
        self._corrections_file = source_file(parameters.get("CORRECTIONS"), context)
        return super().prepareAlgorithm(parameters, context, feedback)

    @staticmethod
    def corrections_path(out: str, given: str | None, feedback) -> Path:
        """Where the polygons go (:func:`~plugin.corrections.sidecar_path`), said in the log."""
        path, replaced, note = sidecar_path(out, given)
        if note:
            feedback.pushWarning(note)
        if replaced:
            feedback.pushInfo(f"{path} exists and will be replaced")
        return path

    @frees_inputs
    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        mask = check_mask_layer(self.parameterAsRasterLayer(parameters, "INPUT", context),
                                "Water mask", parameters.get("INPUT"))
        check_binary_mask(mask, "Water mask")
        # the backend reads the file; 255 is no data there, declared or not
        check_nodata_in_file(mask, "Water mask", made_nodata=(255,))
        try:
            mask_file = layer_file(mask, "Water mask")
        except InputProblem as problem:
            raise QgsProcessingException(str(problem)) from None
        source = self.parameterAsSource(parameters, "CORRECTIONS", context)
        if source is None:
            raise QgsProcessingException("Correction polygons: no layer given")
        field = self.parameterAsString(parameters, "FIELD", context) or FIELD
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        self.check_destination(out, "OUTPUT", [mask], feedback)  # before the polygons are written beside it
        # kept beside the corrected mask, whose SARFLOOD_CORRECTIONS tag names it (as the
        # review dock does); the backend reads it there, so what was there is set aside
        # until the backend has replaced the mask: a failed run puts it back, and after a
        # kill the next run to this OUTPUT does
        geojson = str(self.corrections_path(out, getattr(self, "_corrections_file", None), feedback))
        for what in recover_aside(geojson, out):
            feedback.pushInfo(what)
        try:
            aside = set_aside(geojson)
        except OSError as exc:
            raise QgsProcessingException(f"{geojson}: cannot keep the file there while the run "
                                         f"replaces it ({exc.strerror or exc})") from None
        try:
            # the backend burns self-intersecting polygons as it burns any other
            count = write_geojson(unchecked_features(source), source.sourceCrs(), field,
                                  f"Correction polygons '{source.sourceName()}'", geojson)
            feedback.pushInfo(f"{count} correction polygons, kept in {geojson}")
            params = CorrectParams(mask=mask_file, corrections=geojson, out=out,
                                   overwrite=Path(out).exists())
            result = self.run_backend(params.argv(), feedback)
        except BaseException as exc:
            settle(geojson, aside, ok=False)
            if isinstance(exc, CorrectionsProblem):
                raise QgsProcessingException(str(exc)) from None
            raise
        settle(geojson, aside, ok=True)
        self.keep_empty_outputs_off_the_map(result, [out], context, feedback)
        self.style_output(context, out, styles.mask_renderer)
        return {"OUTPUT": out, **self.area_results(result),
                "CORRECTED_PIXELS": int(result["corrected_pixels"])}

