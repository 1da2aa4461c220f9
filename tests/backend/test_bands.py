"""``--bands VV_INDEX,VH_INDEX``: chosen bands of one multi-band input reach the model exactly.

The model here mixes both bands, p = sigmoid(-(VV + 0.5 VH + 26)), so taking the
wrong band for either gives other numbers, which the tests compute in numpy.
"""
import json

import numpy as np
import onnx
import pytest
import rasterio
from rasterio.enums import ColorInterp

from backend.engine import PredictOptions, predict
from backend.errors import UsageError
from backend.otsu import OtsuOptions, otsu_map
from tests.backend.conftest import Collect, listing, random_db, run_cli, sigmoid, write_raster
from training.toy_models import raw_db_card, smoothed_threshold_model

WEIGHTS, BIAS = (-1.0, -0.5), -26.0


@pytest.fixture(scope="module")
def mixing_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("mix") / "mix.onnx"
    card = raw_db_card("test-mix", margin=0)
    onnx.save(smoothed_threshold_model(card, kernel=1, weights=WEIGHTS, bias=BIAS), path)
    return str(path)


def expected(vv: np.ndarray, vh: np.ndarray) -> np.ndarray:
    return sigmoid(WEIGHTS[0] * vv + WEIGHTS[1] * vh + BIAS)


@pytest.fixture
def stack(tmp_path):
    """A HyP3/Earth Engine-like stack without band names: VH, VV, incidence angle."""
    vv, vh = random_db((90, 110), seed=8, nan_frac=0.01)
    angle = np.full_like(vv, 35.0)
    return write_raster(tmp_path / "stack.tif", np.stack([vh, vv, angle]), descriptions=None), vv, vh


def test_predict_uses_the_chosen_bands(tmp_path, mixing_model, stack):
    src, vv, vh = stack
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=mixing_model,
                               bands=(2, 1)))
    with rasterio.open(tmp_path / "p.tif") as ds:
        p = ds.read(1)
    want = expected(vv, vh)
    valid = np.isfinite(vv) & np.isfinite(vh)
    assert np.abs(p[valid] - want[valid]).max() < 1e-6
    assert np.isnan(p[~valid]).all()
    assert r["bands"]["VV"]["band"] == 2 and r["bands"]["VH"]["band"] == 1
    assert r["bands"]["VV"]["named_by"] == "--bands"
    # the swapped choice gives the other numbers: the test can tell them apart
    assert np.abs(expected(vh, vv)[valid] - want[valid]).max() > 0.1


def test_cli_bands_on_predict_and_otsu(tmp_path, mixing_model, stack):
    src, vv, vh = stack
    out = tmp_path / "out"
    out.mkdir()
    p = run_cli("predict", src, "--bands", "2,1", "--mask", str(out / "m.tif"),
                "--model", mixing_model, "--progress", "json")
    assert p.returncode == 0, p.stdout
    with rasterio.open(out / "m.tif") as ds:
        mask = ds.read(1)
    want = np.where(expected(vv, vh) > 0.5, 1, 0)
    valid = np.isfinite(vv) & np.isfinite(vh)
    np.testing.assert_array_equal(mask[valid], want[valid])
    assert (mask[~valid] == 255).all()

    # Otsu on band 2 equals Otsu on a two-band file holding that band as VV
    p = run_cli("otsu", src, "--bands", "2,1", "--mask", str(out / "o.tif"), "--progress", "json")
    assert p.returncode == 0, p.stdout
    chosen = json.loads(p.stdout.splitlines()[-1])
    plain = write_raster(tmp_path / "plain.tif", np.stack([vv, vh]))
    reference = otsu_map(OtsuOptions([plain], mask=str(out / "ref.tif")))
    assert chosen["threshold_db"] == reference["threshold_db"]
    with rasterio.open(out / "o.tif") as a, rasterio.open(out / "ref.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


@pytest.mark.parametrize("bands, message", [
    ("3,4", "{src}: has 3 bands; --bands 3,4 names band 4 (bands are numbered from 1)"),
    ("1,1", "{src}: --bands 1,1 gives band 1 as both VV and VH"),
])
@pytest.mark.parametrize("command", ["predict", "otsu"])
def test_bad_bands_are_refused_before_any_output(tmp_path, mixing_model, stack, bands, message,
                                                 command):
    src = stack[0]
    out = tmp_path / "out"
    out.mkdir()
    model = ["--model", mixing_model] if command == "predict" else []
    p = run_cli(command, src, "--bands", bands, "--mask", str(out / "m.tif"), *model)
    assert p.returncode == 1 and listing(out) == []
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: " + message.format(src=src)]


def test_bands_with_two_inputs_are_refused(tmp_path, mixing_model):
    b = random_db((20, 20))
    vv = write_raster(tmp_path / "a_VV.tif", b[:1], descriptions=None)
    vh = write_raster(tmp_path / "a_VH.tif", b[1:], descriptions=None)
    with pytest.raises(UsageError) as err:
        predict(PredictOptions([vv, vh], mask=str(tmp_path / "m.tif"), model=mixing_model,
                               bands=(1, 2)))
    assert f"with two inputs ({vv}, {vh}) each file is one band" in str(err.value)
    assert not (tmp_path / "m.tif").exists()


def test_without_bands_an_unnamed_stack_of_three_is_refused_with_the_way_out(tmp_path, stack):
    src = stack[0]
    p = run_cli("otsu", src, "--mask", str(tmp_path / "m.tif"))
    assert p.returncode == 1
    assert "or --bands VV_INDEX,VH_INDEX to choose two" in p.stderr


def _probability(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_unnamed_bands_vh_first_are_ordered_by_brightness(tmp_path, mixing_model):
    """A VH-first stack with no band names (a VRT of VH and VV, say): the brighter band
    is VV, so the model gets the numbers of the VV-first stack, not their swap."""
    vv, vh = random_db((90, 110), seed=9, nan_frac=0.01)
    src = write_raster(tmp_path / "vh_vv.tif", np.stack([vh, vv]), descriptions=None)
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=mixing_model),
                reporter)
    valid = np.isfinite(vv) & np.isfinite(vh)
    got = _probability(tmp_path / "p.tif")
    assert np.abs(got[valid] - expected(vv, vh)[valid]).max() < 1e-6
    assert r["bands"]["VV"]["band"] == 2
    assert r["bands"]["VV"]["named_by"] == r["bands"]["VH"]["named_by"] == "brightness"
    assert any("band 2 is the brighter" in m and "taking band 2 as VV" in m
               for m in reporter.infos), reporter.infos


