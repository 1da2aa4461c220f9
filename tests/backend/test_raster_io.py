"""Reading windows with mirror padding, naming bands, pixel sizes."""
import numpy as np
import pytest
import rasterio

from backend.grid import Grid, metres_per_degree
from backend.inputs import band_name_in, open_inputs
from backend.raster_io import WindowReader, mirror_index
from tests.backend.conftest import random_db, write_raster


def test_mirror_index_repeats_the_edge_and_handles_tiny_rasters():
    assert mirror_index(np.arange(-3, 6), 3).tolist() == [2, 1, 0, 0, 1, 2, 2, 1, 0]
    assert mirror_index(np.arange(-2, 3), 1).tolist() == [0] * 5


@pytest.mark.parametrize("window", [(-8, 40, -8, 50), (30, 70, 50, 90), (-30, 90, -40, 130),
                                    (5, 25, 7, 33)])
def test_window_reader_equals_a_mirror_padded_array(tmp_path, window):
    bands = random_db((60, 70), nan_frac=0.01)
    bands[0, 3, 4] = -9999
    src = write_raster(tmp_path / "in.tif", bands, nodata=-9999)
    with rasterio.open(src) as ds:
        reader = WindowReader([(ds, 1, -9999.0), (ds, 2, -9999.0)], row_off=2, col_off=3)
        r0, r1, c0, c1 = window
        got = reader.read(r0, r1, c0, c1)
    expect = bands.copy()
    expect[expect == -9999] = np.nan
    rows = mirror_index(np.arange(r0, r1) + 2, 60)
    cols = mirror_index(np.arange(c0, c1) + 3, 70)
    assert np.array_equal(got, expect[:, rows][:, :, cols], equal_nan=True)


@pytest.mark.parametrize("text, name", [("VV", "VV"), ("Sigma0_VH_db", "VH"),
                                        ("s1a-iw-grd-vh-2020.tiff", "VH"), ("1SDV", None),
                                        ("VV VH", None), ("", None)])
def test_band_names(text, name):
    assert band_name_in(text) == name


def test_two_files_named_vh_then_vv_are_swapped(tmp_path):
    b = random_db((10, 10))
    vh = write_raster(tmp_path / "scene_VH.tif", b[1:], descriptions=None)
    vv = write_raster(tmp_path / "scene_VV.tif", b[:1], descriptions=None)
    inputs = open_inputs([vh, vv])
    try:
        assert inputs.bands["VV"].path == vv and inputs.bands["VH"].path == vh
        assert any("is VH" in n for n in inputs.notes)
    finally:
        inputs.close()


def test_described_bands_in_reverse_order(tmp_path):
    b = random_db((10, 10))
    src = write_raster(tmp_path / "in.tif", b, descriptions=("VH", "VV"))
    inputs = open_inputs([src])
    try:
        assert (inputs.bands["VV"].index, inputs.bands["VH"].index) == (2, 1)
    finally:
        inputs.close()


def test_metres_per_degree_at_the_equator():
    lon, lat = metres_per_degree(0.0)
    assert lon == pytest.approx(111319.5, abs=1) and lat == pytest.approx(110574.3, abs=1)


def test_pixel_size_of_a_sen1floods11_chip(real_chips):
    with rasterio.open(real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif") as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    x, y = grid.pixel_size_m()
    assert x == pytest.approx(7.88, abs=0.01) and y == pytest.approx(9.97, abs=0.01)
