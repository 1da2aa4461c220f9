"""``python -m training bench-synth``: generator speed on one core, and determinism.

Speed: the process pins itself to one CPU, then writes ``--chips`` chips of each
set (hand-labelled: S1 + S2 + label + truth; weak: S1 + label + truth, its S2
simulated but not stored; external: S1 + S2 + label + truth) and reports chips
per second, written, per set and over all: per wall-clock second, and per CPU
second of the process (the same on an idle core; on a shared machine other
processes' time inflates the first but not the second).

Determinism: a second dataset with the same seed, written by two worker
processes, must hold identical pixels, CRS and transforms in every file; a
third with another seed must differ.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from ..atomic import refused_output, write_text_atomic
from . import writer


def _pin_one_core() -> set[int]:
    """Run on one CPU from now on; returns the CPUs allowed before."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    return before


def _rasters(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*.tif")):
        with rasterio.open(path) as ds:
            out[str(path.relative_to(root))] = (ds.read(), ds.crs.to_string(), tuple(ds.transform))
    return out


def same_rasters(a: Path, b: Path) -> bool:
    ra, rb = _rasters(a), _rasters(b)
    return ra.keys() == rb.keys() and all(
        ra[k][1:] == rb[k][1:] and np.array_equal(ra[k][0], rb[k][0], equal_nan=True) for k in ra)


def _rates(n: int, seconds: float, cpu: float) -> dict:
    return {"chips": n, "seconds": round(seconds, 3), "chips_per_s": round(n / seconds, 2),
            "cpu_seconds": round(cpu, 3), "chips_per_cpu_s": round(n / cpu, 2)}


def bench(chips: int, seed: int, compress: str = "deflate") -> dict:
    allowed = _pin_one_core()
    result: dict = {"cpu": min(allowed), "chips_per_set": chips, "size": 512, "compress": compress}
    with tempfile.TemporaryDirectory(prefix="sarflood-bench-") as tmp:
        total_n, total_s, total_cpu = 0, 0.0, 0.0
        for kind, counts in (("hand", (chips, 0, 0)), ("weak", (0, chips, 0)), ("external", (0, 0, chips))):
            root = Path(tmp) / kind
            writer.prepare(root, False, dict(zip(("hand", "weak", "external"), counts)))
            tasks = writer.plan(*counts, seed=seed)
            start, cpu_start = time.perf_counter(), time.process_time()
            for t in tasks:
                writer.make_and_write(t, seed, root, compress)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            result[kind] = _rates(len(tasks), seconds, cpu)
            total_n, total_s, total_cpu = total_n + len(tasks), total_s + seconds, total_cpu + cpu
        result["all"] = _rates(total_n, total_s, total_cpu)
        os.sched_setaffinity(0, allowed)
        a, b, c = (Path(tmp) / n for n in ("a", "b", "c"))
        writer.generate(a, 4, 1, 1, seed=seed, workers=1)
        writer.generate(b, 4, 1, 1, seed=seed, workers=2)
        writer.generate(c, 4, 1, 1, seed=seed + 1, workers=1)
        result["deterministic"] = same_rasters(a, b)
        result["other_seed_differs"] = not same_rasters(a, c)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chips", type=int, default=20, help="chips of each set to time (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compress", choices=sorted(writer.COMPRESSION), default="deflate")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run(args: argparse.Namespace) -> int:
    from ..cli import fail

    # each checked before the minutes of work
    if args.chips < 1:
        return fail(f"--chips {args.chips}: give at least 1")
    if args.seed < 0:   # numpy's seed sequences take none
        return fail(f"--seed {args.seed}: give 0 or more")
    problem = refused_output(args.json, args.overwrite) if args.json else None
    if problem:
        return fail(problem)
    result = bench(args.chips, args.seed, args.compress)
    for kind in ("hand", "weak", "external", "all"):
        r = result[kind]
        print(f"{kind:9} {r['chips']:4d} chips in {r['seconds']:7.2f} s: {r['chips_per_s']:6.2f} chips/s "
              f"on one core ({r['chips_per_cpu_s']:.2f} per CPU second)")
    print(f"same seed, 1 vs 2 workers, identical: {result['deterministic']}; "
          f"another seed differs: {result['other_seed_differs']}")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1))
    return 0 if result["deterministic"] and result["other_seed_differs"] else 1
