"""sarflood:otsu: the Otsu baseline, one global threshold on VV backscatter in dB."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterRasterDestination

from .. import styles
from ..params import OtsuParams
from .base import frees_inputs
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

    @frees_inputs
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
