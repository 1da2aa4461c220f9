"""The run dialog, driven with qtbot: band guessing, the model card, devices, settings, bad input."""
import re

import numpy as np
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication

from .conftest import wait_for_tasks, write_raster


def _add(path, name=None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name or path.stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _ready(plugin, qtbot, model):
    """The run dialog with ``model``'s card loaded, writing temporary outputs."""
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(model))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    dialog.temporary.setChecked(True)
    return dialog


def _run_is_refused(dialog, qtbot) -> str:
    """Click Run, which must start nothing; the status line that says why."""
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    return dialog.status.text()


def test_bands_are_guessed_from_names(plugin, qtbot, tmp_path):
    plane = np.zeros((16, 16), np.float32)
    swapped = _add(write_raster(tmp_path / "ee_export.tif", [plane, plane, plane],
                                descriptions=["angle", "VH", "VV"]))
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(swapped)
    assert (dialog.vv_band.currentBand(), dialog.vh_band.currentBand()) == (3, 2)

    vv = _add(write_raster(tmp_path / "S1B_20200101_VV.tif", [plane]))
    vh = _add(write_raster(tmp_path / "S1B_20200101_VH.tif", [plane]))
    dialog.vv_layer.setLayer(vh)  # a wrong first choice
    dialog.two_layers.setChecked(True)
    assert dialog.vv_layer.currentLayer().id() == vv.id()
    assert dialog.vh_layer.currentLayer().id() == vh.id()
    assert dialog.vv_band.isHidden() and not dialog.vv_layer.isHidden()
    wait_for_tasks(qtbot)


def test_unnamed_bands_are_left_to_the_backend_which_shows_its_choice(plugin, qtbot, tmp_path):
    """A VH-first stack without band names (a VRT of VH and VV files): the dialog does not
    take band 1 as VV; the backend picks the brighter band, and the combos then show it."""
    rng = np.random.default_rng(4)
    vv = rng.normal(-12.0, 4.0, (48, 48)).astype(np.float32)
    stack = _add(write_raster(tmp_path / "vh_vv.tif", [vv - 7.0, vv]))   # no descriptions
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(stack)
    assert (dialog.vv_band.currentBand(), dialog.vh_band.currentBand()) == (-1, -1)
    assert dialog.current_scene().bands is None
    qtbot.waitUntil(lambda: dialog.inspected is not None
                    and dialog.inspected["files"][0]["path"] == stack.source(), timeout=30000)
    assert dialog.inspected["bands"]["VV"] == {"path": stack.source(), "band": 2,
                                               "named_by": "brightness"}
    assert (dialog.vv_band.currentBand(), dialog.vh_band.currentBand()) == (2, 1)
    wait_for_tasks(qtbot)


def test_a_third_party_cards_output_and_notes_are_shown():
    """The card view left out how the output is read: with a two-class network, which
    channel the backend takes as water could not be checked before a run."""
    from plugin.gui.run_dialog import card_html

    card = {"name": "their-unet", "version": "2.0", "description": "",
            "inputs": {"bands": [{"name": "VV", "units": "dB", "clip": [-30, 5]},
                                 {"name": "VH", "units": "dB", "clip": [-35, 0]}]},
            "pixel_size_m": 10.0, "tiling": {"tile_size": 512, "margin": 32, "size_multiple": 32},
            "output": {"tensor": "logits", "kind": "class_logits", "water_channel": 1,
                       "default_threshold": 0.5},
            "training": {"data": "their own labels", "metrics": {}, "notes": "fold 3 of 5"},
            "license": "MIT"}
    text = card_html(card)
    assert "class logits; water = softmax of channel 1" in text
    assert "edges a multiple of 32 px" in text and "fold 3 of 5" in text
    assert "<p></p>" not in text   # no empty paragraph for a card without a description


def test_card_and_devices_are_shown(plugin, qtbot, models):
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(models["smoothed"]))
    qtbot.waitUntil(lambda: dialog.card is not None and dialog.card["name"] == "test-smoothed-3", timeout=30000)
    text = dialog.card_view.toPlainText()
    assert "test-smoothed-3" in text and "Pixel size" in text and "10 m" in text and "VV (dB" in text
    qtbot.waitUntil(lambda: "CPU" in dialog.device_info.text(), timeout=30000)
    assert "no CUDA" in dialog.device_info.text()
    assert "CUDA cannot be used" in dialog.device_info.toolTip()
    assert ".venv/bin/python" in dialog.backend_info.text()

    dialog.model.setFilePath(str(models["mismatch"]))
    qtbot.waitUntil(lambda: "does not match its card" in dialog.card_view.toPlainText(), timeout=30000)
    assert dialog.card is None
    wait_for_tasks(qtbot)


def _questions_asked(dialog, monkeypatch) -> list[str]:
    """From now on, the backend command of each question the dialog asks (card, devices...)."""
    asked = []
    ask = dialog._ask
    monkeypatch.setattr(dialog, "_ask", lambda what, args, done: (asked.append(args[0]),
                                                                  ask(what, args, done)))
    return asked


