"""A QgsTask that runs one backend command, so the GUI never waits on it.

QGIS runs ``run()`` in its task thread pool: the interpreter check and the child
process live there. Progress goes through ``setProgress`` (shown in the task bar);
info and warning lines arrive on the ``message`` signal, and ``finished`` is
delivered on the GUI thread, where ``done`` is emitted with the outcome. The lines and
a failure's message also go to the plugin's tab of the Log Messages panel, where they stay
after the status line has moved on.
"""
from __future__ import annotations

import time
import traceback
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import QThreadPool, pyqtSignal

from .backend_env import Interpreter, find_interpreter
from .backend_process import LOG_PANEL, TAG, BackendProcess, Outcome, QueryError, query_json


# The longest the GUI waits for a free thread of Qt's pool to take a task just added.
HANDOVER_S = 0.5


def add_task(task: QgsTask) -> None:
    """Add ``task`` to QGIS's task manager and, where Qt's thread pool has a free thread,
    wait (up to :data:`HANDOVER_S`) until that thread has taken it.

    Why: QGIS's task manager keeps the address of each task's runnable after the pool has
    deleted it, and when that task's status changes it takes that address out of the pool's
    queue (QThreadPool::tryTake, on the GUI thread). A task added meanwhile whose runnable
    got the freed address, still waiting in the queue, is taken out and deleted: it stays
    Queued for good (QGIS issue #53806; the stale pointer is in QGIS 3.22 and long after).
    An Accept that never ended, in test runs on 2 cores, was this. Those calls run on the
    GUI thread only, so none can come while it waits here. With no free thread the task
    waits in the queue, as before: letting the pool run a thread more for it (ccac537) was
    followed by QGIS writing outputs of later tasks without their CRS (the README's In
    QGIS says what is left). Call it on the GUI thread."""
    pool = QThreadPool.globalInstance()   # the one QGIS's task manager runs tasks in
    free_thread = pool.activeThreadCount() < pool.maxThreadCount()
    QgsApplication.taskManager().addTask(task)
    deadline = time.monotonic() + HANDOVER_S
    # status() leaves Queued in the pool thread, as it takes the task (QgsTask::start); a
    # task cancelled before it ran needs no thread
    while (free_thread and task.status() == QgsTask.TaskStatus.Queued and not task.isCanceled()
           and time.monotonic() < deadline):
        time.sleep(0.0005)


def log_line(level: str, text: str) -> None:
    """An ``info`` or ``warning`` line of a backend run."""
    shown_as = Qgis.MessageLevel.Warning if level == "warning" else Qgis.MessageLevel.Info
    QgsMessageLog.logMessage(text, TAG, shown_as)


def log_failure(what: str, outcome: Outcome) -> None:
    """A failed backend run: its message, then what the backend wrote to stderr and its command."""
    text = f"{what} failed: {outcome.error or 'the backend failed'}"
    details = failure_details(outcome)
    QgsMessageLog.logMessage(f"{text}\n{details}" if details else text, TAG, Qgis.MessageLevel.Critical)


def failure_details(outcome: Outcome) -> str:
    """The first and last lines the backend wrote to stderr, and the command that ran it."""
    parts = []
    if outcome.stderr:
        parts.append("The backend's error output:\n" + "\n".join(outcome.stderr))
    if outcome.command:
        parts.append(f"The command:\n{outcome.command}")
    return "\n".join(parts)


