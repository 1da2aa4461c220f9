"""Reading windows with mirror padding, naming bands, pixel sizes."""
import math
import os

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from backend.grid import Grid, metres_per_degree
from backend.inputs import band_name_in, open_inputs
from backend.raster_io import ShrunkView, WindowReader, mirror_index
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


@pytest.mark.parametrize("sx, sy", [(10 / 7, 2.0), (1.0197, 1.0007), (1.3, 1.0006)])
def test_a_shrunk_view_gives_the_warped_views_average(tmp_path, sx, sy):
    """Noisy data with a hole of nodata values, seen on pixels sx x sy input pixels
    large: GDAL's read-time average gives the warper's numbers in wide windows, in
    one-column windows (which it alone gets wrong) and at the last column and row (whose
    pixels reach past the raster), however the view is cut into windows. At the hole's
    edge the warper gives a value to some view pixels with no data under them (its
    average reaches a little past the pixel); the read-time average leaves them no data."""
    rng = np.random.default_rng(3)
    h, w = 83, 61
    bands = rng.normal(-15, 4, (2, h, w)).astype(np.float32)
    bands[:, 40:50, 20:30] = -9999
    src = write_raster(tmp_path / "in.tif", bands, pixel=7.0, nodata=-9999)
    vw, vh = int(w / sx + 0.5), int(h / sy + 0.5)
    with rasterio.open(src) as ds:
        view_t = ds.transform @ Affine.scale(sx, sy)
        warped = WarpedVRT(ds, crs=ds.crs, transform=view_t, width=vw, height=vh,
                           resampling=Resampling.average, src_nodata=-9999.0,
                           nodata=float("nan"), dtype="float32")
        expected = warped.read()
        view = ShrunkView(ds, warped, sx, sy)
        assert view.inside[1] < vw   # the last column reaches past the raster
        reads = [view.read([1, 2], Window(0, 0, vw, vh)),
                 np.concatenate([view.read([1, 2], Window(0, r, vw, min(9, vh - r)))
                                 for r in range(0, vh, 9)], axis=1),
                 np.concatenate([view.read([1, 2], Window(c, 0, 1, vh)) for c in range(vw)],
                                axis=2)]
        view.close()
    missing = np.array([[(bands[0, math.floor(r * sy):math.ceil((r + 1) * sy),
                                math.floor(c * sx):math.ceil((c + 1) * sx)] == -9999).all()
                         for c in range(vw)] for r in range(vh)])
    for got in reads:
        got[got == -9999] = np.nan   # the tag, as the reader maps it
        both = ~np.isnan(got) & ~np.isnan(expected)
        assert np.allclose(got[both], expected[both], atol=1e-5)
        assert not (np.isnan(got) & ~missing).any()         # no data only where all is missing
        assert not (np.isnan(expected) & ~np.isnan(got)).any()


class _CutShortOnClose:
    """A dataset whose close() returns normally but leaves the file cut short, as libtiff
    does when the disk fills while the overviews or the directory are written."""

    def __init__(self, ds, keep: float):
        self._ds, self._keep = ds, keep

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def close(self):
        path = self._ds.name
        self._ds.close()
        with open(path, "r+b") as f:
            f.truncate(int(f.seek(0, 2) * self._keep))


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_an_output_cut_short_at_close_is_an_error_not_a_result(tmp_path, keep):
    """A full disk at the end of a run gave exit 0, a result event and a truncated file
    (replacing a good one with --overwrite)."""
    from backend.errors import OutputError
    from backend.sink import OutputSink

    grid = Grid(rasterio.crs.CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5e6), 700, 600)
    mask = tmp_path / "m.tif"
    mask.write_bytes(b"the user's earlier map")
    sink = OutputSink(grid, 256, 0.5, {}, overwrite=True, mask=str(mask))
    rng = np.random.default_rng(0)
    for row in range(0, 600, 256):
        for col in range(0, 700, 256):
            p = rng.random((min(256, 600 - row), min(256, 700 - col)), dtype=np.float32)
            sink.write(row, col, p)
    out = sink.outputs["mask"]
    out.ds = _CutShortOnClose(out.ds, keep)
    with pytest.raises(OutputError, match="m.tif: cannot be written"):
        sink.commit()
    assert mask.read_bytes() == b"the user's earlier map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]


def test_blocks_never_written_are_found(tmp_path):
    from backend.raster_io import not_whole
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint8",
                       tiled=True, blockxsize=256, blockysize=256, sparse_ok=True) as ds:
        ds.write(np.ones((256, 256), np.uint8), 1, window=Window(0, 0, 256, 256))
    assert not_whole(str(path), []) == "some of its blocks were not written"


