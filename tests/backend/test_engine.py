"""The streaming engine checked against numbers computed in numpy."""
import threading

import numpy as np
import onnx
import pytest
import rasterio
from rasterio.transform import Affine, from_origin
from rasterio.windows import Window

from backend import engine
from backend.engine import GridJob, PredictOptions, predict
from backend.errors import Cancelled, CardError, InputError, UsageError
from backend.finalize import finalize
from backend.model import OnnxModel
from backend.progress import Reporter
from backend.grid import metres_per_degree
from backend.raster_io import WindowReader
from backend.resample import read_scaled
from backend.scene import write_scene
from backend.tiling import plan_tiles
from backend.units import convert
from tests.backend.conftest import (UTM, Collect, listing, random_db, reference_smoothed, sigmoid,
                                    write_raster)
from tests.conftest import REPO
from training.toy_models import raw_db_card, smoothed_threshold_model, threshold_model


@pytest.fixture(scope="module")
def scene_1024(tmp_path_factory) -> str:
    """The generated 1024 px scene (seed 0) the bundled model's tiling checks run on."""
    path = str(tmp_path_factory.mktemp("scene") / "scene.tif")
    write_scene(path, 1024, seed=0)
    return path


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_threshold_model_gives_exact_probability_and_mask(tmp_path, models):
    bands = random_db((300, 420), nan_frac=0.01)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=models["threshold"]))
    p, m = read(tmp_path / "p.tif"), read(tmp_path / "m.tif")
    nodata = np.isnan(bands).any(axis=0)
    expected = sigmoid(-(bands[0].astype(np.float64) + 15))
    assert np.array_equal(np.isnan(p), nodata)
    assert np.nanmax(np.abs(p - expected)) < 1e-6
    assert np.array_equal(m, np.where(nodata, 255, expected > 0.5))
    assert r["valid_pixels"] == int((~nodata).sum())
    assert r["water_pixels"] == int((m == 1).sum())
    assert r["valid_area_km2"] == pytest.approx(r["valid_pixels"] * 100 / 1e6)  # 10 m pixels


@pytest.mark.parametrize("asked, card_default, used", [(0.3, 0.5, 0.3), (None, 0.437, 0.437)])
def test_the_mask_is_cut_at_the_asked_threshold_else_the_cards(tmp_path, asked, card_default, used):
    """A threshold the user asks for wins; without one, the card's default, never a fixed 0.5."""
    model = tmp_path / "model.onnx"
    onnx.save(threshold_model(raw_db_card("test-threshold", margin=0, threshold=card_default)),
              model)
    bands = random_db((120, 140), nan_frac=0.01)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=str(model),
                               threshold=asked))
    expected = sigmoid(-(bands[0].astype(np.float64) + 15))
    nodata = np.isnan(bands).any(axis=0)
    cut = np.where(nodata, 255, expected > used)
    assert not np.array_equal(cut, np.where(nodata, 255, expected > 0.5))  # the test can tell
    assert np.array_equal(read(tmp_path / "m.tif"), cut)
    assert r["threshold"] == used
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.tags()["SARFLOOD_THRESHOLD"] == f"{used:g}"


def test_outputs_lie_on_the_input_grid_tiled_compressed_with_overviews(tmp_path, models):
    src = write_raster(tmp_path / "in.tif", random_db((700, 600)))
    predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), probability=str(tmp_path / "p.tif"),
                           model=models["threshold"]))
    with rasterio.open(src) as i, rasterio.open(tmp_path / "m.tif") as m, \
            rasterio.open(tmp_path / "p.tif") as p:
        for o in (m, p):
            assert (o.crs, o.transform, o.shape) == (i.crs, i.transform, i.shape)
            assert o.profile["tiled"] and o.block_shapes[0] == (256, 256)  # the card's tile_size
            assert o.profile["compress"] == "zstd"
            assert o.overviews(1) == [2, 4]
            assert o.tags()["SARFLOOD_MODEL"] == "test-threshold"
            assert set(o.tags()) >= {"SARFLOOD_MODEL_VERSION", "SARFLOOD_INPUTS",
                                     "SARFLOOD_THRESHOLD", "SARFLOOD_CREATED"}
        assert (m.dtypes[0], m.nodata) == ("uint8", 255)
        assert p.dtypes[0] == "float32" and np.isnan(p.nodata)
    assert listing(tmp_path) == ["in.tif", "m.tif", "p.tif"]  # no temporary file left


def test_deflate_on_request_gives_the_same_pixels(tmp_path, models):
    src = write_raster(tmp_path / "in.tif", random_db((300, 280)))
    for codec in ("zstd", "deflate"):
        predict(PredictOptions([src], mask=str(tmp_path / f"m_{codec}.tif"),
                               probability=str(tmp_path / f"p_{codec}.tif"),
                               model=models["threshold"], compress=codec))
    for name in ("m", "p"):
        with rasterio.open(tmp_path / f"{name}_zstd.tif") as z, \
                rasterio.open(tmp_path / f"{name}_deflate.tif") as d:
            assert (z.profile["compress"], d.profile["compress"]) == ("zstd", "deflate")
            assert np.array_equal(z.read(1), d.read(1), equal_nan=True)
    with pytest.raises(UsageError, match="compression 'lzw'"):
        predict(PredictOptions([src], mask=str(tmp_path / "x.tif"), model=models["threshold"],
                               compress="lzw"))
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("model, tilings", [
    # many_b1: no blend zone; widest: a blend zone as wide as the cell (48 + 2 x margin 2)
    ("smoothed", [("one", 1024, None, 4), ("many", 64, 20, 3), ("many_b1", 48, 4, 1),
                  ("widest", 48, 52, 2)]),
    # the hand-set stand-in: an exact 5 x 5 mean within its margin, so seams cannot show
    ("demo", [("one", 1024, None, 4), ("many", 64, None, 4), ("many_b1", 48, 16, 1)]),
])
def test_one_tile_or_many_give_identical_output(tmp_path, models, model, tilings):
    """Tile seams must not change anything: 1 tile vs over 100 tiles, bit for bit."""
    bands = random_db((700, 650), seed=3)
    bands[:, 100:130, 200:260] = np.nan
    src = write_raster(tmp_path / "in.tif", bands)
    runs = {}
    for name, tile, overlap, batch in tilings:
        r = predict(PredictOptions([src], mask=str(tmp_path / f"m_{name}.tif"),
                                   probability=str(tmp_path / f"p_{name}.tif"),
                                   model=models[model], tile_size=tile, overlap=overlap,
                                   batch_size=batch))
        runs[name] = (read(tmp_path / f"p_{name}.tif"), read(tmp_path / f"m_{name}.tif"),
                      r["tiles"]["count"])
    p1, m1, n1 = runs["one"]
    assert n1 == 1
    for name in set(runs) - {"one"}:
        p, m, n = runs[name]
        assert n > 100
        assert np.array_equal(m, m1)
        assert np.array_equal(p, p1, equal_nan=True)


