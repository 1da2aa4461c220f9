"""A run from the dialog to the review dock, as an analyst does it (qtbot clicks, real backend).

Also checks that a run starts no process from QGIS's main thread, and measures how long
the Qt event loop is blocked meanwhile (a 10 ms timer's worst gap, against a loose limit).
"""
import shlex
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (Qgis, QgsFeature, QgsGeometry, QgsPalettedRasterRenderer, QgsProcessingUtils,
                       QgsProject, QgsRasterLayer, QgsRectangle, QgsSingleBandPseudoColorRenderer,
                       QgsVectorLayer)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QApplication, QMessageBox

from sarflood.plugin.gui.message_text import MessageText

from .conftest import (burnt_polygons, dead_pid, read_raster, spoiling_python, unfinished_tasks,
                       wait_for_tasks)

CHIP = "Spain_7370579_S1Hand.tif"


# A backstop for QGIS freezing: the gap measures scheduling as much as the plugin (11 ms
# idle, 19-25 ms beside a CPU hog; 0.1 s failed once with three jobs on the 2 cores), so the
# test catches a synchronous backend call by the thread that starts a process instead
STALL_LIMIT_S = 1.0


class StallMeter:
    """Largest gap between ticks of a 10 ms timer: how long the event loop was blocked."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.worst = 0.0

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last)
        self.last = now

    def start(self):
        self.last = None
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


def _start_run(plugin, qtbot, layer, model, out_dir, tta=False):
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(layer)
    dialog.model.setFilePath(str(model))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    dialog.temporary.setChecked(False)
    dialog.output_dir.setFilePath(str(out_dir))
    dialog.tta.setChecked(tta)
    return dialog


def _answer_next_question(button):
    """Click ``button`` in the next modal question box, as the user would."""
    def click():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            box.button(button).click()
        else:
            QTimer.singleShot(20, click)
    QTimer.singleShot(20, click)


def test_run_review_and_accept(plugin, qgis_iface, qtbot, models, real_chips, tmp_path,
                               monkeypatch):
    chip = real_chips / "S1Hand" / CHIP
    layer = QgsRasterLayer(str(chip), "Spain chip")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, models["threshold"], tmp_path, tta=True)
    dialog.use_model_threshold.setChecked(True)
    # a process started by QGIS's main thread (the backend, or a query of it) blocks the
    # map for its whole run: each start says which thread made it
    started_by = []
    popen_init = subprocess.Popen.__init__

    def recording_init(self, args, *rest, **kwargs):
        started_by.append((threading.current_thread() is threading.main_thread(), args))
        popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    meter = StallMeter()
    meter.start()
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        assert dialog.cancel_button.isEnabled() and not dialog.run_button.isEnabled()
    stall = meter.stop()
    monkeypatch.undo()
    print(f"event-loop worst gap during the run: {1000 * stall:.1f} ms")
    run = blocker.args[0]
    assert run is not None, dialog.status.text()
    assert any("predict" in args for _, args in started_by), started_by
    assert not [args for main, args in started_by if main], "processes started by the GUI thread"
    assert stall < STALL_LIMIT_S, f"event loop blocked for {1000 * stall:.0f} ms"

    # outputs as a styled group: paletted mask, pseudocolour probability, hidden uncertainty
    group = QgsProject.instance().layerTreeRoot().findGroup("Flood map: Spain chip")
    assert group is not None
    names = [node.layer().name() for node in group.findLayers()]
    assert names[0].startswith("water mask") and "water probability" in names and len(names) == 3
    mask_renderer = run.layers.mask.renderer()
    assert isinstance(mask_renderer, QgsPalettedRasterRenderer)
    colours = {c.value: c.color for c in mask_renderer.classes()}
    assert colours[1].blue() > 200 and colours[1].alpha() == 255 and colours[0].alpha() == 0
    assert isinstance(run.layers.probability.renderer(), QgsSingleBandPseudoColorRenderer)
    assert run.layers.uncertainty is not None and (tmp_path / "Spain_7370579_S1Hand_uncertainty.tif").exists()
    # what the spread means, on the map: the legend's ends and the layer's name
    legend = [label for label, _ in run.layers.uncertainty.renderer().legendSymbologyItems()]
    assert legend[0] == "0: the 8 flips and rotations agree"
    assert legend[-1] == ">= 0.25: water probability differs widely"
    assert run.layers.uncertainty.name().startswith("uncertainty (std of water probability over 8 ")
    summary = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success)[-1]
    assert "km² of water" in summary and "% of the" in summary and " s on CPU" in summary
    assert "test-threshold 1.0.0" in summary
    # in the words of the units line before the run, which said 'from the values' too
    assert "input units dB (from the values)" in dialog.status.text()

    # the threshold slider restyles and updates the area from the histogram, without a re-run
    dock = plugin.dock
    assert not dock.isHidden() and dock.threshold.value() == pytest.approx(0.5)
    before = dock.area.text()
    dock.slider.setValue(30)
    assert dock.threshold.value() == pytest.approx(0.30)
    from sarflood.plugin.summary import area_text, valid_area, water_area_at
    hist = run.result["probability_histogram"]
    assert dock.area.text() == area_text(water_area_at(hist, 0.30), valid_area(hist)) != before
    prob_renderer = run.layers.probability.renderer()
    items = prob_renderer.shader().rasterShaderFunction().colorRampItemList()
    assert items[0].value == pytest.approx(0.30) and items[0].color.alpha() == 0
    assert not group.findLayer(run.layers.mask.id()).isVisible()
    dock.opacity.setValue(40)
    assert run.layers.mask.renderer().opacity() == pytest.approx(0.4)
    dock.show_water.setChecked(False)   # the run's layers themselves, wherever they are
    assert not any(node.isVisible() for node in group.findLayers())
    dock.show_water.setChecked(True)    # back as they were: at 0.30, the probability layer alone
    assert [node.layerId() for node in group.findLayers() if node.isVisible()] == [run.layers.probability.id()]

    # statistics per polygon, at the dock's threshold (a temporary mask at 0.30 is made first)
    extent = layer.extent()
    halves = QgsVectorLayer("Polygon?crs=EPSG:4326&field=name:string", "admin", "memory")
    mid = extent.center().x()
    for name, rect in (("west", (extent.xMinimum(), extent.yMinimum(), mid, extent.yMaximum())),
                       ("east", (mid, extent.yMinimum(), extent.xMaximum(), extent.yMaximum()))):
        f = QgsFeature(halves.fields())
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(*rect)))
        f.setAttributes([name])
        halves.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(halves)
    dock.zones.setLayer(halves)
    qtbot.mouseClick(dock.stats_button, Qt.MouseButton.LeftButton)
    dock.threshold.setValue(0.45)   # moved while the mask is made: the layer keeps 0.30's name
    qtbot.waitUntil(lambda: bool(QgsProject.instance().mapLayersByName("water per polygon (threshold 0.30)"))
                    or "failed" in dock.status.text(), timeout=60000)
    assert "Statistics: 2 polygons" in dock.status.text(), dock.status.text()
    dock.threshold.setValue(0.30)
    stats = QgsProject.instance().mapLayersByName("water per polygon (threshold 0.30)")[0]
    probability = read_raster(run.params.probability)
    assert sum(f["water_px"] for f in stats.getFeatures()) == int(np.sum(probability > 0.30))
    assert sum(f["valid_px"] for f in stats.getFeatures()) == int(np.sum(np.isfinite(probability)))

    # accept: the final mask at 0.30 with provenance tags, and polygons
    final = tmp_path / "final.tif"
    dock.final_path.setFilePath(str(final))
    dock.polygons.setChecked(True)
    dock.min_area.setValue(0)
    qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "polygons written" in dock.status.text() or "failed" in dock.status.text(),
                    timeout=60000)
    assert "polygons written" in dock.status.text(), dock.status.text()
    written = read_raster(final)
    np.testing.assert_array_equal(written, np.where(np.isfinite(probability),
                                                    (probability > 0.30).astype(np.uint8), 255))
    tags = gdal.Open(str(final)).GetMetadata()
    assert float(tags["SARFLOOD_THRESHOLD"]) == pytest.approx(0.30)
    assert "test-threshold" in tags["SARFLOOD_MODEL"]
    assert CHIP in tags["SARFLOOD_INPUTS"]
    assert "review dock" in tags["SARFLOOD_REVIEW"]
    polygons = QgsVectorLayer(str(final.with_suffix(".gpkg")), "p", "ogr")
    assert polygons.featureCount() > 0 and "area_m2" in polygons.fields().names()
    # the polygons are the final mask's water, at 0.30 (not the run's mask at 0.5)
    np.testing.assert_array_equal(burnt_polygons(final.with_suffix(".gpkg"), final),
                                  (written == 1).astype(np.uint8))
    # the final mask is drawn as the run's mask is: water blue, dry clear
    final_layer = QgsProject.instance().mapLayersByName("final water mask (final)")[0]
    assert final_layer.source() == str(final)
    assert isinstance(final_layer.renderer(), QgsPalettedRasterRenderer)
    assert {c.value: c.color.name(QColor.NameFormat.HexArgb) for c in final_layer.renderer().classes()} == \
        {c.value: c.color.name(QColor.NameFormat.HexArgb) for c in mask_renderer.classes()}

    # accepting again to the same file asks first; "No" writes nothing, but what an Accept
    # killed with QGIS left beside it is cleaned up before the question, and said
    stamp = final.stat().st_mtime_ns
    left = tmp_path / f".{final.name}.{dead_pid()}-0123abcd.sarflood-tmp"
    left.write_bytes(b"II*")
    _answer_next_question(QMessageBox.StandardButton.No)
    qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
    assert dock.status.text() == (f"Accept: nothing written; removed {left}, left by an "
                                  f"interrupted run") and final.stat().st_mtime_ns == stamp
    assert not left.exists()

    # a run whose layers the user removed is not touched any more, and the controls say so
    QgsProject.instance().removeMapLayer(run.layers.probability.id())
    assert "layers were removed" in dock.status.text()
    assert not dock.accept_button.isEnabled() and not dock.stats_button.isEnabled()
    dock.slider.setValue(60)   # as a script could
    assert "layers were removed" in dock.status.text()
    dock.accept_map()
    assert dock.status.text().startswith("Accept: The run's layers were removed")

    # the dialog's choices are remembered for next time
    from sarflood.plugin.settings import RunSettings
    remembered = RunSettings.load()
    assert remembered.tta and not remembered.temporary and remembered.output_dir == str(tmp_path)
    assert remembered.model == str(models["threshold"])
    wait_for_tasks(qtbot)


def test_accept_burns_the_analysts_corrections(plugin, qgis_iface, qtbot, models, real_chips, tmp_path):
    """Corrections drawn in a new layer (its edits not even saved) reach the final mask: pixels
    whose centres they cover become water or dry; the polygons are kept beside the mask."""
    chip = real_chips / "S1Hand" / CHIP
    layer = QgsRasterLayer(str(chip), "Spain chip")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, models["threshold"], tmp_path)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    run = blocker.args[0]
    assert run is not None, dialog.status.text()
    dock = plugin.dock
    from sarflood.plugin.summary import area_text
    run_area = area_text(run.result["water_area_km2"], run.result["valid_area_km2"])
    assert dock.area.text() == run_area
    qtbot.mouseClick(dock.new_corrections, Qt.MouseButton.LeftButton)
    fixes = dock.corrections.currentLayer()
    assert fixes is not None and fixes.isEditable() and "water" in fixes.fields().names()
    # the live area is the mask's without its corrections, and says so
    assert dock.area.text() == run_area + " (before corrections: Accept applies them)"

    x0, dx, _, y0, _, dy = gdal.Open(str(chip)).GetGeoTransform()

    def box(c0, r0, c1, r1):   # pixel columns c0..c1-1, rows r0..r1-1
        return QgsRectangle(x0 + c0 * dx, y0 + r1 * dy, x0 + c1 * dx, y0 + r0 * dy)

    for water, rect in ((1, box(100, 100, 140, 130)), (0, box(120, 110, 160, 150))):
        f = QgsFeature(fixes.fields())
        f.setGeometry(QgsGeometry.fromRect(rect))
        f["water"] = water   # by name: the GeoPackage's fid field comes first
        assert fixes.addFeature(f)
    # the run's own layers and its scene are not for replacing (it asked, then did)
    for used in (run.params.mask, str(chip)):
        before_bytes = open(used, "rb").read()
        dock.final_path.setFilePath(used)
        qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
        assert "is this run's input, one of its layers or its corrections" in dock.status.text()
        assert open(used, "rb").read() == before_bytes
    # nor the corrections' GeoPackage, where a final mask of its name puts its polygons (the
    # analyst's corrections were replaced by the water polygons)
    fixes_file = Path(fixes.source().split("|")[0])
    before_bytes = fixes_file.read_bytes()
    dock.polygons.setChecked(True)
    dock.final_path.setFilePath(str(fixes_file.with_suffix(".tif")))
    qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
    assert f"{fixes_file} is this run's input, one of its layers or its corrections" in \
        dock.status.text(), dock.status.text()
    assert fixes_file.read_bytes() == before_bytes
    final = tmp_path / "final.tif"
    dock.final_path.setFilePath(str(final))
    dock.min_area.setValue(0)
    qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
    try:
        qtbot.waitUntil(lambda: any(word in dock.status.text() for word in
                                    ("polygons written", "failed", "cancelled")), timeout=60000)
    except qtbot.TimeoutError:   # once in CI: say what was still running, and what the dock said
        raise AssertionError(f"Accept never ended: {dock.status.text()!r}; "
                             f"tasks: {unfinished_tasks()}")
    assert "pixels corrected" in dock.status.text(), dock.status.text()
    probability = read_raster(run.params.probability)
    want = np.where(np.isfinite(probability), (probability > 0.5).astype(np.uint8), 255)
    before = want.copy()
    want[100:130, 100:140] = 1
    want[110:150, 120:160] = 0          # drawn later: wins where they overlap
    want[before == 255] = 255
    np.testing.assert_array_equal(read_raster(final), want)
    # and so are the polygons written beside it
    np.testing.assert_array_equal(burnt_polygons(final.with_suffix(".gpkg"), final),
                                  (want == 1).astype(np.uint8))
    kept = final.with_suffix(".corrections.geojson")
    assert kept.exists() and str(kept) in gdal.Open(str(final)).GetMetadata()["SARFLOOD_CORRECTIONS"]
    assert f"{int((want != before).sum())} pixels corrected" in dock.status.text()
    # an Accept that fails leaves no corrections file of its own behind
    probability = Path(run.params.probability)
    probability.rename(probability.with_suffix(".away"))
    try:
        second = tmp_path / "second.tif"
        dock.final_path.setFilePath(str(second))
        qtbot.mouseClick(dock.accept_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "Accept failed" in dock.status.text(), timeout=60000)
        assert not second.exists() and not second.with_suffix(".corrections.geojson").exists()
    finally:
        probability.with_suffix(".away").rename(probability)
    fixes.rollBack()
    wait_for_tasks(qtbot)


def _big_scene(tmp_path) -> tuple[QgsRasterLayer, Path]:
    """A generated 1536 px scene in the project (a run long enough to stop), and an output folder."""
    import subprocess
    from sarflood.plugin.backend_env import find_interpreter
    from .conftest import REPO

    scene = tmp_path / "scene.tif"
    subprocess.run([find_interpreter().path, "-m", "backend", "scene", str(scene), "--size", "1536"],
                   cwd=REPO, check=True, capture_output=True)
    layer = QgsRasterLayer(str(scene), "scene")
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "out"
    out.mkdir()
    return layer, out


def test_cancel_from_the_dialog_leaves_nothing(plugin, qgis_iface, qtbot, tmp_path):
    from sarflood.plugin.gui.run_dialog import bundled_model
    layer, out = _big_scene(tmp_path)
    dialog = _start_run(plugin, qtbot, layer, bundled_model(), out, tta=True)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=60000)
        # a second run asked for meanwhile (Run is disabled; a script can): refused, said
        running = plugin.controller.task
        assert not dialog.run_button.isEnabled()
        plugin.controller.start(dialog.request(), dialog)
        assert dialog.status.text() == "A run is in progress: wait for it or cancel it"
        assert plugin.controller.task is running
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
        # said at once: the backend takes a moment to stop
        assert dialog.status.text() == "Cancelling: the backend is stopping..."
    assert blocker.args[0] is None
    assert "Cancelled" in dialog.status.text() and dialog.progress.value() == 0
    assert list(out.iterdir()) == []
    assert QgsProject.instance().layerTreeRoot().findGroup("Flood map: scene") is None
    assert "cancelled" in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Info)[-1]
    wait_for_tasks(qtbot)


def test_a_run_stopped_by_unloading_the_plugin_says_so_in_the_log(plugin, qtbot, tmp_path):
    """Switching the plugin off (or reloading it) mid-run cancelled the run in silence."""
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    from sarflood.plugin.gui.run_dialog import bundled_model
    layer, out = _big_scene(tmp_path)
    dialog = _start_run(plugin, qtbot, layer, bundled_model(), out, tta=True)
    logged = []

    def log(message, tag, level):
        logged.append((tag, level, message))

    QgsApplication.messageLog().messageReceived.connect(log)
    try:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=60000)
        plugin.unload()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        wait_for_tasks(qtbot)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(log)
    assert ("SAR Flood Mapper", Qgis.MessageLevel.Warning, "Flood map: scene: the plugin was unloaded "
            "during the run, which stopped it; no output was written") in logged, logged
    assert list(out.iterdir()) == []


def test_the_reopened_dialog_does_not_default_to_a_runs_own_output(plugin, qtbot, models, two_band_scene,
                                                                    tmp_path):
    """With the input layer removed, the dialog opened again with the run's own "water
    mask (...)" as its input."""
    import shutil

    scene = QgsRasterLayer(str(two_band_scene), "scene")
    other = QgsRasterLayer(str(shutil.copy(two_band_scene, tmp_path / "other.tif")), "zz another scene")
    QgsProject.instance().addMapLayers([scene, other])
    out = tmp_path / "out"
    out.mkdir()
    dialog = _start_run(plugin, qtbot, scene, models["threshold"], out)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is not None, dialog.status.text()
    dialog.close()
    QgsProject.instance().removeMapLayer(scene.id())
    assert plugin.show_dialog().stack_layer.currentLayer() is other
    wait_for_tasks(qtbot)


