"""``python -m backend demo`` (``make demo``): a generated scene, mapped by the model and by Otsu.

Writes into OUT (default ``demo_output/``): ``scene.tif`` (VV/VH, dB) and
``truth.tif`` (its true water mask), generated once; then, on every run,
``model_mask.tif`` + ``model_probability.tif`` and ``otsu_mask.tif`` (replaced: they
are the demo's own outputs), and ``summary.json``. Prints a short summary with
the water areas, their agreement with the truth (IoU), times and the device.
"""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import rasterio
from rasterio.windows import Window

from .engine import PredictOptions, predict
from .errors import UsageError
from .otsu import OtsuOptions, otsu_map
from .progress import BarReporter
from .scene import save_scene

SEED = 0


def _ensure_scene(out: str, size: int) -> tuple[str, str]:
    scene, truth = os.path.join(out, "scene.tif"), os.path.join(out, "truth.tif")
    try:
        with rasterio.open(scene) as ds, rasterio.open(truth):
            if ds.width == ds.height == size and ds.tags().get("SARFLOOD_SCENE", "").endswith(
                    f"seed {SEED}"):
                return scene, truth
    except rasterio.errors.RasterioError:
        pass  # missing or unreadable: (re)generate
    print(f"generating a {size} x {size} scene (seed {SEED}) ...", flush=True)
    save_scene(scene, size, seed=SEED, truth=truth, overwrite=True)
    return scene, truth


def iou(mask: str, truth: str, block: int = 1024) -> float:
    """Intersection over union of water (code 1) where both are valid, read block by block."""
    inter = union = 0
    with rasterio.open(mask) as a, rasterio.open(truth) as b:
        for row in range(0, a.height, block):
            win = Window(0, row, a.width, min(block, a.height - row))
            m, t = a.read(1, window=win), b.read(1, window=win)
            valid = (m != 255) & (t != 255)
            inter += int(np.count_nonzero((m == 1) & (t == 1) & valid))
            union += int(np.count_nonzero(((m == 1) | (t == 1)) & valid))
    return inter / union if union else float("nan")


def run_demo(out: str, size: int = 3072, cancel: threading.Event | None = None) -> dict:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: is a file; give a folder for the demo's outputs")
    os.makedirs(out, exist_ok=True)
    scene, truth = _ensure_scene(out, size)
    paths = {k: os.path.join(out, f"{k}.tif")
             for k in ("model_mask", "model_probability", "otsu_mask")}
    reporter = BarReporter()
    model = predict(PredictOptions(inputs=[scene], mask=paths["model_mask"],
                                   probability=paths["model_probability"], overwrite=True),
                    reporter, cancel)
    otsu = otsu_map(OtsuOptions(inputs=[scene], mask=paths["otsu_mask"], overwrite=True),
                    reporter, cancel)
    reporter.close()
    with rasterio.open(truth) as t:
        counts = np.zeros(256, np.int64)
        for _, win in t.block_windows(1):
            counts += np.bincount(t.read(1, window=win).ravel(), minlength=256)
    px_km2 = model["valid_area_km2"] / max(model["valid_pixels"], 1)
    summary = {
        "scene": scene, "size": size, "valid_area_km2": model["valid_area_km2"],
        "truth_water_km2": round(counts[1] * px_km2, 3),
        "model": {"name": f"{model['model_name']} {model['model_version']}",
                  "water_km2": model["water_area_km2"],
                  "iou": round(iou(paths["model_mask"], truth), 4),
                  "seconds": model["seconds"], "device": model["device"],
                  "provider": model["provider"], "outputs": model["outputs"]},
        "otsu": {"threshold_db": otsu["threshold_db"], "water_km2": otsu["water_area_km2"],
                 "iou": round(iou(paths["otsu_mask"], truth), 4), "seconds": otsu["seconds"],
                 "outputs": otsu["outputs"]},
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    m, o = summary["model"], summary["otsu"]
    print(f"\nscene {scene}: {size} x {size} pixels of 10 m, {summary['valid_area_km2']:.1f} km2 "
          f"valid, {summary['truth_water_km2']:.2f} km2 of it water (truth.tif)")
    print(f"{'method':<36} {'water km2':>10} {'IoU':>7} {'seconds':>8}")
    print(f"{m['name'] + ' (' + m['device'] + ')':<36} {m['water_km2']:>10.2f} {m['iou']:>7.3f} "
          f"{m['seconds']:>8.2f}")
    otsu_name = ("Otsu (no threshold)" if o["threshold_db"] is None
                 else f"Otsu, VV <= {o['threshold_db']:.2f} dB")
    print(f"{otsu_name:<36} {o['water_km2']:>10.2f} "
          f"{o['iou']:>7.3f} {o['seconds']:>8.2f}")
    print(f"outputs: {m['outputs']['mask']}, {m['outputs']['probability']}, "
          f"{o['outputs']['mask']}; summary: {os.path.join(out, 'summary.json')}")
    return summary
