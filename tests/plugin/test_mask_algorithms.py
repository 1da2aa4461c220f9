"""The mask-based algorithms (vectorize, flood extent, zonal statistics) on generated and real rasters.

Expected values are computed here with numpy from the arrays the test wrote, so a
wrong class, a shifted grid or a wrong area unit fails.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsPointXY,
                       QgsProcessingException, QgsRectangle, QgsVectorLayer)

from .conftest import dead_pid, read_raster, write_raster

PIXEL = 10.0
ORIGIN = (500000.0, 4200000.0)  # UTM 30N, on the central meridian: scale factor 0.9996


def _mask(tmp_path, name="post.tif") -> tuple:
    """100 x 100 mask: a 20 x 20 water square, a 2 x 2 speck, 10 rows of no data at the bottom."""
    a = np.zeros((100, 100), np.uint8)
    a[10:30, 10:30] = 1
    a[50:52, 50:52] = 1
    a[90:, :] = 255
    return write_raster(tmp_path / name, [a], nodata=255), a


def _rect_layer(crs: str, rects, field: str = "name:string", name: str = "polygons") -> QgsVectorLayer:
    """A memory layer of rectangles: (attribute, (xmin, ymin, xmax, ymax)) each."""
    layer = QgsVectorLayer(f"Polygon?crs={crs}&field={field}", name, "memory")
    features = []
    for name, rect in rects:
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(*rect)))
        f.setAttributes([name])
        features.append(f)
    layer.dataProvider().addFeatures(features)
    return layer


class _CancelAt:
    """A feedback that is cancelled when the progress text starts with ``prefix``: the
    user presses Cancel as that step begins (after run_child's own check)."""

    def __new__(cls, prefix: str):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def setProgressText(self, text):  # noqa: N802 (QGIS's name)
                super().setProgressText(text)
                if text.startswith(prefix):
                    self.cancel()

        return Feedback()


def _stale_statistics(path, earlier) -> None:
    """Leave beside ``path`` the .aux.xml GDAL (QGIS) writes when it computes statistics of
    ``earlier``, as if ``earlier`` had been the file at ``path`` before."""
    from osgeo import gdal

    ds = gdal.Open(str(earlier))
    ds.GetRasterBand(1).ComputeStatistics(False)
    ds = None
    aux = Path(str(earlier) + ".aux.xml")
    assert "STATISTICS_MAXIMUM" in aux.read_text()
    Path(str(path) + ".aux.xml").write_bytes(aux.read_bytes())


def _utm_area_m2(pixels: int) -> float:
    # true area of UTM pixels on the central meridian: nominal area / k0^2
    return pixels * PIXEL * PIXEL / 0.9996 ** 2


def _pixels_in(shape: dict) -> int:
    """The pixels a polygon of rasterio's ``shapes`` covers (pixel coordinates, holes
    taken off), measured by QGIS's geometry."""
    rings = [[QgsPointXY(x, y) for x, y in ring] for ring in shape["coordinates"]]
    return round(QgsGeometry.fromPolygonXY(rings).area())


def test_vectorize_keeps_pieces_above_the_mapping_unit(provider, tmp_path):
    import processing

    path, _ = _mask(tmp_path)
    out = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 1000,
                                                "OUTPUT": str(tmp_path / "water.gpkg")})
    layer = QgsVectorLayer(out["OUTPUT"], "w", "ogr")
    areas = [f["area_m2"] for f in layer.getFeatures()]
    assert out["POLYGON_COUNT"] == 1 == len(areas)
    assert areas[0] == pytest.approx(_utm_area_m2(400), rel=2e-4)
    # the 2 x 2 speck left out is counted, not dropped without a word
    assert out["DROPPED_COUNT"] == 1
    assert out["DROPPED_AREA_M2"] == pytest.approx(_utm_area_m2(4), rel=2e-4)

    everything = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0,
                                                       "OUTPUT": str(tmp_path / "all.gpkg")})
    kept = sorted(f["area_m2"] for f in QgsVectorLayer(everything["OUTPUT"], "a", "ogr").getFeatures())
    assert kept == pytest.approx([_utm_area_m2(4), _utm_area_m2(400)], rel=2e-4)
    assert (everything["DROPPED_COUNT"], everything["DROPPED_AREA_M2"]) == (0, 0)
    # a piece of exactly the smallest area asked for is kept
    at_the_unit = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": kept[0],
                                                        "OUTPUT": str(tmp_path / "unit.gpkg")})
    assert (at_the_unit["POLYGON_COUNT"], at_the_unit["DROPPED_COUNT"]) == (2, 0)

    # another value of the mask: the dry land, one polygon around the water's holes
    dry = processing.run("sarflood:vectorize", {"INPUT": str(path), "VALUE": 0, "MIN_AREA_M2": 0,
                                                "OUTPUT": str(tmp_path / "dry.gpkg")})
    areas = [f["area_m2"] for f in QgsVectorLayer(dry["OUTPUT"], "d", "ogr").getFeatures()]
    assert dry["POLYGON_COUNT"] == 1 == len(areas)
    assert areas[0] == pytest.approx(_utm_area_m2(90 * 100 - 404), rel=2e-4)


def test_vectorize_says_when_it_cannot_measure_the_polygons(provider, tmp_path):
    """A polygon whose area cannot be measured got an empty area, and the last step left it
    out without a word: a mask half water wrote "0 polygons". Here the mask lies in a local
    engineering CRS, not on the Earth's ellipsoid (in the review dock's tests QGIS had lost
    a UTM mask's CRS on the way)."""
    import processing
    from osgeo import gdal

    path, _ = _mask(tmp_path)
    dataset = gdal.Open(str(path), gdal.GA_Update)
    dataset.SetProjection('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]')
    dataset = None
    out = tmp_path / "water.gpkg"
    with pytest.raises(QgsProcessingException, match=rf"^2 of 2 polygons of {path} have no area: "
                       r"their ellipsoidal area could not be measured in their CRS \(site grid\)$"):
        processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0, "OUTPUT": str(out)})
    assert not out.exists()


def test_vectorize_keeps_no_memory_layer_and_leaves_no_step_behind(provider, tmp_path):
    """The dry land of a speckled mask was polygonized too, as one polygon with a hole per
    speck, and the steps after held every polygon in memory layers in QGIS's process: 1.2 GB
    and a 2 s stall of the map when they were freed, on 4096 x 4096 px of 10 % water specks.
    The steps' files then stayed in Processing's folder until QGIS exited."""
    import os

    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProcessingUtils
    from rasterio.features import shapes

    specks = (np.random.default_rng(0).random((120, 120)) < 0.1).astype(np.uint8)
    path = write_raster(tmp_path / "specks.tif", [specks], nodata=255)
    temp = QgsProcessingUtils.tempFolder()
    before = set(os.listdir(temp))
    context = QgsProcessingContext()
    out = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 250,
                                                "OUTPUT": str(tmp_path / "water.gpkg")},
                         context=context, feedback=QgsProcessingFeedback())
    steps = context.temporaryLayerStore().mapLayers().values()
    assert [layer.name() for layer in steps if layer.providerType() == "memory"] == []
    assert set(os.listdir(temp)) - before == set()
    # every water piece (4-connected, as gdal:polygonize draws them) kept or counted: 2 px
    # are 200.2 m² (UTM's scale factor), under the 250 asked for, 3 px 300.2, over it
    pixels = [_pixels_in(shape) for shape, value in shapes(specks, connectivity=4) if value == 1]
    small = [n for n in pixels if n <= 2]
    assert out["POLYGON_COUNT"] == len(pixels) - len(small)
    assert out["DROPPED_COUNT"] == len(small) > 100
    assert out["DROPPED_AREA_M2"] == pytest.approx(_utm_area_m2(sum(small)), rel=2e-4)


def test_vectorize_counts_the_file_it_wrote_when_the_project_shows_it(provider, qgis_new_project,
                                                                       tmp_path):
    """With the project in the context, the count came from the loaded layer of the same
    path, which still counted the file this run replaced."""
    import processing
    from qgis.core import QgsProcessing, QgsProcessingContext, QgsProject

    path, _ = _mask(tmp_path)
    out = str(tmp_path / "water.gpkg")
    first = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0, "OUTPUT": out})
    assert first["POLYGON_COUNT"] == 2
    QgsProject.instance().addMapLayer(QgsVectorLayer(out, "water polygons", "ogr"))
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    again = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 1000, "OUTPUT": out},
                           context=context)
    assert again["POLYGON_COUNT"] == 1 == QgsVectorLayer(out, "w", "ogr").featureCount()
    for destination in ("memory:", QgsProcessing.TEMPORARY_OUTPUT):   # not files: counted all the same
        kept = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 1000,
                                                     "OUTPUT": destination}, context=context)
        assert kept["POLYGON_COUNT"] == 1


