"""classFactory, initGui and unload: everything added is removed again."""
import os
import signal
from pathlib import Path

import pytest
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QAction, QDockWidget


def _flush_deletes():
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


_PAIRED = {"addToolBarIcon": "removeToolBarIcon", "addPluginToRasterMenu": "removePluginRasterMenu",
           "addDockWidget": "removeDockWidget"}


def _record_interface_calls(iface, monkeypatch) -> list[tuple]:
    """The calls the plugin makes to add to and remove from QGIS's toolbar, Raster menu and
    dock areas, in order, with their arguments (each call then goes where it went)."""
    calls = []
    for name in [*_PAIRED, *_PAIRED.values()]:
        def record(*args, _name=name, _call=getattr(iface, name)):
            calls.append((_name, args))
            return _call(*args)
        monkeypatch.setattr(iface, name, record)
    return calls


def test_load_and_unload_leave_nothing_behind(qgis_iface, qgis_processing, monkeypatch):
    """What initGui adds to QGIS's window (toolbar icon, Raster menu entries, the dock)
    unload takes away again, the same objects: a plugin reloaded left an empty menu."""
    import sarflood

    registry = QgsApplication.processingRegistry()
    registry.removeProvider("sarflood")  # a provider left by other tests would hide a leak
    window = qgis_iface.mainWindow()
    calls = _record_interface_calls(qgis_iface, monkeypatch)

    for _ in range(2):  # a second cycle: unload really freed what the first added
        plugin = sarflood.classFactory(qgis_iface)
        plugin.initProcessing()
        plugin.initGui()
        assert registry.providerById("sarflood") is not None
        assert {a.id() for a in registry.providerById("sarflood").algorithms()} >= {
            "sarflood:mapwater", "sarflood:otsu", "sarflood:floodextent", "sarflood:vectorize"}
        assert len(window.findChildren(QAction, "SarFloodRunAction")) == 1
        assert len(window.findChildren(QDockWidget, "SarFloodReviewDock")) == 1
        dialog = plugin.show_dialog()
        assert dialog.isVisible()
        added = {name: [args for n, args in calls if n == name] for name in _PAIRED}
        assert len(added["addToolBarIcon"]) == 1 and len(added["addDockWidget"]) == 1
        assert {action.objectName() for _, action in added["addPluginToRasterMenu"]} == {
            "SarFloodRunAction", "SarFloodReviewAction"}
        calls.clear()

        plugin.unload()
        removed = {name: [args for n, args in calls if n == name] for name in _PAIRED.values()}
        assert removed["removeToolBarIcon"] == added["addToolBarIcon"]
        assert sorted(removed["removePluginRasterMenu"], key=lambda a: id(a[1])) == sorted(
            added["addPluginToRasterMenu"], key=lambda a: id(a[1]))
        assert removed["removeDockWidget"] == [args[-1:] for args in added["addDockWidget"]]
        calls.clear()
        _flush_deletes()
        assert registry.providerById("sarflood") is None
        assert window.findChildren(QAction, "SarFloodRunAction") == []
        assert window.findChildren(QAction, "SarFloodReviewAction") == []
        assert window.findChildren(QDockWidget, "SarFloodReviewDock") == []
        assert [w for w in QCoreApplication.instance().topLevelWidgets()
                if w.objectName() == "SarFloodRunDialog"] == []


def test_qgis_process_mode_registers_the_provider_without_gui(qgis_iface, qgis_processing):
    """qgis_process calls initProcessing only; unload must still remove the provider."""
    import sarflood

    registry = QgsApplication.processingRegistry()
    registry.removeProvider("sarflood")
    plugin = sarflood.classFactory(qgis_iface)
    plugin.initProcessing()
    assert registry.algorithmById("sarflood:mapwater") is not None
    plugin.unload()
    assert registry.providerById("sarflood") is None


def test_unload_stops_an_accept_in_flight(plugin, qtbot, models, two_band_scene, tmp_path):
    """Unload cancelled the run but not the dock's tasks: the final mask was written after
    it, with no layer and no message; nor is the corrections file left, whether the task
    writing it or the backend was running."""
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import Qt

    from .conftest import wait_for_tasks
    from .test_gui_run import _start_run

    layer = QgsRasterLayer(str(two_band_scene), "scene")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, models["threshold"], tmp_path)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is not None, dialog.status.text()
    dock = plugin.dock
    qtbot.mouseClick(dock.new_corrections, Qt.MouseButton.LeftButton)
    fixes = dock.corrections.currentLayer()
    feature = QgsFeature(fixes.fields())
    feature.setGeometry(QgsGeometry.fromRect(layer.extent()))
    feature["water"] = 1
    fixes.addFeature(feature)
    final = tmp_path / "final.tif"
    dock.final_path.setFilePath(str(final))
    qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
    plugin.unload()   # the corrections being written in a task, or the backend started
    _flush_deletes()
    wait_for_tasks(qtbot)
    assert not final.exists() and not final.with_suffix(".corrections.geojson").exists()
    assert [p.name for p in tmp_path.iterdir() if "final" in p.name] == []
    assert not any("final" in layer.name() for layer in QgsProject.instance().mapLayers().values())
    fixes.rollBack()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_unload_during_an_install_stops_the_step_running(plugin, qtbot, tmp_path):
    """Unloading (a reload, QGIS closing) deletes the installer's dialog, and with it the
    QProcess of its step: the step is stopped and reaped, not left running unseen."""
    said = tmp_path / "pid"
    installer = plugin.show_installer()
    installer.set_plan([["/bin/sh", "-c", f"echo $$ > '{said}.part' && mv '{said}.part' '{said}' "
                         "&& exec sleep 120"]])
    installer.start()
    qtbot.waitUntil(said.exists, timeout=30000)
    pid = int(said.read_text())
    step = Path(f"/proc/{pid}")
    try:
        assert step.exists()
        plugin.unload()
        _flush_deletes()
        qtbot.waitUntil(lambda: not step.exists(), timeout=10000)   # gone, not a zombie
    finally:   # a failed check leaves no sleep behind
        if step.exists():
            os.kill(pid, signal.SIGKILL)