@pytest.mark.parametrize("tta", [False, True])
def test_concurrent_model_calls_give_the_output_of_one_call_at_a_time(tmp_path, models, tta):
    """Batches run several at once on the CPU (OnnxModel.streams); they must come back
    to the blender in reading order, so an exact model's probability is bit for bit
    that of one call at a time."""
    bands = random_db((700, 650), seed=5)
    bands[:, 300:340, 0:90] = np.nan
    src = write_raster(tmp_path / "in.tif", bands)
    out = {}
    for streams in (1, 4):
        model = OnnxModel(models["smoothed"], "cpu", streams=streams)
        assert model.streams == streams
        r = predict(PredictOptions([src], mask=str(tmp_path / f"m{streams}.tif"),
                                   probability=str(tmp_path / f"p{streams}.tif"),
                                   tile_size=64, overlap=20, batch_size=1, tta=tta),
                    model=model)
        assert r["tiles"]["count"] > 100
        assert 0 < r["model_seconds"] <= r["seconds"]   # overlapping calls counted once
        out[streams] = read(tmp_path / f"p{streams}.tif"), read(tmp_path / f"m{streams}.tif")
    (p1, m1), (p4, m4) = out[1], out[4]
    assert np.array_equal(m1, m4)
    assert np.array_equal(p1, p4, equal_nan=True)


def test_the_bundled_model_barely_depends_on_the_tiling(tmp_path, scene_1024):
    """The trained default reaches beyond its margin and pools over the whole tile, so
    it cannot be bit-identical across tilings (README); it must stay close to it.
    Measured on this 1024 px scene: 0.08 % of the mask and a mean probability change
    of 0.0016 between 512 and 256 px tiles."""
    src = scene_1024
    out = {}
    for tile in (512, 256):
        predict(PredictOptions([src], mask=str(tmp_path / f"m{tile}.tif"),
                               probability=str(tmp_path / f"p{tile}.tif"), tile_size=tile))
        out[tile] = read(tmp_path / f"m{tile}.tif"), read(tmp_path / f"p{tile}.tif")
    (m1, p1), (m2, p2) = out[512], out[256]
    valid = m1 != 255
    assert np.array_equal(valid, m2 != 255)
    assert np.count_nonzero((m1 != m2) & valid) / np.count_nonzero(valid) < 0.005
    assert np.nanmean(np.abs(p1 - p2)) < 0.005


def test_many_tiles_match_a_whole_raster_numpy_reference(tmp_path, models):
    bands = random_db((1100, 900), seed=5, nan_frac=0.002)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                               model=models["smoothed"], tile_size=128))
    assert r["tiles"]["count"] == 9 * 8
    p = read(tmp_path / "p.tif")
    ref = reference_smoothed(bands)
    assert np.array_equal(np.isnan(p), np.isnan(ref))
    assert np.nanmax(np.abs(p - ref)) < 1e-6


def test_extent_gives_the_same_pixels_as_the_full_run(tmp_path, models):
    bands = random_db((400, 500), seed=7)
    src = write_raster(tmp_path / "in.tif", bands)
    predict(PredictOptions([src], probability=str(tmp_path / "full.tif"), mask=None,
                           model=models["smoothed"], tile_size=64))
    # columns 100..350, rows 50..300 of a grid with origin (500000, 5000000), 10 m
    extent = (501000.0, 4997000.0, 503500.0, 4999500.0)
    r = predict(PredictOptions([src], probability=str(tmp_path / "part.tif"), mask=None,
                               model=models["smoothed"], tile_size=64, extent=extent))
    assert r["window"] == {"col_off": 100, "row_off": 50, "width": 250, "height": 250}
    with rasterio.open(tmp_path / "part.tif") as part:
        assert part.transform.c == 501000.0 and part.transform.f == 4999500.0
        values = part.read(1)
    assert np.array_equal(values, read(tmp_path / "full.tif")[50:300, 100:350])
    # the same extent given in lon/lat
    from rasterio.warp import transform_bounds
    ll = transform_bounds("EPSG:32633", "EPSG:4326", *extent)
    shrink = 1e-5  # inside the reprojected box, so snapping outward lands on the same pixels
    r = predict(PredictOptions([src], probability=str(tmp_path / "ll.tif"), mask=None,
                               model=models["smoothed"], tile_size=64,
                               extent=(ll[0] + shrink, ll[1] + shrink, ll[2] - shrink,
                                       ll[3] - shrink),
                               extent_crs="EPSG:4326"))
    assert abs(r["window"]["col_off"] - 100) <= 2 and abs(r["window"]["width"] - 250) <= 4


def test_an_extent_gives_the_bundled_models_pixels_of_the_whole_scene(tmp_path, scene_1024):
    """The trained default depends a little on where tiles fall (README), so an extent
    keeps the whole raster's tiles: its pixels are those of a whole-scene run, bit for
    bit. Before, a 400 x 700 px extent of this scene changed 1.4 % of its mask."""
    src = scene_1024
    predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                           probability=str(tmp_path / "p.tif")))
    whole_m, whole_p = read(tmp_path / "m.tif"), read(tmp_path / "p.tif")
    with rasterio.open(src) as ds:
        t = ds.transform
    # (col, row, width, height): inside the first cell; across cells; starting on a cell
    # edge and in a cell's blend zone (so the tiles before are needed too); a corner
    for col, row, w, h in [(100, 124, 400, 700), (300, 224, 600, 700), (512, 520, 88, 88),
                           (900, 1000, 124, 24)]:
        x0, y0 = t @ (col, row)
        x1, y1 = t @ (col + w, row + h)
        r = predict(PredictOptions([src], mask=str(tmp_path / "em.tif"),
                                   probability=str(tmp_path / "ep.tif"),
                                   extent=(x0, y1, x1, y0), overwrite=True))
        assert r["window"] == {"col_off": col, "row_off": row, "width": w, "height": h}
        assert np.array_equal(read(tmp_path / "em.tif"), whole_m[row:row + h, col:col + w])
        assert np.array_equal(read(tmp_path / "ep.tif"), whole_p[row:row + h, col:col + w],
                              equal_nan=True)


def test_an_extent_of_a_resampled_input_keeps_the_whole_scenes_model_grid(tmp_path,
                                                                          scene_1024):
    """At 40 N a 10 m-by-degrees pixel is 7.7 m wide: the input is resampled. An extent
    gets the whole-raster run's model pixels and tiles, so only GDAL's warper, which
    works chunk by chunk, tells them apart. Before, this scene's two extents changed
    2.2 % and 0.5 % of their masks (largest probability change 0.59)."""
    with rasterio.open(scene_1024) as ds:
        bands = ds.read()
    deg = 8.983e-05
    src = write_raster(tmp_path / "ll.tif", bands, crs="EPSG:4326",
                       transform=Affine(deg, 0, 10.0, 0, -deg, 40.1))
    predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                           probability=str(tmp_path / "p.tif")))
    whole_m, whole_p = read(tmp_path / "m.tif"), read(tmp_path / "p.tif")
    for extent in [(10.01, 40.02, 10.05, 40.07), (10.046, 40.03, 10.09, 40.09)]:
        r = predict(PredictOptions([src], mask=str(tmp_path / "em.tif"),
                                   probability=str(tmp_path / "ep.tif"), extent=extent,
                                   overwrite=True))
        assert r["resampled"]
        win = r["window"]
        rows = slice(win["row_off"], win["row_off"] + win["height"])
        cols = slice(win["col_off"], win["col_off"] + win["width"])
        m, p = read(tmp_path / "em.tif"), read(tmp_path / "ep.tif")
        valid = whole_m[rows, cols] != 255
        assert np.array_equal(m != 255, valid)
        assert np.count_nonzero((m != whole_m[rows, cols]) & valid) / valid.sum() < 0.0005
        assert np.nanmean(np.abs(p - whole_p[rows, cols])) < 1e-3   # measured 1.6e-4


