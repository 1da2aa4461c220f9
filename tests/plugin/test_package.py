"""``make package``: an installable zip without tests, training or venv, that QGIS loads."""
import configparser
import os
import subprocess
import zipfile

from .conftest import REPO

REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "homepage", "icon", "category", "hasProcessingProvider",
                     "license", "tags", "experimental")


def test_package_zip_installs_and_loads(tmp_path):
    archive = tmp_path / "sarflood.zip"
    subprocess.run(["make", "-s", "package", f"PACKAGE_ZIP={archive}"], cwd=REPO, check=True,
                   capture_output=True, timeout=120)
    names = zipfile.ZipFile(archive).namelist()
    assert all(n.startswith("sarflood/") for n in names)
    for needed in ("__init__.py", "metadata.txt", "plugin/main.py", "plugin/processing/provider.py",
                   "backend/__main__.py", "backend/engine.py", "resources/icon.svg",
                   "resources/models/DEFAULT"):
        assert f"sarflood/{needed}" in names, needed
    for banned in ("tests/", "training/", ".venv/", ".git/", "__pycache__", ".pyc", "dist/"):
        assert not any(banned in n for n in names), banned
    # the development pins (torch, pytest) would mislead anyone who pip-installs them into
    # QGIS's Python; the plugin's installer has its own runtime requirements
    assert "sarflood/requirements.txt" not in names

    metadata = configparser.ConfigParser()
    metadata.read_string(zipfile.ZipFile(archive).read("sarflood/metadata.txt").decode())
    general = metadata["general"]
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    assert missing == []
    assert f"sarflood/{general['icon']}" in names
    assert general["hasProcessingProvider"] == "yes"
    # without them QGIS 4's plugin manager calls the plugin incompatible ("3.99" at most)
    assert general["qgisMaximumVersion"] == "4.99" and general["supportsQt6"] == "True"

    # install it as QGIS does (unzip into a plugins folder) and let qgis_process load it
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(archive).extractall(plugins)
    profile = tmp_path / "profile"
    profile.mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QGIS_PLUGINPATH=str(plugins),
               QGIS_CUSTOM_CONFIG_PATH=str(profile))
    env.pop("PYTHONPATH", None)
    subprocess.run(["qgis_process.bin", "plugins", "enable", "sarflood"], env=env, check=True,
                   capture_output=True, timeout=120)
    listed = subprocess.run(["qgis_process.bin", "list"], env=env, capture_output=True, text=True,
                            timeout=120)
    for alg in ("sarflood:mapwater", "sarflood:otsu", "sarflood:floodextent", "sarflood:vectorize",
                "sarflood:zonalwater"):
        assert alg in listed.stdout, alg


def test_package_holds_the_commit_not_edits_in_progress(tmp_path):
    """A zip under a release's version number held whatever was on disk: an edit in
    progress shipped as that version. It holds HEAD, and names what it left out."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    edited = clone / "plugin" / "main.py"
    committed = edited.read_bytes()
    edited.write_bytes(committed + b"\n# an edit in progress\n")
    (clone / "resources" / "models" / "new-model.onnx").write_bytes(b"never committed")
    archive = tmp_path / "sarflood.zip"
    made = subprocess.run(["make", "-s", "package", f"PACKAGE_ZIP={archive}"], cwd=clone,
                          check=True, capture_output=True, text=True, timeout=120)
    assert zipfile.ZipFile(archive).read("sarflood/plugin/main.py") == committed
    assert "uncommitted changes left out" in made.stdout and "plugin/main.py" in made.stdout
    # a file never committed was left out without a word (git diff does not see it)
    assert "resources/models/new-model.onnx" in made.stdout
    assert "sarflood/resources/models/new-model.onnx" not in zipfile.ZipFile(archive).namelist()