def test_unload_during_a_toolbox_run_lets_its_end_be_handled(plugin, qtbot, tmp_path):
    """The toolbox runs an algorithm as a task, and its dialog handles the results when the
    task ends (handleAlgorithmResults, which asks the algorithm its id). Unload removed the
    provider at once, QGIS deleted it, and that handler crashed QGIS (a segfault). Unload now
    cancels the provider's runs and waits until their end is handled."""
    import subprocess
    import sys
    import time

    from qgis.core import (QgsProcessingAlgRunnerTask, QgsProcessingContext,
                           QgsProcessingFeedback, QgsProject)

    from tests.conftest import REPO

    scene = tmp_path / "scene.tif"
    subprocess.run([sys.executable, "-m", "backend", "scene", str(scene), "--size", "2048"],
                   cwd=REPO, check=True, capture_output=True)
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("sarflood:mapwater")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    task = QgsProcessingAlgRunnerTask(algorithm, {"INPUT": str(scene), "TTA": True,
                                                  "OUTPUT_MASK": str(tmp_path / "m.tif")},
                                      context, feedback)
    handled = []
    task.executed.connect(lambda ok, results: handled.append((ok, algorithm.id())))
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: feedback.progress() > 0, timeout=60000)   # the backend runs
    started = time.monotonic()
    plugin.unload()
    assert handled == [(False, "sarflood:mapwater")]   # cancelled, and handled during unload
    assert time.monotonic() - started < 10
    assert QgsApplication.processingRegistry().providerById("sarflood") is None
    assert not (tmp_path / "m.tif").exists()
    _flush_deletes()


def test_unload_stops_a_modeler_run_of_mapwater(plugin, qtbot, models, tmp_path):
    """A Graphical Modeler model's task is named after the model, so unload did not know
    it ran sarflood:mapwater: its backend child ran on and wrote the mask after the plugin
    was gone, and the model ended "OK". The run lasts seconds (tiny tiles under TTA), so
    the unload comes before its end however the threads are scheduled."""
    import subprocess

    import numpy as np
    from qgis.core import (QgsProcessingAlgRunnerTask, QgsProcessingContext,
                           QgsProcessingFeedback, QgsProcessingModelAlgorithm,
                           QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource, QgsProject)

    from .conftest import wait_for_tasks, write_raster
    vv = np.random.default_rng(0).normal(-15, 5, (1024, 1024)).astype(np.float32)
    scene = write_raster(tmp_path / "scene.tif", [vv, vv - 7], descriptions=["VV", "VH"])
    mask = tmp_path / "model_mask.tif"
    model = QgsProcessingModelAlgorithm("flood model", "tests")
    step = QgsProcessingModelChildAlgorithm("sarflood:mapwater")
    step.setChildId("map")
    for name, value in (("INPUT", str(scene)), ("MODEL", str(models["threshold"])),
                        ("OUTPUT_MASK", str(mask)), ("TTA", True), ("TILE_SIZE", 16),
                        ("BATCH_SIZE", 1)):
        step.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    model.addChildAlgorithm(step)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    task = QgsProcessingAlgRunnerTask(model, {}, context, feedback)
    ended = []
    task.executed.connect(lambda ok, results: ended.append(ok))
    QgsApplication.taskManager().addTask(task)

    def child_started() -> bool:   # still importing its modules when seen
        found = subprocess.run(["pgrep", "-f", f"backend predict.*{mask}"], capture_output=True)
        return found.returncode == 0
    qtbot.waitUntil(child_started, timeout=60000)
    plugin.unload()
    _flush_deletes()
    qtbot.waitUntil(lambda: bool(ended), timeout=60000)
    assert ended == [False] and not mask.exists()
    assert "the plugin was unloaded: the backend was stopped" in feedback.textLog()
    wait_for_tasks(qtbot)


def test_a_qgis_on_python_3_8_gets_a_message_not_a_traceback(qgis_iface, monkeypatch):
    """QGIS 3.22 and 3.28 builds on Python 3.8 (Ubuntu 20.04) failed to load the plugin with
    "TypeError: 'type' object is not subscriptable" at start-up."""
    import ast
    import sys

    from qgis.core import Qgis

    import sarflood
    from tests.conftest import REPO

    monkeypatch.setattr(sys, "version_info", (3, 8, 10, "final", 0))
    stand_in = sarflood.classFactory(qgis_iface)
    stand_in.initProcessing()
    stand_in.initGui()
    said = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)[-1]
    assert "needs Python 3.9 or newer" in said
    stand_in.unload()
    # what runs there must parse there
    for path in (REPO / "__init__.py", REPO / "plugin" / "unsupported.py"):
        ast.parse(path.read_text(), feature_version=(3, 7))