def test_an_extent_of_an_untagged_input_reads_its_no_data_as_the_whole_run(tmp_path,
                                                                           scene_1024):
    """A NaN-edged scene with no nodata tag, at 5 m: the no-data value is judged on the
    whole input. Judged on an extent clear of the edge, exact 0 was taken for it, the
    warper then averaged NaN in, and probabilities moved by up to 0.08. At twice the
    model's pixel size every model pixel averages the same four input pixels whatever
    the window, so the pixels agree exactly."""
    with rasterio.open(scene_1024) as ds:
        bands, t = ds.read(), ds.transform
    src = str(tmp_path / "fine.tif")
    with rasterio.open(src, "w", driver="GTiff", width=1024, height=1024, count=2,
                       dtype="float32", crs=UTM, transform=Affine(5, 0, t.c, 0, -5, t.f)) as d:
        d.write(bands)
    predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                           probability=str(tmp_path / "p.tif")))
    whole_m, whole_p = read(tmp_path / "m.tif"), read(tmp_path / "p.tif")
    x0, y0 = t.c + 5 * 200, t.f - 5 * 600
    r = predict(PredictOptions([src], mask=str(tmp_path / "em.tif"),
                               probability=str(tmp_path / "ep.tif"),
                               extent=(x0, y0 - 2000, x0 + 2000, y0), overwrite=True))
    assert r["resampled"] and r["window"] == {"col_off": 200, "row_off": 600, "width": 400,
                                              "height": 400}
    assert np.array_equal(read(tmp_path / "em.tif"), whole_m[600:1000, 200:600])
    assert np.array_equal(read(tmp_path / "ep.tif"), whole_p[600:1000, 200:600], equal_nan=True)


def test_an_extent_with_tta_gives_the_whole_scenes_spread(tmp_path, models):
    """Both channels (probability and spread) go through the regrouping into blocks."""
    bands = random_db((300, 260), seed=9)
    src = write_raster(tmp_path / "in.tif", bands)
    predict(PredictOptions([src], mask=None, uncertainty=str(tmp_path / "u.tif"),
                           model=models["shifted"], tile_size=64))
    r = predict(PredictOptions([src], mask=None, uncertainty=str(tmp_path / "eu.tif"),
                               model=models["shifted"], tile_size=64,
                               extent=(500370.0, 4997500.0, 501900.0, 4999300.0)))
    col, row = r["window"]["col_off"], r["window"]["row_off"]
    assert (col, row) == (37, 70)
    assert np.array_equal(read(tmp_path / "eu.tif"),
                          read(tmp_path / "u.tif")[row:row + 180, col:col + 153])


def test_coarser_input_is_resampled_and_written_back_on_its_grid(tmp_path, models):
    """20 m input, 10 m model: the output lies on the 20 m grid and matches the pixel model."""
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float32)
    vv = -15 + 6 * np.sin(xx / 25) * np.cos(yy / 30)       # smooth, so resampling is gentle
    bands = np.stack([vv, vv - 7]).astype(np.float32)
    src = write_raster(tmp_path / "in.tif", bands, pixel=20.0)
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=models["threshold"]))
    assert r["resampled"] and r["processing_pixel_size_m"] == [10.0, 10.0]
    assert r["input_pixel_size_m"] == [20.0, 20.0]
    assert r["stage_cpu_seconds"]["resample back"] > 0   # the second pass is timed too
    with rasterio.open(src) as i, rasterio.open(tmp_path / "p.tif") as o:
        assert (o.crs, o.transform, o.shape) == (i.crs, i.transform, i.shape)
        p = o.read(1)
    expected = sigmoid(-(vv.astype(np.float64) + 15))
    assert not np.isnan(p).any()
    assert np.abs(p - expected).max() < 0.03
    assert listing(tmp_path) == ["in.tif", "m.tif", "p.tif"]  # the model-grid file is gone


@pytest.mark.parametrize("pixel, width, height", [(7.7, 398, 298), (6.0, 409, 257)])
def test_resampling_keeps_every_edge_pixel(tmp_path, models, pixel, width, height):
    """An input finer than the model whose size is not whole model pixels: its last
    column (and row) can lie in a model pixel whose centre is past the input's edge
    (7.7 m x 398 px is 306.46 model pixels of 10 m: the last input centre is 306.42 in).
    Those pixels are mapped like the others, not left as no data."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vv = -15 + 6 * np.sin(xx / 25) * np.cos(yy / 30)
    src = write_raster(tmp_path / "in.tif", np.stack([vv, vv - 7]).astype(np.float32), pixel=pixel)
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=models["threshold"]))
    assert r["resampled"] and r["valid_pixels"] == width * height
    p = read(tmp_path / "p.tif")
    assert not np.isnan(p).any()
    err = np.abs(p - sigmoid(-(vv.astype(np.float64) + 15)))
    # bilinear both ways: the border pixels (the first ones too) are the least exact
    assert err[2:-2, 2:-2].max() < 0.01 and err.max() < 0.04


@pytest.mark.parametrize("pixel", [7.7, 20.0, (4.2, 10.03)])
def test_a_resampled_input_keeps_its_no_data_exactly(tmp_path, models, pixel):
    """Finer and coarser than the model: every no-data pixel of the input (holes, a
    ragged swath edge, VV alone missing) is no data in the output, and every pixel with
    data keeps it, beside a gap thinner than a model pixel too (the nearest model pixel with
    data). GDAL's warper went by how much of a pixel's kernel had data: on this scene it
    gave values to 92 no-data pixels at 7.7 m and dropped 924 and 164 pixels with data at
    7.7 and 20 m (then 5 and 4, now none). 4.2 x 10.03 m is a Sen1Floods11 degree pixel at
    65 N: a hair taller than the model's, its bilinear view dropped 319."""
    rng = np.random.default_rng(4)
    bands = random_db((260, 330), seed=4)
    yy, xx = np.mgrid[0:260, 0:330]
    bands[:, (yy - 120) ** 2 + (xx - 150) ** 2 < 30 ** 2] = np.nan         # a hole
    bands[:, xx > 300 - 0.2 * yy + rng.integers(0, 3, yy.shape)] = np.nan   # a ragged edge
    bands[0, 50:53, 40:200] = np.nan                                        # VV only
    width, height = pixel if isinstance(pixel, tuple) else (pixel, pixel)
    src = write_raster(tmp_path / "in.tif", bands,
                       transform=from_origin(500000.0, 5000000.0, width, height))
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]))
    assert r["resampled"]
    lost, gap = read(tmp_path / "m.tif") == 255, np.isnan(bands).any(axis=0)
    assert not (gap & ~lost).any()
    assert not (lost & ~gap).any()


def test_geographic_grid_area_follows_latitude(tmp_path, models):
    """EPSG:4326 at 60 N: areas by cos(latitude) agree with the sphere of equal area to 1%."""
    deg = 1 / 3600
    bands = np.full((2, 360, 360), -25.0, np.float32)   # all water
    src = write_raster(tmp_path / "in.tif", bands, crs="EPSG:4326", pixel=deg,
                       origin=(10.0, 60.1))
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"],
                               threshold=0.5))
    lat1, lat2 = np.radians(60.0), np.radians(60.1)
    sphere = 6371007.2 ** 2 * np.radians(0.1) * (np.sin(lat2) - np.sin(lat1)) / 1e6
    assert r["water_area_km2"] == pytest.approx(sphere, rel=0.01)
    assert r["input_pixel_size_m"][0] == pytest.approx(deg * metres_per_degree(60.05)[0], rel=1e-3)
    # 1 arc-second at 60 N is about 15.5 x 30.9 m: resampled to the card's 10 m
    assert r["resampled"]


