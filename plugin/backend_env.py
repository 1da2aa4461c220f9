"""Which Python runs the backend, whether it has the backend's dependencies, and how to fix it.

The plugin folder is the repository root, so the ``backend`` package sits beside
``plugin/`` and runs as ``python -m backend`` with the plugin root as working
directory. The interpreter is, in order:

1. the plugin setting ``sarflood/python`` (the user's choice, used even if broken,
   so that the message names the interpreter they picked);
2. ``<plugin root>/.venv`` (what ``make venv`` or the installer dialog creates);
3. the system Python QGIS itself was built on, if it can import the dependencies.

Nothing here imports qgis: the Processing algorithms, the GUI and the tests share it.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
VENV_DIR = PLUGIN_ROOT / ".venv"
REQUIREMENTS_FILE = PLUGIN_ROOT / "requirements.txt"
# What `import backend` needs at run time; attrs is pinned because Debian's is too old for affine.
BACKEND_MODULES = ("numpy", "onnxruntime", "rasterio")
_RUNTIME_PACKAGES = ("numpy", "onnxruntime", "rasterio", "attrs")

_CHECK_SNIPPET = (
    "import importlib, json\n"
    "bad = {}\n"
    f"for m in {BACKEND_MODULES!r}:\n"
    "    try:\n"
    "        importlib.import_module(m)\n"
    "    except Exception as e:\n"
    "        bad[m] = type(e).__name__ + ': ' + str(e)\n"
    "print(json.dumps(bad))\n"
)


def child_env() -> dict[str, str]:
    """The environment for any backend child process.

    QGIS may set PYTHONHOME/PYTHONPATH for its embedded Python; another interpreter
    must not inherit them (they would mix two Pythons' packages). Unbuffered output
    lets the JSON progress lines arrive as they are written.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def system_python() -> str | None:
    """The Python QGIS was built on (inside QGIS, sys.executable is QGIS itself)."""
    exe = "python.exe" if os.name == "nt" else "bin/python3"
    candidate = Path(sys.base_prefix) / exe
    if candidate.is_file():
        return str(candidate)
    return shutil.which("python" if os.name == "nt" else "python3")


def runtime_requirements() -> list[str]:
    """The backend's run-time packages, with the pins of requirements.txt where it ships."""
    pins = {}
    if REQUIREMENTS_FILE.is_file():
        for line in REQUIREMENTS_FILE.read_text().splitlines():
            spec = line.split("#", 1)[0].strip()
            name = spec.split("==", 1)[0].strip().lower()
            if name in _RUNTIME_PACKAGES:
                pins[name] = spec
    return [pins.get(name, name) for name in _RUNTIME_PACKAGES]


_checked: dict[str, dict[str, str]] = {}
_lock = threading.Lock()


def missing_modules(python: str, timeout_s: float = 120.0) -> dict[str, str]:
    """Import the backend's dependencies in ``python``; module -> error for each that fails.

    Blocking (about a second): call it from a worker thread, never the GUI thread.
    The answer is cached per interpreter; :func:`forget_checks` clears it.
    """
    with _lock:
        if python in _checked:
            return dict(_checked[python])
    if not Path(python).is_file():
        return {m: f"interpreter {python} does not exist" for m in BACKEND_MODULES}
    try:
        done = subprocess.run([python, "-c", _CHECK_SNIPPET], capture_output=True, text=True,
                              timeout=timeout_s, env=child_env(), cwd=str(PLUGIN_ROOT))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {m: f"{python} could not be run ({exc})" for m in BACKEND_MODULES}
    try:
        bad = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        bad = {m: f"{python} failed: {tail}" for m in BACKEND_MODULES}
    with _lock:
        _checked[python] = dict(bad)
    return bad


def forget_checks() -> None:
    """Drop cached checks (after installing packages)."""
    with _lock:
        _checked.clear()


@dataclass(frozen=True)
class Interpreter:
    """The Python chosen to run the backend, and what it lacks."""
    path: str
    source: str  # "setting", "venv" or "system"
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def unusable(self) -> bool:
        """The Python chosen in the settings itself fails (not there, does not run): every
        module fails alike, and installing packages cannot help."""
        return (self.source == "setting" and len(self.missing) > 1
                and len(set(self.missing.values())) == 1)

    def fix_command(self) -> str:
        """The exact shell command that installs the missing packages."""
        install = [*map(str, (self._pip_python(), "-m", "pip", "install")), *runtime_requirements()]
        command = shlex.join(install)
        if self.source == "setting":
            return command
        if venv_python(VENV_DIR).is_file():
            return command
        base = system_python() or "python3"
        return f"{shlex.join([base, '-m', 'venv', str(VENV_DIR)])} && {command}"

    def _pip_python(self) -> Path | str:
        return self.path if self.source == "setting" else venv_python(VENV_DIR)

    def problem(self) -> str:
        """One paragraph for the user: what is missing, and the command that fixes it."""
        if self.unusable:
            return (f"The SAR Flood Mapper backend cannot run with {self.path} (the Python "
                    f"chosen in the plugin's settings): {next(iter(self.missing.values()))}. "
                    f"Choose another one, or clear the setting to use the plugin's own environment.")
        what = "; ".join(f"{m} ({err})" for m, err in self.missing.items())
        return (f"The SAR Flood Mapper backend cannot run with {self.path} ({self.source} "
                f"Python): missing or broken {what}. Fix it with:\n{self.fix_command()}")


def find_interpreter(setting: str | None = None) -> Interpreter:
    """Pick the backend's interpreter (see the module docstring). Blocking; worker threads only."""
    if setting:
        return Interpreter(setting, "setting", missing_modules(setting))
    candidates: list[tuple[str, str]] = []
    venv = venv_python(VENV_DIR)
    if venv.is_file():
        candidates.append((str(venv), "venv"))
    base = system_python()
    if base:
        candidates.append((base, "system"))
    if not candidates:
        return Interpreter("python3", "system", {m: "no Python interpreter found" for m in BACKEND_MODULES})
    first: Interpreter | None = None
    for path, source in candidates:
        found = Interpreter(path, source, missing_modules(path))
        if found.ok:
            return found
        first = first or found
    return first


def install_steps(base_python: str, venv_dir: Path | None = None) -> list[list[str]]:
    """Commands that create ``venv_dir`` (default: the plugin's .venv), if absent, and install
    the runtime packages in it."""
    venv_dir = venv_dir or VENV_DIR
    steps = []
    if not venv_python(venv_dir).is_file():
        steps.append([base_python, "-m", "venv", str(venv_dir)])
    steps.append([str(venv_python(venv_dir)), "-m", "pip", "install", "--disable-pip-version-check",
                  *runtime_requirements()])
    return steps
