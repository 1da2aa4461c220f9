"""``python -m backend demo`` (``make demo``): a generated scene, mapped by the model and by Otsu.

Writes into OUT (default ``demo_output/``): ``scene.tif`` (VV/VH, dB) and
``truth.tif`` (its true water mask), generated once; then, on every run,
``model_mask.tif`` + ``model_probability.tif``, ``otsu_mask.tif`` and ``summary.json``.
Prints a short summary with the water areas, their agreement with the truth (IoU),
times and the device.

A rerun replaces these files only in a folder the demo wrote before (its tagged
scene or its summary is there): a folder of the user's that happens to hold a
``scene.tif`` or ``model_mask.tif`` is refused unless ``overwrite``.
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
from .raster_io import temporary_beside
from .scene import save_scene

SEED = 0
FILES = ("scene.tif", "truth.tif", "model_mask.tif", "model_probability.tif", "otsu_mask.tif",
         "summary.json")
# not `backend scene`'s own tag, so a scene that command wrote is not taken for the demo's
SCENE_TAG = f"demo scene, seed {SEED}"


def _is_demo_folder(out: str) -> bool:
    """Whether ``out`` holds the demo's scene (by its tag) or the demo's summary."""
    try:
        with rasterio.open(os.path.join(out, "scene.tif")) as ds:
            if ds.tags().get("SARFLOOD_SCENE") == SCENE_TAG:
                return True
    except rasterio.errors.RasterioError:
        pass
    try:
        with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        return (isinstance(summary, dict) and {"scene", "model", "otsu"} <= summary.keys()
                and os.path.basename(str(summary["scene"])) == "scene.tif")
    except (OSError, ValueError):
        return False


def _check_folder(out: str, overwrite: bool) -> None:
    """UsageError before anything is written when ``out`` cannot take the demo's files."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: is a file; give a folder for the demo's outputs")
    there = [f for f in FILES if os.path.lexists(os.path.join(out, f))]
    if there and not overwrite and not _is_demo_folder(out):
        raise UsageError(f"--out {out}: holds {', '.join(there)}, not written by the demo; "
                         f"give another folder, or --overwrite to replace them")


def _ensure_scene(out: str, size: int, cancel: threading.Event) -> tuple[str, str]:
    scene, truth = os.path.join(out, "scene.tif"), os.path.join(out, "truth.tif")
    try:
        with rasterio.open(scene) as ds, rasterio.open(truth):
            if ds.width == ds.height == size and ds.tags().get("SARFLOOD_SCENE") == SCENE_TAG:
                return scene, truth
    except rasterio.errors.RasterioError:
        pass  # missing or unreadable: (re)generate
    print(f"generating a {size} x {size} scene (seed {SEED}) ...", flush=True)
    save_scene(scene, size, seed=SEED, truth=truth, overwrite=True, tag=SCENE_TAG, cancel=cancel)
    return scene, truth


def _write_summary(path: str, summary: dict) -> None:
    temp = temporary_beside(path)
    try:
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


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


def run_demo(out: str, size: int = 3072, cancel: threading.Event | None = None,
             overwrite: bool = False) -> dict:
    if size < 1:
        raise UsageError(f"--size {size}: give at least 1 pixel")
    _check_folder(out, overwrite)
    made = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    try:
        scene, truth = _ensure_scene(out, size, cancel)
    except BaseException:
        if made and not os.listdir(out):   # a folder of ours with nothing in it
            os.rmdir(out)
        raise
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
    _write_summary(os.path.join(out, "summary.json"), summary)
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