def test_a_model_typed_in_is_read_once_typing_pauses(plugin, qtbot, models, monkeypatch):
    """Every keystroke in the model path started a backend process for its card: 53 for
    a 53-character path, the card showing 18 s later on 2 cores."""
    dialog = plugin.show_dialog()
    wait_for_tasks(qtbot)
    asked = _questions_asked(dialog, monkeypatch)
    dialog.model.lineEdit().clear()
    qtbot.keyClicks(dialog.model.lineEdit(), str(models["smoothed"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    assert dialog.card["name"] == "test-smoothed-3"
    assert asked.count("card") == 1
    wait_for_tasks(qtbot)


def test_a_python_typed_in_is_checked_once_typing_pauses(plugin, qtbot, models, monkeypatch):
    """Every keystroke in the Backend Python path started two backend processes, the devices
    and the card queries: 32 for '/usr/bin/python3'."""
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    wait_for_tasks(qtbot)
    asked = _questions_asked(dialog, monkeypatch)
    dialog.python.lineEdit().setFocus()
    qtbot.keyClicks(dialog.python.lineEdit(), "/usr/bin/python3")   # Debian's: no onnxruntime
    assert QgsSettings().value("sarflood/python") == "/usr/bin/python3"
    assert asked == [] and dialog.card is None   # the card of the Python before is not in force
    qtbot.waitUntil(lambda: "onnxruntime" in dialog.backend_info.text(), timeout=30000)
    qtbot.waitUntil(lambda: "onnxruntime" in dialog.card_view.toPlainText(), timeout=30000)
    assert sorted(asked) == ["card", "devices"]
    wait_for_tasks(qtbot)


def test_run_pressed_right_after_choosing_a_model_says_its_card_is_being_read(
        plugin, qtbot, models, two_band_scene, monkeypatch):
    """Within the 400 ms the card query waits for typing to pause, Run said the model had
    "changed since its card was read", which nothing on disk had; the card is read at once."""
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.temporary.setChecked(True)
    dialog.model.setFilePath(str(models["smoothed"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    wait_for_tasks(qtbot)
    asked = _questions_asked(dialog, monkeypatch)
    dialog.model.lineEdit().clear()
    qtbot.keyClicks(dialog.model.lineEdit(), str(models["threshold"]))
    assert _run_is_refused(dialog, qtbot) == (f"Model: reading the card of {models['threshold']} "
                                              f"(see the card box): run once it shows")
    assert asked == ["card"]
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    assert dialog.card["name"] != "test-smoothed-3"
    with qtbot.waitSignal(dialog.runRequested, timeout=5000):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    wait_for_tasks(qtbot)


def test_a_model_file_replaced_at_its_path_is_read_again(plugin, qtbot, models, two_band_scene,
                                                        tmp_path):
    """A model that failed to load stayed refused after the analyst copied a good one to
    the same path, the dialog closed and opened again included; and a card read stayed
    in force for a file replaced under it."""
    import shutil

    model = tmp_path / "flood.onnx"
    model.write_bytes(b"not an ONNX model" * 10)
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.temporary.setChecked(True)
    dialog.model.setFilePath(str(model))
    qtbot.waitUntil(lambda: "not a loadable ONNX model" in dialog.card_view.toPlainText(),
                    timeout=30000)
    assert "has no valid model card" in _run_is_refused(dialog, qtbot)
    shutil.copy(models["threshold"], model)
    dialog.close()
    dialog = plugin.show_dialog()
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    with qtbot.waitSignal(dialog.runRequested, timeout=5000):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    wait_for_tasks(qtbot)
    model.write_bytes(b"not an ONNX model" * 10)   # replaced while the dialog is open
    assert "changed since its card was read" in _run_is_refused(dialog, qtbot)
    qtbot.waitUntil(lambda: "not a loadable ONNX model" in dialog.card_view.toPlainText(),
                    timeout=30000)
    wait_for_tasks(qtbot)


def test_bad_input_is_named_and_nothing_runs(plugin, qtbot, models, tmp_path):
    single = _add(write_raster(tmp_path / "only_vv.tif", [np.zeros((8, 8), np.float32)]))
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    dialog.stack_layer.setLayer(single)
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert "'only_vv' has 1 band" in dialog.status.text()

    stack = _add(write_raster(tmp_path / "stack.tif", [np.zeros((8, 8), np.float32)] * 2))
    dialog.stack_layer.setLayer(stack)
    dialog.temporary.setChecked(False)
    dialog.output_dir.setFilePath(str(tmp_path / "no_such_folder"))
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert "no_such_folder' does not exist" in dialog.status.text()
    dialog.output_dir.setFilePath("")   # it said "Output folder: '' does not exist"
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.status.text() == "Output folder: choose a folder, or tick temporary files"
    wait_for_tasks(qtbot)


@pytest.mark.parametrize("mode", ["one_layer", "two_layers"])
def test_the_input_rows_of_the_other_mode_leave_no_gap(plugin, qtbot, models, mode):
    """The other mode's rows were hidden, and the form kept their spacing: a gap between the
    mode buttons and the first row of the chosen mode (or before Units)."""
    dialog = _ready(plugin, qtbot, models["threshold"])
    getattr(dialog, mode).setChecked(True)
    QApplication.processEvents()
    rows = ([dialog.stack_layer, dialog.vv_band, dialog.vh_band] if mode == "one_layer"
            else [dialog.vv_layer, dialog.vh_layer])
    # from the mode buttons down to Units, each row's top below the one above's bottom
    column = [dialog.one_layer, *rows, dialog.units]
    gaps = [below.geometry().top() - above.geometry().bottom()
            for above, below in zip(column, column[1:])]
    assert max(gaps) - min(gaps) <= 4, gaps
    # each label still names its box (screen readers, Alt+letter)
    assert all(dialog.input_labels[w].buddy() is w for w in rows)


def test_a_vv_only_model_runs_on_a_single_band_layer_and_reads_no_vh_layer(plugin, qtbot, models,
                                                                            tmp_path):
    """The dialog asked every model for VV and VH: a VV-only model's user had no way to run it
    on the VV file they have, from either input mode."""
    from .conftest import read_raster

    vv = np.random.default_rng(3).normal(-14.0, 6.0, (40, 48)).astype(np.float32)
    single = _add(write_raster(tmp_path / "scene_VV.tif", [vv], descriptions=["VV"]))
    dialog = _ready(plugin, qtbot, models["threshold"])
    dialog.stack_layer.setLayer(single)
    assert "'scene_VV' has 1 band; the model needs VV and VH" in _run_is_refused(dialog, qtbot)
    assert dialog.input_labels[dialog.vh_band].text() == "VH band"

    dialog.model.setFilePath(str(models["vv_only"]))
    qtbot.waitUntil(lambda: dialog.card is not None and not dialog.needs_vh(), timeout=30000)
    assert dialog.input_labels[dialog.vh_band].text() == "VH band (unused)"
    assert dialog.vh_band.toolTip() == "This model reads VV only (its card lists no VH band)"
    qtbot.waitUntil(lambda: dialog.inspected is not None, timeout=30000)   # asked again, answered
    assert dialog.units_detected.text() == "detected: dB (from the values)"
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is not None, dialog.status.text()
    mask = read_raster(blocker.args[0].params.mask)
    np.testing.assert_array_equal(mask, np.where(vv < -15.0, 1, 0))

    # separate layers: the VV layer alone, whatever the VH box holds
    dialog.two_layers.setChecked(True)
    dialog.vv_layer.setLayer(single)
    assert not dialog.vh_layer.isEnabled()
    assert dialog.current_scene().args() == [single.source()]
    wait_for_tasks(qtbot)


def test_unreadable_and_moved_input_layers_are_named_as_such(plugin, qtbot, models, two_band_scene,
                                                             tmp_path):
    """A corrupt file's layer was said to have one band, and a moved file's layer to be
    something to save as a GeoTIFF."""
    from sarflood.plugin.inputs import InputProblem, scene_from_pair

    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_text("not a raster")
    invalid = QgsRasterLayer(str(corrupt), "corrupt")
    QgsProject.instance().addMapLayer(invalid)   # as a project keeps an unavailable layer
    moved = _add(two_band_scene, "moved away")
    vh = _add(write_raster(tmp_path / "vh.tif", [np.zeros((8, 8), np.float32)]))
    dialog = _ready(plugin, qtbot, models["threshold"])
    dialog.stack_layer.setLayer(invalid)
    assert _run_is_refused(dialog, qtbot) == (f"Sentinel-1 input layer 'corrupt' cannot be read as "
                                              f"a raster: {corrupt} is not a file GDAL can open")

    two_band_scene.rename(tmp_path / "elsewhere.tif")
    dialog.stack_layer.setLayer(moved)
    gone = f"layer 'moved away': its file no longer exists: {two_band_scene} (moved, renamed or deleted?)"
    assert _run_is_refused(dialog, qtbot) == f"Sentinel-1 input {gone}"
    with pytest.raises(InputProblem, match=re.escape(f"VV {gone}")):
        scene_from_pair(moved, vh)   # said before its band count
    wait_for_tasks(qtbot)


def test_a_chosen_python_that_does_not_exist_is_named_not_the_model(plugin, qtbot, two_band_scene):
    """It said the bundled model had no valid card, and offered the installer, which fills
    the plugin's .venv while the setting keeps naming the missing Python."""
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.python.setFilePath("/nonexistent/python3")
    qtbot.waitUntil(lambda: "/nonexistent/python3" in dialog.backend_info.text(), timeout=30000)
    wait_for_tasks(qtbot)
    with qtbot.assertNotEmitted(dialog.runRequested):   # checked again, then said
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.status.text() == "The backend still cannot run: see above",
                        timeout=30000)
    assert dialog.backend_info.text() == (
        "The SAR Flood Mapper backend cannot run with /nonexistent/python3 (the Python chosen "
        "in the run dialog's Advanced > Backend Python): interpreter /nonexistent/python3 does "
        "not exist. Choose another one, or clear the setting to use the plugin's own environment.")
    assert not dialog.install_button.isVisibleTo(dialog)
    wait_for_tasks(qtbot)


def test_one_band_chosen_of_two_takes_the_other_and_is_never_undone(plugin, qtbot, two_band_scene,
                                                                    tmp_path):
    """VV = 2 with VH left to the backend: the choice was dropped (no --bands) and the combos
    were set back to VV 1, VH 2 when the backend answered."""
    from sarflood.plugin.inputs import InputProblem

    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    assert (dialog.vv_band.currentBand(), dialog.vh_band.currentBand()) == (1, 2)
    dialog.vh_band.setBand(-1)
    dialog.vv_band.setBand(2)
    assert dialog.current_scene().bands == (2, 1)
    qtbot.waitUntil(lambda: dialog.inspected is not None, timeout=30000)
    assert dialog.inspected["bands"]["VV"]["band"] == 2
    assert (dialog.vv_band.currentBand(), dialog.vh_band.currentBand()) == (2, 1)

    # of three bands, the other one cannot be told
    plane = np.zeros((8, 8), np.float32)
    dialog.stack_layer.setLayer(_add(write_raster(tmp_path / "three.tif", [plane] * 3)))
    dialog.vv_band.setBand(3)
    with pytest.raises(InputProblem, match="'three': choose both the VV and the VH band, or neither"):
        dialog.current_scene()
    wait_for_tasks(qtbot)


def test_debians_python_chosen_is_advised_a_venv_and_not_offered_the_installer(plugin, qtbot):
    """The advice was "/usr/bin/python3 -m pip install ...", which pip refuses there (PEP 668),
    and the installer was offered, which fills the plugin's .venv the setting bypasses."""
    from sarflood.plugin.backend_env import VENV_DIR

    dialog = plugin.show_dialog()
    qtbot.waitUntil(lambda: ".venv/bin/python" in dialog.backend_info.text(), timeout=30000)
    dialog.python.setFilePath("/usr/bin/python3")  # Debian's own Python: no onnxruntime
    assert QgsSettings().value("sarflood/python") == "/usr/bin/python3"
    qtbot.waitUntil(lambda: "onnxruntime" in dialog.backend_info.text(), timeout=30000)
    wait_for_tasks(qtbot)
    text = dialog.backend_info.text()
    assert "(PEP 668)" in text and "then clear the setting so that it is used" in text
    assert "/usr/bin/python3 -m pip" not in text
    assert f"{VENV_DIR}/bin/python -m pip install --prefer-binary 'numpy>=" in text
    assert not dialog.install_button.isVisibleTo(dialog)


def test_installer_runs_the_commands_and_shows_their_output(qtbot, tmp_path):
    """A real venv and a real pip run (offline: pip is already in a new venv)."""
    from sarflood.plugin.gui.install_dialog import InstallDialog

    venv = tmp_path / "venv"
    steps = [["/usr/bin/python3", "-m", "venv", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "pip"]]
    dialog = InstallDialog(steps)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.installed, timeout=120000) as blocker:
        dialog.start()
    assert blocker.args == [True]
    log = dialog.log.toPlainText()
    assert "Requirement already satisfied: pip" in log and "-m venv" in log
    assert "Done" in dialog.state.text()

    # a step that fails stops the plan: the steps after it would build on what is not there
    failing = InstallDialog([[str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                              "no-such-package-sarflood"], ["/usr/bin/touch", str(tmp_path / "after")]])
    qtbot.addWidget(failing)
    with qtbot.waitSignal(failing.installed, timeout=120000) as blocker:
        failing.start()
    assert blocker.args == [False]
    assert "no-such-package-sarflood" in failing.log.toPlainText() and "exit code 1" in failing.log.toPlainText()
    assert "/usr/bin/touch" not in failing.log.toPlainText()   # (a step is logged as it starts)
    assert failing.state.text() == "Failed: see the output above."
    assert failing.start_button.isEnabled()   # to try again, once the cause is fixed


def test_extent_choices_reach_the_run(plugin, qgis_iface, qtbot, models, two_band_scene, tmp_path):
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature,
                           QgsGeometry, QgsRectangle, QgsVectorLayer)

    scene = _add(two_band_scene)
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(scene)
    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    assert dialog.request().params.extent is None  # whole layer by default

    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32630"))
    canvas.setExtent(QgsRectangle(500100, 4199600, 500400, 4199900))
    dialog.extent_mode.setCurrentIndex(dialog.extent_mode.findData("canvas"))
    params = dialog.request().params
    shown = canvas.extent()
    assert params.extent == (shown.xMinimum(), shown.yMinimum(), shown.xMaximum(), shown.yMaximum())
    assert params.extent_crs == "EPSG:32630"
    assert any(a.startswith("--extent=") for a in params.argv()) and "--extent-crs" in params.argv()

    geographic = QgsCoordinateReferenceSystem("EPSG:4326")
    centre = QgsCoordinateTransform(scene.crs(), geographic, QgsProject.instance()).transform(
        scene.extent().center())
    inside = (centre.x() - 0.001, centre.y() - 0.001, centre.x() + 0.001, centre.y() + 0.001)

    def polygon_layer(name, *rects):
        layer = QgsVectorLayer("Polygon?crs=EPSG:4326", name, "memory")
        for rect in rects:
            feature = QgsFeature()
            feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(*rect)))
            layer.dataProvider().addFeatures([feature])
        layer.updateExtents()
        QgsProject.instance().addMapLayer(layer)
        return layer

    dialog.extent_mode.setCurrentIndex(dialog.extent_mode.findData("polygon"))
    dialog.extent_layer.setLayer(polygon_layer("zones", inside))
    params = dialog.request().params
    assert params.extent == pytest.approx(inside) and params.extent_crs == "EPSG:4326"
    # what the backend refused naming the VV file is refused here, naming the layer
    dialog.extent_layer.setLayer(polygon_layer("far away", (10.0, 50.0, 10.1, 50.1)))
    assert _run_is_refused(dialog, qtbot) == ("Extent: polygon layer 'far away' does not "
                                              "overlap the input layer 'scene'")
    dialog.extent_layer.setLayer(polygon_layer("empty"))
    assert _run_is_refused(dialog, qtbot) == "Extent: polygon layer 'empty' has no polygons"
    wait_for_tasks(qtbot)


def _scene(vv_db: np.ndarray, units: str) -> list[np.ndarray]:
    bands = [vv_db, vv_db - 7.0]
    return bands if units == "dB" else [np.power(10.0, b / 10.0).astype(np.float32) for b in bands]


@pytest.mark.parametrize("units, evidence", [("dB", "of the VV and VH values are negative"),
                                             ("linear", "no negative values; median VV/VH 7.0 dB if power")])
def test_detected_units_are_shown_beside_the_override(plugin, qtbot, tmp_path, units, evidence):
    from .test_gui_run import STALL_LIMIT_S, StallMeter

    vv = np.random.default_rng(2).normal(-12.0, 4.0, (64, 64)).astype(np.float32)
    path = write_raster(tmp_path / "scene_1.tif", _scene(vv, units), descriptions=["VV", "VH"])
    layer = _add(path)
    dialog = plugin.show_dialog()
    meter = StallMeter()
    meter.start()
    dialog.stack_layer.setLayer(layer)
    assert dialog.inspected is None  # the answer comes later, from a background task
    qtbot.waitUntil(lambda: dialog.inspected is not None
                    and dialog.inspected["files"][0]["path"] == str(path), timeout=30000)
    assert meter.stop() < STALL_LIMIT_S
    assert dialog.units_detected.text() == f"detected: {units} (from the values)"
    tip = dialog.units_detected.toolTip()
    assert f"VV: scene_1.tif band 1 (named by your band choice); {units}: " in tip and evidence in tip
    assert f"VH: scene_1.tif band 2 (named by your band choice); {units}: " in tip
    # the override box beside it still decides what the run is told (once the card, asked
    # for beside the inspect, has come: under load it came after it)
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    assert dialog.request().params.units is None
    dialog.units.setCurrentIndex(dialog.units.findData("amplitude"))
    assert dialog.request().params.units == "amplitude"
    wait_for_tasks(qtbot)


def test_band_override_reaches_the_backend_and_stale_answers_are_dropped(plugin, qtbot, models, tmp_path):
    """An unnamed three-band stack ordered angle, VH, VV: the user picks VV = 3, VH = 2."""
    rng = np.random.default_rng(3)
    vv = rng.normal(-12.0, 4.0, (48, 48)).astype(np.float32)
    stack_path = write_raster(tmp_path / "hyp3_stack.tif", [np.full_like(vv, 35.0), vv - 7.0, vv])
    stack = _add(stack_path)
    other = _add(write_raster(tmp_path / "other.tif", _scene(vv, "linear"), descriptions=["VV", "VH"]))
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(stack)
    dialog.vv_band.setBand(3)
    dialog.vh_band.setBand(2)
    qtbot.waitUntil(lambda: dialog.inspected is not None
                    and dialog.inspected["bands"]["VV"]["path"] == str(stack_path), timeout=30000)
    bands = dialog.inspected["bands"]
    assert (bands["VV"]["band"], bands["VH"]["band"]) == (3, 2)
    assert bands["VV"]["named_by"] == "--bands" and dialog.inspected["units_detected"] == "dB"
    assert "VV: hyp3_stack.tif band 3" in dialog.units_detected.toolTip()
    stale = dict(dialog.inspected)
    stale_args = list(dialog._inspect_args)

    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    argv = dialog.request().params.argv()
    assert argv[:3] == ["predict", str(stack_path), "--bands=3,2"]
    assert not list(tmp_path.rglob("*.vrt"))

    # the user moves on; an answer about the stack that arrives late is ignored
    dialog.stack_layer.setLayer(other)
    qtbot.waitUntil(lambda: dialog.inspected is not None
                    and dialog.inspected["files"][0]["path"] == other.source(), timeout=30000)
    dialog._inspect_answered(stale_args, stale, None)
    assert dialog.inspected["units_detected"] == "linear"
    assert dialog.units_detected.text() == "detected: linear (from the values)"

    # a choice that cannot work is said beside the units, before any run
    dialog.stack_layer.setLayer(stack)
    dialog.vv_band.setBand(2)
    dialog.vh_band.setBand(2)
    qtbot.waitUntil(lambda: "both band 2" in dialog.units_detected.toolTip(), timeout=30000)
    assert dialog.inspected is None
    wait_for_tasks(qtbot)


def test_a_crs_set_on_the_layer_only_is_refused_naming_both(plugin, qtbot, models, two_band_scene,
                                                           tmp_path):
    """The backend reads the file: a CRS an analyst set on the layer (Set Layer CRS) was
    ignored, and the map was written and added 500 km from the scene, without a word."""
    from osgeo import gdal
    from qgis.core import QgsCoordinateReferenceSystem

    layer = _add(two_band_scene)
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32631"))
    dialog = _ready(plugin, qtbot, models["threshold"])
    dialog.stack_layer.setLayer(layer)
    assert _run_is_refused(dialog, qtbot) == (
        "Sentinel-1 input layer 'scene': its CRS was set in QGIS to EPSG:32631 - WGS 84 / UTM zone "
        "31N, but its file says EPSG:32630 - WGS 84 / UTM zone 30N, and the backend reads the "
        "file; write the CRS into it (Raster > Projections > Assign Projection) or save a copy "
        "with it (Export > Save As)")

    # a file's own CRS in other words (a project written elsewhere keeps it so) is its CRS
    tm = ('PROJCS["local TM",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
          '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION['
          '"Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",'
          '-3.1],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER['
          '"false_northing",0],UNIT["metre",1]]')
    local = tmp_path / "local_tm.tif"
    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(local), gdal.Open(str(two_band_scene)))
    ds.SetProjection(tm)
    ds = None
    renamed = _add(local)
    renamed.setCrs(QgsCoordinateReferenceSystem.fromWkt(tm.replace("local TM", "renamed")))
    assert renamed.crs() != renamed.dataProvider().crs()
    dialog.stack_layer.setLayer(renamed)
    assert dialog.current_scene().vv == str(local)   # taken, not refused

    # a file without a CRS, given one in QGIS
    bare = tmp_path / "bare.tif"
    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(bare), gdal.Open(str(two_band_scene)))
    ds.SetProjection("")
    ds = None
    no_crs = _add(bare)
    no_crs.setCrs(QgsCoordinateReferenceSystem("EPSG:32630"))
    dialog.stack_layer.setLayer(no_crs)
    status = _run_is_refused(dialog, qtbot)
    assert "'bare': its CRS was set in QGIS to EPSG:32630" in status
    assert "but its file has none" in status
    wait_for_tasks(qtbot)