@pytest.mark.parametrize("rows", [2000, 200])
def test_a_tall_geographic_scene_is_warned_of_its_pixel_widths(tmp_path, models, rows):
    """The run's pixels are sized at the scene's centre latitude; 2000 rows of 10 m at
    88.5 N run from about 6 % narrower to 6 % wider than that, and the analyst is told.
    200 rows stay within 1 %: no warning."""
    dy = 8.983e-5
    dx = 10.0 / metres_per_degree(88.5)[0]          # 10 m wide at the centre
    bands = np.full((2, rows, 40), -25.0, np.float32)
    transform = Affine(dx, 0, 10.0, 0, -dy, 88.5 + rows / 2 * dy)
    src = write_raster(tmp_path / "in.tif", bands, crs="EPSG:4326", transform=transform)
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                reporter)
    assert not r["resampled"]
    about = [w for w in reporter.warnings if "spans latitudes" in w]
    if rows == 200:
        assert about == []
        return
    top, bottom = (10.0 * metres_per_degree(88.5 + k * (rows - 1) / 2 * dy)[0]
                   / metres_per_degree(88.5)[0] for k in (1, -1))
    assert top < 9.5 and bottom > 10.5
    assert about == [f"{src}: the scene spans latitudes 88.41 to 88.59 on a geographic grid, "
                     f"where a pixel's ground width changes with latitude: the model sees "
                     f"pixels {top:.1f} m wide at the top and {bottom:.1f} m at the bottom, "
                     "against the 10 m it was trained at (over 5% off); reproject the scene "
                     "to a projected CRS (UTM) for pixels of one size, or map it in parts "
                     "(--extent)"]


def test_web_mercator_pixels_are_measured_on_the_ground(tmp_path, models):
    """EPSG:3857 at 50 N: a '10 m' pixel is 6.4 m on the ground. Its areas must be the
    ground's (they were 2.4x too large), and the model must see 10 m ground pixels."""
    from rasterio.warp import transform
    from tests.backend.areas import band_area_m2
    (x0,), (y0,) = transform("EPSG:4326", "EPSG:3857", [10.0], [50.05])
    bands = np.full((2, 300, 200), -25.0, np.float32)   # all water
    src = write_raster(tmp_path / "in.tif", bands, crs="EPSG:3857", origin=(x0, y0))
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]))
    radius = 6378137.0   # EPSG:3857 maps WGS 84 longitude and latitude on this sphere
    edges = y0 - 10.0 * np.arange(301)
    lat = np.degrees(2 * np.arctan(np.exp(edges / radius)) - np.pi / 2)
    truth = band_area_m2(lat[1:], lat[:-1], np.degrees(10.0 / radius)).sum() * 200 / 1e6
    assert r["water_area_km2"] == pytest.approx(truth, rel=1e-4)
    assert r["resampled"] and r["processing_pixel_size_m"] == pytest.approx([10.0, 10.0])
    assert r["input_pixel_size_m"][0] == pytest.approx(10.0 * np.cos(np.radians(50.04)),
                                                       rel=0.005)
    with rasterio.open(tmp_path / "m.tif") as m:
        assert (m.crs.to_epsg(), m.shape) == (3857, (300, 200)) and (m.read(1) == 1).all()


def test_tta_averages_the_eight_transforms_and_writes_their_spread(tmp_path, models):
    bands = random_db((80, 96), seed=11)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                               uncertainty=str(tmp_path / "u.tif"), model=models["shifted"],
                               tta=True, tile_size=32))
    assert r["tta"]
    vv = np.pad(bands[0].astype(np.float64), 1, mode="symmetric")
    h, w = bands.shape[1:]
    diagonals = [sigmoid(-(vv[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] + 15))
                 for dy in (-1, 1) for dx in (-1, 1)]
    eight = np.stack(diagonals * 2)
    assert np.abs(read(tmp_path / "p.tif") - eight.mean(axis=0)).max() < 1e-6
    assert np.abs(read(tmp_path / "u.tif") - eight.std(axis=0)).max() < 1e-6


def test_tta_on_a_resampled_input_brings_both_channels_back(tmp_path, models):
    """7.7 m input: the probability and its spread both come back onto the input grid,
    with no data exactly where the input has none."""
    bands = random_db((90, 120), seed=12)
    bands[:, 30:40, 50:70] = np.nan
    src = write_raster(tmp_path / "in.tif", bands, pixel=7.7)
    r = predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                               uncertainty=str(tmp_path / "u.tif"), model=models["shifted"],
                               tta=True))
    assert r["resampled"] and r["tta"]
    p, u = read(tmp_path / "p.tif"), read(tmp_path / "u.tif")
    gap = np.isnan(bands).any(axis=0)
    assert np.array_equal(np.isnan(p), gap) and np.array_equal(np.isnan(u), gap)
    assert 0 < np.nanmean(u) < 0.5 and np.nanmax(p) <= 1 and np.nanmin(u) >= 0


def test_uint8_probability_and_histogram_agree_with_the_mask(tmp_path, models):
    bands = random_db((256, 256), seed=2, nan_frac=0.05)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=models["threshold"],
                               probability_dtype="uint8"))
    q = read(tmp_path / "p.tif")
    expected = sigmoid(-(bands[0].astype(np.float64) + 15))
    nodata = np.isnan(bands).any(axis=0)
    assert np.array_equal(q == 255, nodata)
    assert np.abs(q[~nodata] / 250 - expected[~nodata]).max() <= 0.5 / 250 + 1e-6
    hist = r["probability_histogram"]
    assert len(hist["edges"]) == 101 and len(hist["area_km2"]) == 100
    assert sum(hist["area_km2"]) == pytest.approx(r["valid_area_km2"], rel=1e-6)
    # of the codes written, as finalize reads them back: at 0.5 it lacks only predict's
    # water within half a code of 0.5
    above = sum(a for e, a in zip(hist["edges"], hist["area_km2"]) if e >= 0.5)
    assert above == pytest.approx(np.count_nonzero((q > 125) & ~nodata) * 1e-4, abs=5e-5)
    near = np.count_nonzero(~nodata & (np.abs(expected - 0.5) <= 0.5 / 250 + 1e-6))
    assert -5e-5 <= r["water_area_km2"] - above <= near * 1e-4 + 5e-5


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_finalize_at_a_threshold_gives_the_area_the_histogram_gives(tmp_path, models, dtype):
    """The review dock reads the area at a threshold off the histogram; Accept writes the
    mask there with finalize, from the probability file. A probability at the threshold
    itself is dry in the mask (VV = -15 dB gives 0.5 exactly), and a uint8 file's codes,
    not the probabilities they were rounded from, are what finalize reads."""
    from plugin.summary import water_area_at

    bands = random_db((256, 256), seed=2, nan_frac=0.05)
    bands[0, :64] = -15.0
    src = write_raster(tmp_path / "in.tif", bands)
    prob = str(tmp_path / "p.tif")
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), probability=prob,
                               model=models["threshold"], probability_dtype=dtype))
    assert np.count_nonzero(read(prob)[:64] == (0.5 if dtype == "float32" else 125)) > 10000
    hist = r["probability_histogram"]
    if dtype == "float32":   # at the run's threshold, predict's own mask
        assert water_area_at(hist, r["threshold"]) == pytest.approx(r["water_area_km2"], abs=5e-5)
    for t in (0.02, 0.1, 0.3, 0.5, 0.55, 0.9):
        f = finalize(prob, t, str(tmp_path / f"m_{t}.tif"))
        # bins are rounded to 1e-6 km2, a pixel is 1e-4 km2: the same pixels
        assert water_area_at(hist, t) == pytest.approx(f["water_area_km2"], abs=5e-5), t