def test_all_nodata_input_adds_no_layer(plugin, qgis_iface, qtbot, models, real_chips, tmp_path):
    chip = real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif"
    layer = QgsRasterLayer(str(chip), "Paraguay chip")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, models["threshold"], tmp_path)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is None
    assert "no valid pixel" in dialog.status.text() and "Paraguay_34417_S1Hand.tif" in dialog.status.text()
    written = sorted(str(p) for p in tmp_path.rglob("*.tif"))
    assert written and all(p in dialog.status.text() for p in written)   # where they went
    assert QgsProject.instance().layerTreeRoot().findGroup("Flood map: Paraguay chip") is None
    assert len(QgsProject.instance().mapLayers()) == 1
    wait_for_tasks(qtbot)


def test_outputs_qgis_cannot_open_add_no_layer_and_name_the_file(plugin, qgis_iface, qtbot,
                                                                 models, two_band_scene, tmp_path):
    """The run's probability GeoTIFF is unreadable by the time QGIS opens it (here a Python
    that spoils it after the backend's run): no group, no half of the layers, no broken layer;
    the dialog and the message bar name the file."""
    out = tmp_path / "out"
    out.mkdir()
    spoiling = spoiling_python(tmp_path, "predict", f"'{out}'/*probability*.tif")
    layer = QgsRasterLayer(str(two_band_scene), "scene")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, models["threshold"], out)
    dialog.python.setFilePath(str(spoiling))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is None
    spoilt = [p for p in out.iterdir() if "probability" in p.name]
    assert len(spoilt) == 1 and spoilt[0].read_text() == "not a GeoTIFF\n"
    status = dialog.status.text()
    assert status.startswith(f"{spoilt[0]}: cannot be opened as a raster layer ("), status
    assert qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)[-1].endswith(status)
    assert list(QgsProject.instance().mapLayers().values()) == [layer]
    assert [n.name() for n in QgsProject.instance().layerTreeRoot().children()] == ["scene"]
    assert plugin.dock.run is None
    wait_for_tasks(qtbot)


