"""The Processing provider: registered algorithms, and inputs refused before any backend run."""
import os
import subprocess
import sys

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from .conftest import write_raster

ALGORITHMS = {"sarflood:mapwater", "sarflood:otsu", "sarflood:threshold", "sarflood:floodextent",
              "sarflood:vectorize", "sarflood:correctmask", "sarflood:zonalwater"}


def test_provider_lists_every_algorithm(provider):
    assert {a.id() for a in provider.algorithms()} == ALGORITHMS


def test_parameter_labels_fit_the_algorithm_dialog(provider):
    # the dialog's parameter column shows about 70 characters: longer labels were cut off
    # (extent, VH layer, threshold); what more there is to say is in the tooltip
    long = {(a.id(), p.name()): p.description() for a in provider.algorithms()
            for p in a.parameterDefinitions() if len(p.description()) > 64}
    assert not long
    extent = provider.algorithm("mapwater").parameterDefinition("EXTENT")
    assert "project's CRS" in extent.help()


def test_single_band_input_is_refused_with_its_name(provider, tmp_path):
    import processing

    path = write_raster(tmp_path / "only_vv.tif", [np.zeros((8, 8), np.float32)])
    with pytest.raises(QgsProcessingException, match=r"only_vv.tif: has 1 band \(VV\); the model needs "
                       r"VV, VH: give a VV and VH stack as INPUT, or the VH layer as INPUT_VH$"):
        processing.run("sarflood:mapwater", {"INPUT": str(path), "OUTPUT_MASK": str(tmp_path / "m.tif")})
    assert not (tmp_path / "m.tif").exists()


# a standalone PyQGIS script: a run on a project layer that fails, then QGIS's exit
_FAIL_THEN_EXIT = """
import sys
plugins, raster, out = sys.argv[1:4]
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsProcessingException
app = QgsApplication([], False)
app.initQgis()
sys.path.insert(0, QgsApplication.pkgDataPath() + "/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
sys.path.insert(0, plugins)
from sarflood.plugin.processing.provider import SarFloodProvider
provider = SarFloodProvider()
QgsApplication.processingRegistry().addProvider(provider)
import processing
layer = QgsRasterLayer(raster, "vv only")
QgsProject.instance().addMapLayer(layer)
try:
    processing.run("sarflood:mapwater", {"INPUT": layer.id(), "OUTPUT_MASK": out})
except QgsProcessingException as error:
    print("refused:", error)
QgsProject.instance().clear()
app.exitQgis()
"""


def test_a_failed_run_on_a_project_layer_lets_qgis_exit_cleanly(plugins_dir, tmp_path):
    """The failed run's traceback kept its frames, and so the copy of the project layer it
    read, in a reference cycle: freed after exitQgis, the copy crashed the interpreter's
    exit (a segfault, after every test had passed)."""
    script = tmp_path / "fail_then_exit.py"
    script.write_text(_FAIL_THEN_EXIT)
    path = write_raster(tmp_path / "only_vv.tif", [np.zeros((8, 8), np.float32)])
    done = subprocess.run([sys.executable, str(script), str(plugins_dir), str(path),
                           str(tmp_path / "m.tif")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert "refused: " in done.stdout and "only_vv.tif: has 1 band" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert not (tmp_path / "m.tif").exists()


def test_temporary_outputs_are_geotiffs_whatever_processings_default_format(provider, models,
                                                                            two_band_scene):
    """With Processing's default raster format set to gpkg, a plain TEMPORARY_OUTPUT was named
    .gpkg and refused as "must be a GeoTIFF (.tif)"; the file dialogs offered every format."""
    from pathlib import Path

    import processing
    from processing.core.ProcessingConfig import ProcessingConfig
    from qgis.core import QgsApplication

    key = ProcessingConfig.DEFAULT_OUTPUT_RASTER_LAYER_EXT
    before = ProcessingConfig.getSetting(key)
    ProcessingConfig.setSettingValue(key, ProcessingConfig.settings[key].options.index("gpkg"))
    try:
        assert provider.supportedOutputRasterLayerExtensions() == ["tif"]
        assert provider.defaultRasterFileExtension() == "tif"
        offered = QgsApplication.processingRegistry().algorithmById("sarflood:mapwater") \
            .parameterDefinition("OUTPUT_MASK").createFileFilter()
        assert offered.split(";;")[0] == "TIF files (*.tif)" and "gpkg" not in offered.lower()
        out = processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene), "MODEL": str(models["threshold"]),
                                                   "OUTPUT_MASK": "TEMPORARY_OUTPUT"})
        assert out["OUTPUT_MASK"].endswith(".tif") and Path(out["OUTPUT_MASK"]).is_file()
    finally:
        ProcessingConfig.setSettingValue(key, before)
