"""sarflood:mapwater: the learned model over a Sentinel-1 scene -> probability and mask rasters."""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination)

from .. import styles
from ..params import DEVICES, UNITS, PredictParams
from ..summary import model_label
from .base import frees_inputs
from .common import SceneAlgorithm
from .review import ReviewHandoff

UNIT_CHOICES = ("detect from the data", *UNITS)
# the outputs' descriptions, which Processing names their layers after
OUTPUT_NAMES = {"mask": "Water mask", "probability": "Water probability",
                "uncertainty": "Uncertainty (needs test-time augmentation)"}


class MapWaterAlgorithm(SceneAlgorithm):
    ID = "mapwater"
    TITLE = "Map water (learned model)"
    GROUP_ID = "mapping"
    HELP = ("Runs the ONNX water model on a Sentinel-1 VV/VH scene (one 2-band file, or a VV and "
            "a VH file; dB, linear power or amplitude) and writes the water probability "
            "(0-1, NaN where there is no data) and the water mask (0 dry, 1 water, 255 no data). "
            "The model's card fixes bands, scaling, pixel size and tiling; leave the threshold "
            "empty to use the card's default. Returns the water area in km² and its share of "
            "the valid area. Loaded into the project, the mask and probability open in the SAR "
            "Flood Mapper review panel (threshold, area, corrections, Accept), as a run of the "
            "plugin's dialog does, and the review is saved with the project.")

    def initAlgorithm(self, config=None) -> None:
        self.add_scene_parameters()
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "Model (.onnx with a model card; empty: the bundled model)",
            extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", list(DEVICES), defaultValue=0))
        # no declared limits: QGIS would refuse 1.5 without saying the range, and 0 and 1
        # are refused too; processAlgorithm says so with the value given
        self.add_described(
            QgsProcessingParameterNumber("THRESHOLD", "Threshold, strictly between 0 and 1 (empty: "
                                         "the model's default)", QgsProcessingParameterNumber.Type.Double,
                                         None, optional=True),
            "The water probability above which a pixel is mapped as water")
        self.add_extent_parameter()
        advanced = [
            QgsProcessingParameterEnum("UNITS", "Input units", list(UNIT_CHOICES), defaultValue=0),
            QgsProcessingParameterNumber("TILE_SIZE", "Tile size in pixels (0: the model's)",
                                         QgsProcessingParameterNumber.Type.Integer, 0, minValue=0,
                                         maxValue=4096),
            QgsProcessingParameterNumber("OVERLAP", "Tile overlap in pixels (-1: from the model's margin)",
                                         QgsProcessingParameterNumber.Type.Integer, -1, minValue=-1),
            QgsProcessingParameterNumber("BATCH_SIZE",
                                         "Tiles per batch (0: 1 on CPU, 4 on CUDA; memory grows with it)",
                                         QgsProcessingParameterNumber.Type.Integer, 0, minValue=0),
            QgsProcessingParameterBoolean("TTA", "Test-time augmentation (flips; slower, gives uncertainty)",
                                          False),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_MASK", OUTPUT_NAMES["mask"]))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_PROBABILITY", OUTPUT_NAMES["probability"], optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_UNCERTAINTY", OUTPUT_NAMES["uncertainty"], optional=True,
            createByDefault=False))
        self.add_area_outputs()
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD_USED", "Threshold used"))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", "Device used"))
        self.addOutput(QgsProcessingOutputString("MODEL_USED", "Model used"))

    @frees_inputs
    def processAlgorithm(self, parameters, context, feedback):
        given_input = parameters.get("INPUT")
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        mask, scene, extent, extent_crs = self.scene_inputs(parameters, context, feedback)
        model = self.parameterAsFile(parameters, "MODEL", context) or None
        if model is not None and not Path(model).is_file():
            raise QgsProcessingException(f"Model: {model} does not exist")
        probability = self.output_path(parameters, "OUTPUT_PROBABILITY", context, feedback) or None
        uncertainty = self.output_path(parameters, "OUTPUT_UNCERTAINTY", context, feedback) or None
        tta = self.parameterAsBool(parameters, "TTA", context)
        if uncertainty and not tta:
            raise QgsProcessingException("Uncertainty output: it comes from test-time augmentation; "
                                         "switch TTA on, or leave the uncertainty output empty")
        units = UNIT_CHOICES[self.parameterAsEnum(parameters, "UNITS", context)]
        tile = self.parameterAsInt(parameters, "TILE_SIZE", context)
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        threshold = self.threshold(parameters, context, empty="the model's default")
        outputs = [p for p in (mask, probability, uncertainty) if p]
        params = PredictParams(
            scene=scene, mask=mask, probability=probability, uncertainty=uncertainty, model=model,
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            threshold=threshold, units=None if units == UNIT_CHOICES[0] else units,
            tile_size=tile or None, overlap=None if overlap < 0 else overlap,
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context) or None, tta=tta,
            extent=extent, extent_crs=extent_crs,
            overwrite=any(Path(p).exists() for p in outputs))
        result = self.run_backend(params.argv(), feedback)
        self.keep_empty_outputs_off_the_map(result, outputs, context, feedback)
        self.hand_over_for_review(result, params, given_input, context)
        return {"OUTPUT_MASK": mask, "OUTPUT_PROBABILITY": probability,
                "OUTPUT_UNCERTAINTY": uncertainty, **self.area_results(result),
                "THRESHOLD_USED": float(result["threshold"]), "DEVICE_USED": str(result["device"]),
                "MODEL_USED": model_label(result)}

    @staticmethod
    def hand_over_for_review(result: dict, params: PredictParams, given_input, context) -> None:
        """Style the outputs Processing will load when the run ends, and make the run
        reviewable once they are in (:mod:`.review`) if the mask and probability are."""
        outputs = {"mask": (params.mask, styles.mask_renderer),
                   "probability": (params.probability, styles.probability_renderer),
                   "uncertainty": (params.uncertainty, styles.uncertainty_renderer)}
        loading = {kind: (path, style) for kind, (path, style) in outputs.items()
                   if path and context.willLoadLayerOnCompletion(path)}
        if "mask" not in loading or "probability" not in loading:   # nothing to review
            for path, style in loading.values():
                MapWaterAlgorithm.style_output(context, path, style)
            return
        handoff = ReviewHandoff(result, params, given_input,
                                {kind: OUTPUT_NAMES[kind] for kind in loading})
        for kind, (path, style) in loading.items():
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(
                handoff.post_processor(kind, style))