def test_the_final_mask_of_a_temporary_run_defaults_to_a_lasting_folder(qgis_app, tmp_path):
    """A run with temporary files writes into QGIS's Processing folder, which QGIS deletes
    on exit: the accepted mask went there too, and was lost with it."""
    from qgis.core import QgsProcessingUtils

    from plugin.gui.review_dock import lasting_folder

    kept = tmp_path / "run" / "scene_water_mask.tif"
    assert lasting_folder(kept) == kept.parent
    temporary = Path(QgsProcessingUtils.tempFolder()) / "sarflood-x" / "scene_water_mask.tif"
    project = QgsProject.instance()
    saved = project.fileName()
    project.setFileName(str(tmp_path / "floods.qgz"))
    try:
        assert lasting_folder(temporary) == tmp_path
        project.setFileName("")
        assert lasting_folder(temporary) == Path.home()
    finally:
        project.setFileName(saved)


def test_a_run_with_warnings_does_not_end_in_a_green_done(plugin, qgis_iface, qtbot, models,
                                                          two_band_scene):
    """VV and VH swapped by the band choice: the backend's warning was in a tooltip before
    the run and gone behind "Done" and a green Success after it."""
    layer = QgsRasterLayer(str(two_band_scene), "scene")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, models["threshold"], two_band_scene.parent)
    dialog.temporary.setChecked(True)
    dialog.vv_band.setBand(2)
    dialog.vh_band.setBand(1)
    qtbot.waitUntil(lambda: "swapped" in dialog.units_detected.text(), timeout=30000)
    assert dialog.units_detected.text().startswith("detected: dB (from the values); warning: ")
    assert "color: #b00" in dialog.units_detected.styleSheet()
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is not None, dialog.status.text()
    status = dialog.status.text()
    assert status.startswith("Done: ") and "\nWarning: " in status and "swapped" in status
    assert "color: #b00" in dialog.status.styleSheet()
    bar = qgis_iface.messageBar()
    assert bar.get_messages(Qgis.MessageLevel.Success) == []
    warning = bar.get_messages(Qgis.MessageLevel.Warning)[-1]
    assert "km² of water" in warning and "swapped" in warning
    wait_for_tasks(qtbot)


