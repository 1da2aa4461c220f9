"""sarflood:threshold: the water mask at a chosen threshold, from a run's probability raster.

The review panel's Accept for models, batch rows and shell loops: ``python -m backend
finalize`` writes the mask without running the model again, keeps the probability's
provenance tags and sets SARFLOOD_THRESHOLD. A raster calculator's threshold would give a
float raster, without the no-data code 255 or the tags, which the mask algorithms refuse.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer)

from .. import styles
from ..inputs import InputProblem, layer_file
from ..params import FinalizeParams
from .base import frees_inputs
from .common import SceneAlgorithm
from .masks import unopened


class ThresholdAlgorithm(SceneAlgorithm):
    ID = "threshold"
    TITLE = "Water mask at a threshold (from a probability)"
    GROUP_ID = "mapping"
    HELP = ("Writes the water mask (0 dry, 1 water, 255 no data) of a water probability raster "
            "that sarflood:mapwater wrote, at the threshold given, without running the model "
            "again: the review panel's Accept, for models, batch mode and scripts. A pixel is "
            "water where its probability is above the threshold. The mask keeps the "
            "probability's provenance tags and records the threshold. To burn polygons drawn "
            "by the analyst into it, chain sarflood:correctmask.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            "INPUT", "Water probability (sarflood:mapwater's probability output)"))
        # no declared limits, as mapwater's: QGIS would refuse 1.5 without saying the range
        self.addParameter(QgsProcessingParameterNumber(
            "THRESHOLD", "Water probability threshold, strictly between 0 and 1",
            QgsProcessingParameterNumber.Type.Double, 0.5))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Water mask"))
        self.add_area_outputs()
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", "Threshold used"))

    @frees_inputs
    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None:
            raise QgsProcessingException(f"Water probability: {unopened(parameters.get('INPUT'))}")
        try:
            probability = layer_file(layer, "Water probability")
        except InputProblem as problem:
            raise QgsProcessingException(str(problem)) from None
        threshold = self.threshold(parameters, context)
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        self.check_destination(out, "OUTPUT", [layer], feedback)
        params = FinalizeParams(probability=probability, threshold=threshold, mask=out,
                                overwrite=Path(out).exists())
        result = self.run_backend(params.argv(), feedback)
        self.keep_empty_outputs_off_the_map(result, [out], context, feedback)
        self.style_output(context, out, styles.mask_renderer)
        return {"OUTPUT": out, **self.area_results(result),
                "THRESHOLD_USED": float(result["threshold"])}
