"""``python -m backend bench``: throughput and peak memory on a generated N x N scene.

For each N, one run measures:
- raw model throughput: the ONNX session alone, on one in-memory batch of the
  engine's tiles (its tile size, batch size, device and concurrent calls), called repeatedly in
  slices timed before, between and after the end-to-end runs, so that a change in
  the machine's load during the runs weighs on both figures alike.
  Reported in tile pixels per second, and in raster pixels per second: how fast
  the session alone would get through the raster given the tiles the engine
  runs on it (its own count: overlap and edge tiles included, and on a resampled
  raster the tiles of the model grid), so that it compares with the end-to-end
  figure;
- end-to-end predict throughput: ``python -m backend predict`` in a child process
  (read, units, normalise, infer, blend, threshold, write compressed GeoTIFFs with
  overviews): raster pixels / the run's own wall time (from its start to the
  renamed outputs; interpreter start-up excluded);
- their ratio, and the predict child's peak RSS (its VmHWM). With ``repeat`` > 1
  predict runs that many times (each a fresh child) and the run of median wall time
  is reported, with every run's time beside it: on a shared 2-core machine one
  run's time varies by 10-20 %;
- where predict's CPU time goes outside the model: each stage's thread CPU time
  (read, normalise, blend, ...), per raster pixel, beside the model's own;
- the Otsu baseline end to end, the same way.
Each child is a fresh process, so the peak RSS of one N is not mixed with another.
``latitude`` tags the scene as a geographic grid (``backend.scene.write_scene``), so
that predict resamples it: the cost of resampling, against the model alone.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .engine import GridJob, batch_size_for, default_model_path, tile_batches
from .errors import EXIT_CANCELLED, BackendError, Cancelled, UsageError
from .model import OnnxModel, default_threads
from .inputs import open_inputs
from .raster_io import WindowReader
from .scene import PIXEL_DEG, check_latitude, check_room, write_scene
from .tiling import plan_tiles

PACKAGE_PARENT = Path(__file__).resolve().parents[1]
RAW_SECONDS = 3.0
# the smallest scene edge benched: Mpx/s are reported to 0.01, and a smaller scene's
# round to 0 (a 7 x 7 scene's did, and their ratio divided by it)
MIN_SIZE = 256


def check_size(n: int, option: str = "--size") -> None:
    """UsageError where ``n`` is below :data:`MIN_SIZE` (``reproduce`` checks its
    --bench-size with it before training)."""
    if n < MIN_SIZE:
        raise UsageError(f"{option} {n}: give at least {MIN_SIZE} pixels (a smaller scene's "
                         f"Mpx/s round to 0)")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpus": default_threads(), "cpu": cpu, "gpus": nvidia_gpus(),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def nvidia_gpus() -> list[str]:
    """'name, driver version' of each GPU that nvidia-smi lists; none without it."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()
            ] if done.returncode == 0 else []


