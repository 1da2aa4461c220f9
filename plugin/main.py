"""The plugin object QGIS creates: actions, menu, review dock and the Processing provider.

QGIS calls ``initProcessing`` (also in qgis_process, which never calls ``initGui``),
then ``initGui`` in the desktop, and ``unload`` when the plugin is switched off or
reloaded; ``unload`` removes everything the other two added.
"""
from __future__ import annotations

import time

from qgis.core import QgsApplication, QgsProcessingAlgRunnerTask
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction  # in QtGui on Qt6; QGIS 4's qgis.PyQt.QtWidgets still has it

from . import backend_env
from .controller import RunController
from .gui.install_dialog import InstallDialog
from .gui.review_dock import ReviewDock
from .gui.run_dialog import RunDialog
from .layers import free_copies_let_go
from .processing import base as processing_base
from .processing import review as processing_review
from .processing.provider import ICON, SarFloodProvider

MENU = "&SAR Flood Mapper"
STOP_WAIT_S = 10.0   # a cancelled run stops its backend child in well under a second


class SarFloodPlugin:

    def __init__(self, iface):
        self.iface = iface
        backend_env.use_profile(QgsApplication.qgisSettingsDirPath())   # the installer's venv
        self.provider: SarFloodProvider | None = None
        self.actions: list[QAction] = []
        self.dock: ReviewDock | None = None
        self.dialog: RunDialog | None = None
        self.installer: InstallDialog | None = None
        self.controller: RunController | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        if self.provider is None:
            self.provider = SarFloodProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS's name)
        self.initProcessing()
        window = self.iface.mainWindow()
        icon = QIcon(str(ICON))
        run = QAction(icon, "Map flood water...", window)
        run.setObjectName("SarFloodRunAction")
        run.setToolTip("Map flood water from Sentinel-1 VV/VH with a learned model")
        run.triggered.connect(self.show_dialog)
        self.dock = ReviewDock(self.iface, window)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        review = self.dock.toggleViewAction()
        review.setText("Flood review panel")
        review.setObjectName("SarFloodReviewAction")
        self.controller = RunController(self.iface, self.dock)
        processing_review.reviewer = self.dock.review_processing_run   # the Toolbox's runs too
        self.iface.addToolBarIcon(run)
        for action in (run, review):
            self.iface.addPluginToRasterMenu(MENU, action)
        self.actions = [run, review]

    def show_dialog(self) -> RunDialog:
        if self.dialog is None:
            self.dialog = RunDialog(self.iface, self.iface.mainWindow())
            self.dialog.runRequested.connect(lambda request: self.controller.start(request, self.dialog))
            self.dialog.cancelRequested.connect(self.controller.cancel)
            self.dialog.installRequested.connect(self.show_installer)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def show_installer(self) -> InstallDialog:
        if self.installer is None:
            self.installer = InstallDialog([], self.iface.mainWindow())
            if self.dialog is not None:
                self.installer.installed.connect(lambda ok: ok and self.dialog.refresh_backend())
        if not self.installer.running:   # planned again: the venv, or the system, may have changed
            plan = backend_env.install_plan(backend_env.system_python() or "python3")
            self.installer.set_plan(plan.steps, plan.blocker)
        self.installer.show()
        return self.installer

    def unload(self) -> None:
        if self.controller is not None:
            self.controller.cancel()
            self.controller.close()
        processing_review.reviewer = None
        if self.dock is not None:   # an Accept in flight would write its file unseen
            self.dock.cancel_tasks()
            self.dock.detach()
        run = self.actions[0] if self.actions else None
        if run is not None:
            self.iface.removeToolBarIcon(run)
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        if run is not None:
            run.deleteLater()  # the review action belongs to the dock
        self.actions = []
        for widget in (self.dialog, self.installer):
            if widget is not None:
                widget.close()
                widget.deleteLater()
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        self.dialog = self.installer = self.dock = self.controller = None
        if self.provider is not None:
            processing_base.STOPPING.set()
            self._stop_processing_runs()
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        free_copies_let_go()

    def _stop_processing_runs(self) -> None:
        """Cancel the Processing runs of this provider's algorithms (the toolbox runs them as
        tasks) and wait, up to ``STOP_WAIT_S``, until QGIS has handled their end. QGIS
        deletes a removed provider at once, while a run's algorithm, and the dialog that
        handles its results when it ends, still read it: unloaded mid-run, QGIS crashed."""
        manager = QgsApplication.taskManager()
        names = [algorithm.displayName() for algorithm in self.provider.algorithms()]
        ids = [manager.taskId(task) for task in manager.activeTasks()
               if isinstance(task, QgsProcessingAlgRunnerTask)
               and any(name in task.description() for name in names)]
        for task in filter(None, map(manager.task, ids)):
            task.cancel()
        deadline = time.monotonic() + STOP_WAIT_S
        # by id: the manager deletes a task once its end is handled
        while any(manager.task(i) is not None for i in ids) and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
