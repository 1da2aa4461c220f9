"""A synth killed with SIGKILL: its pool workers end with it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.data.layout import WEAK_KINDS, Layout

REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (from /proc): its pool's workers, which are its
    children with fork and spawn, and the forkserver's (its child's) with forkserver,
    Python 3.14's default on Linux."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:   # ended meanwhile
            continue
    found, level = [], [pid]
    while level:
        level = [child for child, parent in parents.items() if parent in level]
        found += level
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody has reaped yet has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(done, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not done():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_a_sigkilled_synth_leaves_no_worker_writing_its_chips(tmp_path):
    """The pool's workers outlived a SIGKILLed synth and went on writing its chips, into
    the folders a rerun with --overwrite had just cleared: the rerun's dataset, marked
    complete, held the killed run's weak chips too."""
    out = tmp_path / "ds"
    weak = Layout.standard(out).weak / WEAK_KINDS.s1
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", "synth", "--out", str(out), "--chips", "4",
         "--weak-chips", "40", "--external-chips", "0", "--workers", "2"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        assert wait_until(lambda: len(list(weak.glob("*.tif"))) >= 3, 120), "no weak chips written"
        workers = descendants(proc.pid)
        assert len(workers) >= 2
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not any(alive(w) for w in workers), 5), (
            f"workers still running 5 s after their synth was killed: "
            f"{[w for w in workers if alive(w)]}")
        written = len(list(weak.glob("*.tif")))
        time.sleep(1)
        assert len(list(weak.glob("*.tif"))) == written
    finally:
        proc.kill()
        for w in workers:   # the old code's orphans
            if alive(w):
                os.kill(w, signal.SIGKILL)
