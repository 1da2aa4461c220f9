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