def test_a_runs_outputs_are_never_guessed_as_vv_or_vh(plugin, qtbot, tmp_path):
    """A pair run's outputs carry the scene's name (zaragoza_VV_water_mask.tif): the dialog
    kept one chosen as VV (its name has the VV token) and the next run mapped its 0/1 codes
    as backscatter. Now the real VV is chosen, and an output given all the same is refused
    by the backend's inspect, before any run."""
    from osgeo import gdal

    plane = np.full((16, 16), -12.0, np.float32)
    vv = _add(write_raster(tmp_path / "zaragoza_VV.tif", [plane]))
    vh = _add(write_raster(tmp_path / "zaragoza_VH.tif", [plane - 7]))
    mask_path = write_raster(tmp_path / "zaragoza_VV_water_mask.tif",
                             [np.ones((16, 16), np.uint8)], nodata=255)
    ds = gdal.Open(str(mask_path), gdal.GA_Update)
    ds.SetMetadataItem("SARFLOOD_OUTPUT", "mask")
    ds = None
    mask = _add(mask_path, "water mask (zaragoza_VV_water_mask)")
    dialog = plugin.show_dialog()
    dialog.vv_layer.setLayer(mask)
    dialog.two_layers.setChecked(True)
    assert dialog.vv_layer.currentLayer().id() == vv.id()
    assert dialog.vh_layer.currentLayer().id() == vh.id()

    QgsProject.instance().removeMapLayer(vv.id())   # the scene gone: the mask stays chosen
    dialog.vv_layer.setLayer(mask)
    qtbot.waitUntil(lambda: "written by SAR Flood Mapper" in dialog.units_detected.toolTip(),
                    timeout=30000)
    assert f"{mask_path}: is a mask written by SAR Flood Mapper, not Sentinel-1 backscatter" \
        in dialog.units_detected.toolTip()
    wait_for_tasks(qtbot)


