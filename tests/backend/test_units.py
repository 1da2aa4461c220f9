"""Units: metadata words, values, conversion."""
import numpy as np
import pytest
import rasterio

from backend.errors import InputError
from backend.scene import Scene
from backend.units import (contradiction, convert, detect_units, implausible, units_from_text,
                           units_from_values)


@pytest.mark.parametrize("text, units", [
    ("Sigma0_VV_db", "dB"), ("VV decibels", "dB"), ("Sigma0_VV", "linear"),
    ("Intensity_VH", "linear"), ("Gamma0_VV power", "linear"), ("Amplitude_VV", "amplitude"),
    ("s1_vh_amp.tif", "amplitude"), ("VV", None), ("example_vv.tif", None), ("dbz", None),
])
def test_units_from_metadata_words(text, units):
    named = units_from_text(text)
    assert (named and named[0]) == units


def test_override_beats_metadata():
    assert detect_units("Sigma0_VV_db", "linear").units == "linear"
    found = detect_units("s1_vh_amp.tif", None)
    assert (found.units, found.source) == ("amplitude", "metadata")
    assert found.evidence.startswith("'amp' in ")
    assert detect_units("VV", None) is None


def _scene_db(water: float, seed: int = 0) -> dict:
    """VV/VH dB samples of a generated scene: land, with a share of water pixels."""
    bands, truth = Scene(512, 512, seed).block(0, 0, 512, 512)
    rng = np.random.default_rng(seed)
    land = bands[:, ~truth & ~np.isnan(bands[0])]
    wet = bands[:, truth]
    n = 20000
    k = int(water * n)
    pick = np.concatenate([land[:, rng.integers(0, land.shape[1], n - k)],
                           wet[:, rng.integers(0, wet.shape[1], k)]], axis=1)
    return {"VV": pick[0], "VH": pick[1]}


