"""The training loop on small in-memory chips: resume, checkpoints, refusals."""
import json
import re
import subprocess
from contextlib import contextmanager

from pathlib import Path

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


def test_best_pt_is_the_first_best_validation_and_holds_its_weights(tmp_path):
    # a few scored pixels per validation chip: IoUs that rise, fall back and tie, so
    # that keeping the last validation, or the last of equal ones, picks another step
    data = tiny_data()
    scored = torch.zeros(48, 48, dtype=torch.bool)
    scored[::12, ::12] = True
    data.valid.label[:, ~scored] = -1
    run = tiny_run(steps=10, eval_every=1, lr=0.3)
    summary, _ = train(run, data, tmp_path / "run", progress=False)
    ious = [float(v) for v in
            re.findall(r"valid step \d+ iou (\S+)", (tmp_path / "run" / "train.log").read_text())]
    assert len(ious) == 10
    best_step = ious.index(max(ious)) + 1
    assert best_step < 10 and ious.count(max(ious)) > 1, ious   # the premise above
    assert summary["best_step"] == best_step and summary["iou_valid"] == max(ious)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["best"] == {"step": best_step, "iou_valid": max(ious)}
    # the same run stopped at that step holds the weights best.pt must hold
    with pytest.raises(Interrupted):
        train(run, data, tmp_path / "there", progress=False, stop_at=best_step)
    there = load_checkpoint(tmp_path / "there" / "last.pt")
    assert there["step"] == best_step
    for k, v in best["model"].items():
        assert torch.equal(v, there["model"][k]), k


def test_loss_falls_and_lr_decays_to_zero(tmp_path):
    train(tiny_run(steps=30, eval_every=30, lr=0.1), tiny_data(), tmp_path, progress=False)
    losses = step_losses(tmp_path)
    assert sum(list(losses.values())[-5:]) < sum(list(losses.values())[:5])
    lrs = {int(k): float(v) for k, v in
           re.findall(r"step (\d+) loss \S+ lr (\S+)", (tmp_path / "train.log").read_text())}
    assert sorted(lrs) == list(range(1, 31)) and lrs[30] == 0.0
    # poly decay of power 0.9 (Appendix B), logged to 6 significant digits: at step 15
    # linear decay gives 0.05, power 0.9 0.0536
    for k, lr in lrs.items():
        assert lr == pytest.approx(0.1 * (1 - k / 30) ** 0.9, rel=1e-5, abs=1e-12), k


def test_distillation_student_trains_from_a_teacher(tmp_path, monkeypatch):
    from training import train as train_module
    from training.checkpoint import load_model
    from training.losses import distillation_loss
    from training.models import build_model

    train(tiny_run("teacher"), tiny_data(), tmp_path / "teacher", progress=False)
    initial = []   # the student's weights as train() built them, before its first step

    def build_and_keep(spec):
        net = build_model(spec)
        initial.append({k: v.clone() for k, v in net.state_dict().items()})
        return net
    monkeypatch.setattr(train_module, "build_model", build_and_keep)
    run, data = tiny_run("student"), tiny_data(pools=2)
    summary, _ = train(run, data, tmp_path / "student",
                       teacher=tmp_path / "teacher" / "best.pt", progress=False)
    assert summary["method"] == "student" and len(step_losses(tmp_path / "student")) == 6
    assert len(initial) == 1

    # step 1's loss, made again: the initial student on step 0's batch against the
    # teacher's class probabilities on the teacher's own input (S1 + S2)
    student = build_model(run.model_spec)
    student.load_state_dict(initial[0])
    teacher, _ = load_model(tmp_path / "teacher" / "best.pt")
    batch = StepBatches(data.pools, run.config.batch_size,
                        train_module.batch_builder(run.method, run.config, 1.0),
                        run.seed, run.config.steps)[0]
    with torch.no_grad():
        logits = student.train()(batch["x"])
        p_teacher = torch.softmax(teacher(batch["x_teacher"]), dim=1)
        loss = distillation_loss(logits, p_teacher, batch["valid"]).item()
        flipped = distillation_loss(logits, p_teacher.flip(1), batch["valid"]).item()
    logged = step_losses(tmp_path / "student")[1]
    assert logged == pytest.approx(loss, abs=2e-6)
    assert abs(flipped - logged) > 0.01   # the teacher's classes swapped would show


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


