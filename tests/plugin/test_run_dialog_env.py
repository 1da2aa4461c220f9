"""The run dialog and the backend's Python: checks seen again, the installer's target, honest
messages, the remembered extent layer, the installer's log."""
import json
import shlex
import subprocess
import sysconfig
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QPoint, Qt
from qgis.PyQt.QtWidgets import QApplication

from .conftest import wait_for_tasks

PACKAGES = sysconfig.get_paths()["purelib"]   # this .venv's: numpy, onnxruntime, rasterio


def _add(path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), Path(path).stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture
def bare_venv(tmp_path, monkeypatch):
    """The installer's venv without the backend's packages, and no other Python to fall back on;
    ``fix()`` stands in for the advised pip command (a .pth to this .venv's packages)."""
    from sarflood.plugin import backend_env

    venv = tmp_path / "plugin venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(backend_env.venv_python(venv))
    monkeypatch.setattr(backend_env, "VENV_DIR", venv)
    monkeypatch.setattr(backend_env, "CHECKOUT_VENV_DIR", tmp_path / "no-venv")
    monkeypatch.setattr(backend_env, "system_python", lambda: python)
    site = next(venv.glob("lib/python3*/site-packages"))
    yield python, lambda: (site / "fix.pth").write_text(PACKAGES + "\n"), site / "fix.pth"
    backend_env.forget_checks()


def test_a_fix_run_in_a_terminal_counts_once_the_dialog_is_reopened(plugin, qtbot, models,
                                                                    two_band_scene, bare_venv):
    """A failed check was cached: after the advised pip command, the dialog (and Processing)
    kept refusing until QGIS restarted."""
    from sarflood.plugin import backend_env

    python, fix, _ = bare_venv
    assert not backend_env.find_interpreter().ok
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: "pip install" in dialog.backend_info.text(), timeout=30000)
    wait_for_tasks(qtbot)
    fix()
    assert backend_env.find_interpreter().ok   # what the Processing algorithms ask
    dialog.close()
    dialog = plugin.show_dialog()
    qtbot.waitUntil(lambda: dialog.backend_info.text() == f"Backend: {python} (venv Python)",
                    timeout=30000)
    qtbot.waitUntil(lambda: dialog.card is not None and dialog.inspected is not None, timeout=30000)
    wait_for_tasks(qtbot)


def test_run_checks_again_a_backend_that_could_not_run(plugin, qtbot, models, two_band_scene,
                                                      bare_venv):
    """After the advised pip command, run with the dialog still open, Run kept refusing with
    the failure it had cached; only closing and reopening the dialog checked again."""
    python, fix, _ = bare_venv
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.model.setFilePath(str(models["threshold"]))
    dialog.temporary.setChecked(True)
    qtbot.waitUntil(lambda: "pip install" in dialog.card_view.toPlainText(), timeout=30000)
    wait_for_tasks(qtbot)
    problem = dialog.backend_info.text()
    with qtbot.assertNotEmitted(dialog.runRequested):   # still missing: said again once checked
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.status.text() == ("Checking the backend again, as it could not run: press Run "
                                    "once it answers")
    # said once, above, not twice: the two copies of its pip line left the settings 70 px
    qtbot.waitUntil(lambda: dialog.status.text() == "The backend still cannot run: see above",
                    timeout=30000)
    assert dialog.backend_info.text() == problem and "pip install" in problem
    QApplication.processEvents()
    assert dialog.settings_area.height() > dialog.height() / 2
    wait_for_tasks(qtbot)
    fix()
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.status.text() == "The backend runs now: press Run", timeout=30000)
    qtbot.waitUntil(lambda: dialog.backend_info.text() == f"Backend: {python} (venv Python)",
                    timeout=30000)   # the devices query, asked beside the card
    with qtbot.waitSignal(plugin.controller.finished, timeout=120000) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] is not None, dialog.status.text()
    wait_for_tasks(qtbot)


