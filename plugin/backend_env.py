"""Which Python runs the backend, whether it has the backend's dependencies, and how to fix it.

The plugin folder is the repository root, so the ``backend`` package sits beside
``plugin/`` and runs as ``python -m backend`` with the plugin root as working
directory. The interpreter is, in order:

1. the plugin setting ``sarflood/python`` (the user's choice, used even if broken,
   so that the message names the interpreter they picked);
2. ``<QGIS profile>/python/sarflood-venv`` (what the installer dialog creates);
3. ``<plugin root>/.venv`` (what ``make venv`` creates in a developer's checkout);
4. the system Python QGIS itself was built on, if it can import the dependencies.

Nothing here imports qgis: the Processing algorithms, the GUI and the tests share it.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_VENV_DIR = PLUGIN_ROOT / ".venv"
VENV_NAME = "sarflood-venv"
# The installer's venv, <QGIS profile>/python/sarflood-venv (use_profile; None until the plugin
# names the profile). Never the plugin folder: QGIS deletes it on each upgrade of the plugin,
# and a system-wide one may not be writable.
VENV_DIR: Path | None = None
# What `import backend` needs at run time.
BACKEND_MODULES = ("numpy", "onnxruntime", "rasterio")
# What the installer puts in its venv: lower bounds, no exact pins, so that pip takes releases
# with wheels for the Python QGIS ships (3.9 on QGIS 3.22, 3.13 and later on new ones). `make
# venv` keeps the exact pins of requirements.txt; its numpy<2 is for QGIS's own process only.
RUNTIME_REQUIREMENTS = (
    "numpy>=1.24",         # rasterio 1.4's own floor; the backend needs 1.17 (default_rng)
    # 1.24 is the first to refuse a model's external data outside its folder (an older one read
    # /etc/passwd as weights; the backend then refuses external data); it has wheels for Python
    # 3.11 and later, none for Intel Macs. 1.18 is the first to read ONNX IR version 10, the
    # bundled model's. pip evaluates the markers: exactly one of the two applies.
    'onnxruntime>=1.24.1; python_version >= "3.11" and (sys_platform != "darwin" or '
    'platform_machine != "x86_64")',
    'onnxruntime>=1.18; python_version < "3.11" or (sys_platform == "darwin" and '
    'platform_machine == "x86_64")',
    "rasterio>=1.4.3",     # the backend's tests fail on 1.4.0 (OGC:CRS84 is another grid than
                           # EPSG:4326 there) and on 1.3 (RasterioIOError is no RasterioError)
)

# Run from stdin ("python -"): a program that is not Python then quotes "-" in its error, not this.
_CHECK_SNIPPET = (
    "import importlib, json, os, sys, sysconfig\n"
    "bad = {}\n"
    f"for m in {BACKEND_MODULES!r}:\n"
    "    try:\n"
    "        importlib.import_module(m)\n"
    "    except Exception as e:\n"
    "        bad[m] = type(e).__name__ + ': ' + str(e)\n"
    # PEP 668, as pip tells it: the marker in the stdlib folder, outside a venv
    "managed = sys.prefix == sys.base_prefix and os.path.isfile(\n"
    "    os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))\n"
    "print(json.dumps({'missing': bad, 'externally_managed': managed}))\n"
)
_TAIL_CHARS = 200   # of a failed check's error output, in the message
# What a venv needs: pip in the venv, ensurepip in the Python that makes it (Debian moves
# ensurepip to python3.X-venv, whose venv then makes bin/python and fails at pip). Isolated (-I):
# no pip folder of the working directory counts.
_PROBE_SNIPPET = (
    "import importlib.util, json, sys\n"
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2],\n"
    "                  'pip': bool(importlib.util.find_spec('pip')),\n"
    "                  'ensurepip': bool(importlib.util.find_spec('ensurepip'))}))\n"
)


# A console program started from QGIS, a GUI program, gets a console window of its own on
# Windows (closing it ends the program) unless asked not to: QProcess asks, subprocess not.
NO_WINDOW = {"creationflags": subprocess.CREATE_NO_WINDOW} if os.name == "nt" else {}
# The commands shown run in cmd.exe on Windows: PowerShell takes no quoted program path.
TERMINAL = "a Command Prompt (cmd.exe)" if os.name == "nt" else "a terminal"
FIX_WITH = f"Fix it in {TERMINAL} with:" if os.name == "nt" else "Fix it with:"
_CMD_SPECIAL = frozenset("<>|&^")   # cmd.exe acts on these outside double quotes


def shell_join(argv: list[str], windows: bool = os.name == "nt") -> str:
    """``argv`` as a command line to paste: quoted for sh, or on Windows for cmd.exe, which
    takes no single quotes."""
    if not windows:
        return shlex.join(argv)
    return " ".join(_cmd_quote(arg) for arg in argv)


def _cmd_quote(arg: str) -> str:
    quoted = subprocess.list2cmdline([arg])   # quotes only for spaces: "numpy>=1.24" would redirect
    return f'"{quoted}"' if _CMD_SPECIAL & set(arg) and not quoted.startswith('"') else quoted


def in_folder(folder: str, argv: list[str], windows: bool = os.name == "nt") -> str:
    """``argv`` run in ``folder``, as one line to paste: cmd.exe's cd changes the drive only
    with /d (a prompt on D: stayed there, and the run found no backend module)."""
    cd = ["cd", "/d"] if windows else ["cd"]
    return f"{' '.join(cd)} {shell_join([folder], windows)} && {shell_join(argv, windows)}"


def shell_lines(steps: list[list[str]], windows: bool = os.name == "nt") -> str:
    """Commands to run one after the other: joined by && for sh, so that none runs after a
    failure; one per line on Windows (PowerShell 5 has no &&)."""
    return ("\n" if windows else " && ").join(shell_join(step, windows) for step in steps)


def child_env() -> dict[str, str]:
    """The environment for any backend child process.

    QGIS may set PYTHONHOME/PYTHONPATH for its embedded Python; another interpreter
    must not inherit them (they would mix two Pythons' packages). Unbuffered output
    lets the JSON progress lines arrive as they are written, UTF-8 as they are read. The
    fault handler prints the Python stack of a crash (a segfault in a native library) to
    stderr, which goes to the log: without it a crash left nothing to report.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    # the pipes are read as UTF-8; on Windows a child writes them in the ANSI code page
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def use_profile(settings_dir: str) -> None:
    """Put the installer's venv in the QGIS profile ``settings_dir``
    (``QgsApplication.qgisSettingsDirPath()``)."""
    global VENV_DIR
    VENV_DIR = Path(settings_dir) / "python" / VENV_NAME


def install_target() -> Path | None:
    """The installer's venv where it can be made; None where its folder cannot be written
    (tried: os.access says yes to root, and on Windows to any folder not marked read-only)."""
    if VENV_DIR is None:
        return None
    there = next(folder for folder in (VENV_DIR, *VENV_DIR.parents) if folder.exists())
    try:
        os.rmdir(tempfile.mkdtemp(dir=there))
    except OSError:
        return None
    return VENV_DIR


def cannot_install() -> str:
    """Why the installer cannot help, and what can."""
    where = f"{VENV_DIR} cannot be written" if VENV_DIR else "no QGIS profile is known"
    return (f"The plugin cannot make its own environment ({where}): choose a Python that has "
            f"{', '.join(BACKEND_MODULES)} in the run dialog (Advanced > Backend Python, the "
            f"setting sarflood/python).")


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def system_python() -> str | None:
    """The Python QGIS was built on (inside QGIS, sys.executable is QGIS itself). QGIS.app
    (macOS, 3.44 on) keeps it beside the QGIS binary, as Contents/MacOS/bin/python3.12 with
    no python3, its prefix being Contents/Frameworks; and PATH's python3 of an app started
    from Finder is /usr/bin/python3, Apple's developer-tools shim, not QGIS's Python."""
    if os.name == "nt":
        candidates = [Path(sys.base_prefix) / "python.exe"]
    else:
        names = ("python3", f"python3.{sys.version_info.minor}")
        folders = [Path(sys.base_prefix) / "bin"]
        if sys.platform == "darwin":
            folders += [Path(sys.executable).parent, Path(sys.executable).parent / "bin"]
        candidates = [folder / name for folder in folders for name in names]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return shutil.which("python" if os.name == "nt" else "python3")


@dataclass(frozen=True)
class Check:
    """What a Python lacks of the backend's dependencies (module -> error), and whether pip
    refuses to install into it (PEP 668: Debian's and Ubuntu's own Python)."""
    missing: dict[str, str]
    externally_managed: bool = False


_passed: dict[str, Check] = {}
_lock = threading.Lock()


def check_python(python: str, timeout_s: float = 120.0) -> Check:
    """Import the backend's dependencies in ``python``.

    Blocking (about a second): call it from a worker thread, never the GUI thread.
    A Python that has them all is remembered (:func:`forget_checks` clears it); one that
    fails is asked again each time, so that packages installed in a terminal count at once.
    """
    with _lock:
        if python in _passed:
            return _passed[python]
    path = Path(python)
    if path.is_dir():
        return _all_fail(f"{python} is a folder, not a Python interpreter")
    if not path.is_file():
        return _all_fail(f"interpreter {python} does not exist")
    try:
        done = subprocess.run([python, "-"], input=_CHECK_SNIPPET, capture_output=True, text=True,
                              errors="replace", timeout=timeout_s, env=child_env(),
                              cwd=str(PLUGIN_ROOT), **NO_WINDOW)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _all_fail(f"{python} could not be run ({exc})")
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        found = Check(dict(answer["missing"]), bool(answer["externally_managed"]))
    except (IndexError, KeyError, TypeError, ValueError):
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}, no error output"])[-1]
        if len(tail) > _TAIL_CHARS:
            tail = "..." + tail[-_TAIL_CHARS:]
        return _all_fail(f"{python} did not run as Python ({tail})")
    if not found.missing:
        with _lock:
            _passed[python] = found
    return found


