"""The analyst's correction polygons as GeoJSON: what is written, and what is said when it cannot be."""
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