def test_the_installer_is_offered_for_the_plugins_venv_and_units_are_detected_after_it(
        plugin, qtbot, two_band_scene, bare_venv):
    """After a successful install the units line kept saying the backend could not run."""
    python, fix, pth = bare_venv
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    qtbot.waitUntil(lambda: dialog.install_button.isVisibleTo(dialog), timeout=30000)
    qtbot.waitUntil(lambda: dialog.units_detected.text() == "not detected: see the tooltip",
                    timeout=30000)
    wait_for_tasks(qtbot)
    installer = plugin.show_installer()
    # made --without-pip: the venv is made again before pip runs in it
    venv = Path(python).parents[1]
    assert installer.commands.toPlainText().startswith(
        f"{shlex.join([python, '-m', 'venv', '--clear', str(venv)])}\n'{python}' -m pip install")
    installer.steps = [["/bin/sh", "-c", f"echo '{PACKAGES}' > '{pth}'"]]   # the pip run
    with qtbot.waitSignal(installer.installed, timeout=30000):
        qtbot.mouseClick(installer.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.units_detected.text().startswith("detected: dB"), timeout=30000)
    # the devices query that rewrites this line may answer after the units (a loaded machine)
    qtbot.waitUntil(lambda: dialog.backend_info.text() == f"Backend: {python} (venv Python)",
                    timeout=30000)
    assert not dialog.install_button.isVisibleTo(dialog)
    wait_for_tasks(qtbot)


def test_the_installer_says_what_debian_lacks_and_plans_again_when_reopened(
        plugin, qtbot, monkeypatch, tmp_path, python_without_ensurepip):
    """Without python3-venv the installer's venv step made bin/python, failed at ensurepip, and
    the next try ran pip in that venv, which had none; the commands were planned once."""
    from sarflood.plugin import backend_env

    venv = tmp_path / "venv"
    monkeypatch.setattr(backend_env, "VENV_DIR", venv)
    monkeypatch.setattr(backend_env, "system_python", lambda: python_without_ensurepip)
    installer = plugin.show_installer()
    assert "sudo apt install python3" in installer.state.text()
    assert not installer.start_button.isEnabled()
    installer.close()
    monkeypatch.setattr(backend_env, "system_python", lambda: "/usr/bin/python3")  # installed
    assert plugin.show_installer() is installer
    assert installer.state.text() == "" and installer.start_button.isEnabled()
    assert installer.commands.toPlainText().startswith(f"/usr/bin/python3 -m venv --clear {venv}\n")


def test_the_installer_fills_a_venv_in_the_qgis_profile_where_it_can_write(
        plugin, qtbot, monkeypatch, tmp_path):
    """It filled <plugin>/.venv: QGIS deletes the plugin folder on each upgrade of the plugin, and
    where plugins are installed system-wide the folder is read-only, while Install was offered."""
    from sarflood.plugin import backend_env

    venv = Path(QgsApplication.qgisSettingsDirPath()) / "python" / "sarflood-venv"
    assert backend_env.VENV_DIR == venv
    installer = plugin.show_installer()
    assert installer.steps[-1][:3] == [str(backend_env.venv_python(venv)), "-m", "pip"]
    installer.close()

    monkeypatch.setattr(backend_env, "VENV_DIR", Path("/sys/kernel/profile/python/sarflood-venv"))
    monkeypatch.setattr(backend_env, "CHECKOUT_VENV_DIR", tmp_path / "no-venv")
    dialog = plugin.show_dialog()   # QGIS's Python lacks onnxruntime
    qtbot.waitUntil(lambda: "cannot make its own environment" in dialog.backend_info.text(),
                    timeout=30000)
    wait_for_tasks(qtbot)
    assert "(Advanced > Backend Python, the setting sarflood/python)" in dialog.backend_info.text()
    assert not dialog.install_button.isVisibleTo(dialog)
    installer = plugin.show_installer()   # as a failed run's button still offers it
    assert installer.state.text() == backend_env.cannot_install()
    assert not installer.start_button.isEnabled()


def test_a_python_chosen_in_the_settings_is_not_offered_the_installer(plugin, qtbot, tmp_path):
    """The installer fills the plugin's .venv, which the setting bypasses: it said "Done" while
    the chosen Python still lacked everything."""
    from sarflood.plugin.backend_env import RUNTIME_REQUIREMENTS

    chosen = tmp_path / "chosen"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(chosen)], check=True)
    dialog = plugin.show_dialog()
    dialog.python.setFilePath(str(chosen / "bin" / "python"))
    qtbot.waitUntil(lambda: str(chosen) in dialog.backend_info.text(), timeout=30000)
    wait_for_tasks(qtbot)
    text = dialog.backend_info.text()
    assert "clear the setting to use the plugin's own environment" in text
    assert text.endswith("Fix it with:\n" + shlex.join([f"{chosen}/bin/python", "-m", "pip", "install",
                                                      "--prefer-binary", *RUNTIME_REQUIREMENTS]))
    assert not dialog.install_button.isVisibleTo(dialog)