def test_a_model_cards_words_are_shown_as_text_not_as_html(plugin, qgis_iface, qtbot, two_band_scene,
                                                             tmp_path):
    """QGIS's message bar renders HTML and opens a link when clicked: a card named with an
    anchor put a working link to anywhere under every successful run."""
    import onnx

    from training.toy_models import raw_db_card, threshold_model

    name = "<a href='https://evil.example/fix.sh'>update</a>"
    model = tmp_path / "hostile.onnx"
    onnx.save(threshold_model(raw_db_card(name, margin=0)), model)
    layer = QgsRasterLayer(str(two_band_scene), "scene")
    QgsProject.instance().addMapLayer(layer)
    dialog = _start_run(plugin, qtbot, layer, model, tmp_path)
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is not None, dialog.status.text()
    summary = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Success)[-1]
    assert "&lt;a href='https://evil.example/fix.sh'&gt;update&lt;/a&gt;" in summary, summary
    assert "<a " not in summary
    assert name in dialog.status.text()
    dock = plugin.controller.dock   # its title comes from the layer's name, or a saved project
    for shown in (dialog.status, dialog.backend_info, dock.title, dock.status):
        assert isinstance(shown, MessageText) and not shown.acceptRichText()
    wait_for_tasks(qtbot)


def test_a_killed_run_says_why_and_is_logged(plugin, qgis_iface, qtbot, tmp_path, monkeypatch):
    """SIGKILL, as the OOM killer sends it, said "exit code -9: no message", and no failed
    run reached the log panel; nor did the command of a run, which a report needs."""
    import os
    import signal

    from qgis.core import QgsApplication

    from sarflood.plugin.gui.run_dialog import bundled_model
    layer, out = _big_scene(tmp_path)
    dialog = _start_run(plugin, qtbot, layer, bundled_model(), out, tta=True)

    def backend_children() -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                command = Path(f"/proc/{pid}/cmdline").read_text()
            except (OSError, IndexError, ValueError):
                continue   # gone meanwhile
            # this run's: another test's backend may still be ending
            if parent == os.getpid() and "predict" in command and str(out) in command:
                found.append(int(pid))
        return found

    logged = []

    def log(message, tag, level):
        logged.append((tag, level, message))

    bar = qgis_iface.messageBar()
    pushed = []   # the test's bar keeps no "Show more" text

    def push(*args, **kwargs):
        pushed.append(args)
        type(bar).pushMessage(bar, *args, **kwargs)

    monkeypatch.setattr(bar, "pushMessage", push)
    QgsApplication.messageLog().messageReceived.connect(log)
    try:
        with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
            qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=60000)
            children = backend_children()
            assert len(children) == 1
            os.kill(children[0], signal.SIGKILL)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(log)
    assert blocker.args[0] is None
    status = dialog.status.text()
    assert status.startswith("the backend was killed (signal 9, SIGKILL), most often by the system "
                             "running out of memory: try a smaller tile size"), status
    assert qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)[-1].endswith(status)
    assert any(tag == "SAR Flood Mapper" and level == Qgis.MessageLevel.Critical and status in message
               for tag, level, message in logged), logged
    # the command, logged as the run starts: a line to paste in a terminal
    from sarflood.plugin.backend_env import PLUGIN_ROOT
    command = f"cd {shlex.quote(str(PLUGIN_ROOT))} && "
    started = [message for tag, level, message in logged if level == Qgis.MessageLevel.Info
               and message.startswith("[Flood map: scene] the command:\n")]
    assert len(started) == 1 and started[0].splitlines()[1].startswith(command), logged
    assert " -m backend predict " in started[0] and "--progress json" in started[0]
    # each line of the run names it
    assert any(level == Qgis.MessageLevel.Info and message.startswith("[Flood map: scene] model ")
               for tag, level, message in logged), logged
    assert pushed[-1][:2] == ("SAR Flood Mapper", status)
    assert pushed[-1][2].endswith("The command:\n" + started[0].splitlines()[1]), pushed
    assert list(out.iterdir()) == []
    assert QgsProject.instance().layerTreeRoot().findGroup("Flood map: scene") is None
    wait_for_tasks(qtbot)


