"""Finding the backend's Python, and the exact command that fixes a missing dependency."""
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sarflood.plugin import backend_env


def test_the_installers_venv_then_the_checkouts_then_qgis_python(monkeypatch, tmp_path):
    """The installer's venv sits in the QGIS profile, and is tried before <plugin>/.venv."""
    monkeypatch.setattr(backend_env, "VENV_DIR", tmp_path / "no-venv")
    found = backend_env.find_interpreter()
    checkout = str(backend_env.venv_python(backend_env.CHECKOUT_VENV_DIR))
    assert (found.path, found.source, found.ok) == (checkout, "venv", True)   # make venv's

    backend_env.use_profile(str(tmp_path / "profile"))
    installed = tmp_path / "profile" / "python" / "sarflood-venv"
    assert backend_env.VENV_DIR == installed
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(installed)], check=True)
    site = next(installed.glob("lib/python3*/site-packages"))
    (site / "packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")   # as pip would
    found = backend_env.find_interpreter()
    assert (found.path, found.source, found.ok) == (str(backend_env.venv_python(installed)), "venv", True)

    # without either, QGIS's own Python is tried; Debian's lacks onnxruntime and rasterio
    absent = tmp_path / "no-venv"
    monkeypatch.setattr(backend_env, "VENV_DIR", absent)
    monkeypatch.setattr(backend_env, "CHECKOUT_VENV_DIR", absent)
    found = backend_env.find_interpreter()
    assert (found.path, found.source) == ("/usr/bin/python3", "system")
    assert set(found.missing) == {"onnxruntime", "rasterio"}
    remake = ["/usr/bin/python3", "-m", "venv", "--clear", str(absent)]
    pip = [f"{absent}/bin/python", "-m", "pip", "install", "--prefer-binary",
           *backend_env.RUNTIME_REQUIREMENTS]
    assert found.fix_command() == f"{shlex.join(remake)} && {shlex.join(pip)}"
    assert backend_env.install_plan("/usr/bin/python3") == backend_env.InstallPlan([remake, pip])


def test_a_profile_that_cannot_be_written_is_not_offered_the_installer(monkeypatch, tmp_path):
    """The installer wrote into the plugin folder, read-only where QGIS's plugins are installed
    system-wide: it was offered, failed, and the advice named a folder no one could write."""
    monkeypatch.setattr(backend_env, "VENV_DIR", None)
    monkeypatch.setattr(backend_env, "CHECKOUT_VENV_DIR", tmp_path / "no-venv")
    backend_env.use_profile("/sys/kernel/qgis-profile")   # not even root makes a folder there
    found = backend_env.find_interpreter()
    assert found.source == "system" and not found.ok and not found.installer_can_fix
    assert found.problem().endswith(
        "The plugin cannot make its own environment (/sys/kernel/qgis-profile/python/sarflood-venv "
        "cannot be written): choose a Python that has numpy, onnxruntime, rasterio in the run "
        "dialog (Advanced > Backend Python, the setting sarflood/python).")
    assert backend_env.install_plan("/usr/bin/python3") == backend_env.InstallPlan(
        [], backend_env.cannot_install())


def test_a_chosen_interpreter_is_used_even_when_broken(tmp_path):
    found = backend_env.find_interpreter(str(tmp_path / "missing-python"))
    assert found.source == "setting" and not found.ok
    assert "does not exist" in found.problem() and str(tmp_path / "missing-python") in found.problem()
    # said once, with what to do: pip install with a Python that is not there was the advice
    assert found.problem().count("does not exist") == 1 and "pip install" not in found.problem()