@pytest.mark.parametrize("water", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("units", ["dB", "linear", "amplitude"])
def test_units_from_values(units, water):
    samples = {k: convert(v.copy(), "dB", units) for k, v in _scene_db(water).items()}
    assert units_from_values(samples).units == units


@pytest.mark.parametrize("units", ["linear", "amplitude"])
def test_units_from_values_vv_only(units):
    vv = convert(_scene_db(0.3)["VV"].copy(), "dB", units)
    assert units_from_values({"VV": vv}).units == units


def test_no_valid_value_says_so():
    found = units_from_values({"VV": np.full(10, np.nan), "VH": np.full(10, np.nan)})
    assert found.units is None and "no valid pixel" in found.evidence


@pytest.mark.parametrize("a, b", [("dB", "linear"), ("dB", "amplitude"), ("linear", "amplitude")])
def test_conversion_round_trip(a, b):
    db = np.linspace(-40, 10, 101, dtype=np.float32)
    x = convert(db.copy(), "dB", a)
    back = convert(convert(x.copy(), a, b), b, a)
    assert np.allclose(back, x, rtol=1e-5)


def test_conversion_values():
    assert convert(np.array([0.01], np.float32), "linear", "dB")[0] == pytest.approx(-20.0)
    assert convert(np.array([0.1], np.float32), "amplitude", "dB")[0] == pytest.approx(-20.0)
    assert convert(np.array([-10.0], np.float32), "dB", "linear")[0] == pytest.approx(0.1)
    assert convert(np.array([-10.0], np.float32), "dB", "amplitude")[0] == pytest.approx(0.1 ** 0.5)


def test_zero_or_negative_power_becomes_no_data():
    out = convert(np.array([0.0, -1.0, 1.0], np.float32), "linear", "dB")
    assert np.isnan(out[:2]).all() and out[2] == 0.0


def test_negative_values_contradict_linear_units():
    assert "negative" in contradiction("linear", np.array([-12.0, -15.0, -9.0]))
    assert contradiction("dB", np.array([-12.0, -15.0])) is None


def test_uncalibrated_values_are_flagged_or_refused():
    dn = np.full(100, 300.0, np.float32)        # digital numbers, not sigma0 amplitude
    with pytest.raises(InputError, match="49.5 dB when read as amplitude: these are not calibrated"):
        implausible("amplitude", dn)
    assert "outside -35 to 5 dB" in implausible("dB", np.full(100, 12.0, np.float32))
    assert implausible("dB", np.full(100, -12.0, np.float32)) is None
    assert implausible("linear", np.full(100, 0.05, np.float32)) is None
    # a blank border of zeros (no dB value) does not make the median NaN
    bordered = np.r_[np.zeros(40, np.float32), np.full(60, 0.05, np.float32)]
    assert implausible("linear", bordered) is None
    assert "is 13.0 dB when read as linear" in implausible("linear", bordered * 400)


def test_fill_values_are_no_data_in_any_units():
    x = np.array([-12.0, -9999.0, np.nan, -25.0], np.float32)
    assert np.array_equal(convert(x.copy(), "dB", "dB"), [-12.0, np.nan, np.nan, -25.0],
                          equal_nan=True)
    lin = np.array([0.05, -9999.0, 0.01], np.float32)
    assert np.isnan(convert(lin.copy(), "linear", "linear")[1])
    assert "below -100" in contradiction("dB", np.r_[np.full(90, -12.0), np.full(10, -9999.0)])


def test_fill_values_do_not_make_linear_values_look_like_dB():
    lin = np.r_[np.full(80, 0.02), np.full(20, -9999.0)].astype(np.float32)  # 20 % fill
    assert units_from_values({"VV": lin}).units == "linear"


def _gee_export(tmp_path, name, fill, crs="EPSG:32633", pixel=10.0, origin=(500000.0, 5000000.0),
                nodata=None):
    """An Earth Engine-like dB export: no nodata tag, masked pixels (a swath edge) = ``fill``."""
    from tests.backend.conftest import random_db, write_raster
    x = random_db((120, 100), seed=21)
    edge = np.add.outer(np.arange(120), 2 * np.arange(100)) < 70   # a diagonal swath edge
    x[:, edge] = fill
    return write_raster(tmp_path / name, x, crs=crs, pixel=pixel, origin=origin,
                        nodata=nodata), edge


@pytest.mark.parametrize("grid", ["utm", "geographic (resampled)"])
def test_zeros_of_a_db_export_without_nodata_are_no_data(tmp_path, models, grid):
    """Read as 0 dB they were bright land counted as observed area; they are masked pixels."""
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect

    kw = {} if grid == "utm" else dict(crs="EPSG:4326", pixel=1 / 8000, origin=(10.0, 45.0))
    zeros, edge = _gee_export(tmp_path, "gee.tif", 0.0, **kw)
    nans, _ = _gee_export(tmp_path, "nan.tif", np.nan, nodata=np.nan, **kw)
    reporter = Collect()
    r = predict(PredictOptions([zeros], mask=str(tmp_path / "m0.tif"), model=models["threshold"]),
                reporter)
    want = predict(PredictOptions([nans], mask=str(tmp_path / "m1.tif"), model=models["threshold"]))
    assert r["resampled"] == (grid != "utm")
    with rasterio.open(tmp_path / "m0.tif") as a, rasterio.open(tmp_path / "m1.tif") as b:
        got = a.read(1)
        np.testing.assert_array_equal(got, b.read(1))
    assert r["valid_pixels"] == want["valid_pixels"]
    # warped there and back, the edge's outermost pixels take their valid neighbours' values,
    # as they do from a NaN edge (the equality above)
    assert (got[edge] == 255).mean() == 1.0 if grid == "utm" else (got[edge] == 255).mean() > 0.9
    assert any("exact 0 in a dB band without a nodata value is read as no data" in m
               for m in reporter.infos), reporter.infos


def test_an_untagged_nan_export_keeps_its_no_data_when_resampled(tmp_path, models):
    """NaN marks no data with no tag (Earth Engine's default): read with the zero rule, the
    warper averaged NaN in and spread no data 1-2 pixels past the edge."""
    from backend.engine import PredictOptions, predict

    kw = dict(crs="EPSG:4326", pixel=1 / 8000, origin=(10.0, 45.0))
    untagged, edge = _gee_export(tmp_path, "untagged.tif", np.nan, **kw)
    tagged, _ = _gee_export(tmp_path, "tagged.tif", np.nan, nodata=np.nan, **kw)
    r = predict(PredictOptions([untagged], mask=str(tmp_path / "m0.tif"),
                               model=models["threshold"]))
    assert r["resampled"]
    predict(PredictOptions([tagged], mask=str(tmp_path / "m1.tif"), model=models["threshold"]))
    with rasterio.open(tmp_path / "m0.tif") as a, rasterio.open(tmp_path / "m1.tif") as b:
        got = a.read(1)
        np.testing.assert_array_equal(got, b.read(1))
    assert (got[~edge] != 255).all()   # no data only where the input has none


def test_zeros_stay_data_where_the_file_says_what_its_nodata_is(tmp_path, models):
    from backend.otsu import OtsuOptions, otsu_map

    tagged, edge = _gee_export(tmp_path, "tagged.tif", 0.0, nodata=-9999.0)
    r = otsu_map(OtsuOptions([tagged], mask=str(tmp_path / "o.tif")))
    assert r["valid_pixels"] == edge.size                     # 0 dB is data here
    untagged, _ = _gee_export(tmp_path, "untagged.tif", 0.0)
    r = otsu_map(OtsuOptions([untagged], mask=str(tmp_path / "o2.tif")))
    assert r["valid_pixels"] == edge.size - edge.sum()         # and no data here


def _power_scene(water_frac: float, land_db=(-8.0, -14.0), water_db=(-23.0, -29.0),
                 n=20000, seed=0) -> dict[str, np.ndarray]:
    """VV and VH power of a scene: land and water at the given dB, 4.4-look speckle."""
    rng = np.random.default_rng(seed)
    water = rng.random(n) < water_frac
    out = {}
    for k, name in enumerate(("VV", "VH")):
        db = np.where(water, water_db[k], land_db[k])
        out[name] = (10 ** (db / 10) * rng.gamma(4.4, 1 / 4.4, n)).astype(np.float32)
    return out


@pytest.mark.parametrize("case, units", [
    ("flood scene in amplitude", "amplitude"),    # its median is water's: low, as power is
    ("vegetation in power", "linear"),            # its median VH is high, as amplitude is
])
def test_the_vv_vh_ratio_decides_where_the_level_misleads(case, units):
    if case == "flood scene in amplitude":
        samples = {k: np.sqrt(v) for k, v in _power_scene(0.74).items()}
    else:
        samples = _power_scene(0.0, land_db=(-6.0, -11.5))
    found = units_from_values(samples)
    assert found.units == units and "VV/VH" in found.evidence
    assert found.doubt and "the level says" in found.doubt   # the run warns


def test_the_ratio_and_the_level_agree_on_ordinary_scenes():
    power = _power_scene(0.2)
    assert units_from_values(power).units == "linear" and units_from_values(power).doubt is None
    amplitude = {k: np.sqrt(v) for k, v in power.items()}
    assert units_from_values(amplitude).units == "amplitude"
    assert units_from_values(amplitude).doubt is None


def test_db_named_values_with_no_negative_value_are_questioned():
    assert "only 0% of its values are negative" in contradiction("dB", _power_scene(0.2)["VV"])


def test_values_that_all_become_no_data_are_refused(tmp_path, models):
    """dB values in bands described as Sigma0 (linear power): every value is negative, so
    none is power, and the whole map would be no data."""
    from tests.backend.conftest import random_db, run_cli, write_raster
    src = write_raster(tmp_path / "s.tif", random_db((200, 200)),
                       descriptions=("Sigma0_VV", "Sigma0_VH"))
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model", models["threshold"])
    assert p.returncode == 1 and f"{src}: no sampled VH value" in p.stderr
    assert "is backscatter in linear" in p.stderr and not (tmp_path / "m.tif").exists()
    assert run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model",
                   models["threshold"], "--units", "dB").returncode == 0