def test_vectorize_real_label_chip_matches_pixel_count(provider, real_chips, tmp_path):
    """Sen1Floods11 Spain label (EPSG:4326): summed polygon area = water pixels x pixel area."""
    import processing

    label = real_chips / "LabelHand" / "Spain_7370579_LabelHand.tif"
    out = processing.run("sarflood:vectorize", {"INPUT": str(label), "MIN_AREA_M2": 0,
                                                "OUTPUT": str(tmp_path / "spain.gpkg")})
    total = sum(f["area_m2"] for f in QgsVectorLayer(out["OUTPUT"], "s", "ogr").getFeatures())
    from osgeo import gdal
    ds = gdal.Open(str(label))
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    water = ds.ReadAsArray() == 1
    ds = None
    rows = np.nonzero(water)[0]
    # spherical-Earth pixel area per row (authalic radius): independent of QGIS's ellipsoid code
    lat = np.radians(y0 + (rows + 0.5) * dy)
    radius = 6371007.2
    expected = np.sum((math.radians(dx) * radius) * (math.radians(-dy) * radius) * np.cos(lat))
    assert water.sum() > 1000
    assert total == pytest.approx(expected, rel=5e-3)


def test_flood_extent_against_a_pre_event_mask_on_another_grid(provider, tmp_path):
    import processing

    post_path, post = _mask(tmp_path)
    # pre-event mask at 20 m: water over the left half of the square, 255 in the top-left corner
    pre = np.zeros((50, 50), np.uint8)
    pre[5:15, 5:10] = 1
    pre[0:2, 0:2] = 255
    pre_path = write_raster(tmp_path / "pre.tif", [pre], pixel=20.0, nodata=255)
    out = processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                  "OUTPUT": str(tmp_path / "flood.tif")})
    got = read_raster(out["OUTPUT"])
    pre_on_post = np.kron(pre, np.ones((2, 2), np.uint8))
    expected = np.where(post == 1, np.where(pre_on_post == 1, 2, 1), 0).astype(np.uint8)
    expected[(post == 255) | (pre_on_post == 255)] = 255
    np.testing.assert_array_equal(got, expected)
    flooded = int((expected == 1).sum())
    assert out["FLOODED_PIXELS"] == flooded
    # the backend measures projected grids in map units (as predict does): 10 m x 10 m
    assert out["FLOODED_AREA_KM2"] == pytest.approx(flooded * PIXEL * PIXEL / 1e6, rel=1e-9)


def test_flood_extent_against_a_pre_event_mask_in_another_crs(provider, tmp_path):
    """A pre-event mask in UTM 31N over a post-event one in 30N (grids rotated 6 degrees
    apart): taken onto the post-event grid, not laid pixel on pixel. Nearest-neighbour
    twice may move an edge by a pixel; the inside of each part is exact."""
    import processing
    from osgeo import gdal

    post_path, post = _mask(tmp_path)
    pre = np.zeros((100, 100), np.uint8)
    pre[10:20, 10:30] = 1   # the square's top half was water before
    pre_30n = write_raster(tmp_path / "pre_30n.tif", [pre], nodata=255)
    pre_31n = str(tmp_path / "pre_31n.tif")
    gdal.Warp(pre_31n, str(pre_30n), dstSRS="EPSG:32631", resampleAlg="near", xRes=5.0, yRes=5.0)
    out = processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": pre_31n,
                                                  "OUTPUT": str(tmp_path / "flood.tif")})
    got = read_raster(out["OUTPUT"])
    assert (got[11:19, 11:29] == 2).all() and (got[21:30, 10:30] == 1).all()
    before = np.argwhere(got == 2)
    assert (before.min(axis=0) >= 9).all() and (before.max(axis=0) <= [20, 30]).all()
    assert abs(len(before) - 200) <= 20   # 10 x 20 pixels, give or take an edge row


def test_flood_extent_says_a_pre_event_mask_covers_part_and_leaves_the_rest_no_data(provider, tmp_path):
    import processing

    from .test_map_water import WarningsFeedback

    post_path, post = _mask(tmp_path)
    # the west half of the post-event mask's ground, all dry before
    half = write_raster(tmp_path / "west.tif", [np.zeros((100, 50), np.uint8)], nodata=255)
    feedback = WarningsFeedback()
    out = processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(half),
                                                  "OUTPUT": str(tmp_path / "flood.tif")},
                         feedback=feedback)
    assert feedback.warnings == ["Pre-event mask 'west' covers only part of the post-event mask: "
                                 "the rest is no data in the flood extent"]
    got = read_raster(out["OUTPUT"])
    assert (got[:, 50:] == 255).all()
    np.testing.assert_array_equal(got[:, :50], post[:, :50])   # all new water, or dry, or no data


def test_flood_extent_area_on_a_geographic_grid_is_exact_per_row(provider, tmp_path):
    """EPSG:4326, 600 rows of 0.002 deg (50.6 N to 49.4 N), more new water in the north."""
    import processing

    from tests.backend.areas import metres_per_degree_exact, row_areas_m2

    deg, top = 0.002, 50.6
    rng = np.random.default_rng(7)
    post = (rng.random((600, 300)) < 0.2).astype(np.uint8)
    post[:200][rng.random((200, 300)) < 0.6] = 1
    post[rng.random(post.shape) < 0.02] = 255
    pre = (rng.random(post.shape) < 0.1).astype(np.uint8)
    kw = dict(epsg=4326, pixel=deg, origin=(5.0, top), nodata=255)
    post_path = write_raster(tmp_path / "post.tif", [post], **kw)
    pre_path = write_raster(tmp_path / "pre.tif", [pre], **kw)
    out = processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                  "OUTPUT": str(tmp_path / "flood.tif")})
    new = (post == 1) & (pre == 0)
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]) == 1, new)
    expected_km2 = new.sum(axis=1) @ row_areas_m2(top, deg, 600) / 1e6
    assert out["FLOODED_PIXELS"] == int(new.sum())
    assert out["FLOODED_AREA_KM2"] == pytest.approx(expected_km2, rel=1e-6)
    # one pixel measured at the grid's centre (the former way) is off by more than that
    mx, my = metres_per_degree_exact(top - 300 * deg)
    assert abs(new.sum() * deg * deg * mx * my / 1e6 / expected_km2 - 1) > 2e-3


def test_flood_extent_minus_permanent_water_in_another_crs(provider, tmp_path):
    import processing
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject)

    post_path, post = _mask(tmp_path)
    # permanent water: the top 5 rows of the square, drawn in EPSG:4326
    utm = QgsRectangle(ORIGIN[0] + 100, ORIGIN[1] - 150, ORIGIN[0] + 300, ORIGIN[1] - 100)
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32630"),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    wgs = to_wgs84.transformBoundingBox(utm)
    # shrink by a fraction of a pixel so the reprojected edge does not touch the next pixel centre
    pad_x, pad_y = wgs.width() * 0.01, wgs.height() * 0.05
    rect = (wgs.xMinimum() + pad_x, wgs.yMinimum() + pad_y, wgs.xMaximum() - pad_x, wgs.yMaximum() - pad_y)
    permanent = _rect_layer("EPSG:4326", [("lake", rect)])
    out = processing.run("sarflood:floodextent", {"POST": str(post_path), "PERMANENT": permanent,
                                                  "OUTPUT": str(tmp_path / "flood.tif")})
    got = read_raster(out["OUTPUT"])
    expected = np.where(post == 1, 1, 0).astype(np.uint8)
    expected[10:15, 10:30] = 2
    expected[post == 255] = 255
    np.testing.assert_array_equal(got, expected)
    flooded = int((expected == 1).sum())
    assert out["FLOODED_PIXELS"] == flooded
    assert out["FLOODED_AREA_KM2"] == pytest.approx(flooded * PIXEL * PIXEL / 1e6, rel=1e-9)


