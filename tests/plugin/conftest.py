"""Fixtures for the plugin tests: the plugin importable as ``sarflood``, its provider, small rasters.

QGIS knows a plugin by its folder name; the repository root is the plugin folder,
so a symlink named ``sarflood`` to it (the same thing the qgis_process test puts on
QGIS_PLUGINPATH) makes ``import sarflood`` load the plugin as QGIS would.
"""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from osgeo import gdal, ogr, osr

from tests.conftest import REPO

PLUGINS_DIR = Path(tempfile.mkdtemp(prefix="sarflood-plugins-"))
(PLUGINS_DIR / "sarflood").symlink_to(REPO, target_is_directory=True)
sys.path.insert(0, str(PLUGINS_DIR))
ARTIFACTS = REPO / "tests" / "artifacts"
gdal.UseExceptions()


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    return PLUGINS_DIR


_PROVIDERS = []  # keeps the Python side of registered providers alive


@pytest.fixture
def provider(qgis_processing):
    """The sarflood provider, registered as initProcessing does (again, if a test removed it),
    with the installer's venv in the profile, as the plugin names it before."""
    from qgis.core import QgsApplication
    from sarflood.plugin import backend_env
    from sarflood.plugin.processing.provider import SarFloodProvider

    backend_env.use_profile(QgsApplication.qgisSettingsDirPath())
    registry = QgsApplication.processingRegistry()
    if registry.providerById("sarflood") is None:
        _PROVIDERS.append(SarFloodProvider())
        registry.addProvider(_PROVIDERS[-1])
    return registry.providerById("sarflood")