def test_units_are_read_from_data_in_a_small_part_of_the_grid(tmp_path, models):
    """Linear power only in a 250 x 260 patch of a 2048 px grid: the 25 sample windows miss
    it, the closer look finds it (it was taken as dB, silently: 0.3% water for 16%)."""
    import json
    from tests.backend.conftest import run_cli, write_raster
    power = _power_scene(0.2, n=250 * 260)
    bands = np.full((2, 2048, 2048), np.nan, np.float32)
    bands[:, 1100:1350, 600:860] = np.stack([power["VV"], power["VH"]]).reshape(2, 250, 260)
    src = write_raster(tmp_path / "s.tif", bands)
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model", models["threshold"],
                "--progress", "json")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    assert result["units_detected"] == "linear" and result["units_source"] == "values"


def test_the_run_warns_when_the_units_are_uncertain(tmp_path, models):
    """The doubt is said once for both bands."""
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, write_raster

    flood = {k: np.sqrt(v) for k, v in _power_scene(0.74, n=200 * 200).items()}
    src = write_raster(tmp_path / "flood.tif",
                       np.stack([flood["VV"], flood["VH"]]).reshape(2, 200, 200))
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                reporter)
    assert r["units_detected"] == "amplitude"
    doubts = [w for w in reporter.warnings if "units read from the values are uncertain" in w]
    assert len(doubts) == 1 and "the level says linear" in doubts[0], reporter.warnings + reporter.infos


