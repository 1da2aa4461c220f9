"""sarflood:floodextent: water after the event minus water before it -> newly flooded area.

"Before" is a pre-event water mask (aligned onto the post-event grid with
gdal:warpreproject), a permanent-water polygon layer (burnt onto that grid with
gdal:rasterize), or both. gdal:rastercalculator combines them (QGIS algorithms
run as children); ``python -m backend stats`` then measures the newly flooded
area with per-row pixel areas, exact on geographic grids such as EPSG:4326.

Output classes: 0 not flooded, 1 newly flooded, 2 water before and after,
255 no data (no data in the post-event mask, or in the pre-event mask there).
"""
from __future__ import annotations

import os
from pathlib import Path

from osgeo import gdal
from qgis.core import (QgsCoordinateTransform, QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer)

from .. import styles
from ..outputs import hidden_path
from ..params import backend_path
from .base import SarFloodAlgorithm, check_polygons, frees_inputs
from .masks import check_binary_mask, check_mask_layer, check_nodata_in_file
from .steps import Steps

NODATA = 255
# the progress slots of a run (the pre-event mask warped, the permanent water copied, then
# rasterized, gdal_calc, the backend's measure) and the step of 4 each is told as: one
# slot each, as a slot's progress restarts at 0 with its child
STEP_OF_SLOT = (1, 2, 2, 3, 4)
CANCELLED = "cancelled: no flood extent was written (a file already at OUTPUT is kept)"