def test_linear_and_amplitude_inputs_give_the_dB_result(tmp_path, models):
    bands = random_db((128, 160), seed=4)
    db = predict(PredictOptions([write_raster(tmp_path / "db.tif", bands)],
                                probability=str(tmp_path / "p_db.tif"), mask=None,
                                model=models["threshold"]))
    assert db["units_detected"] == "dB"
    power = (10 ** (bands / 10)).astype(np.float32)
    for units, data in [("linear", power), ("amplitude", np.sqrt(power))]:
        # neutral file names: a name like 'linear.tif' would count as metadata
        r = predict(PredictOptions([write_raster(tmp_path / f"in_{len(units)}.tif", data)],
                                   probability=str(tmp_path / f"p_{units}.tif"), mask=None,
                                   model=models["threshold"]))
        assert (r["units_detected"], r["units_source"], r["units_used"]) == (units, "values", "dB")
        assert np.abs(read(tmp_path / f"p_{units}.tif") - read(tmp_path / "p_db.tif")).max() < 1e-4


@pytest.mark.parametrize("pixel", [10.0, 7.7, 20.0])   # read directly, averaged, resampled
def test_a_band_stored_scaled_is_read_in_its_values(tmp_path, models, pixel):
    """int16 hundredths of a dB with GDAL scale 0.01: read as dB, nodata by its stored value."""
    bands = np.round(random_db((120, 150), seed=2), 2)
    stored = np.round(bands * 100).astype(np.int16)
    stored[:, :5, :] = -32768
    src = str(tmp_path / "scaled.tif")
    with rasterio.open(src, "w", driver="GTiff", width=150, height=120, count=2,
                       dtype="int16", nodata=-32768, crs="EPSG:32633",
                       transform=Affine(pixel, 0, 500000, 0, -pixel, 5000000)) as ds:
        ds.write(stored)
        ds.scales, ds.offsets = (0.01, 0.01), (0.0, 0.0)
    plain = write_raster(tmp_path / "plain.tif", np.where(stored == -32768, np.nan, bands),
                         pixel=pixel)
    reporter = Collect()
    for name, path in (("scaled", src), ("plain", plain)):
        predict(PredictOptions([path], mask=str(tmp_path / f"m_{name}.tif"),
                               probability=str(tmp_path / f"p_{name}.tif"),
                               model=models["threshold"]), reporter)
    assert any("band 1 (VV) is stored scaled: values are read as stored x 0.01 + 0" in m
               for m in reporter.infos)
    assert not reporter.warnings
    assert np.array_equal(read(tmp_path / "m_scaled.tif"), read(tmp_path / "m_plain.tif"))
    assert np.nanmax(np.abs(read(tmp_path / "p_scaled.tif")
                            - read(tmp_path / "p_plain.tif"))) < 1e-6
    assert (read(tmp_path / "m_scaled.tif")[:5] == 255).all()


def test_a_fill_value_without_a_nodata_tag_is_no_data(tmp_path, models):
    """-9999 in a dB raster with no nodata tag: no data, with a warning, not water."""
    bands = random_db((200, 260), seed=6)
    bands[:, :, :40] = -9999.0
    src = write_raster(tmp_path / "in.tif", bands, nodata=None)
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                reporter)
    assert (read(tmp_path / "m.tif")[:, :40] == 255).all()
    assert r["valid_pixels"] == 200 * 220
    assert any("below -100" in w and "fill value" in w for w in reporter.warnings)


@pytest.mark.parametrize("pixel", [10.0, 7.7, 20.0])   # read directly, averaged, resampled
def test_a_gdal_mask_marks_no_data(tmp_path, models, pixel):
    """An internal mask (as gdalwarp or COG writers leave) instead of a nodata value:
    the masked pixels hold 0 dB, which reads as bright land unless the mask is honoured."""
    bands = random_db((120, 150), seed=8)
    bands[:, :, :30] = 0.0
    src = str(tmp_path / "masked.tif")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            src, "w", driver="GTiff", width=150, height=120, count=2, dtype="float32",
            crs="EPSG:32633", transform=Affine(pixel, 0, 500000, 0, -pixel, 5000000)) as ds:
        ds.write(bands)
        mask = np.full((120, 150), 255, np.uint8)
        mask[:, :30] = 0
        ds.write_mask(mask)
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                reporter)
    assert any("has a GDAL mask" in m for m in reporter.infos)
    m = read(tmp_path / "m.tif")
    assert (m[:, :30] == 255).all()
    assert (m[:, 31:] != 255).all()   # one column of bilinear mixing when resampled
    assert r["valid_pixels"] == (m != 255).sum()


def test_raster_smaller_than_one_tile(tmp_path, models):
    bands = random_db((5, 7), seed=9)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                               model=models["smoothed"]))
    assert (r["width"], r["height"], r["tiles"]["count"]) == (7, 5, 1)
    assert np.nanmax(np.abs(read(tmp_path / "p.tif") - reference_smoothed(bands))) < 1e-6


def test_single_band_model_takes_vv_from_a_two_band_raster(tmp_path, models):
    bands = random_db((64, 64))
    src = write_raster(tmp_path / "in.tif", bands)
    predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                           model=models["vv_only"]))
    assert np.abs(read(tmp_path / "p.tif") - sigmoid(-(bands[0] + 15.0))).max() < 1e-6


def test_cancel_event_stops_and_leaves_nothing(tmp_path, models):
    src = write_raster(tmp_path / "in.tif", random_db((512, 512)))
    cancel = threading.Event()

    class CancelAtFirstProgress(Reporter):
        def progress(self, fraction, stage=""):
            cancel.set()

    with pytest.raises(Cancelled):
        predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=models["threshold"],
                               tile_size=64, batch_size=1), CancelAtFirstProgress(), cancel)
    assert listing(tmp_path) == ["in.tif"]


def test_two_single_band_files_in_either_order(tmp_path, models):
    bands = random_db((90, 110), seed=12)
    one = write_raster(tmp_path / "both.tif", bands)
    vv = write_raster(tmp_path / "s1_VV.tif", bands[:1], descriptions=None)
    vh = write_raster(tmp_path / "s1_VH.tif", bands[1:], descriptions=None)
    model = models["smoothed"]  # reads VV only, but through both bands' tiles
    predict(PredictOptions([one], probability=str(tmp_path / "p1.tif"), mask=None, model=model))
    predict(PredictOptions([vh, vv], probability=str(tmp_path / "p2.tif"), mask=None, model=model))
    assert np.array_equal(read(tmp_path / "p1.tif"), read(tmp_path / "p2.tif"))


def test_extent_on_a_resampled_input(tmp_path, models):
    yy, xx = np.mgrid[0:150, 0:200].astype(np.float32)
    vv = -15 + 6 * np.sin(xx / 20) * np.cos(yy / 25)
    src = write_raster(tmp_path / "in.tif", np.stack([vv, vv - 7]).astype(np.float32), pixel=20.0)
    predict(PredictOptions([src], probability=str(tmp_path / "full.tif"), mask=None,
                           model=models["smoothed"]))
    # columns 40..140, rows 30..110 of the 20 m grid
    r = predict(PredictOptions([src], probability=str(tmp_path / "part.tif"), mask=None,
                               model=models["smoothed"],
                               extent=(500800.0, 4997800.0, 502800.0, 4999400.0)))
    assert r["resampled"] and r["window"] == {"col_off": 40, "row_off": 30, "width": 100,
                                              "height": 80}
    part, full = read(tmp_path / "part.tif"), read(tmp_path / "full.tif")[30:110, 40:140]
    assert not np.isnan(part).any()
    # same model grid lines and real context around the extent: the same values, up to
    # GDAL's warper, which resamples each requested chunk on its own (about 3e-5 here)
    assert np.abs(part - full).max() < 1e-4


