"""DDP through torchrun: two CPU processes with the gloo backend."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_two_gloo_processes_train_in_step(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", "-m", "tests.training.ddp_worker", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)
    # gradients were averaged across ranks: both replicas hold the same weights,
    # and they moved away from the (seeded, shared) initial weights
    assert r0["params"].keys() == r1["params"].keys()
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["step"] == 4
    assert torch.equal(last["model"]["classifier.weight"], r0["params"]["classifier.weight"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "2 process(es)" in log and "valid step 4" in log
    assert r0["summary"]["processes"] == 2
