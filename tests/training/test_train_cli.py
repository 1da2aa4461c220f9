"""``python -m training train`` on generated data: bad input refused before training,
and a run interrupted by SIGINT resumes without losing finished steps."""
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader, Dataset

from training.checkpoint import load_checkpoint
from training.cli import fail
from training.data.layout import DatasetError
from training.rundata import describe
from training.train import Interrupted, RunData, RunError, train

from .test_train import step_losses, tiny_data, tiny_run

REPO = Path(__file__).resolve().parents[2]
# one thread: two OpenMP threads on a shared 2-core machine slow a step down many times
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = ["--set", "crop=64", "--set", "batch_size=2", "--set", "width=0.125",
         "--set", "log_every=1", "--no-progress"]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "training", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=ENV, **kw)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """A small synthetic dataset (8 hand-labelled, 4 weak, 4 external chips)."""
    root = tmp_path_factory.mktemp("synth")
    proc = cli("synth", "--out", root / "d", "--chips", 8, "--weak-chips", 4,
               "--external-chips", 4, "--seed", 3)
    assert proc.returncode == 0, proc.stderr
    return root / "d"


def logged_steps(run: Path) -> list[int]:
    return [int(s) for s in re.findall(r" step (\d+) loss", (run / "train.log").read_text())]


def one_line_error(proc, text):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], proc.stderr


def invalid_choice(proc, option, value):
    """argparse's refusal: the usage, then one line naming the option and the value."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"error: argument {option}: invalid choice: {value!r}" in last, proc.stderr


def test_wrong_data_path(tmp_path):
    proc = cli("train", "hand", "--data", tmp_path / "nowhere", "--out", tmp_path / "run")
    one_line_error(proc, "nowhere: dataset folder not found")
    assert not (tmp_path / "run").exists()


def test_empty_split(data, tmp_path):
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    (copy / "v1.1/splits/flood_handlabeled/flood_train_data.csv").write_text("")
    proc = cli("train", "hand", "--data", copy, "--out", tmp_path / "run")
    one_line_error(proc, "lists no chips")
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_and_method(data, tmp_path):
    one_line_error(cli("train", "hand", "--data", data, "--out", tmp_path / "run",
                       "--set", "lrate=0.1"), "unknown config key 'lrate'")
    one_line_error(cli("train", "unet", "--data", data, "--out", tmp_path / "run"),
                   "unknown method 'unet'; expected one of hand, ")   # not otsu: never trained
    assert not (tmp_path / "run").exists()


def test_bad_values_and_missing_inputs_are_refused_before_the_data_is_read(tmp_path):
    """Each gave a traceback, a run folder, or (lr=nan) a NaN best.pt with exit 0; the
    data path does not exist, so an answer about it would mean the data was read first."""
    nowhere = tmp_path / "nowhere"
    (tmp_path / "afile").write_text("x")
    for args, text in (
            (["hand", "--set", "steps=inf"], "config key 'steps': inf is not a finite number"),
            (["hand", "--set", "lr=nan"], "config key 'lr': nan is not a finite number"),
            (["hand", "--lr", "-1"], "learning rates must be positive"),
            (["hand", "--set", "weight_decay=-1"], "weight decays must not be negative"),
            (["hand", "--set", "poly_power=-1"], "poly_power must be positive"),
            (["hand", "--set", "arch=foo"], "arch 'foo' is not one of"),
            (["hand", "--set", "zoom=2,1"], "zoom takes two positive numbers"),
            # a traceback from the model, once the data was read, and an empty run folder
            (["hand", "--set", "rates="], "rates takes one or more positive integers"),
            (["student_compact", "--set", "compact_rates=0"],
             "compact_rates takes one or more positive integers"),
            # ignored: the run went on to its end
            (["hand", "--stop-at", "0"], "--stop-at 0: give a step of at least 1"),
            (["hand", "--stop-at", "-3"], "--stop-at -3: give a step of at least 1"),
            (["hand", "--seed", "-1"], "--seed -1: give 0 or more"),
            (["student"], "method 'student' needs --teacher CHECKPOINT"),
            (["student", "--teacher", tmp_path / "t.pt"], "t.pt: file not found")):
        out = tmp_path / "run"
        one_line_error(cli("train", *args, "--data", nowhere, "--out", out), text)
        assert not out.exists()
    for option, value in (("--preset", "gpu"), ("--device", "cudaa")):
        invalid_choice(cli("train", "hand", "--data", nowhere, "--out", tmp_path / "run",
                           option, value), option, value)
        assert not (tmp_path / "run").exists()
    one_line_error(cli("train", "hand", "--data", nowhere, "--out", tmp_path / "afile"),
                   "afile: is a file, not a folder")
    one_line_error(cli("train", "hand", "--data", nowhere, "--out", "/proc/run"),
                   "/proc/run: cannot write in /proc")
    # a run folder whose parents do not exist yet is made with them (runs/ on a fresh clone)
    one_line_error(cli("train", "hand", "--data", nowhere, "--out", tmp_path / "runs" / "hand"),
                   "nowhere: dataset folder not found")


def test_a_diverging_run_stops_with_an_error_and_keeps_no_nan_checkpoint(tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(RunError, match="the run diverged"):
        train(tiny_run("hand", lr=1e30, steps=3, eval_every=1, checkpoint_every=1),
              tiny_data(), tmp_path, progress=False)
    for name in ("best.pt", "last.pt"):
        if (tmp_path / name).exists():
            doc = torch.load(tmp_path / name, weights_only=True)
            assert all(torch.isfinite(t).all() for t in doc["model"].values()
                       if t.is_floating_point())
    # the error was on stderr alone: train.log, read once the terminal is gone, ended
    # with the last loss line
    last = (tmp_path / "train.log").read_text().splitlines()[-1]
    assert re.search(r"stopped: the (loss is nan|weights are no longer finite) at step \d: "
                     r"the run diverged", last), last


def test_a_full_disk_says_whether_a_checkpoint_is_kept_and_is_logged(data, tmp_path):
    """Files capped at 50 kB (RLIMIT_FSIZE: a full disk for torch.save, no mount needed):
    the first best.pt cannot be written. The error said "the checkpoint before it is
    kept", where there was none, and was on stderr alone."""
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # fail the write, not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    run = tmp_path / "run"
    proc = cli("train", "hand", "--data", data, "--out", run, "--set", "steps=2",
               "--set", "eval_every=1", "--set", "workers=0", *SMALL, preexec_fn=small_files)
    one_line_error(proc, f"{run / 'best.pt'}: cannot be written (")
    assert proc.stderr.strip().endswith("is the disk full? There was no earlier checkpoint")
    assert (run / "train.log").read_text().splitlines()[-1].endswith(
        f" stopped: {proc.stderr.strip()[len('error: '):]}")


