"""sarflood:zonalwater's water_km2 counts each water pixel at its own ground area.

On an EPSG:4326 or Web Mercator mask a pixel's ground area changes from row to row: the
algorithm measured every pixel of a polygon at its centroid, 2 % off for a polygon 2°
tall with its water at one end. The reference here measures a pixel of each row on the
ellipsoid with QgsDistanceArea (on these grids a row's pixels have one area); the
expected counts are numpy's, from the arrays the test wrote.
"""
import numpy as np
import pytest
from qgis.core import (QgsCoordinateReferenceSystem, QgsDistanceArea, QgsFeature, QgsFeatureRequest,
                       QgsGeometry, QgsPointXY, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsRectangle, QgsUnitTypes,
                       QgsVectorLayer)

from .conftest import write_raster

ROWS, COLS = 2000, 60
# pixel size and top-left corner: about 2° of latitude below 50° N either way
GRIDS = {4326: (0.001, (10.0, 50.0)), 3857: (100.0, (1113195.0, 6446276.0))}


def _grid_mask(tmp_path, epsg: int, a: np.ndarray):
    pixel, origin = GRIDS[epsg]
    return write_raster(tmp_path / f"mask{epsg}.tif", [a], epsg=epsg, pixel=pixel, origin=origin, nodata=255)


def _xy(epsg: int, col: float, row: float) -> QgsPointXY:
    """The point at pixel-edge coordinates (col, row) of the grid, in its CRS."""
    pixel, (x0, y0) = GRIDS[epsg]
    return QgsPointXY(x0 + col * pixel, y0 - row * pixel)


def _cells(epsg: int, col0: float, row0: float, col1: float, row1: float) -> QgsGeometry:
    """The rectangle from (col0, row0) to (col1, row1), in pixel-edge coordinates."""
    return QgsGeometry.fromRect(QgsRectangle(_xy(epsg, col0, row1), _xy(epsg, col1, row0)))


def _layer(epsg: int, geometries) -> QgsVectorLayer:
    """A memory layer in the grid's CRS of (name, geometry) features."""
    layer = QgsVectorLayer(f"MultiPolygon?crs=EPSG:{epsg}&field=name:string", "zones", "memory")
    features = []
    for name, geometry in geometries:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        feature.setAttributes([name])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    return layer


def _true_km2(epsg: int, water_per_row: np.ndarray) -> float:
    """The ellipsoidal area of ``water_per_row[r]`` pixels in each row r."""
    pixel, (x0, y0) = GRIDS[epsg]
    measure = QgsDistanceArea()
    measure.setSourceCrs(QgsCoordinateReferenceSystem(f"EPSG:{epsg}"), QgsProject.instance().transformContext())
    measure.setEllipsoid("EPSG:7030")
    total = 0.0
    for row in np.flatnonzero(water_per_row):
        area = measure.measureArea(_cells(epsg, 0, row, 1, row + 1))
        total += water_per_row[row] * measure.convertAreaMeasurement(area, QgsUnitTypes.AreaUnit.AreaSquareMeters)
    return total / 1e6


def _run(zones, mask_path, context=None, feedback=None) -> dict:
    import processing

    out = processing.run("sarflood:zonalwater", {"POLYGONS": zones, "MASK": str(mask_path), "OUTPUT": "memory:"},
                         context=context, feedback=feedback)["OUTPUT"]
    return {f["name"]: f for f in out.getFeatures()}


def _check(row, inside: np.ndarray, a: np.ndarray, epsg: int) -> None:
    """``row``'s counts are numpy's over the pixels ``inside``, its km² their true area."""
    water = inside & (a == 1)
    assert row["valid_px"] == int((inside & (a != 255)).sum())
    assert row["water_px"] == int(water.sum())
    # each strip's pixel areas differ by under STRIP_SPREAD (0.2 %), measured at its middle
    assert row["water_km2"] == pytest.approx(_true_km2(epsg, water.sum(axis=1)), rel=1e-3)


@pytest.mark.parametrize("epsg", [4326, 3857])
def test_water_at_one_end_of_a_tall_polygon(provider, tmp_path, epsg):
    """Water in the top 100 of 2000 rows: measured at the polygon's centroid, 1000 rows
    further south, it came out 1.9 % (EPSG:4326) or 2.3 % (Web Mercator) too large. A
    polygon reaching out of the mask counts the pixels inside, each at its own area."""
    a = np.zeros((ROWS, COLS), np.uint8)
    a[:100, 10:50] = 1
    a[:, 55:] = 255
    path = _grid_mask(tmp_path, epsg, a)
    rows = _run(_layer(epsg, [("tall", _cells(epsg, 0, 0, COLS, ROWS)),
                              ("out", _cells(epsg, -20, -300, 30, 700))]), path)
    assert list(rows) == ["tall", "out"]
    _check(rows["tall"], np.ones(a.shape, bool), a, epsg)
    inside = np.zeros(a.shape, bool)
    inside[:700, :30] = True
    _check(rows["out"], inside, a, epsg)