def _all_fail(why: str) -> Check:
    return Check({m: why for m in BACKEND_MODULES})


def forget_checks() -> None:
    """Drop cached checks (after installing packages)."""
    with _lock:
        _passed.clear()


@dataclass(frozen=True)
class Interpreter:
    """The Python chosen to run the backend, and what it lacks."""
    path: str
    source: str  # "setting", "venv" or "system"
    missing: dict[str, str] = field(default_factory=dict)
    externally_managed: bool = False   # pip refuses to install into it (PEP 668)

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def unusable(self) -> bool:
        """The Python chosen in the settings itself fails (not there, does not run): every
        module fails alike, and installing packages cannot help."""
        return (self.source == "setting" and len(self.missing) > 1
                and len(set(self.missing.values())) == 1)

    @property
    def installer_can_fix(self) -> bool:
        """The installer fills its venv in the QGIS profile, where its folder can be written:
        that fixes a Python found automatically, never one chosen in the settings, which it
        does not replace."""
        return not self.ok and self.source != "setting" and install_target() is not None

    @property
    def _into_this(self) -> bool:
        """Fixed by installing into this Python: one chosen in the settings that pip takes."""
        return self.source == "setting" and not self.externally_managed

    def fix_command(self) -> str:
        """The exact shell command that installs the missing packages: into this Python, or,
        where pip refuses to (PEP 668) or none was chosen, into the installer's venv, made (again)
        first where it has no pip. Blocking (it asks the Pythons involved): worker threads only."""
        if self._into_this:
            return shell_join(_pip_install(self.path))
        # a venv's own Python cannot make it again: the Python it was made from does
        plan = install_plan(self.path if self.source != "venv" else system_python() or "python3")
        command = shell_lines(plan.steps)
        return f"{plan.blocker}, then:\n{command}" if plan.blocker else command

    def problem(self) -> str:
        """One paragraph for the user: what is missing, and the command that fixes it."""
        chosen = f"{self.path} (the Python chosen in the run dialog's Advanced > Backend Python)"
        if self.unusable:
            return (f"The SAR Flood Mapper backend cannot run with {chosen}: "
                    f"{next(iter(self.missing.values()))}. "
                    f"Choose another one, or clear the setting to use the plugin's own environment.")
        what = "; ".join(f"{m} ({err})" for m, err in self.missing.items())
        named = chosen if self.source == "setting" else f"{self.path} ({self.source} Python)"
        said = f"The SAR Flood Mapper backend cannot run with {named}: missing or broken {what}."
        if not self._into_this and install_target() is None:
            return f"{said} {cannot_install()}"
        if self.externally_managed and self.source == "setting":
            said += (f" pip does not install into {self.path}, which the system manages (PEP 668): "
                     f"install them into the plugin's own environment, then clear the setting "
                     f"so that it is used.")
        elif self.source == "setting":
            said += (" Install them into that Python, or clear the setting to use the plugin's "
                     "own environment (its installer sets it up).")
        return f"{said} {FIX_WITH}\n{self.fix_command()}"


