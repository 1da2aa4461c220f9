"""Run ``python -m backend ... --progress json`` as a child process and read its JSON lines.

This is the one place that starts the backend. It is plain Python (threads and
``subprocess``), so both the QgsTask of the GUI and the Processing algorithms,
which already run in worker threads, drive it with the same code:

    outcome = BackendProcess(python, ["predict", ...]).run(on_event, is_canceled)

Two reader threads drain stdout (JSON events) and stderr (kept for error
messages), so the child never stalls on a full pipe; both are read as UTF-8 whatever
the locale, a byte that is not (GDAL and PROJ print raw paths) replaced. The child's
stdin is a pipe kept open for the run and never written (``SARFLOOD_PARENT_PIPE=1``):
Cancel closes it, on which the backend cancels as on SIGTERM, removes its temporary
files and exits with 130, on every OS and through the launcher of a Windows venv; and
the OS closes it when QGIS dies, so a backend does not run on unseen. A child that has
not stopped halfway through the grace period gets SIGTERM (POSIX), one that has not at
its end is killed, and what it left is removed here.
On POSIX the child leads a process group of its own, and the signals go to the group:
a wrapper script set as the backend's Python that runs it without exec is stopped
with the backend, not instead of it.
A cancel that comes after the outputs are complete changes nothing: the backend keeps
them, says so and exits 0 with its result, and the run is a success
(``Outcome.cancel_came_late``).
"""
from __future__ import annotations

import collections
import glob
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .backend_env import NO_WINDOW, PLUGIN_ROOT, Interpreter, child_env, in_folder
from .outputs import HIDDEN_NAME, undo_leftover

EXIT_CANCELLED = 130
# the plugin's tab of View > Panels > Log Messages, where a failed run's details go
TAG = "SAR Flood Mapper"
LOG_PANEL = f"View > Panels > Log Messages, tab '{TAG}'"
OUTPUT_FLAGS = ("--mask", "--probability", "--uncertainty", "--out")
# an import's ModuleNotFoundError quotes the name; "python -m backend" ends its line with it
# bare (a bare name inside a sentence is someone's prose, not Python's)
_MISSING_MODULE = re.compile(r"No module named (?:'([\w.]+)'|([A-Za-z_]\w*(?:\.\w+)*)$)", re.M)
# the backend's messages name its command-line options; in QGIS the same choices are
# settings of the dialog and of the Processing algorithms, named so here
_SETTING_NAMES = {"--units": "'Units'", "--bands": "the 'VV band' and 'VH band' choice",
                  "--extent-crs": "the extent's CRS", "--extent": "'Extent'",
                  "--tile-size": "'Tile size'", "--overlap": "'Overlap'",
                  "--batch-size": "'Tiles per batch'", "--device": "'Device'",
                  "--tta": "test-time augmentation"}
_LATE_CANCEL_WARNING = "the cancel came after the outputs were complete"
_OPTION = re.compile("|".join(re.escape(k) for k in _SETTING_NAMES) + r"(?![\w-])")
# the stderr kept for the log: a traceback's start and the end, each line cut (an array
# printed whole made one line of 199 KB)
_HEAD_LINES, _TAIL_LINES, _LINE_CHARS = 20, 40, 2000
_SAID_CHARS = 200   # of a stderr line in a message
# the lines that say what went wrong, best first: an exception's last line, a C++ one's
# what(); then a crash's "Fatal Python error: Segmentation fault" (PYTHONFAULTHANDLER)
_TELLING = (re.compile(r"^[\w.]*(?:Error|Exception)(?::|$)|\bwhat\(\):"),
            re.compile(r"^Fatal Python error"))
# stderr says "the traceback printed on stderr": in QGIS that is the Log Messages panel
# (the Processing log for an algorithm, which prints it there)
_ON_STDERR = "the traceback printed on stderr"
_STDERR_IN_QGIS = {False: f"the details in {LOG_PANEL}", True: "the details in this log"}