def test_multipolygon_parts_far_apart(provider, tmp_path):
    """A multipolygon's parts in strips far apart are each measured at their own rows, and
    a part holding no pixel centre adds no pixels: cut off alone, QGIS counted the shares
    of the pixels it covers (0.09 of one here)."""
    epsg = 4326
    a = np.zeros((ROWS, COLS), np.uint8)
    a[:100, 10:50] = 1
    a[1990:, 10:50] = 1
    a[1000, :] = 1
    path = _grid_mask(tmp_path, epsg, a)
    parts = [_cells(epsg, 0, 0, 30, 200), _cells(epsg, 20.6, 1000.6, 20.9, 1000.9), _cells(epsg, 0, 1800, 30, ROWS)]
    multipolygon = QgsGeometry.collectGeometry(parts)
    zones = _layer(epsg, [("parts", multipolygon), ("dry", _cells(epsg, 50, 300, 60, 900))])
    rows = _run(zones, path)
    inside = np.zeros(a.shape, bool)
    inside[:200, :30] = inside[1800:, :30] = True
    _check(rows["parts"], inside, a, epsg)
    assert rows["dry"]["water_px"] == rows["dry"]["water_km2"] == 0
    assert rows["dry"]["valid_px"] == 6000


@pytest.mark.parametrize("check", [QgsFeatureRequest.InvalidGeometryCheck.GeometryNoCheck,
                                   QgsFeatureRequest.InvalidGeometryCheck.GeometrySkipInvalid,
                                   QgsFeatureRequest.InvalidGeometryCheck.GeometryAbortOnInvalid])
def test_an_invalid_polygon_is_counted_whole(provider, tmp_path, check):
    """A bowtie cannot be cut: its repaired pieces give the areas, its own shape the pixels,
    as QGIS counts them; whatever Processing's geometry setting ("stop" by default in the
    Toolbox, batch runs and processing.run stopped the run there, where qgis_process, which
    checks nothing, counted it)."""
    epsg, height, width = 4326, 1990, 40
    a = np.zeros((ROWS, COLS), np.uint8)
    a[:100] = 1
    path = _grid_mask(tmp_path, epsg, a)
    bowtie = QgsGeometry.fromPolygonXY([[_xy(epsg, u, v) for u, v in
                                         ((0, 0), (width, height), (width, 0), (0, height), (0, 0))]])
    assert not bowtie.isGeosValid()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    context.setInvalidGeometryCheck(check)
    rows = _run(_layer(epsg, [("bowtie", bowtie)]), path, context, QgsProcessingFeedback())
    # pixel centres between the diagonals: the two triangles that meet in the middle
    v, u = np.mgrid[:ROWS, :COLS] + 0.5
    inside = (v / height - u / width) * (v / height - 1 + u / width) < 0
    inside &= (u < width) & (v < height)
    _check(rows["bowtie"], inside, a, epsg)


class _CancelAt(QgsProcessingFeedback):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def setProgressText(self, text):  # noqa: N802 (QGIS's name)
        super().setProgressText(text)
        if text.startswith(self.prefix):
            self.cancel()


@pytest.mark.parametrize("step", ["cutting the polygons", "counting the pixels of 1 polygon"])
def test_cancelled_while_cutting_or_counting_whole(provider, tmp_path, step):
    epsg = 4326
    path = _grid_mask(tmp_path, epsg, np.ones((ROWS, COLS), np.uint8))
    parts = QgsGeometry.collectGeometry([_cells(epsg, 0, 0, 30, 200), _cells(epsg, 20.6, 1000.6, 20.9, 1000.9)])
    with pytest.raises(QgsProcessingException, match="cancelled"):
        _run(_layer(epsg, [("parts", parts)]), path, feedback=_CancelAt(step))


def test_strips_tile_the_rows(provider, tmp_path):
    """Strip edges lie on pixel-row edges, each row in one strip: as tall as the spread of
    pixel areas allows; on UTM the whole mask is one strip."""
    from sarflood.plugin.processing.zonal import STRIP_SPREAD, MaskRows

    def rows_of(path):
        return MaskRows(QgsRasterLayer(str(path), "mask"), "EPSG:7030", QgsProject.instance().transformContext())

    assert rows_of(write_raster(tmp_path / "utm.tif", [np.zeros((3000, 10), np.uint8)])).edges == [0, 3000]
    rows = rows_of(_grid_mask(tmp_path, 4326, np.zeros((ROWS, COLS), np.uint8)))
    edges = rows.edges
    assert edges[0] == 0 and edges[-1] == ROWS and len(edges) > 10
    assert all(top < end for top, end in zip(edges, edges[1:]))
    for top, end in zip(edges, edges[1:]):
        x = rows.extent.center().x()
        ratio = rows.area_m2(x, rows.y(end - 0.5)) / rows.area_m2(x, rows.y(top + 0.5))
        assert abs(ratio - 1) <= STRIP_SPREAD
        assert end == ROWS or not rows.even(top, end + 1)