@pytest.mark.skipif(not (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").is_file(),
                    reason="this system's Python is not externally managed (PEP 668)")
def test_an_externally_managed_python_is_advised_a_venv(monkeypatch, tmp_path):
    """"/usr/bin/python3 -m pip install ..." was the advice: pip refuses it on Debian and Ubuntu."""
    found = backend_env.find_interpreter("/usr/bin/python3")
    assert found.externally_managed and not found.installer_can_fix
    absent = tmp_path / "no-venv"
    monkeypatch.setattr(backend_env, "VENV_DIR", absent)
    remake = ["/usr/bin/python3", "-m", "venv", "--clear", str(absent)]
    pip = [f"{absent}/bin/python", "-m", "pip", "install", "--prefer-binary",
           *backend_env.RUNTIME_REQUIREMENTS]
    assert found.fix_command() == f"{shlex.join(remake)} && {shlex.join(pip)}"
    assert "(PEP 668)" in found.problem()
    # a venv made from it is not: pip installs there
    plugin_venv = backend_env.venv_python(backend_env.PLUGIN_ROOT / ".venv")
    assert not backend_env.find_interpreter(str(plugin_venv)).externally_managed


def test_a_venv_left_without_pip_is_made_again(monkeypatch, tmp_path, python_without_ensurepip):
    """Debian's venv without python3-venv makes bin/python, then fails at ensurepip; the advice
    and the installer then skipped making the venv, as bin/python was there, and ran
    "<venv>/bin/python -m pip install", which failed for ever with "No module named pip"."""
    half = tmp_path / "half made"
    made = subprocess.run([python_without_ensurepip, "-m", "venv", str(half)], capture_output=True,
                          text=True)
    assert made.returncode != 0 and backend_env.venv_python(half).is_file()

    # the plugin's venv found half made: the advice makes it again with QGIS's Python
    monkeypatch.setattr(backend_env, "VENV_DIR", half)
    monkeypatch.setattr(backend_env, "CHECKOUT_VENV_DIR", tmp_path / "no-venv")
    monkeypatch.setattr(backend_env, "system_python", lambda: "/usr/bin/python3")
    found = backend_env.find_interpreter()
    python = str(backend_env.venv_python(half))
    assert (found.path, found.source) == (python, "venv")
    remake = ["/usr/bin/python3", "-m", "venv", "--clear", str(half)]
    pip = [python, "-m", "pip", "install", "--prefer-binary", *backend_env.RUNTIME_REQUIREMENTS]
    assert found.fix_command() == f"{shlex.join(remake)} && {shlex.join(pip)}"
    assert backend_env.install_plan("/usr/bin/python3") == backend_env.InstallPlan([remake, pip])
    subprocess.run(remake, check=True)
    assert backend_env.probe(python).pip
    assert backend_env.install_plan("/usr/bin/python3") == backend_env.InstallPlan([pip])

    # where the Python that makes it has no ensurepip, the advice says what to install first
    fresh = tmp_path / "new venv"
    plan = backend_env.install_plan(python_without_ensurepip, fresh)
    assert plan.steps[0] == [python_without_ensurepip, "-m", "venv", "--clear", str(fresh)]
    version = "%d.%d" % sys.version_info[:2]
    assert plan.blocker == (f"{python_without_ensurepip} cannot make a venv with pip, as it has no "
                            f"ensurepip module: on Debian and Ubuntu, install it first with "
                            f"`sudo apt install python{version}-venv` (or python3-venv)")
    monkeypatch.setattr(backend_env, "VENV_DIR", fresh)
    monkeypatch.setattr(backend_env, "system_python", lambda: python_without_ensurepip)
    found = backend_env.find_interpreter()
    assert found.source == "system" and found.problem().endswith(
        f"Fix it with:\n{plan.blocker}, then:\n{' && '.join(map(shlex.join, plan.steps))}")


# The newest release of each with wheels for these Pythons (pip's choice, the same on Linux
# x86-64, Windows and macOS arm64, in 2026); 3.11 and 3.12 have requirements.txt's exact pins.
WHEELS = {"3.9": {"numpy": "2.0.2", "onnxruntime": "1.19.2", "rasterio": "1.4.3"},
          "3.10": {"numpy": "2.2.6", "onnxruntime": "1.23.2", "rasterio": "1.4.4"},
          "3.11": {"numpy": "1.26.4", "onnxruntime": "1.31.1", "rasterio": "1.4.4"},
          "3.13": {"numpy": "2.4.6", "onnxruntime": "1.32.0", "rasterio": "1.4.4"}}


@pytest.mark.parametrize("python, released", WHEELS.items())
def test_the_installer_asks_for_releases_with_wheels_for_qgiss_python(tmp_path, python, released):
    """It asked for requirements.txt's exact pins: numpy==1.26.4 has no wheel for Python 3.13,
    onnxruntime==1.31.1 none below 3.11, and QGIS 3.22 to 3.28 ship 3.9 and 3.10."""
    from packaging.requirements import Requirement

    pip = backend_env.install_plan("/usr/bin/python3", tmp_path / "venv").steps[-1]
    specs = [arg for arg in pip[pip.index("install") + 1:] if not arg.startswith("-")]
    # each requirement where its marker holds, as pip reads them (a name can have several)
    env = {"python_version": python, "sys_platform": "linux", "platform_machine": "x86_64"}
    wanted = [r for r in map(Requirement, specs) if r.marker is None or r.marker.evaluate(env)]
    assert sorted(r.name for r in wanted) == sorted(released)
    assert {r.name: released[r.name] in r.specifier for r in wanted} == dict.fromkeys(released, True)


def test_a_failed_check_is_made_again_a_passed_one_is_not(tmp_path):
    """A failed check was remembered until QGIS restarted: packages installed meanwhile (the
    advised command, run in a terminal) did not count."""
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(backend_env.venv_python(venv))
    assert set(backend_env.find_interpreter(python).missing) == set(backend_env.BACKEND_MODULES)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "fix.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert backend_env.find_interpreter(python).ok
    (site / "fix.pth").unlink()
    assert backend_env.find_interpreter(python).ok   # remembered: a second saved a check
    backend_env.forget_checks()
    assert not backend_env.find_interpreter(python).ok


def test_child_environment_drops_the_parents_python_paths(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/opt/qgis/python")
    monkeypatch.setenv("PYTHONPATH", "/opt/qgis/python/plugins")
    env = backend_env.child_env()
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("python, platform, machine, wanted", [
    ("3.9", "linux", "x86_64", ">=1.18"),   # QGIS 3.22's Python: no onnxruntime 1.24 wheels
    ("3.10", "win32", "AMD64", ">=1.18"),
    ("3.11", "linux", "x86_64", ">=1.24.1"),
    ("3.12", "darwin", "arm64", ">=1.24.1"),
    ("3.13", "win32", "AMD64", ">=1.24.1"),
    ("3.12", "darwin", "x86_64", ">=1.18"),   # onnxruntime 1.24 has no wheels for Intel Macs
])
def test_the_installer_asks_for_an_onnxruntime_that_checks_external_data_where_it_can(
        python, platform, machine, wanted):
    """onnxruntime before 1.24 loads a model's external data from any path (a crafted model
    read /etc/passwd as weights); ">=1.18" kept such a version wherever one was installed.
    The markers (PEP 508) are read by packaging, the library pip evaluates them with."""
    from packaging.requirements import Requirement

    env = {"python_version": python, "sys_platform": platform, "platform_machine": machine}
    ort = [Requirement(r) for r in backend_env.RUNTIME_REQUIREMENTS if r.startswith("onnxruntime")]
    assert [str(r.specifier) for r in ort if r.marker is None or r.marker.evaluate(env)] == [wanted]


def test_commands_are_quoted_for_the_shell_that_runs_them():
    """On Windows the commands shown were quoted for sh (single quotes) and joined by &&: neither
    cmd.exe nor PowerShell 5 ran them."""
    base = r"C:\Program Files\QGIS 3.34\apps\Python312\python.exe"
    venv = r"C:\Users\Ana Ruiz\AppData\Roaming\QGIS\QGIS3\profiles\default\python\sarflood-venv"
    steps = [[base, "-m", "venv", "--clear", venv],
             [venv + r"\Scripts\python.exe", "-m", "pip", "install", "numpy>=1.24", "rasterio"]]
    assert backend_env.shell_lines(steps, windows=True) == (
        f'"{base}" -m venv --clear "{venv}"\n'
        f'"{venv}\\Scripts\\python.exe" -m pip install "numpy>=1.24" rasterio')   # > redirects in cmd
    # a run's command, pasted at a prompt on another drive: cmd.exe's cd needs /d for the drive
    assert backend_env.in_folder(r"C:\plugins\sarflood", [base, "-m", "backend"], windows=True) == (
        f'cd /d C:\\plugins\\sarflood && "{base}" -m backend')
    assert backend_env.in_folder("/p/sarflood", ["python3", "-m", "backend"], windows=False) == (
        "cd /p/sarflood && python3 -m backend")
    posix = backend_env.shell_lines(steps, windows=False)
    assert posix == " && ".join(map(shlex.join, steps)) and "'numpy>=1.24'" in posix
    assert [shlex.split(line) for line in posix.split(" && ")] == steps


def test_qgis_apps_own_python_is_found_on_macos(tmp_path, monkeypatch):
    """QGIS.app 3.44+ keeps its Python as Contents/MacOS/bin/python3.N (no python3) with its
    prefix in Contents/Frameworks: the plugin fell back to PATH's python3, which for an app
    started from Finder is Apple's developer-tools shim. (macOS's layout, laid out here: no
    Mac runs these tests.)"""
    import sys

    contents = tmp_path / "QGIS.app" / "Contents"
    python = contents / "MacOS" / "bin" / f"python3.{sys.version_info.minor}"
    python.parent.mkdir(parents=True)
    python.write_text("")
    (contents / "Frameworks" / "lib").mkdir(parents=True)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(sys, "executable", str(contents / "MacOS" / "QGIS"))
    monkeypatch.setattr(sys, "base_prefix", str(contents / "Frameworks"))
    assert backend_env.system_python() == str(python)
