"""sarflood:correctmask from every entry point: a self-intersecting polygon is burnt whatever
Processing's geometry setting, and the corrected mask and the polygons kept beside it (which its
SARFLOOD_CORRECTIONS tag names) still belong together after a run is killed."""
import json
import signal
import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (QgsFeature, QgsFeatureRequest, QgsGeometry, QgsPointXY, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProject, QgsVectorLayer)

from . import test_qgis_process
from .conftest import read_raster, write_raster

qgis_process_env = test_qgis_process.qgis_process_env   # the fixture, for this module's tests too

PIXEL = 10.0
ORIGIN = (500000.0, 4200000.0)
CHECKS = QgsFeatureRequest.InvalidGeometryCheck


def _xy(col: float, row: float) -> list:
    return [ORIGIN[0] + col * PIXEL, ORIGIN[1] - row * PIXEL]


def _polygons(path, rings) -> str:
    """A GeoJSON file of water polygons in the mask's CRS, as a user keeps one: (col, row) rings."""
    path.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32630"}},
        "features": [{"type": "Feature", "properties": {"water": 1},
                      "geometry": {"type": "Polygon", "coordinates": [[_xy(*p) for p in ring]]}}
                     for ring in rings]}))
    return str(path)


def _box(c0, r0, c1, r1) -> list:
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]


class _Log(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.lines = []

    def pushInfo(self, info):  # noqa: N802 (QGIS's name)
        self.lines.append(info)
        super().pushInfo(info)


def _correct(params: dict, context=None, feedback=None) -> dict:
    import processing

    return processing.run("sarflood:correctmask", params, context=context, feedback=feedback)


@pytest.mark.parametrize("check", [CHECKS.GeometryNoCheck, CHECKS.GeometrySkipInvalid,
                                   CHECKS.GeometryAbortOnInvalid])
def test_a_bowtie_is_burnt_whatever_processings_geometry_setting(provider, tmp_path, check):
    """The Toolbox, batch runs and processing.run (Processing's setting, "stop" by default)
    refused a self-intersecting polygon, or skipped it, where qgis_process (no check) and
    the review dock burnt it: now each burns it as the backend does."""
    from sarflood.backend.corrections import correct_mask

    mask = write_raster(tmp_path / "mask.tif", [np.zeros((80, 80), np.uint8)], nodata=255)
    bowtie = [(10.3, 10.2), (50.2, 49.7), (49.8, 10.1), (10.1, 49.6), (10.3, 10.2)]
    polygons = _polygons(tmp_path / "bowtie.geojson", [bowtie])
    assert not QgsVectorLayer(polygons, "bowtie", "ogr").getFeature(1).geometry().isGeosValid()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    context.setInvalidGeometryCheck(check)
    out = _correct({"INPUT": str(mask), "CORRECTIONS": polygons, "OUTPUT": str(tmp_path / "c.tif")},
                   context, QgsProcessingFeedback())
    correct_mask(str(mask), polygons, str(tmp_path / "backend.tif"))
    want = read_raster(tmp_path / "backend.tif")
    assert want[20:40, 12].all() and want[20:40, 48].all() and not want[12:25, 30].any()   # two triangles
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), want)
    assert out["CORRECTED_PIXELS"] == int(want.sum())


def _tag(mask) -> str:
    return gdal.Open(str(mask)).GetMetadataItem("SARFLOOD_CORRECTIONS")


def _fail_next_run(mask, out) -> _Log:
    """A run to ``out`` that fails on its polygons (a water value of 2), after it tidied
    what runs before it left; what it said."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32630&field=water:integer", "bad", "memory")
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(*_xy(*p)) for p in _box(1, 1, 5, 5)]]))
    feature.setAttributes([2])
    layer.dataProvider().addFeatures([feature])
    log = _Log()
    with pytest.raises(QgsProcessingException, match="feature 1 has water = 2"):
        _correct({"INPUT": str(mask), "CORRECTIONS": layer, "OUTPUT": str(out)}, feedback=log)
    return log


def test_a_correction_killed_while_its_backend_runs_keeps_the_mask_with_its_polygons(
        provider, qgis_process_env, tmp_path):
    """kill -TERM of qgis_process while the backend wrote the corrected mask left the old mask
    beside the killed run's polygons, which its tag then named; now the polygons it burnt
    are put back (by the next run to that output)."""
    rng = np.random.default_rng(5)
    mask = write_raster(tmp_path / "mask.tif", [(rng.random((4000, 4000)) < 0.3).astype(np.uint8)],
                        nodata=255)
    out = tmp_path / "out"
    out.mkdir()
    first = _polygons(tmp_path / "first.geojson", [_box(10, 10, 30, 30), _box(50, 50, 60, 60)])
    second = _polygons(tmp_path / "second.geojson", [_box(100, 100, 200, 200)])
    _correct({"INPUT": str(mask), "CORRECTIONS": first, "OUTPUT": str(out / "c.tif")})
    sidecar = out / "c.corrections.geojson"
    old_mask, old_polygons = (out / "c.tif").read_bytes(), sidecar.read_bytes()
    assert str(sidecar) in _tag(out / "c.tif")

    def backend_writing():
        return any(p.name.startswith(".c.tif.") for p in out.iterdir())

    status = test_qgis_process._terminate_when(
        qgis_process_env, "sarflood:correctmask",
        {"INPUT": mask, "CORRECTIONS": second, "OUTPUT": out / "c.tif"}, backend_writing, tmp_path)
    assert status == -signal.SIGTERM
    assert (out / "c.tif").read_bytes() == old_mask
    # the killed run's backend, its stdin ended as qgis_process died, cancels and removes
    # its part-written mask: on a loaded machine (CI) after the next run had already begun
    deadline = time.monotonic() + 60
    while backend_writing() and time.monotonic() < deadline:
        time.sleep(0.1)

    log = _fail_next_run(mask, out / "c.tif")
    assert f"put back {sidecar}, which an interrupted run had replaced" in log.lines
    assert sidecar.read_bytes() == old_polygons and str(sidecar) in _tag(out / "c.tif")
    assert (out / "c.tif").read_bytes() == old_mask
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_polygons_a_killed_run_had_burnt_in_stay(provider, tmp_path):
    """Killed after its backend had replaced the mask, a run left the earlier polygons set
    aside: they would be put back beside the mask they were not burnt into. The mask, newer
    than the polygons beside it, was made from those: they stay."""
    import subprocess

    mask = write_raster(tmp_path / "mask.tif", [np.zeros((100, 100), np.uint8)], nodata=255)
    out = tmp_path / "c.tif"
    sidecar = tmp_path / "c.corrections.geojson"
    _correct({"INPUT": str(mask), "CORRECTIONS": _polygons(tmp_path / "first.geojson", [_box(10, 10, 30, 30)]),
              "OUTPUT": str(out)})
    earlier = sidecar.read_bytes()
    _correct({"INPUT": str(mask), "CORRECTIONS": _polygons(tmp_path / "second.geojson", [_box(5, 5, 8, 8)]),
              "OUTPUT": str(out)})
    burnt, polygons = out.read_bytes(), sidecar.read_bytes()
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = tmp_path / f".{sidecar.name}.{gone.pid}-0123abcd.sarflood-kept"
    left.write_bytes(earlier)

    log = _fail_next_run(mask, out)
    assert f"removed {left}, left by an interrupted run that had written {out}" in log.lines
    assert sidecar.read_bytes() == polygons and out.read_bytes() == burnt and not left.exists()