class BackendTask(QgsTask):
    """Runs ``python -m backend <args>``; emits ``done(Outcome)`` on the GUI thread."""

    message = pyqtSignal(str, str)  # level ("info" | "warning"), text
    done = pyqtSignal(object)       # Outcome

    def __init__(self, description: str, args: list[str], python_setting: str | None = None):
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.args = args
        self.python_setting = python_setting
        self.interpreter: Interpreter | None = None
        self.outcome = Outcome()
        # connected here: delivered on the GUI thread; each line names its run (two may log
        # at once, a map and an Accept)
        run_name = description.removeprefix(f"{TAG}: ")
        self.message.connect(lambda level, text: log_line(level, f"[{run_name}] {text}"))

    def run(self) -> bool:  # worker thread
        try:
            return self._run()
        except Exception as exc:  # noqa: BLE001 - a bug of ours: said as such, its traceback logged
            QgsMessageLog.logMessage(f"{self.description()}:\n{traceback.format_exc()}", TAG,
                                     Qgis.MessageLevel.Critical)
            self.outcome.error = (f"internal error in the plugin, please report it with the "
                                  f"details in {LOG_PANEL}: {type(exc).__name__}: {exc}")
            return False

    def _run(self) -> bool:
        self.interpreter = find_interpreter(self.python_setting)
        if not self.interpreter.ok:
            self.outcome.error = self.interpreter.problem()
            # the installer fills its own venv: no help for a chosen Python that fails
            self.outcome.error_kind = "BadInterpreter" if self.interpreter.unusable else "MissingDependency"
            return False
        run = BackendProcess(self.interpreter, self.args)
        # the command a report needs: a run in a terminal, the same run
        self.message.emit("info", f"the command:\n{run.command}")
        self.outcome = run.run(self._on_event, self.isCanceled)
        return self.outcome.ok

    def _on_event(self, event: dict[str, Any]) -> None:  # worker thread
        kind = event.get("event")
        if kind == "progress":
            self.setProgress(100.0 * float(event.get("fraction", 0.0)))
        elif kind in ("info", "warning"):
            self.message.emit(kind, str(event.get("message", "")))

    def finished(self, result: bool) -> None:  # GUI thread
        # a cancel that came after the backend had written its outputs (or had ended) leaves
        # a complete, successful run: only one that stopped it counts as cancelled
        if self.isCanceled() and self.outcome.ok:
            self.outcome.cancel_came_late = True
        elif self.isCanceled():
            self.outcome.cancelled = True
            self.outcome.result = None
        elif not self.outcome.ok:
            log_failure(self.description(), self.outcome)
        self.done.emit(self.outcome)


class QueryTask(QgsTask):
    """Runs a quick backend command that prints JSON (model card, devices) off the GUI thread.

    Emits ``done(answer, error)``: the decoded JSON and None, or None and a message.
    """

    done = pyqtSignal(object, object)

    def __init__(self, description: str, args: list[str], python_setting: str | None = None):
        super().__init__(description, QgsTask.Flags())
        self.args = args
        self.python_setting = python_setting
        self.answer: Any = None
        self.error: str | None = None
        self.interpreter: Interpreter | None = None

    def run(self) -> bool:  # worker thread
        try:
            self.interpreter = find_interpreter(self.python_setting)
            if not self.interpreter.ok:
                self.error = self.interpreter.problem()
                return False
            self.answer = query_json(self.interpreter, self.args)
        except QueryError as exc:
            self.error = str(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - raised here, it left the dialog waiting for an answer
            self.error = f"{self.description()} failed: {type(exc).__name__}: {exc}"
            return False
        return True

    def finished(self, result: bool) -> None:  # GUI thread
        # the answerers read an answer or an error: never leave them with neither
        if self.answer is None and self.error is None:
            self.error = f"{self.description()}: the backend gave no answer"
        self.done.emit(self.answer, self.error)


class CorrectionsTask(QgsTask):
    """Writes an analyst's correction polygons to GeoJSON off the GUI thread: a layer of
    tens of thousands of polygons (a permanent-water layer chosen as corrections) held
    QGIS for seconds. ``layer`` must be the task's own (:func:`~.layers.private_copy`).

    Emits ``done(error)``: None once written, or the message.
    """

    done = pyqtSignal(object)

    def __init__(self, layer, label: str, path: str):
        super().__init__("SAR Flood Mapper: corrections", QgsTask.Flags())
        self.layer, self.label, self.path = layer, label, path
        self.error: str | None = None

    def run(self) -> bool:  # worker thread
        from .corrections import FIELD, CorrectionsProblem, write_geojson
        try:
            write_geojson(self.layer.getFeatures(), self.layer.crs(), FIELD, self.label,
                          self.path)
        except CorrectionsProblem as problem:
            self.error = str(problem)
            return False
        return True

    def finished(self, result: bool) -> None:  # GUI thread
        self.done.emit(None if result else self.error or f"{self.label}: could not be written")
