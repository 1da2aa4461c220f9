"""The process-wide memory setting of the backend's command line."""
import subprocess
import sys

from tests.conftest import REPO

# page faults taken by 40 rounds of two 256 kB temporaries, made and freed as a
# mask block's are (backend.sink.mask_from_probability)
ALLOCATE = """
import resource, sys
import numpy as np
from backend.pipeline import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
p = np.ones((512, 512), np.float32)
def block():
    return p > 0.5, np.isnan(p)
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    block()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ALLOCATE, mode], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return int(out)


def test_freed_arrays_are_reused_without_page_faults():
    """By default glibc hands the freed blocks back to the kernel, and the next ones
    fault their pages in again (measured: 3840 faults, 64 per array); the backend's
    command line keeps them for reuse."""
    default, kept = faults("default"), faults("keep")
    assert default > 40 * 64
    assert kept < 40
