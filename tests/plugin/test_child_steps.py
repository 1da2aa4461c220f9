"""The child steps of vectorize, floodextent and zonalwater (plugin/processing/steps.py): nothing of theirs
left in Processing's folder however the run ends, progress that only rises, and a compressed
flood extent."""
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback, QgsProcessingUtils
from qgis.PyQt.QtCore import QCoreApplication, Qt, QThread

from .conftest import read_raster, write_raster
from .test_mask_algorithms import ORIGIN, _CancelAt, _mask, _rect_layer


def _flood_inputs(tmp_path) -> tuple[dict, np.ndarray]:
    """A post-event mask, a pre-event mask on a 20 m grid and a lake in a memory layer, and
    the flood extent they make."""
    post_path, post = _mask(tmp_path)
    pre = np.zeros((50, 50), np.uint8)
    pre[5:10, 5:15] = 1                  # the square's top half, at 20 m
    pre_path = write_raster(tmp_path / "pre.tif", [pre], pixel=20.0, nodata=255)
    x0, y0 = ORIGIN
    lake = _rect_layer("EPSG:32630", [("lake", (x0 + 500, y0 - 520, x0 + 520, y0 - 500))])
    expected = np.where(post == 1, 1, 0).astype(np.uint8)
    expected[10:20, 10:30] = 2
    expected[50:52, 50:52] = 2           # the speck, under the lake
    expected[post == 255] = 255
    return {"POST": str(post_path), "PRE": str(pre_path), "PERMANENT": lake}, expected


def _temp_listing() -> set[str]:
    return set(os.listdir(QgsProcessingUtils.tempFolder()))


class _Progress(QgsProcessingFeedback):
    """The progress a run reports, as Processing's dialog sees it; like the dialog running an
    algorithm on the main thread (batch mode), it processes events at each value."""

    def __init__(self):
        super().__init__()
        self.values = []
        self.progressChanged.connect(self._record, Qt.ConnectionType.DirectConnection)

    def _record(self, value):
        self.values.append(value)
        if QThread.currentThread() == QCoreApplication.instance().thread():
            QCoreApplication.processEvents()


def _steps_run(context) -> str:
    """One step's file written and loaded into ``context``, as a child's output is by the
    next child (a layer made by C++, wrapped by Python): its path."""
    from sarflood.plugin.processing.steps import Steps

    feedback = QgsProcessingFeedback()   # held: the steps' feedback reports to it
    with Steps(1, context, feedback, []) as steps:
        path = steps.file("step.tif")
        write_raster(Path(path), [np.zeros((4, 4), np.uint8)])
        assert QgsProcessingUtils.mapLayerFromString(path, context).isValid()
    return path


def test_steps_free_their_layers_on_the_main_thread_only(qgis_app):
    """A layer that Python has wrapped, deleted on a worker thread, has its end handled by
    PyQt on the main thread without Python's lock, racing the worker: QGIS crashed now and
    then as a vectorize task's steps freed their layers on its worker. There the layers
    now stay with the run's context, for the main thread to free (remove_steps, as
    postProcessAlgorithm does); their folders go at once either way."""
    from sarflood.plugin.processing.steps import remove_steps

    main = QCoreApplication.instance().thread()
    on_worker = {}

    def worker() -> None:   # as QGIS runs a task: a context of the worker's own, handed back
        context = QgsProcessingContext()
        on_worker["path"] = _steps_run(context)
        context.pushToThread(main)
        on_worker["context"] = context

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    context, path = on_worker["context"], on_worker["path"]
    assert [layer.source() for layer in context.temporaryLayerStore().mapLayers().values()] == [path]
    assert not Path(path).parent.exists()
    remove_steps(context, [path])
    assert context.temporaryLayerStore().mapLayers() == {}

    context = QgsProcessingContext()
    path = _steps_run(context)
    assert context.temporaryLayerStore().mapLayers() == {}
    assert not Path(path).parent.exists()


def test_flood_extent_leaves_no_step_behind(provider, tmp_path):
    """The warped pre-event mask, the rasterized lake and the GeoPackage gdal:rasterize
    exported the lake into stayed in Processing's folder after every run, cancelled or not."""
    import processing

    params, _ = _flood_inputs(tmp_path)
    before = _temp_listing()
    processing.run("sarflood:floodextent", {**params, "OUTPUT": str(tmp_path / "flood.tif")})
    assert _temp_listing() - before == set()
    for step in ("step 2 of 4", "step 3 of 4", "step 4 of 4"):
        with pytest.raises(QgsProcessingException, match="cancelled"):
            processing.run("sarflood:floodextent", {**params, "OUTPUT": str(tmp_path / "cancelled.tif")},
                           feedback=_CancelAt(step))
        assert _temp_listing() - before == set(), step
    assert not (tmp_path / "cancelled.tif").exists()


def test_flood_extent_is_compressed_as_the_other_masks(provider, tmp_path):
    """gdal_calc wrote it uncompressed (a byte a pixel), every other mask the plugin writes
    with ZSTD in tiles."""
    import processing
    from osgeo import gdal

    params, expected = _flood_inputs(tmp_path)
    out = processing.run("sarflood:floodextent", {**params, "OUTPUT": str(tmp_path / "flood.tif")})
    ds = gdal.Open(out["OUTPUT"])
    assert ds.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
    assert ds.GetRasterBand(1).GetBlockSize() == [512, 512]
    ds = None
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), expected)


@pytest.mark.parametrize("alg", ["sarflood:vectorize", "sarflood:floodextent", "sarflood:zonalwater"])
def test_progress_only_rises(provider, tmp_path, alg):
    """Every child restarted the run's progress at 0: in batch mode the bar ran backwards.
    Nor may a step's progress come in after the run, or in the next step's share."""
    import processing

    if alg == "sarflood:vectorize":
        params = {"INPUT": str(_mask(tmp_path)[0]), "MIN_AREA_M2": 0, "OUTPUT": str(tmp_path / "water.gpkg")}
    elif alg == "sarflood:floodextent":
        params = {**_flood_inputs(tmp_path)[0], "OUTPUT": str(tmp_path / "flood.tif")}
    else:
        x0, y0 = ORIGIN
        zones = _rect_layer("EPSG:32630", [("a", (x0, y0 - 300, x0 + 300, y0)),
                                           ("b", (x0 + 200, y0 - 600, x0 + 600, y0 - 200))])
        params = {"POLYGONS": zones, "MASK": str(_mask(tmp_path)[0]), "OUTPUT": str(tmp_path / "zones.gpkg")}
    feedback = _Progress()
    processing.run(alg, params, feedback=feedback)
    QCoreApplication.processEvents()
    assert len(feedback.values) >= 3
    assert feedback.values == sorted(feedback.values)
    assert feedback.values[-1] == pytest.approx(100)   # the bar ends full

