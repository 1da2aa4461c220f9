"""qgis_process, exactly as a user runs it: the plugin on QGIS_PLUGINPATH, enabled in a fresh profile."""
import json
import os
import subprocess

import numpy as np
import pytest

from .conftest import read_raster, write_raster

QGIS_PROCESS = "qgis_process.bin"  # /usr/bin/qgis_process is a wrapper that fails on Debian


@pytest.fixture
def qgis_process_env(plugins_dir, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins_dir),
               QGIS_CUSTOM_CONFIG_PATH=str(profile))
    env.pop("PYTHONPATH", None)  # the plugin itself needs only QGIS; the backend has its own Python
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "sarflood"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stderr
    return env


def _run(env, alg, params, timeout=300, cwd=None):
    args = [QGIS_PROCESS, "run", alg, "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_mapwater_through_qgis_process(qgis_process_env, models, tmp_path):
    rng = np.random.default_rng(7)
    vv = rng.normal(-13.0, 6.0, (80, 80)).astype(np.float32)
    scene = write_raster(tmp_path / "scene.tif", [vv, vv - 6.0], descriptions=["VV", "VH"])
    done = _run(qgis_process_env, "sarflood:mapwater", {
        "INPUT": scene, "MODEL": models["threshold"], "THRESHOLD": 0.25,
        "OUTPUT_MASK": tmp_path / "mask.tif", "OUTPUT_PROBABILITY": tmp_path / "prob.tif"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout)["results"]
    expected = (1.0 / (1.0 + np.exp(vv.astype(np.float64) + 15.0)) > 0.25).astype(np.uint8)
    np.testing.assert_array_equal(read_raster(results["OUTPUT_MASK"]), expected)
    assert results["WATER_FRACTION"] == pytest.approx(expected.mean(), abs=1e-6)
    assert results["THRESHOLD_USED"] == 0.25 and results["MODEL_USED"] == "test-threshold 1.0.0"

    # then vectorize its mask, chained as a script would
    polygons = _run(qgis_process_env, "sarflood:vectorize", {
        "INPUT": results["OUTPUT_MASK"], "MIN_AREA_M2": 0, "OUTPUT": tmp_path / "water.gpkg"})
    assert polygons.returncode == 0, polygons.stderr[-2000:]
    assert json.loads(polygons.stdout)["results"]["POLYGON_COUNT"] > 0


def test_bad_input_through_qgis_process_fails_with_the_reason(qgis_process_env, tmp_path):
    single = write_raster(tmp_path / "vv_only.tif", [np.zeros((8, 8), np.float32)])
    done = _run(qgis_process_env, "sarflood:mapwater", {"INPUT": single, "OUTPUT_MASK": tmp_path / "m.tif"})
    assert done.returncode != 0
    assert "'vv_only' has 1 band" in done.stdout + done.stderr
    assert not (tmp_path / "m.tif").exists()


def test_relative_paths_mean_the_callers_folder(qgis_process_env, models, tmp_path):
    """qgis_process reads relative paths from its working folder; the backend child runs
    in the plugin's folder, so every path must reach it made absolute."""
    rng = np.random.default_rng(3)
    vv = rng.normal(-13.0, 6.0, (64, 64)).astype(np.float32)
    write_raster(tmp_path / "scene.tif", [vv, vv - 6.0], descriptions=["VV", "VH"])
    (tmp_path / "out").mkdir()
    done = _run(qgis_process_env, "sarflood:mapwater", {
        "INPUT": "scene.tif", "MODEL": os.path.relpath(models["threshold"], tmp_path),
        "OUTPUT_MASK": "out/mask.tif", "OUTPUT_PROBABILITY": "out/prob.tif"}, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    expected = (1.0 / (1.0 + np.exp(vv.astype(np.float64) + 15.0)) > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(read_raster(tmp_path / "out" / "mask.tif"), expected)
    assert (tmp_path / "out" / "prob.tif").is_file()
    otsu = _run(qgis_process_env, "sarflood:otsu", {
        "INPUT": "scene.tif", "OUTPUT_MASK": "out/otsu.tif"}, cwd=tmp_path)
    assert otsu.returncode == 0, otsu.stdout[-2000:] + otsu.stderr[-2000:]
    assert (tmp_path / "out" / "otsu.tif").is_file()