# advice to add --overwrite, an option a QGIS user cannot give (the plugin gives it itself
# for the files that exist when a run starts): what to do in QGIS instead
_OVERWRITE_ADVICE = (
    ("appeared while running; use --overwrite to replace it",
     "was written by another run or program while this run was running (two runs to one "
     "file?); it is kept: choose another output file, or remove that one and run again"),
    ("exists; use --overwrite to replace it",
     "exists (made after this run was set up); it is kept: choose another output file, or "
     "remove that one and run again"),
    ("use --overwrite to replace it", "choose another output file, or remove that one and run again"),
)


# "--bands VV_INDEX,VH_INDEX" (its placeholder too): the dialog's band choice, or the
# Processing algorithms' parameters
_BANDS_ADVICE = "--bands VV_INDEX,VH_INDEX"
_BANDS_IN_QGIS = {False: "setting 'VV band' and 'VH band'", True: "setting VV_BAND and VH_BAND"}
# a single-band input to a model that reads VV and VH
_TWO_BANDS_ADVICE = "give a 2-band raster or two single-band rasters"
_TWO_BANDS_IN_QGIS = {False: "give one layer with VV and VH bands, or separate VV and VH layers",
                      True: "give a VV and VH stack as INPUT, or the VH layer as INPUT_VH"}
# finalize given a mask or an uncertainty: in QGIS it is sarflood:threshold, or the dock's
# Accept (which gives it the run's probability itself)
_PROBABILITY_ADVICE = "finalize needs the run's probability (predict --probability)"
_PROBABILITY_IN_QGIS = {False: "Accept needs the run's probability file",
                        True: "give the probability output of sarflood:mapwater"}
# the backend writes extents XMIN,YMIN,XMAX,YMAX (as --extent takes them); QGIS writes and
# reads them XMIN,XMAX,YMIN,YMAX (as in "10,11,50,51 [EPSG:4326]")
_NUMBER = r"-?\d+(?:\.\d+)?"
_EXTENT = re.compile(rf"(the extent |bounds |; (?=\S+ in the raster's))"
                     rf"({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})(?=[ )]|$)")


# the backend cancels at the end of its stdin (backend.cli): Cancel, or QGIS gone; a query
# (query_json) has none. No Linux death signal (PR_SET_PDEATHSIG) besides: with the pipe's
# end it made one death two cancels, and a second cancel stops the backend at once
_PARENT_PIPE = {"SARFLOOD_PARENT_PIPE": "1"}
# how the child is started: signals go to its process group (BackendProcess._stop)
_OWN_GROUP = NO_WINDOW if os.name == "nt" else {"start_new_session": True}


def in_qgis_words(message: str, processing: bool = False) -> str:
    """A backend message with its option names given as the QGIS settings they are (the
    Processing parameters' names for ``processing``), extents in QGIS's order, and advice
    to use ``--overwrite`` as what a QGIS user can do."""
    for cli, qgis in _OVERWRITE_ADVICE:
        if cli in message:
            message = message.replace(cli, qgis)
            break
    message = message.replace(_BANDS_ADVICE, _BANDS_IN_QGIS[processing])
    message = message.replace(_TWO_BANDS_ADVICE, _TWO_BANDS_IN_QGIS[processing])
    message = message.replace(_PROBABILITY_ADVICE, _PROBABILITY_IN_QGIS[processing])
    message = message.replace(_ON_STDERR, _STDERR_IN_QGIS[processing])
    message = _EXTENT.sub(lambda m: f"{m[1]}{m[2]},{m[4]},{m[3]},{m[5]}", message)
    message = message.replace("is west,south,east,north", "is west,east,south,north in "
                              "QGIS's order")
    names = {**_SETTING_NAMES, "--bands": "VV_BAND and VH_BAND"} if processing else _SETTING_NAMES
    return _OPTION.sub(lambda m: names[m.group(0)], message)


@dataclass
class Outcome:
    """How a backend run ended."""
    returncode: int | None = None
    result: dict[str, Any] | None = None   # the `result` event, without the "event" key
    error: str | None = None               # one-line message for the user
    error_kind: str | None = None
    cancelled: bool = False
    # a cancel came after the backend had written its outputs: it kept them, and the run
    # is a success (ok), not a cancelled one
    cancel_came_late: bool = False
    warnings: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)   # its first and last lines, for the log panel
    command: str = ""   # the run as a command line to paste in a terminal, for the log
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.result is not None and not self.cancelled
                and (self.returncode == 0 or self.cancel_came_late))