def test_a_layer_in_qgis_memory_is_refused_naming_why(plugin, qtbot, models, two_band_scene):
    """A /vsimem/ layer (QGIS draws it) passed the dialog's checks, and the backend, another
    process, said "not a raster GDAL can read (No such file or directory)"."""
    from osgeo import gdal
    gdal.Translate("/vsimem/scene.tif", str(two_band_scene))
    try:
        layer = QgsRasterLayer("/vsimem/scene.tif", "in memory")
        assert layer.isValid()
        QgsProject.instance().addMapLayer(layer)
        dialog = _ready(plugin, qtbot, models["threshold"])
        dialog.stack_layer.setLayer(layer)
        assert _run_is_refused(dialog, qtbot) == (
            "Sentinel-1 input layer 'in memory' lies in QGIS's memory (/vsimem/scene.tif), which "
            "the backend, another process, cannot read; save it as a GeoTIFF first (Export > Save As)")
    finally:
        QgsProject.instance().removeAllMapLayers()
        gdal.Unlink("/vsimem/scene.tif")
    wait_for_tasks(qtbot)


def _shown_whole(label) -> bool:
    """Whether a word-wrapped label has the height its text needs at its width."""
    return label.height() >= label.heightForWidth(label.width())


def test_the_dialog_fits_a_small_screen_with_its_buttons_and_status_in_view(plugin, qtbot, models):
    # the offscreen platform's screen is 800 x 600: a laptop's 768 px is as tight; the
    # settings need about 900 px and scroll, the buttons and what the run says do not
    screen = QApplication.primaryScreen().availableGeometry()
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(models["smoothed"]))
    qtbot.waitUntil(lambda: "CPU" in dialog.device_info.text(), timeout=30000)
    assert dialog.height() <= screen.height()
    assert dialog.settings_area.verticalScrollBar().maximum() > 0   # scrolled, not squeezed
    dialog.resize(100, dialog.height())   # and never sideways: narrowed, it keeps their width
    QApplication.processEvents()
    assert dialog.settings_area.horizontalScrollBar().maximum() == 0
    bottom = dialog.run_button.mapTo(dialog, dialog.run_button.rect().bottomLeft()).y()
    assert bottom < dialog.height()
    qtbot.waitUntil(lambda: _shown_whole(dialog.device_info), timeout=2000)   # laid out again
    dialog.show_status("Done: 3.35 km² of water, 16.3 % of the 20.59 km² valid area; 0.5 s on "
                       "CPU, model sarflood-student-compact 1.2.0; input units dB (from values)")
    QApplication.processEvents()
    assert dialog.status.height() > 2 * dialog.status.fontMetrics().lineSpacing()   # 3 lines
    assert dialog.status.verticalScrollBar().maximum() == 0   # all of them in view
    assert dialog.run_button.mapTo(dialog, dialog.run_button.rect().bottomLeft()).y() < dialog.height()
    wait_for_tasks(qtbot)