def raw_throughput(model_path: str, device: str, scene: str, n: int,
                   batch: int | None = None, seconds: float = RAW_SECONDS,
                   between: Callable[[], Any] | None = None, rounds: int = 1
                   ) -> tuple[dict, list]:
    """The session alone on one in-memory batch of the engine's tiles.

    Timed for ``seconds`` in ``rounds + 1`` slices; ``between()`` (an end-to-end run) is
    called after each slice but the last, and its results are returned with the figures.
    """
    model = OnnxModel(model_path, device)
    card = model.card
    plan = plan_tiles(n, n, card.margin, None, None, card.tile_size, card.size_multiple,
                      model.fixed_tile)
    batch = batch_size_for(model, batch)  # the engine's
    inputs = open_inputs([scene], card.band_names)
    try:
        srcs = [(inputs.datasets[inputs.bands[b].path], inputs.bands[b].index,
                 inputs.bands[b].nodata) for b in card.band_names]
        job = GridJob(model=model, reader=WindowReader(srcs, 0, 0),
                      conversions=[(b.units, b.units) for b in card.bands], plan=plan,
                      batch=batch, tta=False)
        _, c0, c1, x, _ = next(tile_batches(job, threading.Event()))
    finally:
        inputs.close()
    if len(x) < batch:  # a raster narrower than a batch: repeat its tiles
        x = np.concatenate([x] * -(-batch // len(x)))[:batch]
    def calls_for(slice_s: float) -> int:
        """Calls made in ``slice_s`` seconds (at least 2 a stream) by as many concurrent
        callers as the engine runs."""
        start = time.perf_counter()

        def call_until_time_is_up(_: int) -> int:
            k = 0
            while time.perf_counter() - start < slice_s or k < 2:
                model.infer(x)
                k += 1
            return k
        return sum(pool.map(call_until_time_is_up, range(model.streams)))

    calls, wall, cpu, middle = 0, 0.0, 0.0, []
    with ThreadPoolExecutor(model.streams) as pool:
        list(pool.map(lambda _: model.infer(x), range(model.streams)))  # first calls allocate
        for part in range(rounds + 1):
            start, cpu0 = time.perf_counter(), time.process_time()
            calls += calls_for(seconds / (rounds + 1))
            wall += time.perf_counter() - start
            cpu += time.process_time() - cpu0
            if part < rounds and between is not None:
                middle.append(between())
    tiles_per_s = calls * len(x) / wall
    return {"device": model.device_name, "provider": model.provider,
            "tile": plan.tile, "stride": plan.stride, "overlap": plan.overlap, "batch": len(x),
            "streams": model.streams,
            "tile_mpx_s": round(tiles_per_s * plan.tile ** 2 / 1e6, 2),
            "tiles_per_s": tiles_per_s, "cpu_s_per_tile": cpu / (calls * len(x)),
            "model": f"{card.name} {card.version}"}, middle


def for_the_raster(raw: dict, n: int, tiles: int) -> dict:
    """The session's figures for the tiles the engine ran on the N x N raster (its own
    count: on a resampled raster they cover the model grid, not the input's)."""
    per_tile = ("tiles_per_s", "cpu_s_per_tile")
    return {**{k: v for k, v in raw.items() if k not in per_tile}, "tiles": tiles,
            "tiling_overhead": round(tiles * raw["tile"] ** 2 / n ** 2, 4),
            "raster_mpx_s": round(raw["tiles_per_s"] * n * n / tiles / 1e6, 2),
            "cpu_s_for_raster": round(raw["cpu_s_per_tile"] * tiles, 3)}


def run_child(args: list[str], cancel: threading.Event) -> dict:
    """``python -m backend ARGS --progress json`` in a fresh process: result, peak RSS, wall.

    The peak RSS is the one the child reports (VmHWM): ``ru_maxrss`` from ``wait4``
    would include this (bigger) process, which the child was forked from. ``cancel``
    (a SIGTERM to this process alone) stops the child; a child stopped by Ctrl-C (the
    terminal sends it to both) is a cancel too.
    """
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "backend", *args, "--progress", "json"],
                                stdout=out, stderr=subprocess.DEVNULL, cwd=PACKAGE_PARENT)
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set():
                    proc.terminate()   # the child removes its partial outputs
        wall = time.perf_counter() - start
        out.seek(0)
        events = [json.loads(line) for line in out if line.strip()]
    last = events[-1] if events else {"event": "error", "message": "no output"}
    if cancel.is_set() or proc.returncode == EXIT_CANCELLED:
        raise Cancelled("cancelled")
    if last["event"] != "result":
        raise BackendError(f"bench: backend {args[0]} failed (exit {proc.returncode}): "
                           f"{last.get('message')}")
    return {"result": last, "peak_rss_mb": last["peak_rss_mb"], "process_seconds": round(wall, 3)}


