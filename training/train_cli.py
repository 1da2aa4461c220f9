"""``python -m training train METHOD --data DIR --out RUN``: train one method, one seed.

Rerunning the same command resumes the run; under ``torchrun`` it trains with DDP:

    torchrun --nproc_per_node 4 -m training train teacher --data DIR --out runs/t --preset paper
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ddp
from .atomic import unwritable
from .checkpoint import CheckpointError
from .cli import add_run_arguments, fail
from .config import ConfigError, make_config, parse_overrides
from .data.layout import DatasetError
from .methods import BY_NAME, get_method
from .rundata import open_run_data
from .synth.writer import MANIFEST
from .train import Interrupted, RunError, RunSpec, require_checkpoints, train

TRAINED = [m for m in BY_NAME if BY_NAME[m].kind != "otsu"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", help=f"one of {', '.join(TRAINED)}")
    add_run_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed if it exists)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", type=Path, help="teacher checkpoint (best.pt) for students")
    p.add_argument("--init", type=Path, help="stage-1 checkpoint (best.pt of chip_classifier) "
                   "whose encoder the pretrained method starts from")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: the preset's)")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="save and stop after this step (resume later with the same command)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _a_dataset(out: Path) -> str | None:
    """Why ``out`` is a dataset's own folder (run files would lie beside its chips)."""
    for name in ("v1.1", MANIFEST):
        if (out / name).exists():
            return (f"--out {out}: holds {name}, a dataset's folder; give a run folder of "
                    f"its own (e.g. runs/METHOD)")
    return None


def run(args: argparse.Namespace) -> int:
    try:
        if args.method not in BY_NAME:   # the trained ones: otsu gets its own answer below
            trained = ", ".join(n for n, m in BY_NAME.items() if m.kind != "otsu")
            return fail(f"unknown method {args.method!r}; expected one of {trained}")
        method = get_method(args.method)
        if method.kind == "otsu":
            return fail("otsu is not trained; score it with: python -m training evaluate --otsu")
        overrides = parse_overrides(args.set)
        # --lr and --weight-decay are config keys too: checked with the others
        overrides.update({k: v for k, v in (("lr", args.lr), ("weight_decay", args.weight_decay))
                          if v is not None})
        cfg = make_config(args.preset, overrides)
        spec = RunSpec(method, cfg, args.seed, cfg.lr_for(method.name) if args.lr is None
                       else args.lr, cfg.weight_decay)
        # what needs no data is checked before the data is read (minutes on the real set)
        if args.stop_at is not None and args.stop_at < 1:
            return fail(f"--stop-at {args.stop_at}: give a step of at least 1")
        if args.seed < 0:
            return fail(f"--seed {args.seed}: give 0 or more")
        require_checkpoints(method, cfg, args.teacher, args.init)
        problem = unwritable(args.out, folder=True) or _a_dataset(args.out)
        if problem:
            return fail(problem)
        ddp.pick_device(args.device)
        data = open_run_data(args.data, method, cfg.cache)
        d = ddp.setup(args.device)
    except (ValueError, ConfigError, DatasetError) as exc:
        return fail(str(exc))
    try:
        summary, _ = train(spec, data, args.out, teacher=args.teacher, d=d,
                           progress=not args.no_progress, stop_at=args.stop_at, init=args.init)
    # a DatasetError here is what shows only in the pixels (label codes, a corrupt block);
    # train() saved the steps done first
    except (RunError, CheckpointError, DatasetError) as exc:
        return fail(str(exc))
    except Interrupted as exc:
        if exc.at_stop_step:   # asked for: a job script's `train --stop-at N && ...` goes on
            print(f"--stop-at {args.stop_at}: {exc}")
            return 0
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    finally:
        ddp.teardown(d)
    if d.is_main:
        metric = "accuracy" if method.kind == "classify" else "IoU"
        print(f"{summary['method']} seed {summary['seed']}: best valid {metric} "
              f"{summary[metric.lower() + '_valid']} at step {summary['best_step']}; "
              f"{args.out / 'best.pt'}")
    return 0