def test_a_sentinel1_product_name_wraps_instead_of_widening_the_dialog_and_the_dock(plugin, qtbot):
    """A name without spaces (a product's, a path) cannot wrap in a label: the dock's
    minimum width became 904 px, and its controls lay off-screen behind a scroll bar."""
    product = "S1A_IW_GRDH_1SDV_20230915T055012_20230915T055037_050352_060FE1_8C3B_Sigma0_VV_VH_dB"
    name = f"{product}_water_mask_corrections.gpkg"
    dialog, dock = plugin.show_dialog(), plugin.dock
    body = dock.widget().widget()   # the dock's content, in its scroll area
    width = dialog.minimumSizeHint().width(), body.minimumSizeHint().width()
    dialog.show_status(f"Run failed: /data/{name}: not a raster GDAL can read", error=True)
    dock.setFloating(True)   # shown: the main window holding it is not, in these tests
    dock.resize(380, 700)
    dock.show()
    dock.title.setText(f"Flood map: {product}")
    dock.show_status(f"Corrections: new layer in /data/{name}")
    QApplication.processEvents()
    assert (dialog.minimumSizeHint().width(), body.minimumSizeHint().width()) == width
    for shown in (dialog.status, dock.title, dock.status):   # wrapped, whole, copied as written
        assert shown.height() > shown.fontMetrics().lineSpacing(), shown.text()
        assert shown.verticalScrollBar().maximum() == 0, shown.text()
        assert "\u200b" not in shown.text()
    wait_for_tasks(qtbot)


