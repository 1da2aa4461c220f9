"""``python -m training SUBCOMMAND ...``: the one place subcommands are registered.

Each subcommand lives in its own module, which defines
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code: 0 done, 1 a
user error already reported as one ``error: ...`` line on stderr, 130
interrupted). Modules are imported only when their subcommand runs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from .atomic import WriteError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.train_cli", "train one method (one seed) on a data folder"),
    "reproduce": ("training.reproduce", "train and evaluate every Table 1 row over seeds"),
    "export": ("training.export_cli", "export a checkpoint to ONNX with its model card"),
    "synth": ("training.synth.cli", "write a synthetic Sen1Floods11 v1.1 dataset"),
    "bench-synth": ("training.synth.bench", "measure the synthetic generator's speed and determinism"),
    "evaluate": ("training.evaluate", "score Otsu, models, mask folders or S2 index rules on a split"),
    "figure": ("training.figures", "draw chips side by side: S1, S2, label, weak label, prediction"),
}

# the devices a command may ask for (as backend.model.DEVICES): ``auto`` is CUDA when available
DEVICES = ("auto", "cpu", "cuda")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--preset``, ``--set`` and ``--device``: what ``train`` and ``reproduce``
    share."""
    from .config import PRESETS

    p.add_argument("--data", type=Path, required=True, help="dataset folder (holding v1.1/)")
    p.add_argument("--preset", default="cpu", choices=tuple(PRESETS),
                   help=f"{' or '.join(PRESETS)} (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto (CUDA if available), cpu or cuda")


def worker_error(message: str) -> str:
    """The error's own text where torch's DataLoader re-raised it from a worker process:
    there its message is the worker's whole traceback, ending in ``module.Type: text``."""
    head = re.match(r"Caught (\w+) in DataLoader worker process \d+\.\n", message)
    starts = list(re.finditer(rf"^(?:[\w.]+\.)?{head[1]}: ", message, re.M)) if head else []
    return message[starts[-1].end():] if starts else message


def fail(message: str) -> int:
    """Report a user error: one line, or a headline and its problems one a line (see
    ``training.data.layout.problems_message``); the exit code for it."""
    lines = (ln[: len(ln) - len(ln.lstrip())] + " ".join(ln.split())
             for ln in worker_error(str(message)).strip().splitlines())
    text = "error: " + "\n".join(ln for ln in lines if ln.strip())
    print(text, file=sys.stderr)
    tell_torchrun(text)
    return 1


def tell_torchrun(text: str) -> None:
    """Under torchrun, hand the error to the launcher too, in the file it reads a failed
    worker's error from: its report, printed last, below its own traceback, names the
    root cause with this line (without it: "To enable traceback see: ..."), where the
    line the worker printed is buried above that traceback."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:   # torch's ErrorHandler format; the earliest timestamp is the root cause
        Path(path).write_text(json.dumps({"message": text, "timestamp": int(time.time())}))
    except OSError:
        pass   # the line is printed all the same


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except WriteError as exc:   # a full disk at a summary, a table or a manifest
        return fail(str(exc))
    except KeyboardInterrupt:   # also while a subcommand's module (torch) is imported
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="SAR Flood Mapper training: Garg et al.'s cross-modal distillation, its "
                    "baselines, synthetic Sen1Floods11 data, evaluation and ONNX export")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    name = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in SUBCOMMANDS), None)
    for sub, (module, help_text) in SUBCOMMANDS.items():
        p = subs.add_parser(sub, help=help_text, description=help_text)
        if sub == name:  # only the chosen subcommand's module is imported
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    # SIGTERM (timeout, Slurm, systemd) stops a command as Ctrl-C does, through its
    # finally blocks, which remove its temporary files; a training loop stops between
    # steps on either (training.train.stop_requests)
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return importlib.import_module(SUBCOMMANDS[args.command][0]).run(args)
    finally:
        signal.signal(signal.SIGTERM, old)
