"""The training loop on small in-memory chips: resume, checkpoints, refusals."""
import json
import re

import pytest
import torch

from training.batches import StepBatches, supervised_builder
from training.checkpoint import load_checkpoint
from training.config import make_config
from training.methods import get_method
from training.train import Interrupted, RunData, RunError, RunSpec, train

from .tiny_chips import TinyChips

torch.set_num_threads(1)

TINY = {"arch": "compact", "width": 0.25, "compact_width": 0.25, "steps": 6, "batch_size": 4,
        "crop": 32, "eval_every": 3, "checkpoint_every": 100, "log_every": 1, "eval_batch": 4,
        "workers": 0, "lr": 0.05}


def tiny_run(method="hand", seed=0, **over):
    cfg = make_config("cpu", {**TINY, **over})
    return RunSpec(get_method(method), cfg, seed, cfg.lr, cfg.weight_decay)


def tiny_data(pools=1):
    return RunData(pools=[TinyChips(6, seed=1 + i) for i in range(pools)],
                   valid=TinyChips(3, seed=9), description="in-memory test chips",
                   pixel_size_m=10.0)


def step_losses(run_dir):
    text = (run_dir / "train.log").read_text()
    return {int(s): float(v) for s, v in re.findall(r"step (\d+) loss ([0-9.e+-]+)", text)}


def test_interrupted_run_resumes_to_the_same_state(tmp_path):
    # DeepLab (it has dropout) and a DataLoader worker: the parts that hold RNG state
    run = tiny_run(arch="deeplabv3plus_xception65", width=0.125, workers=1)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(run, tiny_data(), straight, progress=False)
    with pytest.raises(Interrupted, match="stopped after step 2"):
        train(run, tiny_data(), split, progress=False, stop_at=2)
    assert load_checkpoint(split / "last.pt")["step"] == 2
    assert not (split / "summary.json").exists()
    train(run, tiny_data(), split, progress=False)

    a, b = step_losses(straight), step_losses(split)
    assert sorted(a) == list(range(1, 7)) and a == b
    for name in ("last.pt", "best.pt"):
        sa, sb = load_checkpoint(straight / name), load_checkpoint(split / name)
        for k, v in sa["model"].items():
            assert torch.equal(v, sb["model"][k]), (name, k)
    assert load_checkpoint(straight / "last.pt")["optimizer"]["state"].keys() \
        == load_checkpoint(split / "last.pt")["optimizer"]["state"].keys()
    summary, model = train(run, tiny_data(), split, progress=False)  # already finished
    assert model is None and summary == json.loads((split / "summary.json").read_text())
    assert summary["steps"] == 6 and 0 <= summary["iou_valid"] <= 1
    assert summary["best_step"] in (3, 6)


def test_loss_falls_and_lr_decays_to_zero(tmp_path):
    train(tiny_run(steps=30, eval_every=30, lr=0.1), tiny_data(), tmp_path, progress=False)
    losses = step_losses(tmp_path)
    assert sum(list(losses.values())[-5:]) < sum(list(losses.values())[:5])
    last_lr = re.findall(r"step 30 loss \S+ lr (\S+)", (tmp_path / "train.log").read_text())
    assert float(last_lr[0]) == 0.0


def test_distillation_student_trains_from_a_teacher(tmp_path):
    train(tiny_run("teacher"), tiny_data(), tmp_path / "teacher", progress=False)
    summary, _ = train(tiny_run("student"), tiny_data(pools=2), tmp_path / "student",
                       teacher=tmp_path / "teacher" / "best.pt", progress=False)
    assert summary["method"] == "student" and len(step_losses(tmp_path / "student")) == 6


def test_teacher_of_another_architecture_is_refused_before_training(tmp_path):
    train(tiny_run("hand"), tiny_data(), tmp_path / "hand", progress=False)
    with pytest.raises(RunError, match="takes 2 input channels, this run needs 6"):
        train(tiny_run("student"), tiny_data(pools=2), tmp_path / "student",
              teacher=tmp_path / "hand" / "best.pt", progress=False)
    assert not (tmp_path / "student").exists()   # no empty run folder either


def test_resume_with_other_settings_is_refused(tmp_path):
    with pytest.raises(Interrupted):
        train(tiny_run(), tiny_data(), tmp_path, progress=False, stop_at=1)
    with pytest.raises(RunError, match=r"other settings \(config"):
        train(tiny_run(width=0.5), tiny_data(), tmp_path, progress=False)


def test_a_run_resumes_under_another_choice_of_learning_rates(tmp_path):
    """The preset's lr, grid or per-row lr only choose a run's lr; the run keeps its own."""
    with pytest.raises(Interrupted):
        train(tiny_run(), tiny_data(), tmp_path, progress=False, stop_at=1)
    first = tiny_run()
    cfg = make_config("cpu", {**TINY, "lr": 0.2, "lr_grid": "0.2,0.3",
                              "method_lr": f"hand={first.lr}"})
    assert cfg.lr_for("hand") == first.lr
    summary, _ = train(RunSpec(get_method("hand"), cfg, 0, cfg.lr_for("hand"),
                               cfg.weight_decay), tiny_data(), tmp_path, progress=False)
    assert summary["lr"] == first.lr and len(step_losses(tmp_path)) == 6
    with pytest.raises(RunError, match=r"other settings \(lr"):   # the run's own lr counts
        train(RunSpec(get_method("hand"), cfg, 0, 0.2, cfg.weight_decay), tiny_data(),
              tmp_path, progress=False)


