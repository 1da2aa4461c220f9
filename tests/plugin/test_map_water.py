"""sarflood:mapwater and sarflood:otsu through processing.run: real backend child process, real ONNX Runtime.

The threshold model computes p = sigmoid(-(VV_dB + 15)) per pixel, so on a 10 m UTM
grid (no resampling) the expected mask is exactly VV < -15 dB, computed here in numpy.
"""
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from qgis.core import (QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer, QgsSettings,
                       QgsVectorLayer)

from backend.otsu import otsu_threshold

from .conftest import REPO, read_raster, write_raster



class WarningsFeedback(QgsProcessingFeedback):
    """Keeps the warnings a run pushes."""

    def __init__(self):
        super().__init__()
        self.warnings: list[str] = []

    def pushWarning(self, text):  # noqa: N802
        self.warnings.append(text)
        super().pushWarning(text)

def _scene_arrays(seed: int = 1, size: int = 96):
    rng = np.random.default_rng(seed)
    vv = rng.normal(-12.0, 5.0, (size, size)).astype(np.float32)
    vv[10:40, 10:60] = rng.normal(-22.0, 1.5, (30, 50))
    vh = (vv - 7.0).astype(np.float32)
    vv[0, :5] = np.nan
    return vv, vh


def _expect(vv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = 1.0 / (1.0 + np.exp(vv.astype(np.float64) + 15.0))
    mask = np.where(prob > 0.5, 1, 0).astype(np.uint8)
    mask[~np.isfinite(vv)] = 255
    return prob, mask


def test_mapwater_on_a_generated_stack_is_exact(provider, models, tmp_path):
    import processing

    vv, vh = _scene_arrays()
    scene = write_raster(tmp_path / "stack.tif", [vv, vh], descriptions=["VV", "VH"])
    out = processing.run("sarflood:mapwater", {
        "INPUT": str(scene), "MODEL": str(models["threshold"]), "DEVICE": 1,
        "OUTPUT_MASK": str(tmp_path / "mask.tif"), "OUTPUT_PROBABILITY": str(tmp_path / "prob.tif")})
    prob, mask = _expect(vv)
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), mask)
    got = read_raster(out["OUTPUT_PROBABILITY"])
    valid = np.isfinite(vv)
    np.testing.assert_allclose(got[valid], prob[valid], atol=1e-6)
    assert np.isnan(got[~valid]).all()
    water, n_valid = int((mask == 1).sum()), int(valid.sum())
    assert out["WATER_FRACTION"] == pytest.approx(water / n_valid, abs=1e-6)
    assert out["VALID_AREA_KM2"] == pytest.approx(n_valid * 100 / 1e6, rel=1e-6)
    assert out["WATER_AREA_KM2"] == pytest.approx(water * 100 / 1e6, rel=1e-6)
    assert out["THRESHOLD_USED"] == 0.5 and out["DEVICE_USED"] == "cpu"


def test_mapwater_tiles_and_uncertainty_asked_for_reach_the_backend(provider, models, tmp_path):
    """64 px tiles (the outputs' blocks), and the spread over test-time augmentation: 0 for a
    model that looks at each pixel alone, which flips and turns cannot change. Without TTA
    the uncertainty output is refused before anything runs."""
    import processing
    import rasterio

    vv, vh = _scene_arrays()
    scene = write_raster(tmp_path / "stack.tif", [vv, vh], descriptions=["VV", "VH"])
    asked = {"INPUT": str(scene), "MODEL": str(models["threshold"]), "TILE_SIZE": 64, "OVERLAP": 16,
             "OUTPUT_MASK": str(tmp_path / "mask.tif"),
             "OUTPUT_UNCERTAINTY": str(tmp_path / "spread.tif")}
    with pytest.raises(QgsProcessingException, match="^Uncertainty output: it comes from test-time "
                                                     "augmentation; switch TTA on, or leave the "
                                                     "uncertainty output empty$"):
        processing.run("sarflood:mapwater", asked)
    assert list(tmp_path.glob("*.tif")) == [scene]
    out = processing.run("sarflood:mapwater", {**asked, "TTA": True})
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), _expect(vv)[1])
    spread = read_raster(out["OUTPUT_UNCERTAINTY"])
    valid = np.isfinite(vv)
    # (float32 rounding of eight equal values: an ulp of 1)
    assert np.isnan(spread[~valid]).all() and np.abs(spread[valid]).max() < 1e-6
    with rasterio.open(out["OUTPUT_MASK"]) as ds:
        assert ds.block_shapes[0] == (64, 64)


def test_mapwater_reads_a_stack_inside_a_zip(provider, models, tmp_path):
    """A layer QGIS opened inside a zip (/vsizip/, as ASF HyP3 delivers) reaches the backend
    with its path intact: normalising it would drop the slash that makes it absolute."""
    import zipfile

    import processing

    vv, vh = _scene_arrays(seed=6)
    scene = write_raster(tmp_path / "stack.tif", [vv, vh], descriptions=["VV", "VH"])
    with zipfile.ZipFile(tmp_path / "product.zip", "w") as z:
        z.write(scene, "product/stack.tif")
    layer = QgsRasterLayer(f"/vsizip/{tmp_path}/product.zip/product/stack.tif", "zipped", "gdal")
    assert layer.isValid()
    out = processing.run("sarflood:mapwater", {
        "INPUT": layer, "MODEL": str(models["threshold"]), "OUTPUT_MASK": str(tmp_path / "mask.tif")})
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), _expect(vv)[1])


