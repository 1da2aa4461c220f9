"""``python -m backend`` as the plugin and a user run it: real child processes."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio

from backend import cli
from backend.card import UNITS, BandSpec
from backend.cli import build_parser
from backend.otsu import otsu_threshold
from backend.sink import CODECS
from tests.backend.conftest import (REPO, Collect, listing, random_db, run_cli, sigmoid,
                                    write_raster)
from training.toy_models import raw_db_card, threshold_model

RESULT_FIELDS = {
    "outputs", "model", "model_path", "device", "provider", "provider_notes", "threshold",
    "units_detected", "units_used", "input_pixel_size_m", "model_pixel_size_m", "width",
    "height", "valid_pixels", "water_pixels", "valid_area_km2", "water_area_km2",
    "water_fraction", "seconds", "probability_histogram"}
EVENTS = {"start", "progress", "info", "warning", "result", "error"}


def events(stdout: str) -> list[dict]:
    lines = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON
    assert all(e["event"] in EVENTS for e in lines)
    return lines


@pytest.fixture
def src(tmp_path) -> str:
    return write_raster(tmp_path / "in.tif", random_db((300, 260), nan_frac=0.01))


def test_predict_json_protocol(tmp_path, src, models):
    out = tmp_path / "out"
    out.mkdir()
    p = run_cli("predict", src, "--mask", str(out / "m.tif"), "--probability", str(out / "p.tif"),
                "--model", models["threshold"], "--progress", "json")
    assert p.returncode == 0, p.stderr
    ev = events(p.stdout)
    assert ev[0]["event"] == "start" and ev[-1]["event"] == "result"
    assert [e["event"] for e in ev].count("result") == 1
    assert any(e["event"] == "progress" for e in ev)
    assert any(e["event"] == "info" and "CUDA not used" in e["message"] for e in ev)
    result = ev[-1]
    assert RESULT_FIELDS <= set(result)
    assert result["outputs"]["mask"] == str(out / "m.tif")
    with rasterio.open(out / "p.tif") as ds:
        p_out = ds.read(1)
    bands = rasterio.open(src).read()
    assert np.nanmax(np.abs(p_out - sigmoid(-(bands[0] + 15.0)))) < 1e-6


def test_predict_cuts_the_mask_at_the_threshold_flag(tmp_path, src, models):
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model", models["threshold"],
                "--threshold", "0.3", "--progress", "json")
    assert p.returncode == 0, p.stderr
    assert events(p.stdout)[-1]["threshold"] == 0.3
    bands = rasterio.open(src).read().astype(np.float64)
    nodata = np.isnan(bands).any(axis=0)
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert np.array_equal(ds.read(1), np.where(nodata, 255, sigmoid(-(bands[0] + 15)) > 0.3))


def test_error_is_one_json_event_and_exit_1(tmp_path, models):
    p = run_cli("predict", str(tmp_path / "missing.tif"), "--mask", str(tmp_path / "m.tif"),
                "--model", models["threshold"], "--progress", "json")
    assert p.returncode == 1
    ev = events(p.stdout)
    assert ev[-1] == {"event": "error", "kind": "InputError",
                      "message": f"{tmp_path}/missing.tif: file not found"}
    assert listing(tmp_path) == []


def test_error_in_bar_mode_is_one_line_on_stderr(tmp_path, src, models):
    p = run_cli("predict", src, "--mask", src, "--model", models["threshold"])
    assert p.returncode == 1 and p.stdout == ""
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {src}: the mask output is also an input; choose another path"]


def test_default_model_is_the_bundled_one(tmp_path, src):
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--progress", "json")
    assert p.returncode == 0, p.stdout
    result = events(p.stdout)[-1]
    models_dir = REPO / "resources" / "models"
    bundled = models_dir / (models_dir / "DEFAULT").read_text().strip()
    assert result["model_path"] == str(bundled)
    assert result["model"]["name"] == bundled.stem


def test_card_command(models, tmp_path):
    p = run_cli("card", models["threshold"])
    assert p.returncode == 0 and "test-threshold 1.0.0" in p.stdout and "band VV: dB" in p.stdout
    # the whole text, for a card whose every number differs from a default: a sign or a
    # threshold printed wrong reads as the model's own
    card = replace(raw_db_card("test-card", margin=4, threshold=0.437, metrics={"iou_test": 0.81}),
                   bands=(BandSpec("VV", "dB", (-30.0, 5.0), -15.0, 0.2),
                          BandSpec("VH", "linear", (0.0, 0.5), 3.0, 2.5)))
    onnx.save(threshold_model(card), tmp_path / "card.onnx")
    p = run_cli("card", str(tmp_path / "card.onnx"))
    assert p.stdout == """\
test-card 1.0.0  (water_segmentation, card schema 1)
  Exact test model; not trained.
  band VV: dB, clip [-30.0, 5.0], (x + 15) / 0.2
  band VH: linear, clip [0.0, 0.5], (x - 3) / 2.5
  pixel size 10 m; tiles 256 px, margin 4, size multiple 1
  input 's1' -> output 'water_probability' (water_probability), default threshold 0.437
  training data: none: hand-set weights
  metrics: {"iou_test": 0.81}
  license: MIT
