"""The run dialog, driven with qtbot: band guessing, the model card, devices, settings, bad input."""
import numpy as np
import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import Qt

from .conftest import wait_for_tasks, write_raster


def _add(path, name=None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name or path.stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


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


def test_card_and_devices_are_shown(plugin, qtbot, models):
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(models["smoothed"]))
    qtbot.waitUntil(lambda: dialog.card is not None and dialog.card["name"] == "test-smoothed-3", timeout=30000)
    text = dialog.card_view.toPlainText()
    assert "test-smoothed-3" in text and "Pixel size" in text and "10 m" in text and "VV (dB" in text
    qtbot.waitUntil(lambda: "CPU" in dialog.device_info.text(), timeout=30000)
    assert "CUDA: not available" in dialog.device_info.text()
    assert ".venv/bin/python" in dialog.backend_info.text()

    dialog.model.setFilePath(str(models["mismatch"]))
    qtbot.waitUntil(lambda: "does not match its card" in dialog.card_view.toPlainText(), timeout=30000)
    assert dialog.card is None
    wait_for_tasks(qtbot)


def test_bad_input_is_named_and_nothing_runs(plugin, qtbot, models, tmp_path):
    single = _add(write_raster(tmp_path / "only_vv.tif", [np.zeros((8, 8), np.float32)]))
    dialog = plugin.show_dialog()
    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    dialog.stack_layer.setLayer(single)
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.LeftButton)
    assert "'only_vv' has 1 band" in dialog.status.text()

    stack = _add(write_raster(tmp_path / "stack.tif", [np.zeros((8, 8), np.float32)] * 2))
    dialog.stack_layer.setLayer(stack)
    dialog.temporary.setChecked(False)
    dialog.output_dir.setFilePath(str(tmp_path / "no_such_folder"))
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.LeftButton)
    assert "no_such_folder' does not exist" in dialog.status.text()
    wait_for_tasks(qtbot)


def test_missing_dependencies_offer_the_installer(plugin, qtbot):
    dialog = plugin.show_dialog()
    qtbot.waitUntil(lambda: ".venv/bin/python" in dialog.backend_info.text(), timeout=30000)
    dialog.python.setFilePath("/usr/bin/python3")  # Debian's own Python: no onnxruntime
    assert QgsSettings().value("sarflood/python") == "/usr/bin/python3"
    qtbot.waitUntil(lambda: dialog.install_button.isVisibleTo(dialog), timeout=30000)
    text = dialog.backend_info.text()
    assert "onnxruntime" in text and "/usr/bin/python3 -m pip install" in text
    installer = plugin.show_installer()
    commands = installer.commands.toPlainText()
    assert "-m pip install" in commands and "onnxruntime==" in commands and "rasterio==" in commands
    wait_for_tasks(qtbot)


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

    failing = InstallDialog([[str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                              "no-such-package-sarflood"]])
    qtbot.addWidget(failing)
    with qtbot.waitSignal(failing.installed, timeout=120000) as blocker:
        failing.start()
    assert blocker.args == [False]
    assert "no-such-package-sarflood" in failing.log.toPlainText() and "exit code 1" in failing.log.toPlainText()


def test_extent_choices_reach_the_run(plugin, qgis_iface, qtbot, models, two_band_scene, tmp_path):
    from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsRectangle,
                           QgsVectorLayer)

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

    zones = QgsVectorLayer("Polygon?crs=EPSG:4326", "zones", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(-3.0, 37.9, -2.99, 37.91)))
    zones.dataProvider().addFeatures([feature])
    zones.updateExtents()
    QgsProject.instance().addMapLayer(zones)
    dialog.extent_mode.setCurrentIndex(dialog.extent_mode.findData("polygon"))
    dialog.extent_layer.setLayer(zones)
    params = dialog.request().params
    assert params.extent == pytest.approx((-3.0, 37.9, -2.99, 37.91)) and params.extent_crs == "EPSG:4326"
    wait_for_tasks(qtbot)
