"""DDP through torchrun: two CPU processes with the gloo backend."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training import ddp
from training.checkpoint import load_checkpoint

from .ddp_worker import global_batch, loss_gradients

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """One two-process run of ddp_worker: its folder and what each rank saved."""
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", "-m", "tests.training.ddp_worker", str(out)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_two_gloo_processes_train_in_step(ranks):
    out, (r0, r1) = ranks
    assert (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)
    # gradients were averaged across ranks and precise BN ran on both: the replicas hold
    # the same weights and batch-norm statistics, and the weights moved away from the
    # (seeded, shared) initial ones
    assert r0["state"].keys() == r1["state"].keys() == r0["initial"].keys()
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
        assert torch.equal(r0["initial"][k], r1["initial"][k]), k
        assert not torch.equal(v, r0["initial"][k]), k
    last = load_checkpoint(out / "run" / "last.pt")
    assert last["step"] == 4
    for k, v in last["model"].items():
        assert torch.equal(v, r0["state"][k]), k
    log = (out / "run" / "train.log").read_text()
    assert "2 process(es)" in log and "valid step 4" in log


def test_every_rank_returns_the_validation_result_of_rank_0(ranks):
    # only rank 0 validates; reproduce picks a grid point from the summary on every rank
    out, (r0, r1) = ranks
    on_disk = json.loads((out / "run" / "summary.json").read_text())
    assert r0["summary"] == r1["summary"] == on_disk
    assert r1["summary"]["processes"] == 2 and r1["summary"]["iou_valid"] is not None


def test_precise_bn_runs_synchronised_batch_norm_as_plain_batch_norm(ranks):
    # GPU DDP's SyncBatchNorm layers would all-gather in training mode (and refuse to on
    # CPU): recalibrate gives them a single process's statistics, with no collective
    for r in ranks[1]:
        assert r["sync_bn"].keys() == r["plain_bn"].keys()
        for k, v in r["plain_bn"].items():
            assert torch.equal(v, r["sync_bn"][k]), k


def test_the_ranks_averaged_gradient_is_the_one_process_gradient(ranks):
    # rank 1's slice is three quarters no-data: with per-rank means its pixels weighed
    # more than rank 0's (the gradient was 20 to 30 % off)
    one = loss_gradients(global_batch(), ddp.Dist(0, 1, torch.device("cpu")))
    for r in ranks[1]:
        assert r["grads"].keys() == one.keys()
        for k, v in one.items():
            torch.testing.assert_close(r["grads"][k], v, msg=k)



def test_torchrun_names_a_workers_error_as_the_root_cause(tmp_path):
    """A worker's one-line error (here a wrong --data) was printed above torchrun's own
    traceback and failure report, whose root cause said only "To enable traceback see"."""
    nowhere = tmp_path / "nowhere"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "training", "train", "hand", "--data", str(nowhere), "--out", str(tmp_path / "run"),
         "--device", "cpu"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"error: {nowhere}: dataset folder not found\n" in proc.stderr
    root_cause = proc.stderr.split("Root Cause")[-1]
    assert f"traceback : error: {nowhere}: dataset folder not found\n" in root_cause, proc.stderr
    assert not (tmp_path / "run").exists()