def test_mapwater_reads_netcdf_subdataset_layers(provider, models, tmp_path):
    """SNAP's NetCDF export opens in QGIS as one layer per band, NETCDF:"scene.nc":Sigma0_VV_db:
    such layers reach the backend as GDAL names them, and name the outputs cleanly."""
    import processing

    from sarflood.plugin.params import output_stem
    from tests.conftest import write_netcdf_bands

    # no NaN holes: GDAL warps NaN beside the NetCDF fill value as a value, not as no data
    vv, vh = (np.nan_to_num(b, nan=-20.0) for b in _scene_arrays(seed=7))
    nc = tmp_path / "snap export.nc"
    write_netcdf_bands(nc, {"Sigma0_VV_db": vv, "Sigma0_VH_db": vh})
    layers = {p: QgsRasterLayer(f'NETCDF:"{nc}":Sigma0_{p}_db', p, "gdal") for p in ("VV", "VH")}
    assert all(layer.isValid() for layer in layers.values())
    out = processing.run("sarflood:mapwater", {
        "INPUT": layers["VV"], "INPUT_VH": layers["VH"], "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "mask.tif")})
    # the same bands as a GeoTIFF on the same grid (7.7 x 10 m: both runs resample)
    import rasterio
    with rasterio.open(f'NETCDF:"{nc}":Sigma0_VV_db') as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=2,
                       dtype="float32", crs=src.crs, transform=src.transform)
    with rasterio.open(tmp_path / "stack.tif", "w", **profile) as dst:
        dst.write(np.stack([vv, vh]).astype(np.float32))
        dst.descriptions = ("VV", "VH")
    tif = processing.run("sarflood:mapwater", {
        "INPUT": str(tmp_path / "stack.tif"), "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "mask_tif.tif")})
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), read_raster(tif["OUTPUT_MASK"]))
    assert out["VALID_AREA_KM2"] == tif["VALID_AREA_KM2"] > 0
    assert output_stem(layers["VV"].source()) == "snap_export_Sigma0_VV_db"


def test_mapwater_runs_a_vv_only_model_on_a_single_band_layer(provider, models, tmp_path):
    """A VV-only model's card asks for no VH; the plugin refused a single-band input as if
    every model read VH (the backend ran it). A VV/VH model still refuses it, by its card."""
    import processing

    vv, _ = _scene_arrays(seed=5)
    single = write_raster(tmp_path / "scene.tif", [vv], descriptions=["VV"])
    out = processing.run("sarflood:mapwater", {
        "INPUT": str(single), "MODEL": str(models["vv_only"]), "DEVICE": 1,
        "OUTPUT_MASK": str(tmp_path / "mask.tif")})
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), _expect(vv)[1])
    assert out["MODEL_USED"] == "test-vv-only 1.0.0"
    with pytest.raises(QgsProcessingException, match=r"scene.tif: has 1 band \(VV\); the model needs VV, VH"):
        processing.run("sarflood:mapwater", {"INPUT": str(single), "MODEL": str(models["threshold"]),
                                             "OUTPUT_MASK": str(tmp_path / "refused.tif")})
    assert not (tmp_path / "refused.tif").exists()


def test_threshold_writes_the_mask_mapwater_writes_at_that_threshold(provider, models, tmp_path):
    """A model, batch row or script can take the probability to a mask at another threshold
    without running the model again (the review panel's Accept had no Processing step)."""
    import processing
    import rasterio

    vv, vh = _scene_arrays(seed=11)
    scene = write_raster(tmp_path / "stack.tif", [vv, vh], descriptions=["VV", "VH"])
    run = processing.run("sarflood:mapwater", {
        "INPUT": str(scene), "MODEL": str(models["threshold"]), "DEVICE": 1,
        "OUTPUT_MASK": str(tmp_path / "mask.tif"), "OUTPUT_PROBABILITY": str(tmp_path / "prob.tif")})
    at_03 = processing.run("sarflood:mapwater", {
        "INPUT": str(scene), "MODEL": str(models["threshold"]), "DEVICE": 1, "THRESHOLD": 0.3,
        "OUTPUT_MASK": str(tmp_path / "mask_03.tif")})
    out = processing.run("sarflood:threshold", {"INPUT": run["OUTPUT_PROBABILITY"], "THRESHOLD": 0.3,
                                                "OUTPUT": str(tmp_path / "final.tif")})
    prob = 1.0 / (1.0 + np.exp(vv.astype(np.float64) + 15.0))
    expected = np.where(np.isfinite(vv), (prob > 0.3).astype(np.uint8), 255)
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), expected)
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), read_raster(at_03["OUTPUT_MASK"]))
    assert out["THRESHOLD_USED"] == 0.3 and at_03["THRESHOLD_USED"] == 0.3
    for key in ("WATER_AREA_KM2", "VALID_AREA_KM2", "WATER_FRACTION"):
        assert out[key] == pytest.approx(at_03[key], rel=1e-12), key
    with rasterio.open(out["OUTPUT"]) as ds:
        tags = ds.tags()
    assert tags["SARFLOOD_THRESHOLD"] == "0.3" and tags["SARFLOOD_MODEL"] == "test-threshold"

    # bad input: named, and nothing written
    for params, said in (({"INPUT": run["OUTPUT_MASK"]},
                          f"{run['OUTPUT_MASK']}: is a mask written by SAR Flood Mapper, not a "
                          "water probability; give the probability output of sarflood:mapwater"),
                         ({"INPUT": run["OUTPUT_PROBABILITY"], "OUTPUT": run["OUTPUT_PROBABILITY"]},
                          f"OUTPUT: {run['OUTPUT_PROBABILITY']} is the input 'prob'; choose "
                          "another path"),
                         ({"INPUT": run["OUTPUT_PROBABILITY"], "THRESHOLD": 1.5},
                          "Threshold: 1.5 must lie strictly between 0 and 1"),
                         # refused by QGIS itself, the parameter being a required number
                         ({"INPUT": run["OUTPUT_PROBABILITY"], "THRESHOLD": "half"},
                          "Unable to execute algorithm\nIncorrect parameter value for THRESHOLD")):
        with pytest.raises(QgsProcessingException, match=f"^{re.escape(said)}"):
            processing.run("sarflood:threshold", {"OUTPUT": str(tmp_path / "refused.tif"), **params})
        assert not (tmp_path / "refused.tif").exists()