def test_a_run_made_before_a_config_field_existed_resumes_at_its_default(tmp_path):
    with pytest.raises(Interrupted):
        train(tiny_run(), tiny_data(), tmp_path, progress=False, stop_at=1)
    state = load_checkpoint(tmp_path / "last.pt")
    del state["run"]["config"]["jitter_groups"]      # as written before the field existed
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(RunError, match=r"other settings \(config"):  # it ran per channel
        train(tiny_run(jitter_groups="sensor"), tiny_data(), tmp_path, progress=False)
    summary, _ = train(tiny_run(), tiny_data(), tmp_path, progress=False)
    assert len(step_losses(tmp_path)) == 6


def test_a_deeplab_run_made_before_zero_init_residual_resumes_only_without_it(tmp_path):
    deeplab = {"arch": "deeplabv3plus_xception65", "width": 0.125, "rates": (1, 2, 4)}
    with pytest.raises(Interrupted):
        train(tiny_run(zero_init_residual=False, **deeplab), tiny_data(), tmp_path,
              progress=False, stop_at=1)
    state = load_checkpoint(tmp_path / "last.pt")
    del state["run"]["config"]["zero_init_residual"]    # as written before the field existed
    del state["run"]["model_spec"]["zero_init_residual"]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(RunError, match=r"other settings \(config"):  # the default: zero init
        train(tiny_run(**deeplab), tiny_data(), tmp_path, progress=False)
    train(tiny_run(zero_init_residual=False, **deeplab), tiny_data(), tmp_path, progress=False)
    assert len(step_losses(tmp_path)) == 6


def test_step_batches_are_independent_of_the_process_count():
    cfg = make_config("cpu", TINY)
    build = supervised_builder(cfg, ("s1",), "label")
    pools = [TinyChips(5, seed=3), TinyChips(7, seed=4)]
    whole = StepBatches(pools, 4, build, seed=5, steps=10)[7]
    halves = [StepBatches(pools, 4, build, seed=5, steps=10, rank=r, world=2)[7] for r in (0, 1)]
    for k in whole:
        assert torch.equal(whole[k], torch.cat([h[k] for h in halves]))
    with pytest.raises(ValueError, match="must split evenly"):
        StepBatches(pools, 6, build, seed=5, steps=10, world=2)


def test_a_16m_model_trains_on_10m_chips_and_is_scored_at_their_grid(tmp_path):
    from training.train import predict_probability
    summary, model = train(tiny_run(pixel_size_m=16.0, tile_size=320, tile_margin=32),
                           tiny_data(), tmp_path, progress=False)
    x = torch.rand(2, 2, 48, 80)
    p = predict_probability(model.eval(), x, scale=10 / 16)
    assert p.shape == (2, 48, 80) and summary["iou_valid"] is not None
    doc = load_checkpoint(tmp_path / "best.pt")
    assert doc["run"]["config"]["pixel_size_m"] == 16.0


def test_config_presets_and_overrides():
    from training.config import ConfigError
    paper = make_config("paper")
    # Garg et al., Appendix B
    assert (paper.batch_size, paper.crop, paper.steps, paper.momentum, paper.poly_power) \
        == (64, 321, 30000, 0.9, 0.9)
    assert paper.lr_grid == (0.3, 0.1, 0.003, 0.001) and len(paper.grid()) == 16
    assert paper.pixel_size_m == 16.0 and paper.rates == (6, 12, 18)
    cfg = make_config("cpu", {"rates": "1,2,3", "cache": "no", "steps": "12"})
    assert cfg.rates == (1, 2, 3) and cfg.cache is False and cfg.steps == 12
    assert cfg.grid() == [(cfg.lr, cfg.weight_decay)]
    per_row = make_config("cpu", {"method_lr": "weak=0.02, hand=0.03"})
    assert per_row.grid("hand") == [(0.03, per_row.weight_decay)]
    assert per_row.lr_for("weak") == 0.02 and per_row.lr_for("teacher") == per_row.lr
    for bad, msg in [({"steps": "abc"}, "cannot read 'abc'"), ({"steps": "1.5"}, "cannot read"),
                     ({"preset": "paper"}, "unknown config key 'preset'"),
                     ({"tile_margin": "300"}, "tile_size must be a multiple of 16"),
                     ({"rates": "1,x"}, "cannot read '1,x'"),
                     ({"precise_bn_chips": "-1"}, "precise_bn_chips must not be negative"),
                     ({"workers": "-2"}, "workers must not be negative"),
                     ({"method_lr": "hnad=0.01"}, "method_lr entry 'hnad=0.01'"),
                     ({"method_lr": "otsu=0.01"}, "method_lr entry 'otsu=0.01'"),
                     ({"method_lr": "hand=-1"}, "method_lr entry 'hand=-1'")]:
        with pytest.raises(ConfigError, match=msg):
            make_config("cpu", bad)
