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
GRID = Grid(CRS.from_epsg(32633), from_origin(500000, 4300000, 10, 10), SIZE, SIZE)


def geotiff_out(path) -> GeoTiffOut:
    out = GeoTiffOut(str(path), GRID, "float32", float("nan"), 256, {}, "probability",
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


def test_the_free_space_of_a_full_disk_is_measured_before_the_file_is_removed(tmp_path,
                                                                              monkeypatch):
    """Measured after the half-written file was removed, it gave the space that file had
    filled: '4.3 MB free' on a disk of 4.2 MB, and past 16 MB no note at all."""
    from backend import raster_io

    seen = []

    def note(path):
        seen.append(tmp_path.joinpath(path).exists())
        return "; the disk is full (0.1 MB free)"

    monkeypatch.setattr(raster_io, "disk_full_note", note)
    monkeypatch.setattr(raster_io, "not_whole", lambda path, factors: "its last block is empty")
    out = geotiff_out(tmp_path / "p.tif")
    with pytest.raises(OutputError, match=r"its last block is empty; the disk is full \(0.1 MB"):
        out.finish()
    assert seen == [True] and listing(tmp_path) == []


def test_no_room_for_the_marker_of_a_new_output_is_an_output_error(tmp_path, monkeypatch):
    """The hidden marker made while outputs are renamed into place failed on a disk out of
    inodes with an internal error (OSError ENOSPC)."""
    from backend import sink as sink_module
    from backend.sink import OutputSink

    def beside(path, kind="tmp"):
        if kind == "new":
            return str(tmp_path / "gone" / "marker")   # no such folder: making it fails
        return temporary_beside(path, kind)

    temporary_beside = sink_module.temporary_beside
    monkeypatch.setattr(sink_module, "temporary_beside", beside)
    grid = Grid(CRS.from_epsg(32633), from_origin(500000, 4300000, 10, 10), 64, 64)
    sink = OutputSink(grid, 64, 0.5, {}, False, mask=str(tmp_path / "m.tif"))
    sink.write(0, 0, prob=np.full((64, 64), 0.7, np.float32))
    with pytest.raises(OutputError, match=r"m.tif: cannot be written \(no file can be made "
                                          r"beside it: No such file"):
        sink.commit()
    assert listing(tmp_path) == []


class _InterruptedWhenRead:
    """A tag value read as the output file is made, when a second Ctrl-C (or SIGTERM)
    arrives: the handler of backend.cli raises KeyboardInterrupt there."""

    def __str__(self):
        raise KeyboardInterrupt


def test_an_interrupt_as_the_file_is_made_leaves_no_hidden_file(tmp_path):
    """The hidden file existed but was not yet the sink's to remove: a QGIS killed at that
    moment (two cancels, its pipe's end and the Linux death signal) left it beside the
    final mask."""
    with pytest.raises(KeyboardInterrupt):
        GeoTiffOut(str(tmp_path / "p.tif"), GRID, "uint8", 255, 256,
                   {"SARFLOOD_OUTPUT": _InterruptedWhenRead()}, "water mask",
                   Resampling.nearest, False, {"compress": "zstd"})
    assert listing(tmp_path) == []
