"""From "Run" in the dialog to styled layers on the map.

The controller starts a :class:`~.task.BackendTask` in QGIS's task manager (so
progress shows in the task bar and QGIS stays responsive), mirrors progress and
messages into the dialog, and when the task ends: adds the outputs as a layer
group, puts a summary in the message bar and hands the run to the review dock; unless
the project was closed or another opened meanwhile: then nothing goes into the project
open now, and the message says where the files are.
"""
from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .backend_env import install_target
from .backend_process import Outcome
from .gui.message_text import push_message
from .gui.review_dock import ReviewDock, ReviewRun
from .gui.run_dialog import RunDialog, RunRequest, units_source_text
from .layers import LayerError, ProjectWatch, add_run_layers, in_qgis_temporary_folder
from .settings import python_setting
from .summary import run_summary
from .task import TAG, BackendTask, add_task, failure_details


class RunController(QObject):
    """Runs one map-water request at a time; ``finished`` carries the ReviewRun or None."""

    finished = pyqtSignal(object)

    def __init__(self, iface, dock: ReviewDock):
        super().__init__()
        self.iface = iface
        self.dock = dock
        self.task: BackendTask | None = None
        self.project_watch = ProjectWatch()

    def close(self) -> None:
        """Stop following the project (the plugin is being unloaded)."""
        self.project_watch.close()

    def start(self, request: RunRequest, dialog: RunDialog) -> None:
        if self.task is not None:
            dialog.show_status("A run is in progress: wait for it or cancel it", error=True)
            return
        task = BackendTask(f"{TAG}: {request.title}", request.params.argv(), python_setting())
        task.progressChanged.connect(lambda percent: sip.isdeleted(dialog) or dialog.set_progress(percent))
        task.message.connect(lambda level, text: self._message(dialog, level, text))
        started = self.project_watch.count
        task.done.connect(lambda outcome: self._done(request, dialog, outcome, started))
        self.task = task
        dialog.set_running(True)
        dialog.show_status("Running in the background; QGIS stays usable.")
        add_task(task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _message(self, dialog: RunDialog, level: str, text: str) -> None:
        if level == "warning" and not sip.isdeleted(dialog):
            dialog.show_status(f"Warning: {text}")

    def _done(self, request: RunRequest, dialog: RunDialog, outcome: Outcome, started: int) -> None:
        self.task = None
        if sip.isdeleted(dialog) or sip.isdeleted(self.dock):
            # the plugin was unloaded during the run (which unload cancelled): only the log is left
            QgsMessageLog.logMessage(unloaded_text(request.title, outcome), TAG, Qgis.MessageLevel.Warning)
            return
        dialog.set_running(False)
        if not outcome.ok:   # cancelled or failed: no bar left standing at 29 %
            dialog.set_progress(0)
        bar = self.iface.messageBar()
        if outcome.cancelled:
            dialog.show_status("Cancelled: the backend stopped and left no output.")
            push_message(bar, "Run cancelled; no output was written.", level=Qgis.MessageLevel.Info, duration=5)
            self.finished.emit(None)
            return
        if not outcome.ok:
            dialog.show_status(outcome.error or "the backend failed", error=True)
            # the installer fills its own venv, where it can write one; a Python chosen in
            # the settings bypasses it
            dialog.install_button.setVisible(outcome.error_kind == "MissingDependency"
                                             and python_setting() is None
                                             and install_target() is not None)
            error, details = outcome.error or "the backend failed", failure_details(outcome)
            if details:   # "Show more": what a report needs, also in the Log Messages panel
                push_message(bar, error, details, Qgis.MessageLevel.Critical)
            else:
                push_message(bar, error, level=Qgis.MessageLevel.Critical)
            self.finished.emit(None)
            return
        result = outcome.result
        if started != self.project_watch.count:
            # its layers and message belong to the project the run started in, which is gone
            text = project_changed_text(result["outputs"])
            dialog.show_status(text, error=True)
            push_message(bar, text, level=Qgis.MessageLevel.Warning)
            self.finished.emit(None)
            return
        if int(result["valid_pixels"]) == 0:
            # an all-no-data map has nothing to review: say why instead of adding empty
            # layers, and where the (all no data) files went, so they are not left unknown
            written = [p for p in result["outputs"].values() if p]
            text = ("; ".join(outcome.warnings) or "the input has no valid pixel") + (
                "; not added to the map: " + ", ".join(written) if written else "")
            dialog.show_status(text, error=True)
            push_message(bar, text, level=Qgis.MessageLevel.Warning)
            self.finished.emit(None)
            return
        try:
            layers = add_run_layers(request.title, result["outputs"])
        except LayerError as exc:
            dialog.show_status(str(exc), error=True)
            push_message(bar, str(exc), level=Qgis.MessageLevel.Critical)
            self.finished.emit(None)
            return
        summary = run_summary(result, outcome.seconds)
        dialog.set_progress(100)
        source = units_source_text(result["units_source"])
        done = f"Done: {summary}; input units {result['units_detected']}" + (f" ({source})" if source else "")
        if outcome.cancel_came_late:
            summary = f"{LATE_CANCEL} {summary}"
            done = f"{LATE_CANCEL}\n{done}"
        if outcome.warnings:
            # a map made with warnings (VV and VH swapped?) must not look like a clean one
            dialog.show_status("\n".join([done] + [f"Warning: {w}" for w in outcome.warnings]),
                               error=True)
            push_message(bar, f"{summary}. Warning: {' '.join(outcome.warnings)}",
                         level=Qgis.MessageLevel.Warning)
        else:
            dialog.show_status(done)
            push_message(bar, summary, level=Qgis.MessageLevel.Success, duration=15)
        run = ReviewRun(layers, result, request.params, request.scene_layer_id)
        self.dock.set_run(run)
        self.dock.show()
        self.finished.emit(run)


def unloaded_text(title: str, outcome: Outcome) -> str:
    """What a run that ended after the plugin was unloaded (switched off or reloaded) says."""
    text = f"{title}: the plugin was unloaded during the run, which "
    if not outcome.ok:
        return text + "stopped it; no output was written"
    written = [path for path in outcome.result["outputs"].values() if path]
    return text + "had finished; its files were not added to the map: " + ", ".join(written)


LATE_CANCEL = "The cancel came too late: the run had finished, so its outputs are kept and added."


def project_changed_text(outputs: dict[str, str | None]) -> str:
    """What a run that ended after its project was closed (or another opened) says: nothing
    was added to the project open now, and where its files are."""
    written = [path for path in outputs.values() if path]
    text = ("The project was closed or another one opened during the run: its layers were not "
            "added to this project. Its files: " + ", ".join(written))
    if any(in_qgis_temporary_folder(path) for path in written):
        text += " (in QGIS's temporary folder, deleted when QGIS closes)"
    return text