def test_a_cut_file_is_described_without_its_temporary_name(tmp_path):
    """A file cut short (a full disk) was described as '.m.tif.<pid>-<hex>.sarflood-tmp:
    TIFFReadDirectory...', naming a hidden file removed before the user reads it."""
    from backend.raster_io import not_whole
    path = tmp_path / ".m.tif.123-abcd.sarflood-tmp"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8") as ds:
        ds.write(np.ones((64, 64), np.uint8), 1)
    with open(path, "r+b") as f:
        f.truncate(100)
    why = not_whole(str(path), [])
    assert why.startswith("the written file does not read back: ") and "sarflood-tmp" not in why


@pytest.mark.parametrize("failure", ["error", "interrupt"])
def test_a_failed_publish_puts_back_the_files_already_replaced(tmp_path, failure):
    """Outputs are published one by one; when a later one failed (a file another program
    holds open, a second Ctrl-C), those already renamed were deleted, the user's earlier
    files with them."""
    from backend.errors import OutputError
    from backend.sink import OutputSink

    grid = Grid(rasterio.crs.CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5e6), 300, 200)
    mask, prob = tmp_path / "m.tif", tmp_path / "p.tif"
    mask.write_bytes(b"the user's earlier mask")
    prob.write_bytes(b"the user's earlier probability")
    sink = OutputSink(grid, 256, 0.5, {}, overwrite=True, mask=str(mask), probability=str(prob))
    sink.write(0, 0, np.random.default_rng(0).random((200, 300), dtype=np.float32))
    raised = OutputError("p.tif: cannot be written") if failure == "error" else KeyboardInterrupt()

    def fails():
        raise raised
    sink.outputs["probability"].publish = fails
    with pytest.raises(type(raised)):
        sink.commit()
    assert mask.read_bytes() == b"the user's earlier mask"
    assert prob.read_bytes() == b"the user's earlier probability"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "p.tif"]


@pytest.mark.parametrize("held", ["file", "sidecar"])
def test_a_file_open_in_another_program_on_windows_is_said_to_be(tmp_path, monkeypatch, held):
    """Windows refuses to rename over, or delete, a file that a program holds open (QGIS,
    with a layer of it): the message said only "Access is denied"; it names the way out.
    Where the file's overviews beside it were the one held, the file had been replaced
    all the same, and the run said it was not written."""
    from backend.errors import OutputError
    from backend.sink import OutputSink

    grid = Grid(rasterio.crs.CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5e6), 300, 200)
    mask = tmp_path / "m.tif"
    mask.write_bytes(b"the user's earlier mask")
    overviews = tmp_path / "m.tif.ovr"
    overviews.write_bytes(b"its overviews, built by QGIS")
    sink = OutputSink(grid, 256, 0.5, {}, overwrite=True, mask=str(mask))
    sink.write(0, 0, np.random.default_rng(0).random((200, 300), dtype=np.float32))

    def access_denied():
        exc = PermissionError(13, "Access is denied")
        exc.winerror = 5   # what Windows raises on a file open elsewhere
        return exc

    def refused_replace(src, dst):
        if held == "file" and dst == str(mask):
            raise access_denied()
        return replace(src, dst)

    def refused_unlink(path, *args, **kwargs):
        if held == "sidecar" and str(path) == str(overviews):
            raise access_denied()
        return unlink(path, *args, **kwargs)
    replace, unlink = os.replace, os.unlink
    monkeypatch.setattr(os, "replace", refused_replace)
    monkeypatch.setattr(os, "unlink", refused_unlink)
    with pytest.raises(OutputError) as raised:
        sink.commit()
    assert str(raised.value) == (f"{mask}: cannot be written (Access is denied: it is read-only, "
                                 "or open in another program: in QGIS, remove its layer from the "
                                 "project; or choose another file)")
    assert mask.read_bytes() == b"the user's earlier mask"
    left = ["m.tif"] + (["m.tif.ovr"] if held == "sidecar" else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_published_outputs_leave_no_file_aside(tmp_path):
    from backend.sink import OutputSink

    grid = Grid(rasterio.crs.CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5e6), 300, 200)
    mask = tmp_path / "m.tif"
    mask.write_bytes(b"the user's earlier mask")
    sink = OutputSink(grid, 256, 0.5, {}, overwrite=True, mask=str(mask))
    sink.write(0, 0, np.random.default_rng(0).random((200, 300), dtype=np.float32))
    sink.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]
    with rasterio.open(mask) as ds:
        assert ds.read(1).shape == (200, 300)