def test_mapwater_with_bands_chosen_by_number(provider, models, tmp_path):
    """Three unnamed bands (angle, VH, VV): the user's VV=3, VH=2 reach the backend as --bands."""
    import processing

    vv, vh = _scene_arrays(seed=5)
    angle = np.full_like(vv, 35.0)
    scene = write_raster(tmp_path / "stack3.tif", [angle, vh, vv])
    out = processing.run("sarflood:mapwater", {
        "INPUT": str(scene), "VV_BAND": 3, "VH_BAND": 2, "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "mask.tif")})
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), _expect(vv)[1])
    assert not list(tmp_path.glob("*.vrt"))  # the backend reads the bands from the file itself
    # one band alone was silently ignored
    with pytest.raises(QgsProcessingException, match="VV_BAND and VH_BAND: give both bands"):
        processing.run("sarflood:mapwater", {
            "INPUT": str(scene), "VV_BAND": 3, "MODEL": str(models["threshold"]),
            "OUTPUT_MASK": str(tmp_path / "mask2.tif")})


def test_mapwater_separate_linear_files_and_threshold(provider, models, tmp_path):
    """HyP3-style: one file per polarisation, linear power; threshold 0.8 given."""
    import processing

    vv, vh = _scene_arrays(seed=2)
    lin = [np.power(10.0, b / 10.0).astype(np.float32) for b in (vv, vh)]
    a = write_raster(tmp_path / "S1A_IW_RTC_VV.tif", [lin[0]])
    b = write_raster(tmp_path / "S1A_IW_RTC_VH.tif", [lin[1]])
    feedback = QgsProcessingFeedback()
    out = processing.run("sarflood:mapwater", {
        "INPUT": str(a), "INPUT_VH": str(b), "MODEL": str(models["threshold"]), "THRESHOLD": 0.8,
        "OUTPUT_MASK": str(tmp_path / "mask.tif")}, feedback=feedback)
    prob, _ = _expect(vv)
    expected = np.where(prob > 0.8, 1, 0).astype(np.uint8)
    expected[~np.isfinite(vv)] = 255
    got = read_raster(out["OUTPUT_MASK"])
    # dB -> linear -> dB in float32 moves values by ~1e-6 dB: only pixels at the edge may differ
    edge = np.abs(prob - 0.8) < 1e-5
    np.testing.assert_array_equal(got[~edge], expected[~edge])
    assert out["THRESHOLD_USED"] == pytest.approx(0.8)


@pytest.mark.parametrize("units, db_times", [(0, 1), (3, 2)], ids=["detected", "amplitude"])
def test_mapwater_units_chosen_reach_the_backend(provider, models, tmp_path, units, db_times):
    """Linear power values, units left to detection (linear: dB = 10 log10), or said to be
    amplitude (dB = 20 log10, twice the dB): the exact model's mask follows."""
    import processing

    vv, vh = _scene_arrays(seed=9)
    power = [np.power(10.0, band / 10.0).astype(np.float32) for band in (vv, vh)]
    scene = write_raster(tmp_path / "power.tif", power, descriptions=["VV", "VH"])
    out = processing.run("sarflood:mapwater", {"INPUT": str(scene), "MODEL": str(models["threshold"]),
                                               "UNITS": units, "OUTPUT_MASK": str(tmp_path / "m.tif")})
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), _expect(db_times * vv)[1])


