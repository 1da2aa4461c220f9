"""qgis_process, exactly as a user runs it: the plugin on QGIS_PLUGINPATH, enabled in a fresh profile."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from osgeo import ogr
from rasterio.features import shapes

from .conftest import burnt_polygons, read_raster, write_raster

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
    count = json.loads(polygons.stdout)["results"]["POLYGON_COUNT"]
    burnt = burnt_polygons(tmp_path / "water.gpkg", results["OUTPUT_MASK"])
    np.testing.assert_array_equal(burnt, expected)
    ds = ogr.Open(str(tmp_path / "water.gpkg"))
    # one polygon a piece of water (pixels joined by their sides, as gdal:polygonize joins them)
    pieces = len(list(shapes(expected, mask=expected == 1, connectivity=4)))
    assert count == ds.GetLayer(0).GetFeatureCount() == pieces > 1


def test_bad_input_through_qgis_process_fails_with_the_reason(qgis_process_env, tmp_path):
    single = write_raster(tmp_path / "vv_only.tif", [np.zeros((8, 8), np.float32)])
    done = _run(qgis_process_env, "sarflood:mapwater", {"INPUT": single, "OUTPUT_MASK": tmp_path / "m.tif"})
    assert done.returncode != 0
    assert "vv_only.tif: has 1 band (VV); the model needs VV, VH" in done.stdout + done.stderr
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


def _terminate_when(env, alg: str, params: dict, ready, cwd, timeout: float = 120.0) -> int:
    """Run qgis_process and send it SIGTERM (as `kill` does) as soon as ``ready()``; its exit
    status. What it started and left running (gdal_calc) is stopped afterwards, so that
    nothing writes while the test looks."""
    args = [QGIS_PROCESS, "run", alg, "--"] + [f"{k}={v}" for k, v in params.items()]
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{alg} ended (or hung) before the moment to kill it came")
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_flood_extent_keeps_the_old_one_and_the_next_run_tidies(qgis_process_env, provider, tmp_path):
    """kill -TERM of qgis_process mid-run left a hidden .fe.tif.<pid>-<hex>.sarflood-tmp.tif in
    the output folder, a new one per run; now the next run to that output removes it."""
    import processing
    from qgis.core import QgsProcessingFeedback

    rng = np.random.default_rng(1)
    post = write_raster(tmp_path / "post.tif", [(rng.random((2000, 2000)) < 0.3).astype(np.uint8)], nodata=255)
    pre = write_raster(tmp_path / "pre.tif", [(rng.random((2000, 2000)) < 0.1).astype(np.uint8)], nodata=255)
    out = tmp_path / "out"
    out.mkdir()
    old = write_raster(out / "fe.tif", [np.ones((4, 4), np.uint8)]).read_bytes()   # an earlier extent

    def hidden():
        return [p for p in out.iterdir() if p.name.endswith(".sarflood-tmp.tif")]

    status = _terminate_when(qgis_process_env, "sarflood:floodextent",
                             {"POST": post, "PRE": pre, "OUTPUT": out / "fe.tif"}, hidden, tmp_path)
    assert status == -signal.SIGTERM
    assert (out / "fe.tif").read_bytes() == old
    left = hidden()
    assert left   # a kill leaves it: nothing runs in a process that is gone

    lines = []

    class Log(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            lines.append(info)
            super().pushInfo(info)

    small = write_raster(tmp_path / "small.tif", [np.ones((8, 8), np.uint8)], nodata=255)
    processing.run("sarflood:floodextent", {"POST": str(small), "PRE": str(small),
                                            "OUTPUT": str(out / "fe.tif")}, feedback=Log())
    assert f"removed {left[0]}, left by an interrupted run" in lines
    assert sorted(p.name for p in out.iterdir()) == ["fe.tif"]


def test_a_killed_vectorize_keeps_the_geopackage_it_would_replace(qgis_process_env, provider, tmp_path):
    """kill -TERM of qgis_process while vectorize wrote an existing GeoPackage left a 65 KB
    GeoPackage without a layer and a -journal file: the user's polygons were gone."""
    import processing

    from .test_mask_algorithms import _features

    rng = np.random.default_rng(5)
    speckle = write_raster(tmp_path / "speckle.tif", [(rng.random((600, 600)) < 0.3).astype(np.uint8)],
                           nodata=255)
    few = np.zeros((50, 50), np.uint8)
    few[5:10, 5:10] = few[20:30, 20:40] = 1
    out = tmp_path / "out"
    out.mkdir()
    gpkg = out / "water.gpkg"
    processing.run("sarflood:vectorize", {"INPUT": str(write_raster(tmp_path / "few.tif", [few], nodata=255)),
                                          "OUTPUT": str(gpkg)})
    before, mtime = _features(gpkg), gpkg.stat().st_mtime_ns
    assert len(before) == 2

    def writing():   # the last step has begun: into a hidden folder, or (before) into the file
        hidden = [p for p in out.iterdir() if p.is_dir() and p.name.startswith(".water.gpkg.")]
        return (any(any(p.iterdir()) for p in hidden)
                or gpkg.stat().st_mtime_ns != mtime or (out / "water.gpkg-journal").exists())

    status = _terminate_when(qgis_process_env, "sarflood:vectorize",
                             {"INPUT": speckle, "OUTPUT": gpkg}, writing, tmp_path)
    assert status == -signal.SIGTERM
    assert _features(gpkg) == before
    assert not (out / "water.gpkg-journal").exists()
    processing.run("sarflood:vectorize", {"INPUT": str(tmp_path / "few.tif"), "OUTPUT": str(gpkg)})
    assert sorted(p.name for p in out.iterdir()) == ["water.gpkg"]