EventHandler = Callable[[dict[str, Any]], None]


class BackendProcess:
    """One run of the backend CLI. Not reusable: create one per run."""

    def __init__(self, interpreter: Interpreter, args: list[str], grace_s: float = 10.0,
                 processing: bool = False):
        self.interpreter = interpreter
        self.processing = processing   # messages name the Processing parameters (in_qgis_words)
        self.argv = [interpreter.path, "-m", "backend", *args]
        if "--progress" not in args:
            self.argv += ["--progress", "json"]
        self.grace_s = grace_s
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr_head: list[str] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._stderr_count = 0
        self._stderr_lock = threading.Lock()   # both readers keep lines
        self._proc: subprocess.Popen | None = None
        self._pids: set[int] = set()   # the processes whose leftovers are this run's

    @property
    def command(self) -> str:
        """The run as one line to paste in a terminal (sh, or cmd.exe on Windows)."""
        return in_folder(str(PLUGIN_ROOT), self.argv)

    @property
    def pid(self) -> int | None:
        """The child's process id once started (kept after it exits), else None."""
        return self._proc.pid if self._proc is not None else None

    def _read_stdout(self, stream) -> None:
        try:
            for line in stream:
                line = line.strip()
                if not line:
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    # the protocol forbids other stdout; keep it for the error message anyway
                    self._keep(line)
                    continue
                if isinstance(doc, dict) and "event" in doc:
                    self._events.put(doc)
        finally:
            self._events.put(None)  # end of stream, also where reading failed

    def _read_stderr(self, stream) -> None:
        for line in stream:
            if line.strip():
                self._keep(line.rstrip())

    def _keep(self, line: str) -> None:
        if len(line) > _LINE_CHARS:
            line = line[:_LINE_CHARS] + " [...]"
        with self._stderr_lock:
            self._stderr_count += 1
            (self._stderr_head if len(self._stderr_head) < _HEAD_LINES else self._stderr).append(line)

    def _kept(self) -> list[str]:
        """The stderr lines kept: the first ones, and the last ones."""
        with self._stderr_lock:
            left_out = self._stderr_count - len(self._stderr_head) - len(self._stderr)
            gap = [f"[... {left_out} lines left out ...]"] if left_out else []
            return self._stderr_head + gap + list(self._stderr)

    def run(self, on_event: EventHandler | None = None,
            is_canceled: Callable[[], bool] = lambda: False, poll_s: float = 0.05) -> Outcome:
        """Start the child, deliver each event to ``on_event``, return how it ended.

        Blocks the calling thread (a worker thread) until the child exits.
        """
        outcome = Outcome(command=self.command)
        start = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.argv, cwd=str(PLUGIN_ROOT), env={**child_env(), **_PARENT_PIPE},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                encoding="utf-8", errors="replace", bufsize=1, **_OWN_GROUP)
        except OSError as exc:
            outcome.error = f"could not start the backend with {self.interpreter.path}: {exc}"
            return outcome
        self._pids.add(self._proc.pid)
        readers = [threading.Thread(target=self._read_stdout, args=(self._proc.stdout,), daemon=True),
                   threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            while True:
                if is_canceled() and not outcome.cancelled:
                    outcome.cancelled = True
                    self._stop()
                try:
                    event = self._events.get(timeout=poll_s)
                except queue.Empty:
                    if self._proc.poll() is None:
                        continue
                    if not any(reader.is_alive() for reader in readers):
                        break   # the child has exited and all it wrote is read
                    if os.name != "nt":
                        # the child has exited and what it started holds its output open (the
                        # backend under a wrapper killed meanwhile): it must not run on, unseen
                        self._stop()
                    continue
                if event is None:
                    break
                self._handle(event, outcome, on_event)
        except BaseException:   # a handler here raised: the child must not run on unseen
            self._stop()
            raise
        outcome.returncode = self._proc.wait()
        if outcome.returncode != 0:
            for pid in self._pids:
                self._remove_leftovers(pid)
        for reader in readers:
            reader.join(timeout=5)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            stream.close()
        outcome.stderr = self._kept()
        outcome.seconds = time.monotonic() - start
        self._conclude(outcome)
        return outcome

    def _handle(self, event: dict[str, Any], outcome: Outcome, on_event: EventHandler | None) -> None:
        kind = event.get("event")
        if "message" in event:
            event = {**event, "message": in_qgis_words(str(event["message"]), self.processing)}
        if kind == "start" and isinstance(event.get("pid"), int):
            self._pids.add(event["pid"])   # behind a launcher, not the process started
        if kind == "result":
            outcome.result = {k: v for k, v in event.items() if k != "event"}
        elif kind == "error":
            outcome.error = str(event.get("message", "unknown error"))
            outcome.error_kind = str(event.get("kind", "Error"))
        elif kind == "warning":
            outcome.warnings.append(str(event.get("message", "")))
        if on_event is not None:
            on_event(event)

    def _remove_leftovers(self, pid: int) -> None:
        """What a child that was killed left (it cleans up after itself otherwise): the
        grace period ran out, or the OOM killer struck.

        The backend names them ``.<name>.<pid>-<hex>.sarflood-<kind>`` in each output's
        folder (``backend.raster_io.temporary_path``); the process id keeps those of other
        runs into the same folder out of reach. A ``tmp`` (half-written) is removed; killed
        while renaming its outputs into place, a ``kept`` (the file an output replaced) is
        put back, and the output a ``new`` marks (it replaced none) removed: the outputs
        are as they were before the run.
        """
        folders = {os.path.dirname(os.path.abspath(value))
                   for flag, value in zip(self.argv, self.argv[1:]) if flag in OUTPUT_FLAGS}
        for folder in folders:
            for leftover in glob.glob(os.path.join(glob.escape(folder), f".*.{pid}-*.sarflood-*")):
                found = HIDDEN_NAME.match(os.path.basename(leftover))
                if found is None:
                    continue
                try:
                    undo_leftover(leftover, os.path.join(folder, found["name"]), found)
                except OSError:
                    pass  # gone already, or not ours to remove

    def _stop(self) -> None:
        """Close the child's stdin: the backend cancels and cleans up. On POSIX, SIGTERM
        halfway through the grace period (to the backend a second cancel: it stops at once,
        still cleaning up), then kill what has not exited at its end: the child's process
        group, the backend with a wrapper that started it. On Windows, where terminate()
        is TerminateProcess and no one cleans up, only at the end."""
        proc = self._proc
        proc.stdin.close()
        if os.name == "nt":
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
            return
        start = time.monotonic()
        signalled = False
        while self._group_alive():
            waited = time.monotonic() - start
            if waited > self.grace_s:
                self._pids |= self._group_members()
                self._signal_group(signal.SIGKILL)
                return
            if waited > self.grace_s / 2 and not signalled:
                self._signal_group(signal.SIGTERM)
                signalled = True
            time.sleep(0.05)

    def _signal_group(self, number: int) -> None:
        try:
            os.killpg(self._proc.pid, number)
        except ProcessLookupError:
            pass   # all gone already

    def _group_alive(self) -> bool:
        self._proc.poll()   # reaps the child: a zombie would count
        try:
            os.killpg(self._proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _group_members(self) -> set[int]:
        """The processes of the child's group (Linux: /proc; elsewhere none found): a killed
        one's leftovers carry its own process id."""
        members = set()
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as file:
                    group = int(file.read().rsplit(")", 1)[1].split()[2])
            except (OSError, IndexError, ValueError):
                continue   # gone meanwhile
            if group == self._proc.pid:
                members.add(int(stat.split("/")[2]))
        return members

    def _conclude(self, outcome: Outcome) -> None:
        """Turn an exit without a clear message into one the user can act on."""
        if outcome.returncode == EXIT_CANCELLED:
            outcome.cancelled = True
        if (outcome.cancelled and outcome.result is not None and outcome.error is None
                and outcome.returncode != EXIT_CANCELLED):
            # the cancel came after the outputs were complete: the backend prints its result
            # only once every output is in place, and then keeps them (exit 0), or the SIGTERM
            # found it past its handlers, exiting (-15), or it had ended already. What the run
            # made is shown as for any run; the backend's own warning about it (when it got
            # the cancel in time to give one) is said by the caller in its words.
            outcome.cancelled = False
            outcome.cancel_came_late = True
            outcome.warnings = [w for w in outcome.warnings if not w.startswith(_LATE_CANCEL_WARNING)]
            return
        if outcome.cancelled:
            outcome.result = None
            return
        if outcome.returncode == 0 and outcome.result is not None:
            return
        lines = self._kept()
        # POSIX: a signal ended it; the backend under a wrapper that was killed says it was
        # cancelled (stopped here after the wrapper), which it was not asked to be
        if (outcome.returncode is not None and outcome.returncode < 0
                and outcome.error_kind in (None, "Cancelled")):
            outcome.error = killed_message(-outcome.returncode, self.argv[3] == "predict",
                                           telling_line(lines, any_line=False))
            outcome.error_kind = None
            return
        if outcome.error:
            return
        text = "\n".join(lines)
        found = [m.group(1) or m.group(2) for m in _MISSING_MODULE.finditer(text)]
        if found:   # the last: the import that failed, after any warning that named one
            name = found[-1]
            module = name.split(".")[0]
            broken = Interpreter(self.interpreter.path, self.interpreter.source,
                                 {module: f"No module named '{name}'"})
            if module == "backend":
                outcome.error = (f"the backend package was not found next to the plugin in "
                                 f"{PLUGIN_ROOT} (the plugin is incomplete: reinstall it)")
            else:
                outcome.error = broken.problem()
            outcome.error_kind = "MissingDependency"
            return
        last = telling_line(lines) or "no message"
        if outcome.returncode == 0:
            outcome.error = f"the backend ended without a result ({last})"
        else:
            outcome.error = f"the backend failed with exit code {outcome.returncode}: {last}"


def telling_line(lines: list[str], any_line: bool = True) -> str | None:
    """The stderr line that says best what went wrong: the last exception or what() line,
    else the last "Fatal Python error", else (``any_line``) the last line; cut short."""
    lines = [" ".join(line.split()) for line in lines if line.strip()]
    found = next((kept for pattern in _TELLING
                  for kept in reversed(lines) if pattern.search(kept)), None)
    if found is None and any_line and lines:
        found = lines[-1]
    if found is None or len(found) <= _SAID_CHARS:
        return found
    return found[:_SAID_CHARS] + "..."


def killed_message(number: int, mapping: bool = True, said: str | None = None) -> str:
    """Why a backend ended by signal ``number`` (and the error line it ``said`` last), and
    for SIGKILL what usually sends it; the settings that take less memory only for a
    ``mapping`` run (predict), which has them. A crash (SIGABRT, SIGSEGV) gets what may
    avoid it, and where to find what a report needs."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    if name == "SIGKILL":   # nothing the backend did: the OOM killer, most often
        text = (f"the backend was killed (signal {number}, SIGKILL), most often by the system "
                "running out of memory")
        text += (": try a smaller tile size, fewer tiles per batch, no test-time "
                 "augmentation or a smaller extent" if mapping else
                 "; close other programs and try again")
        return text + (f" (it said: {said})" if said else "")
    text = f"the backend was stopped by signal {number} ({name})" + (f": {said.rstrip('; ')}" if said else "")
    if name in ("SIGABRT", "SIGSEGV"):
        text += (f"; the backend crashed: try Device 'CPU' or fewer tiles per batch, and "
                 f"report it with the details in {LOG_PANEL}" if mapping else
                 f"; the backend crashed: report it with the details in {LOG_PANEL}")
    return text


class QueryError(RuntimeError):
    """A quick backend command failed; the message is the backend's one line."""


def query_json(interpreter: Interpreter, args: list[str], timeout_s: float = 60.0) -> Any:
    """Run a quick backend command that prints one JSON document (``card --json``, ``devices``)."""
    try:
        done = subprocess.run([interpreter.path, "-m", "backend", *args], cwd=str(PLUGIN_ROOT),
                              env=child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                              encoding="utf-8", errors="replace", timeout=timeout_s, **NO_WINDOW)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QueryError(f"backend {args[0]}: {exc}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise QueryError(lines[-1].removeprefix("error: "))
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise QueryError(f"backend {args[0]}: output is not JSON ({exc})") from None