def test_uncalibrated_numbers_are_refused_naming_the_file(tmp_path, models):
    from tests.backend.conftest import run_cli, write_raster
    rng = np.random.default_rng(5)
    dn = np.stack([rng.uniform(200, 400, (100, 100)), rng.uniform(80, 160, (100, 100))])
    src = write_raster(tmp_path / "grd.tif", dn.astype(np.float32))
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model", models["threshold"])
    assert p.returncode == 1 and f"error: {src}: the VV median is" in p.stderr, p.stderr
    assert "not calibrated backscatter" in p.stderr and not (tmp_path / "m.tif").exists()


def test_the_zero_note_is_left_out_where_the_sample_holds_no_zero(tmp_path, models):
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, random_db, write_raster
    """Every untagged float dB file got it, with 'VV 0.0 %, VH 0.0 %'."""
    path = write_raster(tmp_path / "untagged.tif", random_db((80, 90), seed=2), nodata=None)
    reporter = Collect()
    predict(PredictOptions([path], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
            reporter)
    assert not any("exact 0 in a dB band" in m for m in reporter.infos), reporter.infos


def test_units_are_found_on_a_data_patch_the_sample_lattice_misses(tmp_path, models):
    """A 44 x 44 px clip in a 2048 px no-data frame fell between the sample's windows:
    linear power was read as dB ('no valid pixel in the units sample') and mapped dry."""
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, random_db, write_raster
    bands = np.full((2, 2048, 2048), np.nan, np.float32)
    patch = random_db((44, 44), seed=6)
    bands[:, 215:259, 215:259] = 10 ** (patch / 10)       # linear power
    path = write_raster(tmp_path / "clip.tif", bands, descriptions=None)
    rep = Collect()
    r = predict(PredictOptions([path], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                rep)
    assert r["units_detected"] == "linear", rep.warnings
    assert not any("the units sample cannot tell the units" in w for w in rep.warnings)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_a_blank_export_without_nodata_maps_no_area(tmp_path, models, dtype):
    """All zeros and no nodata tag: integer files were read as 0 dB, bright land, and
    mapped as 9 km2 of valid dry land (floats were already no data)."""
    from backend.engine import PredictOptions, predict
    from backend.otsu import OtsuOptions, otsu_map
    from tests.backend.conftest import Collect, write_raster
    path = write_raster(tmp_path / "blank.tif", np.zeros((2, 300, 300), dtype), nodata=None)
    rep = Collect()
    r = predict(PredictOptions([path], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                rep)
    o = otsu_map(OtsuOptions([path], mask=str(tmp_path / "o.tif")))
    assert r["valid_pixels"] == o["valid_pixels"] == 0
    assert any("the outputs are all no data" in w for w in rep.warnings), rep.warnings
    for mask in ("m.tif", "o.tif"):
        with rasterio.open(tmp_path / mask) as ds:
            assert (ds.read(1) == 255).all()


def _int16_x100(tmp_path, name, fill, nodata=None):
    """dB x 100 stored as int16 with no GDAL scale; NaN pixels written as ``fill``."""
    from tests.backend.conftest import random_db, write_raster
    db = random_db((120, 100), seed=3, nan_frac=0.1)
    return write_raster(tmp_path / name, np.round(np.nan_to_num(db, nan=fill) * 100)
                        .astype(np.int16), nodata=nodata, descriptions=None)


@pytest.mark.parametrize("fill", [0, -327.68])
def test_int16_db_x100_is_refused_whatever_its_fill(tmp_path, models, fill):
    """With 0 as fill the zeros were the only values above -100: the units went unknown
    ('no valid pixel in the units sample'), the zeros mapped as dry land and every real
    pixel as no data, exit 0. With -32768 it was refused: so it is with 0."""
    from tests.backend.conftest import run_cli
    src = _int16_x100(tmp_path, "x100.tif", fill)
    for command in ("predict", "otsu"):
        model = ["--model", models["threshold"]] if command == "predict" else []
        p = run_cli(command, src, "--mask", str(tmp_path / "m.tif"), *model)
        assert p.returncode == 1 and f"error: {src}: " in p.stderr, p.stderr
        assert "needs its GDAL scale" in p.stderr and not (tmp_path / "m.tif").exists()
        assert "no valid pixel" not in p.stderr


def test_a_fill_warning_asks_for_no_tag_the_band_has(tmp_path):
    """int16 dB x 100 tagged -32768 was asked 'a fill value without a nodata tag?'."""
    from backend.inspection import inspect_inputs
    tagged = inspect_inputs([_int16_x100(tmp_path, "tagged.tif", -327.68, nodata=-32768)])
    assert tagged["warnings"] and not any("nodata tag" in w for w in tagged["warnings"])
    assert all("stored scaled" in w for w in tagged["warnings"]), tagged["warnings"]
    from tests.backend.conftest import random_db, write_raster
    db = random_db((120, 100), seed=3)
    db[:, :10] = -9999.0                                   # a fill in a few columns
    untagged = inspect_inputs([write_raster(tmp_path / "fill.tif", db, nodata=None)])
    assert any("a fill value without a nodata tag?" in w for w in untagged["warnings"])


@pytest.mark.parametrize("truth, given", [("linear", "amplitude"), ("amplitude", "linear")])
def test_an_override_the_values_contradict_is_warned_of_and_obeyed(tmp_path, models, truth,
                                                                    given):
    """Linear read as amplitude mapped 99 % water, amplitude read as linear 0 %: silently."""
    from backend.engine import PredictOptions, predict
    from backend.inspection import inspect_inputs
    from tests.backend.conftest import Collect, random_db, write_raster
    src = write_raster(tmp_path / "s.tif", convert(random_db((120, 100), seed=4), "dB", truth))
    rep = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"],
                               units=given), rep)
    assert r["units_detected"] == given and r["units_source"] == "override"
    said = [w for w in rep.warnings if "--units" in w]
    assert len(said) == 1 and said[0].startswith(f"{src}: --units {given} ")
    assert f"the values say {truth}" in said[0] and "VV/VH" in said[0]
    rep = Collect()
    predict(PredictOptions([src], mask=str(tmp_path / "m2.tif"), model=models["threshold"],
                           units=truth), rep)
    assert not rep.warnings, rep.warnings
    # inspect previews an override as a run takes it
    answer = inspect_inputs([src], units=given)
    assert answer["units_detected"] == given and answer["units_source"] == "override"
    assert answer["warnings"] == said


def test_an_override_the_metadata_contradicts_is_warned_of(tmp_path):
    from backend.inspection import inspect_inputs
    from tests.backend.conftest import random_db, write_raster
    power = convert(random_db((120, 100), seed=4), "dB", "linear")
    src = write_raster(tmp_path / "s.tif", power, descriptions=("Amplitude_VV", "Amplitude_VH"))
    answer = inspect_inputs([src], units="linear")
    assert answer["units_detected"] == "linear"
    assert any("the metadata of VV says amplitude ('Amplitude'" in w
               for w in answer["warnings"]), answer["warnings"]


def test_a_band_with_no_valid_pixel_is_named(tmp_path, models, real_chips):
    """An all-NaN VH beside a full VV: inspect said 'VH: units dB (100% of the values are
    negative)' (VV's values) and predict's one warning named no band."""
    from backend.engine import PredictOptions, predict
    from backend.inspection import inspect_inputs
    from tests.backend.conftest import Collect, random_db, write_raster
    bands = random_db((120, 100), seed=5)
    bands[1] = np.nan
    src = write_raster(tmp_path / "vh_nan.tif", bands, descriptions=None)
    answer = inspect_inputs([src])
    assert answer["units"]["VH"]["units"] is None
    assert answer["units"]["VH"]["evidence"] == "the band holds no valid pixel"
    assert answer["units"]["VV"]["units"] == "dB"
    named = f"{src}: band 2 (VH) holds no valid pixel (all NaN or no data)"
    assert named in answer["warnings"]
    rep = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                rep)
    assert r["valid_pixels"] == 0 and named in rep.warnings, rep.warnings
    # a wholly empty input is said once, by the run (it was said twice)
    rep = Collect()
    predict(PredictOptions([str(real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif")],
                           mask=str(tmp_path / "p.tif"), model=models["threshold"]), rep)
    assert len([w for w in rep.warnings if "no valid pixel" in w]) == 1, rep.warnings


@pytest.mark.parametrize("grid", ["utm", "geographic"])
def test_zero_power_under_the_noise_floor_is_dark_not_no_data(tmp_path, models, grid):
    """Thermal-noise removal leaves VH at exactly 0 over calm water (SNAP writes it so): read
    as no data, 30 % of this water became holes in the mask and its area. A border where both
    bands are 0 is a fill, and stays no data."""
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, write_raster

    vv_db = np.full((96, 96), -8.0, np.float32)
    vv_db[10:60, 10:50] = -25.0
    vv, vh = 10 ** (vv_db / 10), 10 ** ((vv_db - 7) / 10)
    holes = np.zeros(vv.shape, bool)
    holes[10:60, 10:50] = np.random.default_rng(3).random((50, 40)) < 0.3
    vh[holes] = 0.0
    vv[:, :4] = vh[:, :4] = 0.0   # beyond the swath
    kw = {} if grid == "utm" else dict(crs="EPSG:4326", pixel=1 / 8000, origin=(10.0, 45.0))
    path = write_raster(tmp_path / "tnr.tif", np.stack([vv, vh]), nodata=None,
                        descriptions=("Sigma0_VV", "Sigma0_VH"), **kw)
    reporter = Collect()
    r = predict(PredictOptions([path], mask=str(tmp_path / "m.tif"), model=models["threshold"]),
                reporter)
    assert r["resampled"] == (grid != "utm")
    with rasterio.open(tmp_path / "m.tif") as ds:
        got = ds.read(1)
    if grid == "utm":
        expected = np.where(vv_db < -15, 1, 0).astype(np.uint8)
        expected[:, :4] = 255
        np.testing.assert_array_equal(got, expected)
    else:   # resampled there and back: the water's inside, and the fill
        assert (got[12:58, 12:48] == 1).all()
        assert (got[:, :3] == 255).all() and (got[:, 6:] != 255).all()
    assert any("exact 0 power where the other band has a value is read as below the noise "
               "floor" in m and "VH " in m for m in reporter.infos), reporter.infos


def test_nodata_given_on_the_command_line_replaces_the_files(tmp_path, models):
    """An int16 dB x 100 export warped without -dstnodata: its border is 0, read as 0 dB
    land and counted as observed; --nodata 0 says what the file does not."""
    from backend.engine import PredictOptions, predict
    from backend.otsu import OtsuOptions, otsu_map
    from tests.backend.conftest import Collect, write_raster

    db = np.full((2, 64, 64), -800, np.int16)
    db[:, 20:40, 10:30] = -2400
    db[:, :, :8] = 0
    path = write_raster(tmp_path / "i16.tif", db, nodata=None)
    with rasterio.open(path, "r+") as ds:
        ds.scales, ds.offsets = (0.01, 0.01), (0.0, 0.0)
    border = np.zeros((64, 64), bool)
    border[:, :8] = True
    for nodata, no_data_where in ((None, np.zeros_like(border)), (0.0, border)):
        reporter = Collect()
        r = predict(PredictOptions([path], mask=str(tmp_path / f"m{nodata}.tif"),
                                   model=models["threshold"], nodata=nodata), reporter)
        o = otsu_map(OtsuOptions([path], mask=str(tmp_path / f"o{nodata}.tif"), nodata=nodata))
        for out in (f"m{nodata}.tif", f"o{nodata}.tif"):
            with rasterio.open(tmp_path / out) as ds:
                np.testing.assert_array_equal(ds.read(1) == 255, no_data_where)
        assert r["valid_pixels"] == o["valid_pixels"] == int((~no_data_where).sum())
        said = [m for m in reporter.infos if "(--nodata" in m]
        assert said == ([] if nodata is None else
                        [f"{path}: band {k} ({n}): no data is 0 (--nodata; the file's nodata value: "
                         f"none)" for k, n in ((1, "VV"), (2, "VH"))])


def test_nodata_given_on_the_command_line_holds_on_a_resampled_grid(tmp_path, models):
    """A float file tagged NaN with a 0 border, run with --nodata 0 on a 7 m grid: the
    fast resampled read went by the file's tag, and the 0 border was averaged into the
    first column of data (water along the edge became dry). It must give what the same
    file tagged 0 gives."""
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import write_raster

    db = np.full((2, 60, 160), -22.0, np.float32)   # water right from the border
    db[1] -= 7
    db[:, :, :102] = 0.0   # 714 m: the edge falls 4 m into a 10 m model pixel
    masks = {}
    for tag, given in ((float("nan"), 0.0), (0.0, None)):
        path = write_raster(tmp_path / f"t{tag}.tif", db, nodata=tag, pixel=7.0)
        out = tmp_path / f"m{tag}.tif"
        r = predict(PredictOptions([path], mask=str(out), model=models["threshold"], nodata=given))
        assert r["resampled"]
        with rasterio.open(out) as ds:
            masks[given] = ds.read(1)
    np.testing.assert_array_equal(masks[0.0], masks[None])
    assert (masks[0.0][:, :102] == 255).all() and (masks[0.0][:, 102:] == 1).all()


def test_a_quarter_of_exact_0_db_read_as_data_is_warned_of(tmp_path, models):
    """An Earth Engine export (0 fill, untagged) warped with -dstnodata nan: the NaN tag
    makes its 0 data, and a quarter of the scene became dry land without a word."""
    from backend.engine import PredictOptions, predict
    from tests.backend.conftest import Collect, random_db, write_raster

    db = random_db((80, 80), seed=5)
    db[:, :, :20] = 0.0
    path = write_raster(tmp_path / "warped.tif", db, nodata=float("nan"))
    said = {}
    for nodata in (None, 0.0):
        reporter = Collect()
        predict(PredictOptions([path], mask=str(tmp_path / f"m{nodata}.tif"),
                               model=models["threshold"], nodata=nodata), reporter)
        said[nodata] = [w for w in reporter.warnings if "exactly 0 dB in every band" in w]
    (warning,) = said[None]
    assert warning.startswith(f"{path}: 2") and warning.endswith("run with --nodata 0")
    assert said[0.0] == []   # given: nothing to say


def test_a_nodata_that_is_no_number_is_a_usage_error(tmp_path):
    from tests.backend.conftest import run_cli

    r = run_cli("inspect", str(tmp_path / "x.tif"), "--nodata", "zero")
    assert r.returncode == 2 and "--nodata: 'zero': expected a number (or nan)" in r.stderr
