"""Work on a worker thread never reads the project's own layers.

The Processing toolbox runs an algorithm as a QgsProcessingAlgRunnerTask with the project
on its context: ``prepareAlgorithm`` in the main thread, ``processAlgorithm`` in a worker.
There a layer id or path resolves to the project's layer object, which the main thread
draws, edits, changes and deletes meanwhile (the vectorize task's segfault). Here the
worker is held at a step while the main thread changes the project's layers, as a user
may: the results must be those of the layers as they were when the run started, which
holds only if the worker reads copies of its own.
"""
import threading

import numpy as np
import pytest
from qgis.core import (QgsApplication, QgsDataProvider, QgsFeature, QgsGeometry,
                       QgsProcessingAlgRunnerTask, QgsProcessingContext,
                       QgsProcessingFeatureSourceDefinition, QgsProcessingFeedback,
                       QgsProcessingUtils, QgsProject, QgsRasterLayer, QgsRectangle,
                       QgsReferencedRectangle)
from qgis.PyQt.QtCore import QCoreApplication, Qt, QThread

from .conftest import read_raster, wait_for_tasks, write_raster
from .test_mask_algorithms import ORIGIN, _mask, _rect_layer, _utm_area_m2


class _Pause(QgsProcessingFeedback):
    """Holds the worker thread when a step whose text starts with ``prefix`` begins, until
    the main thread lets it go."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.reached = threading.Event()
        self.go = threading.Event()

    def setProgressText(self, text):  # noqa: N802 (QGIS's name)
        super().setProgressText(text)
        if text.startswith(self.prefix) and not self.reached.is_set():
            self.reached.set()
            self.go.wait(60)


def _run_as_task(qtbot, alg_id: str, params: dict, pause_at: str, meanwhile):
    """Run ``alg_id`` as the toolbox does (a task, the project on its context); while the
    worker is held at ``pause_at``, the main thread calls ``meanwhile()``."""
    feedback = _Pause(pause_at)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    algorithm = QgsApplication.processingRegistry().algorithmById(alg_id)
    task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
    done = []
    task.executed.connect(lambda ok, results: done.append((ok, results)))
    QgsApplication.taskManager().addTask(task)
    try:
        qtbot.waitUntil(lambda: feedback.reached.is_set() or bool(done), timeout=60000)
        assert feedback.reached.is_set(), feedback.textLog()
        meanwhile()
    finally:
        feedback.go.set()
    qtbot.waitUntil(lambda: bool(done), timeout=60000)
    ok, results = done[0]
    assert ok, feedback.textLog()
    return results, context


def _added(path) -> QgsRasterLayer:
    raster = QgsRasterLayer(str(path), path.stem)
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    return raster


def _swap_source(layer: QgsRasterLayer, path) -> None:
    """What the main thread may do to a project layer: point it at another file."""
    layer.setDataSource(str(path), layer.name(), "gdal", QgsDataProvider.ProviderOptions())
    assert layer.isValid() and layer.source() == str(path)


def _all_dry(tmp_path, a: np.ndarray):
    return write_raster(tmp_path / "dry.tif", [np.where(a == 255, 255, 0).astype(np.uint8)], nodata=255)


def test_zonal_statistics_as_a_task_count_the_layers_as_they_were(provider, qgis_new_project, qtbot,
                                                                  tmp_path):
    """The mask and the polygons are project layers (by id), the polygons a memory layer
    with an unsaved feature; while the worker counts, the main thread points the mask at
    an all-dry file and empties the polygons. The worker read the project's own objects:
    it counted no water (or failed), where its own copies give the numbers of the start."""
    path, a = _mask(tmp_path)
    mask = _added(path)
    x0, y0 = ORIGIN
    zones = _rect_layer("EPSG:32630", [("north", (x0, y0 - 400, x0 + 1000, y0))], name="zones")
    QgsProject.instance().addMapLayer(zones)
    zones.startEditing()
    south = QgsFeature(zones.fields())
    south.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, y0 - 1000, x0 + 1000, y0 - 400)))
    south.setAttributes(["south"])
    assert zones.addFeature(south)   # not saved: the copy takes it as the user sees it
    dry = _all_dry(tmp_path, a)

    def meanwhile():
        _swap_source(mask, dry)
        zones.rollBack()
        zones.dataProvider().truncate()
        assert zones.featureCount() == 0

    results, context = _run_as_task(qtbot, "sarflood:zonalwater",
                                    {"POLYGONS": zones.id(), "MASK": mask.id(), "OUTPUT": "memory:"},
                                    "counting pixels per polygon", meanwhile)
    out = QgsProcessingUtils.mapLayerFromString(results["OUTPUT"], context)
    rows = {f["name"]: f for f in out.getFeatures()}
    assert set(rows) == {"north", "south"}
    for name, block in (("north", a[:40]), ("south", a[40:])):
        assert rows[name]["valid_px"] == int((block != 255).sum())
        assert rows[name]["water_px"] == int((block == 1).sum()) > 0
        assert rows[name]["water_km2"] == pytest.approx(_utm_area_m2(int((block == 1).sum())) / 1e6,
                                                        rel=1e-3)


def test_vectorize_as_a_task_reads_the_mask_as_it_was(provider, qgis_new_project, qtbot, tmp_path):
    """The mask, a project layer, is pointed at an all-dry file as gdal:polygonize starts."""
    path, a = _mask(tmp_path)
    mask = _added(path)
    dry = _all_dry(tmp_path, a)
    results, _ = _run_as_task(qtbot, "sarflood:vectorize",
                              {"INPUT": mask.id(), "MIN_AREA_M2": 0, "OUTPUT": str(tmp_path / "water.gpkg")},
                              "step 1 of 4", lambda: _swap_source(mask, dry))
    assert results["POLYGON_COUNT"] == 2   # the square and the speck


def test_a_vectorize_task_leaves_no_step_layer_or_file(provider, qtbot, tmp_path):
    """Run as a task, its steps' layers stay with the run's context past the worker thread
    (steps.free_layers); back in the main thread, postProcessAlgorithm frees them and
    removes their folders, so nothing of the steps stays open or on disk."""
    import os

    temp = QgsProcessingUtils.tempFolder()
    before = set(os.listdir(temp))
    results, context = _run_as_task(qtbot, "sarflood:vectorize",
                                    {"INPUT": str(_mask(tmp_path)[0]), "MIN_AREA_M2": 0,
                                     "OUTPUT": str(tmp_path / "water.gpkg")},
                                    "step 1 of 4", lambda: None)
    assert results["POLYGON_COUNT"] == 2
    held = [layer.source() for layer in context.temporaryLayerStore().mapLayers().values()]
    assert [source for source in held if source.startswith(temp)] == []
    assert set(os.listdir(temp)) - before == set()


def test_flood_extent_as_a_task_reads_its_inputs_as_they_were(provider, qgis_new_project, qtbot,
                                                              tmp_path):
    """Pre-event mask (a project raster) and permanent water (a project memory layer, which
    gdal:rasterize gets exported from the worker's copy) both change as the first step
    starts: the extent is that of the inputs at the start."""
    post_path, post = _mask(tmp_path)
    pre = np.zeros_like(post)
    pre[10:20, 10:30] = 1            # the top half of the square was water before
    pre_layer = _added(write_raster(tmp_path / "pre.tif", [pre], nodata=255))
    x0, y0 = ORIGIN                  # permanent water: the speck's first row
    lake = _rect_layer("EPSG:32630", [("lake", (x0 + 500, y0 - 510, x0 + 520, y0 - 500))], name="lake")
    QgsProject.instance().addMapLayer(lake)
    dry = _all_dry(tmp_path, post)

    def meanwhile():
        _swap_source(pre_layer, dry)
        lake.dataProvider().truncate()

    results, _ = _run_as_task(qtbot, "sarflood:floodextent",
                              {"POST": str(post_path), "PRE": pre_layer.id(), "PERMANENT": lake.id(),
                               "OUTPUT": str(tmp_path / "flood.tif")},
                              "step 1 of 4", meanwhile)
    expected = np.where(post == 1, 1, 0).astype(np.uint8)
    expected[10:20, 10:30] = 2
    expected[50, 50:52] = 2
    expected[post == 255] = 255
    np.testing.assert_array_equal(read_raster(results["OUTPUT"]), expected)
    assert results["FLOODED_PIXELS"] == int((expected == 1).sum())


def test_project_layers_named_by_inputs_become_copies_of_their_own(provider, qgis_new_project,
                                                                   two_band_scene, tmp_path):
    """What prepareAlgorithm (main thread) hands processAlgorithm (worker): one copy per
    project layer, so that the same layer given as VV and VH is still refused as one; an
    extent given by a layer as that extent; selected features of an edited memory layer as
    the user sees them; a file that no project layer shows as it is."""
    from sarflood.plugin.processing.base import own_inputs

    registry = QgsApplication.processingRegistry()
    scene = _added(two_band_scene)
    mapwater = registry.algorithmById("sarflood:mapwater")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    own = own_inputs(mapwater, {"INPUT": scene.id(), "INPUT_VH": scene.source(), "EXTENT": scene.id()},
                     context)
    assert own["INPUT"] is own["INPUT_VH"]
    assert own["INPUT"] is not scene and own["INPUT"].project() is None
    assert own["INPUT"].source() == scene.source() and own["INPUT"].isValid()
    assert isinstance(own["EXTENT"], QgsReferencedRectangle)
    assert own["EXTENT"].toString() == scene.extent().toString() and own["EXTENT"].crs() == scene.crs()
    assert own_inputs(mapwater, {"INPUT": str(tmp_path / "elsewhere.tif")}, context) == {}

    fixes = _rect_layer("EPSG:32630", [("1", (0, 0, 1, 1)), ("0", (1, 1, 2, 2))], field="water:string",
                        name="fixes")
    QgsProject.instance().addMapLayer(fixes)
    fixes.startEditing()
    drawn = QgsFeature(fixes.fields())
    drawn.setGeometry(QgsGeometry.fromRect(QgsRectangle(2, 2, 3, 3)))
    drawn.setAttributes(["1"])
    fixes.addFeature(drawn)
    fixes.selectByExpression("\"water\" = '1'")
    chosen = QgsProcessingFeatureSourceDefinition(fixes.id(), True)
    copy = own_inputs(registry.algorithmById("sarflood:correctmask"),
                      {"INPUT": scene.id(), "CORRECTIONS": chosen}, context)["CORRECTIONS"]
    assert copy is not fixes and copy.project() is None and copy.name() == "fixes"
    assert sorted(f.geometry().boundingBox().xMinimum() for f in copy.getFeatures()) == [0, 2]
    fixes.rollBack()
    del scene, fixes, copy, own


def test_dock_statistics_count_the_zones_as_they_were_when_asked(plugin, qtbot, models, two_band_scene,
                                                                 tmp_path):
    """Through the dock: a memory zones layer with an unsaved polygon, removed from the
    project right after Compute. The task's context has no project and its polygons are a
    copy made on the click, so the numbers are those of both halves."""
    from .test_review_dock import _run

    _run(plugin, qtbot, two_band_scene, models["threshold"], tmp_path)
    dock = plugin.dock
    x0, y0 = 500000.0, 4200000.0     # the scene: 64 x 64 pixels of 10 m, water in the west half
    zones = _rect_layer("EPSG:32630", [("west", (x0, y0 - 640, x0 + 320, y0))], name="admin")
    QgsProject.instance().addMapLayer(zones)
    zones.startEditing()
    east = QgsFeature(zones.fields())
    east.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0 + 320, y0 - 640, x0 + 640, y0)))
    east.setAttributes(["east"])
    assert zones.addFeature(east)
    dock.zones.setLayer(zones)
    qtbot.mouseClick(dock.stats_button, Qt.MouseButton.LeftButton)
    context = dock._busy[-1][1]
    assert isinstance(context, QgsProcessingContext) and context.project() is None
    QgsProject.instance().removeMapLayer(zones.id())   # the analyst removes it meanwhile
    del zones, east
    qtbot.waitUntil(lambda: dock.status.text().startswith("Statistics"), timeout=60000)
    assert "Statistics: 2 polygons" in dock.status.text(), dock.status.text()
    stats = QgsProject.instance().mapLayersByName("water per polygon (threshold 0.50)")[0]
    rows = {f["name"]: f for f in stats.getFeatures()}
    assert (rows["west"]["valid_px"], rows["west"]["water_px"]) == (2048, 2048)
    assert (rows["east"]["valid_px"], rows["east"]["water_px"]) == (2048, 0)
    del stats, rows
    wait_for_tasks(qtbot)


def test_a_map_layer_whose_file_was_deleted_is_named(provider, qgis_new_project, qtbot, tmp_path):
    """The mask picked from the map (by id) after its file was deleted: the copy is an
    invalid layer, which was checked as a mask and called 'non-integer values; it looks
    like a probability raster'."""
    path, _ = _mask(tmp_path)
    mask = _added(path)
    path.unlink()
    feedback = QgsProcessingFeedback()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    algorithm = QgsApplication.processingRegistry().algorithmById("sarflood:vectorize")
    task = QgsProcessingAlgRunnerTask(algorithm, {"INPUT": mask.id(), "MIN_AREA_M2": 0,
                                                  "OUTPUT": str(tmp_path / "w.gpkg")},
                                      context, feedback)
    done = []
    task.executed.connect(lambda ok, results: done.append(ok))
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: bool(done), timeout=60000)
    assert done == [False]
    assert f"'post': {path}: file not found" in feedback.textLog(), feedback.textLog()


