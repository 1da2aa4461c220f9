"""sarflood:otsu: the Otsu baseline, one global threshold on VV backscatter in dB."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterRasterDestination)

from .. import styles
from ..inputs import InputProblem, layer_file, user_nodata
from ..params import OtsuParams, SceneInput
from .base import frees_inputs_on_failure
from .common import SceneAlgorithm


class OtsuAlgorithm(SceneAlgorithm):
    ID = "otsu"
    TITLE = "Map water (Otsu baseline)"
    GROUP_ID = "mapping"
    HELP = ("The classic baseline: Otsu's threshold on the histogram of VV backscatter in dB, "
            "pixels darker than it are water. No model needed. Writes a water mask "
            "(0 dry, 1 water, 255 no data) and returns the threshold in dB and the water area. "
            "Compare it with the learned model to see what the model adds.")

    def initAlgorithm(self, config=None) -> None:
        self.add_scene_parameters()
        self.add_extent_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_MASK", "Water mask (Otsu)"))
        self.add_area_outputs()
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_DB", "Otsu threshold on VV (dB)"))

    def scene(self, parameters, context) -> SceneInput:
        """Otsu reads VV only: a single-band VV layer will do."""
        stack = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if (stack is not None and stack.bandCount() == 1
                and self.parameterAsRasterLayer(parameters, "INPUT_VH", context) is None):
            try:
                return SceneInput(layer_file(stack, "Sentinel-1 input"), nodata=user_nodata([stack]))
            except InputProblem as problem:
                raise QgsProcessingException(str(problem)) from None
        return super().scene(parameters, context)

    @frees_inputs_on_failure
    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        mask, scene, extent, extent_crs = self.scene_inputs(parameters, context, feedback)
        params = OtsuParams(scene=scene, mask=mask, extent=extent, extent_crs=extent_crs,
                            overwrite=Path(mask).exists())
        result = self.run_backend(params.argv(), feedback)
        self.keep_empty_outputs_off_the_map(result, [mask], context, feedback)
        self.style_output(context, mask, styles.mask_renderer)
        # no threshold when the scene has no valid pixel (all no data, as the backend warns)
        threshold = result.get("threshold_db")
        return {"OUTPUT_MASK": mask, **self.area_results(result),
                "THRESHOLD_DB": None if threshold is None else float(threshold)}