@pytest.mark.parametrize("crs, pixel, origin", [
    ("EPSG:32633", 10.0, (500000.0, 5000000.0)),       # the model's pixel size
    ("EPSG:4326", 8.983e-05, (10.0, 40.1)),            # 7.7 x 10 m at 40 N: resampled anyway
])
def test_flipped_grids_give_the_north_up_result(tmp_path, models, crs, pixel, origin):
    """A south-up grid (rows running north) and one whose columns run west hold the same
    ground as a north-up one; the model must see that ground the same way up. The
    shifted model reads the pixel to the north-west, so feeding the rows as stored would
    read another neighbour."""
    bands = random_db((150, 170), seed=3)
    h, w = bands.shape[1:]
    x0, y0 = origin
    grids = {
        "north_up": (bands, Affine(pixel, 0, x0, 0, -pixel, y0)),
        "south_up": (bands[:, ::-1], Affine(pixel, 0, x0, 0, pixel, y0 - h * pixel)),
        "west_left": (bands[:, :, ::-1], Affine(-pixel, 0, x0 + w * pixel, 0, -pixel, y0)),
    }
    out = {}
    for name, (data, transform) in grids.items():
        src = write_raster(tmp_path / f"{name}.tif", np.ascontiguousarray(data), crs=crs,
                           transform=transform)
        r = predict(PredictOptions([src], mask=str(tmp_path / f"m_{name}.tif"),
                                   probability=str(tmp_path / f"p_{name}.tif"),
                                   model=models["shifted"]))
        assert r["resampled"] == (name != "north_up" or crs == "EPSG:4326")
        with rasterio.open(tmp_path / f"p_{name}.tif") as o:
            assert (o.transform, o.shape) == (transform, (h, w))   # written on the input grid
        out[name] = read(tmp_path / f"m_{name}.tif"), read(tmp_path / f"p_{name}.tif")
    m, p = out["north_up"]
    for name, flip in (("south_up", np.s_[::-1, :]), ("west_left", np.s_[:, ::-1])):
        assert np.array_equal(out[name][0][flip], m), name
        assert np.nanmax(np.abs(out[name][1][flip] - p)) < 1e-5, name
    if crs == "EPSG:32633":   # the north-up run is the exact model: the others are too
        expected = sigmoid(-(bands[0, :-1, :-1].astype(np.float64) + 15))
        assert np.abs(out["south_up"][1][::-1][1:, 1:] - expected).max() < 1e-5


def test_extent_on_a_south_up_grid(tmp_path, models):
    bands = random_db((200, 240), seed=4)
    north = write_raster(tmp_path / "north.tif", bands, transform=Affine(10, 0, 500000, 0, -10,
                                                                         5002000))
    south = write_raster(tmp_path / "south.tif", np.ascontiguousarray(bands[:, ::-1]),
                         transform=Affine(10, 0, 500000, 0, 10, 5000000))
    extent = (500500.0, 5000300.0, 501700.0, 5001250.0)   # columns 50..170, rows 75..170
    for name, src in (("north", north), ("south", south)):
        r = predict(PredictOptions([src], probability=str(tmp_path / f"p_{name}.tif"),
                                   mask=None, model=models["shifted"], extent=extent))
        assert (r["window"]["width"], r["window"]["height"]) == (120, 95)
        with rasterio.open(tmp_path / f"p_{name}.tif") as o:   # o.bounds assumes north-up
            (xa, ya), (xb, yb) = o.xy(0, 0), o.xy(o.height - 1, o.width - 1)
        (x0, x1), (y0, y1) = sorted((xa, xb)), sorted((ya, yb))
        assert (x0 - 5, y0 - 5, x1 + 5, y1 + 5) == pytest.approx(extent)  # pixel centres
    assert r["window"]["row_off"] == 30   # counted from the south edge
    assert np.nanmax(np.abs(read(tmp_path / "p_south.tif")[::-1]
                            - read(tmp_path / "p_north.tif"))) < 1e-5


def test_graph_with_fixed_input_size_gets_exactly_that(tmp_path):
    """A graph exported for 1 x 2 x 96 x 96 is fed 96-pixel tiles one at a time."""
    import onnx
    model = smoothed_threshold_model(kernel=5)
    for value_info in (model.graph.input[0], model.graph.output[0]):
        dims = value_info.type.tensor_type.shape.dim
        dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = 1, 96, 96
    onnx.save(model, tmp_path / "fixed.onnx")
    bands = random_db((150, 170), seed=8)
    src = write_raster(tmp_path / "in.tif", bands)
    r = predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                               model=str(tmp_path / "fixed.onnx")))
    assert (r["tiles"]["tile"], r["tiles"]["batch"]) == (96, 1)
    assert np.nanmax(np.abs(read(tmp_path / "p.tif") - reference_smoothed(bands))) < 1e-6


def _fixed_graph(path, batch, tile, margin: int = 2) -> str:
    """The 5 x 5 smoothed threshold model, its graph fixed at batch x 2 x tile x tile."""
    import onnx
    model = smoothed_threshold_model(raw_db_card("fixed", margin=margin), kernel=5)
    for value_info in (model.graph.input[0], model.graph.output[0]):
        dims = value_info.type.tensor_type.shape.dim
        dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = batch, tile, tile
    onnx.save(model, path)
    return str(path)


def test_a_fixed_tile_is_checked_against_the_runs_overlap_not_only_the_cards(tmp_path):
    """32 px tiles and margin 8: the default overlap (24) leaves no room, --overlap 16 does;
    the model was refused at load, by `card` and `predict --overlap 16` alike."""
    from tests.backend.conftest import run_cli
    path = _fixed_graph(tmp_path / "fixed32.onnx", 1, 32, margin=8)
    p = run_cli("card", path)
    assert p.returncode == 0, p.stderr
    assert ("the graph fixes tiles at 32 x 32 px, not the card's tile_size 256 + overlap: by "
            "default the model's fixed 32-pixel tiles leave no room for an overlap of 24; give "
            "an overlap of at most 16 (--overlap), or a smaller tiling.margin") in p.stdout
    bands = random_db((70, 50), seed=8)
    src = write_raster(tmp_path / "in.tif", bands)
    with pytest.raises(UsageError, match=f"^{tmp_path}/fixed32.onnx: the model's fixed 32-pixel "
                                         "tiles leave no room for an overlap of 24; give an "
                                         "overlap of at most 16$"):
        predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None, model=path))
    r = predict(PredictOptions([src], probability=str(tmp_path / "p.tif"), mask=None,
                               model=path, overlap=16))
    assert (r["tiles"]["tile"], r["tiles"]["overlap"]) == (32, 16)
    assert np.nanmax(np.abs(read(tmp_path / "p.tif") - reference_smoothed(bands))) < 1e-6


def test_a_margin_no_overlap_can_fit_into_a_fixed_tile_names_the_card_field(tmp_path):
    path = _fixed_graph(tmp_path / "fixed32.onnx", 1, 32, margin=9)
    with pytest.raises(CardError, match=r"fixed32\.onnx: model does not match its card: the "
                                        r"graph's fixed 32-pixel tiles, overlapping by twice "
                                        r"tiling\.margin \(9\), leave cells under 16 px; give a "
                                        r"margin of at most 8$"):
        OnnxModel(path, "cpu")