def test_flood_extent_refuses_bad_inputs(provider, tmp_path):
    import processing

    post_path, _ = _mask(tmp_path)
    with pytest.raises(QgsProcessingException, match="pre-event water mask, a permanent-water layer"):
        processing.run("sarflood:floodextent", {"POST": str(post_path), "OUTPUT": str(tmp_path / "f.tif")})
    stack = write_raster(tmp_path / "stack.tif", [np.zeros((8, 8), np.uint8)] * 2)
    with pytest.raises(QgsProcessingException, match=r"'stack' has 2 bands"):
        processing.run("sarflood:floodextent", {"POST": str(stack), "PRE": str(post_path),
                                                "OUTPUT": str(tmp_path / "f.tif")})
    prob = write_raster(tmp_path / "prob.tif", [np.full((8, 8), 0.7, np.float32)])
    with pytest.raises(QgsProcessingException, match=r"'prob' holds non-integer values"):
        processing.run("sarflood:floodextent", {"POST": str(prob), "PRE": str(post_path),
                                                "OUTPUT": str(tmp_path / "f.tif")})
    assert not (tmp_path / "f.tif").exists()


def test_flood_extent_keeps_its_inputs_and_says_what_it_cannot_know(provider, tmp_path):
    import processing

    post_path, _ = _mask(tmp_path)
    pre_path, _ = _mask(tmp_path, "pre.tif")
    before = post_path.read_bytes()
    # the output was the post-event mask itself: it was overwritten without a word
    for given in (post_path, pre_path):
        with pytest.raises(QgsProcessingException, match=r"OUTPUT: .* is the input '(post|pre)'"):
            processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                    "OUTPUT": str(given)})
    assert post_path.read_bytes() == before
    for out, match in ((str(tmp_path / "f.gpkg"), "must be a GeoTIFF"),
                       ("/proc/f.tif", "cannot write /proc/f.tif")):
        with pytest.raises(QgsProcessingException, match=match):
            processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                    "OUTPUT": out})
    # a pre-event mask elsewhere: 0 km² of new water was reported, as if nothing had flooded
    far = write_raster(tmp_path / "far.tif", [np.zeros((50, 50), np.uint8)], nodata=255,
                       origin=(ORIGIN[0] + 50000, ORIGIN[1]))
    with pytest.raises(QgsProcessingException, match="'far' does not overlap the post-event mask"):
        processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(far),
                                                "OUTPUT": str(tmp_path / "f.tif")})
    # a flood extent (2: water before and after) is not a water mask
    extent = processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                     "OUTPUT": str(tmp_path / "fe.tif")})["OUTPUT"]
    with pytest.raises(QgsProcessingException, match="'fe' holds values from 0 to 2"):
        processing.run("sarflood:floodextent", {"POST": extent, "PRE": str(pre_path),
                                                "OUTPUT": str(tmp_path / "f.tif")})
    assert not (tmp_path / "f.tif").exists() and not (tmp_path / "f.gpkg").exists()


def test_flood_extent_refuses_a_post_event_no_data_set_in_qgis_only(provider, qgis_new_project, tmp_path):
    """255 set as no data on the post-event mask's layer in QGIS, not in its file: the mask
    check left it out, but gdal_calc, reading the file, made those pixels 0 (not flooded).
    On the pre-event mask it works: warped with 255 as no data, a 255 pixel stays no data."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer, QgsRasterRange

    _, a = _mask(tmp_path)
    undeclared = write_raster(tmp_path / "undeclared.tif", [a])   # 255, not declared no data
    declared, _ = _mask(tmp_path, "declared.tif")
    layer = QgsRasterLayer(str(undeclared), "undeclared")
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(255, 255)])
    QgsProject.instance().addMapLayer(layer)
    with pytest.raises(QgsProcessingException,
                       match=rf"^Post-event mask 'undeclared': 255 is no data in QGIS only \(Layer Properties "
                             rf"> Transparency\), and GDAL reads the file, where those pixels would be taken "
                             rf"for dry land; write the no-data value into the file \(gdal_edit.py -a_nodata "
                             rf"255 {undeclared}\), or clear it in QGIS"):
        processing.run("sarflood:floodextent", {"POST": layer.id(), "PRE": str(declared),
                                                "OUTPUT": str(tmp_path / "f.tif")})
    assert not (tmp_path / "f.tif").exists()
    out = processing.run("sarflood:floodextent", {"POST": str(declared), "PRE": layer.id(),
                                                  "OUTPUT": str(tmp_path / "f.tif")})["OUTPUT"]
    assert (read_raster(out) == 255).sum() == (a == 255).sum()


def test_correct_mask_refuses_a_no_data_set_in_qgis_only(provider, qgis_new_project, tmp_path):
    """0 set as no data on the mask's layer in QGIS only: the backend reads the file, and
    burnt the corrections into those pixels as dry land."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer, QgsRasterRange

    path, _ = _mask(tmp_path)
    layer = QgsRasterLayer(str(path), "zero hidden")
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(0, 0)])
    QgsProject.instance().addMapLayer(layer)
    x0, y0 = ORIGIN
    fixes = _rect_layer("EPSG:32630", [(1, (x0, y0 - 100, x0 + 100, y0))], field="water:integer")
    with pytest.raises(QgsProcessingException,
                       match=r"^Water mask 'zero hidden': 0 is no data in QGIS only"):
        processing.run("sarflood:correctmask", {"INPUT": layer.id(), "CORRECTIONS": fixes,
                                                "OUTPUT": str(tmp_path / "c.tif")})
    assert not (tmp_path / "c.tif").exists()


def test_a_flood_extent_given_as_a_water_mask_is_refused_saying_how_to_count_it(provider, tmp_path):
    """zonalwater and correctmask refused a flood extent (0, 1, 2) as any raster of wrong
    values, without a word of what it is or how to get the flooded area per polygon. The
    way the refusal gives, followed, gives it."""
    import processing

    post, _ = _mask(tmp_path)
    before = np.zeros((100, 100), np.uint8)
    before[10:20, :] = 1   # the top half of the square was water before
    pre = write_raster(tmp_path / "pre.tif", [before], nodata=255)
    extent = processing.run("sarflood:floodextent", {"POST": str(post), "PRE": str(pre),
                                                     "OUTPUT": str(tmp_path / "fe.tif")})["OUTPUT"]
    zones = _north_south_zones()
    x0, y0 = ORIGIN
    water = _rect_layer("EPSG:32630", [(1, (x0, y0 - 100, x0 + 100, y0))], field="water:integer")
    said = (r"^Water mask 'fe' holds values from 0 to 2 \(no data 255\): it looks like a flood extent "
            r"\(floodextent's output: 0 not flooded, 1 newly flooded, 2 water before and after\), not a "
            r"water mask \(0 dry, 1 water\); reclassify it first with native:reclassifybytable \(Reclassify "
            r"by table\), table row minimum 1, maximum 2, value 0 to keep the newly flooded water only")
    with pytest.raises(QgsProcessingException, match=said):
        processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": extent, "OUTPUT": "memory:"})
    with pytest.raises(QgsProcessingException, match=said):
        processing.run("sarflood:correctmask", {"INPUT": extent, "CORRECTIONS": water,
                                                "OUTPUT": str(tmp_path / "c.tif")})
    flooded = processing.run("native:reclassifybytable", {
        "INPUT_RASTER": extent, "RASTER_BAND": 1, "TABLE": [1, 2, 0], "NO_DATA": 255, "DATA_TYPE": 0,
        "OUTPUT": str(tmp_path / "flooded.tif")})["OUTPUT"]
    out = processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": flooded,
                                                 "OUTPUT": "memory:"})["OUTPUT"]
    new = read_raster(extent) == 1
    assert {f["name"]: f["water_px"] for f in out.getFeatures()} == {
        "north": int(new[:40].sum()), "south": int(new[40:].sum())}
    assert new[20:30, 10:30].all() and not new[10:20].any()


def test_flood_extent_checks_the_backend_before_its_gdal_steps(provider, tmp_path):
    """The backend measures the area in the last step: a Python without its packages was
    found only after the flood extent had been written."""
    import processing
    from qgis.core import QgsSettings

    post_path, _ = _mask(tmp_path)
    pre_path, _ = _mask(tmp_path, "pre.tif")
    QgsSettings().setValue("sarflood/python", "/usr/bin/python3")   # Debian's: no onnxruntime
    try:
        with pytest.raises(QgsProcessingException, match="onnxruntime"):
            processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                    "OUTPUT": str(tmp_path / "fe.tif")})
    finally:
        QgsSettings().remove("sarflood/python")
    assert not (tmp_path / "fe.tif").exists()


def test_flood_extent_cancelled_in_its_last_step_leaves_nothing(provider, tmp_path):
    """It said the backend wrote no output while the extent gdal had written stayed."""
    import processing
    from qgis.core import QgsProcessingFeedback

    class CancelAtTheArea(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802 (QGIS's name)
            super().setProgressText(text)
            if text.startswith("step 4 of 4"):
                self.cancel()

    post_path, _ = _mask(tmp_path)
    pre_path, _ = _mask(tmp_path, "pre.tif")
    with pytest.raises(QgsProcessingException, match="cancelled: no flood extent was written"):
        processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                "OUTPUT": str(tmp_path / "fe.tif")},
                       feedback=CancelAtTheArea())
    assert not (tmp_path / "fe.tif").exists()