def test_a_plugin_error_in_the_run_task_is_said_as_the_plugins_and_logged(
        plugin, qgis_iface, qtbot, tmp_path, monkeypatch):
    """An exception in the run's task thread (a bug of the plugin's, put in here in its
    handler of the backend's events: no input is known to raise one) ended the run as "the
    backend failed", with no traceback, and left the backend running to write its outputs."""
    from qgis.core import QgsApplication

    from sarflood.plugin import task as task_module
    from sarflood.plugin.gui.run_dialog import bundled_model

    def raising(self, event):
        if event.get("event") == "progress":
            raise RuntimeError("a bug")
    monkeypatch.setattr(task_module.BackendTask, "_on_event", raising)
    layer, out = _big_scene(tmp_path)
    dialog = _start_run(plugin, qtbot, layer, bundled_model(), out, tta=True)
    logged = []

    def log(message, tag, level):
        logged.append(message)

    QgsApplication.messageLog().messageReceived.connect(log)
    try:
        with qtbot.waitSignal(plugin.controller.finished, timeout=60000) as blocker:
            qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(log)
    assert blocker.args[0] is None
    assert dialog.status.text() == (
        "internal error in the plugin, please report it with the details in View > Panels > "
        "Log Messages, tab 'SAR Flood Mapper': RuntimeError: a bug")
    assert any(m.startswith("SAR Flood Mapper: Flood map: scene:\nTraceback") and
               'raise RuntimeError("a bug")' in m for m in logged), logged
    assert dialog.run_button.isEnabled()
    wait_for_tasks(qtbot)
    assert list(out.iterdir()) == []   # the backend was stopped, and left nothing


