"""``python -m training synth --out DIR [--chips N] [--seed S]``: write a synthetic Sen1Floods11."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..atomic import unwritable
from ..data.layout import DatasetError
from . import writer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="dataset folder to create (v1.1/, external/, ...)")
    p.add_argument("--chips", type=int, default=446,
                   help="hand-labelled chips, split like Sen1Floods11 (default 446, as the real set)")
    p.add_argument("--weak-chips", type=int, help="weakly labelled chips (default: --chips)")
    p.add_argument("--external-chips", type=int, help="external paired chips (default: --chips)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    p.add_argument("--compress", choices=sorted(writer.COMPRESSION), default="deflate",
                   help="GeoTIFF compression: deflate as Sen1Floods11 (default), or zstd (faster)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a synthetic dataset this tool wrote before (never real data)")


def run(args: argparse.Namespace) -> int:
    from ..cli import fail

    bar = None   # made at the first chip: an error found before it shows no empty bar

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="chip", desc="synth", leave=False)
        bar.total = total
        bar.update(done - bar.n)

    problem = unwritable(args.out, folder=True)
    if problem:
        return fail(problem)
    try:
        try:
            manifest = writer.generate(args.out, chips=args.chips, weak=args.weak_chips,
                                       external=args.external_chips, seed=args.seed,
                                       workers=args.workers, overwrite=args.overwrite,
                                       progress=progress, compress=args.compress)
        finally:  # before any message: the bar would overwrite it
            if bar is not None:
                bar.close()
    except (DatasetError, ValueError, OSError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        if not writer.partial(args.out):
            raise
        print(f"interrupted: a partial dataset is left in {args.out}; rerun with --overwrite "
              "to replace it", file=sys.stderr)
        return 130
    n = len(manifest["chips"])
    print(f"wrote {n} chips to {args.out} in {manifest['seconds']:.1f} s "
          f"({n / max(manifest['seconds'], 1e-9):.1f} chips/s, {args.workers} worker(s)); "
          f"hand splits {manifest['hand_splits']}, weak {manifest['counts']['weak']}, "
          f"external {manifest['counts']['external']}")
    for kind, q in manifest["label_quality"].items():
        print(f"  {kind} labels against the true water: IoU {q['iou']:.3f}, precision "
              f"{q['precision']:.3f}, recall {q['recall']:.3f}, {q['ignored']:.1%} of pixels ignored")
    return 0
