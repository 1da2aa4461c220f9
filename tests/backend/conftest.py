"""Helpers for the backend tests: real GeoTIFFs and exact ONNX models on disk."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper
from rasterio.fill import fillnodata
from rasterio.transform import from_origin

from backend.card import CARD_KEY
from backend.progress import Reporter
from tests.conftest import REPO
from training.toy_models import raw_db_card, smoothed_threshold_model, threshold_model

UTM = "EPSG:32633"


class Collect(Reporter):
    """Keeps a run's info and warning messages."""

    def __init__(self):
        self.warnings, self.infos = [], []

    def warning(self, message):
        self.warnings.append(message)

    def info(self, message):
        self.infos.append(message)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def write_raster(path: Path | str, bands: np.ndarray, crs: str | None = UTM, pixel: float = 10.0,
                 origin: tuple[float, float] = (500000.0, 5000000.0), nodata=float("nan"),
                 descriptions: tuple[str, ...] | None = ("VV", "VH"), units=None,
                 transform=None) -> str:
    """Write (C, H, W) or (H, W) as a GeoTIFF; returns the path."""
    bands = bands[None] if bands.ndim == 2 else bands
    profile = dict(driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                   count=bands.shape[0], dtype=bands.dtype, nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(*origin, pixel, pixel))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(bands)
        if descriptions:
            ds.descriptions = descriptions[:bands.shape[0]]
        if units:
            ds.units = (units,) * bands.shape[0]
    return str(path)


def random_db(shape: tuple[int, int], seed: int = 0, nan_frac: float = 0.0) -> np.ndarray:
    """(2, H, W) float32: VV ~ N(-15, 5) dB, VH ~ N(-22, 5) dB, optional NaN holes."""
    rng = np.random.default_rng(seed)
    x = np.stack([rng.normal(-15, 5, shape), rng.normal(-22, 5, shape)]).astype(np.float32)
    if nan_frac:
        x[rng.random(x.shape) < nan_frac] = np.nan
    return x


def shifted_model(margin: int = 1) -> onnx.ModelProto:
    """p = sigmoid(-(VV[y-1, x-1] + 15)): a 3x3 kernel with only its top-left weight set.

    Not symmetric, so its 8 flips/rotations see different neighbours: TTA averages
    sigmoid over the 4 diagonal neighbours (each twice), which a test computes.
    """
    card = raw_db_card("test-shifted", margin=margin)
    k = np.zeros((1, 2, 3, 3), np.float32)
    k[0, 0, 0, 0] = -1.0
    w = numpy_helper.from_array(k, "w")
    b = numpy_helper.from_array(np.array([-15.0], np.float32), "b")
    conv = helper.make_node("Conv", ["s1", "w", "b"], ["logit"], pads=[1, 1, 1, 1])
    sig = helper.make_node("Sigmoid", ["logit"], ["water_probability"])
    graph = helper.make_graph(
        [conv, sig], "shifted",
        [helper.make_tensor_value_info("s1", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("water_probability", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    return model


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, str]:
    """Exact test models saved as ONNX files."""
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, model in {
        "threshold": threshold_model(),
        "smoothed": smoothed_threshold_model(kernel=5),
        "shifted": shifted_model(),
        "vv_only": threshold_model(raw_db_card("test-vv-only", margin=0, bands=("VV",))),
    }.items():
        path = d / f"{name}.onnx"
        onnx.save(model, path)
        out[name] = str(path)
    # the hand-set stand-in bundled before the trained student: an exact 5 x 5 mean
    out["demo"] = str(REPO / "resources" / "models" / "sarflood-demo-threshold.onnx")
    return out


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            **kw) -> subprocess.CompletedProcess:
    """``python -m backend ARGS`` from the repository root, as the plugin runs it; ``env``
    adds to the tests' environment."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def cli_peak(*args: str, timeout: float = 300) -> tuple[int, str, str, float]:
    """``python -m backend ARGS``: its exit code, stdout, stderr and peak resident memory in
    MB. It runs as the child of a fresh Python: Linux keeps a process's high-water mark
    across fork (or vfork) and exec, so a child of the tests' own process (800 MB late in a
    whole run) would count that process's memory as its own."""
    measure = ("import json, resource, subprocess, sys\n"
               "done = subprocess.run([sys.executable, '-m', 'backend', *sys.argv[1:]],\n"
               "                      capture_output=True, text=True)\n"
               "print(json.dumps([done.returncode, done.stdout, done.stderr,\n"
               "                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n")
    out = subprocess.run([sys.executable, "-c", measure, *args], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    rc, stdout, stderr, peak_kb = json.loads(out)
    return rc, stdout, stderr, peak_kb / 1024


def reference_smoothed(bands: np.ndarray, kernel: int = 5, pad: int = 64,
                       weights=(-1.0, 0.0), bias: float = -15.0) -> np.ndarray:
    """numpy version of smoothed_threshold_model on the whole raster, mirror-padded.

    NaN inputs are filled from the valid pixels within 16 px by GDAL's fill, as the
    engine feeds them, counting as 0 farther away; they give NaN out.
    """
    x = np.pad(bands, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric").astype(np.float32)
    valid = np.isfinite(x).all(axis=0)
    x = np.nan_to_num(x, nan=0.0)
    for band in x:
        band[:] = fillnodata(band, mask=valid.astype(np.uint8), max_search_distance=16,
                             smoothing_iterations=0)
    x = x.astype(np.float64)
    h = kernel // 2
    c = np.cumsum(np.cumsum(np.pad(x, ((0, 0), (1, 0), (1, 0))), axis=1), axis=2)
    mean = (c[:, kernel:, kernel:] - c[:, :-kernel, kernel:] - c[:, kernel:, :-kernel]
            + c[:, :-kernel, :-kernel]) / kernel ** 2
    mean = mean[:, pad - h:mean.shape[1] - pad + h, pad - h:mean.shape[2] - pad + h]
    p = sigmoid(weights[0] * mean[0] + weights[1] * mean[1] + bias)
    p[np.isnan(bands).any(axis=0)] = np.nan
    return p


def listing(folder: Path | str) -> list[str]:
    return sorted(os.listdir(folder))