@pytest.fixture
def clean_settings():
    """No remembered dialog settings from earlier tests or sessions."""
    from qgis.core import QgsSettings

    QgsSettings().remove("sarflood")
    yield
    QgsSettings().remove("sarflood")


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny exact ONNX models: p = sigmoid(-(VV + 15)) per pixel (one reading VV and VH,
    one VV alone), and broken ones."""
    from training.toy_models import raw_db_card, smoothed_threshold_model, threshold_model

    folder = tmp_path_factory.mktemp("models")
    paths = {"threshold": folder / "threshold.onnx", "smoothed": folder / "smoothed.onnx",
             "mismatch": folder / "mismatch.onnx", "vv_only": folder / "vv_only.onnx"}
    onnx.save(threshold_model(), paths["threshold"])
    onnx.save(threshold_model(raw_db_card("test-vv-only", margin=0, bands=("VV",))), paths["vv_only"])
    onnx.save(smoothed_threshold_model(kernel=3), paths["smoothed"])
    # the card names an input tensor the graph does not have
    bad = threshold_model()
    bad.graph.input[0].name = "not_s1"
    bad.graph.node[0].input[0] = "not_s1"
    onnx.save(bad, paths["mismatch"])
    return paths


def write_raster(path: Path, bands: list[np.ndarray], *, epsg: int = 32630, pixel: float = 10.0,
                 origin=(500000.0, 4200000.0), nodata=None, descriptions=None) -> Path:
    """A GeoTIFF from arrays (float32 or uint8), north-up, ``pixel`` metres."""
    height, width = bands[0].shape
    kind = gdal.GDT_Byte if bands[0].dtype == np.uint8 else gdal.GDT_Float32
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, len(bands), kind)
    ds.SetGeoTransform((origin[0], pixel, 0.0, origin[1], 0.0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i, array in enumerate(bands, start=1):
        band = ds.GetRasterBand(i)
        band.WriteArray(array)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[i - 1])
    ds = None
    return path


def read_raster(path) -> np.ndarray:
    ds = gdal.Open(str(path))
    array = ds.ReadAsArray()
    ds = None
    return array


def burnt_polygons(polygons, like) -> np.ndarray:
    """1 where the polygons in the file ``polygons`` cover a pixel centre of the raster
    ``like``, else 0 (GDAL's rasterize): polygons drawn from a mask's pixels give those
    pixels back exactly."""
    grid = gdal.Open(str(like))
    target = gdal.GetDriverByName("MEM").Create("", grid.RasterXSize, grid.RasterYSize, 1, gdal.GDT_Byte)
    target.SetGeoTransform(grid.GetGeoTransform())
    target.SetProjection(grid.GetProjection())
    source = ogr.Open(str(polygons))
    assert gdal.RasterizeLayer(target, [1], source.GetLayer(0), burn_values=[1]) == 0
    array = target.ReadAsArray()
    grid = target = source = None
    return array


def spoiling_python(folder: Path, command: str, spoilt: str) -> Path:
    """A Python for the plugin's setting that runs the real backend, then, after a
    ``command`` run (predict, finalize...), writes "not a GeoTIFF" over each file the shell
    words ``spoilt`` name: an output gone bad before QGIS opens it."""
    from sarflood.plugin.backend_env import PLUGIN_ROOT, venv_python

    python = folder / "python"
    python.write_text(f"#!/bin/sh\n'{venv_python(PLUGIN_ROOT / '.venv')}' \"$@\"; rc=$?\n"
                      f'if [ "$3" = {command} ]; then for f in {spoilt}; do '
                      'echo "not a GeoTIFF" > "$f"; done; fi\nexit $rc\n')
    python.chmod(0o755)
    return python


@pytest.fixture
def two_band_scene(tmp_path) -> Path:
    """64 x 64 dB scene: left half water (VV -22 dB), right half land (VV -8 dB)."""
    vv = np.full((64, 64), -8.0, np.float32)
    vv[:, :32] = -22.0
    vh = vv - 7.0
    return write_raster(tmp_path / "scene.tif", [vv, vh], descriptions=["VV", "VH"])


@pytest.fixture(autouse=True)
def no_task_of_an_earlier_test(qtbot):
    """Each test starts with QGIS's task manager idle: a task an earlier test left running
    would finish in this one (its signals, its layers) or hold one of the pool's two
    threads on a 2-core machine. One that does not end within a minute fails the setup,
    named, once: it is cancelled, and what still does not end is left out of every later
    wait (a task stuck for good had each later test wait its minute, and a CI run of the
    suite took over its 90 minutes)."""
    try:
        wait_for_tasks(qtbot)
    except AssertionError:
        from qgis.core import QgsApplication

        QgsApplication.taskManager().cancelAll()
        try:
            wait_for_tasks(qtbot, timeout_ms=10000)
        except AssertionError:
            pass
        ABANDONED_TASKS.update(unfinished())
        raise
    yield


@pytest.fixture(autouse=True)
def empty_project(qgis_new_project):
    """Each test starts with an empty QGIS project, not with the layers of the test run
    before it (eight tests without the plugin fixture read the project and passed or
    failed with the order the tests ran in)."""
    yield


@pytest.fixture
def plugin(qgis_iface, qgis_processing, clean_settings):
    """The plugin as QGIS loads it: classFactory, initProcessing, initGui; unloaded afterwards."""
    from qgis.core import QgsApplication
    import sarflood

    QgsApplication.processingRegistry().removeProvider("sarflood")  # the plugin registers its own
    loaded = sarflood.classFactory(qgis_iface)
    loaded.initProcessing()
    loaded.initGui()
    qgis_iface.messageBar().clear_messages()
    yield loaded
    loaded.unload()


@pytest.fixture
def python_without_ensurepip(tmp_path) -> str:
    """This Python as Debian has it without python3-venv: its stdlib lacks ensurepip (a copy of
    the interpreter beside links to every stdlib entry but that one)."""
    base = tmp_path / "debian-python"
    stdlib = Path(sysconfig.get_path("stdlib"))
    (base / "lib" / stdlib.name).mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "ensurepip":
            (base / "lib" / stdlib.name / entry.name).symlink_to(entry)
    (base / "bin").mkdir()
    shutil.copy2(os.path.realpath(sys._base_executable), base / "bin" / "python3")
    return str(base / "bin" / "python3")


def dead_pid() -> int:
    """The id of a process that has ended."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def wait_for_tasks(qtbot, timeout_ms: int = 60000) -> None:
    """Until QGIS's task manager has nothing left to run (queries of the dialog, etc.) and
    has delivered every task's end (:func:`unfinished_tasks`); the tasks still running
    after ``timeout_ms`` fail the test, named."""
    try:
        qtbot.waitUntil(lambda: not unfinished_tasks(), timeout=timeout_ms)
    except qtbot.TimeoutError:
        raise AssertionError(f"QGIS tasks still running after {timeout_ms / 1000:g} s: "
                             f"{stuck_report()}") from None


def stuck_report() -> str:
    """What to look into when work did not end in time: each unfinished task with its status
    (Queued: its runnable never ran; Running: see the stacks), Qt's thread pool, the
    processes this one started; every thread's Python stack goes to stderr."""
    import faulthandler
    import subprocess

    from qgis.core import QgsTask
    from qgis.PyQt.QtCore import QThreadPool

    names = {getattr(QgsTask.TaskStatus, n): n for n in ("Queued", "OnHold", "Running")}
    tasks = [f"{t.description()!r} {names.get(t.status(), t.status())} {t.progress():.0f} %"
             + (" (given up on earlier)" if i in ABANDONED_TASKS else "")
             for i, t in unfinished(abandoned=True).items()]
    pool = QThreadPool.globalInstance()
    try:
        children = subprocess.run(["ps", "-o", "pid,stat,etime,wchan:24,args", "--ppid",
                                   str(os.getpid())], capture_output=True, text=True).stdout
    except OSError as exc:   # no ps
        children = f"({exc})\n"
    try:
        faulthandler.dump_traceback(all_threads=True)
    except (AttributeError, OSError, ValueError):   # a stderr without a file (--capture=sys)
        pass
    return (f"tasks not ended: {tasks}; thread pool {pool.activeThreadCount()}/"
            f"{pool.maxThreadCount()} active; children:\n{children}(every thread's stack: "
            f"captured stderr)")


@contextmanager
def tasks_added(callback):
    """Within the block, ``callback(task)`` as each task is added to QGIS's one task
    manager (before it runs): connected for the block only, as a slot left connected
    outlives the test."""
    from qgis.core import QgsApplication

    manager = QgsApplication.taskManager()

    def added(task_id: int) -> None:
        callback(manager.task(task_id))

    manager.taskAdded.connect(added)
    try:
        yield
    finally:
        manager.taskAdded.disconnect(added)


ABANDONED_TASKS: set[int] = set()   # ids of the tasks that never ended, already reported


def unfinished(abandoned: bool = False) -> dict[int, object]:
    """The tasks of QGIS's task manager, by id, that have not ended and had their finished()
    run; without ``abandoned``, not those :func:`no_task_of_an_earlier_test` gave up on.

    A task's status() is set on the main thread in the same call that runs its finished();
    countActiveTasks() is no such barrier: QGIS 3.22 counts a task as active by a status its
    worker thread sets, so another task's start or cancel meanwhile drops it from the count
    before its finished() has run (a test then saw a file its handler removes)."""
    from qgis.core import QgsApplication, QgsTask

    manager = QgsApplication.taskManager()
    tasks = {manager.taskId(t): t for t in manager.tasks()
             if t.status() not in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated)}
    return {i: t for i, t in tasks.items() if abandoned or i not in ABANDONED_TASKS}


def unfinished_tasks() -> list[str]:
    """The descriptions of the :func:`unfinished` tasks."""
    return [t.description() for t in unfinished().values()]
