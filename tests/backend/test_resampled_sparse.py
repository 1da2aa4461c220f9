"""Sparse data on a resampled input: every input pixel with data gets its probability,
whatever the grid's pixel shape, and however little data lies around it."""
import math

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


def _model_pixel_means(line: np.ndarray, scale: float) -> np.ndarray:
    """The mean of ``line`` over each model pixel ``scale`` input pixels long, weighted by
    overlap. The last one reaches past the line, where GDAL's warper takes the last
    pixel's value."""
    n = math.ceil(len(line) / scale - 1e-6)
    padded = np.concatenate([line, np.full(math.ceil(n * scale) - len(line) + 1, line[-1])])
    pixels = np.arange(len(padded))
    means = []
    for k in range(n):
        weight = np.clip(np.minimum(pixels + 1, (k + 1) * scale) - np.maximum(pixels, k * scale),
                         0, 1)
        means.append(float(np.sum(weight * padded) / np.sum(weight)))
    return np.array(means)


@pytest.mark.parametrize("pixel, width, height", [(5.0, 101, 57), (3.0, 101, 81)])
@pytest.mark.parametrize("last", ["column", "row"])
def test_data_in_the_last_column_or_row_alone_is_mapped(tmp_path, models, pixel, width, height,
                                                        last):
    """An input finer than the model whose only data is its last column, or its last row:
    at 5 m x 101 px the view ended after 50 model pixels of 10 m, and the last column,
    lying wholly in the 51st (whose centre is on the input's edge), was replaced by a
    mirror of the 50th: all no data, and a warning that the input had no valid pixel.
    Each of its pixels now takes the model pixel holding it (its 2 x 2 taps touch no
    data: the line's centres lie in the first half of those model pixels), the average
    of the line's pixels under that model pixel."""
    n = height if last == "column" else width
    line = (-15 + 5 * np.sin(np.arange(n) / 9)).astype(np.float32)
    bands = np.full((2, height, width), np.nan, np.float32)
    edge = (slice(None), slice(None), -1) if last == "column" else (slice(None), -1)
    bands[edge] = np.stack([line, line - 7])
    p, rep = _run(tmp_path, models, bands, pixel, pixel)
    assert not any("no valid pixel" in w for w in rep.warnings), rep.warnings
    valid = np.isfinite(bands[0])
    assert np.isnan(p[~valid]).all()
    scale = 10.0 / pixel
    means = _model_pixel_means(line.astype(np.float64), scale)
    expected = sigmoid(-(means[np.floor((np.arange(n) + 0.5) / scale).astype(int)] + 15))
    np.testing.assert_allclose(p[valid], expected, atol=1e-5)