def test_a_cancel_after_the_outputs_were_written_keeps_the_run(plugin, qgis_iface, qtbot, tmp_path):
    """A Cancel that reached the backend after it had written its outputs (it keeps them and
    exits 0 with its result) was shown as "Cancelled: the backend stopped and left no output",
    while the complete files stayed in the folder off the map, and the next run got _2 names."""
    from sarflood.plugin.gui.run_dialog import bundled_model
    layer, out = _big_scene(tmp_path)
    dialog = _start_run(plugin, qtbot, layer, bundled_model(), out)

    def cancel_once_written(level, text):
        if text.startswith("wrote "):
            plugin.controller.cancel()

    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        plugin.controller.task.message.connect(cancel_once_written)
    run = blocker.args[0]
    assert run is not None, dialog.status.text()
    status = dialog.status.text()
    assert status.startswith("The cancel came too late: the run had finished") and "Cancelled" not in status
    assert "\nDone: " in status and "color: #b00" not in dialog.status.styleSheet()
    project = QgsProject.instance()
    shown = {Path(project.mapLayer(layer_id).source()).name for layer_id in
             (run.layers.mask.id(), run.layers.probability.id())}
    assert shown == {p.name for p in out.iterdir()} == {"scene_water_mask.tif", "scene_water_probability.tif"}
    bar = qgis_iface.messageBar()
    assert "too late" in bar.get_messages(Qgis.MessageLevel.Success)[-1]
    assert not any("cancelled" in m.lower() for m in bar.get_messages(Qgis.MessageLevel.Info))
    assert plugin.dock.run is run
    wait_for_tasks(qtbot)


