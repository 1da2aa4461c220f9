"""Create the backend's venv and install its packages, showing the installer's own output.

The commands run one after the other as QProcess children (asynchronous: QGIS
stays responsive during a download); their merged stdout/stderr scrolls in the
dialog. The dialog shows the exact commands first, so a user can also run them
in a terminal.
"""
from __future__ import annotations

from qgis.PyQt.QtCore import QProcess, pyqtSignal
from qgis.PyQt.QtGui import QFont, QTextCursor
from qgis.PyQt.QtWidgets import (QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                                 QVBoxLayout, QWidget)

from ..backend_env import PLUGIN_ROOT, TERMINAL, child_env, forget_checks, shell_join


class InstallDialog(QDialog):
    """Runs ``steps`` (argv lists) in order; emits ``installed(ok)`` when all ran or one failed."""

    installed = pyqtSignal(bool)

    def __init__(self, steps: list[list[str]], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("SAR Flood Mapper: install the backend's dependencies")
        self.setObjectName("SarFloodInstallDialog")
        self._next = 0
        self._process: QProcess | None = None
        self.succeeded: bool | None = None
        layout = QVBoxLayout(self)
        intro = QLabel(f"These commands will run (you can also run them in {TERMINAL}):")
        self.commands = QPlainTextEdit()
        self.commands.setReadOnly(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(QFont("monospace"))
        self.state = QLabel("")
        self.state.setWordWrap(True)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Install")
        self.close_button = QPushButton("Close")
        buttons.addStretch()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.close_button)
        # the commands whole before Install (a venv path wraps over two lines), the output below
        for widget, stretch in ((intro, 0), (self.commands, 1), (self.log, 1), (self.state, 0)):
            layout.addWidget(widget, stretch)
        layout.addLayout(buttons)
        self.start_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.close)
        self.resize(760, 560)
        self.set_plan(steps)

    def set_plan(self, steps: list[list[str]], blocker: str = "") -> None:
        """Show ``steps``; with a ``blocker`` (what the user must do first, e.g. install Debian's
        python3-venv) they cannot start."""
        self.steps = steps
        self.commands.setPlainText("\n".join(map(shell_join, steps)))
        self.state.setText(blocker)
        self.start_button.setEnabled(not blocker)

    @property
    def running(self) -> bool:
        return self._next > 0 and self.succeeded is None

    def start(self) -> None:
        self.start_button.setEnabled(False)
        self.succeeded = None
        self._next = 0
        self._run_next()

    def _run_next(self) -> None:
        if self._next == len(self.steps):
            self._finish(True)
            return
        argv = self.steps[self._next]
        self._next += 1
        self.log.appendPlainText(f"$ {shell_join(argv)}\n")   # its output starts on a line of its own
        self.state.setText(f"step {self._next} of {len(self.steps)} running...")
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.setWorkingDirectory(str(PLUGIN_ROOT))
        env = process.processEnvironment()
        env.clear()
        for key, value in child_env().items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        process.readyReadStandardOutput.connect(self._read)
        process.finished.connect(self._step_finished)
        process.errorOccurred.connect(self._failed_to_start)
        self._process = process
        process.start(argv[0], argv[1:])

    def _read(self) -> None:
        text = bytes(self._process.readAllStandardOutput()).decode(errors="replace")
        self.log.moveCursor(QTextCursor.MoveOperation.End)   # not where the user clicked
        self.log.insertPlainText(text)
        self.log.ensureCursorVisible()

    def _failed_to_start(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.log.appendPlainText(f"could not start {self._process.program()}: {self._process.errorString()}")
            self._finish(False)

    def _step_finished(self, code: int, status) -> None:
        self._read()
        if status != QProcess.ExitStatus.NormalExit or code != 0:
            self.log.appendPlainText(f"exit code {code}")
            self._finish(False)
            return
        self._run_next()

    def _finish(self, ok: bool) -> None:
        if self.succeeded is not None:
            return
        self.succeeded = ok
        forget_checks()  # the next run checks the interpreter again
        self.state.setText("Done: the backend's dependencies are installed." if ok
                           else "Failed: see the output above.")
        self.start_button.setEnabled(True)
        self.installed.emit(ok)
