"""What the algorithms that map a Sentinel-1 scene share: input parameters and checks, area outputs."""
from __future__ import annotations

from typing import Any

from qgis.core import (QgsProcessingException, QgsProcessingOutputNumber,
                       QgsProcessingParameterBand, QgsProcessingParameterExtent,
                       QgsProcessingParameterRasterLayer, QgsRasterLayer)

from ..inputs import InputProblem, crs_for_backend, scene_from_pair, scene_from_stack
from ..params import Extent, SceneInput
from .base import SarFloodAlgorithm

AREA_OUTPUTS = {
    "WATER_AREA_KM2": "Water area (km²)",
    "VALID_AREA_KM2": "Valid (observed) area (km²)",
    "WATER_FRACTION": "Water share of the valid area (0-1; empty without a valid pixel)",
}
_RESULT_KEYS = {"WATER_AREA_KM2": "water_area_km2", "VALID_AREA_KM2": "valid_area_km2",
                "WATER_FRACTION": "water_fraction"}


class SceneAlgorithm(SarFloodAlgorithm):
    """Base for the algorithms that read a Sentinel-1 scene and run a backend command."""

    def add_scene_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            "INPUT", "Sentinel-1 input: VV+VH stack, or the VV layer"))
        self.add_described(
            QgsProcessingParameterRasterLayer("INPUT_VH", "VH layer (separate files only)",
                                              optional=True),
            "Only when VV and VH are separate files; empty for a stack, a VV-only model or Otsu")
        self.addParameter(QgsProcessingParameterBand(
            "VV_BAND", "VV band of the stack (empty: guessed from band names)", None, "INPUT",
            optional=True))
        self.addParameter(QgsProcessingParameterBand(
            "VH_BAND", "VH band of the stack (empty: guessed from band names)", None, "INPUT",
            optional=True))

    def add_extent_parameter(self) -> None:
        self.add_described(
            QgsProcessingParameterExtent("EXTENT", "Extent to map (empty: the whole input)",
                                         optional=True),
            "Numbers given without [EPSG:...] are in the project's CRS, the input's where "
            "there is no project")

    def add_area_outputs(self) -> None:
        for name, description in AREA_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, description))

    def scene_inputs(self, parameters, context, feedback) -> tuple[str, SceneInput, Extent | None, str | None]:
        """The mask destination, the checked scene and the extent (with its CRS) of a run."""
        scene = self.scene(parameters, context)
        mask = self.output_path(parameters, "OUTPUT_MASK", context, feedback)
        reference = self.parameterAsRasterLayer(parameters, "INPUT", context)
        return (mask, scene, *self.extent(parameters, context, reference, feedback))

    def scene(self, parameters, context) -> SceneInput:
        """Check the input layers and their bands; every message names the layer. A
        single-band INPUT without INPUT_VH goes to the backend, which holds it against what
        it reads (the model's card: VV and VH, or VV alone; Otsu: VV)."""
        stack = self.parameterAsRasterLayer(parameters, "INPUT", context)
        vh = self.parameterAsRasterLayer(parameters, "INPUT_VH", context)
        bands = None
        given = [parameters.get(name) not in (None, "", 0) for name in ("VV_BAND", "VH_BAND")]
        if all(given):
            bands = (self.parameterAsInt(parameters, "VV_BAND", context),
                     self.parameterAsInt(parameters, "VH_BAND", context))
        elif any(given):  # one alone was ignored, and the bands guessed from their names
            raise QgsProcessingException("VV_BAND and VH_BAND: give both bands, or neither "
                                         "(then they are found from the band names)")
        try:
            return (scene_from_pair(stack, vh) if vh is not None
                    else scene_from_stack(stack, bands, needs_vh=False))
        except InputProblem as problem:
            raise QgsProcessingException(str(problem)) from None

    def extent(self, parameters, context, reference: QgsRasterLayer,
               feedback) -> tuple[Extent | None, str | None]:
        """The extent and its CRS; the log says which CRS, as one given without a CRS is read
        in the project's in QGIS and in the input's by qgis_process (no project)."""
        if parameters.get("EXTENT") in (None, ""):
            return None, None
        rect = self.parameterAsExtent(parameters, "EXTENT", context)
        crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
        if not crs.isValid():
            crs = reference.crs()
        if rect.isEmpty():
            raise QgsProcessingException("Extent: the rectangle is empty")
        feedback.pushInfo(f"Extent: {rect.toString()} in {crs.userFriendlyIdentifier()}")
        return ((rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                crs_for_backend(crs))

    def output_path(self, parameters, name: str, context, feedback) -> str:
        """A destination path, checked against the scene's layers (the backend checks that
        it can write it); an existing file is replaced, as Processing does, and said so."""
        path = self.parameterAsOutputLayer(parameters, name, context)
        if path:
            inputs = [self.parameterAsRasterLayer(parameters, layer, context)
                      for layer in ("INPUT", "INPUT_VH")]
            self.check_destination(path, name, [layer for layer in inputs if layer is not None],
                                   feedback, probe=False)
        return path

    @staticmethod
    def keep_empty_outputs_off_the_map(result: dict[str, Any], paths: list[str | None], context,
                                       feedback) -> None:
        """An all-no-data result has nothing to show: its files are written, but not loaded
        into the project (as the run dialog does), and the log says where they are."""
        if int(result.get("valid_pixels", 1)) != 0:
            return
        loading = context.layersToLoadOnCompletion()
        written = [path for path in paths if path and loading.pop(path, None) is not None]
        context.setLayersToLoadOnCompletion(loading)
        if written:
            feedback.pushWarning("Not added to the map, having no valid pixel: " + ", ".join(written))

    def threshold(self, parameters, context, empty: str | None = None) -> float | None:
        """THRESHOLD strictly between 0 and 1. Left empty it is None where the parameter is
        optional (``empty`` says what that means), else the parameter's default."""
        given = parameters.get("THRESHOLD")
        if given in (None, "") and empty is not None:
            return None
        if isinstance(given, str) and given:   # QGIS reads text that is not a number as 0
            try:
                float(given)
            except ValueError:
                raise QgsProcessingException(
                    f"Threshold: {given!r} is not a number; give one strictly between 0 and 1"
                    + (f", or none for {empty}" if empty else "")) from None
        threshold = self.parameterAsDouble(parameters, "THRESHOLD", context)
        if not 0.0 < threshold < 1.0:
            raise QgsProcessingException(f"Threshold: {threshold} must lie strictly between 0 and 1")
        return threshold

    @staticmethod
    def area_results(result: dict[str, Any]) -> dict[str, float | None]:
        """The area outputs; no water share (None, as Otsu's THRESHOLD_DB) without a valid pixel."""
        areas = {name: float(result[key]) for name, key in _RESULT_KEYS.items()}
        if int(result.get("valid_pixels", 1)) == 0:
            areas["WATER_FRACTION"] = None
        return areas
