"""``python -m training reproduce`` end to end at smoke scale on generated data,
and its time estimate."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .test_train_cli import data  # noqa: F401 - the shared synthetic dataset fixture
from .test_train_cli import invalid_choice

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--set", "steps=2", "--set", "eval_every=2", "--set", "crop=32", "--set", "batch_size=2",
        "--set", "width=0.125", "--set", "compact_width=0.5", "--no-progress"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "training", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=ENV)


def test_reproduce_writes_the_table_from_real_runs(data, tmp_path):  # noqa: F811
    results = tmp_path / "results"
    proc = cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
               "--results", results, "--methods", "otsu,student,student_compact",
               "--bench-size", 256, *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((results / "table1.json").read_text())
    # the teacher is added for its students, and trained first
    assert [r["method"] for r in doc["rows"]] == \
        ["otsu", "student", "student_compact", "teacher"]
    assert doc["data"].startswith("SYNTHETIC")
    for row in doc["rows"]:
        assert row["test"]["n"] == 1 and 0 <= row["test"]["mean"] <= 100
    student = next(r for r in doc["rows"] if r["method"] == "student")
    assert student["paper"] == {"mean": 71.91, "std": 0.41, "split": "test"}
    # each trained row was scored from its own best checkpoint
    teacher_dir = tmp_path / "runs" / "teacher" / "seed0_lr0.05_wd0.0001"
    metrics = json.loads((teacher_dir / "metrics.json").read_text())
    teacher = next(r for r in doc["rows"] if r["method"] == "teacher")
    assert metrics["iou_test"] == teacher["runs"][0]["iou_test"]
    assert set(doc["speed"]) == {"student", "student_compact"}
    assert (tmp_path / "runs" / "export" / "student_compact.onnx").is_file()
    md = (results / "table1.md").read_text()
    assert "SYNTHETIC data, not on Sen1Floods11" in md and "| Otsu thresholding |" in md

    # a second call resumes finished runs instead of training them again
    again = cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
                "--results", tmp_path / "results2", "--methods", "teacher", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (teacher_dir / "train.log").read_text().count("start teacher") == 1

    # with a grid, seed 0 is trained at every point and the best on validation is kept
    grid = cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
               "--results", tmp_path / "results3", "--methods", "hand",
               "--set", "lr_grid=0.01,0.05", *TINY)
    assert grid.returncode == 0, grid.stderr[-2000:]
    ious = [json.loads((tmp_path / "runs" / "hand" / f"seed0_lr{lr}_wd0.0001" /
                        "summary.json").read_text())["iou_valid"] for lr in (0.01, 0.05)]
    row = json.loads((tmp_path / "results3" / "table1.json").read_text())["rows"][0]
    assert row["lr"] == (0.01, 0.05)[ious.index(max(ious))]  # first best on a tie

    est = cli("reproduce", "--data", data, "--seeds", 2, "--estimate", "--methods", "hand",
              *TINY)
    assert est.returncode == 0, est.stderr
    assert "hand" in est.stdout and "projected:" in est.stdout
    assert "s/chip read" in est.stdout and "s/sample made" in est.stdout


def test_the_estimate_counts_reading_the_chips():
    """--estimate timed the steps alone, on random tensors: reading and decoding the chips
    and making samples of them were left out, though with workers=0 they run between the
    steps. Cached chips are decoded once; loader workers read beside the steps."""
    from training.config import TrainConfig
    from training.reproduce import _run_seconds

    def seconds(**fields):   # 1 s a step, 2 s to decode a chip, 0.5 s to make a sample
        return _run_seconds(TrainConfig(steps=10, batch_size=4, **fields), 1.0, 2.0, 0.5, 5)
    assert seconds(cache=True, workers=0) == 10 + 5 * 2 + 40 * 0.5
    assert seconds(cache=False, workers=0) == 10 + 40 * 2 + 40 * 0.5
    assert seconds(cache=False, workers=2) == (40 * 2 + 40 * 0.5) / 2
    assert seconds(cache=True, workers=8) == 10   # the steps are the slower


def test_a_diverging_grid_point_loses_and_the_search_goes_on(data, tmp_path):  # noqa: F811
    """One grid point whose loss went NaN stopped the whole reproduce, and every rerun
    again (the seeded run diverges again); the paper's rule, the best point on
    validation, lets it lose. Only a grid where every point diverges is refused."""
    def grid(lrs, results, *more):
        return cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
                   "--results", tmp_path / results, "--methods", "hand",
                   "--set", f"lr_grid={lrs}", *TINY, *more)
    proc = grid("1e30,0.05", "results")
    assert proc.returncode == 0, proc.stderr[-2000:]
    blown = tmp_path / "runs" / "hand" / "seed0_lr1e+30_wd0.0001"
    summary = json.loads((blown / "summary.json").read_text())
    assert summary["iou_valid"] is None and "the run diverged" in summary["diverged"]
    assert "note: hand at lr 1e+30, wd 0.0001 diverged (the loss is nan" in proc.stdout
    (row,) = json.loads((tmp_path / "results" / "table1.json").read_text())["rows"]
    assert row["lr"] == 0.05 and row["diverged"] == [[1e30, 0.0001]]
    assert "| 0.05, 0.0001 (diverged: 1e+30, 0.0001) |" in \
        (tmp_path / "results" / "table1.md").read_text()
    # a rerun takes the diverged point as done: it is not trained again
    again = grid("1e30,0.05", "results2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (blown / "train.log").read_text().count("start hand") == 1
    assert "note: hand at lr 1e+30, wd 0.0001 diverged" in again.stdout
    # the record is of its run's settings: with others, it is refused, not taken as done
    other = grid("1e30,0.05", "results3", "--set", "steps=3")
    assert other.returncode == 1 and "(config steps: 2 there, 3 now)" in other.stderr, \
        other.stderr[-2000:]

    lost = grid("1e30,1e31", "results4")
    assert lost.returncode == 1 and lost.stderr.count("\n") == 1, lost.stderr[-2000:]
    assert lost.stderr.startswith("error: every grid point of hand diverged (lr, wd: "
                                  "1e+30, 0.0001; 1e+31, 0.0001)"), lost.stderr
    assert not (tmp_path / "results4").exists()
    # outside the grid search, a divergence is a failure: the row's own run stops, and a
    # point the grid lost, asked for alone, says so
    for lr, said in (("2e30", "the loss is nan at step 2: the run diverged"),
                     ("1e30", "the run diverged (is the learning rate 1e+30 too high?) "
                              "(a grid point of an earlier call")):
        alone = grid(lr, "results5")
        assert alone.returncode == 1 and alone.stderr.count("\n") == 1, alone.stderr[-2000:]
        assert said in alone.stderr, alone.stderr


def test_reproduce_runs_the_other_seed_papers_rows_with_what_they_need(data, tmp_path):  # noqa: F811
    results = tmp_path / "results"
    proc = cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
               "--results", results, "--methods", "pretrained,flora", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((results / "seed_papers.json").read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"chip_classifier", "pretrained", "optical_teacher", "flora"}
    assert rows["chip_classifier"]["test"]["mean"] is None             # it maps no water
    assert 0 <= rows["chip_classifier"]["valid"]["mean"] <= 100        # tile accuracy
    for name in ("pretrained", "optical_teacher", "flora"):
        assert 0 <= rows[name]["test"]["mean"] <= 100
    pretrained = tmp_path / "runs" / "pretrained" / "seed0_lr0.05_wd0.0001" / "last.pt"
    assert pretrained.is_file()
    md = (results / "seed_papers.md").read_text()
    assert md.startswith("# The methods of seed papers 002") and "## Comparisons" in md
    assert "(balanced tile accuracy)" in md and not (results / "table1.md").exists()
    # the estimate times every kind of row with its own loss
    est = cli("reproduce", "--data", data, "--seeds", 1, "--estimate", "--methods",
              "pretrained,flora", *TINY)
    assert est.returncode == 0 and "flora" in est.stdout and "chip_classifier" in est.stdout, \
        est.stderr


def test_reproduce_picks_the_same_grid_point_on_every_rank(data, tmp_path):  # noqa: F811
    """Under torchrun (two CPU processes): only rank 0 validates, yet every rank must
    choose the grid point, and later the teacher, that rank 0 chose."""
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", "-m", "training", "reproduce", "--data", str(data), "--seeds", "2",
         "--out", str(runs), "--results", str(tmp_path / "results"), "--methods", "hand",
         "--device", "cpu", "--no-progress",
         *[a for kv in ("steps=2", "eval_every=2", "crop=32", "batch_size=2", "width=0.125",
                        "lr_grid=0.01,0.05") for a in ("--set", kv)]],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("# Table 1") == 1  # printed by rank 0 only
    ious = {lr: json.loads((runs / "hand" / f"seed0_lr{lr}_wd0.0001" / "summary.json")
                           .read_text())["iou_valid"] for lr in (0.01, 0.05)}
    best = max(ious, key=ious.get)  # the first on a tie, as reproduce (0.05 here)
    (row,) = json.loads((tmp_path / "results" / "table1.json").read_text())["rows"]
    assert row["lr"] == best and row["valid"]["n"] == 2
    # a rank that chose another point would have trained seed 1 there too (an empty
    # folder: rank 0 writes the files)
    assert sorted(p.name for p in (runs / "hand").iterdir()) == [
        "seed0_lr0.01_wd0.0001", "seed0_lr0.05_wd0.0001", f"seed1_lr{best}_wd0.0001"]


def test_target_checks_compare_gaps_with_the_seed_spread():
    from training.reproduce import checks

    def row(mean, std):
        return {"test": {"mean": mean, "std": std, "n": 3}}
    rows = {"otsu": row(40.0, None), "hand": row(60.0, 1.0), "weak": row(62.5, 1.5),
            "weak_ed": row(63.0, 0.2), "student": row(70.0, 0.5), "teacher": row(80.0, 0.5),
            "student_compact": row(68.5, 0.4)}
    got = {c["check"]: c["holds"] for c in checks(rows, {})}
    assert got == {"otsu < hand": True, "otsu < weak": True,
                   "weak < weak_ed": False,      # 0.5 points, below weak's std of 1.5
                   "hand < weak_ed": True, "weak_ed < student": True,
                   "student < teacher": True,
                   "hand ~ weak": True,          # 2.5 points, within twice weak's std
                   "compact within 2 IoU points of student": True}
    rows["weak"] = row(62.5, 0.5)  # now 2.5 points is more than 2 and twice the std
    assert next(c for c in checks(rows, {}) if c["check"] == "hand ~ weak")["holds"] is False
    # one seed: a trained row's spread is unknown, so its checks neither hold nor fail
    # (they read 0 and held); Otsu is deterministic and needs none
    one = {name: {"test": {**r["test"], "std": None, "n": 1}} for name, r in rows.items()}
    got = {c["check"]: c["holds"] for c in checks(one, {})}
    assert got["otsu < hand"] is None and got["hand ~ weak"] is None
    assert got["compact within 2 IoU points of student"] is True


def test_the_compact_student_fails_its_checks_when_too_far_behind_or_too_slow():
    from training.reproduce import checks

    def compact_gap(compact_mean):
        rows = {"student": {"test": {"mean": 70.0, "std": 0.5, "n": 3}},
                "student_compact": {"test": {"mean": compact_mean, "std": 0.4, "n": 3}}}
        (c,) = checks(rows, {})
        return c["gap"], c["holds"]
    assert compact_gap(68.0) == (2.0, True)      # exactly 2 points: within
    assert compact_gap(67.5) == (2.5, False)
    # Mpx/s from the backend bench: the compact student must be at least 5x faster
    speed = {"student": {"raw_raster_mpx_s": 2.0, "predict_mpx_s": 2.0},
             "student_compact": {"raw_raster_mpx_s": 12.0, "predict_mpx_s": 8.0}}
    got = {c["check"]: (c["ratio"], c["holds"]) for c in checks({}, speed)}
    assert got == {"compact >= 5x faster than student (backend bench, model alone)": (6.0, True),
                   "compact >= 5x faster than student (backend bench, predict end to end)":
                       (4.0, False)}


def test_a_row_is_the_mean_and_sample_std_of_its_seeds_in_points():
    from training.reproduce import _stats
    # sample std (n - 1): 2.0; the population std would be 1.63
    assert _stats([0.80, None, 0.82, 0.84]) == {"mean": 82.0, "std": 2.0, "n": 3,
                                                "values": [80.0, 82.0, 84.0]}
    assert _stats([0.80, 0.81, 0.87])["mean"] == 82.67   # the mean, not the median (81)
    assert _stats([0.5]) == {"mean": 50.0, "std": None, "n": 1, "values": [50.0]}
    assert _stats([None]) == {"mean": None, "std": None, "n": 0}


def test_the_papers_own_numbers_go_through_the_same_checks():
    from training.reproduce import paper_checks
    got = {c["check"]: (c["gap"], c["holds"]) for c in paper_checks()}
    # Garg et al., Table 1: weak 67.76 +/- 2.41, weak + ED 68.94 +/- 1.11
    assert got["weak < weak_ed"] == (1.18, False)
    assert got["student < teacher"] == (7.34, True) and got["hand ~ weak"] == (0.13, True)


def test_without_an_external_set_the_table_leaves_out_the_rows_that_need_it(data, tmp_path):  # noqa: F811
    """The real Sen1Floods11 comes without the paper's external set (not public): the whole
    table is made of the rows that can run, the others marked not run; a row asked for by
    name gets one clear error before any training."""
    copy = tmp_path / "s1f11"
    shutil.copytree(data, copy)
    shutil.rmtree(copy / "external")
    results = tmp_path / "results"
    proc = cli("reproduce", "--data", copy, "--seeds", 1, "--out", tmp_path / "runs",
               "--results", results, *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "left out of the table: weak_ed, student, student_compact" in proc.stdout
    doc = json.loads((results / "table1.json").read_text())
    assert [r["method"] for r in doc["rows"]] == ["otsu", "hand", "weak", "teacher"]
    assert [r["method"] for r in doc["not_run"]] == ["weak_ed", "student", "student_compact"]
    md = (results / "table1.md").read_text()
    assert "| Cross modal distillation | - | not run | not run | 71.91 | - | - |" in md
    assert ("Not run (weak_ed, student, student_compact): the data has no external set "
            "(the paper's ED is not public). Those rows train on it; paired S1 + S2 chips") in md

    asked = cli("reproduce", "--data", copy, "--seeds", 1, "--out", tmp_path / "runs2",
                "--results", tmp_path / "results_asked", "--methods", "student", *TINY)
    assert asked.returncode != 0 and not (tmp_path / "runs2").exists()
    assert "no external set" in asked.stderr and "--methods hand,weak,teacher" in asked.stderr


def test_a_smoke_run_cannot_replace_the_committed_table(tmp_path):
    """--set or --methods with the default --results (training/results) replaced the
    committed table of the whole preset; refused before anything is read or trained."""
    committed = REPO / "training" / "results" / "table1.json"
    before = committed.read_bytes()
    for extra in (TINY, ["--methods", "hand"]):
        proc = cli("reproduce", "--data", tmp_path / "nowhere", "--out", tmp_path / "runs", *extra)
        assert proc.returncode == 1 and "needs its own --results DIR" in proc.stderr
    assert committed.read_bytes() == before and not (tmp_path / "runs").exists()


def test_seeds_below_1_and_a_bench_size_bench_refuses_are_refused_before_the_data_is_read(
        tmp_path):
    """--estimate projected negative time for --seeds -2; --bench-size 0, or 7 (its Mpx/s
    rounded to 0: ZeroDivisionError), failed only in the bench, after every run was trained."""
    small = "give at least 256 pixels (a smaller scene's Mpx/s round to 0)"
    for extra, text in ((["--seeds", "0", "--estimate"], "--seeds 0: give at least 1"),
                        (["--seeds", "-2", "--estimate"], "--seeds -2: give at least 1"),
                        (["--bench-size", "0"], f"--bench-size 0: {small}"),
                        (["--bench-size", "7"], f"--bench-size 7: {small}")):
        proc = cli("reproduce", "--data", tmp_path / "nowhere", "--out", tmp_path / "runs",
                   "--results", tmp_path / "results", *extra)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {text}"), proc.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_preset_and_device_are_refused_by_their_choices(tmp_path):
    for option, value in (("--preset", "gpu"), ("--device", "cudaa")):
        invalid_choice(cli("reproduce", "--data", tmp_path / "nowhere", "--out", tmp_path / "runs",
                           "--results", tmp_path / "results", option, value), option, value)
    assert not (tmp_path / "runs").exists()



def test_the_students_bench_takes_relative_paths(tmp_path, monkeypatch):
    """reproduce's default --out is relative; its bench child runs in the repository, so a
    reproduce started elsewhere trained everything and then failed here."""
    from training.reproduce import bench

    shutil.copy(REPO / "resources" / "models" / "sarflood-demo-threshold.onnx", tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    figures = bench(Path("m.onnx"), Path("."), size=256)
    assert figures["raw_raster_mpx_s"] > 0 and figures["predict_mpx_s"] > 0
    # the median of three predicts: one timing flipped the compact student's >= 5x verdict
    runs = figures["predict_runs_s"]
    assert len(runs) == 3 and figures["predict_mpx_s"] == round(256 * 256 / 1e6 / sorted(runs)[1], 2)


def _commands_on(folder):
    """The command lines of this machine's processes that name ``folder`` (Linux)."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:   # a process that ended meanwhile
            continue
        if any(str(folder) in a for a in args):
            out.append(args)
    return out


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_a_sigterm_during_the_students_bench_leaves_no_scene_and_no_child(tmp_path):
    """reproduce's SIGTERM (an interrupt: training.cli) reached only reproduce, whose
    subprocess.run then killed the bench child: its sarflood-bench-* folder and scene
    stayed in OUT/export for good, and its predict child ran on to its end."""
    from training.reproduce import bench

    shutil.copy(REPO / "resources" / "models" / "sarflood-demo-threshold.onnx", tmp_path / "m.onnx")

    def interrupt_during_a_predict():
        deadline = time.monotonic() + 120
        while (not any("predict" in args for args in _commands_on(tmp_path))
               and time.monotonic() < deadline):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_during_a_predict, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            bench(tmp_path / "m.onnx", tmp_path, size=256)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert _commands_on(tmp_path) == []