def test_unnamed_bands_vh_first_with_a_wide_zero_fill_are_still_ordered(tmp_path, mixing_model):
    """Earth Engine exports write the area beyond the swath as an untagged 0: with 60 % of
    it, both bands' medians were 0 and the tie kept VH as VV, silently (a gdalbuildvrt
    -separate of S1_VH.tif, S1_VV.tif in name order). Bands are compared where both have
    a non-zero value."""
    vv, vh = random_db((90, 110), seed=9)
    vv[:, :66] = vh[:, :66] = 0.0
    src = write_raster(tmp_path / "vh_vv.tif", np.stack([vh, vv]), descriptions=None, nodata=None)
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif"), model=mixing_model),
                reporter)
    assert r["bands"]["VV"]["band"] == 2
    got = _probability(tmp_path / "p.tif")
    assert np.isnan(got[:, :66]).all()   # the fill is no data (backend/README.md, No data)
    assert np.abs(got[:, 66:] - expected(vv, vh)[:, 66:]).max() < 1e-6
    assert not [m for m in reporter.warnings if "swapped" in m]


def test_two_unnamed_files_keep_the_order_given_and_a_swap_is_warned_about(tmp_path,
                                                                             mixing_model):
    """Two files are given in an order (VV, VH): it is kept, but a VH brighter than VV is said."""
    vv, vh = random_db((60, 70), seed=13)
    inputs = [write_raster(tmp_path / "a.tif", vh, descriptions=None),
              write_raster(tmp_path / "b.tif", vv, descriptions=None)]
    reporter = Collect()
    r = predict(PredictOptions(inputs, mask=str(tmp_path / "m.tif"), model=mixing_model),
                reporter)
    assert r["bands"]["VV"] == {"path": inputs[0], "band": 1, "named_by": "position"}
    (warning,) = [m for m in reporter.warnings if "swapped" in m]
    assert warning.startswith(f"{inputs[1]}: the band taken as VH (band 1, by position) is "
                              f"brighter than the one taken as VV ({inputs[0]} band 1)")


def test_a_swap_is_warned_about_beside_a_wide_zero_fill(tmp_path, mixing_model):
    """The swap warning compared the same zero-laden samples, and stayed quiet."""
    vv, vh = random_db((60, 70), seed=13)
    vv[:, :42] = vh[:, :42] = 0.0
    inputs = [write_raster(tmp_path / "a.tif", vh, descriptions=None, nodata=None),
              write_raster(tmp_path / "b.tif", vv, descriptions=None, nodata=None)]
    reporter = Collect()
    predict(PredictOptions(inputs, mask=str(tmp_path / "m.tif"), model=mixing_model), reporter)
    assert [m for m in reporter.warnings if "are VV and VH swapped?" in m]