def test_what_a_graph_fixes_is_said_by_card_and_predict(tmp_path):
    """A fixed batch of 4 ran --batch-size 2 as 4 without a word; `card` printed the card's
    256 px tiles for a graph fixed at 128; --tile-size 256 named neither the model nor a
    size that fits."""
    from tests.backend.conftest import run_cli
    path = _fixed_graph(tmp_path / "fixed.onnx", 4, 128)
    p = run_cli("card", path)
    assert p.returncode == 0, p.stderr
    assert ("the graph fixes tiles at 128 x 128 px, not the card's tile_size 256 + overlap: "
            "cells of 112 px, overlap 16\n  the graph fixes the batch size at 4 (--batch-size is "
            "not used)") in p.stdout
    src = write_raster(tmp_path / "in.tif", random_db((40, 30)))
    said = Collect()
    predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=path, batch_size=2), said)
    assert "batch size 2 taken as 4: the graph fixes its batch at 4 tiles" in said.infos
    with pytest.raises(UsageError, match=f"^{tmp_path}/fixed.onnx: the model only takes 128 x 128 "
                                         "tiles; tile size 256 \\+ overlap 12 does not fit; the "
                                         "largest tile size that fits is 112, with --overlap 16: "
                                         "give both, or leave --tile-size out$"):
        predict(PredictOptions([src], mask=str(tmp_path / "m2.tif"), model=path, tile_size=256))


@pytest.mark.parametrize("stride, overlap, batch, read_columns", [
    (160, 144, 1, 400),    # two windows per tile row; each keeps its overlap rows for the next
    (160, 144, 3, 2048),   # batches of 3 cut from one window per tile row
    (64, 144, 2, 2048),    # overlap wider than the stride: nothing kept, every window read whole
])
def test_tile_batches_equal_tiles_read_one_by_one(tmp_path, monkeypatch, stride, overlap,
                                                  batch, read_columns):
    """Windows, kept overlap rows and batch cutting change nothing: every tile is
    exactly the tile read, converted, normalised and filled on its own (the bundled
    model's card clips and scales; the input is linear power with NaN, inf and nodata)."""
    monkeypatch.setattr(engine, "READ_COLUMNS", read_columns)
    bands = (10 ** (random_db((530, 610), nan_frac=0.01) / 10)).astype(np.float32)
    bands[0, 100:103, 200:300] = np.inf
    bands[1, 300:340, 17:19] = -1.0   # the file's nodata value
    src = write_raster(tmp_path / "in.tif", bands, nodata=-1.0)
    model = OnnxModel(str(REPO / "resources" / "models" / "sarflood-student-compact.onnx"), "cpu")
    card = model.card
    plan = plan_tiles(530, 610, card.margin, stride, overlap, card.tile_size,
                      card.size_multiple, model.fixed_tile)
    assert plan.rows > 2 and plan.cols > 2
    conversions = [("linear", "dB")] * 2
    s, m, t = plan.stride, plan.margin, plan.tile
    with rasterio.open(src) as ds:
        reader = WindowReader([(ds, 1, -1.0), (ds, 2, -1.0)], 0, 0)
        job = GridJob(model=model, reader=reader, conversions=conversions, plan=plan,
                      batch=batch, tta=False)
        seen = 0
        for r, c0, c1, x, valid in engine.tile_batches(job, threading.Event()):
            assert x.flags.c_contiguous and x.shape == (c1 - c0, 2, t, t)
            for i, c in enumerate(range(c0, c1)):
                f = engine.FILL_DISTANCE
                one = reader.read(r * s - m - f, r * s - m + t + f, c * s - m - f,
                                  c * s - m + t + f)
                for k in range(2):
                    convert(one[k], "linear", "dB")
                want_x, want_valid = model.normalize(one[None])
                engine.fill_near_data(want_x[0], want_valid[0], f)
                assert np.array_equal(x[i], want_x[0, :, f:-f, f:-f]), (r, c)
                assert np.array_equal(valid[i], want_valid[0, f:-f, f:-f]), (r, c)
                seen += 1
    assert seen == plan.tiles
    assert job.clock.fields().keys() >= {"read", "normalise", "batch"}


def test_windows_widen_from_one_batch_and_the_first_row_is_read_once(tmp_path, monkeypatch):
    """A tile row's windows are 1, 2, 4 ... batches wide up to READ_COLUMNS, so the
    model's first batch waits for one batch's read only; the first row, whose no data
    is not known yet, reads each window once, wide enough for the fill (it read a
    window with no data twice); the row below a clean window reads it at its size."""
    monkeypatch.setattr(engine, "READ_COLUMNS", 640)   # 4 tiles of stride 160
    bands = random_db((530, 2600), seed=3)
    bands[:, :, :40] = np.nan                             # a no-data edge down every row
    src = write_raster(tmp_path / "in.tif", bands)
    model = OnnxModel(str(REPO / "resources" / "models" / "sarflood-student-compact.onnx"), "cpu")
    card = model.card
    plan = plan_tiles(530, 2600, card.margin, 160, 144, card.tile_size, card.size_multiple,
                      model.fixed_tile)
    with rasterio.open(src) as ds:
        reader = WindowReader([(ds, 1, None), (ds, 2, None)], 0, 0)
        reads = []
        read = reader.read
        monkeypatch.setattr(reader, "read", lambda r0, r1, c0, c1: reads.append(
            (r0, r1, c0, c1)) or read(r0, r1, c0, c1))
        job = GridJob(model=model, reader=reader, conversions=[("dB", "dB")] * 2, plan=plan,
                      batch=1, tta=False)
        for _ in engine.tile_batches(job, threading.Event()):
            pass
    s, m, t, f = plan.stride, plan.margin, plan.tile, engine.FILL_DISTANCE
    starts = [0, 1, 3, 7, 11, 15]
    assert plan.cols == 17
    ends = [*starts[1:], plan.cols]
    assert reads[:len(starts)] == [(-m - f, t - m + f, w0 * s - m - f, (w1 - 1) * s - m + t + f)
                                   for w0, w1 in zip(starts, ends)]
    row1 = [r for r in reads if r[0] in (s - m + plan.overlap - f, s - m + plan.overlap)]
    assert row1[0][2] == -m - f                     # the no-data edge: wide at once
    assert row1[1][2] == 1 * s - m                  # a clean window: at its size
    assert len(row1) == len(starts)


def test_the_warm_up_call_changes_nothing_and_never_outlives_predict(tmp_path, models):
    """predict starts the model's first call on zeros while it opens the inputs."""
    x = np.random.default_rng(0).random((2, 2, 40, 40), dtype=np.float32)
    cold = OnnxModel(models["threshold"], "cpu").infer(x)
    warmed = OnnxModel(models["threshold"], "cpu")
    warmed.warm_up(2, 40)
    assert np.array_equal(warmed.infer(x), cold)
    # a run that fails at once on its input still waits for the bundled model's
    # warm-up (tens of ms): no thread may be left inside ONNX Runtime
    with pytest.raises(InputError, match="missing.tif"):
        predict(PredictOptions([str(tmp_path / "missing.tif")], mask=str(tmp_path / "m.tif")))
    assert not [t for t in threading.enumerate() if t.name == "sarflood-warm-up"]