def test_a_student_resumes_only_with_its_own_teacher(tmp_path):
    torch.set_num_threads(1)
    for seed in (0, 1):
        train(tiny_run("teacher", seed=seed, steps=1, eval_every=1), tiny_data(),
              tmp_path / f"teacher{seed}", progress=False)
    with pytest.raises(Interrupted):
        train(tiny_run("student"), tiny_data(pools=2), tmp_path / "student",
              teacher=tmp_path / "teacher0" / "best.pt", progress=False, stop_at=1)
    with pytest.raises(RunError, match="was trained from another teacher"):
        train(tiny_run("student"), tiny_data(pools=2), tmp_path / "student",
              teacher=tmp_path / "teacher1" / "best.pt", progress=False)


def test_a_resume_mismatch_names_the_setting(tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(Interrupted):
        train(tiny_run(steps=3), tiny_data(), tmp_path, progress=False, stop_at=1)
    with pytest.raises(RunError) as err:
        train(tiny_run(steps=5), tiny_data(), tmp_path, progress=False)
    assert "(config steps: 3 there, 5 now)" in str(err.value) and len(str(err.value)) < 300


def test_checkpoint_of_another_architecture(data, tmp_path):
    torch.set_num_threads(1)
    train(tiny_run("hand", steps=1, eval_every=1), tiny_data(), tmp_path / "s1", progress=False)
    proc = cli("train", "student", "--data", data, "--out", tmp_path / "run",
               "--teacher", tmp_path / "s1" / "best.pt", *SMALL)
    one_line_error(proc, "takes 2 input channels, this run needs 6")
    assert not (tmp_path / "run" / "last.pt").exists()
    # a run folder of another architecture is not resumed with this one
    shutil.copytree(tmp_path / "s1", tmp_path / "run2")
    proc = cli("train", "hand", "--data", data, "--out", tmp_path / "run2", *SMALL)
    one_line_error(proc, "belongs to a run with other settings")


# SIGTERM to the whole process group (Slurm, systemd) with a DataLoader worker: torch's
# SIGTERM handler in the worker killed it, and the run stopped with a traceback
@pytest.mark.parametrize("sig,group,workers", [(signal.SIGINT, False, 0),
                                               (signal.SIGTERM, True, 1)])
def test_a_stop_signal_stops_after_a_step_and_the_rerun_continues(data, tmp_path, sig, group,
                                                                  workers):
    run = tmp_path / "run"
    args = ["train", "hand", "--data", data, "--out", run, "--set", "steps=40",
            "--set", "eval_every=40", "--set", f"workers={workers}", *SMALL]
    proc = subprocess.Popen([sys.executable, "-m", "training", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=group)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            (run / "train.log").exists() and len(logged_steps(run)) >= 3):
        time.sleep(0.05)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = logged_steps(run)
    assert 3 <= len(done) < 40 and done == list(range(1, len(done) + 1))
    assert f"interrupted: stopped after step {done[-1]}" in err   # on stderr, not stdout

    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    steps = logged_steps(run)
    # every step ran exactly once, none lost and none repeated
    assert steps == list(range(1, 41))
    assert f"resume hand seed 0 at step {done[-1]}/40" in (run / "train.log").read_text()


def first_chip(root: Path, split: str) -> str:
    line = (root / f"v1.1/splits/flood_handlabeled/flood_{split}_data.csv").read_text()
    return line.split(",")[0][: -len("_S1Hand.tif")]


def test_a_header_the_reader_refuses_stops_the_run_before_training(data, tmp_path):
    """An S2 file without B8 surfaced when the teacher first read that chip, steps into
    the run, as a traceback."""
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    s2 = copy / f"v1.1/data/flood_events/HandLabeled/S2Hand/{first_chip(copy, 'train')}_S2Hand.tif"
    with rasterio.open(s2) as ds:
        profile, bands = {**ds.profile, "count": 4}, ds.read([1, 2, 3, 4])
    with rasterio.open(s2, "w", **profile) as ds:
        ds.write(bands)
        ds.descriptions = ("B1", "B2", "B3", "B4")
    proc = cli("train", "teacher", "--data", copy, "--out", tmp_path / "run", *SMALL)
    one_line_error(proc, f"{s2}: bands B8 not found (bands are B1, B2, B3, B4)")
    assert not (tmp_path / "run").exists()


def test_a_chip_bad_only_in_its_pixels_stops_the_run_with_one_line(data, tmp_path):
    """Label values are seen only when a chip is read, here in a DataLoader worker: that
    was a traceback, its message the worker's own traceback."""
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    label = copy / f"v1.1/data/flood_events/HandLabeled/LabelHand/{first_chip(copy, 'train')}_LabelHand.tif"
    with rasterio.open(label, "r+") as ds:
        ds.write(np.full((ds.height, ds.width), 2, np.int16), 1)
    proc = cli("train", "hand", "--data", copy, "--out", tmp_path / "run", "--set", "steps=4",
               "--set", "eval_every=4", "--set", "workers=1", *SMALL)
    one_line_error(proc, f"{label}: label holds values 2; expected only -1, 0, 1")


def test_errors_keep_their_problems_one_a_line(capsys):
    """``fail`` joined every line of a problem list into one long line."""
    fail("split 'valid': 2 problems\n  - line 3:  chip X already   listed\n  - chip Y: s1 missing")
    assert capsys.readouterr().err == ("error: split 'valid': 2 problems\n  - line 3: chip X "
                                       "already listed\n  - chip Y: s1 missing\n")


def test_errors_from_a_dataloader_worker_are_their_own_message(capsys):
    """torch re-raises a worker's error with the worker's traceback as its message."""
    class Bad(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise DatasetError("x.tif: label holds values 2; expected only -1, 0, 1")

    with pytest.raises(DatasetError) as err:
        next(iter(DataLoader(Bad(), num_workers=1)))
    assert "Traceback" in str(err.value)
    fail(str(err.value))
    assert capsys.readouterr().err == "error: x.tif: label holds values 2; expected only -1, 0, 1\n"


@pytest.mark.parametrize("layer", ["S1Weak", "S2IndexLabelWeak"])
def test_without_the_weak_set_the_table_leaves_its_rows_out(data, tmp_path, layer):
    """Sen1Floods11 with only its hand-labelled part (a common partial download): the
    whole table stopped on the weak folder, with no way forward given. Without the weak
    labels alone it listed every chip's missing label and stopped the table too."""
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    weak = copy / "v1.1/data/flood_events/WeaklyLabeled" / layer
    shutil.rmtree(weak)
    small = ["--set", "steps=2", "--set", "crop=32", "--set", "batch_size=2",
             "--set", "width=0.125", "--set", "eval_batch=1"]
    proc = cli("reproduce", "--data", copy, "--estimate", "--seeds", 1, *small)
    assert proc.returncode == 0 and "projected:" in proc.stdout, proc.stderr
    assert "note: the data has no weakly labelled set; left out of the table: weak, weak_ed" \
        in proc.stdout
    asked = cli("reproduce", "--data", copy, "--estimate", "--seeds", 1, "--methods", "weak")
    one_line_error(asked, f"{weak} not found: the data has no weakly labelled set; the rows "
                          "weak, weak_ed, chip_classifier, pretrained train on it: give "
                          "Sen1Floods11's weakly labelled chips")
    assert ("or leave those rows out (reproduce --methods hand,student,student_compact,teacher,"
            "hand_compact,optical_teacher,flora)") in asked.stderr


class FailsAfter(Dataset):
    """Chips whose reads fail from the (n+1)-th on, as a chip bad only in its pixels."""

    def __init__(self, chips, n):
        self.chips, self.n, self.reads = chips, n, 0

    def __len__(self):
        return len(self.chips)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.n:
            raise DatasetError("x_LabelHand.tif: label holds values 2; expected only -1, 0, 1")
        return self.chips[i]


def test_a_chip_bad_in_its_pixels_mid_run_keeps_the_steps_done(tmp_path, capsys):
    """The steps since the last checkpoint were lost, and the error line followed a
    progress bar left open."""
    torch.set_num_threads(1)
    good = tiny_data()
    # 4 reads a step, after the one that finds a labelled pixel before the first step
    bad = RunData(pools=[FailsAfter(good.pools[0], 1 + 8)], valid=good.valid,
                  description=good.description, pixel_size_m=good.pixel_size_m)
    split, straight = tmp_path / "split", tmp_path / "straight"
    with pytest.raises(DatasetError, match=r"values 2; expected only -1, 0, 1 \(steps 1-2 are "
                                           r"saved: once the file is fixed, rerun"):
        train(tiny_run(), bad, split)
    assert capsys.readouterr().err.endswith("\n")   # the bar, closed
    assert load_checkpoint(split / "last.pt")["step"] == 2
    train(tiny_run(), tiny_data(), split, progress=False)
    train(tiny_run(), tiny_data(), straight, progress=False)
    assert step_losses(split) == step_losses(straight)
    a, b = (load_checkpoint(run / "last.pt")["model"] for run in (straight, split))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_a_validation_chip_bad_in_its_pixels_stops_the_run_before_its_first_step(tmp_path):
    """It was read at the first validation only, after steps that were then lost."""
    torch.set_num_threads(1)
    good = tiny_data()
    bad = RunData(pools=good.pools, valid=FailsAfter(good.valid, len(good.valid) - 1),
                  description=good.description, pixel_size_m=good.pixel_size_m)
    with pytest.raises(DatasetError, match=r"^x_LabelHand.tif: label holds values 2"):
        train(tiny_run(), bad, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_stop_at_is_a_success_that_a_job_script_can_chain(data, tmp_path):
    run = ["train", "hand_compact", "--data", data, "--out", tmp_path / "run",
           "--set", "steps=4", *SMALL]
    first = cli(*run, "--stop-at", 2)
    assert first.returncode == 0 and "--stop-at 2: stopped after step 2" in first.stdout, \
        first.stdout + first.stderr
    assert logged_steps(tmp_path / "run") == [1, 2]
    # logged as asked for, not as an interruption (a signal's line)
    log = (tmp_path / "run" / "train.log").read_text()
    assert " stopped after step 2 as --stop-at asked\n" in log and "interrupted" not in log
    again = cli(*run, "--stop-at", 2)
    assert again.returncode == 0 and "already at step 2" in again.stdout, again.stderr
    rest = cli(*run)
    assert rest.returncode == 0, rest.stderr
    assert logged_steps(tmp_path / "run") == [1, 2, 3, 4]


def test_the_dataset_folder_is_not_a_run_folder(data, tmp_path):
    """--out DATA wrote train.log, best.pt ... beside v1.1/ and the synthetic manifest."""
    before = sorted(p.name for p in data.iterdir())
    one_line_error(cli("train", "hand", "--data", data, "--out", data, *SMALL),
                   f"--out {data}: holds v1.1, a dataset's folder; give a run folder of its own")
    assert sorted(p.name for p in data.iterdir()) == before
    manifest_only = tmp_path / "copy"
    manifest_only.mkdir()
    shutil.copy(data / "synth_manifest.json", manifest_only)
    one_line_error(cli("train", "hand", "--data", data, "--out", manifest_only, *SMALL),
                   "holds synth_manifest.json, a dataset's folder")


def test_synthetic_data_is_called_synthetic_when_named_by_its_v1_1_folder(data, tmp_path):
    assert describe(data).startswith("SYNTHETIC data")
    assert describe(data / "v1.1") == describe(data)
    shutil.copytree(data / "v1.1", tmp_path / "copy" / "v1.1")   # without the manifest
    assert describe(tmp_path / "copy").startswith(
        "SYNTHETIC data (training.synth generator v3; its synth_manifest.json is not beside v1.1/)")


def test_a_run_folder_of_other_data_is_neither_resumed_nor_taken_as_done(data, tmp_path):
    """It resumed the synthetic set's steps on another dataset, and a finished run was
    returned as the other dataset's (summary and card naming the new data)."""
    other = tmp_path / "other"
    assert cli("synth", "--out", other, "--chips", 8, "--weak-chips", 0, "--external-chips", 0,
               "--seed", 4).returncode == 0
    run = ["train", "hand_compact", "--out", tmp_path / "run", "--set", "steps=4", *SMALL]
    assert cli(*run, "--data", data, "--stop-at", 2).returncode == 0
    for _ in ("at step 2", "finished"):
        proc = cli(*run, "--data", other)
        one_line_error(proc, "was trained on other data (SYNTHETIC data (training.synth "
                             "generator v3, seed 3")
        assert "than SYNTHETIC data (training.synth generator v3, seed 4" in proc.stderr
        assert cli(*run, "--data", data).returncode == 0   # its own data: goes on, or is done
    assert logged_steps(tmp_path / "run") == [1, 2, 3, 4]


def test_a_finished_run_whose_best_pt_is_cut_short_is_not_taken_as_done(data, tmp_path):
    """A rerun checked only that best.pt existed: exit 0 and "best valid IoU ... at step 2",
    where export and reproduce's scoring then failed on the file."""
    run = ["train", "hand_compact", "--data", data, "--set", "steps=2", "--set", "eval_every=2",
           *SMALL]
    assert cli(*run, "--out", tmp_path / "done").returncode == 0
    shutil.copytree(tmp_path / "done", tmp_path / "cut")
    best = tmp_path / "cut" / "best.pt"
    best.write_bytes(best.read_bytes()[:20_000])
    one_line_error(cli(*run, "--out", tmp_path / "cut"),
                   f"{best}: a PyTorch checkpoint cut short or corrupt (20000 bytes")


def test_a_missing_layer_folder_is_named_once_not_chip_by_chip(data, tmp_path):
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    s2 = copy / "v1.1/data/flood_events/HandLabeled/S2Hand"
    shutil.rmtree(s2)
    proc = cli("train", "teacher", "--data", copy, "--out", tmp_path / "run", *SMALL)
    assert proc.returncode == 1 and f"{s2}: folder not found (no chip has its file there)" \
        in proc.stderr, proc.stderr
    assert "file missing" not in proc.stderr and not (tmp_path / "run").exists()


def test_weak_chips_of_the_held_out_event_are_left_out_of_training(data, tmp_path):
    """Sen1Floods11's weak set holds chips of Bolivia's flood, whose hand-labelled chips are
    the held-out test: trained on, the Bolivia column would not be held out."""
    import shutil
    from training.methods import BY_NAME
    from training.rundata import chip_ids, open_run_data
    root = tmp_path / "d"
    shutil.copytree(data, root)
    bolivia = (root / "v1.1/splits/flood_handlabeled/flood_bolivia_data.csv").read_text()
    event = bolivia.split(",")[0].rsplit("_", 2)[0]
    weak = root / "v1.1/data/flood_events/WeaklyLabeled"
    first = sorted((weak / "S1Weak").glob("*_S1Weak.tif"))[0].name[:-len("_S1Weak.tif")]
    for kind in ("S1Weak", "S2IndexLabelWeak"):
        (weak / kind / f"{first}_{kind}.tif").rename(weak / kind / f"{event}_999_{kind}.tif")

    run_data = open_run_data(root, BY_NAME["weak"], cache=False)
    ids = chip_ids(run_data.pools[0])
    assert len(ids) == 3 and not any(c.startswith(event) for c in ids)
    assert f"1 weak or external chips of the held-out event(s) {event} left out" \
        in run_data.description
    untouched = open_run_data(data, BY_NAME["weak"], cache=False)
    assert len(chip_ids(untouched.pools[0])) == 4 and "left out" not in untouched.description


def test_a_chip_cache_over_half_the_memory_is_warned(data):
    """The cpu preset keeps decoded chips in memory: about 8.6 GiB on the real Sen1Floods11,
    with no word of it before a run ran out of memory."""
    from training.rundata import cache_note, open_split
    cached = open_split(data, "valid", False, cache=True)
    chip = 2 * 512 * 512 * 2 + 512 * 512 + 512 * 512   # s1 float16, valid, label int8
    note = cache_note([cached, cached], memory_bytes=len(cached) * chip)
    assert note == (f"note: the preset keeps decoded chips in memory (cache=true): about "
                    f"{len(cached) * chip / 2 ** 30:.1f} GiB for these {len(cached)} chips, of "
                    f"this machine's {len(cached) * chip / 2 ** 30:.1f} GiB; --set cache=false "
                    f"reads them from disk at every step instead")
    assert cache_note([cached], memory_bytes=2 * len(cached) * chip) is None
    assert cache_note([open_split(data, "valid", False, cache=False)], memory_bytes=1) is None


def test_ctrl_c_while_the_command_loads_is_one_line(capsys, monkeypatch):
    """Ctrl-C in the first second (torch being imported) printed a 53-line traceback."""
    from training import cli as training_cli

    def interrupted(name):
        raise KeyboardInterrupt
    monkeypatch.setattr(training_cli.importlib, "import_module", interrupted)
    assert training_cli.main(["train", "hand"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_teacher_must_be_the_best_checkpoint_of_a_finished_run(tmp_path):
    """A run's last.pt, or the best.pt of a run still training or stopped, taught a
    student without a word; the data path does not exist: refused before it is read."""
    torch.set_num_threads(1)
    train(tiny_run("teacher", steps=2, eval_every=1), tiny_data(), tmp_path / "done",
          progress=False)
    with pytest.raises(Interrupted):
        train(tiny_run("teacher", steps=2, eval_every=1), tiny_data(), tmp_path / "half",
              progress=False, stop_at=1)
    student = ["student", "--data", tmp_path / "nowhere", "--out", tmp_path / "run"]
    one_line_error(cli("train", *student, "--teacher", tmp_path / "done" / "last.pt"),
                   f"done/last.pt: is a run's last state, not its checkpoint chosen on "
                   f"validation; give {tmp_path / 'done' / 'best.pt'}")
    one_line_error(cli("train", *student, "--teacher", tmp_path / "half" / "best.pt"),
                   "half/best.pt: its run is unfinished (no summary.json; stopped at step 1 "
                   "of 2): finish it")
    assert not (tmp_path / "run").exists()
    # a run reproduce's grid search recorded as diverged
    (tmp_path / "half" / "summary.json").write_text('{"diverged": "the loss is nan at step 2"}')
    one_line_error(cli("train", *student, "--teacher", tmp_path / "half" / "best.pt"),
                   "half/best.pt: its run diverged (its summary.json says so) after step 1 of 2")
    # a best.pt copied out of its run folder is taken as it is, as export takes one
    shutil.copy(tmp_path / "half" / "best.pt", tmp_path / "early.pt")
    one_line_error(cli("train", *student, "--teacher", tmp_path / "early.pt"),
                   "nowhere: dataset folder not found")


def test_a_teacher_or_stage_one_of_another_pixel_size_is_refused(tmp_path):
    """A teacher trained at 16 m (the paper preset) taught a 10 m student (the cpu preset)
    without a word: the frozen teacher saw every feature at 1.6 times its scale."""
    torch.set_num_threads(1)
    train(tiny_run("teacher", steps=1, eval_every=1, pixel_size_m=16.0), tiny_data(),
          tmp_path / "teacher", progress=False)
    train(tiny_run("chip_classifier", steps=1, eval_every=1, pixel_size_m=16.0), tiny_data(),
          tmp_path / "stage1", progress=False)
    one_line_error(cli("train", "student", "--data", tmp_path / "nowhere", "--out",
                       tmp_path / "run", "--teacher", tmp_path / "teacher" / "best.pt"),
                   "teacher/best.pt: trained on 16 m pixels, this run works on 10 m (the "
                   "setting pixel_size_m)")
    with pytest.raises(RunError, match="--init .*stage1/best.pt: trained on 16 m pixels, this "
                                       "run works on 10 m .*--set pixel_size_m=16$"):
        train(tiny_run("pretrained"), tiny_data(), tmp_path / "run",
              init=tmp_path / "stage1" / "best.pt", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_teacher_trained_on_other_chips_is_named_at_start(data, tmp_path):
    """A teacher of another dataset (or of other split files: it may have learnt from the
    student's validation or test chips) taught a student without a word; warned, not
    refused (an outside teacher can be deliberate)."""
    other = tmp_path / "other"
    assert cli("synth", "--out", other, "--chips", 8, "--weak-chips", 0, "--external-chips", 0,
               "--seed", 4).returncode == 0
    one_step = ["--set", "steps=1", "--set", "eval_every=1", "--set", "workers=0", *SMALL]
    for name, root in (("own", data), ("foreign", other)):
        proc = cli("train", "teacher", "--data", root, "--out", tmp_path / name, *one_step)
        assert proc.returncode == 0, proc.stderr
    for name in ("own", "foreign"):
        proc = cli("train", "student", "--data", data, "--out", tmp_path / f"student_{name}",
                   "--teacher", tmp_path / name / "best.pt", *one_step)
        assert proc.returncode == 0, proc.stderr
        warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
        logged = re.findall(r"warning: .*", (tmp_path / f"student_{name}" / "train.log").read_text())
        assert warned == logged, proc.stderr
        if name == "own":
            assert warned == []
        else:
            assert len(warned) == 1 and warned[0].startswith(
                f"warning: the teacher checkpoint {tmp_path / 'foreign' / 'best.pt'} was trained "
                f"on other chips: its 'train' split's chips differ ("), warned
            assert "seed 4" in warned[0] and "validation or test chips" in warned[0]