def test_mapwater_on_the_real_spain_chip(provider, models, real_chips, tmp_path):
    """EPSG:4326 chip, 7.9 x 10 m pixels: the backend resamples to the model's 10 m and back."""
    import processing

    chip = real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif"
    out = processing.run("sarflood:mapwater", {
        "INPUT": str(chip), "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "mask.tif"), "OUTPUT_PROBABILITY": str(tmp_path / "p.tif")})
    vv = read_raster(chip)[0]
    _, expected = _expect(vv)
    got = read_raster(out["OUTPUT_MASK"])
    assert got.shape == vv.shape
    valid = expected != 255
    np.testing.assert_array_equal(got[~valid], 255)
    agreement = float(np.mean(got[valid] == expected[valid]))
    assert agreement > 0.95, agreement
    assert 0 < out["WATER_FRACTION"] < 1


def test_mapwater_all_nodata_chip_reports_it(provider, models, real_chips, tmp_path):
    """Paraguay chip: every pixel NaN. The run says so and reports zero area."""
    import processing

    chip = real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif"
    feedback = WarningsFeedback()
    messages = feedback.warnings

    out = processing.run("sarflood:mapwater", {
        "INPUT": str(chip), "MODEL": str(models["threshold"]), "OUTPUT_MASK": str(tmp_path / "m.tif")},
        feedback=feedback)
    assert any("no valid pixel" in m and "Paraguay_34417_S1Hand.tif" in m for m in messages), messages
    assert out["VALID_AREA_KM2"] == 0 and out["WATER_AREA_KM2"] == 0
    assert out["WATER_FRACTION"] is None   # no share of nothing (it said 0.0)
    assert (read_raster(out["OUTPUT_MASK"]) == 255).all()


def test_all_nodata_outputs_are_not_loaded_into_the_project(provider, models, real_chips, tmp_path,
                                                            qgis_new_project):
    """As the run dialog does: two empty layers were added to the project, the warnings
    only in the log."""
    import processing
    from qgis.core import QgsProject

    chip = real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif"
    feedback = WarningsFeedback()
    messages = feedback.warnings

    paths = [tmp_path / name for name in ("m.tif", "p.tif", "o.tif")]
    out = processing.runAndLoadResults("sarflood:mapwater", {
        "INPUT": str(chip), "MODEL": str(models["threshold"]), "OUTPUT_MASK": str(paths[0]),
        "OUTPUT_PROBABILITY": str(paths[1])}, feedback=feedback)
    assert out["VALID_AREA_KM2"] == 0
    processing.runAndLoadResults("sarflood:otsu", {"INPUT": str(chip), "OUTPUT_MASK": str(paths[2])},
                                 feedback=feedback)
    assert QgsProject.instance().mapLayers() == {}
    assert all(path.exists() for path in paths)   # written, as asked
    assert f"Not added to the map, having no valid pixel: {paths[0]}, {paths[1]}" in messages
    assert f"Not added to the map, having no valid pixel: {paths[2]}" in messages


def test_otsu_on_the_all_nodata_chip_has_no_threshold(provider, real_chips, tmp_path):
    """It crashed on float(None) after the backend had written the (all no data) mask."""
    import processing

    chip = real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif"
    out = processing.run("sarflood:otsu", {"INPUT": str(chip), "OUTPUT_MASK": str(tmp_path / "o.tif")})
    assert out["THRESHOLD_DB"] is None and out["VALID_AREA_KM2"] == 0
    assert out["WATER_FRACTION"] is None   # as the threshold (it said 0.0)
    assert (read_raster(out["OUTPUT_MASK"]) == 255).all()


def test_otsu_takes_a_vv_only_layer(provider, real_chips, tmp_path):
    """Otsu reads VV alone; the plugin asked for VH as the model does (the backend never did)."""
    import processing
    from osgeo import gdal

    chip = real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif"
    vv = str(tmp_path / "vv.tif")
    gdal.Translate(vv, str(chip), bandList=[1])
    both = processing.run("sarflood:otsu", {"INPUT": str(chip), "OUTPUT_MASK": str(tmp_path / "a.tif")})
    alone = processing.run("sarflood:otsu", {"INPUT": vv, "OUTPUT_MASK": str(tmp_path / "b.tif")})
    assert alone["THRESHOLD_DB"] == both["THRESHOLD_DB"]
    np.testing.assert_array_equal(read_raster(alone["OUTPUT_MASK"]), read_raster(both["OUTPUT_MASK"]))


def test_otsu_over_an_extent_maps_and_thresholds_that_window_only(provider, tmp_path):
    import processing

    vv, vh = _scene_arrays(seed=8)
    scene = write_raster(tmp_path / "scene.tif", [vv, vh], descriptions=["VV", "VH"])
    out = processing.run("sarflood:otsu", {
        "INPUT": str(scene), "EXTENT": "500100,500300,4199500,4199800 [EPSG:32630]",
        "OUTPUT_MASK": str(tmp_path / "otsu.tif")})
    window = vv[20:50, 10:30]   # rows from 4200000 - 200 m down, columns from 500000 + 100 m
    assert out["THRESHOLD_DB"] == pytest.approx(otsu_threshold(window), abs=1e-4)
    assert out["THRESHOLD_DB"] != pytest.approx(otsu_threshold(vv), abs=0.1)
    want = np.where(np.isfinite(window), window <= out["THRESHOLD_DB"], 255).astype(np.uint8)
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), want)


def test_otsu_takes_the_no_data_set_in_qgis_on_a_vv_only_layer(provider, tmp_path, qgis_new_project):
    """A no-data value set on a single-band VV layer in QGIS did not reach the backend (a
    VV/VH stack's did): its pixels were thresholded as backscatter."""
    import processing
    from qgis.core import QgsProject, QgsRasterRange

    vv, _ = _scene_arrays(seed=8)
    vv[:20] = -12.5   # no data to the analyst, between the modes
    layer = QgsRasterLayer(str(write_raster(tmp_path / "vv.tif", [vv])), "vv")
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(-12.5, -12.5)])
    QgsProject.instance().addMapLayer(layer)
    out = processing.run("sarflood:otsu", {"INPUT": layer.id(), "OUTPUT_MASK": str(tmp_path / "o.tif")})
    t = out["THRESHOLD_DB"]
    valid = np.isfinite(vv) & (vv != -12.5)
    expected = np.where(valid, (vv < t).astype(np.uint8), 255)
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), expected)


def test_mapwater_refuses_a_model_whose_card_does_not_match(provider, models, two_band_scene, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match=r"mismatch\.onnx.*does not match its card"):
        processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene), "MODEL": str(models["mismatch"]),
                                             "OUTPUT_MASK": str(tmp_path / "m.tif")})
    gone = tmp_path / "gone.onnx"
    for given, said in (({"MODEL": str(gone)}, f"Model: {gone} does not exist"),
                        ({"MODEL": str(models["threshold"]),   # a rectangle of no width
                          "EXTENT": "500100,500100,4199500,4199800 [EPSG:32630]"},
                         "Extent: the rectangle is empty")):
        with pytest.raises(QgsProcessingException, match=f"^{re.escape(said)}$"):
            processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene), **given,
                                                 "OUTPUT_MASK": str(tmp_path / "m.tif")})
    assert list(tmp_path.glob("m*")) == []


def test_missing_backend_dependencies_name_the_fix(provider, models, two_band_scene, tmp_path):
    """Debian's own python3 has no onnxruntime: the message says so, with the install command."""
    import processing

    QgsSettings().setValue("sarflood/python", "/usr/bin/python3")
    try:
        with pytest.raises(QgsProcessingException) as caught:
            processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene),
                                                 "OUTPUT_MASK": str(tmp_path / "m.tif")})
    finally:
        QgsSettings().remove("sarflood/python")
    text = str(caught.value)
    assert "/usr/bin/python3" in text and "onnxruntime" in text
    # Debian 12's python3 is externally managed (PEP 668): pip refuses it, so a venv is advised
    managed = subprocess.run(["/usr/bin/python3", "-c", "import os, sysconfig; print(os.path.exists("
                              "os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"],
                             capture_output=True, text=True).stdout.strip() == "True"
    if managed:
        assert "pip does not install into /usr/bin/python3" in text
    else:
        assert "/usr/bin/python3 -m pip install" in text
    assert "-m pip install" in text and "'onnxruntime>=" in text