@pytest.mark.parametrize("sx, sy", [(0.7071, 1.0007), (1.3, 1.0007), (2.0, 2.0), (0.5, 0.5)])
def test_the_way_back_samples_the_model_grid_where_it_should(tmp_path, sx, sy):
    """The second pass reads the model-grid file at the input's pixels, bilinear (numpy
    up to a scale of 1.05, GDAL's read-time resampling beyond). On grids that scale
    the file (by 1.0007, as 10 m-by-degrees rows are against 10 m, or by 2 for a 20 m
    input) a plane comes back as the plane at each pixel's centre, in wide windows and
    in the one- or two-pixel ones at a row's end: no window shifts its samples. (GDAL's
    read-time *average* failed a check like this: it mixed in the wrong rows.)"""
    h, w = 300, 400
    rows, cols = np.mgrid[0:h, 0:w]
    src = write_raster(tmp_path / "mid.tif", (0.37 * cols + 0.61 * rows).astype(np.float32),
                       crs="EPSG:4326", transform=Affine(1.0, 0, 10.0, 0, -1.0, 45.0))
    ow, oh = int((w - 12) / sx), int((h - 12) / sy)
    twin = Affine(sx, 0, 15.3, 0, -sy, 39.3)   # inside the file with a margin, as the engine's
    windows = [Window(c, r, min(256, ow - c), min(256, oh - r))
               for r in range(0, oh, 256) for c in range(0, ow, 256)]
    windows += [Window(ow - 1, 0, 1, oh), Window(ow - 2, 17, 2, 40), Window(100, oh - 1, 3, 1)]
    with rasterio.open(src) as mid:
        to_mid = ~mid.transform @ twin
        for win in windows:
            got = read_scaled(mid, to_mid, win)[0]
            i, j = np.mgrid[win.row_off:win.row_off + win.height,
                            win.col_off:win.col_off + win.width]
            x, y = to_mid @ (j + 0.5, i + 0.5)    # centres, in the file's pixels
            # within a tenth of a pixel (GDAL's widened kernel, which its warper shares, is
            # 0.06 px off at a ratio of 1.3; a shifted window is off by a third or more)
            assert np.abs(got - (0.37 * (x - 0.5) + 0.61 * (y - 0.5))).max() < 0.037, win


@pytest.mark.parametrize("fill", [-9999.0, -200.0])
def test_an_untagged_fill_value_is_left_out_of_a_resampled_read(tmp_path, models, fill):
    """A fill value with no nodata tag: the tiles read it as no data, but the resampled
    path averages first, and a fill mixed into its neighbours came out as plausible dark
    backscatter (water): 584 mask pixels of the Spain chip changed, 300 rows deep, for a
    fill over its top 50 rows. Now the run gives the same file with NaN there its mask."""
    bands = random_db((200, 180), seed=4)
    bands[:, :30] = np.nan
    bands[:, 90:95, 40:120] = np.nan
    deg = 8.983e-05   # 7.7 x 10 m at 40 N: resampled
    masks = {}
    for name, value, nodata in (("nan", np.nan, float("nan")), ("fill", fill, None)):
        b = np.where(np.isnan(bands), np.float32(value), bands)
        src = write_raster(tmp_path / f"{name}.tif", b, crs="EPSG:4326", nodata=nodata,
                           transform=Affine(deg, 0, 10.0, 0, -deg, 40.1))
        r = predict(PredictOptions([src], mask=str(tmp_path / f"m_{name}.tif"),
                                   probability=str(tmp_path / f"p_{name}.tif"),
                                   model=models["smoothed"]))
        assert r["resampled"]
        masks[name] = read(tmp_path / f"m_{name}.tif"), read(tmp_path / f"p_{name}.tif")
    assert np.array_equal(masks["fill"][0], masks["nan"][0])
    p_fill, p_nan = masks["fill"][1], masks["nan"][1]
    assert np.array_equal(np.isnan(p_fill), np.isnan(p_nan))
    # the NaN-tagged file takes GDAL's read-time average, the untagged one the warper:
    # equal within 2e-6 (backend/README.md, Grid)
    assert np.nanmax(np.abs(p_fill - p_nan)) < 1e-5


@pytest.mark.parametrize("slope", [0.3, 1.3])
def test_the_no_data_fill_by_strips_is_gdals_fill_of_the_whole(slope):
    """fill_near_data gives GDAL only the columns near data, strip by strip: the result
    must be GDAL's fill of the whole array (a scene's diagonal border, a hole, a band
    across the top, scattered pixels; no data in one band only)."""
    from rasterio.fill import fillnodata
    rng = np.random.default_rng(4)
    x = rng.normal(0.5, 0.2, (2, 300, 420)).astype(np.float32)
    yy, xx = np.mgrid[0:300, 0:420]
    bad = (xx < 30 + slope * (300 - yy)) | ((yy - 150) ** 2 + (xx - 330) ** 2 < 40 ** 2)
    bad[:12] = True
    bad |= rng.random(bad.shape) < 0.003
    x[0, rng.random(bad.shape) < 0.002] = np.nan
    valid = ~bad & np.isfinite(x).all(axis=0)
    x = np.nan_to_num(x)
    whole = np.stack([fillnodata(b.copy(), mask=valid.astype(np.uint8),
                                 max_search_distance=engine.FILL_DISTANCE,
                                 smoothing_iterations=0) for b in x])
    engine.fill_near_data(x, valid, engine.FILL_DISTANCE)
    assert np.array_equal(x, whole)
    assert not np.array_equal(x[:, ~valid], 0 * x[:, ~valid])   # it did fill something


def test_a_loaded_model_serves_many_runs_without_a_new_session(tmp_path, models, monkeypatch):
    """`training evaluate --model` ran predict per chip, each starting its own session
    (seconds on CUDA); given one, predict uses it and its output is a fresh run's."""
    src = write_raster(tmp_path / "in.tif", random_db((120, 90), seed=2, nan_frac=0.01))
    fresh = predict(PredictOptions([src], mask=str(tmp_path / "a.tif"),
                                   probability=str(tmp_path / "pa.tif"), model=models["smoothed"]))
    loaded = OnnxModel(models["smoothed"], "cpu")

    def no_new_session(*args, **kwargs):
        raise AssertionError("predict started a session of its own")

    monkeypatch.setattr(engine, "OnnxModel", no_new_session)
    for name in ("b", "c"):
        again = predict(PredictOptions([src], mask=str(tmp_path / f"{name}.tif"),
                                       probability=str(tmp_path / f"p{name}.tif")), model=loaded)
        assert again["model_path"] == fresh["model_path"]
        assert np.array_equal(read(tmp_path / f"{name}.tif"), read(tmp_path / "a.tif"))
        assert np.array_equal(read(tmp_path / f"p{name}.tif"), read(tmp_path / "pa.tif"),
                              equal_nan=True)


@pytest.mark.parametrize("south_up", [False, True])
def test_every_pixel_with_data_is_mapped_on_a_grid_of_another_shape(models, tmp_path, south_up):
    """0.0001 degree pixels at 60 N (5.6 x 11.1 m, finer than the model's 10 m one way and
    coarser the other) beside a slanted no-data edge: pixels with data whose centre lay in
    a model pixel without were written as no data."""
    n = 320
    x = random_db((n, n), seed=8)
    gone = np.zeros((n, n), bool)
    for i in range(n):
        gone[i, n - 60 - i // 3:] = True
    gone[:, :17] = True
    x[:, gone] = np.nan
    transform = Affine(0.0001, 0, 10.0, 0, -0.0001, 60.1)
    if south_up:
        x, gone = x[:, ::-1], gone[::-1]
        transform = Affine(0.0001, 0, 10.0, 0, 0.0001, 60.1 - n * 0.0001)
    path = write_raster(tmp_path / "s.tif", x, crs="EPSG:4326", transform=transform)
    r = predict(PredictOptions([path], mask=str(tmp_path / "m.tif"), model=models["threshold"]))
    assert r["resampled"]
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
    np.testing.assert_array_equal(mask == 255, gone)
