"""``python -m training export CHECKPOINT --out MODEL.onnx``: see :mod:`training.export`."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .atomic import refused_output
from .checkpoint import diverged_summary
from .cli import fail
from .export import ExportError, export

# MAJOR.MINOR.PATCH with an optional pre-release or build part (Semantic Versioning 2.0.0)
_VERSION = re.compile(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a run's best.pt (a Sentinel-1 model)")
    p.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    p.add_argument("--version", default="1.0.0",
                   help="model version for the card, MAJOR.MINOR.PATCH (default 1.0.0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint.is_dir():   # was "checkpoint not found"
        return fail(f"{args.checkpoint}: a folder (a run folder?), not a checkpoint; give its "
                    f"best.pt: {args.checkpoint / 'best.pt'}")
    problem = refused_output(args.out, args.overwrite)
    if problem:
        return fail(problem)
    # the plugin and the backend look for models by this suffix
    if args.out.suffix.lower() != ".onnx":
        return fail(f"--out {args.out}: an ONNX model file must end in .onnx")
    if not _VERSION.fullmatch(args.version):
        return fail(f"--version {args.version!r}: give MAJOR.MINOR.PATCH, such as 1.2.0")
    try:
        report = export(args.checkpoint, args.out, version=args.version)
    except ExportError as exc:
        return fail(str(exc))
    reached = report["unfinished_at_step"]
    if reached is not None:
        steps = report["card"]["extra"]["config"].get("steps")
        how = ("its summary.json says it diverged" if diverged_summary(args.checkpoint.parent)
               else "no summary.json")
        print(f"warning: {args.checkpoint}: its run is unfinished ({how}; stopped at "
              f"step {reached} of {steps}): exported its best validation so far, and the "
              f"card's notes say so", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    card = report["card"]
    pred = report["backend_predict"]
    print(f"wrote {report['out']} ({report['bytes'] / 1e6:.1f} MB): {card['name']} "
          f"{card['version']}, {card['extra']['architecture']}")
    print(f"parity with torch: max abs difference {report['max_abs_diff']:.3g}")
    print(f"metrics: {json.dumps(card['training']['metrics'])}")
    print(f"backend: card accepted; predict ran on a generated scene "
          f"({pred.get('width')} x {pred.get('height')} px, {pred.get('seconds')} s)")
    return 0
