"""Sparse data on a resampled input: every input pixel with data gets its probability,
whatever the grid's pixel shape, and however little data lies around it."""
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from backend.engine import PredictOptions, predict
from tests.backend.conftest import Collect, sigmoid, write_raster


def _run(tmp_path, models, bands: np.ndarray, width_m: float, height_m: float):
    src = write_raster(tmp_path / "in.tif", bands,
                       transform=from_origin(500000.0, 5000000.0, width_m, height_m))
    rep = Collect()
    r = predict(PredictOptions([src], mask=None, probability=str(tmp_path / "p.tif"),
                               model=models["threshold"]), rep)
    assert r["resampled"]
    with rasterio.open(tmp_path / "p.tif") as ds:
        return ds.read(1), rep


@pytest.mark.parametrize("width_m, height_m, axis", [(5.0, 20.0, 1), (20.0, 5.0, 0)])
def test_sparse_columns_on_a_grid_finer_one_way_and_coarser_the_other(tmp_path, models,
                                                                       width_m, height_m, axis):
    """Valid lines every 7 pixels across the fine axis of a 5 x 20 m grid (the model's
    10 m is coarser one way, finer the other, so the view is bilinear): GDAL's bilinear
    warper left every other line's model pixels without data (too little of their kernel
    had any), and those lines came out as no data (1080 of 2100 pixels)."""
    rng = np.random.default_rng(8)
    shape = (60, 240) if axis == 1 else (240, 60)
    line = rng.uniform(-25, -5, shape[axis]).astype(np.float32)   # one value per line
    vv = np.broadcast_to(line if axis == 1 else line[:, None], shape)
    bands = np.full((2,) + shape, np.nan, np.float32)
    keep = [slice(None), slice(None), slice(None)]
    keep[1 + axis] = slice(None, None, 7)
    bands[tuple(keep)] = np.stack([vv, vv - 7])[tuple(keep)]
    p, _ = _run(tmp_path, models, bands, width_m, height_m)
    valid = np.isfinite(bands[0])
    assert not np.isnan(p[valid]).any(), f"{np.isnan(p[valid]).sum()} pixels with data lost"
    assert np.isnan(p[~valid]).all()
    np.testing.assert_allclose(p[valid], sigmoid(-(vv[valid] + 15.0)), atol=1e-5)
