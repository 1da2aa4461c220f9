"""``python -m training reproduce`` end to end at smoke scale on generated data,
and its time estimate."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--set", "steps=2", "--set", "eval_every=2", "--set", "crop=32", "--set", "batch_size=2",
        "--set", "width=0.125", "--set", "compact_width=0.5", "--no-progress"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "training", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=ENV)


def test_reproduce_writes_the_table_from_real_runs(tmp_path):
    data = tmp_path / "d"
    assert cli("synth", "--out", data, "--chips", 8, "--weak-chips", 2,
               "--external-chips", 2, "--seed", 5).returncode == 0
    results = tmp_path / "results"
    proc = cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
               "--results", results, "--methods", "otsu,hand,student,student_compact",
               "--bench-size", 256, *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((results / "table1.json").read_text())
    assert [r["method"] for r in doc["rows"]] == \
        ["otsu", "hand", "student", "student_compact", "teacher"]
    assert doc["data"].startswith("SYNTHETIC")
    for row in doc["rows"]:
        assert row["test"]["n"] == 1 and 0 <= row["test"]["mean"] <= 100
    hand = next(r for r in doc["rows"] if r["method"] == "hand")
    assert hand["paper"] == {"mean": 67.63, "std": 0.45, "split": "test"}
    # each trained row was scored from its own best checkpoint
    run = hand["runs"][0]
    metrics = json.loads((tmp_path / "runs" / "hand" / "seed0_lr0.05_wd0.0001" /
                          "metrics.json").read_text())
    assert metrics["iou_test"] == run["iou_test"]
    assert set(doc["speed"]) == {"student", "student_compact"}
    assert (tmp_path / "runs" / "export" / "student_compact.onnx").is_file()
    md = (results / "table1.md").read_text()
    assert "SYNTHETIC data, not on Sen1Floods11" in md and "| Otsu thresholding |" in md

    # a second call resumes finished runs instead of training them again
    again = cli("reproduce", "--data", data, "--seeds", 1, "--out", tmp_path / "runs",
                "--results", tmp_path / "results2", "--methods", "hand", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    log = (tmp_path / "runs" / "hand" / "seed0_lr0.05_wd0.0001" / "train.log").read_text()
    assert log.count("start hand") == 1

    est = cli("reproduce", "--data", data, "--seeds", 2, "--estimate", "--methods", "hand",
              *TINY)
    assert est.returncode == 0, est.stderr
    assert "hand" in est.stdout and "projected:" in est.stdout