def test_zonal_water_per_polygon(provider, tmp_path):
    import processing

    path, a = _mask(tmp_path)
    x0, y0 = ORIGIN
    zones = _rect_layer("EPSG:32630", [
        ("north", (x0, y0 - 400, x0 + 1000, y0)),          # rows 0-39: the whole square
        ("south", (x0, y0 - 1000, x0 + 1000, y0 - 400)),   # rows 40-99: speck + no-data rows
    ])
    out = processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path),
                                                 "OUTPUT": "memory:"})
    rows = {f["name"]: f for f in out["OUTPUT"].getFeatures()}
    for name, block in (("north", a[:40]), ("south", a[40:])):
        valid = int((block != 255).sum())
        water = int((block == 1).sum())
        assert rows[name]["valid_px"] == valid
        assert rows[name]["water_px"] == water
        assert rows[name]["water_frac"] == pytest.approx(water / valid)
        # on UTM a polygon is one piece, its pixels' area measured whole
        assert rows[name]["water_km2"] == pytest.approx(_utm_area_m2(water) / 1e6, rel=1e-5)

    # run again on its own output with another mask: the fields are replaced, not kept
    # (QgsFields.append refused the duplicates and the first run's numbers came back)
    dry = write_raster(tmp_path / "dry.tif", [np.where(a == 255, 255, 0).astype(np.uint8)],
                       nodata=255)
    again = processing.run("sarflood:zonalwater", {"POLYGONS": out["OUTPUT"], "MASK": str(dry),
                                                   "OUTPUT": "memory:"})["OUTPUT"]
    assert [f.name() for f in again.fields()] == ["name", "valid_px", "water_px", "water_frac",
                                                  "water_km2"]
    assert all(f["water_px"] == 0 for f in again.getFeatures())
    # a raster of other values (a flood extent's 2s, or a mask whose 255 is not no data)
    # would be summed as water
    undeclared = write_raster(tmp_path / "undeclared.tif", [a])
    with pytest.raises(QgsProcessingException, match="'undeclared' holds values from 0 to 255"):
        processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(undeclared),
                                               "OUTPUT": "memory:"})


def test_zonal_water_takes_polygons_in_another_crs_to_the_masks(provider, tmp_path):
    """Zones in WGS 84 (administrative areas, most often) over a UTM mask: taken to the
    mask's CRS, they count its pixels; untransformed, every zone counted none without a
    word. A zone off the mask has no water share (NULL), not 0 %."""
    import processing
    from qgis.core import NULL, QgsCoordinateTransform, QgsProject

    path, a = _mask(tmp_path)
    x0, y0 = ORIGIN
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32630"),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    zones = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "zones", "memory")
    features = []
    # 1 m inside the pixel edges: a bent edge stays 4 m from any pixel centre
    for name, rect in (("north", (x0 + 1, y0 - 399, x0 + 999, y0 - 1)),
                       ("south", (x0 + 1, y0 - 999, x0 + 999, y0 - 401)),
                       ("off the mask", (x0 + 5000, y0 - 1000, x0 + 6000, y0))):
        feature = QgsFeature(zones.fields())
        geometry = QgsGeometry.fromRect(QgsRectangle(*rect))
        geometry.transform(to_wgs84)
        feature.setGeometry(geometry)
        feature.setAttributes([name])
        features.append(feature)
    zones.dataProvider().addFeatures(features)
    out = processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path),
                                                 "OUTPUT": "memory:"})["OUTPUT"]
    assert out.crs().authid() == "EPSG:4326"   # the zones as they were given
    rows = {f["name"]: f for f in out.getFeatures()}
    for name, block in (("north", a[:40]), ("south", a[40:])):
        assert (rows[name]["valid_px"], rows[name]["water_px"]) == (int((block != 255).sum()),
                                                                    int((block == 1).sum()))
    off = rows["off the mask"]
    assert (off["valid_px"], off["water_px"], off["water_km2"]) == (0, 0, 0)
    assert off["water_frac"] == NULL


def _features_layer(spec: str, rows) -> QgsVectorLayer:
    """A memory layer of ``spec`` ("Polygon?crs=...&field=...") holding (attributes, rect) rows."""
    layer = QgsVectorLayer(spec, "polygons", "memory")
    features = []
    for attributes, rect in rows:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(*rect)))
        feature.setAttributes(attributes)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def test_zonal_water_replaces_its_fields_in_any_case_and_writes_every_polygon(provider, tmp_path):
    """Polygons holding WATER_KM2 and VALID_PX (upper case, as in a shapefile): into a
    GeoPackage the run failed on a duplicate column yet said OK with an empty layer; into a
    shapefile the new fields were renamed valid_px_1 and water_km_1, and water_km2 found the
    old value. Polygons merged from two layers (Merge vector layers keeps each one's fid:
    1, 2, 1, 2) lost half their features in a GeoPackage, the run said OK."""
    import processing

    path, a = _mask(tmp_path)
    x0, y0 = ORIGIN
    whole = (x0, y0 - 1000, x0 + 1000, y0)
    old = _features_layer("Polygon?crs=EPSG:32630&field=NAME:string&field=WATER_KM2:double"
                          "&field=VALID_PX:double", [(["A", 99.0, 1.0], whole)])
    admin = processing.run("native:savefeatures", {"INPUT": old,
                                                   "OUTPUT": str(tmp_path / "admin.shp")})["OUTPUT"]
    valid, water = int((a != 255).sum()), int((a == 1).sum())
    for name in ("zones.gpkg", "zones.shp"):
        out = processing.run("sarflood:zonalwater", {"POLYGONS": admin, "MASK": str(path),
                                                     "OUTPUT": str(tmp_path / name)})["OUTPUT"]
        layer = QgsVectorLayer(out, "zones", "ogr")
        assert [n for n in layer.fields().names() if n != "fid"] == [
            "NAME", "valid_px", "water_px", "water_frac", "water_km2"], name
        [row] = list(layer.getFeatures())
        assert (row["valid_px"], row["water_px"]) == (valid, water), name
        assert row["water_km2"] == pytest.approx(_utm_area_m2(water) / 1e6, rel=1e-5), name

    merged = _features_layer("Polygon?crs=EPSG:32630&field=fid:long&field=name:string", [
        ([fid, f"{name}{fid}"], (x0 + 500 * k, y0 - 500 * fid, x0 + 500 * (k + 1), y0 - 500 * (fid - 1)))
        for k, name in enumerate("ab") for fid in (1, 2)])
    out = processing.run("sarflood:zonalwater", {"POLYGONS": merged, "MASK": str(path),
                                                 "OUTPUT": str(tmp_path / "merged.gpkg")})["OUTPUT"]
    rows = {f["name"]: f["water_px"] for f in QgsVectorLayer(out, "merged", "ogr").getFeatures()}
    assert rows == {"a1": int((a[:50, :50] == 1).sum()), "a2": int((a[50:, :50] == 1).sum()),
                    "b1": int((a[:50, 50:] == 1).sum()), "b2": int((a[50:, 50:] == 1).sum())}


def test_zonal_water_says_when_a_polygon_cannot_be_written(provider, tmp_path):
    """A field the GeoPackage cannot take (named as its geometry column): the run said OK,
    its output empty."""
    import processing

    path, _ = _mask(tmp_path)
    x0, y0 = ORIGIN
    geom = _rect_layer("EPSG:32630", [("x", (x0, y0 - 1000, x0 + 1000, y0))], field="geom:string")
    with pytest.raises(QgsProcessingException, match=r"^OUTPUT: polygon 1 could not be written to "
                                                     r".*/bad\.gpkg: .*duplicate column name: geom"):
        processing.run("sarflood:zonalwater", {"POLYGONS": geom, "MASK": str(path),
                                               "OUTPUT": str(tmp_path / "bad.gpkg")})
    assert not (tmp_path / "bad.gpkg").exists()


def test_a_cancelled_zonal_run_is_not_reported_as_done(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback

    class CancelWhenCounted(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802 (QGIS's name)
            super().setProgressText(text)
            if text.startswith("water share"):   # after the child, in the loop over polygons
                self.cancel()

    path, _ = _mask(tmp_path)
    x0, y0 = ORIGIN
    zones = _rect_layer("EPSG:32630", [("all", (x0, y0 - 1000, x0 + 1000, y0))])
    with pytest.raises(QgsProcessingException, match="cancelled: the statistics are incomplete"):
        processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path),
                                               "OUTPUT": "memory:"}, feedback=CancelWhenCounted())