"""
    p = run_cli("card", models["threshold"], "--json")
    assert json.loads(p.stdout)["name"] == "test-threshold"


def test_card_command_refuses_an_invalid_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    p = run_cli("card", str(bad))
    assert p.returncode == 1 and p.stderr.strip().startswith(f"error: {bad}: not a loadable")


def test_otsu_command(tmp_path, src):
    p = run_cli("otsu", src, "--mask", str(tmp_path / "o.tif"), "--compress", "deflate",
                "--progress", "json")
    assert p.returncode == 0, p.stdout
    r = events(p.stdout)[-1]
    with rasterio.open(tmp_path / "o.tif") as ds:
        m = ds.read(1)
        assert ds.profile["compress"] == "deflate"
    vv, vh = rasterio.open(src).read()
    valid = np.isfinite(vv) & np.isfinite(vh)
    assert r["threshold_db"] == pytest.approx(otsu_threshold(np.where(valid, vv, np.nan)), abs=1e-4)
    assert r["valid_pixels"] == int(valid.sum())
    # no data where either band has none, as in predict (VH's no data was counted dry land)
    nodata = np.isnan(vv) | np.isnan(vh)
    assert (nodata & ~np.isnan(vv)).any()
    assert np.array_equal(m == 255, nodata)
    assert np.array_equal(m == 1, ~nodata & (vv <= r["threshold_db"]))


@pytest.mark.parametrize("dtype, codec", [("float32", "zstd"), ("uint8", "deflate")])
def test_finalize_thresholds_and_keeps_provenance(tmp_path, src, models, dtype, codec):
    prob = tmp_path / "p.tif"
    assert run_cli("predict", src, "--probability", str(prob), "--model", models["threshold"],
                   "--probability-dtype", dtype, "--compress", codec).returncode == 0
    p = run_cli("finalize", str(prob), "--threshold", "0.7", "--mask", str(tmp_path / "f.tif"),
                "--tag", "REVIEWER=ana", "--compress", codec, "--progress", "json")
    assert p.returncode == 0, p.stdout
    r = events(p.stdout)[-1]
    with rasterio.open(prob) as ds:
        q = ds.read(1)
    probability = q / 250.0 if dtype == "uint8" else q
    nodata = (q == 255) if dtype == "uint8" else np.isnan(q)
    with rasterio.open(tmp_path / "f.tif") as ds:
        mask, tags = ds.read(1), ds.tags()
        assert ds.profile["compress"] == codec
    assert np.array_equal(mask, np.where(nodata, 255, probability > 0.7))
    assert tags["SARFLOOD_MODEL"] == "test-threshold" and tags["SARFLOOD_THRESHOLD"] == "0.7"
    assert tags["REVIEWER"] == "ana" and tags["SARFLOOD_INPUTS"] == src
    assert r["water_pixels"] == int((mask == 1).sum())


def test_finalize_refuses_what_is_not_a_probability(tmp_path, src, models):
    mask = tmp_path / "m.tif"
    assert run_cli("predict", src, "--mask", str(mask), "--model", models["threshold"]
                   ).returncode == 0
    vv = write_raster(tmp_path / "vv.tif", random_db((40, 30))[:1], descriptions=("VV",))
    for given, message in ((str(mask), f"{mask}: is a mask written by SAR Flood Mapper, not "
                                       "a water probability"),
                           (vv, f"{vv}: value ")):
        p = run_cli("finalize", given, "--threshold", "0.5", "--mask", str(tmp_path / "f.tif"))
        errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
        assert p.returncode == 1 and len(errors) == 1 and message in errors[0], p.stderr
        assert not (tmp_path / "f.tif").exists()


def test_an_extent_west_of_greenwich_is_given_as_documented(tmp_path, models):
    """argparse takes '-0.77,...' for an option unless it is joined with '='."""
    bands = random_db((60, 50))
    src = write_raster(tmp_path / "w.tif", bands, origin=(-1000.0, 5000000.0))
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model",
                models["threshold"], "--extent", "-900,4999600,-700,4999900")
    assert p.returncode == 0, p.stderr
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert (ds.width, ds.height) == (20, 30)


def test_the_wheels_own_proj_and_gdal_data_win_over_an_inherited_environment(tmp_path, models):
    """QGIS (on Windows) runs with PROJ_LIB/PROJ_DATA and GDAL_DRIVER_PATH of its own PROJ and
    GDAL, which the backend inherits: the wheel's PROJ read that other proj.db and knew no
    EPSG code ("extent CRS 'EPSG:4326' is not a CRS rasterio understands")."""
    other = tmp_path / "qgis_proj"
    other.mkdir()
    (other / "proj.db").write_bytes(b"not the wheel's database")
    bands = random_db((60, 50))
    src = write_raster(tmp_path / "s.tif", bands)   # UTM 30N
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model", models["threshold"],
                "--extent=-3.0,45.1,-2.99,45.2", "--extent-crs", "EPSG:4326",
                env={"PROJ_DATA": str(other), "PROJ_LIB": str(other),
                     "GDAL_DRIVER_PATH": str(tmp_path / "plugins")})
    assert "not a CRS rasterio understands" not in p.stderr, p.stderr
    assert "does not overlap the raster" in p.stderr   # the extent was read in EPSG:4326
    assert "proj.db" not in p.stderr


def test_bar_and_none_print_no_result_document_and_stats_json_does(tmp_path, src, models):
    mask = tmp_path / "m.tif"
    bar = run_cli("predict", src, "--mask", str(mask), "--model", models["threshold"])
    assert bar.returncode == 0 and bar.stdout == ""
    assert f"wrote mask {mask}" in bar.stderr and "water " in bar.stderr
    none = run_cli("stats", str(mask), "--progress", "none")
    assert none.returncode == 0 and none.stdout == "" and none.stderr == ""
    doc = json.loads(run_cli("stats", str(mask), "--json").stdout)
    assert doc["valid_pixels"] > 0


def test_stats_takes_json_or_a_progress_mode_not_both(tmp_path):
    """--json is --progress result: given with --progress, the last one won silently
    (--json --progress none printed nothing, exit 0)."""
    p = run_cli("stats", str(tmp_path / "m.tif"), "--json", "--progress", "none")
    assert p.returncode == 2 and p.stdout == ""
    assert "argument --progress: not allowed with argument --json" in p.stderr


def test_a_file_name_that_is_not_utf8_is_named(tmp_path, src, capsys):
    """Latin-1 bytes in a name (Python holds them as surrogates) failed inside rasterio as
    an internal error with a traceback, for an input or an output."""
    bad = str(tmp_path / "lat\udce9.tif")
    for argv in (["predict", bad, "--mask", str(tmp_path / "m.tif")],
                 ["predict", src, "--mask", bad]):
        assert cli.main([*argv, "--progress", "json"]) == 1
        last = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert last["kind"] == "UsageError" and last["message"].startswith(
            f"{tmp_path}/lat\ufffd.tif: the name is not UTF-8"), last
    assert listing(tmp_path) == ["in.tif"]


def test_a_small_area_is_summed_up_in_square_metres(tmp_path, src, models):
    """A 3 x 3 px --extent was summed up as 'water 0.000 km2 of 0.000 km2 valid', then
    as 'water 0.000 km2 of 900 m2 valid' where it held no water."""
    p = run_cli("predict", src, "--mask", tmp_path / "m.tif", "--model", models["threshold"],
                "--extent", "500000,4999970,500030,5000000")
    assert p.returncode == 0 and re.search(r"water [\d,]+ m2 of 900 m2 valid \(", p.stderr), \
        p.stderr
    dry = Collect()   # the unit is the valid area's, whatever the water
    cli._summary(dry, {"water_area_km2": 0.0, "valid_area_km2": 0.0009, "water_fraction": 0.0})
    assert dry.infos == ["water 0 m2 of 900 m2 valid (0.00%) in 0.0 s"]


def test_an_unforeseen_error_is_still_one_error_event(monkeypatch, capsys, tmp_path):
    """A bug inside a command: the JSON stream still ends in one error, exit 1, and the
    traceback goes to stderr for a report."""
    def broken(*args):
        raise ValueError("could not broadcast input array")
    monkeypatch.setattr(cli, "_stats", broken)
    assert cli.main(["stats", str(tmp_path / "m.tif"), "--progress", "json"]) == 1
    out, err = capsys.readouterr()
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "error" and last["kind"] == "InternalError"
    assert last["message"].endswith("ValueError: could not broadcast input array")
    assert "Traceback" in err


def test_units_are_read_in_any_case_and_are_the_cards():
    assert cli.UNIT_NAMES == UNITS
    args = build_parser().parse_args(["predict", "in.tif", "--mask", "m.tif", "--units", "DB"])
    assert args.units == "dB"


def test_scene_writes_the_seed_and_units_asked_for(tmp_path):
    from backend.scene import write_scene

    asked = tmp_path / "asked.tif"
    assert run_cli("scene", str(asked), "--size", "64", "--seed", "3", "--units", "linear"
                   ).returncode == 0
    write_scene(str(tmp_path / "same.tif"), 64, seed=3, units="linear")
    write_scene(str(tmp_path / "default.tif"), 64)
    with rasterio.open(asked) as a, rasterio.open(tmp_path / "same.tif") as same, \
            rasterio.open(tmp_path / "default.tif") as default:
        assert np.array_equal(a.read(), same.read(), equal_nan=True)
        assert not np.array_equal(a.read(), default.read(), equal_nan=True)


def test_scene_keeps_existing_files_and_refuses_bad_sizes(tmp_path):
    scene = tmp_path / "s.tif"
    scene.write_text("the user's data")
    p = run_cli("scene", str(scene), "--size", "64")
    assert p.returncode == 1 and f"error: {scene}: exists; use --overwrite" in p.stderr
    assert scene.read_text() == "the user's data"
    p = run_cli("scene", str(tmp_path / "z.tif"), "--size", "0")
    assert p.returncode == 1 and "error: --size 0: give at least 1 pixel" in p.stderr
    assert run_cli("scene", str(scene), "--size", "64", "--overwrite").returncode == 0
    with rasterio.open(scene) as ds:
        assert ds.shape == (64, 64)
    assert listing(tmp_path) == ["s.tif"]


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_demo_and_bench_refuse_an_empty_scene(tmp_path, command):
    p = run_cli(command, "--size", "0", *(["--workdir", str(tmp_path)] if command == "bench"
                                           else ["--out", str(tmp_path)]))
    assert p.returncode == 1 and p.stderr.strip().endswith(
        "error: --size 0: give at least 1 pixel" if command == "demo" else
        "error: --size 0: give at least 256 pixels (a smaller scene's Mpx/s round to 0)")
    assert "Traceback" not in p.stderr and listing(tmp_path) == []


def test_bench_refuses_a_scene_too_small_to_time_before_writing(tmp_path):
    """A 7 x 7 scene's Mpx/s rounded to 0, and bench ended in a ZeroDivisionError with no
    table (reproduce --bench-size 7 after all its training)."""
    p = run_cli("bench", "--workdir", str(tmp_path), "--size", "512", "--size", "7")
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "error: --size 7: give at least 256 pixels (a smaller scene's Mpx/s round to 0)"], p.stderr
    assert listing(tmp_path) == []


def test_a_probability_type_without_a_probability_file_is_refused(tmp_path, src):
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--probability-dtype", "uint8")
    assert p.returncode == 1 and p.stderr.strip().endswith(
        "error: --probability-dtype uint8 sets the type of the --probability file: give "
        "--probability too"), p.stderr
    assert not (tmp_path / "m.tif").exists()


def test_a_batch_bigger_than_the_raster_costs_no_more_memory(tmp_path):
    """The warm-up call took the batch asked for before the raster was known: asked for
    64 tiles, a 9-tile scene peaked at 2.5 GB against 0.25 GB with 1 (bundled model)."""
    src = write_raster(tmp_path / "in.tif", random_db((600, 600)))
    peaks = []
    for batch in ("1", "64"):
        p = run_cli("predict", src, "--mask", str(tmp_path / f"m{batch}.tif"), "--batch-size",
                    batch, "--progress", "json")
        assert p.returncode == 0, p.stderr
        result = next(json.loads(line) for line in p.stdout.splitlines()
                      if '"event": "result"' in line)
        peaks.append(result["peak_rss_mb"])
    assert peaks[1] < peaks[0] + 300, peaks


def test_otsu_given_a_vh_file_asks_for_vv_not_for_a_model(tmp_path):
    vh = write_raster(tmp_path / "vh.tif", random_db((32, 32))[1:], descriptions=("VH",))
    p = run_cli("otsu", vh, "--mask", str(tmp_path / "o.tif"))
    assert p.returncode == 1 and p.stderr.strip().endswith(
        f"{vh}: has 1 band (VH); Otsu needs VV: give its VV band"), p.stderr
    assert listing(tmp_path) == ["vh.tif"]


def test_otsu_refuses_an_extent_crs_without_an_extent(tmp_path, src):
    p = run_cli("otsu", src, "--mask", str(tmp_path / "o.tif"), "--extent-crs", "EPSG:4326")
    assert p.returncode == 1 and "error: --extent-crs needs --extent" in p.stderr
    assert not (tmp_path / "o.tif").exists()


def test_compress_choices_are_the_sinks_codecs():
    # the CLI lists them itself so that --help does not import rasterio
    subcommands = next(a for a in build_parser()._actions if a.choices and "predict" in a.choices)
    options = [a for sub in subcommands.choices.values() for a in sub._actions
               if "--compress" in a.option_strings]
    assert len(options) >= 3 and all(tuple(a.choices) == CODECS for a in options)


def test_devices_command(tmp_path):
    import onnxruntime as ort

    p = run_cli("devices")
    report = json.loads(p.stdout)
    assert "CPUExecutionProvider" in report["available_providers"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():   # the pinned CPU build
        assert report["cuda_usable"] is False and "CUDAExecutionProvider" in report["reason"]
        assert report["reason"].startswith("CUDA cannot be used: ")
        assert "asked for" not in report["reason"]
        return
    # onnxruntime-gpu: CUDA is usable exactly where a session of a small model starts on it
    onnx.save(threshold_model(), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CUDAExecutionProvider",
                                                                         "CPUExecutionProvider"])
    assert report["cuda_usable"] is (session.get_providers()[0] == "CUDAExecutionProvider")


def test_version():
    assert run_cli("--version").stdout.startswith("sarflood backend ")


def test_the_venvs_python_runs_the_cli_from_any_folder(tmp_path, src):
    """`make` puts the repository on the venv's import path: a user in their data
    folder runs `.../.venv/bin/python -m backend` without setting PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-m", "backend", "predict", src, "--mask", "m.tif"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "m.tif").exists()