def test_cancel_stops_the_backend_and_leaves_no_output(provider, tmp_path):
    """Cancel at the first progress event: the child is terminated and nothing is left."""
    import processing
    from sarflood.plugin.backend_env import find_interpreter

    scene = tmp_path / "big.tif"
    subprocess.run([find_interpreter().path, "-m", "backend", "scene", str(scene), "--size", "1536"],
                   cwd=REPO, check=True, capture_output=True)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    class CancelOnProgress(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.progressChanged.connect(lambda p: p > 0 and self.cancel())

    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("sarflood:mapwater", {"INPUT": str(scene), "TTA": True,
                                             "OUTPUT_MASK": str(out_dir / "m.tif"),
                                             "OUTPUT_PROBABILITY": str(out_dir / "p.tif")},
                       feedback=CancelOnProgress())
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("algorithm", ["sarflood:otsu", "sarflood:threshold"])
def test_a_cancelled_run_leaves_the_output_there_before_it(provider, models, tmp_path, algorithm):
    """Cancelled as its backend starts, a run into an existing output leaves that file as it
    was, and nothing beside it."""
    import processing

    vv, vh = _scene_arrays(seed=4)
    scene = write_raster(tmp_path / "scene.tif", [vv, vh], descriptions=["VV", "VH"])
    probability = processing.run("sarflood:mapwater", {
        "INPUT": str(scene), "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "m.tif"), "OUTPUT_PROBABILITY": str(tmp_path / "p.tif")}
    )["OUTPUT_PROBABILITY"]
    out = tmp_path / "out" / "mask.tif"
    out.parent.mkdir()
    given = ({"INPUT": str(scene), "OUTPUT_MASK": str(out)} if algorithm == "sarflood:otsu" else
             {"INPUT": probability, "THRESHOLD": 0.3, "OUTPUT": str(out)})

    class CancelAsTheBackendStarts(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 (QGIS's name)
            super().pushInfo(info)
            if info.startswith("backend: "):   # said just before the child starts
                self.cancel()

    processing.run(algorithm, given)
    before = out.read_bytes()
    with pytest.raises(QgsProcessingException,
                       match="^cancelled: the backend was stopped and wrote no output$"):
        processing.run(algorithm, given, feedback=CancelAsTheBackendStarts())
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["mask.tif"]


def test_otsu_on_the_real_chip(provider, real_chips, tmp_path):
    import processing

    chip = real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif"
    out = processing.run("sarflood:otsu", {"INPUT": str(chip), "OUTPUT_MASK": str(tmp_path / "otsu.tif")})
    vv = read_raster(chip)[0]
    got = read_raster(out["OUTPUT_MASK"])
    valid = np.isfinite(vv)
    t = out["THRESHOLD_DB"]
    assert t == pytest.approx(otsu_threshold(np.where(np.isfinite(read_raster(chip)).all(0), vv,
                                                      np.nan)), abs=1e-4)
    np.testing.assert_array_equal(got[~valid], 255)
    np.testing.assert_array_equal(got[valid], (vv[valid] < t).astype(np.uint8))
    # a share of area: on this EPSG:4326 grid a pixel's area goes with cos(latitude) of its row
    from osgeo import gdal
    gt = gdal.Open(str(chip)).GetGeoTransform()
    weight = np.cos(np.radians(gt[3] + (np.arange(vv.shape[0]) + 0.5) * gt[5]))[:, None]
    share = np.sum(weight * (valid & (vv < t))) / np.sum(weight * valid)
    assert out["WATER_FRACTION"] == pytest.approx(share, abs=2e-6)


def test_batch_style_runs_one_after_another(provider, models, tmp_path):
    """What batch mode does: the same algorithm over several inputs, each with its own outputs."""
    import processing

    fractions = []
    for seed in (3, 4):
        vv, vh = _scene_arrays(seed=seed)
        scene = write_raster(tmp_path / f"s{seed}.tif", [vv, vh])
        out = processing.run("sarflood:mapwater", {"INPUT": str(scene), "MODEL": str(models["threshold"]),
                                                   "OUTPUT_MASK": str(tmp_path / f"m{seed}.tif")})
        _, mask = _expect(vv)
        np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), mask)
        fractions.append(out["WATER_FRACTION"])
    assert fractions[0] != fractions[1]


def test_outputs_loaded_by_processing_get_the_plugin_styles(provider, models, two_band_scene, tmp_path,
                                                            qgis_new_project):
    """As in the Toolbox: outputs are loaded when the run ends, already styled."""
    import processing
    from qgis.core import (QgsPalettedRasterRenderer, QgsProject, QgsSingleBandPseudoColorRenderer)

    out = processing.runAndLoadResults("sarflood:mapwater", {
        "INPUT": str(two_band_scene), "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "mask.tif"), "OUTPUT_PROBABILITY": str(tmp_path / "prob.tif")})
    layers = {layer.source(): layer for layer in QgsProject.instance().mapLayers().values()}
    mask = layers[out["OUTPUT_MASK"]]
    assert isinstance(mask.renderer(), QgsPalettedRasterRenderer)
    assert {c.value for c in mask.renderer().classes()} == {0, 1}
    assert isinstance(layers[out["OUTPUT_PROBABILITY"]].renderer(), QgsSingleBandPseudoColorRenderer)


def test_the_other_algorithms_outputs_are_loaded_styled_and_empty_ones_are_not(
        provider, models, two_band_scene, real_chips, tmp_path, qgis_new_project):
    """Otsu's, threshold's and correctmask's masks and floodextent's classes loaded in the
    plugin's palettes (a flood extent shown as grey 0, 1, 2 says nothing); an all-no-data
    mask written but kept off the map, as mapwater's (correctmask loaded it)."""
    import processing
    from qgis.core import QgsPalettedRasterRenderer, QgsProject

    def run(algorithm: str, parameters: dict) -> dict:
        return processing.runAndLoadResults(algorithm, parameters, feedback=feedback)

    def palette(path: str) -> set[int]:
        [layer] = [layer for layer in QgsProject.instance().mapLayers().values()
                   if layer.source() == path]
        assert isinstance(layer.renderer(), QgsPalettedRasterRenderer), path
        return {c.value for c in layer.renderer().classes()}

    feedback = WarningsFeedback()
    mapped = processing.run("sarflood:mapwater", {
        "INPUT": str(two_band_scene), "MODEL": str(models["threshold"]),
        "OUTPUT_MASK": str(tmp_path / "m.tif"), "OUTPUT_PROBABILITY": str(tmp_path / "p.tif")})
    otsu = run("sarflood:otsu", {"INPUT": str(two_band_scene), "OUTPUT_MASK": str(tmp_path / "o.tif")})
    at = run("sarflood:threshold", {"INPUT": mapped["OUTPUT_PROBABILITY"], "THRESHOLD": 0.3,
                                    "OUTPUT": str(tmp_path / "t.tif")})
    fixes = QgsVectorLayer("Polygon?crs=EPSG:32630&field=water:integer", "fixes", "memory")
    corrected = run("sarflood:correctmask", {"INPUT": otsu["OUTPUT_MASK"], "CORRECTIONS": fixes,
                                             "OUTPUT": str(tmp_path / "c.tif")})
    extent = run("sarflood:floodextent", {"POST": otsu["OUTPUT_MASK"], "PRE": at["OUTPUT"],
                                          "OUTPUT": str(tmp_path / "f.tif")})
    assert [palette(path) for path in (otsu["OUTPUT_MASK"], at["OUTPUT"], corrected["OUTPUT"])] \
        == [{0, 1}] * 3
    assert palette(extent["OUTPUT"]) == {0, 1, 2}
    assert feedback.warnings == []

    loaded = dict(QgsProject.instance().mapLayers())
    nothing = processing.run("sarflood:mapwater", {
        "INPUT": str(real_chips / "S1Hand" / "Paraguay_34417_S1Hand.tif"),
        "MODEL": str(models["threshold"]), "OUTPUT_MASK": str(tmp_path / "m0.tif"),
        "OUTPUT_PROBABILITY": str(tmp_path / "p0.tif")})
    empty = [run("sarflood:threshold", {"INPUT": nothing["OUTPUT_PROBABILITY"],
                                        "OUTPUT": str(tmp_path / "t0.tif")})["OUTPUT"],
             run("sarflood:correctmask", {"INPUT": nothing["OUTPUT_MASK"], "CORRECTIONS": fixes,
                                          "OUTPUT": str(tmp_path / "c0.tif")})["OUTPUT"]]
    assert dict(QgsProject.instance().mapLayers()) == loaded
    assert feedback.warnings == [f"Not added to the map, having no valid pixel: {path}"
                                 for path in empty]
    assert all(Path(path).exists() for path in empty)


def test_mapwater_extent_in_another_crs(provider, models, tmp_path):
    """An extent given in EPSG:4326 over a UTM scene: only that window is mapped."""
    import processing
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject,
                           QgsRectangle)

    vv, vh = _scene_arrays(seed=6)
    scene = write_raster(tmp_path / "scene.tif", [vv, vh])
    utm = QgsRectangle(500100.0, 4199500.0, 500300.0, 4199800.0)  # cols 10-29, rows 20-49
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32630"),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    wgs = to_wgs84.transformBoundingBox(utm.buffered(-2.0))  # well inside the pixel edges
    extent = f"{wgs.xMinimum()},{wgs.xMaximum()},{wgs.yMinimum()},{wgs.yMaximum()} [EPSG:4326]"

    class InfoFeedback(QgsProcessingFeedback):
        infos = []

        def pushInfo(self, text):  # noqa: N802
            self.infos.append(text)

    feedback = InfoFeedback()
    out = processing.run("sarflood:mapwater", {"INPUT": str(scene), "MODEL": str(models["threshold"]),
                                               "EXTENT": extent, "OUTPUT_MASK": str(tmp_path / "m.tif")},
                         feedback=feedback)
    # which CRS the numbers were read in is said: one given without a CRS means the project's
    assert any(i.startswith("Extent: ") and " in EPSG:4326" in i for i in feedback.infos), feedback.infos
    got = read_raster(out["OUTPUT_MASK"])
    # a reprojected box may reach one pixel further on a side: compare on the common core
    assert 30 <= got.shape[0] <= 32 and 20 <= got.shape[1] <= 22, got.shape
    from osgeo import gdal
    x0, _, _, y0, _, _ = gdal.Open(out["OUTPUT_MASK"]).GetGeoTransform()
    r0, c0 = int(round((4200000.0 - y0) / 10.0)), int(round((x0 - 500000.0) / 10.0))
    full = _expect(vv)[1]
    assert 19 <= r0 <= 20 and 9 <= c0 <= 10, (r0, c0)
    np.testing.assert_array_equal(got, full[r0:r0 + got.shape[0], c0:c0 + got.shape[1]])


def test_mapwater_extent_in_a_custom_crs(provider, models, tmp_path):
    """A custom CRS (Settings > Custom Projections) is USER:n, an id only QGIS knows: the
    backend was handed it and every run with such an extent failed."""
    import processing
    from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform,
                           QgsProject, QgsRectangle)

    db = Path(QgsApplication.qgisUserDatabaseFilePath())
    if not db.is_file() or db.stat().st_size == 0:   # a fresh profile's user database
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(QgsApplication.srsDatabaseFilePath()).with_name("qgis.db"), db)
    laea = QgsCoordinateReferenceSystem.fromProj(
        "+proj=laea +lat_0=38 +lon_0=-4 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs")
    srsid = QgsApplication.coordinateReferenceSystemRegistry().addUserCrs(laea, "flood area")
    custom = QgsCoordinateReferenceSystem(f"USER:{srsid}")
    assert srsid > 0 and custom.isValid() and custom.authid().startswith("USER:")
    vv, vh = _scene_arrays(seed=6)
    scene = write_raster(tmp_path / "scene.tif", [vv, vh])
    utm = QgsRectangle(500100.0, 4199500.0, 500300.0, 4199800.0)  # cols 10-29, rows 20-49
    box = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32630"), custom,
                                 QgsProject.instance()).transformBoundingBox(utm.buffered(-2.0))
    extent = f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [{custom.authid()}]"
    out = processing.run("sarflood:mapwater", {"INPUT": str(scene), "MODEL": str(models["threshold"]),
                                               "EXTENT": extent, "OUTPUT_MASK": str(tmp_path / "m.tif")})
    got = read_raster(out["OUTPUT_MASK"])
    assert 30 <= got.shape[0] <= 33 and 20 <= got.shape[1] <= 23, got.shape


