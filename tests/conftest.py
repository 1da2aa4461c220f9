"""Shared test set-up: headless Qt, the real Sen1Floods11 fixture chips, tiny exact models."""
import os
import tempfile
from pathlib import Path

import pytest

# QGIS aborts without a display unless Qt renders offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if "XDG_RUNTIME_DIR" not in os.environ:
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")

REPO = Path(__file__).resolve().parents[1]
SHARED_CHIPS = REPO.parent / "shared" / "data" / "sen1floods11"


@pytest.fixture(scope="session")
def real_chips() -> Path:
    """The real Sen1Floods11 v1.1 chips beside the checkout (format fixtures only)."""
    if not SHARED_CHIPS.is_dir():
        pytest.fail(f"{SHARED_CHIPS} is missing: the tests need ../shared beside the checkout")
    return SHARED_CHIPS
