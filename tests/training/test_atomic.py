"""Atomic writes: the target appears whole or not at all, and no temporary file is left."""
import os
import secrets
import stat
import subprocess

import pytest

from training.atomic import WriteError, atomic_path, remove_stale, write_text_atomic
from training.checkpoint import save_checkpoint


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
    # with the random part, and without it (earlier versions)
    stale = [f".m.{gone.pid}-0a1b2c3d.tmp.onnx", f".m.{gone.pid}.tmp.onnx"]
    running = [".m.1-0a1b2c3d.tmp.onnx", ".m.1.tmp.onnx"]   # pid 1 runs
    others = [f".n.{gone.pid}.tmp.onnx", f".m.{gone.pid}.tmp.json", ".m.x.tmp.onnx", "m.onnx",
              f".m.x.{gone.pid}-0a1b2c3d.tmp.onnx", f".m.{gone.pid}-x.tmp.onnx"]
    for name in (*stale, *running, *others):
        (tmp_path / name).write_text("x")
    remove_stale(tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*running, *others])


def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path):
    """The temporary name was .<stem>.<pid>.tmp<suffix>: another user who can write in an
    output folder planted links there, and a write went to the link's target."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.json", "last.pt"):
        target = out / name
        (out / f".{target.stem}.{os.getpid()}.tmp{target.suffix}").symlink_to(victim)
    write_text_atomic(out / "summary.json", '{"a": 1}')
    save_checkpoint(out / "last.pt", {"model_spec": {}, "model": {}})
    assert victim.read_bytes() == b"precious"
    assert (out / "summary.json").read_text() == '{"a": 1}'
    assert not (out / "summary.json").is_symlink() and not (out / "last.pt").is_symlink()
    assert (out / "last.pt").read_bytes()[:2] == b"PK"   # torch's zip
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / "summary.json").stat().st_mode) == 0o666 & ~umask


def test_a_link_at_the_drawn_name_is_refused(tmp_path, monkeypatch):
    """Should a name be guessed, the file is not opened through what is there."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "ab" * n)
    (tmp_path / f".summary.{os.getpid()}-abababab.tmp.json").symlink_to(victim)
    with pytest.raises(WriteError, match="summary.json: cannot be written"):
        write_text_atomic(tmp_path / "summary.json", "{}")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "summary.json").exists()