def test_a_16m_model_trains_on_10m_chips_and_is_scored_at_their_grid(tmp_path, monkeypatch):
    from training import train as train_module
    from training.checkpoint import load_model
    from training.train import predict_probability, score

    real_builder, scales = train_module.batch_builder, []

    def builder_noting_its_scale(method, cfg, scale):   # model pixels per chip pixel
        scales.append(scale)
        return real_builder(method, cfg, scale)
    monkeypatch.setattr(train_module, "batch_builder", builder_noting_its_scale)
    data = tiny_data()
    summary, model = train(tiny_run(pixel_size_m=16.0, tile_size=320, tile_margin=32),
                           data, tmp_path, progress=False)
    assert scales == [10 / 16]
    x = torch.rand(2, 2, 48, 80)
    p = predict_probability(model.eval(), x, scale=10 / 16)
    assert p.shape == (2, 48, 80)
    doc = load_checkpoint(tmp_path / "best.pt")
    assert doc["run"]["config"]["pixel_size_m"] == 16.0
    # validation scored best.pt at that scale too; at the chips' own grid it scores otherwise
    best, _ = load_model(tmp_path / "best.pt")
    iou = {s: score(best, data.valid, ("s1",), 4, torch.device("cpu"), s).summary()["iou"]
           for s in (10 / 16, 1.0)}
    assert summary["iou_valid"] == iou[10 / 16] != iou[1.0]


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
                     # a field, yet it said "unknown config key 'preset'; known keys: preset, ..."
                     ({"preset": "paper"}, r"the preset is chosen with --preset \(paper or cpu\)"),
                     # empty or not positive: refused only once the data was read, by the model
                     ({"rates": ""}, "rates takes one or more positive integers"),
                     ({"rates": "2,0"}, "rates takes one or more positive integers"),
                     ({"compact_rates": "-2"}, "compact_rates takes one or more positive"),
                     ({"tile_margin": "300"}, "tile_size must be a multiple of 16"),
                     ({"rates": "1,x"}, "cannot read '1,x'"),
                     ({"precise_bn_chips": "-1"}, "precise_bn_chips must not be negative"),
                     ({"workers": "-2"}, "workers must not be negative"),
                     ({"method_lr": "hnad=0.01"}, "method_lr entry 'hnad=0.01'"),
                     ({"method_lr": "otsu=0.01"}, "method_lr entry 'otsu=0.01'"),
                     ({"method_lr": "hand=-1"}, "method_lr entry 'hand=-1'")]:
        with pytest.raises(ConfigError, match=msg):
            make_config("cpu", bad)
    with pytest.raises(ConfigError) as err:
        make_config("cpu", {"lrate": "0.1"})
    assert "known keys: arch, width," in str(err.value) and "preset" not in str(err.value)


