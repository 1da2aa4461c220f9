"""The Processing provider: registered algorithms, and inputs refused before any backend run."""
import numpy as np
import pytest
from qgis.core import QgsProcessingException

from .conftest import write_raster

ALGORITHMS = {"sarflood:mapwater", "sarflood:otsu", "sarflood:floodextent", "sarflood:vectorize",
              "sarflood:correctmask",
              "sarflood:zonalwater"}


def test_provider_lists_every_algorithm(provider):
    assert {a.id() for a in provider.algorithms()} == ALGORITHMS


def test_single_band_input_is_refused_with_its_name(provider, tmp_path):
    import processing

    path = write_raster(tmp_path / "only_vv.tif", [np.zeros((8, 8), np.float32)])
    with pytest.raises(QgsProcessingException, match=r"only_vv.*has 1 band.*VV and VH"):
        processing.run("sarflood:mapwater", {"INPUT": str(path), "OUTPUT_MASK": str(tmp_path / "m.tif")})
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
