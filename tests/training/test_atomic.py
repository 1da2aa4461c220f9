"""Atomic writes: the target appears whole or not at all, and no temporary file is left."""
import subprocess

import pytest

from training.atomic import atomic_path, remove_stale, write_text_atomic


def test_success_replaces_target(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failure_keeps_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "fig.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".png"  # writers that pick the format by suffix need it
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_the_next_writer_removes_what_a_killed_one_left(tmp_path):
    """A process killed with SIGKILL cannot remove its temporary file; the process id in
    the name tells whether its writer still runs."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale, running = f".m.{gone.pid}.tmp.onnx", ".m.1.tmp.onnx"   # pid 1 runs
    others = [f".n.{gone.pid}.tmp.onnx", f".m.{gone.pid}.tmp.json", ".m.x.tmp.onnx", "m.onnx"]
    for name in (stale, running, *others):
        (tmp_path / name).write_text("x")
    remove_stale(tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running, *others])