def test_a_task_frees_its_copies_of_project_layers_in_the_main_thread(provider, qgis_new_project, qtbot,
                                                                      tmp_path, monkeypatch):
    """A copy freed in the worker thread that read it has its end handled by PyQt in the main
    thread without Python's lock, racing the worker (the crash processing/steps.py tells
    of): the copies a run as a task reads are freed in the main thread, after a run that
    succeeded and after one that failed."""
    from sarflood.plugin.processing import base

    main = QCoreApplication.instance().thread()
    freed_in_main = []
    made = base.private_copy

    def recorded(layer, *args, **kwargs):
        copy = made(layer, *args, **kwargs)
        copy.destroyed.connect(lambda: freed_in_main.append(QThread.currentThread() == main),
                               Qt.ConnectionType.DirectConnection)
        return copy

    monkeypatch.setattr(base, "private_copy", recorded)
    mask = _added(_mask(tmp_path)[0])
    results, _ = _run_as_task(qtbot, "sarflood:vectorize",
                              {"INPUT": mask.id(), "MIN_AREA_M2": 0, "OUTPUT": str(tmp_path / "water.gpkg")},
                              "step 1 of 4", lambda: None)
    assert results["POLYGON_COUNT"] == 2
    qtbot.waitUntil(lambda: len(freed_in_main) == 1, timeout=10000)

    context = QgsProcessingContext()   # a run that fails once it has read its inputs
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    task = QgsProcessingAlgRunnerTask(QgsApplication.processingRegistry().algorithmById("sarflood:vectorize"),
                                      {"INPUT": mask.id(), "OUTPUT": str(tmp_path / "water.tif")},
                                      context, feedback)
    done = []
    task.executed.connect(lambda ok, results: done.append(ok))
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: bool(done), timeout=60000)
    assert done == [False] and "is no vector format" in feedback.textLog()
    qtbot.waitUntil(lambda: len(freed_in_main) == 2, timeout=10000)
    assert freed_in_main == [True, True]