def test_otsu_on_a_generated_bimodal_scene(provider, tmp_path):
    import processing

    vv, vh = _scene_arrays(seed=8)
    scene = write_raster(tmp_path / "scene.tif", [vv, vh], descriptions=["VV", "VH"])
    out = processing.run("sarflood:otsu", {"INPUT": str(scene), "OUTPUT_MASK": str(tmp_path / "o.tif")})
    t = out["THRESHOLD_DB"]
    assert t == pytest.approx(otsu_threshold(vv), abs=1e-4)
    assert -22.0 < t < -12.0  # between the water and the land modes
    valid = np.isfinite(vv)
    expected = np.where(valid, (vv < t).astype(np.uint8), 255)
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), expected)


def test_flood_extent_on_real_chip_masks(provider, models, real_chips, tmp_path):
    """Post = the model's mask of the Spain chip, before = Otsu's: EPSG:4326, real no-data."""
    import processing

    chip = str(real_chips / "S1Hand" / "Spain_7370579_S1Hand.tif")
    post = processing.run("sarflood:mapwater", {"INPUT": chip, "MODEL": str(models["threshold"]),
                                                "THRESHOLD": 0.2, "OUTPUT_MASK": str(tmp_path / "post.tif")})
    pre = processing.run("sarflood:otsu", {"INPUT": chip, "OUTPUT_MASK": str(tmp_path / "pre.tif")})
    out = processing.run("sarflood:floodextent", {"POST": post["OUTPUT_MASK"], "PRE": pre["OUTPUT_MASK"],
                                                  "OUTPUT": str(tmp_path / "flood.tif")})
    a, b = read_raster(post["OUTPUT_MASK"]), read_raster(pre["OUTPUT_MASK"])
    expected = np.where(a == 1, np.where(b == 1, 2, 1), 0).astype(np.uint8)
    expected[(a == 255) | (b == 255)] = 255
    np.testing.assert_array_equal(read_raster(out["OUTPUT"]), expected)
    assert out["FLOODED_PIXELS"] == int((expected == 1).sum()) > 0