def test_unnamed_bands_in_order_stay_and_all_nan_keeps_the_file_order(tmp_path, mixing_model):
    vv, vh = random_db((60, 70), seed=10)
    src = write_raster(tmp_path / "vv_vh.tif", np.stack([vv, vh]), descriptions=None)
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=mixing_model))
    assert r["bands"]["VV"]["band"] == 1 and r["bands"]["VV"]["named_by"] == "brightness"
    empty = write_raster(tmp_path / "nan.tif", np.full((2, 60, 70), np.nan, np.float32),
                         descriptions=None)
    reporter = Collect()
    r = predict(PredictOptions([empty], mask=str(tmp_path / "m2.tif"), model=mixing_model),
                reporter)
    assert r["bands"]["VV"]["band"] == 1 and r["bands"]["VV"]["named_by"] == "position"
    assert any("no valid pixel to tell them apart" in m for m in reporter.infos)


def test_bands_named_the_wrong_way_round_are_warned_about(tmp_path, mixing_model):
    vv, vh = random_db((60, 70), seed=11)
    src = write_raster(tmp_path / "mislabelled.tif", np.stack([vh, vv]))   # described VV, VH
    reporter = Collect()
    predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=mixing_model), reporter)
    (warning,) = [m for m in reporter.warnings if "swapped" in m]
    assert warning.startswith(f"{src}: the band taken as VH (band 2, by description) is "
                              "brighter than the one taken as VV")
    reporter = Collect()   # Otsu reads VV only, but samples VH for the units: it warns too
    otsu_map(OtsuOptions([src], mask=str(tmp_path / "otsu.tif")), reporter)
    assert [m for m in reporter.warnings if "swapped" in m] == [warning]
    named_right = write_raster(tmp_path / "right.tif", np.stack([vv, vh]))
    reporter = Collect()
    predict(PredictOptions([named_right], mask=str(tmp_path / "m2.tif"), model=mixing_model),
            reporter)
    assert not [m for m in reporter.warnings if "swapped" in m]


def test_an_alpha_band_marks_the_no_data_of_integer_db_bands(tmp_path, models):
    """gdalwarp -dstalpha on int16 hundredths of a dB (GDAL scale 0.01): 0 under alpha 0,
    which GDAL does not read as the bands' mask in a gray, undefined, alpha file; the area
    beyond the scene was valid, dry land. Read unresampled and resampled (7 m)."""
    vv, vh = random_db((60, 80), seed=4)
    stored = np.round(np.stack([vv, vh]) * 100).astype(np.int16)
    stored[:, :, :11] = 0
    alpha = np.where(np.arange(80) < 11, 0, 255).astype(np.int16) * np.ones((60, 1), np.int16)
    for pixel in (10.0, 7.0):
        src = write_raster(tmp_path / f"warped_{pixel:g}.tif", np.concatenate([stored, alpha[None]]),
                           nodata=None, descriptions=None, pixel=pixel)
        with rasterio.open(src, "r+") as ds:
            ds.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha]
            ds.scales = (0.01, 0.01, 1.0)
        out = tmp_path / f"m_{pixel:g}.tif"
        r = predict(PredictOptions([src], mask=str(out), model=models["threshold"]))
        assert r["resampled"] == (pixel == 7.0)
        with rasterio.open(out) as ds:
            mask = ds.read(1)
        assert (mask[:, :11] == 255).all(), pixel
        if pixel == 10.0:   # the threshold model: water where VV < -15 dB, exactly
            want = (stored[0, :, 11:] / 100 < -15).astype(np.uint8)
            np.testing.assert_array_equal(mask[:, 11:], want)
        else:               # warped back: the columns at the edge mix both sides
            assert (mask[:, 13:] != 255).all()


def test_hh_hv_bands_run_only_when_chosen(tmp_path, mixing_model):
    """HH/HV (polar and sea-ice scenes) are refused by name; --bands takes them, and says so."""
    vv, vh = random_db((60, 70), seed=12)
    src = write_raster(tmp_path / "hh_hv.tif", np.stack([vv, vh]),
                       descriptions=("Sigma0_HH_db", "Sigma0_HV_db"))
    reporter = Collect()
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=mixing_model,
                               bands=(1, 2)), reporter)
    assert r["bands"]["VV"]["named_by"] == "--bands"
    assert f"{src}: band 1 is described as HH, but --bands 1,2 uses it as VV" in reporter.infos


def test_a_third_band_marked_alpha_is_set_aside(tmp_path, mixing_model):
    """gdalwarp -dstalpha on a VV/VH pair: VV, VH, alpha, with 0 under alpha 0. It was
    refused as a 3-band file; now it is read as the pair, the 0 fill as no data."""
    bands = random_db((50, 60), seed=2)
    bands[:, :, :7] = 0.0
    alpha = np.where(np.arange(60) < 7, 0, 255).astype(np.float32) * np.ones((50, 1), np.float32)
    src = write_raster(tmp_path / "warped.tif", np.concatenate([bands, alpha[None]]),
                       nodata=None, descriptions=None)
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha]
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), model=mixing_model))
    assert {b["band"] for b in r["bands"].values()} == {1, 2}
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
    assert (mask[:, :7] == 255).all() and (mask[:, 7:] != 255).all()