def _predict_mid_run(tmp_path, models, **popen) -> tuple[subprocess.Popen, Path]:
    """A ``predict`` of several seconds, running and writing, over the user's old mask in
    the folder it returns."""
    src = write_raster(tmp_path / "in.tif", random_db((1024, 1024)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.tif").write_text("the user's old mask")
    # tiny tiles under TTA: thousands of model calls, seconds of work
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "predict", src, "--mask", str(out / "m.tif"),
         "--probability", str(out / "p.tif"), "--model", models["threshold"], "--tta",
         "--tile-size", "16", "--batch-size", "1", "--overwrite", "--progress", "json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress":
            break
    assert 0 < seen[-1]["fraction"] < 0.5, "the run must be cancelled mid-way"
    assert any(name.endswith("sarflood-tmp") for name in listing(out)), "it is writing"
    return proc, out


def _assert_cancelled_cleanly(proc: subprocess.Popen, out: Path) -> None:
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    last = events(rest)[-1]
    assert last["event"] == "error" and last["kind"] == "Cancelled"
    assert listing(out) == ["m.tif"]
    assert (out / "m.tif").read_text() == "the user's old mask"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_leaves_no_partial_output(tmp_path, models, sig):
    proc, out = _predict_mid_run(tmp_path, models)
    proc.send_signal(sig)
    _assert_cancelled_cleanly(proc, out)


def test_the_end_of_the_plugins_stdin_is_a_cancel(tmp_path, models):
    """The plugin cancels by closing the backend's stdin, and the OS closes it when QGIS
    dies: on Windows cancel was a hard kill that left the partial outputs, and on macOS
    and Windows a backend whose QGIS had died ran on to the end. Only with
    SARFLOOD_PARENT_PIPE=1: a closed stdin (Ctrl-D at a terminal) cancels nothing."""
    read, write = os.pipe()   # communicate() flushes a Popen's stdin, closed or not
    try:
        proc, out = _predict_mid_run(tmp_path, models, stdin=read,
                                     env={**os.environ, "SARFLOOD_PARENT_PIPE": "1"})
    finally:
        os.close(read)
    os.close(write)
    _assert_cancelled_cleanly(proc, out)
    p = subprocess.run([sys.executable, "-m", "backend", "predict", tmp_path / "in.tif",
                        "--mask", tmp_path / "m.tif", "--model", models["threshold"], "--progress",
                        "json"], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert events(p.stdout)[-1]["event"] == "result"


def test_bench_json(tmp_path):
    p = run_cli("bench", "--size", "512", "--raw-seconds", "0.3", "--json",
                "--workdir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    (run,) = report["runs"]
    assert run["size"] == 512 and run["raw"]["tile_mpx_s"] > 0
    assert run["predict"]["mpx_s"] > 0 and run["otsu"]["mpx_s"] > 0
    assert 50 < run["predict"]["peak_rss_mb"] < 2000
    ratio = run["predict"]["mpx_s"] / run["raw"]["raster_mpx_s"]
    assert run["ratio_e2e_to_raw"] == pytest.approx(ratio, rel=0.02, abs=1e-3)
    every = run["predict"]["every_run_seconds"]   # three runs by default; the median shown
    assert len(every) == 3 and run["predict"]["seconds"] == sorted(every)[1]
    # every stage outside the model is timed, in thread CPU time: together they
    # cannot exceed the CPU time of the whole predict process
    stages = run["predict"]["stage_cpu_seconds"]
    assert set(stages) == {"units", "read", "normalise", "batch", "blend", "mask and area",
                           "encode", "overviews"}
    assert all(v >= 0 for v in stages.values()) and stages["read"] > 0
    assert sum(stages.values()) <= run["predict"]["cpu_seconds"]
    assert listing(tmp_path) == []   # the scene and outputs were temporary
    table = run_cli("bench", "--size", "256", "--raw-seconds", "0.2", "--repeat", "2").stdout
    assert "| 256 |" in table and "raw model" in table
    assert "N=256, 2 predict runs (the table shows the median)" in table
    assert "N=256, CPU ns per raster pixel: model alone" in table and "read " in table


def test_bench_names_the_gpus_it_ran_beside():
    from backend.bench import format_table, machine
    m = machine()
    assert isinstance(m["gpus"], list)   # nvidia-smi's list; empty without it
    m["gpus"] = ["NVIDIA H100 80GB HBM3, 550.54.15"]
    head = format_table({"machine": m, "runs": [], "outputs": "mask", "scene": "s"}).splitlines()[0]
    assert ", GPU NVIDIA H100 80GB HBM3, 550.54.15, onnxruntime" in head


def test_bench_takes_relative_paths_from_any_folder(tmp_path, models):
    """The end-to-end runs are children started in the package's folder: a relative
    --model was looked for there (an internal error after the scene was written)."""
    shutil.copy(models["threshold"], tmp_path / "m.onnx")
    p = subprocess.run([sys.executable, "-m", "backend", "bench", "--model", "m.onnx",
                        "--size", "256", "--raw-seconds", "0.2", "--repeat", "1",
                        "--workdir", ".", "--json"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model_path"] == str(tmp_path / "m.onnx")
    p = run_cli("bench", "--size", "256", "--workdir", str(tmp_path / "nowhere"))
    assert p.returncode == 1 and "nowhere: not an existing folder" in p.stderr


def test_bench_on_a_geographic_scene_resamples(tmp_path):
    """--latitude 45: the scene's pixels are 7.07 x 10 m, predict resamples them, and the
    model alone is measured on the tiles the engine ran (the model grid's)."""
    p = run_cli("bench", "--size", "384", "--raw-seconds", "0.2", "--repeat", "1",
                "--latitude", "45", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    (run,) = report["runs"]
    assert report["scene"].startswith("EPSG:4326 at 45 N") and run["predict"]["resampled"]
    assert {"resample back", "input no data"} <= set(run["predict"]["stage_cpu_seconds"])
    assert run["raw"]["tiles"] == 1   # 384 x 272 model pixels: one 512 px cell
    assert run["ratio_e2e_to_raw"] > 0


def test_demo_runs_twice(tmp_path):
    out = tmp_path / "demo"
    for _ in range(2):  # the second run replaces the demo's own outputs
        p = run_cli("demo", "--out", str(out), "--size", "512")
        assert p.returncode == 0, p.stderr
    assert "IoU" in p.stdout and "Otsu" in p.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["iou"] > 0.8
    assert listing(out) == ["model_mask.tif", "model_probability.tif", "otsu_mask.tif",
                            "scene.tif", "summary.json", "truth.tif"]


def test_demo_leaves_a_folder_it_did_not_write_alone(tmp_path):
    """A user's folder with files of the demo's names is refused, unchanged, and replaced
    only with --overwrite; a --size refused leaves no folder behind."""
    out = tmp_path / "project"
    out.mkdir()
    (out / "model_mask.tif").write_text("the user's mask")
    (out / "notes.txt").write_text("kept")
    p = run_cli("demo", "--out", str(out), "--size", "256")
    assert p.returncode == 1 and p.stderr.strip().endswith(
        f"error: --out {out}: holds model_mask.tif, not written by the demo; give another "
        f"folder, or --overwrite to replace them"), p.stderr
    assert (out / "model_mask.tif").read_text() == "the user's mask"
    assert listing(out) == ["model_mask.tif", "notes.txt"]
    assert run_cli("demo", "--out", str(out), "--size", "256", "--overwrite").returncode == 0
    with rasterio.open(out / "model_mask.tif") as ds:
        assert ds.shape == (256, 256)
    assert run_cli("demo", "--out", str(out), "--size", "256").returncode == 0  # now the demo's
    p = run_cli("demo", "--out", str(tmp_path / "new"), "--size", "0")
    assert p.returncode == 1 and not (tmp_path / "new").exists()


def test_a_scene_the_scene_command_wrote_is_not_taken_for_the_demos(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    assert run_cli("scene", str(out / "scene.tif"), "--size", "64").returncode == 0
    before = (out / "scene.tif").read_bytes()
    p = run_cli("demo", "--out", str(out), "--size", "128")
    assert p.returncode == 1 and "holds scene.tif, not written by the demo" in p.stderr, p.stderr
    assert (out / "scene.tif").read_bytes() == before and listing(out) == ["scene.tif"]


def test_a_scene_larger_than_the_disk_is_one_line_and_leaves_nothing(tmp_path):
    """It wrote until the disk was full, then gave a traceback (and an empty demo folder)."""
    huge = str(10 ** 6)   # 8 TB of float32 VV and VH
    for args, folder in ((("scene", str(tmp_path / "s.tif"), "--size", huge), tmp_path),
                         (("demo", "--out", str(tmp_path / "demo"), "--size", huge), None),
                         (("bench", "--workdir", str(tmp_path), "--size", huge), tmp_path)):
        p = run_cli(*args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and "GB are free there" in lines[0], p.stderr
        assert listing(tmp_path) == [], args


def test_bench_refuses_a_latitude_beyond_the_poles_before_writing(tmp_path):
    p = run_cli("bench", "--workdir", str(tmp_path), "--size", "256", "--latitude", "95")
    assert p.returncode == 1 and p.stderr.strip().endswith(
        "error: --latitude 95: a scene 256 rows high would run from latitude 95 to 94.977, "
        "beyond the poles"), p.stderr
    assert listing(tmp_path) == []


def test_a_run_on_data_with_no_data_prints_only_its_own_lines(tmp_path, models):
    """`--progress none` promises only warnings and errors: numpy's RuntimeWarnings (a NaN
    cast in the area histogram) must not leak onto stderr."""
    src = write_raster(tmp_path / "holes.tif", random_db((300, 280), nan_frac=0.2))
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--probability",
                str(tmp_path / "p.tif"), "--model", models["threshold"], "--progress", "none")
    assert p.returncode == 0 and p.stderr == "", p.stderr


@pytest.mark.parametrize("shape", [(2048, 100), (300, 1), (1000, 150)])
def test_outputs_taller_than_wide_are_written(tmp_path, models, shape):
    """Their overviews were checked against rasterio's factors, which it derives from the
    width alone (2048 x 100: 14, not 16): every such map failed at its very end."""
    src = tmp_path / "tall.tif"
    write_raster(src, random_db(shape, seed=4))
    mask, prob = tmp_path / "m.tif", tmp_path / "p.tif"
    p = run_cli("predict", src, "--mask", mask, "--probability", prob, "--model",
                models["threshold"], "--progress", "none")
    assert p.returncode == 0, p.stderr
    p = run_cli("otsu", src, "--mask", tmp_path / "o.tif", "--progress", "none")
    assert p.returncode == 0, p.stderr
    with rasterio.open(mask) as ds:
        assert (ds.height, ds.width) == shape and ds.overviews(1) != []


def test_a_second_signal_waits_for_the_clean_up():
    """A second Ctrl-C stops a run at once, but one that landed while partial outputs
    were being removed left them behind (1 run in 10 in a review)."""
    import threading

    from backend.pipeline import cleaning_up
    from backend.progress import JsonReporter
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cancel = threading.Event()
    try:
        reporter = JsonReporter(stream=open(os.devnull, "w"))
        cli._install_signals(cancel, lambda: reporter)
        os.kill(os.getpid(), signal.SIGTERM)        # the first: cancel
        assert cancel.is_set()
        with cleaning_up():
            os.kill(os.getpid(), signal.SIGINT)     # the second, during clean-up: waits
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)     # the second, elsewhere: stops now
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_a_signal_inside_a_blocked_write_cancels_cleanly():
    """Ctrl-C while stdout is a full pipe (a parent busy elsewhere): the handler ran inside
    the blocked write and wrote its line into it, which Python refuses ("reentrant call"),
    so the run ended with an internal error instead of a cancel."""
    import fcntl
    import io
    import threading
    import time

    from backend.progress import JsonReporter
    before = signal.getsignal(signal.SIGINT)
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)   # F_SETPIPE_SZ: a one-page pipe fills at once
    stream = io.open(w, "w")
    reporter, cancel, read = JsonReporter(stream, min_interval_s=0), threading.Event(), []

    def parent():   # waits until the pipe is full and the writer blocked, signals, reads
        while int.from_bytes(fcntl.ioctl(r, 0x541B, b"\0" * 4), "little") < 4000:  # FIONREAD
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        while chunk := os.read(r, 65536):
            read.append(chunk)

    reader = threading.Thread(target=parent)
    try:
        cli._install_signals(cancel, lambda: reporter)
        reader.start()
        step = 0
        while not cancel.is_set():
            reporter.progress(step / 1e6, "predict")
            step += 1
        reporter.error("cancelled", kind="Cancelled")
    finally:
        signal.signal(signal.SIGINT, before)
        stream.close()   # the parent reads to the end
        reader.join()
    lines = events(b"".join(read).decode())
    assert {"event": "info", "message": "SIGINT: cancelling, removing partial outputs"} in lines
    assert lines[-1]["kind"] == "Cancelled"


def test_a_signal_just_after_the_start_line_is_a_cancel(tmp_path, src, models, monkeypatch,
                                                       capsys):
    """A Ctrl-C between the start line and the handlers' install ended the run with a bare
    KeyboardInterrupt traceback and no error line after the start."""
    made = cli.make_reporter

    def reporter_then_signal(mode):
        reporter = made(mode)   # the start line is out
        os.kill(os.getpid(), signal.SIGINT)
        return reporter

    monkeypatch.setattr(cli, "make_reporter", reporter_then_signal)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rc = cli.main(["predict", src, "--mask", str(tmp_path / "m.tif"), "--model",
                       models["threshold"], "--progress", "json"])
    except KeyboardInterrupt:
        pytest.fail("the signal escaped as a bare KeyboardInterrupt")
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    lines = events(capsys.readouterr().out)
    assert rc == cli.EXIT_CANCELLED and lines[0]["event"] == "start"
    assert lines[-1]["kind"] == "Cancelled" and listing(tmp_path) == ["in.tif"]


def test_a_second_signal_after_the_outputs_are_in_place_keeps_the_result(
        tmp_path, src, models, monkeypatch, capsys):
    """Two Ctrl-Cs just after the outputs were renamed into place (over the user's file,
    --overwrite) ended the run with "cancelled; no output was written" and exit 130."""
    from backend import sink
    commit = sink.OutputSink.commit

    def commit_then_two_signals(self, cancel=None):
        commit(self, cancel)
        os.kill(os.getpid(), signal.SIGINT)   # the first: a cancel
        os.kill(os.getpid(), signal.SIGINT)   # the second: stopped the run at once

    monkeypatch.setattr(sink.OutputSink, "commit", commit_then_two_signals)
    mask = tmp_path / "m.tif"
    mask.write_bytes(b"the old file")
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = cli.main(["predict", src, "--mask", str(mask), "--model", models["threshold"],
                       "--overwrite", "--progress", "json"])
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    lines = events(capsys.readouterr().out)
    assert rc == 0 and lines[-1]["event"] == "result"
    assert any(e["event"] == "warning" and "after the outputs were complete" in e["message"]
               for e in lines)
    with rasterio.open(mask) as ds:
        assert ds.read(1).shape == (300, 260)


def test_a_closed_stdout_does_not_stop_the_run(tmp_path, src, models):
    """``predict ... --progress json | head -2``: the closed pipe (BrokenPipeError from the
    reporter) aborted the run, its outputs removed, and the exit code was 0."""
    read, write = os.pipe()
    os.close(read)   # the reader has gone before the first line
    try:
        p = subprocess.run([sys.executable, "-m", "backend", "predict", src, "--mask",
                            str(tmp_path / "m.tif"), "--model", models["threshold"],
                            "--progress", "json"], cwd=REPO, stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write)
    assert p.returncode == 0, p.stderr
    assert listing(tmp_path) == ["in.tif", "m.tif"]


def test_a_reader_gone_said_as_windows_says_it_does_not_stop_the_run(tmp_path):
    """Windows may report a write into a pipe whose reader has gone as EINVAL, not as a
    broken pipe: the run died there at its next progress line, with an internal error."""
    import errno

    from backend.progress import JsonReporter

    class ReaderGone:
        def __init__(self, file):
            self.file, self.gone = file, False

        def write(self, text):
            if self.gone:
                raise OSError(errno.EINVAL, "Invalid argument")
            return self.file.write(text)

        def flush(self):
            self.file.flush()

        def fileno(self):
            return self.file.fileno()

    with open(tmp_path / "out", "w") as file:
        stream = ReaderGone(file)
        reporter = JsonReporter(stream)
        stream.gone = True
        reporter.info("to a reader that has gone")
        assert os.readlink(f"/proc/self/fd/{file.fileno()}") == os.devnull
        stream.gone = False
        reporter.result(done=True)   # the rest of the run reports to nowhere
    assert json.loads((tmp_path / "out").read_text())["event"] == "start"


def test_a_cancel_after_the_last_line_does_not_kill_the_process(tmp_path, src, models):
    """Python takes ~50 ms to shut down after the result line: a SIGTERM then killed the
    process (-15) after a complete run. The handlers in force at exit are checked, as
    the plugin's cancel racing a finished run is not reproducible on demand."""
    probe = ("import atexit, runpy, signal, sys; "
             "atexit.register(lambda: print('ignored at exit:', all(signal.getsignal(s) == "
             "signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGINT)), file=sys.stderr)); "
             "runpy.run_module('backend', run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", probe, "predict", src, "--mask",
                        str(tmp_path / "m.tif"), "--model", models["threshold"], "--progress",
                        "json"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["event"] == "result"
    assert p.stderr.splitlines()[-1] == "ignored at exit: True", p.stderr


def test_bands_ask_for_whole_numbers_and_inspect_previews_units(tmp_path, src):
    p = run_cli("predict", src, "--mask", tmp_path / "m.tif", "--bands", "2")
    assert p.returncode == 2 and p.stderr.splitlines()[-1].endswith(
        "'2': expected VV_INDEX,VH_INDEX, e.g. 2,1 (whole numbers)"), p.stderr
    p = run_cli("inspect", src, "--units", "linear")
    assert p.returncode == 0 and "units linear (override: given by --units)" in p.stdout, p.stderr
    assert "--units linear given, but the values say dB" in p.stdout


def test_infinite_extents_and_a_file_as_demo_folder_are_one_line_errors(tmp_path, src, models):
    """Both were internal errors with a traceback."""
    for extent in ("-inf,-inf,inf,inf", "0,nan,1,2"):
        p = run_cli("predict", src, "--mask", tmp_path / "m.tif", "--model", models["threshold"],
                    "--extent", extent)
        assert p.returncode == 2 and "(finite numbers)" in p.stderr.splitlines()[-1], p.stderr
        assert "Traceback" not in p.stderr
    target = tmp_path / "a_file"
    target.write_text("mine")
    p = run_cli("demo", "--out", target, "--size", "256")
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        f"error: --out {target}: is a file; give a folder for the demo's outputs"], p.stderr
    assert target.read_text() == "mine"


def test_a_refused_command_line_is_an_error_event_with_progress_json(tmp_path, src, models):
    """argparse printed its usage on stderr and nothing on stdout, where the protocol
    promises a start event first and an error event last."""
    for bad in (["--threshold", "x"], ["--no-such-option"]):
        p = run_cli("predict", src, "--mask", tmp_path / "m.tif", "--model", models["threshold"],
                    "--progress", "json", *bad)
        assert p.returncode == 2
        lines = events(p.stdout)
        assert [e["event"] for e in lines] == ["start", "error"], p.stdout
        assert lines[1]["kind"] == "UsageError" and "python -m backend" in lines[1]["message"]
    p = run_cli("predict", src, "--threshold", "x")           # without json: argparse's own
    assert p.returncode == 2 and p.stdout == "" and "invalid" in p.stderr


def test_a_crs_in_kilometres_prints_no_proj_noise(tmp_path, models, monkeypatch):
    """rasterio's wheel carries PROJ's database; GDAL's GeoTIFF driver did not find it for
    a CRS in km and printed "Cannot find proj.db" on stderr, four times a run."""
    for name in ("PROJ_DATA", "PROJ_LIB"):   # as on a machine that sets neither
        monkeypatch.delenv(name, raising=False)
    src = str(tmp_path / "km.tif")
    crs = rasterio.crs.CRS.from_proj4("+proj=utm +zone=33 +datum=WGS84 +units=km +no_defs")
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=2, dtype="float32",
                       crs=crs, transform=rasterio.transform.from_origin(500, 5000, 0.01, 0.01)) as ds:
        ds.write(random_db((64, 64)))
        ds.descriptions = ("VV", "VH")
    p = run_cli("predict", src, "--mask", str(tmp_path / "m.tif"), "--model", models["threshold"])
    assert p.returncode == 0, p.stderr
    assert "proj.db" not in p.stderr
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.crs.linear_units_factor == ("kilometre", 1000.0)


def _signal_when(args: list[str], line_has: str | None, signum: int, delay: float,
                 group: bool = False) -> subprocess.CompletedProcess:
    """``python -m backend ARGS`` signalled ``delay`` s after a stderr line holding
    ``line_has`` (None: after its start); ``group``: the whole process group, as a
    terminal's Ctrl-C."""
    import time
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "backend", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    err = []
    for line in proc.stderr if line_has else ():
        err.append(line)
        if line_has in line:
            break
    time.sleep(delay)
    assert proc.poll() is None, "the command ended before the signal"
    (os.killpg if group else os.kill)(proc.pid, signum)
    out, rest = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(err) + rest)


def test_scene_and_demo_stop_on_sigterm_and_leave_nothing(tmp_path):
    """Both wrote the whole scene after the signal; scene then exited 0 saying the cancel
    came after its outputs were complete, demo 130 saying no output was written."""
    p = _signal_when(["scene", str(tmp_path / "s.tif"), "--truth", str(tmp_path / "t.tif"),
                      "--size", "8192"], None, signal.SIGTERM, 2.5)   # imports take ~1 s
    assert p.returncode == cli.EXIT_CANCELLED, p.stderr
    assert p.stderr.splitlines()[-1] == "error: cancelled; no output was written"
    assert listing(tmp_path) == []
    out = tmp_path / "demo"
    p = _signal_when(["demo", "--out", str(out), "--size", "8192"], None, signal.SIGTERM, 2.5)
    assert p.returncode == cli.EXIT_CANCELLED, p.stderr
    assert p.stderr.splitlines()[-1] == "error: cancelled; no output was written"
    assert not out.exists()


def test_ctrl_c_during_bench_is_a_cancel_not_an_internal_error(tmp_path):
    """The terminal's Ctrl-C stopped bench's predict child (exit 130), which bench
    reported as a bug with a traceback, exit 1."""
    p = _signal_when(["bench", "--size", "2048", "--raw-seconds", "1", "--repeat", "5",
                      "--workdir", str(tmp_path)], "raw model and predict", signal.SIGINT,
                     2.0, group=True)
    assert p.returncode == cli.EXIT_CANCELLED, p.stderr
    assert p.stderr.splitlines()[-1] == "error: cancelled; no output was written", p.stderr
    assert "Traceback" not in p.stderr and listing(tmp_path) == []


def test_an_overlap_grown_to_fit_the_model_is_said(tmp_path, src):
    """--overlap 130 ran at 144 (the bundled model's tiles are multiples of 16), and only
    the result's tiles field showed it."""
    p = run_cli("predict", src, "--mask", tmp_path / "m.tif", "--overlap", "130",
                "--progress", "json")
    assert p.returncode == 0, p.stderr
    lines = events(p.stdout)
    assert {"event": "info", "message": "overlap 130 grown to 144: the model takes tiles of "
            "656 px (a multiple of 16, the card's size_multiple)"} in lines
    assert lines[-1]["tiles"]["overlap"] == 144
    p = run_cli("predict", src, "--mask", tmp_path / "m2.tif", "--overlap", "144",
                "--progress", "json")
    assert not [e for e in events(p.stdout) if "grown to" in e.get("message", "")]