def test_a_cancel_after_the_outputs_were_written_keeps_them(provider, models, two_band_scene, tmp_path):
    """A cancel that came after the backend had written its outputs (it keeps them and exits
    0 with its result) raised "cancelled: the backend was stopped and wrote no output" while
    the complete files stayed."""
    import processing

    class CancelOnceWritten(WarningsFeedback):
        def pushInfo(self, text):  # noqa: N802
            super().pushInfo(text)
            if text.startswith("wrote "):
                self.cancel()

    feedback = CancelOnceWritten()
    mask = tmp_path / "mask.tif"
    out = processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene), "MODEL": str(models["threshold"]),
                                               "OUTPUT_MASK": str(mask)}, feedback=feedback)
    assert feedback.isCanceled()
    assert out["OUTPUT_MASK"] == str(mask) and out["WATER_AREA_KM2"] == pytest.approx(0.2048)
    assert (read_raster(mask)[:, :32] == 1).all()
    assert any(w.startswith("The cancel came too late") and str(mask) in w for w in feedback.warnings)


def test_an_output_another_run_wrote_meanwhile_is_told_in_qgis_words(provider, models, tmp_path):
    """Two runs to one output: the later said "mask.tif: appeared while running; use
    --overwrite to replace it", an option no QGIS user can give."""
    import processing

    vv = np.full((1024, 1024), -8.0, np.float32)
    vv[:, :512] = -22.0
    scene = write_raster(tmp_path / "scene.tif", [vv, vv - 7.0], descriptions=["VV", "VH"])
    mask = tmp_path / "mask.tif"

    class AnotherRunWrites(QgsProcessingFeedback):
        def pushInfo(self, text):  # noqa: N802
            super().pushInfo(text)
            # the units lines come after the backend checked its outputs: free, then
            if text.startswith("VH:") and not mask.exists():
                mask.write_bytes(b"the other run's mask")

    with pytest.raises(QgsProcessingException) as caught:
        processing.run("sarflood:mapwater", {"INPUT": str(scene), "MODEL": str(models["threshold"]),
                                             "OUTPUT_MASK": str(mask)}, feedback=AnotherRunWrites())
    text = str(caught.value)
    assert "--overwrite" not in text
    assert f"{mask}: was written by another run or program while this run was running" in text
    assert "choose another output file, or remove that one and run again" in text
    assert mask.read_bytes() == b"the other run's mask"


def test_threshold_messages_say_what_was_typed_and_the_range(provider, models, two_band_scene, tmp_path):
    """THRESHOLD=abc said "Threshold: 0.0 must lie strictly between 0 and 1"; 1.5 got QGIS's
    bare "Incorrect parameter value", under declared limits (0 and 1) that are refused."""
    import processing
    from qgis.core import QgsApplication

    params = {"INPUT": str(two_band_scene), "MODEL": str(models["threshold"]),
              "OUTPUT_MASK": str(tmp_path / "mask.tif")}
    for given, said in (("abc", r"Threshold: 'abc' is not a number; give one strictly between 0 and 1"),
                        ("0,5", r"Threshold: '0,5' is not a number"),
                        ("1.5", r"Threshold: 1.5 must lie strictly between 0 and 1"),
                        (1.0, r"Threshold: 1.0 must lie strictly between 0 and 1")):
        with pytest.raises(QgsProcessingException, match=f"^{said}"):
            processing.run("sarflood:mapwater", {**params, "THRESHOLD": given})
    assert not (tmp_path / "mask.tif").exists()
    definition = QgsApplication.processingRegistry().algorithmById("sarflood:mapwater").parameterDefinition(
        "THRESHOLD")
    assert "strictly between 0 and 1" in definition.description()


