"""Finding the backend's Python, and the exact command that fixes a missing dependency."""
from sarflood.plugin import backend_env


def test_venv_first_then_qgis_python_with_the_fix_command(monkeypatch, tmp_path):
    found = backend_env.find_interpreter()
    assert found.source == "venv" and found.ok  # this checkout's .venv has everything

    # without a .venv, QGIS's own Python is tried; Debian's lacks onnxruntime and rasterio
    absent = tmp_path / "no-venv"
    monkeypatch.setattr(backend_env, "VENV_DIR", absent)
    found = backend_env.find_interpreter()
    assert (found.path, found.source) == ("/usr/bin/python3", "system")
    assert set(found.missing) == {"onnxruntime", "rasterio"}
    pins = " ".join(backend_env.runtime_requirements())
    assert pins.startswith("numpy==") and "onnxruntime==" in pins and "rasterio==" in pins
    assert found.fix_command() == (f"/usr/bin/python3 -m venv {absent} && "
                                   f"{absent}/bin/python -m pip install {pins}")
    assert backend_env.install_steps("/usr/bin/python3") == [
        ["/usr/bin/python3", "-m", "venv", str(absent)],
        [f"{absent}/bin/python", "-m", "pip", "install", "--disable-pip-version-check", *pins.split()]]


def test_a_chosen_interpreter_is_used_even_when_broken(tmp_path):
    found = backend_env.find_interpreter(str(tmp_path / "missing-python"))
    assert found.source == "setting" and not found.ok
    assert "does not exist" in found.problem() and str(tmp_path / "missing-python") in found.problem()
    # said once, with what to do: pip install with a Python that is not there was the advice
    assert found.problem().count("does not exist") == 1 and "pip install" not in found.problem()


def test_child_environment_drops_the_parents_python_paths(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/opt/qgis/python")
    monkeypatch.setenv("PYTHONPATH", "/opt/qgis/python/plugins")
    env = backend_env.child_env()
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env and env["PYTHONUNBUFFERED"] == "1"
