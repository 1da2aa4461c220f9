"""Run by ``torchrun`` in test_ddp.py: one tiny DDP training on in-memory chips.

Each rank saves its final weights to ``OUT/rank<r>.pt`` so the test can compare them.
"""
import sys
from pathlib import Path

import torch

from training import ddp
from training.train import train

from .test_train import tiny_data, tiny_run


def main(out: Path) -> None:
    torch.set_num_threads(1)
    d = ddp.setup("cpu")
    run = tiny_run(arch="deeplabv3plus_xception65", width=0.125, steps=4, eval_every=2)
    summary, model = train(run, tiny_data(), out / "run", d=d, progress=False)
    torch.save({"summary": summary, "world": d.world, "rank": d.rank,
                "params": dict(model.named_parameters())}, out / f"rank{d.rank}.pt")
    ddp.teardown(d)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
