"""``correct`` and ``finalize --corrections``: an analyst's polygons burnt into a mask, exactly."""
import json
import re

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from backend.corrections import correct_mask
from backend.errors import InputError
from backend.finalize import finalize
from tests.backend.conftest import Collect, listing, run_cli, write_raster

DEG = 0.001   # pixel of the geographic test grid


def _box(x0, y0, x1, y1):
    return [[[x0, y1], [x1, y1], [x1, y0], [x0, y0], [x0, y1]]]


def _geojson(path, *features):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": geometry}
        for geometry, props in features]}))
    return str(path)


def _polygon(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": _box(x0, y0, x1, y1)}


@pytest.fixture
def geo_mask(tmp_path):
    """20 x 30 mask on EPSG:4326, 0.001 deg pixels from (10.0 E, 45.0 N); a no-data hole."""
    rng = np.random.default_rng(1)
    mask = (rng.random((20, 30)) < 0.3).astype(np.uint8)
    mask[7, 3] = 255
    path = write_raster(tmp_path / "mask.tif", mask, crs="EPSG:4326", pixel=DEG,
                        origin=(10.0, 45.0), nodata=255, descriptions=None)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(SARFLOOD_MODEL="test-model", SARFLOOD_THRESHOLD="0.5")
    return path, mask


def _columns_rows(c0, r0, c1, r1):
    """Lon/lat box whose edges are the pixel edges of columns c0..c1-1, rows r0..r1-1."""
    return _polygon(10.0 + c0 * DEG, 45.0 - r1 * DEG, 10.0 + c1 * DEG, 45.0 - r0 * DEG)


def test_water_and_dry_polygons_set_exactly_their_pixels(geo_mask, tmp_path):
    path, mask = geo_mask
    fixes = _geojson(tmp_path / "fix.geojson",
                     (_columns_rows(2, 3, 7, 9), {"water": True}),
                     (_columns_rows(5, 6, 10, 11), {"water": 0}))   # later: wins the overlap
    want = mask.copy()
    want[3:9, 2:7] = 1
    want[6:11, 5:10] = 0
    want[mask == 255] = 255                                           # no data stays
    r = correct_mask(path, fixes, str(tmp_path / "fixed.tif"))
    with rasterio.open(tmp_path / "fixed.tif") as ds:
        got, tags = ds.read(1), ds.tags()
    np.testing.assert_array_equal(got, want)
    assert r["corrected_pixels"] == int(np.count_nonzero(got != mask))
    assert r["water_pixels"] == int((want == 1).sum()) and r["valid_pixels"] == want.size - 1
    assert tags["SARFLOOD_MODEL"] == "test-model"                     # provenance kept
    assert tags["SARFLOOD_CORRECTIONS"].startswith("2 polygons (1 water, 1 dry) from ")


def test_projected_mask_gets_the_polygons_reprojected(tmp_path):
    """A UTM mask, corrections in lon/lat: the box of pixels 10..19 x 4..13 becomes water."""
    mask = np.zeros((30, 40), np.uint8)
    path = write_raster(tmp_path / "utm.tif", mask, nodata=255, descriptions=None)  # EPSG:32633
    with rasterio.open(path) as ds:
        t, crs = ds.transform, ds.crs
    # corners on pixel edges, half a pixel (5 m) from the nearest pixel centre
    xs = [t.c + 10 * t.a, t.c + 20 * t.a, t.c + 20 * t.a, t.c + 10 * t.a]
    ys = [t.f + 4 * t.e, t.f + 4 * t.e, t.f + 14 * t.e, t.f + 14 * t.e]
    lon, lat = warp_transform(crs, "EPSG:4326", xs, ys)
    ring = [list(p) for p in zip(lon, lat)] + [[lon[0], lat[0]]]
    fixes = _geojson(tmp_path / "fix.geojson",
                     ({"type": "MultiPolygon", "coordinates": [[ring]]}, {"water": 1}))
    correct_mask(path, fixes, str(tmp_path / "fixed.tif"))
    want = mask.copy()
    want[4:14, 10:20] = 1
    with rasterio.open(tmp_path / "fixed.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), want)


def test_a_crs_member_names_the_polygons_crs(tmp_path):
    """GDAL and QGIS write GeoJSON in a projected CRS with the pre-RFC 7946 crs member."""
    mask = np.zeros((30, 40), np.uint8)
    path = write_raster(tmp_path / "utm.tif", mask, nodata=255, descriptions=None)  # EPSG:32633
    with rasterio.open(path) as ds:
        t = ds.transform
    box = {"type": "Polygon", "coordinates": _box(t.c + 10 * t.a, t.f + 14 * t.e,
                                                  t.c + 20 * t.a, t.f + 4 * t.e)}
    fix = tmp_path / "fix.geojson"
    fix.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "features": [{"type": "Feature", "properties": {"water": 1}, "geometry": box}]}))
    correct_mask(path, str(fix), str(tmp_path / "fixed.tif"))
    want = mask.copy()
    want[4:14, 10:20] = 1
    with rasterio.open(tmp_path / "fixed.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), want)


def test_finalize_burns_the_corrections_into_the_mask_it_writes(geo_mask, tmp_path):
    path, _ = geo_mask
    rng = np.random.default_rng(2)
    prob = rng.random((20, 30)).astype(np.float32)
    prob[0, 0] = np.nan
    src = write_raster(tmp_path / "prob.tif", prob, crs="EPSG:4326", pixel=DEG,
                       origin=(10.0, 45.0), descriptions=None)
    fixes = _geojson(tmp_path / "fix.geojson", (_columns_rows(0, 0, 4, 4), {"water": False}))
    r = finalize(src, 0.5, str(tmp_path / "final.tif"), corrections=fixes)
    want = np.where(prob > 0.5, 1, 0).astype(np.uint8)
    want[:4, :4] = 0
    want[0, 0] = 255
    with rasterio.open(tmp_path / "final.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), want)
        assert "1 polygons (0 water, 1 dry)" in ds.tags()["SARFLOOD_CORRECTIONS"]
    assert r["corrected_pixels"] == int(((prob[:4, :4] > 0.5) & np.isfinite(prob[:4, :4])).sum())
    # the no-data pixel under the polygon was not said (the dock's Accept runs finalize)
    assert r["nodata_pixels_left"] == 1


def test_polygons_off_the_mask_are_warned_about(geo_mask, tmp_path):
    path, mask = geo_mask
    # latitude and longitude swapped: a common slip, far off the mask
    fixes = _geojson(tmp_path / "fix.geojson", (_polygon(44.99, 10.0, 45.0, 10.01), {"water": 1}))
    reporter = Collect()
    r = correct_mask(path, fixes, str(tmp_path / "fixed.tif"), reporter=reporter)
    assert r["corrected_pixels"] == 0
    assert reporter.warnings == [f"{fixes}: 1 of 1 polygons lie outside the mask and correct "
                                 "nothing (feature 1; their coordinates are read in longitude, "
                                 "latitude on WGS 84)"]


def test_polygons_off_the_mask_are_named_by_layer_and_number_without_a_crs_hint(geo_mask, tmp_path):
    """The warning named the generated file and said the coordinates were read in longitude,
    latitude on WGS 84 even of a file that declared its CRS."""
    path, mask = geo_mask
    far = {"type": "Feature", "properties": {"water": 1},
           "geometry": _polygon(1.0e6, 5.0e6, 1.1e6, 5.1e6)}
    near = {**far, "geometry": _polygon(1113752, 5619160, 1114865, 5620734)}   # on the mask
    fixes = tmp_path / "final.corrections.geojson"
    fixes.write_text(json.dumps({
        "type": "FeatureCollection", "name": "Corrections layer 'fixes'",
        "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
        "features": [{**far, "id": 2}, {**near, "id": 3}, {**far, "id": 5}]}))
    reporter = Collect()
    correct_mask(path, str(fixes), str(tmp_path / "fixed.tif"), reporter=reporter)
    assert reporter.warnings == [f"Corrections layer 'fixes' ({fixes}): 2 of 3 polygons lie outside "
                                 "the mask and correct nothing (features 2, 5)"]


@pytest.mark.parametrize("content, message", [
    (None, "{fix}: file not found"),
    ("not json", "{fix}: not a GeoJSON file"),
    ('{"type": "Feature"}', "{fix}: expected a GeoJSON FeatureCollection of polygons"),
    ({"type": "Point", "coordinates": [10.0, 45.0]}, "{fix}: feature 1 is a Point; corrections are polygons"),
    ({"water": "yes"}, "{fix}: feature 1: property 'water' is 'yes'; expected true or 1"),
    ({}, "{fix}: feature 1: property 'water' is None"),
    # UTM metres in a file taken as WGS 84 (a layer whose CRS was lost): was PROJ's
    # "utm: Invalid latitude" as an internal error
    ({"type": "Polygon", "coordinates": [[[500000, 4649776], [500100, 4649776],
                                          [500100, 4649876], [500000, 4649776]]]},
     "{fix}: feature 1: coordinates (500000, 4.64978e+06, 500100, 4.64988e+06) lie outside "
     "longitude -180..180 and latitude -90..90"),
    # JSON of the wrong shape: tracebacks (AttributeError), or for strings as coordinates a
    # segmentation fault in GDAL
    ('{"type": "FeatureCollection", "crs": "EPSG:4326", "features": []}',
     '{fix}: its crs member is not of the form {{"type": "name"'),
    ('{"type": "FeatureCollection", "features": {"0": {}}}', "{fix}: its features member is not an array"),
    ('{"type": "FeatureCollection", "features": [1]}', "{fix}: feature 1 is not a GeoJSON object"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"water": 1}, '
     '"geometry": "POLYGON ((10 45, 10.001 45, 10.001 44.999, 10 45))"}]}',
     "{fix}: feature 1 is a feature without a GeoJSON geometry"),
    ({"type": "Polygon", "coordinates": [[["10.0", "45.0"], ["10.002", "45.0"], ["10.002", "44.998"],
                                          ["10.0", "45.0"]]]},
     "{fix}: feature 1: its coordinates are not rings of four or more [x, y] number positions"),
    ({"type": "Polygon", "coordinates": [[[10.0, 45.0], [10.002, 45.0], [10.0, 45.0]]]},
     "{fix}: feature 1: its coordinates are not rings of four or more"),
    ({"type": "MultiPolygon", "coordinates": "x"}, "{fix}: feature 1: its coordinates are not a MultiPolygon's"),
])
def test_bad_corrections_are_one_line_and_no_output(geo_mask, tmp_path, content, message):
    path, _ = geo_mask
    fix = tmp_path / "fix.geojson"
    if isinstance(content, str):
        fix.write_text(content)
    elif isinstance(content, dict) and "coordinates" in content:
        _geojson(fix, (content, {"water": 1}))
    elif isinstance(content, dict):
        _geojson(fix, (_columns_rows(0, 0, 2, 2), content))
    before = listing(tmp_path)
    with pytest.raises(InputError) as info:
        correct_mask(path, str(fix), str(tmp_path / "fixed.tif"))
    assert message.format(fix=fix) in str(info.value)
    assert listing(tmp_path) == before


def test_properties_that_are_not_an_object_are_refused(geo_mask, tmp_path):
    path, _ = geo_mask
    fix = _geojson(tmp_path / "fix.geojson", (_columns_rows(0, 0, 2, 2), [True]))
    with pytest.raises(InputError, match="feature 1: its properties are not a JSON object"):
        correct_mask(path, fix, str(tmp_path / "fixed.tif"))


def test_a_byte_order_mark_is_read_and_a_polygon_of_no_area_is_skipped_with_a_warning(geo_mask, tmp_path):
    """Notepad's UTF-8 byte-order mark made the file 'not a GeoJSON file' (GDAL and QGIS read
    it); a polygon of no area printed rasterio's own warning, naming none of ours."""
    path, mask = geo_mask
    flat = {"type": "Polygon", "coordinates": [[[10.0, 45.0], [10.002, 45.0], [10.0, 45.0], [10.0, 45.0]]]}
    plain = tmp_path / "plain.geojson"
    _geojson(plain, (flat, {"water": 0}), (_columns_rows(2, 3, 7, 9), {"water": 1}))
    marked = tmp_path / "marked.geojson"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    reporter = Collect()
    r = correct_mask(path, str(marked), str(tmp_path / "fixed.tif"), reporter=reporter)
    expected = mask.copy()
    expected[3:9, 2:7][expected[3:9, 2:7] != 255] = 1
    with rasterio.open(tmp_path / "fixed.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), expected)
    assert r["corrected_pixels"] == int(((mask[3:9, 2:7] != 255) & (mask[3:9, 2:7] != 1)).sum())
    assert reporter.warnings == [f"{marked}: feature 1: its polygon has no area, and corrects nothing",
                                 "1 pixels under the corrections are no data and were left so "
                                 "(nothing was observed there to correct)"]


def test_cli_correct_reports_and_refuses_to_overwrite(geo_mask, tmp_path):
    path, _ = geo_mask
    fixes = _geojson(tmp_path / "fix.geojson", (_columns_rows(2, 3, 7, 9), {"water": True}))
    out = tmp_path / "fixed.tif"
    p = run_cli("correct", path, "--corrections", fixes, "--out", str(out), "--compress", "deflate",
                "--progress", "json")
    assert p.returncode == 0, p.stdout + p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    with rasterio.open(path) as src, rasterio.open(out) as ds:
        before, after = src.read(1), ds.read(1)
        assert ds.profile["compress"] == "deflate"
    assert events[-1]["event"] == "result"
    assert events[-1]["corrected_pixels"] == int((before != after).sum()) > 0
    written = out.read_bytes()
    again = run_cli("correct", path, "--corrections", fixes, "--out", str(out))
    assert again.returncode == 1
    assert again.stderr.splitlines()[-1] == f"error: {out}: exists; use --overwrite to replace it"
    assert out.read_bytes() == written


def test_another_tools_no_data_value_stays_no_data(tmp_path):
    """A mask whose no data is 2, not 255: the pixels under a water polygon became water, and
    the rest were written under the tag 255 as 2, which stats then counted as dry land."""
    mask = np.zeros((20, 30), np.uint8)
    mask[:, :10] = 2
    mask[5:10, 12:20] = 1
    path = write_raster(tmp_path / "other.tif", mask, crs="EPSG:4326", pixel=DEG, origin=(10.0, 45.0),
                        nodata=2, descriptions=None)
    fixes = _geojson(tmp_path / "fix.geojson", (_columns_rows(0, 0, 16, 20), {"water": 1}))
    reporter = Collect()
    r = correct_mask(path, fixes, str(tmp_path / "fixed.tif"), reporter=reporter)
    expected = mask.copy()
    expected[:, :10] = 255
    expected[:, 10:16] = 1
    with rasterio.open(tmp_path / "fixed.tif") as ds:
        assert ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), expected)
    assert r["valid_pixels"] == 20 * 20 and r["corrected_pixels"] == 20 * 6 - 5 * 4
    assert f"{path}: its no-data value 2 is written as 255" in reporter.infos[0]