def test_correct_mask_burns_water_and_dry_polygons(provider, tmp_path):
    """Polygons in EPSG:3857 on a UTM mask: each pixel whose centre they cover takes their
    value, the later polygon winning; no data stays; the area is counted again."""
    import processing
    from qgis.core import QgsCoordinateTransform, QgsProject

    mask_path, a = _mask(tmp_path)
    to_3857 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32630"),
                                     QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())

    def box(c0, r0, c1, r1):   # pixel columns c0..c1-1, rows r0..r1-1, corners moved to 3857
        x0, x1 = ORIGIN[0] + c0 * PIXEL, ORIGIN[0] + c1 * PIXEL
        y0, y1 = ORIGIN[1] - r1 * PIXEL, ORIGIN[1] - r0 * PIXEL
        p, q = to_3857.transform(QgsPointXY(x0, y0)), to_3857.transform(QgsPointXY(x1, y1))
        return p.x(), p.y(), q.x(), q.y()

    # a dry box over the speck, a water box on dry land, a water box reaching into no data
    layer = _rect_layer("EPSG:3857", [(0, box(48, 48, 55, 55)), (1, box(60, 60, 70, 66)),
                                      (1, box(5, 85, 15, 95))], "water:integer", "fixes")
    out = processing.run("sarflood:correctmask", {
        "INPUT": str(mask_path), "CORRECTIONS": layer, "FIELD": "water",
        "OUTPUT": str(tmp_path / "fixed.tif")})
    want = a.copy()
    want[48:55, 48:55] = 0
    want[60:66, 60:70] = 1
    want[85:90, 5:15] = 1          # rows 90.. are no data and stay so
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), want)
    assert out["CORRECTED_PIXELS"] == int((want != a).sum()) == 4 + 60 + 50
    # the backend's areas on a UTM grid are its nominal pixel areas (backend/README.md)
    assert out["WATER_AREA_KM2"] == pytest.approx((want == 1).sum() * PIXEL ** 2 / 1e6, rel=1e-6)
    # the provenance tag names the polygons it burnt in: kept beside the mask (it named a
    # temporary file, removed when the run ended)
    from osgeo import gdal
    kept = tmp_path / "fixed.corrections.geojson"
    assert str(kept) in gdal.Open(out["OUTPUT"]).GetMetadataItem("SARFLOOD_CORRECTIONS")
    assert len(json.loads(kept.read_text())["features"]) == 3


def test_correct_mask_reads_the_field_it_is_given(provider, tmp_path):
    """An analyst's layer with its own column of classes beside a 'water' one that says
    otherwise: the FIELD chosen is the one burnt in."""
    import processing

    path, a = _mask(tmp_path)
    x0, y0 = ORIGIN
    layer = QgsVectorLayer("Polygon?crs=EPSG:32630&field=water:integer&field=checked:integer",
                           "fixes", "memory")
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0 + 600, y0 - 700, x0 + 700, y0 - 600)))
    feature.setAttributes([0, 1])   # 'water' says dry, 'checked' says water
    layer.dataProvider().addFeatures([feature])
    out = processing.run("sarflood:correctmask", {"INPUT": str(path), "CORRECTIONS": layer,
                                                  "FIELD": "checked", "OUTPUT": str(tmp_path / "c.tif")})
    want = a.copy()
    want[60:70, 60:70] = 1
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), want)
    assert out["CORRECTED_PIXELS"] == 100


def test_a_cancelled_correct_mask_puts_back_the_polygons_it_replaced(provider, tmp_path):
    """The polygons of the run before, kept beside its corrected mask, are replaced before
    the backend runs: cancelled then (as the new polygons are written), the run leaves the
    mask and its polygons as they were, and nothing beside them."""
    import processing
    from qgis.core import QgsProcessingFeedback

    class CancelOnceWritten(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 (QGIS's name)
            super().pushInfo(info)
            if " correction polygons, kept in " in info:
                self.cancel()

    path, _ = _mask(tmp_path)
    x0, y0 = ORIGIN

    def correct(water: int, feedback=None) -> dict:
        fixes = _rect_layer("EPSG:32630", [(water, (x0 + 600, y0 - 700, x0 + 700, y0 - 600))],
                            "water:integer", "fixes")
        return processing.run("sarflood:correctmask", {
            "INPUT": str(path), "CORRECTIONS": fixes, "OUTPUT": str(tmp_path / "fixed.tif")},
            feedback=feedback)

    correct(1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(QgsProcessingException,
                       match="^cancelled: the backend was stopped and wrote no output$"):
        correct(0, CancelOnceWritten())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_correct_mask_says_which_feature_is_wrong(provider, tmp_path):
    import processing

    mask_path, _ = _mask(tmp_path)
    layer = _rect_layer("EPSG:32630", [("water", (500100, 4199700, 500200, 4199800)),
                                       ("maybe", (500300, 4199700, 500400, 4199800))],
                        "water:string", "fixes")
    with pytest.raises(QgsProcessingException, match=r"'fixes': feature 2 has water = 'maybe'"):
        processing.run("sarflood:correctmask", {
            "INPUT": str(mask_path), "CORRECTIONS": layer,   # FIELD: 'water' by default
            "OUTPUT": str(tmp_path / "fixed.tif")})
    assert not (tmp_path / "fixed.tif").exists()


def test_correct_mask_names_a_polygon_layer_without_crs(provider, tmp_path):
    """Polygons of a layer with no CRS were left where they were and handed to the backend
    as longitudes: its error named the GeoJSON the run had written and deleted, not the layer."""
    import processing

    mask_path, _ = _mask(tmp_path)
    layer = QgsVectorLayer("Polygon?field=water:integer", "nocrs", "memory")
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(500100, 4199700, 500200, 4199800)))
    f.setAttributes([1])
    layer.dataProvider().addFeatures([f])
    layer.setCrs(QgsCoordinateReferenceSystem())   # as a shapefile without its .prj
    assert not layer.crs().isValid()
    with pytest.raises(QgsProcessingException,
                       match=r"^Correction polygons 'nocrs': has no CRS; set the one its polygons"):
        processing.run("sarflood:correctmask", {"INPUT": str(mask_path), "CORRECTIONS": layer,
                                                "OUTPUT": str(tmp_path / "fixed.tif")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.tif"]


def test_a_mask_whose_file_has_no_crs_is_refused_before_any_work(provider, qgis_new_project, tmp_path):
    """A mask file without a CRS: vectorize said OK with 0 polygons (no area), zonalwater
    gave water_km2 NaN, floodextent failed at its last step naming a hidden file. A CRS set
    on its layer in QGIS only did not reach GDAL and the backend, which read the file."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer

    path, _ = _mask(tmp_path, "nocrs.tif")
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.SetProjection("")
    ds = None
    pre, _ = _mask(tmp_path, "pre.tif")
    x0, y0 = ORIGIN
    water = _rect_layer("EPSG:32630", [(1, (x0, y0 - 100, x0 + 100, y0))], field="water:integer")
    out = tmp_path / "out"
    out.mkdir()

    def refused(mask, said):
        for alg, params, role in (
                ("vectorize", {"INPUT": mask, "OUTPUT": str(out / "v.gpkg")}, "Water mask"),
                ("zonalwater", {"POLYGONS": water, "MASK": mask, "OUTPUT": str(out / "z.gpkg")}, "Water mask"),
                ("floodextent", {"POST": mask, "PRE": str(pre), "OUTPUT": str(out / "f.tif")},
                 "Post-event mask"),
                ("floodextent", {"POST": str(pre), "PRE": mask, "OUTPUT": str(out / "f.tif")},
                 "Pre-event mask"),
                ("correctmask", {"INPUT": mask, "CORRECTIONS": water, "OUTPUT": str(out / "c.tif")},
                 "Water mask")):
            with pytest.raises(QgsProcessingException, match=rf"^{role} 'nocrs': its file {path} {said}"):
                processing.run(f"sarflood:{alg}", params)
            assert list(out.iterdir()) == [], alg

    refused(str(path), r"has no CRS; write the right one into the file \(Raster > Projections")
    # (before the project shows it: Processing would take the path for the project's layer)
    set_in_qgis = QgsRasterLayer(str(path), "nocrs")
    set_in_qgis.setCrs(QgsCoordinateReferenceSystem("EPSG:32630"))
    QgsProject.instance().addMapLayer(set_in_qgis)
    refused(set_in_qgis.id(), r"has no CRS \(its layer's, EPSG:32630 - WGS 84 / UTM zone 30N, is set "
                              r"in QGIS only, and GDAL and the backend read the file\); write")


def test_a_mask_layer_whose_crs_is_set_over_its_files_is_refused(provider, qgis_new_project,
                                                                  tmp_path):
    """A CRS set on the mask's layer over its file's own: zonalwater placed the polygons by
    the layer's CRS while vectorize, floodextent and correctmask read the file's."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    path, _ = _mask(tmp_path, "mask.tif")   # EPSG:32630 in the file
    pre, _ = _mask(tmp_path, "pre.tif")
    x0, y0 = ORIGIN
    water = _rect_layer("EPSG:32630", [(1, (x0, y0 - 100, x0 + 100, y0))], field="water:integer")
    layer = QgsRasterLayer(str(path), "relabelled")
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32631"))
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "out"
    out.mkdir()
    for alg, params, role in (
            ("vectorize", {"INPUT": layer.id(), "OUTPUT": str(out / "v.gpkg")}, "Water mask"),
            ("zonalwater", {"POLYGONS": water, "MASK": layer.id(), "OUTPUT": str(out / "z.gpkg")},
             "Water mask"),
            ("floodextent", {"POST": layer.id(), "PRE": str(pre), "OUTPUT": str(out / "f.tif")},
             "Post-event mask"),
            ("correctmask", {"INPUT": layer.id(), "CORRECTIONS": water, "OUTPUT": str(out / "c.tif")},
             "Water mask")):
        with pytest.raises(QgsProcessingException,
                           match=rf"^{role} 'relabelled': its layer's CRS, EPSG:32631 - WGS 84 / UTM "
                                 rf"zone 31N, is set in QGIS over its file's, EPSG:32630"):
            processing.run(f"sarflood:{alg}", params)
        assert list(out.iterdir()) == [], alg


def test_vectorize_cancelled_in_its_last_step_leaves_no_polygons(provider, tmp_path):
    """native:extractbyexpression stops at a cancel and returns what it had written: the run
    reported success with a truncated layer."""
    import processing

    rng = np.random.default_rng(5)
    speckle = (rng.random((100, 100)) < 0.3).astype(np.uint8)   # many polygons
    path = write_raster(tmp_path / "speckle.tif", [speckle], nodata=255)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for output in ("water.gpkg", "water.shp"):
        with pytest.raises(QgsProcessingException, match="cancelled"):
            processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0,
                                                  "OUTPUT": str(out_dir / output)},
                           feedback=_CancelAt("step 4 of 4"))
        assert sorted(p.name for p in out_dir.iterdir()) == []
    done = processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0,
                                                 "OUTPUT": str(out_dir / "water.gpkg")})
    assert done["POLYGON_COUNT"] > 100