def test_a_finished_run_without_last_pt_is_finished_and_its_best_pt_kept(tmp_path):
    """Deleting last.pt (the largest file) from a finished run made a rerun train from
    step 0 and replace the chosen best.pt, under a summary.json describing the old one."""
    run = tmp_path / "run"
    summary, _ = train(tiny_run(), tiny_data(), run, progress=False)
    (tmp_path / "chosen.pt").write_bytes((run / "best.pt").read_bytes())
    (run / "last.pt").unlink()
    again, model = train(tiny_run(workers=1), tiny_data(), run, progress=False)
    assert model is None and again == summary
    assert (run / "train.log").read_text().count("start hand") == 1
    with pytest.raises(RunError, match=r"best.pt belongs to a run with other settings "
                                       r"\(config steps: 6 there, 8 now\)"):
        train(tiny_run(steps=8), tiny_data(), run, progress=False)
    # this run's best.pt alone: a run stopped between its first validation and its first
    # last.pt (validating more often than it checkpoints) was refused for good; it runs
    # again from step 0, seeded, to the same best.pt
    (run / "summary.json").rename(tmp_path / "summary.json")
    again, _ = train(tiny_run(), tiny_data(), run, progress=False)
    assert again["iou_valid"] == summary["iou_valid"]
    a, b = load_checkpoint(run / "best.pt")["model"], load_checkpoint(tmp_path / "chosen.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    # summary.json alone: another run there would replace it
    only_summary = tmp_path / "only_summary"
    only_summary.mkdir()
    (tmp_path / "summary.json").rename(only_summary / "summary.json")
    with pytest.raises(RunError, match="holds summary.json but no last.pt"):
        train(tiny_run(), tiny_data(), only_summary, progress=False)


def test_a_finished_run_holding_another_runs_best_pt_is_refused(tmp_path):
    """Only best.pt's existence was checked: the other run's weights passed for this one's."""
    train(tiny_run(), tiny_data(), tmp_path / "run", progress=False)
    train(tiny_run(seed=1), tiny_data(), tmp_path / "other", progress=False)
    (tmp_path / "other" / "best.pt").replace(tmp_path / "run" / "best.pt")
    with pytest.raises(RunError, match=r"run/best.pt belongs to a run with other settings "
                                       r"\(seed: 1 there, 0 now\)"):
        train(tiny_run(), tiny_data(), tmp_path / "run", progress=False)


def test_a_run_that_finished_while_another_started_is_not_trained_over(tmp_path, monkeypatch):
    """The folder lock was taken after the folder's checks: a run started while another
    (other settings) was training there checked the empty folder, took the lock once the
    other ended, and trained over its finished run."""
    from training import train as train_module

    real_lock = train_module.folder_lock

    @contextmanager
    def lock_after_the_other_finished(out_dir, hold):
        (out_dir / "summary.json").write_text("{}")   # the other run, done meanwhile
        with real_lock(out_dir, hold):
            yield
    monkeypatch.setattr(train_module, "folder_lock", lock_after_the_other_finished)
    with pytest.raises(RunError, match="another run wrote this folder while this one started"):
        train(tiny_run(), tiny_data(), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["summary.json"]


def test_settings_that_change_no_result_do_not_block_resume(tmp_path):
    """Resuming was refused over workers, log_every or checkpoint_every, with the advice
    to delete the run; the resumed run is the uninterrupted one."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_run(), tiny_data(), straight, progress=False)
    with pytest.raises(Interrupted):
        train(tiny_run(), tiny_data(), split, progress=False, stop_at=2)
    train(tiny_run(workers=1, log_every=2, checkpoint_every=4), tiny_data(), split,
          progress=False)
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name)["model"], load_checkpoint(split / name)["model"]
        assert all(torch.equal(v, b[k]) for k, v in a.items()), name
    # the most telling difference is named: the method, not the first config key
    with pytest.raises(RunError) as err:
        train(tiny_run("teacher", batch_size=2), tiny_data(), split, progress=False)
    assert "(method: 'hand' there, 'teacher' now)" in str(err.value)
    assert "delete" not in str(err.value)


def test_stop_at_at_or_below_the_step_reached_stops_at_once(tmp_path):
    """It was ignored: the run went on to its last step."""
    with pytest.raises(Interrupted, match="stopped after step 3"):
        train(tiny_run(), tiny_data(), tmp_path, progress=False, stop_at=3)
    for stop_at in (2, 3):
        with pytest.raises(Interrupted, match=f"already at step 3, at or past --stop-at "
                                              f"{stop_at}: nothing trained"):
            train(tiny_run(), tiny_data(), tmp_path, progress=False, stop_at=stop_at)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    assert sorted(step_losses(tmp_path)) == [1, 2, 3]


def test_a_resume_says_which_logged_steps_a_kill_lost(tmp_path):
    """After a SIGKILL the log holds the steps done since the last checkpoint, then the
    resume's line, then the same steps again, with nothing saying why; the resume now
    names them. (The kill is stood in for by the log lines it leaves.)"""
    with pytest.raises(Interrupted):
        train(tiny_run(), tiny_data(), tmp_path, progress=False, stop_at=2)
    with (tmp_path / "train.log").open("a") as fh:
        fh.write("2026-11-24 04:00:00 step 3 loss 0.5 lr 0.01\n"
                 "2026-11-24 04:00:01 valid step 3 iou 0.5\n")
    train(tiny_run(), tiny_data(), tmp_path, progress=False)
    resumes = [line for line in (tmp_path / "train.log").read_text().splitlines()
               if " resume hand seed 0 at step 2/" in line]
    assert len(resumes) == 1 and "(the log above runs to step 3: the steps after 2 were " \
        "lost with a killed process" in resumes[0], resumes
    # a resume after a stop that saved its step (SIGTERM, --stop-at) has nothing to say
    with pytest.raises(Interrupted):
        train(tiny_run(), tiny_data(), tmp_path / "clean", progress=False, stop_at=2)
    train(tiny_run(), tiny_data(), tmp_path / "clean", progress=False)
    assert "were lost" not in (tmp_path / "clean" / "train.log").read_text()


def test_summary_json_is_written_atomically_and_a_truncated_one_written_again(
        tmp_path, monkeypatch):
    """A write cut short (full disk, kill) left a truncated summary.json, which the next
    run read with a JSON traceback."""
    real_write = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_run(), tiny_data(), tmp_path, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "train.log"]

    summary, _ = train(tiny_run(), tiny_data(), tmp_path, progress=False)
    text = (tmp_path / "summary.json").read_text()
    (tmp_path / "summary.json").write_text(text[:50])     # as a copy cut short leaves it
    again, _ = train(tiny_run(), tiny_data(), tmp_path, progress=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == again
    assert {k: v for k, v in again.items() if k != "train_seconds"} == \
        {k: v for k, v in summary.items() if k != "train_seconds"}
    assert sorted(step_losses(tmp_path)) == [1, 2, 3, 4, 5, 6]   # no step trained again
    (tmp_path / "summary.json").write_text(text[:50])
    (tmp_path / "last.pt").unlink()                        # nothing to write it again from
    with pytest.raises(RunError, match=r"summary.json: not readable JSON"):
        train(tiny_run(), tiny_data(), tmp_path, progress=False)


def test_a_run_removes_what_a_killed_save_left(tmp_path):
    """A save killed by SIGKILL leaves its temporary file: the next run of the folder
    removes those of processes no longer running."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    tmp_path.mkdir(exist_ok=True)
    names = [f".last.{gone.pid}.tmp.pt", f".best.{gone.pid}.tmp.pt",
             f".summary.{gone.pid}.tmp.json", ".last.1.tmp.pt"]   # pid 1 is running
    for name in names:
        (tmp_path / name).write_bytes(b"half")
    train(tiny_run(steps=1, eval_every=1), tiny_data(), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".last.1.tmp.pt", "best.pt", "last.pt", "summary.json", "train.log"]


def test_the_paper_preset_decays_only_the_kernels_of_full_convolutions_and_linear_layers():
    """DeepLab's reference code regularises those only; PyTorch's SGD decayed every
    parameter, batch norm's scales and shifts included."""
    from training.models import build_model
    from training.train import decay_groups
    assert not make_config("paper").decay_all and make_config("cpu").decay_all
    net = build_model({"arch": "compact", "in_channels": 2, "width": 0.25})
    names = {id(p): n for n, p in net.named_parameters()}
    decayed, free = decay_groups(net, 1e-4, decay_all=False)
    assert (decayed["weight_decay"], free["weight_decay"]) == (1e-4, 0.0)
    decayed = {names[id(p)] for p in decayed["params"]}
    free = {names[id(p)] for p in free["params"]}
    assert "stage2.0.weight" in decayed and "classifier.weight" in decayed
    assert "stage4.0.pointwise.weight" in decayed
    assert {"stage2.1.weight", "stage2.1.bias", "classifier.bias",
            "stage4.0.depthwise.weight"} <= free
    assert len(decayed) + len(free) == len(names)
    (every,) = decay_groups(net, 1e-4, decay_all=True)
    assert len(every["params"]) == len(names) and every["weight_decay"] == 1e-4


def _unlabelled(n: int, seed: int) -> TinyChips:
    chips = TinyChips(n, seed=seed)
    chips.label[:] = -1
    return chips


@pytest.mark.parametrize("where, message", [
    ("valid", "the validation split has no pixel to score"),
    ("train", "the training split train has no labelled pixel"),
])
def test_a_split_with_no_labelled_pixel_is_refused_before_training(tmp_path, where, message):
    """Every validation scored None and best.pt kept the first one's weights; a training
    split of -1 labels trained every step at loss 0: both ended 'done', exit 0."""
    data = tiny_data()
    if where == "valid":
        data.valid = _unlabelled(3, 9)
    else:
        data.pools = [_unlabelled(6, 1)]
    with pytest.raises(RunError, match=message):
        train(tiny_run(), data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_second_run_on_a_held_folder_is_refused(tmp_path):
    """Two runs started on one --out both trained, each overwriting the other's checkpoints."""
    from training.train import folder_lock

    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out, True):
        with pytest.raises(RunError, match=f"{out}: another run is training in this folder"):
            train(tiny_run(), tiny_data(), out, progress=False)
        assert not (out / "last.pt").exists()
    summary, _ = train(tiny_run(), tiny_data(), out, progress=False)   # free again
    assert summary["best_step"] > 0


def test_resume_refusals_say_what_differs(tmp_path):
    """Another preset was named by lr, then batch_size, ... one at a time; a changed chip
    list read 'other data (X) than X'; a cut last.pt '[Errno 22] Invalid argument'."""
    data = tiny_data()
    data.fingerprint = "a chip list"
    with pytest.raises(Interrupted):
        train(tiny_run(), data, tmp_path, progress=False, stop_at=1)
    paper = make_config("paper", TINY)
    with pytest.raises(RunError, match=r"other settings \(config preset: 'cpu' there, 'paper' now\)"):
        train(RunSpec(get_method("hand"), paper, 0, paper.lr, paper.weight_decay), tiny_data(),
              tmp_path, progress=False)
    changed = tiny_data()
    changed.fingerprint = "another chip list"
    with pytest.raises(RunError, match=r"trained on other chips of in-memory test chips \(a split's"):
        train(tiny_run(), changed, tmp_path, progress=False)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(RunError, match=rf"{last}: a PyTorch checkpoint cut short or corrupt \(5000 bytes"):
        train(tiny_run(), data, tmp_path, progress=False)


def test_a_finished_run_without_its_best_checkpoint_is_not_finished(tmp_path):
    """It said 'best valid IoU ... ; RUN/best.pt' and exit 0, naming a file that was gone."""
    train(tiny_run(), tiny_data(), tmp_path, progress=False)
    (tmp_path / "best.pt").unlink()
    with pytest.raises(RunError, match="holds a finished run .* but no best.pt"):
        train(tiny_run(), tiny_data(), tmp_path, progress=False)


def test_bfloat16_precision_runs_the_forward_passes_under_autocast(tmp_path):
    """--set precision=bfloat16: the loss is that of bf16 forward passes (near the float32
    one, not equal to it), weights and checkpoints stay float32, and a run trains."""
    from training.models import build_model
    from training.train import method_loss
    torch.manual_seed(0)
    student, teacher = (build_model(tiny_run(m).model_spec).eval() for m in ("student", "teacher"))
    batch = {"x": torch.randn(2, 2, 32, 32), "x_teacher": torch.randn(2, 6, 32, 32),
             "label": torch.randint(-1, 2, (2, 32, 32)), "valid": torch.ones(2, 32, 32, dtype=bool)}
    for kind, net, teacher_net in (("supervised", student, None), ("distill", student, teacher)):
        full, half = (method_loss(net, teacher_net, batch, tiny_run(precision=p).config, None, kind)
                      for p in ("float32", "bfloat16"))
        assert full.dtype == half.dtype == torch.float32
        assert full != half and abs(half - full) < 0.05 * full, (kind, full, half)

    summary, _ = train(tiny_run(precision="bfloat16"), tiny_data(), tmp_path, progress=False)
    assert summary["steps"] == 6 and 0 <= summary["iou_valid"] <= 1
    weights = load_checkpoint(tmp_path / "best.pt")["model"].values()
    assert all(w.dtype in (torch.float32, torch.int64) for w in weights)
    from training.config import ConfigError
    with pytest.raises(ConfigError, match="precision must be one of float32, bfloat16"):
        make_config("cpu", {"precision": "fp16"})


def test_the_same_checkpoint_saved_twice_is_the_same_bytes(tmp_path):
    """torch.save to a path names the archive's root folder after the file, here a random
    temporary name: teacher_sha256 differed between identical seeded runs, and a student
    was refused its resume against a teacher saved again with the same weights."""
    from training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    doc = {"step": 3, "model": torch.nn.Conv2d(2, 4, 3).state_dict()}
    save_checkpoint(tmp_path / "a.pt", doc)
    save_checkpoint(tmp_path / "b.pt", doc)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_a_checkpoint_that_cannot_be_written_is_one_message(tmp_path, monkeypatch):
    """A full disk during a save ended the run with torch's 35-line traceback ("unexpected
    pos ..."); the previous checkpoint stays and no temporary file is left."""
    from training import checkpoint
    from training.checkpoint import CheckpointError, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 10 vs 2")
    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=rf"^{path}: cannot be written \(\[enforce fail"):
        save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