def test_the_review_dock_sets_no_tall_minimum_on_the_main_window(plugin, qtbot):
    # QGIS stacks docks: one whose content cannot shrink takes the height of the layers panel
    dock = plugin.dock
    assert dock.minimumSizeHint().height() < 200
    assert dock.minimumSizeHint().width() < 400


def test_the_installer_shows_its_commands_whole_before_install(plugin, qtbot):
    # they are what the user agrees to: the venv and the pip line with its markers
    installer = plugin.show_installer()
    qtbot.waitUntil(lambda: "pip" in installer.commands.toPlainText(), timeout=10000)
    QApplication.processEvents()
    assert installer.commands.verticalScrollBar().maximum() == 0


def test_the_models_default_threshold_is_shown_beside_its_tick_box(plugin, qtbot, tmp_path):
    """Ticked, the greyed box beside it showed the analyst's own 0.50 while the run took the
    card's 0.437: the dialog and the review dock then disagreed."""
    import onnx

    from training.toy_models import raw_db_card, threshold_model

    path = tmp_path / "t0437.onnx"
    onnx.save(threshold_model(raw_db_card("test-0437", margin=0, threshold=0.437)), path)
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(path))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    assert dialog.use_model_threshold.text() == "the model's default (0.437)"
    wait_for_tasks(qtbot)


