"""A QgsTask that runs one backend command, so the GUI never waits on it.

QGIS runs ``run()`` in its task thread pool: the interpreter check and the child
process live there. Progress goes through ``setProgress`` (shown in the task bar);
info and warning lines arrive on the ``message`` signal, and ``finished`` is
delivered on the GUI thread, where ``done`` is emitted with the outcome.
"""
from __future__ import annotations

from typing import Any

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .backend_env import Interpreter, find_interpreter
from .backend_process import BackendProcess, Outcome, QueryError, query_json


class BackendTask(QgsTask):
    """Runs ``python -m backend <args>``; emits ``done(Outcome)`` on the GUI thread."""

    message = pyqtSignal(str, str)  # level ("info" | "warning"), text
    done = pyqtSignal(object)       # Outcome

    def __init__(self, description: str, args: list[str], python_setting: str | None = None):
        super().__init__(description, QgsTask.CanCancel)
        self.args = args
        self.python_setting = python_setting
        self.interpreter: Interpreter | None = None
        self.outcome = Outcome()

    def run(self) -> bool:  # worker thread
        self.interpreter = find_interpreter(self.python_setting)
        if not self.interpreter.ok:
            self.outcome.error = self.interpreter.problem()
            self.outcome.error_kind = "MissingDependency"
            return False
        self.outcome = BackendProcess(self.interpreter, self.args).run(self._on_event, self.isCanceled)
        return self.outcome.ok

    def _on_event(self, event: dict[str, Any]) -> None:  # worker thread
        kind = event.get("event")
        if kind == "progress":
            self.setProgress(100.0 * float(event.get("fraction", 0.0)))
        elif kind in ("info", "warning"):
            self.message.emit(kind, str(event.get("message", "")))

    def finished(self, result: bool) -> None:  # GUI thread
        if self.isCanceled():
            self.outcome.cancelled = True
            self.outcome.result = None
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
        self.interpreter = find_interpreter(self.python_setting)
        if not self.interpreter.ok:
            self.error = self.interpreter.problem()
            return False
        try:
            self.answer = query_json(self.interpreter, self.args)
        except QueryError as exc:
            self.error = str(exc)
            return False
        return True

    def finished(self, result: bool) -> None:  # GUI thread
        self.done.emit(self.answer, self.error)
