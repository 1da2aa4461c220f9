"""The analyst's correction polygons as GeoJSON: what is written, and what is said when it cannot be."""
import json

import pytest


def test_an_empty_water_value_is_named_with_its_place_in_the_layer(qgis_app):
    """A polygon drawn without filling the form: it said "feature -2 has water = None"
    (an unsaved feature's internal id, and Python's word for NULL)."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsRectangle
    from qgis.core import QgsVectorLayerUtils

    from sarflood.plugin.corrections import CorrectionsProblem, new_corrections_layer, write_geojson

    layer = new_corrections_layer(QgsCoordinateReferenceSystem("EPSG:32630"))
    layer.startEditing()
    drawn = QgsGeometry.fromRect(QgsRectangle(500000, 4199000, 500100, 4199100))
    # what the form of a new polygon holds: the field's default, water
    assert QgsVectorLayerUtils.createFeature(layer, drawn)["water"] == 1
    for value in (1, None):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(drawn)
        feature.setAttributes([value])
        layer.addFeature(feature)
    with pytest.raises(CorrectionsProblem, match=r"^'fixes': feature 2 has no water value; use 1 \(water\)"):
        write_geojson(layer.getFeatures(), layer.crs(), "water", "'fixes'", "/nonexistent/c.geojson")
    layer.rollBack()


def test_a_folder_it_cannot_write_is_said_without_the_part_file(qgis_app, tmp_path):
    """It raised the OSError of its hidden ``.part`` file."""
    from qgis.core import QgsCoordinateReferenceSystem

    from sarflood.plugin.corrections import CorrectionsProblem, new_corrections_layer, write_geojson

    layer = new_corrections_layer(QgsCoordinateReferenceSystem("EPSG:32630"))
    target = tmp_path / "missing" / "c.geojson"
    with pytest.raises(CorrectionsProblem) as problem:
        write_geojson(layer.getFeatures(), layer.crs(), "water", "'fixes'", str(target))
    assert str(problem.value) == f"{target}: the folder {target.parent} does not exist"


def test_polygons_are_written_in_their_crs_which_the_file_names(qgis_app, tmp_path):
    """They were written in longitude, latitude: a datum transform there and another back.
    A CRS without an authority code is named by its WKT, which the backend reads."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsRectangle
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    from sarflood.backend.corrections import load_corrections
    from sarflood.backend.grid import Grid
    from sarflood.backend.progress import Reporter
    from sarflood.plugin.corrections import new_corrections_layer, write_geojson

    custom = QgsCoordinateReferenceSystem.fromProj("+proj=tmerc +lon_0=9.25 +k=0.9999 +x_0=3500000 "
                                                   "+ellps=bessel +units=m +no_defs")
    for crs, name in ((QgsCoordinateReferenceSystem("EPSG:26717"), "EPSG:26717"),
                      (custom, custom.toWkt())):
        layer = new_corrections_layer(crs)
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(3500200, 5499700, 3500300, 5499800)))
        feature["water"] = 1
        layer.dataProvider().addFeatures([feature])
        path = tmp_path / "c.geojson"
        assert write_geojson(layer.getFeatures(), layer.crs(), "water", "'fixes'", str(path)) == 1
        doc = json.loads(path.read_text())
        assert doc["crs"] == {"type": "name", "properties": {"name": name}}
        assert doc["name"] == "'fixes'" and doc["features"][0]["id"] == 1   # for the backend's words
        assert doc["features"][0]["geometry"]["coordinates"][0][0] == [3500200, 5499700]
        grid = Grid(CRS.from_wkt(crs.toWkt()), Affine(10, 0, 3500000, 0, -10, 5500000), 64, 64)
        (shape, value), = load_corrections(str(path), grid, Reporter()).shapes
        assert value == 1 and shape["coordinates"][0][0] == pytest.approx((3500200, 5499700))


def test_a_layer_copied_into_the_masks_crs_is_transformed_in_drawing_order(qgis_app):
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature,
                           QgsGeometry, QgsProject, QgsRectangle)

    from sarflood.plugin.corrections import new_corrections_layer
    from sarflood.plugin.layers import private_copy, take_copies

    layer = new_corrections_layer(QgsCoordinateReferenceSystem("EPSG:3857"))
    mask_crs = QgsCoordinateReferenceSystem("EPSG:32630")
    rect = QgsRectangle(-330000, 4300000, -320000, 4310000)
    saved = QgsFeature(layer.fields())
    saved.setGeometry(QgsGeometry.fromRect(rect))
    saved["water"] = 1
    layer.dataProvider().addFeatures([saved])
    layer.startEditing()
    for water in (0, 1):
        feature = QgsFeature(saved)
        feature["water"] = water
        layer.addFeature(feature)
    copy = private_copy(layer, crs=mask_crs)
    take_copies([copy])
    expected = QgsGeometry.fromRect(rect)
    expected.transform(QgsCoordinateTransform(layer.crs(), mask_crs, QgsProject.instance()))
    assert copy.crs() == mask_crs
    assert [f["water"] for f in copy.getFeatures()] == [1, 0, 1]
    assert all(f.geometry().equals(expected) for f in copy.getFeatures())
    layer.rollBack()