def test_a_refusal_goes_once_the_choice_it_named_changes(plugin, qtbot, models, two_band_scene,
                                                          tmp_path):
    """'Output folder: choose a folder...' stayed, red, under Run after the folder was chosen:
    read as the problem still in force."""
    dialog = _ready(plugin, qtbot, models["threshold"])
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.temporary.setChecked(False)
    dialog.output_dir.setFilePath("")
    assert _run_is_refused(dialog, qtbot).startswith("Output folder: choose a folder")
    dialog.output_dir.setFilePath(str(tmp_path))
    assert dialog.status.text() == ""
    dialog.show_status("Done: 3.35 km² of water")   # what a run said stays: it is no refusal
    dialog.temporary.setChecked(True)
    assert dialog.status.text() == "Done: 3.35 km² of water"
    wait_for_tasks(qtbot)


def test_a_tile_size_the_backend_would_refuse_is_refused_before_the_run(plugin, qtbot, models,
                                                                          two_band_scene):
    """Tile size 7 started a run, which failed: 'tile size 7 must be a positive multiple of 16'."""
    dialog = _ready(plugin, qtbot, models["threshold"])
    dialog.stack_layer.setLayer(_add(two_band_scene))
    assert dialog.tile_size.singleStep() == 16
    dialog.tile_size.setValue(7)
    assert _run_is_refused(dialog, qtbot) == ("Tile size (Advanced): 7 px is not a multiple of "
                                              "16; give one, or 0 for the model's")
    wait_for_tasks(qtbot)