def find_interpreter(setting: str | None = None) -> Interpreter:
    """Pick the backend's interpreter (see the module docstring). Blocking; worker threads only."""
    if setting:
        return _interpreter(setting, "setting")
    candidates: list[tuple[str, str]] = []
    for venv_dir in (VENV_DIR, CHECKOUT_VENV_DIR):
        if venv_dir is not None and venv_python(venv_dir).is_file():
            candidates.append((str(venv_python(venv_dir)), "venv"))
    base = system_python()
    if base:
        candidates.append((base, "system"))
    if not candidates:
        return Interpreter("python3", "system", {m: "no Python interpreter found" for m in BACKEND_MODULES})
    first: Interpreter | None = None
    for path, source in candidates:
        found = _interpreter(path, source)
        if found.ok:
            return found
        first = first or found
    return first


def _interpreter(path: str, source: str) -> Interpreter:
    check = check_python(path)
    return Interpreter(path, source, check.missing, check.externally_managed)


@dataclass(frozen=True)
class Probe:
    """A Python's version ("3.11"), whether it has pip, and whether it can make a venv with pip."""
    version: str
    pip: bool
    ensurepip: bool


def probe(python: str) -> Probe | None:
    """Ask ``python`` what it is; None where it does not run. Blocking (well under a second)."""
    if not Path(python).is_file():
        return None
    try:
        done = subprocess.run([python, "-I", "-c", _PROBE_SNIPPET], capture_output=True, text=True,
                              errors="replace", timeout=60, env=child_env(), **NO_WINDOW)
        return Probe(**json.loads(done.stdout))
    except (OSError, subprocess.TimeoutExpired, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class InstallPlan:
    """The commands that fill a venv with the backend's packages, and, where they cannot work
    yet, what the user must do first (``blocker``)."""
    steps: list[list[str]]
    blocker: str = ""


def install_plan(base_python: str, venv_dir: Path | None = None) -> InstallPlan:
    """Install the runtime packages into ``venv_dir`` (default: the installer's venv), made
    first with ``base_python`` unless it has pip. A venv without pip (its making was interrupted,
    or Debian's python3-venv was missing) is made again: pip in it would fail for ever."""
    venv_dir = venv_dir or install_target()
    if venv_dir is None:
        return InstallPlan([], cannot_install())
    python = str(venv_python(venv_dir))
    install = _pip_install(python)
    found = probe(python)
    if found is not None and found.pip:
        return InstallPlan([install])
    steps = [[base_python, "-m", "venv", "--clear", str(venv_dir)], install]
    base = probe(base_python)
    if base is None or base.ensurepip:
        return InstallPlan(steps)
    return InstallPlan(steps, f"{base_python} cannot make a venv with pip, as it has no ensurepip "
                              f"module: on Debian and Ubuntu, install it first with "
                              f"`sudo apt install python{base.version}-venv` (or python3-venv)")


def _pip_install(python: str) -> list[str]:
    # an older wheel rather than a newer sdist: rasterio's would need GDAL's headers
    return [python, "-m", "pip", "install", "--prefer-binary", *RUNTIME_REQUIREMENTS]
