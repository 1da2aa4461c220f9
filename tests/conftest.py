"""Shared test set-up: headless Qt, the real Sen1Floods11 fixture chips, tiny exact models."""
import os
import shutil
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
def real_chips(tmp_path_factory) -> Path:
    """A copy of the real Sen1Floods11 v1.1 chips beside the checkout (format fixtures only).

    A copy, because GDAL writes statistics (``.aux.xml``) beside a raster that QGIS
    renders, and nothing may be written into ``../shared``.
    """
    if not SHARED_CHIPS.is_dir():
        pytest.fail(f"{SHARED_CHIPS} is missing: the tests need ../shared beside the checkout")
    copy = tmp_path_factory.mktemp("shared") / SHARED_CHIPS.name
    shutil.copytree(SHARED_CHIPS, copy)
    return copy