def test_an_out_or_results_that_is_a_file_is_refused_before_the_data_is_read(tmp_path):
    """--results FILE ended in a FileExistsError traceback after every row had trained, and
    --out FILE in a NotADirectoryError traceback."""
    taken = tmp_path / "a_file"
    taken.write_text("keep me")
    for option in ("--out", "--results"):
        given = {"--out": tmp_path / "runs", "--results": tmp_path / "results", option: taken}
        proc = cli("reproduce", "--data", tmp_path / "nowhere", "--out", given["--out"],
                   "--results", given["--results"], "--methods", "hand", *TINY)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"error: {option} {taken}: is a file, not a folder"), proc.stderr
    assert taken.read_text() == "keep me"


def test_the_s1_rows_reproduce_on_a_download_without_s2(data, tmp_path):  # noqa: F811
    """Sen1Floods11's own notebook downloads S1Hand and LabelHand alone: test and Bolivia
    were opened with S2 for every row, so even `--methods hand` stopped at once; the whole
    table now leaves out the rows that read S2, as it does those of a missing set."""
    copy = tmp_path / "s1_only"
    shutil.copytree(data, copy)
    shutil.rmtree(copy / "v1.1/data/flood_events/HandLabeled/S2Hand")
    results = tmp_path / "results"
    proc = cli("reproduce", "--data", copy, "--seeds", 1, "--out", tmp_path / "runs",
               "--results", results, *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((results / "table1.json").read_text())
    assert [r["method"] for r in doc["rows"]] == ["otsu", "hand", "weak", "weak_ed"]
    assert [r["method"] for r in doc["not_run"]] == ["student", "student_compact", "teacher"]
    assert ("Not run (student, student_compact, teacher): the data has no Sentinel-2 of the "
            "hand-labelled chips. Those rows read it; Sen1Floods11's S2Hand chips") \
        in (results / "table1.md").read_text()


def test_a_download_without_the_bolivia_split_is_scored_on_test(data, tmp_path):  # noqa: F811
    """Some repackagings keep train, valid and test alone: reproduce stopped before its
    first step, even for `--methods hand`, asking for the Bolivia split file."""
    copy = tmp_path / "no_bolivia"
    shutil.copytree(data, copy)
    (copy / "v1.1/splits/flood_handlabeled/flood_bolivia_data.csv").unlink()
    results = tmp_path / "results"
    proc = cli("reproduce", "--data", copy, "--seeds", 1, "--methods", "otsu,hand",
               "--out", tmp_path / "runs", "--results", results, *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "flood_bolivia_data.csv not found: the rows are scored without the bolivia split" \
        in proc.stdout
    doc = json.loads((results / "table1.json").read_text())
    for row in doc["rows"]:
        assert row["test"]["mean"] is not None and row["bolivia"]["mean"] is None, row["method"]
    assert "bolivia" not in doc["measured_on"]
    table = (results / "table1.md").read_text()
    assert "Not scored: " in table and "| Hand labeled supervised |" in table
