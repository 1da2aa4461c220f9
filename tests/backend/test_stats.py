"""``stats``: area figures of a mask on disk, against areas computed here from the ellipsoid."""
import json

import numpy as np
import pytest
import rasterio

from backend import stats
from backend.stats import mask_stats
from tests.backend.areas import metres_per_degree_exact, row_areas_m2
from tests.backend.conftest import listing, run_cli, write_raster

DEG = 0.002   # about 220 m north-south


def _mask(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = (rng.random(shape) < 0.3).astype(np.uint8)
    m[: shape[0] // 3][rng.random((shape[0] // 3, shape[1])) < 0.5] = 1   # wetter north
    m[rng.random(shape) < 0.05] = 255
    m[-5:] = 2   # a flood-extent class: valid, not water
    return m


def test_geographic_mask_areas_are_exact_per_row(tmp_path):
    """600 rows of 0.002 deg span 1.2 deg of latitude (50.6 N to 49.4 N)."""
    m = _mask((600, 300))
    path = write_raster(tmp_path / "mask.tif", m, crs="EPSG:4326", pixel=DEG,
                        origin=(5.0, 50.6), nodata=255, descriptions=None)
    p = run_cli("stats", path, "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    area = row_areas_m2(50.6, DEG, 600)
    water = (m == 1).sum(axis=1) @ area / 1e6
    valid = (m != 255).sum(axis=1) @ area / 1e6
    assert r["water_area_km2"] == pytest.approx(water, rel=1e-6)
    assert r["valid_area_km2"] == pytest.approx(valid, rel=1e-6)
    assert r["water_fraction"] == pytest.approx(water / valid, rel=1e-5)
    assert (r["valid_pixels"], r["water_pixels"]) == (int((m != 255).sum()), int((m == 1).sum()))
    assert r["value_counts"] == {str(v): int((m == v).sum()) for v in (0, 1, 2, 255)}
    # one pixel area at the centre latitude is off by more than the test's tolerance
    mx, my = metres_per_degree_exact(50.0)
    assert abs((m == 1).sum() * DEG * DEG * mx * my / 1e6 / water - 1) > 2e-3


def test_projected_mask_and_strips_of_any_height(tmp_path, monkeypatch):
    m = _mask((257, 131), seed=1)
    path = write_raster(tmp_path / "utm.tif", m, nodata=255, descriptions=None)
    whole = mask_stats(path)
    assert whole["water_area_km2"] == pytest.approx((m == 1).sum() * 100 / 1e6, rel=1e-9)
    assert whole["valid_area_km2"] == pytest.approx((m != 255).sum() * 100 / 1e6, rel=1e-9)
    monkeypatch.setattr(stats, "STRIP_BYTES", 131 * 7)   # 7 rows at a time
    strips = mask_stats(path)
    for key in ("valid_pixels", "water_pixels", "valid_area_km2", "water_area_km2",
                "value_counts"):
        assert strips[key] == whole[key]


def test_another_nodata_value_is_no_data(tmp_path):
    m = np.array([[0, 1, 7], [7, 1, 1]], np.uint8)
    path = write_raster(tmp_path / "m.tif", m, nodata=7, descriptions=None)
    r = mask_stats(path)
    assert (r["valid_pixels"], r["water_pixels"]) == (4, 3)
    assert r["value_counts"] == {"0": 1, "1": 3, "7": 2}


def test_progress_json_ends_with_the_result(tmp_path):
    path = write_raster(tmp_path / "m.tif", _mask((64, 64)), nodata=255, descriptions=None)
    p = run_cli("stats", path, "--progress", "json")
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and events[-1]["event"] == "result"
    assert events[-1]["water_pixels"] == int((_mask((64, 64)) == 1).sum())


@pytest.mark.parametrize("case, message", [
    ("float", "{path}: expected a water mask, one uint8 band (0 dry, 1 water, 255 no data); "
              "found 1 band(s) of float32"),
    ("two", "{path}: expected a water mask, one uint8 band (0 dry, 1 water, 255 no data); "
            "found 2 band(s) of uint8"),
    ("missing", "{path}: file not found"),
    ("plain", "{path}: has no georeferencing"),
])
def test_bad_masks_are_one_line_and_exit_1(tmp_path, case, message):
    path = tmp_path / f"{case}.tif"
    if case == "float":
        write_raster(path, np.zeros((4, 4), np.float32), descriptions=None)
    elif case == "two":
        write_raster(path, np.zeros((2, 4, 4), np.uint8), nodata=255, descriptions=None)
    elif case == "plain":
        write_raster(path, np.zeros((4, 4), np.uint8), crs=None, nodata=255, descriptions=None)
    before = listing(tmp_path)
    p = run_cli("stats", str(path), "--json")
    assert p.returncode == 1 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: " + message.format(path=path)), line
    assert listing(tmp_path) == before


@pytest.mark.parametrize("shape", [(64, 64), (33, 17)])   # an even and an odd pixel count
def test_probability_histogram_bins_every_value(shape):
    """The histogram the plugin's threshold slider reads: bin i holds (i/100, (i+1)/100] as
    float32 compares them, so that the bins from k on hold exactly the water of the mask at
    k/100, with every edge itself (a tie with the threshold: dry) and its float32 neighbours
    among the values; 0 falls in the first bin, 1.0 in the last, and no data in none."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    from backend.grid import Grid
    from backend.sink import HIST_BINS, AreaStats, mask_from_probability, small_counts

    rng = np.random.default_rng(3)
    p = rng.random(shape, dtype=np.float32)
    edges = (np.arange(1, HIST_BINS) / HIST_BINS).astype(np.float32)   # as the mask has them
    near = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, 1)])
    p.flat[:4 + near.size] = np.concatenate([[0.0, 1.0, 0.995, np.nan], near])
    grid = Grid(CRS.from_epsg(32630), Affine(10, 0, 500000, 0, -10, 4e6), shape[1], shape[0])
    area = AreaStats(grid)
    area.add(0, 0, mask_from_probability(p, 0.5), p)
    valid = p[np.isfinite(p)]
    expected = np.bincount(np.searchsorted(edges, valid), minlength=HIST_BINS) * 100.0
    assert np.array_equal(area.hist_area_m2, expected)
    assert expected[0] >= 100 and expected[-1] >= 200   # 0; 1.0 and 0.995
    for k in range(1, HIST_BINS):
        water = np.count_nonzero(mask_from_probability(p, k / HIST_BINS) == 1) * 100.0
        assert area.hist_area_m2[k:].sum() == water, k
    q = rng.integers(0, HIST_BINS + 1, shape).astype(np.uint8)
    assert np.array_equal(small_counts(q, HIST_BINS + 1), np.bincount(q.ravel(), minlength=101))


def test_histogram_of_uint8_codes_is_that_of_the_probability_finalize_reads():
    """A uint8 probability is binned by its codes as finalize reads them back: code 125 is
    0.5 exactly, dry at 0.5, though the probability it was rounded from may be above."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    from backend.grid import Grid
    from backend.sink import AreaStats, mask_from_probability, probability_to_u8, u8_to_probability

    p = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    p[0, :8] = [0.5, 0.501, 0.499, 0.02, 0.0201, np.nan, 0.3, 0.3 + 1e-4]
    codes = probability_to_u8(p)
    grid = Grid(CRS.from_epsg(32630), Affine(10, 0, 500000, 0, -10, 4e6), 64, 64)
    from_codes, from_read = AreaStats(grid), AreaStats(grid)
    mask = mask_from_probability(p, 0.5)
    from_codes.add(0, 0, mask, codes)
    from_read.add(0, 0, mask, u8_to_probability(codes))
    assert np.array_equal(from_codes.hist_area_m2, from_read.hist_area_m2)
    assert from_codes.hist_area_m2.sum() == 100.0 * (p.size - 1)


@pytest.mark.parametrize("crs, origin", [
    ("EPSG:3413", (-2500000.0, 0.0)),          # NSIDC polar stereographic at 67 N: scale 1.009
    ("EPSG:3413", (-3700000.0, 150000.0)),     # the same at 55-59 N: 1.06-1.08, across rows too
    ("EPSG:32633", (-150000.0, 5500000.0)),    # UTM 33N used 12 degrees west of its meridian
])
def test_areas_on_projected_grids_off_true_scale(tmp_path, crs, origin):
    """Within 1 % of true scale in length a projected grid's units were taken as metres (up
    to 2 % off in area), and beyond it areas were measured at each row's middle column
    (scale also changes along a row): 0.8-1.8 % off."""
    from rasterio.transform import from_origin
    from tests.backend.areas import pixel_areas_m2

    h, w, pixel = 400, 600, 500.0
    transform = from_origin(*origin, pixel, pixel)
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 3] = 1          # water in the western third
    mask[h - 40:] = 255
    path = tmp_path / "mask.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       nodata=255, crs=crs, transform=transform) as ds:
        ds.write(mask, 1)
    areas = pixel_areas_m2(crs, transform, np.arange(h), np.arange(w))
    got = mask_stats(str(path))
    assert got["water_area_km2"] == pytest.approx(areas[mask == 1].sum() / 1e6, rel=1e-3)
    assert got["valid_area_km2"] == pytest.approx(areas[mask != 255].sum() / 1e6, rel=1e-3)