def test_vectorize_cancelled_part_way_leaves_no_step_behind(provider, tmp_path):
    """The steps were removed only after a run that succeeded: a cancel (or a failing step)
    left the ones already written in Processing's folder until QGIS exited, a full scene's
    reclassified raster and GeoPackages of every speck per run."""
    import os

    import processing
    from qgis.core import QgsProcessingUtils

    path, _ = _mask(tmp_path)
    temp = QgsProcessingUtils.tempFolder()
    for step in ("step 2 of 4", "step 3 of 4", "step 4 of 4"):
        before = set(os.listdir(temp))
        with pytest.raises(QgsProcessingException, match="cancelled"):
            processing.run("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0,
                                                  "OUTPUT": str(tmp_path / "water.gpkg")},
                           feedback=_CancelAt(step))
        assert set(os.listdir(temp)) - before == set(), step
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.tif"]


def _north_south_zones():
    """Two zones over the mask of :func:`_mask`, one above the other."""
    x0, y0 = ORIGIN
    return _rect_layer("EPSG:32630", [("north", (x0, y0 - 400, x0 + 1000, y0)),
                                      ("south", (x0, y0 - 1000, x0 + 1000, y0 - 400))])


def test_a_cancelled_zonal_run_leaves_no_output_file(provider, tmp_path):
    """The sink was made (and left) even when the child had been cancelled."""
    import processing

    path, _ = _mask(tmp_path)
    zones = _north_south_zones()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # in the child (native:zonalstatisticsfb), then in the loop over polygons after it
    for step in ("counting pixels", "water share"):
        with pytest.raises(QgsProcessingException, match="cancelled: the statistics are incomplete"):
            processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path),
                                                   "OUTPUT": str(out_dir / "zones.gpkg")},
                           feedback=_CancelAt(step))
        assert list(out_dir.iterdir()) == [], step
    done = processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path),
                                                  "OUTPUT": str(out_dir / "zones.gpkg")})
    assert QgsVectorLayer(done["OUTPUT"], "z", "ogr").featureCount() == 2


def test_mask_check_reads_the_pixels_not_stale_statistics(provider, tmp_path):
    """A flood extent (0..2) written where a mask was, with the mask's .aux.xml (statistics:
    max 1) left beside it: zonalwater took it for a water mask and summed its 2s as water."""
    import processing

    mask_path, a = _mask(tmp_path)
    extent = np.where(a == 1, 2, a).astype(np.uint8)
    extent_path = write_raster(tmp_path / "extent.tif", [extent], nodata=255)
    _stale_statistics(extent_path, mask_path)
    x0, y0 = ORIGIN
    zones = _rect_layer("EPSG:32630", [("all", (x0, y0 - 1000, x0 + 1000, y0))])
    with pytest.raises(QgsProcessingException, match="'extent' holds values from 0 to 2"):
        processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(extent_path),
                                               "OUTPUT": "memory:"})
    # larger than the sample: read on an even grid of pixels; a block of 2s is found
    big = np.zeros((1000, 2000), np.uint8)
    big[400:500, 900:1000] = 2
    big_path = write_raster(tmp_path / "big.tif", [big], nodata=255)
    small = write_raster(tmp_path / "small.tif", [np.zeros((1000, 2000), np.uint8)], nodata=255)
    _stale_statistics(big_path, small)
    with pytest.raises(QgsProcessingException, match="'big' holds values from 0 to 2"):
        processing.run("sarflood:correctmask", {
            "INPUT": str(big_path), "CORRECTIONS": zones, "OUTPUT": str(tmp_path / "c.tif")})
    # and a real mask of that size passes
    big[400:500, 900:1000] = 1
    big[:10] = 255
    write_raster(tmp_path / "big.tif", [big], nodata=255)
    whole = _rect_layer("EPSG:32630", [("all", (x0, y0 - 10000, x0 + 20000, y0))])
    out = processing.run("sarflood:zonalwater", {"POLYGONS": whole, "MASK": str(big_path),
                                                 "OUTPUT": "memory:"})["OUTPUT"]
    assert [f["water_px"] for f in out.getFeatures()] == [10000]


def test_flood_extent_removes_the_statistics_of_the_file_it_replaces(provider, tmp_path):
    """GDAL's .aux.xml of the mask that was at OUTPUT stayed beside the new flood extent."""
    import processing
    from osgeo import gdal

    post_path, _ = _mask(tmp_path)
    pre = np.zeros((100, 100), np.uint8)
    pre[10:20, 10:30] = 1   # water before: 2 in the extent there
    pre_path = write_raster(tmp_path / "pre.tif", [pre], nodata=255)
    result = tmp_path / "result.tif"
    result.write_bytes(post_path.read_bytes())   # a water mask first, its statistics computed
    _stale_statistics(result, result)
    out = processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                                  "OUTPUT": str(result)})
    assert out["OUTPUT"] == str(result)
    assert not Path(str(result) + ".aux.xml").exists()
    ds = gdal.Open(str(result))
    assert ds.GetRasterBand(1).GetStatistics(False, True)[1] == 2
    ds = None


def test_a_cancelled_flood_extent_keeps_the_previous_one(provider, tmp_path):
    """gdal:rastercalculator wrote over OUTPUT and the cancel removed it: the previous
    extent was lost (mapwater, otsu and correctmask keep an existing output)."""
    import processing

    post_path, _ = _mask(tmp_path)
    pre_path, _ = _mask(tmp_path, "pre.tif")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    params = {"POST": str(post_path), "PRE": str(pre_path), "OUTPUT": str(out_dir / "fe.tif")}
    processing.run("sarflood:floodextent", params)
    before = (out_dir / "fe.tif").read_bytes()
    for step in ("step 3 of 4", "step 4 of 4"):   # in gdal_calc, in the backend's measure
        with pytest.raises(QgsProcessingException, match="cancelled"):
            processing.run("sarflood:floodextent", params, feedback=_CancelAt(step))
        assert [p.name for p in out_dir.iterdir()] == ["fe.tif"], step   # no temporary left
        assert (out_dir / "fe.tif").read_bytes() == before