@pytest.mark.parametrize("change", ["cleared", "another opened"])
def test_a_run_that_ends_in_another_project_adds_nothing_to_it(plugin, qgis_iface, qtbot, tmp_path, change):
    """A run that ended after the project was cleared (New, Close) or another one opened added
    its group and a success message to the project open then."""
    from sarflood.plugin.gui.run_dialog import bundled_model
    other = tmp_path / "other.qgz"
    assert QgsProject().write(str(other))   # an empty project to open during the run
    layer, out = _big_scene(tmp_path)
    dialog = _start_run(plugin, qtbot, layer, bundled_model(), out)
    # one run into temporary files: the files named are said to go when QGIS closes
    temporary = change == "cleared"
    dialog.temporary.setChecked(temporary)
    project = QgsProject.instance()
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=60000)
        if change == "cleared":
            project.clear()
        else:
            assert project.read(str(other))
    assert blocker.args[0] is None
    assert project.mapLayers() == {} and project.layerTreeRoot().children() == []
    status = dialog.status.text()
    assert status.startswith("The project was closed or another one opened during the run: its "
                             "layers were not added to this project. Its files: "), status
    note = " (in QGIS's temporary folder, deleted when QGIS closes)"
    assert status.endswith(note) == temporary
    named = status.removesuffix(note).split("Its files: ")[1].split(", ")
    folder = Path(QgsProcessingUtils.tempFolder()) if temporary else out
    assert len(named) == 2 and all(Path(p).is_file() and folder in Path(p).parents for p in named)
    assert (list(out.iterdir()) == []) == temporary
    bar = qgis_iface.messageBar()
    assert bar.get_messages(Qgis.MessageLevel.Success) == []
    assert bar.get_messages(Qgis.MessageLevel.Warning)[-1].endswith(status)
    assert plugin.dock.run is None
    wait_for_tasks(qtbot)
