"""Precise batch norm: exact statistics, the chips it uses, and its place in training."""
import torch
from torch import nn

from training.checkpoint import load_checkpoint
from training.models import build_model
from training.precise_bn import calibration_batches, recalibrate
from training.train import train

from .test_train import tiny_data, tiny_run
from .tiny_chips import TinyChips


def _net() -> nn.Sequential:
    # dropout before the norm: were it left on, the statistics would not be exact
    return nn.Sequential(nn.Dropout(0.5), nn.BatchNorm2d(2, momentum=0.1))


def test_running_statistics_become_the_mean_over_the_batches():
    torch.manual_seed(0)
    net = _net().train()
    net[1].running_mean.fill_(50.0)
    net[1].running_var.fill_(9.0)
    batches = [torch.randn(3, 2, 5, 7) * (k + 1) + k for k in range(4)]

    assert recalibrate(net, batches) == 4

    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    vars_ = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches])
    torch.testing.assert_close(net[1].running_mean, means.mean(0))
    torch.testing.assert_close(net[1].running_var, vars_.mean(0))
    assert net[1].momentum == 0.1 and net.training and net[0].training


def test_a_model_without_batch_norm_is_left_alone():
    net = nn.Conv2d(2, 2, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert recalibrate(net.eval(), [torch.ones(1, 2, 4, 4)]) == 0
    assert not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_calibration_chips_come_equally_from_every_pool_and_are_seeded():
    pools = [TinyChips(6, seed=1), TinyChips(2, seed=2)]
    batches = calibration_batches(pools, ("s1",), chips=5, batch=2, seed=3,
                                  device=torch.device("cpu"))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    chips = torch.cat(batches)
    key = lambda x: tuple(x[0, 24, 20:24].tolist())  # noqa: E731 - a few pixels name a chip
    s1_first = {key(pools[0][i]["s1"]) for i in range(6)}
    s1_second = {key(pools[1][i]["s1"]) for i in range(2)}
    keys = [key(c) for c in chips]
    # alternating pools while the small one lasts, then the large one alone
    assert [k in s1_second for k in keys] == [False, True, False, True, False]
    assert all(k in s1_first for k in keys[::2]) and len(set(keys)) == 5
    # asking for every chip gets every chip, once
    every = torch.cat(calibration_batches(pools, ("s1",), 8, 3, 3, torch.device("cpu")))
    assert len({key(c) for c in every}) == 8 == every.shape[0]
    again = calibration_batches(pools, ("s1",), 5, 2, 3, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    other = calibration_batches(pools, ("s1",), 5, 2, 4, torch.device("cpu"))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_calibration_chips_are_resampled_to_the_model_grid():
    pools = [TinyChips(2, seed=1)]
    h = pools[0][0]["s1"].shape[-1]
    (x,) = calibration_batches(pools, ("s1",), 2, 2, 0, torch.device("cpu"), scale=0.5)
    assert x.shape[-2:] == (max(16, round(h * 0.5)),) * 2


def test_the_best_checkpoint_holds_statistics_recomputed_for_its_weights(tmp_path):
    run = tiny_run(arch="deeplabv3plus_xception65", width=0.125, steps=2, eval_every=2,
                   precise_bn_chips=4)
    data = tiny_data()
    train(run, data, tmp_path, progress=False)
    saved = load_checkpoint(tmp_path / "best.pt")["model"]
    model = build_model(run.model_spec)
    model.load_state_dict(saved)
    stale = {k: v.clone() for k, v in saved.items() if k.endswith("running_mean")}
    for k, v in model.state_dict().items():
        if k.endswith("running_mean"):
            v.fill_(123.0)
    recalibrate(model, calibration_batches(data.pools, ("s1",), 4, run.config.eval_batch,
                                           run.seed, torch.device("cpu")))
    for k, v in model.state_dict().items():
        if k in stale:
            torch.testing.assert_close(v, stale[k])


def test_calibration_chips_of_other_ground_grids_start_a_new_batch():
    # a chip read on another grid (training.data.datasets) has another size: it was stacked
    pools = [TinyChips(3, size=48, seed=1), TinyChips(3, size=40, seed=2)]
    batches = calibration_batches(pools, ("s1",), chips=6, batch=4, seed=3,
                                  device=torch.device("cpu"))
    assert [tuple(b.shape[-2:]) for b in batches] == [(48, 48), (40, 40)] * 3
