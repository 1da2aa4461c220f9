"""The real Sen1Floods11 chips (EPSG:4326, dB, NaN no data) through predict and Otsu."""
import numpy as np
import pytest
import rasterio

from backend.engine import PredictOptions, predict
from backend.otsu import OtsuOptions, otsu_map
from tests.backend.test_io_errors import Collect


def chip(real_chips, name):
    return str(real_chips / "S1Hand" / f"{name}_S1Hand.tif")


def iou(mask, label):
    valid = (label >= 0) & (mask != 255)
    return (((mask == 1) & (label == 1) & valid).sum()
            / (((mask == 1) | (label == 1)) & valid).sum())


def test_spain_is_resampled_and_written_on_its_own_grid(tmp_path, real_chips):
    src = chip(real_chips, "Spain_7370579")
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"),
                               probability=str(tmp_path / "p.tif")))
    # at 38 N a 8.98e-5 degree pixel is 7.9 m wide: more than 5% off the card's 10 m
    assert r["resampled"] and r["input_pixel_size_m"][0] == pytest.approx(7.88, abs=0.01)
    assert r["units_detected"] == "dB" and r["units_source"] == "values"
    with rasterio.open(src) as i, rasterio.open(tmp_path / "m.tif") as m:
        assert (m.crs, m.transform, m.shape) == (i.crs, i.transform, i.shape)
        mask = m.read(1)
    assert r["valid_pixels"] == 512 * 512 and (mask != 255).all()
    label = rasterio.open(real_chips / "LabelHand" / "Spain_7370579_LabelHand.tif").read(1)
    # the stand-in model is a hand-set threshold, not trained: a sanity floor, not a score
    assert iou(mask, label) > 0.4
    o = otsu_map(OtsuOptions([src], mask=str(tmp_path / "o.tif")))
    assert -25 < o["threshold_db"] < -8 and o["valid_pixels"] == 512 * 512


def test_paraguay_all_nan_gives_all_no_data_and_a_warning(tmp_path, real_chips):
    src = chip(real_chips, "Paraguay_34417")
    for run in ("predict", "otsu"):
        rep = Collect()
        out = str(tmp_path / f"{run}.tif")
        if run == "predict":
            r = predict(PredictOptions([src], mask=out), rep)
        else:
            r = otsu_map(OtsuOptions([src], mask=out), rep)
        assert r["valid_pixels"] == 0 and r["water_area_km2"] == 0
        assert any("no valid" in w for w in rep.warnings), rep.warnings
        with rasterio.open(out) as m:
            assert (m.read(1) == 255).all()


def test_ghana_near_the_equator_is_used_as_it_is(tmp_path, real_chips):
    src = chip(real_chips, "Ghana_83483")
    r = predict(PredictOptions([src], mask=str(tmp_path / "m.tif"), tta=True,
                               uncertainty=str(tmp_path / "u.tif")))
    # at 9 N the pixel is 9.87 x 9.93 m: within 5% of 10 m, no resampling
    assert not r["resampled"] and r["valid_pixels"] == 512 * 512
    with rasterio.open(tmp_path / "u.tif") as u:
        spread = u.read(1)
    assert np.isfinite(spread).all() and 0 <= spread.min() and spread.max() < 0.5