def test_correct_mask_checks_its_output_before_writing(provider, tmp_path):
    """A missing folder ended in a FileNotFoundError traceback (the polygons are written
    beside the output first); the mask itself as output is refused as the others do."""
    import processing

    mask_path, _ = _mask(tmp_path)
    before = mask_path.read_bytes()
    layer = _rect_layer("EPSG:32630", [(1, (500100, 4199700, 500200, 4199800))], "water:integer")
    missing = tmp_path / "nope" / "fixed.tif"
    with pytest.raises(QgsProcessingException,
                       match=rf"OUTPUT: cannot write {missing} \(No such file or directory\)"):
        processing.run("sarflood:correctmask", {"INPUT": str(mask_path), "CORRECTIONS": layer,
                                                "OUTPUT": str(missing)})
    assert not missing.parent.exists()
    with pytest.raises(QgsProcessingException, match=r"OUTPUT: .* is the input 'post'"):
        processing.run("sarflood:correctmask", {"INPUT": str(mask_path), "CORRECTIONS": layer,
                                                "OUTPUT": str(mask_path)})
    assert mask_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.tif"]



class _Log:
    """A feedback that keeps what the run said (info, warnings, step texts), in order."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.lines = []

            def pushInfo(self, info):  # noqa: N802 (QGIS's name)
                super().pushInfo(info)
                self.lines.append(info)

            def pushWarning(self, warning):  # noqa: N802 (QGIS's name)
                super().pushWarning(warning)
                self.lines.append(warning)

            def setProgressText(self, text):  # noqa: N802 (QGIS's name)
                super().setProgressText(text)
                self.lines.append(text)

        return Feedback()


def _features(path) -> list:
    layer = QgsVectorLayer(str(path), "v", "ogr")
    assert layer.isValid(), path
    return sorted(tuple(f.attributes()[1:]) for f in layer.getFeatures())


def test_correct_mask_never_rewrites_the_polygons_it_reads_nor_a_users_file(provider, tmp_path):
    """CORRECTIONS given as <output>.corrections.geojson, the file the algorithm writes
    beside its output: the user's GeoJSON was rewritten in WGS 84 with the water field
    only (its other fields and CRS lost); any file of that name was replaced unsaid."""
    import processing

    mask_path, _ = _mask(tmp_path)
    users = tmp_path / "fixed.corrections.geojson"
    users.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32630"}},
        "features": [{"type": "Feature", "properties": {"water": 1, "note": "checked"},
                      "geometry": {"type": "Polygon", "coordinates": [[
                          [500100, 4199600], [500200, 4199600], [500200, 4199700],
                          [500100, 4199700], [500100, 4199600]]]}}]}))   # 10 x 10 dry pixels
    before = users.read_bytes()
    params = {"INPUT": str(mask_path), "CORRECTIONS": str(users), "OUTPUT": str(tmp_path / "fixed.tif")}
    log = _Log()
    out = processing.run("sarflood:correctmask", params, feedback=log)
    assert users.read_bytes() == before
    second = tmp_path / "fixed.corrections-2.geojson"
    assert f"{users} is the correction polygons given: it is kept" in log.lines
    from osgeo import gdal
    assert str(second) in gdal.Open(out["OUTPUT"]).GetMetadataItem("SARFLOOD_CORRECTIONS")
    assert out["CORRECTED_PIXELS"] == 100

    # run again: its own file (-2) is replaced, and said so; the user's is kept
    log = _Log()
    processing.run("sarflood:correctmask", params, feedback=log)
    assert f"{second} exists and will be replaced" in log.lines
    assert users.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("fixed.corrections*")) == [
        "fixed.corrections-2.geojson", "fixed.corrections.geojson"]

    # what a run killed while writing its polygons left (its process gone) is removed
    left = tmp_path / f".{second.name}.{dead_pid()}-0123abcd.sarflood-tmp"
    left.write_text("{")
    log = _Log()
    processing.run("sarflood:correctmask", params, feedback=log)
    assert f"removed {left}, left by an interrupted run" in log.lines and not left.exists()

    # a user's file of that name, not the input: kept too
    layer = _rect_layer("EPSG:32630", [(1, (500100, 4199700, 500200, 4199800))], "water:integer")
    log = _Log()
    processing.run("sarflood:correctmask", {**params, "CORRECTIONS": layer}, feedback=log)
    assert f"{users} is a file this plugin did not write: it is kept" in log.lines
    assert users.read_bytes() == before


def test_a_flood_extent_killed_run_leaves_its_hidden_file_to_the_next_run(provider, tmp_path):
    """A killed run's hidden file stayed for good, one more per run. (The kill itself is in
    test_qgis_process.py.) Files of live processes are another run's, still writing."""
    import os
    import processing

    post_path, _ = _mask(tmp_path)
    pre_path, _ = _mask(tmp_path, "pre.tif")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dead, alive = dead_pid(), os.getpid()
    left = [out_dir / f".fe.tif.{dead}-0123abcd.sarflood-tmp.tif",
            out_dir / f".fe.tif.{dead}-0123abcd.sarflood-tmp.tif.aux.xml"]
    kept = [out_dir / f".fe.tif.{alive}-4567abcd.sarflood-tmp.tif",    # running now
            out_dir / f".other.tif.{dead}-0123abcd.sarflood-tmp.tif"]  # another output's
    for path in left + kept:
        path.write_bytes(b"partial")
    log = _Log()
    processing.run("sarflood:floodextent", {"POST": str(post_path), "PRE": str(pre_path),
                                            "OUTPUT": str(out_dir / "fe.tif")}, feedback=log)
    assert [p.exists() for p in left + kept] == [False, False, True, True]
    assert f"removed {left[0]}, left by an interrupted run" in log.lines


