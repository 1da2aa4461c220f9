"""The review dock's Accept when QGIS dies while its backend runs (real QGIS in a second
process, killed; real backend)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProject, QgsRectangle
from qgis.PyQt.QtCore import Qt

from .conftest import PLUGINS_DIR, wait_for_tasks, write_raster
from .test_review_dock import _accept, _draw, _run

# QGIS as the analyst has it: the plugin loaded, the saved project opened (its review taken
# up), Accept clicked with the corrections layer; it then runs until it is killed
_QGIS = """import sys, time
sys.path.insert(0, {plugins!r})
from qgis.core import QgsApplication, QgsProject
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtWidgets import QMainWindow
from pytest_qgis.mock_qgis_classes import MockMessageBar
from pytest_qgis.qgis_interface import QgisInterface
app = QgsApplication([], True)
app.initQgis()
window = QMainWindow()
import sarflood
plugin = sarflood.classFactory(QgisInterface(QgsMapCanvas(window), MockMessageBar(), window))
plugin.initProcessing()
plugin.initGui()
assert QgsProject.instance().read({project!r})
dock = plugin.dock
assert dock.accept_button.isEnabled(), dock.status.text()
dock.corrections.setLayer(QgsProject.instance().mapLayersByName({fixes!r})[0])
dock.final_path.setFilePath({final!r})
dock.confirm_overwrite = lambda paths: True
dock.accept_map()
while True:
    app.processEvents()
    time.sleep(0.01)
"""


def _tag(path) -> str:
    return gdal.Open(str(path)).GetMetadataItem("SARFLOOD_CORRECTIONS") or ""


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL: POSIX")
def test_an_accept_whose_qgis_died_leaves_the_mask_with_the_corrections_burnt_into_it(
        plugin, qtbot, models, tmp_path):
    """QGIS killed while Accept's backend wrote the final mask: its backend stopped and kept
    the old mask, but the corrections beside it were the killed Accept's, which the old
    mask's tag named and which were never burnt into it. The next Accept to that mask puts
    the old ones back."""
    rng = np.random.default_rng(3)
    vv = np.where(rng.random((3000, 3000)) < 0.4, -22.0, -8.0).astype(np.float32)
    scene = write_raster(tmp_path / "scene.tif", [vv, vv - 7.0], descriptions=["VV", "VH"])
    run = _run(plugin, qtbot, scene, models["threshold"], tmp_path)
    dock = plugin.dock
    qtbot.mouseClick(dock.new_corrections, Qt.MouseButton.LeftButton)
    fixes = dock.corrections.currentLayer()
    extent = run.layers.mask.extent()
    x, y = extent.xMinimum(), extent.yMinimum()
    _draw(fixes, QgsRectangle(x, y, x + 5000, y + 5000), 1)
    assert fixes.commitChanges(False)
    final = tmp_path / "final.tif"
    sidecar = final.with_suffix(".corrections.geojson")
    _accept(dock, qtbot, final)
    old_mask, old_polygons = final.read_bytes(), sidecar.read_bytes()
    assert _tag(final).endswith(f" from {sidecar}")
    _draw(fixes, QgsRectangle(x + 10000, y + 10000, x + 20000, y + 20000), 0)
    assert fixes.commitChanges(False)
    project = tmp_path / "flood.qgz"
    assert QgsProject.instance().write(str(project))
    wait_for_tasks(qtbot)

    def backend_writing() -> bool:
        return any(p.name.startswith(f".{final.name}.") for p in tmp_path.iterdir())

    script = tmp_path / "desktop.py"   # not qgis.py: it would shadow the qgis package
    script.write_text(_QGIS.format(plugins=str(PLUGINS_DIR), project=str(project),
                                   fixes=fixes.name(), final=str(final)))
    log = tmp_path / "desktop.log"
    with open(log, "w") as errors:
        qgis = subprocess.Popen([sys.executable, str(script)], stdout=errors, stderr=errors)
    try:
        deadline = time.monotonic() + 60
        while not backend_writing() and qgis.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        qgis.kill()
    assert qgis.wait(10) == -signal.SIGKILL, log.read_text()
    assert time.monotonic() < deadline, log.read_text()   # killed once its backend wrote
    # its backend, its stdin ended as QGIS died, cancels and removes its part-written mask
    deadline = time.monotonic() + 60
    while backend_writing() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not backend_writing()
    # the premise: killed as it began writing (its hidden file), it never got to the rename
    assert final.read_bytes() == old_mask, "the killed Accept's backend replaced the mask"

    # the next Accept to that mask, failing on its own corrections, writes nothing of its own
    _draw(fixes, QgsRectangle(x, y + 25000, x + 1000, y + 26000), 2)
    dock.confirm_overwrite = lambda paths: True
    status = _accept(dock, qtbot, final, "Accept failed")
    assert "feature 3 has water = 2" in status, status
    assert sidecar.read_bytes() == old_polygons and _tag(final).endswith(f" from {sidecar}")
    assert final.read_bytes() == old_mask
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{final.stem}")]
    fixes.rollBack()
    wait_for_tasks(qtbot)