def test_a_run_that_lacks_a_module_of_a_chosen_python_is_not_offered_the_installer(
        plugin, qtbot, models, two_band_scene, tmp_path):
    """A chosen Python that passes the check, whose run then misses a module."""
    from sarflood.plugin.backend_env import PLUGIN_ROOT, venv_python

    chosen = tmp_path / "python"
    chosen.write_text(f'#!/bin/sh\nif [ "$3" = predict ]; then echo "ModuleNotFoundError: No module '
                      f"named 'scipy'\" >&2; exit 1; fi\nexec '{venv_python(PLUGIN_ROOT / '.venv')}' \"$@\"\n")
    chosen.chmod(0o755)
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.temporary.setChecked(True)
    dialog.python.setFilePath(str(chosen))
    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: plugin.controller.task is None, timeout=60000)
    assert "missing or broken scipy" in dialog.status.text()
    assert not dialog.install_button.isVisibleTo(dialog)
    wait_for_tasks(qtbot)


def test_a_python_that_writes_no_utf8_is_named_and_nothing_raises(plugin, qtbot, two_band_scene,
                                                                   tmp_path):
    """UnicodeDecodeError out of the query task, then tracebacks in the dialog's answerers,
    and "checking devices..." for ever."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nprintf '\\377\\376 binary' >&2\nexit 1\n")
    fake.chmod(0o755)
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    dialog.temporary.setChecked(True)
    dialog.python.setFilePath(str(fake))
    qtbot.waitUntil(lambda: "did not run as Python" in dialog.backend_info.text(), timeout=30000)
    wait_for_tasks(qtbot)
    assert dialog.backend_info.text().endswith(f"{fake} did not run as Python (\ufffd\ufffd binary). "
                                               "Choose another one, or clear the setting to use "
                                               "the plugin's own environment.")
    assert dialog.device_info.text() == "unknown: the backend did not answer"
    assert dialog.units_detected.text() == "not detected: see the tooltip"
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.status.text() == "The backend still cannot run: see above",
                        timeout=30000)
    wait_for_tasks(qtbot)


def test_a_query_that_fails_unexpectedly_answers_with_an_error(qtbot, monkeypatch):
    """An exception out of the query left the dialog waiting for ever. None is raised for
    real any more (the bytes that did are decoded with replacement), so one is put in."""
    from sarflood.plugin import task as task_module

    def query_json(interpreter, args):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    monkeypatch.setattr(task_module, "query_json", query_json)
    query = task_module.QueryTask("SAR Flood Mapper: devices", ["devices"])
    with qtbot.waitSignal(query.done, timeout=30000) as blocker:
        QgsApplication.taskManager().addTask(query)
    answer, error = blocker.args
    assert answer is None
    assert error == ("SAR Flood Mapper: devices failed: UnicodeDecodeError: 'utf-8' codec can't "
                     "decode byte 0xff in position 0: invalid start byte")
    wait_for_tasks(qtbot)


def test_a_backend_that_answers_null_is_an_error_not_an_answer(qtbot, tmp_path):
    """A Python that passes the check, whose backend prints JSON null: the answerers read
    an answer or an error, never neither."""
    from sarflood.plugin.task import QueryTask

    python = tmp_path / "python"   # the check's snippet comes on stdin ("-"), then the query
    python.write_text('#!/bin/sh\nif [ "$1" = - ]; then cat > /dev/null; '
                      'echo \'{"missing": {}, "externally_managed": false}\'; else echo null; fi\n')
    python.chmod(0o755)
    query = QueryTask("SAR Flood Mapper: devices", ["devices"], str(python))
    with qtbot.waitSignal(query.done, timeout=30000) as blocker:
        QgsApplication.taskManager().addTask(query)
    assert blocker.args == [None, "SAR Flood Mapper: devices: the backend gave no answer"]
    wait_for_tasks(qtbot)


def test_things_of_the_wrong_kind_are_named_as_such(plugin, qtbot, models, two_band_scene, tmp_path):
    """Each was said not to exist; /bin/ls as the Python quoted the whole check script."""
    dialog = plugin.show_dialog()
    dialog.stack_layer.setLayer(_add(two_band_scene))
    folder = tmp_path / "models.onnx"
    folder.mkdir()
    dialog.model.setFilePath(str(folder))
    dialog.temporary.setChecked(True)
    qtbot.waitUntil(lambda: "is a folder" in dialog.card_view.toPlainText(), timeout=30000)
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.status.text() == f"Model: {folder} is a folder, not a model file"

    dialog.model.setFilePath(str(models["threshold"]))
    qtbot.waitUntil(lambda: dialog.card is not None, timeout=30000)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    dialog.temporary.setChecked(False)
    dialog.output_dir.setFilePath(str(notes))
    with qtbot.assertNotEmitted(dialog.runRequested):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert dialog.status.text() == (f"Output folder: '{notes}' is a file, not a folder; choose a "
                                    f"folder or temporary files")
    wait_for_tasks(qtbot)

    chosen = "the Python chosen in the run dialog's Advanced > Backend Python"
    for python, why in ((str(tmp_path), f"{tmp_path} is a folder, not a Python interpreter"),
                        ("/bin/ls", "/bin/ls did not run as Python (/bin/ls: cannot access '-': "
                                    "No such file or directory)")):
        dialog.python.setFilePath(python)
        qtbot.waitUntil(lambda: dialog.backend_info.text().startswith(
            f"The SAR Flood Mapper backend cannot run with {python} ({chosen})"), timeout=30000)
        assert dialog.backend_info.text() == (
            f"The SAR Flood Mapper backend cannot run with {python} ({chosen}): {why}. Choose "
            f"another one, or clear the setting to use the plugin's own environment.")
        wait_for_tasks(qtbot)


def _polygons(path: Path, name: str) -> QgsVectorLayer:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {}, "geometry": {
            "type": "Polygon", "coordinates": [[[-3, 37.9], [-2.99, 37.9], [-2.99, 37.91], [-3, 37.9]]]}}]}))
    layer = QgsVectorLayer(str(path), name, "ogr")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_the_extents_polygon_layer_is_remembered(plugin, qgis_iface, qtbot, tmp_path):
    """The dialog came back with the project's first polygon layer, not the one chosen."""
    import sarflood

    _polygons(tmp_path / "a_first.geojson", "a_first")
    zones = _polygons(tmp_path / "zones.geojson", "zones")

    def reloaded():
        plugin.unload()
        again = sarflood.classFactory(qgis_iface)
        again.initProcessing()
        again.initGui()
        dialog = again.show_dialog()
        chosen = dialog.extent_layer.currentLayer()
        wait_for_tasks(qtbot)
        again.unload()
        plugin.initProcessing()
        plugin.initGui()   # for the fixture's unload
        return chosen

    dialog = plugin.show_dialog()
    dialog.extent_mode.setCurrentIndex(dialog.extent_mode.findData("polygon"))
    dialog.extent_layer.setLayer(zones)
    dialog.current_settings().save()   # as Run does
    wait_for_tasks(qtbot)
    assert reloaded() is zones
    # the project loaded again: the same file under a new layer id
    QgsProject.instance().removeMapLayer(zones.id())
    zones_again = _polygons(tmp_path / "zones.geojson", "zones")
    assert reloaded() is zones_again
    # gone: none, not another layer
    QgsProject.instance().removeMapLayer(zones_again.id())
    assert reloaded() is None