def run_bench(sizes: list[int], model: str | None = None, device: str = "auto",
              probability: bool = False, workdir: str | None = None,
              raw_seconds: float = RAW_SECONDS, repeat: int = 1, latitude: float | None = None,
              log: Callable[[str], None] = print, cancel: threading.Event | None = None) -> dict:
    # absolute: the end-to-end runs are child processes started in the package's folder
    model_path = os.path.abspath(model) if model else default_model_path()
    if not os.path.isfile(model_path):
        raise UsageError(f"--model {model}: file not found")
    if workdir is not None:
        workdir = os.path.abspath(workdir)
        if not os.path.isdir(workdir):
            raise UsageError(f"--workdir {workdir}: not an existing folder")
    for n in sizes:   # before any scene is written, in a folder deleted after its run
        check_size(n)
        check_latitude(latitude, n)
        check_room(workdir or tempfile.gettempdir(), n, n)
    report = {"machine": machine(), "model_path": model_path, "device": device,
              "outputs": "mask + float32 probability" if probability else "mask",
              "scene": ("10 m UTM grid" if latitude is None else
                        f"EPSG:4326 at {latitude:g} N, {PIXEL_DEG:g} degree pixels"),
              "runs": []}
    cancel = cancel or threading.Event()
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="sarflood-bench-", dir=workdir) as d:
            scene = os.path.join(d, "scene.tif")
            t = time.perf_counter()
            write_scene(scene, n, seed=0, latitude=latitude, cancel=cancel)
            log(f"N={n}: scene written in {time.perf_counter() - t:.1f} s; raw model and predict ...")
            args = ["predict", scene, "--mask", os.path.join(d, "mask.tif"),
                    "--model", model_path, "--device", device, "--overwrite"]  # runs repeat
            if probability:
                args += ["--probability", os.path.join(d, "probability.tif")]
            raw, preds = raw_throughput(model_path, device, scene, n, seconds=raw_seconds,
                                        between=lambda: run_child(args, cancel), rounds=repeat)
            every = [p["result"]["seconds"] for p in preds]
            pred = preds[sorted(range(len(preds)), key=every.__getitem__)[len(preds) // 2]]
            raw = for_the_raster(raw, n, pred["result"]["tiles"]["count"])
            log(f"N={n}: raw {raw['raster_mpx_s']} Mpx/s (raster), predict "
                f"{', '.join(map(str, every))} s; otsu ...")
            otsu = run_child(["otsu", scene, "--mask", os.path.join(d, "otsu.tif")], cancel)
        e2e = n * n / pred["result"]["seconds"] / 1e6
        report["runs"].append({
            "size": n, "raw": raw,
            "predict": {"mpx_s": round(e2e, 2), "seconds": pred["result"]["seconds"],
                        "resampled": pred["result"]["resampled"],
                        "model_seconds": pred["result"]["model_seconds"],
                        "peak_rss_mb": pred["peak_rss_mb"],
                        "process_seconds": pred["process_seconds"],
                        "cpu_seconds": pred["result"]["cpu_seconds"],
                        "stage_cpu_seconds": pred["result"]["stage_cpu_seconds"],
                        "every_run_seconds": every,
                        "peak_rss_mb_max": max(p["peak_rss_mb"] for p in preds)},
            "ratio_e2e_to_raw": round(e2e / raw["raster_mpx_s"], 4),
            # less sensitive to other load on the machine: CPU seconds of the session
            # alone for the engine's tiles / CPU seconds of predict (all its threads)
            "cpu_ratio_raw_to_e2e": round(raw["cpu_s_for_raster"]
                                          / pred["result"]["cpu_seconds"], 4),
            "otsu": {"mpx_s": round(n * n / otsu["result"]["seconds"] / 1e6, 2),
                     "seconds": otsu["result"]["seconds"],
                     "peak_rss_mb": otsu["peak_rss_mb"]},
        })
    report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return report


def format_table(report: dict) -> str:
    m = report["machine"]
    runs = report["runs"]
    head = runs[0]["raw"] if runs else {}
    lines = [
        f"sarflood bench, {m['date']}: {m['cpus']} CPU threads ({m['cpu']})"
        + "".join(f", GPU {g}" for g in m.get("gpus", [])) + f", onnxruntime "
        f"{m['onnxruntime']}, load average {m['load_average'][0]} at start",
        f"model {head.get('model')} on {head.get('device')} ({head.get('provider')}); tiles "
        f"{head.get('tile')} px = stride {head.get('stride')} + overlap {head.get('overlap')}, "
        f"batch {head.get('batch')}, {head.get('streams')} call(s) at a time; "
        f"outputs: {report['outputs']}; scene: {report['scene']}"
        + ("; predict resamples it to the model's pixels and back"
           if runs and runs[0]["predict"]["resampled"] else ""),
        "",
        "| N | tiles (model px / raster px) | raw model, tile Mpx/s | raw model, raster Mpx/s "
        "| predict end-to-end, Mpx/s | end-to-end / raw | CPU s: raw / predict "
        "| predict peak RSS, MB | Otsu end-to-end, Mpx/s | Otsu peak RSS, MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        raw, p = r["raw"], r["predict"]
        lines.append(
            f"| {r['size']} | {raw['tiles']} ({raw['tiling_overhead']:.3f}) | {raw['tile_mpx_s']} "
            f"| {raw['raster_mpx_s']} | {p['mpx_s']} | {r['ratio_e2e_to_raw']:.2f} "
            f"| {raw['cpu_s_for_raster']:.2f} / {p['cpu_seconds']:.2f} = "
            f"{r['cpu_ratio_raw_to_e2e']:.2f} | {p['peak_rss_mb']:.0f} | {r['otsu']['mpx_s']} "
            f"| {r['otsu']['peak_rss_mb']:.0f} |")
    lines.append("")
    if head.get("device") == "cuda":
        lines.append("On CUDA the CPU seconds include the calling thread's wait for the GPU: "
                     "their ratio says little there.")
    for r in runs:
        every = r["predict"]["every_run_seconds"]
        if len(every) > 1:
            ratios = ", ".join(f"{r['size'] ** 2 / t / 1e6 / r['raw']['raster_mpx_s']:.2f}"
                               for t in every)
            lines.append(f"N={r['size']}, {len(every)} predict runs (the table shows the median): "
                         f"{', '.join(f'{t:.3f}' for t in every)} s; end-to-end / raw {ratios}")
    for r in runs:  # where predict's CPU goes, against what the model alone needs
        px = r["size"] ** 2
        stages = r["predict"]["stage_cpu_seconds"]
        lines.append(
            f"N={r['size']}, CPU ns per raster pixel: model alone "
            f"{r['raw']['cpu_s_for_raster'] / px * 1e9:.1f}; outside it "
            f"{sum(stages.values()) / px * 1e9:.1f} ("
            + ", ".join(f"{k} {v / px * 1e9:.1f}" for k, v in stages.items()) + ")")
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        lines.append("")
        lines.append(f"peak RSS N={b['size']} / N={a['size']}: "
                     f"{b['predict']['peak_rss_mb'] / a['predict']['peak_rss_mb']:.2f}")
    return "\n".join(lines)
