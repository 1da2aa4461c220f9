"""Outputs that cannot be written: one OutputError naming the output, and no file left."""

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio._err import CPLE_AppDefinedError
from rasterio.transform import from_origin

from backend.errors import OutputError
from backend.grid import Grid
from backend.raster_io import GeoTiffOut
from tests.backend.conftest import listing

SIZE = 512   # a side of the outputs: large enough to get overviews


def geotiff_out(path) -> GeoTiffOut:
    grid = Grid(CRS.from_epsg(32633), from_origin(500000, 4300000, 10, 10), SIZE, SIZE)
    out = GeoTiffOut(str(path), grid, "float32", float("nan"), 256, {}, "probability",
                     Resampling.average, False, {"compress": "zstd", "zstd_level": 1})
    out.write(np.random.default_rng(0).random((SIZE, SIZE), dtype=np.float32), 0, 0)
    return out


class _OverviewsFail:
    """The output's dataset, whose overviews fail as GDAL's do on a full disk: with its own
    error, which rasterio passes on unwrapped (not a RasterioError)."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def build_overviews(self, *args):
        raise CPLE_AppDefinedError(1, 1, "Failed to write overview block")


def test_overviews_that_fail_with_gdals_own_error_are_an_output_error(tmp_path):
    out = geotiff_out(tmp_path / "p.tif")
    out.ds = _OverviewsFail(out.ds)
    with pytest.raises(OutputError, match="p.tif: cannot be written .*Failed to write"):
        out.finish()
    assert listing(tmp_path) == []