def test_the_installers_output_goes_to_the_end_of_its_log_wherever_the_user_clicked(qtbot):
    from sarflood.plugin.gui.install_dialog import InstallDialog

    dialog = InstallDialog([["/bin/sh", "-c", "for i in 1 2 3 4; do echo line$i; sleep 0.3; done"]])
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: "line1" in dialog.log.toPlainText(), timeout=10000)
    qtbot.mouseClick(dialog.log.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(3, 3))
    assert dialog.log.textCursor().position() == 0
    with qtbot.waitSignal(dialog.installed, timeout=20000):
        pass
    assert dialog.log.toPlainText().split("\n")[1:5] == ["line1", "line2", "line3", "line4"]



def test_a_failed_run_offers_the_installer_only_where_it_can_write_its_venv(
        plugin, qtbot, monkeypatch, tmp_path):
    """A run that failed for a missing package showed Install even where the installer's
    folder cannot be written (a system-wide QGIS profile), for an install bound to fail."""
    from sarflood.plugin import backend_env
    from sarflood.plugin.backend_process import Outcome

    dialog = plugin.show_dialog()
    wait_for_tasks(qtbot)
    missing = Outcome(returncode=1, error="the backend needs onnxruntime",
                      error_kind="MissingDependency")
    controller = plugin.controller
    monkeypatch.setattr(backend_env, "VENV_DIR", tmp_path / "profile" / "python" / "sarflood-venv")
    controller._done(None, dialog, missing, controller.project_watch.count)
    assert dialog.install_button.isVisibleTo(dialog)

    monkeypatch.setattr(backend_env, "VENV_DIR", Path("/sys/kernel/profile/python/sarflood-venv"))
    controller._done(None, dialog, missing, controller.project_watch.count)
    assert not dialog.install_button.isVisibleTo(dialog)
    assert dialog.status.text() == "the backend needs onnxruntime"
