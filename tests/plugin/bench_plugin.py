"""Benchmark: the plugin's overhead over the backend CLI, and how long QGIS's event loop blocks.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m tests.plugin.bench_plugin [--size 4096] [--repeats 2]

On one generated N x N scene (``python -m backend scene``), alternately:
- CLI: ``python -m backend predict SCENE --mask --probability`` as a plain child process;
- plugin: the plugin's own path from "Run" to layers on the map: RunController starts a
  BackendTask in QGIS's task manager, reads the JSON progress, adds the styled layer group
  and hands the run to the review dock; a 10 ms QTimer meanwhile records the longest gap
  between its ticks, i.e. the longest time the event loop was blocked.
Both paths report the backend's own run time, so the bench also gives what each path adds
around the backend (``overhead_around_backend``): that is the plugin's overhead with the
run-to-run noise of a shared machine taken out.
Prints one JSON document. Not collected by pytest (the name does not start with test_).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    plugins = Path(tempfile.mkdtemp(prefix="sarflood-bench-plugins-"))
    (plugins / "sarflood").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(plugins))

    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QTimer
    from qgis.PyQt.QtWidgets import QMainWindow
    from qgis.gui import QgsMapCanvas
    from pytest_qgis.mock_qgis_classes import MockMessageBar
    from pytest_qgis.qgis_interface import QgisInterface

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], True)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing
    Processing.initialize()

    from sarflood.plugin.backend_env import find_interpreter
    from sarflood.plugin.gui.run_dialog import bundled_model
    import sarflood

    iface = QgisInterface(QgsMapCanvas(), MockMessageBar(), QMainWindow())
    plugin = sarflood.classFactory(iface)
    plugin.initGui()
    python = find_interpreter().path
    work = Path(tempfile.mkdtemp(prefix="sarflood-bench-", dir=args.workdir))
    scene = work / "scene.tif"
    started = time.perf_counter()
    subprocess.run([python, "-m", "backend", "scene", str(scene), "--size", str(args.size)],
                   cwd=REPO, check=True, capture_output=True)
    scene_s = time.perf_counter() - started
    layer = QgsRasterLayer(str(scene), "scene")
    QgsProject.instance().addMapLayer(layer)
    model = str(bundled_model())

    def cli_run(i: int) -> tuple[float, float]:
        """Wall time of the CLI, and the backend's own time for the run (from its result)."""
        out = work / f"cli{i}"
        out.mkdir()
        t = time.perf_counter()
        done = subprocess.run([python, "-m", "backend", "predict", str(scene), "--model", model,
                               "--mask", str(out / "mask.tif"), "--probability", str(out / "prob.tif"),
                               "--progress", "json"], cwd=REPO, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t
        return wall, json.loads(done.stdout.strip().splitlines()[-1])["seconds"]

    def plugin_run(i: int) -> tuple[float, float, float]:
        out = work / f"plugin{i}"
        out.mkdir()
        dialog = plugin.show_dialog()
        dialog.stack_layer.setLayer(layer)
        dialog.model.setFilePath(model)
        while dialog.card is None:  # the card is read in the background when the model changes
            app.processEvents()
            time.sleep(0.01)
        dialog.temporary.setChecked(False)
        dialog.output_dir.setFilePath(str(out))
        finished = []
        plugin.controller.finished.connect(finished.append)
        gaps = {"last": None, "worst": 0.0}

        def tick() -> None:
            now = time.perf_counter()
            if gaps["last"] is not None:
                gaps["worst"] = max(gaps["worst"], now - gaps["last"])
            gaps["last"] = now

        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(tick)
        timer.start()
        t = time.perf_counter()
        dialog.start()  # what the Run button does
        while not finished:
            app.processEvents()
            time.sleep(0.002)
        elapsed = time.perf_counter() - t
        timer.stop()
        plugin.controller.finished.disconnect(finished.append)
        if finished[0] is None:
            raise RuntimeError(f"plugin run failed: {dialog.status.text()}")
        return elapsed, finished[0].result["seconds"], gaps["worst"]

    cli, plug, stalls = [], [], []
    for i in range(args.repeats):
        cli.append(cli_run(i))
        wall, inner, stall = plugin_run(i)
        plug.append((wall, inner))
        stalls.append(stall)
    # The backend's own time varies from run to run on a shared machine; what each path adds
    # around it (interpreter start, imports, and for the plugin: task, JSON, layers) does not.
    cli_around = statistics.median(w - b for w, b in cli)
    plugin_around = statistics.median(w - b for w, b in plug)
    cli_wall = statistics.median(w for w, _ in cli)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform, "load_avg_1min": os.getloadavg()[0]},
        "size": args.size, "scene_seconds": round(scene_s, 2), "model": model,
        "cli_wall_s": [round(w, 2) for w, _ in cli], "cli_backend_s": [round(b, 2) for _, b in cli],
        "plugin_wall_s": [round(w, 2) for w, _ in plug], "plugin_backend_s": [round(b, 2) for _, b in plug],
        "overhead_wall_median_percent": round(100 * (statistics.median(w for w, _ in plug) - cli_wall) / cli_wall, 1),
        "overhead_around_backend_s": round(plugin_around - cli_around, 3),
        "overhead_around_backend_percent": round(100 * (plugin_around - cli_around) / cli_wall, 1),
        "event_loop_worst_gap_ms": [round(1000 * v, 1) for v in stalls],
        "targets": {"overhead_percent": 10, "event_loop_gap_ms": 100},
    }
    print(json.dumps(report, indent=1))
    plugin.unload()
    QgsProject.instance().removeAllMapLayers()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