def test_outputs_replaced_are_said_as_by_the_other_algorithms(provider, tmp_path):
    """floodextent, vectorize and zonalwater replaced an existing output without a word,
    where mapwater, otsu and correctmask say so."""
    import processing

    path, _ = _mask(tmp_path)
    pre_path, _ = _mask(tmp_path, "pre.tif")
    x0, y0 = ORIGIN
    zones = _rect_layer("EPSG:32630", [("all", (x0, y0 - 1000, x0 + 1000, y0))])
    runs = (("sarflood:floodextent", {"POST": str(path), "PRE": str(pre_path)}, "fe.tif"),
            ("sarflood:vectorize", {"INPUT": str(path)}, "water.gpkg"),
            ("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path)}, "zones.gpkg"))
    for alg, params, name in runs:
        out = str(tmp_path / name)
        first = _Log()
        processing.run(alg, {**params, "OUTPUT": out}, feedback=first)
        assert not any("will be replaced" in line for line in first.lines), alg
        again = _Log()
        processing.run(alg, {**params, "OUTPUT": out}, feedback=again)
        assert f"{out} exists and will be replaced" in again.lines, alg


def test_line_layers_are_refused_where_polygons_are_needed(provider, tmp_path):
    """A LineString layer passed by path (qgis_process, scripts) ran: its lines were burnt
    in as permanent water, or counted as zones."""
    import processing

    path, _ = _mask(tmp_path)
    lines = tmp_path / "rivers.geojson"
    lines.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32630"}},
        "features": [{"type": "Feature", "properties": {"water": 1}, "geometry": {
            "type": "LineString", "coordinates": [[500000, 4199500], [501000, 4199900]]}}]}))
    with pytest.raises(QgsProcessingException, match=r"^Polygons 'rivers' holds lines; polygons are needed"):
        processing.run("sarflood:zonalwater", {"POLYGONS": str(lines), "MASK": str(path),
                                               "OUTPUT": str(tmp_path / "z.gpkg")})
    with pytest.raises(QgsProcessingException,
                       match=r"^Permanent water polygons 'rivers' holds lines; polygons are needed"):
        processing.run("sarflood:floodextent", {"POST": str(path), "PERMANENT": str(lines),
                                                "OUTPUT": str(tmp_path / "fe.tif")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.tif", "rivers.geojson"]


def test_vectorize_checks_its_output_folder_before_the_work(provider, tmp_path):
    """A folder it cannot write was found after all four steps had run."""
    import processing

    path, _ = _mask(tmp_path)
    missing = tmp_path / "nope" / "water.gpkg"
    log = _Log()
    with pytest.raises(QgsProcessingException,
                       match=rf"^OUTPUT: cannot write {missing} \(No such file or directory\)"):
        processing.run("sarflood:vectorize", {"INPUT": str(path), "OUTPUT": str(missing)}, feedback=log)
    assert not any(line.startswith("step") for line in log.lines), log.lines


def test_vector_outputs_are_replaced_only_when_complete(provider, tmp_path):
    """vectorize and zonalwater wrote into the destination: a cancel removed it (the
    user's file lost) and a kill left a GeoPackage with no layer. Now a hidden copy is
    renamed into place at the end: a cancel keeps the old file, and what a killed run
    left (its process gone) is removed by the next run (the kill itself: test_qgis_process.py)."""
    import processing

    path, _ = _mask(tmp_path)
    zones = _north_south_zones()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    runs = (("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0}, "water.gpkg", "step 4 of 4"),
            ("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0}, "water.shp", "step 4 of 4"),
            ("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(path)}, "zones.gpkg", "water share"))
    for alg, params, name, step in runs:
        out = out_dir / name
        processing.run(alg, {**params, "OUTPUT": str(out)})
        before = _features(out)
        files = sorted(p.name for p in out_dir.iterdir())
        with pytest.raises(QgsProcessingException, match="cancelled"):
            processing.run(alg, {**params, "OUTPUT": str(out)}, feedback=_CancelAt(step))
        assert sorted(p.name for p in out_dir.iterdir()) == files, alg
        assert _features(out) == before, name
        # a killed run's hidden folder, with the part it wrote
        left = out_dir / f".{name}.{dead_pid()}-0123abcd.sarflood-tmp"
        left.mkdir()
        (left / name).write_bytes(b"partial")
        (left / (name + "-journal")).write_bytes(b"partial")
        log = _Log()
        processing.run(alg, {**params, "OUTPUT": str(out)}, feedback=log)
        assert f"removed {left}, left by an interrupted run" in log.lines
        assert sorted(p.name for p in out_dir.iterdir()) == files, alg
        assert _features(out) == before, name
    # the GeoPackage's layer is named after the file, as when Processing writes it itself
    from osgeo import ogr
    assert [layer.GetName() for layer in ogr.Open(str(out_dir / "water.gpkg"))] == ["water"]


def test_zonal_water_refuses_to_write_over_its_polygons(provider, tmp_path):
    import processing

    path, _ = _mask(tmp_path)
    x0, y0 = ORIGIN
    zones = tmp_path / "zones.gpkg"
    processing.run("sarflood:zonalwater", {"POLYGONS": _rect_layer("EPSG:32630", [
        ("all", (x0, y0 - 1000, x0 + 1000, y0))]), "MASK": str(path), "OUTPUT": str(zones)})
    before = zones.read_bytes()
    with pytest.raises(QgsProcessingException, match=r"^OUTPUT: .*zones.gpkg is the input 'zones'"):
        processing.run("sarflood:zonalwater", {"POLYGONS": str(zones), "MASK": str(path),
                                               "OUTPUT": str(zones)})
    assert zones.read_bytes() == before


def test_vector_outputs_refuse_the_masks_geopackage_and_raster_names(provider, tmp_path,
                                                                     qgis_new_project):
    """A mask kept in a GeoPackage, and OUTPUT that same file: vectorize and zonalwater
    replaced the whole GeoPackage, the mask with it. An OUTPUT ending in .tif: QGIS wrote
    NAME.tif.gpkg, and zonalwater reported the .tif it never wrote."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer

    path, _ = _mask(tmp_path)
    flood = tmp_path / "flood.gpkg"
    gdal.Translate(str(flood), str(path), format="GPKG", creationOptions=["RASTER_TABLE=mask"])
    layer = QgsRasterLayer(f"GPKG:{flood}:mask", "mask")
    assert layer.isValid()
    # the project owns it, and removes it before QGIS exits (a layer of Python's own,
    # deleted after QGIS, crashed the interpreter at exit)
    QgsProject.instance().addMapLayer(layer)
    layer = layer.id()
    before = flood.read_bytes()
    zones = _north_south_zones()
    for alg, params in (("sarflood:vectorize", {"INPUT": layer}),
                        ("sarflood:zonalwater", {"POLYGONS": zones, "MASK": layer})):
        with pytest.raises(QgsProcessingException, match=rf"^OUTPUT: {flood} is the input 'mask'"):
            processing.run(alg, {**params, "OUTPUT": str(flood)})
        assert flood.read_bytes() == before, alg
        wrong = tmp_path / "polygons.tif"
        with pytest.raises(QgsProcessingException, match=rf"^OUTPUT: {wrong} is no vector format"):
            processing.run(alg, {**params, "OUTPUT": str(wrong)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flood.gpkg", "post.tif"]


def test_a_run_killed_while_renaming_its_outputs_is_undone_by_the_next(tmp_path):
    """QGIS gone with its backend child mid-renames left the file an output replaced hidden
    (.sarflood-kept: a full copy on disk) and the other output half-swapped; the next run to
    those files removed only the -tmp files."""
    import os

    from sarflood.plugin.outputs import remove_stale

    dead = dead_pid()
    mask, probability = tmp_path / "m.tif", tmp_path / "p.tif"
    mask.write_text("the killed run's mask")
    (tmp_path / f".m.tif.{dead}-0123abcd.sarflood-kept").write_text("the mask before it")
    probability.write_text("the killed run's probability")
    (tmp_path / f".p.tif.{dead}-0123abcd.sarflood-new").write_text("")
    live = tmp_path / f".m.tif.{os.getpid()}-4567abcd.sarflood-kept"   # a run renaming now
    live.write_text("its")
    said = remove_stale(str(mask)) + remove_stale(str(probability))
    assert mask.read_text() == "the mask before it" and not probability.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "m.tif"]
    assert said == [f"put back {mask}, which an interrupted run had replaced",
                    f"removed {probability}, written by an interrupted run",
                    f"removed {tmp_path / f'.p.tif.{dead}-0123abcd.sarflood-new'}, left by an "
                    "interrupted run"]


def test_a_run_into_a_file_the_project_shows_shows_this_runs_features(provider, qgis_new_project,
                                                                     tmp_path):
    """Loaded on completion, a zonalwater (or vectorize) output the project already had a
    layer of came back as that layer, which still showed the replaced file's numbers."""
    import processing
    from qgis.core import QgsProject

    path, a = _mask(tmp_path)
    dry = write_raster(tmp_path / "dry.tif", [np.where(a == 255, 255, 0).astype(np.uint8)],
                       nodata=255)
    x0, y0 = ORIGIN
    zones = _rect_layer("EPSG:32630", [("all", (x0, y0 - 1000, x0 + 1000, y0))])
    out = str(tmp_path / "zones.gpkg")
    water = []
    for mask in (str(path), str(dry)):
        processing.runAndLoadResults("sarflood:zonalwater", {"POLYGONS": zones, "MASK": mask,
                                                             "OUTPUT": out})
        shown = [layer for layer in QgsProject.instance().mapLayers().values()
                 if layer.source().split("|")[0] == out]
        assert len(shown) == 1
        water.append([f["water_px"] for f in shown[0].getFeatures()])
    assert water == [[int((a == 1).sum())], [0]]

    polygons = str(tmp_path / "polygons.gpkg")
    counts = []
    for min_area in (0, 1000):
        processing.runAndLoadResults("sarflood:vectorize", {"INPUT": str(path),
                                                            "MIN_AREA_M2": min_area,
                                                            "OUTPUT": polygons})
        shown = [layer for layer in QgsProject.instance().mapLayers().values()
                 if layer.source().split("|")[0] == polygons]
        counts.append([layer.featureCount() for layer in shown])
    assert counts == [[2], [1]]


def test_vectorize_into_memory_loads_its_polygons(provider, qgis_new_project, tmp_path):
    """Run and loaded into a memory layer, vectorize loaded nothing and returned the id of a
    layer gone with the run's context."""
    import processing
    from qgis.core import QgsProject

    path, _ = _mask(tmp_path)
    out = processing.runAndLoadResults("sarflood:vectorize", {"INPUT": str(path), "MIN_AREA_M2": 0,
                                                              "OUTPUT": "memory:"})
    layer = QgsProject.instance().mapLayer(out["OUTPUT"])
    assert layer is not None and layer.name() == "Water polygons"
    assert layer.featureCount() == out["POLYGON_COUNT"] == 2
    assert len(QgsProject.instance().mapLayers()) == 1