def test_a_warning_about_the_input_is_shown_in_the_dialogs_words(plugin, qtbot, tmp_path):
    """Before a run, 'are VV and VH swapped?' told the analyst about '--bands VV_INDEX,VH_INDEX',
    a command-line option; the same warning after the run named the dialog's band boxes."""
    vv = np.random.default_rng(3).normal(-15.0, 3.0, (64, 64)).astype(np.float32)
    path = write_raster(tmp_path / "swapped.tif", [vv, vv + 7.0], descriptions=["VV", "VH"])
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(path))
    qtbot.waitUntil(lambda: dialog.inspected is not None and bool(dialog.inspected.get("warnings")),
                    timeout=30000)
    shown = dialog.units_detected.text() + dialog.units_detected.toolTip()
    assert "are VV and VH swapped?" in shown and "--bands" not in shown
    assert "setting 'VV band' and 'VH band' chooses the bands of one file" in shown
    wait_for_tasks(qtbot)


def test_separate_layers_chosen_the_wrong_way_round_show_the_pair_the_backend_reads(
        plugin, qtbot, models, tmp_path):
    """The backend reads them by their band descriptions; the boxes kept the reversed choice,
    and only a tooltip said which file was read as VV."""
    vv = np.random.default_rng(4).normal(-12.0, 3.0, (64, 64)).astype(np.float32)
    vv_layer = _add(write_raster(tmp_path / "scene_VV.tif", [vv], descriptions=["VV"]), "a")
    vh_layer = _add(write_raster(tmp_path / "scene_VH.tif", [vv - 7.0], descriptions=["VH"]), "b")
    dialog = _ready(plugin, qtbot, models["threshold"])
    dialog.two_layers.setChecked(True)
    dialog.vv_layer.setLayer(vh_layer)
    dialog.vh_layer.setLayer(vv_layer)
    qtbot.waitUntil(lambda: dialog.inspected is not None
                    and dialog.inspected["bands"]["VV"]["path"].endswith("scene_VV.tif"),
                    timeout=30000)
    assert (dialog.vv_layer.currentLayer(), dialog.vh_layer.currentLayer()) == (vv_layer, vh_layer)
    assert dialog.request().params.scene.vv.endswith("scene_VV.tif")
    wait_for_tasks(qtbot)
    # a model reading VV alone reads the VV layer alone: nothing is swapped, whatever the VH box
    dialog.model.setFilePath(str(models["vv_only"]))
    qtbot.waitUntil(lambda: dialog.card is not None and dialog.card["name"] == "test-vv-only",
                    timeout=30000)
    dialog.inspected = None
    dialog.refresh_inspect()
    qtbot.waitUntil(lambda: dialog.inspected is not None, timeout=30000)
    assert (dialog.vv_layer.currentLayer(), dialog.vh_layer.currentLayer()) == (vv_layer, vh_layer)
    wait_for_tasks(qtbot)
