"""sarflood:vectorize: a water mask -> water polygons with their area in m², small pieces dropped.

Built from QGIS's own algorithms (gdal:polygonize, native:extractbyattribute,
native:fieldcalculator with an ellipsoidal ``$area``, native:extractbyexpression),
run as child algorithms.
"""
from __future__ import annotations

from contextlib import nullcontext

from qgis.core import (QgsFeatureRequest, QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingUtils,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination, QgsUnitTypes, QgsVectorLayer)

from ..outputs import is_plain_file, written_beside
from .base import SarFloodAlgorithm, frees_inputs_on_failure
from .masks import check_mask_layer, ellipsoid_of


class VectorizeAlgorithm(SarFloodAlgorithm):
    ID = "vectorize"
    TITLE = "Water mask to polygons"
    GROUP_ID = "analysis"
    HELP = ("Turns a water mask (0 dry, 1 water, 255 no data) into polygons of the chosen value, "
            "adds each polygon's ellipsoidal area in m² (field area_m2) and drops polygons smaller "
            "than the minimum mapping unit, which removes speckle-sized pieces.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Water mask"))
        self.addParameter(QgsProcessingParameterNumber(
            "VALUE", "Mask value to vectorize (1: water)", QgsProcessingParameterNumber.Type.Integer, 1,
            minValue=0, maxValue=254))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA_M2", "Minimum mapping unit (m²); smaller polygons are dropped",
            QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Water polygons", QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("POLYGON_COUNT", "Number of polygons kept"))
        self.addOutput(QgsProcessingOutputNumber("DROPPED_COUNT", "Polygons dropped as too small"))
        self.addOutput(QgsProcessingOutputNumber("DROPPED_AREA_M2", "Their area (m²)"))

    @frees_inputs_on_failure
    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        mask = self.parameterAsRasterLayer(parameters, "INPUT", context)
        check_mask_layer(mask, "Water mask", parameters.get("INPUT"))
        value = self.parameterAsInt(parameters, "VALUE", context)
        min_area = self.parameterAsDouble(parameters, "MIN_AREA_M2", context)
        destination = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        self.check_destination(destination, "OUTPUT", [mask], feedback, raster=False)
        # a file is written beside the destination and renamed into place at the end: a
        # cancelled, failed or killed run leaves the file that was there
        to_file = is_plain_file(destination)

        def child(step: int, alg: str, params: dict) -> str:
            return self.run_child(f"step {step + 1} of 4: {alg}", alg, params, context, feedback)["OUTPUT"]

        polygons = child(0, "gdal:polygonize", {"INPUT": mask, "BAND": 1, "FIELD": "DN",
                                                "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT})
        chosen = child(1, "native:extractbyattribute", {"INPUT": polygons, "FIELD": "DN", "OPERATOR": 0,
                                                        "VALUE": value, "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT})
        saved = (context.ellipsoid(), context.areaUnit())
        context.setEllipsoid(ellipsoid_of(context))
        context.setAreaUnit(QgsUnitTypes.AreaUnit.AreaSquareMeters)
        try:
            with_area = child(2, "native:fieldcalculator", {
                "INPUT": chosen, "FIELD_NAME": "area_m2", "FIELD_TYPE": 0, "FIELD_LENGTH": 20,
                "FIELD_PRECISION": 2, "FORMULA": "$area", "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT})
        finally:
            context.setEllipsoid(saved[0])
            context.setAreaUnit(saved[1])
        dropped = _too_small(QgsProcessingUtils.mapLayerFromString(with_area, context), min_area)
        with written_beside(destination) if to_file else nullcontext(destination) as target:
            kept = child(3, "native:extractbyexpression", {
                "INPUT": with_area, "EXPRESSION": f'"area_m2" >= {min_area!r}', "OUTPUT": target})
            if feedback.isCanceled():  # the child stops early and returns what it had written
                raise QgsProcessingException("cancelled: the polygons were not written")
        if to_file:
            kept = destination
        elif context.willLoadLayerOnCompletion(destination):
            # Processing was told to load the destination asked for (memory:), which names no
            # layer: it loaded nothing; the layer the child made there is the one to load
            loads = context.layersToLoadOnCompletion()
            loads[kept] = loads.pop(destination)
            context.setLayersToLoadOnCompletion(loads)
        # read back from the file: a project layer of the same path (mapLayerFromString's
        # first pick) still counts the features of the file this run replaced
        layer = context.temporaryLayerStore().mapLayer(kept) or QgsVectorLayer(kept, "", "ogr")
        if not layer.isValid():
            raise QgsProcessingException(f"{kept}: the polygons were written but cannot be read back")
        count = layer.featureCount()
        feedback.pushInfo(f"{count} polygons of value {value} kept (>= {min_area:g} m²); "
                          f"{len(dropped)} smaller dropped ({sum(dropped):g} m²)")
        if to_file:
            self.reload_output(context, kept)
        return {"OUTPUT": kept, "POLYGON_COUNT": count, "DROPPED_COUNT": len(dropped),
                "DROPPED_AREA_M2": sum(dropped)}


def _too_small(layer, min_area: float) -> list[float]:
    """The areas (m²) of the polygons of ``layer`` under ``min_area``: what the last step
    leaves out, which a user should hear of."""
    if min_area <= 0:
        return []
    request = QgsFeatureRequest().setFilterExpression(f'"area_m2" < {min_area!r}')
    return [f["area_m2"] for f in layer.getFeatures(request)]