@pytest.mark.parametrize("crs, message", [
    (None, "has no georeferencing (no geotransform)"),
    ("none", "has a grid but no CRS"),
])
def test_finalize_refuses_a_probability_off_any_known_grid(tmp_path, crs, message):
    """It failed mid-run with an internal error (AttributeError in the area of a row)."""
    prob = np.full((8, 8), 0.7, np.float32)
    path = str(tmp_path / "p.tif")
    grid = {"transform": rasterio.transform.from_origin(500000, 5000000, 10, 10)} if crs else {}
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32",
                       **grid) as ds:
        ds.write(prob, 1)
    before = listing(tmp_path)
    with pytest.raises(InputError, match=re.escape(f"{path}: {message}")):
        finalize(path, 0.5, str(tmp_path / "m.tif"))
    assert listing(tmp_path) == before


def test_polygons_over_no_data_say_the_pixels_they_left(geo_mask, tmp_path):
    """Corrections over no data changed nothing and said only "0 pixels corrected"."""
    path, mask = geo_mask
    fixes = _geojson(tmp_path / "fix.geojson", (_columns_rows(2, 6, 5, 9), {"water": 1}))
    reporter = Collect()
    r = correct_mask(path, fixes, str(tmp_path / "fixed.tif"), reporter=reporter)
    assert r["nodata_pixels_left"] == 1 and mask[7, 3] == 255
    assert r["corrected_pixels"] == int((mask[6:9, 2:5] == 0).sum())
    assert "1 pixels under the corrections are no data and were left so" in reporter.warnings[-1]