def test_an_output_that_is_the_input_is_refused_before_it_is_called_replaced(provider, two_band_scene):
    """mapwater OUTPUT_MASK = INPUT said "exists and will be replaced", then refused it."""
    import processing

    lines = []

    class Log(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            lines.append(info)
            super().pushInfo(info)

    before = two_band_scene.read_bytes()
    for alg in ("sarflood:mapwater", "sarflood:otsu"):
        with pytest.raises(QgsProcessingException, match=r"^OUTPUT_MASK: .*scene.tif is the input 'scene'"):
            processing.run(alg, {"INPUT": str(two_band_scene), "OUTPUT_MASK": str(two_band_scene)},
                           feedback=Log())
    assert not any("will be replaced" in line for line in lines), lines
    assert two_band_scene.read_bytes() == before


def test_a_band_swap_warning_names_the_algorithms_parameters(provider, models, two_band_scene, tmp_path):
    """It showed the command line's "--bands VV_INDEX,VH_INDEX" placeholder."""
    import processing

    feedback = WarningsFeedback()
    processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene), "VV_BAND": 2, "VH_BAND": 1,
                                         "MODEL": str(models["threshold"]),
                                         "OUTPUT_MASK": str(tmp_path / "mask.tif")}, feedback=feedback)
    swapped = [w for w in feedback.warnings if "swapped" in w]
    assert swapped and "(setting VV_BAND and VH_BAND chooses the bands of one file" in swapped[0], swapped
    assert "by VV_BAND and VH_BAND)" in swapped[0] and "INDEX" not in swapped[0]


def test_mapwater_refuses_a_layer_whose_crs_was_set_in_qgis_only(provider, models, two_band_scene,
                                                                  tmp_path):
    """The backend reads the file, so a CRS set on the project layer alone would place the
    map by the file's; the algorithm says so (it ran, into the file's CRS)."""
    import processing
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject

    layer = QgsRasterLayer(str(two_band_scene), "scene")
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32631"))
    QgsProject.instance().addMapLayer(layer)
    try:
        with pytest.raises(QgsProcessingException, match=r"'scene': its CRS was set in QGIS to "
                           r"EPSG:32631 .* but its file says EPSG:32630"):
            processing.run("sarflood:mapwater", {"INPUT": layer.id(), "MODEL": str(models["threshold"]),
                                                 "OUTPUT_MASK": str(tmp_path / "m.tif")})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    assert list(tmp_path.glob("m*")) == []


def test_a_no_data_value_set_in_qgis_reaches_the_backend(provider, models, tmp_path, qgis_new_project):
    """The backend reads the file, which does not hold a no-data value set on the layer in
    QGIS (Transparency: Additional no data value): the border it marks was mapped as water."""
    import processing
    from qgis.core import QgsProject, QgsRasterRange

    vv, vh = _scene_arrays(seed=3)
    vv[:, :6], vh[:, :6] = -40.0, -47.0   # an export's border, dark: water to the model
    scene = write_raster(tmp_path / "stack.tif", [vv, vh], descriptions=["VV", "VH"])
    layer = QgsRasterLayer(str(scene), "stack")
    for band in (1, 2):
        layer.dataProvider().setUserNoDataValue(band, [QgsRasterRange(-40.0, -40.0)])
    QgsProject.instance().addMapLayer(layer)
    border = np.zeros(vv.shape, bool)
    border[:, :6] = True
    out = processing.run("sarflood:mapwater", {"INPUT": layer.id(), "MODEL": str(models["threshold"]),
                                               "OUTPUT_MASK": str(tmp_path / "m.tif")})
    _, expected = _expect(np.where(border, np.nan, vv))
    np.testing.assert_array_equal(read_raster(out["OUTPUT_MASK"]), expected)

    layer.dataProvider().setUserNoDataValue(2, [QgsRasterRange(-47.0, -47.0)])
    with pytest.raises(QgsProcessingException, match="no-data values -47, -40 are set in QGIS"):
        processing.run("sarflood:mapwater", {"INPUT": layer.id(), "MODEL": str(models["threshold"]),
                                             "OUTPUT_MASK": str(tmp_path / "m2.tif")})
    layer.dataProvider().setUserNoDataValue(2, [QgsRasterRange(-50.0, -45.0)])
    with pytest.raises(QgsProcessingException, match="its no-data range -50 to -45"):
        processing.run("sarflood:mapwater", {"INPUT": layer.id(), "MODEL": str(models["threshold"]),
                                             "OUTPUT_MASK": str(tmp_path / "m3.tif")})


def test_the_logged_backend_command_runs_as_pasted(provider, models, two_band_scene, tmp_path):
    """The log said "backend: <python> -m backend <args joined by spaces>": no working folder
    (`python -m backend` runs in the plugin's), and a path with a space split in two."""
    import subprocess

    import processing

    lines = []

    class Log(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            lines.append(info)
            super().pushInfo(info)

    out = tmp_path / "flood maps" / "it's the mask.tif"
    out.parent.mkdir()
    processing.run("sarflood:mapwater", {"INPUT": str(two_band_scene), "MODEL": str(models["threshold"]),
                                         "OUTPUT_MASK": str(out)}, feedback=Log())
    made = read_raster(out)
    command = next(line.removeprefix("backend: ") for line in lines if line.startswith("backend: "))
    assert command.startswith("cd ")
    out.unlink()
    subprocess.run(["sh", "-c", command], check=True, capture_output=True, cwd=tmp_path)
    # the same mask (the file's tags hold the run's time, so not the same bytes)
    assert np.array_equal(read_raster(out), made)