class FloodExtentAlgorithm(SarFloodAlgorithm):
    ID = "floodextent"
    TITLE = "Flood extent (new water)"
    GROUP_ID = "analysis"
    HELP = ("Newly flooded area: water in the post-event mask that was not water before. "
            "'Before' is a pre-event water mask (any grid; it is resampled onto the post-event "
            "grid), a permanent-water polygon layer, or both. Output: 0 not flooded, 1 newly "
            "flooded, 2 water before and after, 255 no data (also where the pre-event mask has "
            "no data, since nothing is known there). Returns the newly flooded area in km²: on "
            "geographic grids such as EPSG:4326 from each row's true pixel area on the WGS 84 "
            "ellipsoid; on projected grids from the pixel size in map units while the "
            "projection's areal scale stays within 0.2 % of 1 across the grid (UTM inside its "
            "zone), else from each pixel's true area (Web Mercator, EPSG:3857).")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("POST", "Post-event water mask"))
        self.addParameter(QgsProcessingParameterRasterLayer("PRE", "Pre-event water mask", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "PERMANENT", "Permanent water polygons", [QgsProcessing.SourceType.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Flood extent"))
        self.addOutput(QgsProcessingOutputNumber("FLOODED_AREA_KM2", "Newly flooded area (km²)"))
        self.addOutput(QgsProcessingOutputNumber("FLOODED_PIXELS", "Newly flooded pixels"))

    @frees_inputs
    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.inputs(parameters)   # no project layer: see prepareAlgorithm
        post = check_mask_layer(self.parameterAsRasterLayer(parameters, "POST", context), "Post-event mask",
                                parameters.get("POST"))
        pre = self.parameterAsRasterLayer(parameters, "PRE", context)
        if pre is None and parameters.get("PRE") not in (None, ""):   # given, but opens nothing
            check_mask_layer(None, "Pre-event mask", parameters.get("PRE"))
        permanent = self.parameterAsSource(parameters, "PERMANENT", context)
        if pre is None and permanent is None:
            raise QgsProcessingException("Give a pre-event water mask, a permanent-water layer, or both: "
                                         "the flood extent is post-event water minus water before")
        if permanent is not None:   # a line layer would be burnt in as permanent water
            check_polygons(permanent, "Permanent water polygons")
        check_binary_mask(post, "Post-event mask")
        check_nodata_in_file(post, "Post-event mask")
        destination = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        self.check_destination(destination, "OUTPUT", [post, pre], feedback)
        self.backend_interpreter()  # its last step: found missing only after the others ran
        extent, crs = post.extent(), post.crs()
        if pre is not None:
            check_mask_layer(pre, "Pre-event mask")
            check_binary_mask(pre, "Pre-event mask")
            # warped onto the post-event grid with NODATA as its no data, which a NODATA pixel stays
            check_nodata_in_file(pre, "Pre-event mask", made_nodata=(NODATA,))
            covered = QgsCoordinateTransform(pre.crs(), crs, context.transformContext()
                                             ).transformBoundingBox(pre.extent())
            if not covered.intersects(extent):
                raise QgsProcessingException(
                    f"Pre-event mask '{pre.name()}' does not overlap the post-event mask "
                    f"'{post.name()}': nothing would be known of the water before the event")
            if not covered.contains(extent):
                feedback.pushWarning(f"Pre-event mask '{pre.name()}' covers only part of the "
                                     f"post-event mask: the rest is no data in the flood extent")

        def child(slot: int, alg: str, params: dict) -> dict:
            return self.run_child(f"step {STEP_OF_SLOT[slot]} of 4: {alg}", alg, params, context,
                                  steps.at(slot))

        inputs = {"INPUT_A": post, "BAND_A": 1}
        before = []
        # written beside the destination and renamed into place once measured: an existing
        # extent there survives a cancelled or failed run (and a killed one, whose hidden
        # file the next run removes: check_destination)
        temporary = hidden_path(destination, ".tif")
        # a failed or cancelled run's steps go too
        with Steps(len(STEP_OF_SLOT), context, feedback, self.step_files()) as steps:
            if pre is not None:
                aligned = child(0, "gdal:warpreproject", {
                    "INPUT": pre, "TARGET_CRS": crs, "RESAMPLING": 0, "NODATA": NODATA, "DATA_TYPE": 1,
                    "TARGET_EXTENT": extent, "TARGET_EXTENT_CRS": crs,
                    "EXTRA": f"-ts {post.width()} {post.height()}",
                    "OUTPUT": steps.file("pre_on_post.tif")})["OUTPUT"]
                inputs.update(INPUT_B=aligned, BAND_B=1)
                before.append("(B==1)")
            if permanent is not None:
                # into a file of its own, also in the post-event CRS: gdal:rasterize exported
                # a memory layer into Processing's folder itself, under a name never known here
                polygons = child(1, "native:reprojectlayer", {
                    "INPUT": parameters["PERMANENT"], "TARGET_CRS": crs,
                    "OUTPUT": steps.file("permanent.gpkg")})["OUTPUT"]
                burnt = child(2, "gdal:rasterize", {
                    "INPUT": polygons, "BURN": 1, "UNITS": 0, "WIDTH": post.width(), "HEIGHT": post.height(),
                    "EXTENT": extent, "INIT": 0, "DATA_TYPE": 0,
                    "OUTPUT": steps.file("permanent.tif")})["OUTPUT"]
                inputs.update(INPUT_C=burnt, BAND_C=1)
                before.append("(C==1)")
            was_water = before[0] if len(before) == 1 else f"logical_or({before[0]},{before[1]})"
            try:
                child(3, "gdal:rastercalculator", {
                    **inputs, "FORMULA": f"(A==1)*(1+1*{was_water})", "NO_DATA": NODATA, "RTYPE": 0,
                    "OPTIONS": creation_options(), "OUTPUT": temporary})
                if feedback.isCanceled():   # gdal_calc was stopped: what it wrote is incomplete
                    raise QgsProcessingException(CANCELLED)
                last = steps.at(4)
                last.setProgressText("step 4 of 4: newly flooded area (python -m backend stats)")
                try:
                    stats = self.run_backend(["stats", backend_path(temporary)], last)
                except QgsProcessingException:
                    if feedback.isCanceled():
                        raise QgsProcessingException(CANCELLED) from None
                    raise
                # GDAL's statistics (.aux.xml) and overviews (.ovr) of the file replaced describe
                # it, not the new extent: the mask checks and QGIS's rendering would read them
                for stale in (destination + ".aux.xml", destination + ".ovr"):
                    Path(stale).unlink(missing_ok=True)
                os.replace(temporary, destination)
            finally:
                for leftover in (temporary, temporary + ".aux.xml"):
                    Path(leftover).unlink(missing_ok=True)
        self.style_output(context, destination, styles.flood_extent_renderer)
        flooded, area_km2 = int(stats["water_pixels"]), float(stats["water_area_km2"])
        feedback.pushInfo(f"newly flooded: {flooded} pixels, {area_km2:.3f} km²")
        return {"OUTPUT": destination, "FLOODED_AREA_KM2": area_km2, "FLOODED_PIXELS": flooded}


def creation_options() -> str:
    """gdal:rastercalculator's creation options: the backend's for a mask (backend.sink),
    ZSTD level 1 in 512 px tiles, or DEFLATE where this GDAL has no ZSTD. Written without
    any, the extent took a byte per pixel, every other mask a few percent of that."""
    codecs = gdal.GetDriverByName("GTiff").GetMetadataItem("DMD_CREATIONOPTIONLIST") or ""
    codec = "COMPRESS=ZSTD|ZSTD_LEVEL=1" if "ZSTD" in codecs else "COMPRESS=DEFLATE"
    return f"{codec}|TILED=YES|BLOCKXSIZE=512|BLOCKYSIZE=512|BIGTIFF=IF_SAFER"
