"""sarflood:vectorize: a water mask -> water polygons with their area in m², small pieces dropped.

Built from QGIS's own algorithms, run as child algorithms: native:reclassifybytable keeps
the chosen value and makes everything else no data, so gdal:polygonize draws only its
polygons (drawn whole, the dry land of a speckled mask was one polygon with a hole per
speck); native:fieldcalculator adds an ellipsoidal ``$area``; native:extractbyexpression
keeps what reaches the minimum mapping unit. Every step writes a file: a full scene's
specks held in memory layers took gigabytes of QGIS's memory, and freeing them stalled
the map for seconds.
"""
from __future__ import annotations

from contextlib import nullcontext

from qgis.core import (QgsAggregateCalculator, QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingUtils,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination, QgsUnitTypes, QgsVectorLayer)

from ..outputs import is_plain_file, written_beside
from .base import SarFloodAlgorithm, frees_inputs
from .masks import check_mask_layer, ellipsoid_of
from .steps import Steps


class VectorizeAlgorithm(SarFloodAlgorithm):
    ID = "vectorize"
    TITLE = "Water mask to polygons"
    GROUP_ID = "analysis"
    HELP = ("Turns a water mask (0 dry, 1 water, 255 no data) into polygons of the chosen value, "
            "adds each polygon's ellipsoidal area in m² (field area_m2) and drops polygons smaller "
            "than the minimum mapping unit, which removes speckle-sized pieces. A polygon whose area "
            "cannot be measured (a mask in a local engineering CRS) fails the run.")

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

    @frees_inputs
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
            output = self.run_child(f"step {step + 1} of 4: {alg}", alg, params, context,
                                    steps.at(step))["OUTPUT"]
            if feedback.isCanceled():  # a child stops early and returns what it had written
                raise QgsProcessingException("cancelled: the polygons were not written")
            return output

        with Steps(4, context, feedback, self.step_files()) as steps:   # a failed or cancelled run's steps go too
            # the chosen value as 1, all else (the mask's no data too) as no data: Byte, 0
            chosen = child(0, "native:reclassifybytable", {
                "INPUT_RASTER": mask, "RASTER_BAND": 1, "TABLE": [value, value, 1], "RANGE_BOUNDARIES": 2,
                "NODATA_FOR_MISSING": True, "NO_DATA": 0, "DATA_TYPE": 0, "OUTPUT": steps.file("chosen.tif")})
            polygons = child(1, "gdal:polygonize", {"INPUT": chosen, "BAND": 1, "FIELD": "DN",
                                                    "OUTPUT": steps.file("polygons.gpkg")})
            saved = (context.ellipsoid(), context.areaUnit())
            context.setEllipsoid(ellipsoid_of(context))
            context.setAreaUnit(QgsUnitTypes.AreaUnit.AreaSquareMeters)
            try:
                with_area = child(2, "native:fieldcalculator", {
                    "INPUT": polygons, "FIELD_NAME": "area_m2", "FIELD_TYPE": 0, "FIELD_LENGTH": 20,
                    "FIELD_PRECISION": 2, "FORMULA": "$area",
                    "OUTPUT": steps.file("polygons_with_area.gpkg")})
            finally:
                context.setEllipsoid(saved[0])
                context.setAreaUnit(saved[1])
            measured = QgsProcessingUtils.mapLayerFromString(with_area, context)
            _check_measured(measured, mask.source())
            dropped = _too_small(measured, min_area)
            with written_beside(destination) if to_file else nullcontext(destination) as target:
                kept = child(3, "native:extractbyexpression", {
                    "INPUT": with_area, "EXPRESSION": f'"area_m2" >= {min_area!r}', "OUTPUT": target})
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
                          f"{dropped[0]} smaller dropped ({dropped[1]:g} m²)")
        if to_file:
            self.reload_output(context, kept)
        return {"OUTPUT": kept, "POLYGON_COUNT": count, "DROPPED_COUNT": dropped[0],
                "DROPPED_AREA_M2": dropped[1]}


def _check_measured(layer, mask_name) -> None:
    """Raise where a polygon has no area: the last step would drop it without a word (a
    lost CRS left every area empty and wrote none of a half-water mask's polygons)."""
    missing, _ = layer.aggregate(QgsAggregateCalculator.Aggregate.CountMissing, "area_m2")
    if missing:
        crs = layer.crs().authid() or layer.crs().description() or "none"
        raise QgsProcessingException(
            f"{int(missing)} of {layer.featureCount()} polygons of {mask_name} have no area: their "
            f"ellipsoidal area could not be measured in their CRS ({crs})")


def _too_small(layer, min_area: float) -> tuple[int, float]:
    """How many polygons of ``layer`` lie under ``min_area``, and their area (m²): what the
    last step leaves out, which a user should hear of. Counted by the provider, not
    feature by feature in Python: a speckled scene has millions."""
    if min_area <= 0:
        return 0, 0.0
    small = QgsAggregateCalculator.AggregateParameters()
    small.filter = f'"area_m2" < {min_area!r}'
    count, _ = layer.aggregate(QgsAggregateCalculator.Aggregate.Count, "area_m2", small)
    area, _ = layer.aggregate(QgsAggregateCalculator.Aggregate.Sum, "area_m2", small)
    return int(count or 0), float(area or 0.0)
