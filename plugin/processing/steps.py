"""The child steps of an algorithm built from QGIS algorithms: their progress and their files.

The children report to one QgsProcessingMultiStepFeedback over the caller's feedback,
so the run's progress only rises: given the caller's own, each child restarted it at
0, and in batch mode the bar ran backwards. Each step's file is named here, before its
child runs, and removed however the run ends: a full scene's intermediate rasters and
GeoPackages otherwise stayed in Processing's folder until QGIS exited, one set per run.

The steps' layers are freed on the main thread only (:func:`free_layers`): a run as a task
leaves them to its context, and its algorithm's postProcessAlgorithm frees them once the
run is back in the main thread. PyQt keeps a set of the QObjects made by C++ that Python
has wrapped (its PyQtMonitor, which marks a wrapper dead when its object goes). A wrapped
layer deleted on a worker thread has its end handled in the main thread's event loop,
where PyQt changes that set without holding Python's lock, while the worker thread,
holding it, changes the same set as it wraps and drops layers: the main thread crashed in
that set (a segfault, seen three times in test runs, once in CI).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from qgis.core import QgsProcessingMultiStepFeedback, QgsProcessingUtils
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QThread


def free_layers(context, wanted) -> None:
    """Free the layers of ``context``'s temporary store for which ``wanted(layer)`` holds,
    when called on the main thread. On a worker thread (a run as a QGIS task) nothing is
    touched: the layers stay with the context, which QGIS hands back to the main thread
    at the end of the run, and are freed with it there (see the module's docstring)."""
    if QThread.currentThread() != QCoreApplication.instance().thread():
        return
    store = context.temporaryLayerStore()
    for layer in list(store.mapLayers().values()):
        if wanted(layer):
            store.removeMapLayer(layer.id())


def remove_steps(context, paths: list[str]) -> None:
    """Free the layers of the step files ``paths`` in ``context`` (on the main thread) and
    remove their folders: on Linux and macOS a file still open goes when its layer is
    freed; on Windows it stays."""
    free_layers(context, lambda layer: layer.source().split("|")[0] in paths)
    temp = Path(QgsProcessingUtils.tempFolder()).resolve()
    for path in paths:
        folder = Path(path).resolve().parent
        if folder.parent == temp:   # never anything but a step's own folder
            shutil.rmtree(folder, ignore_errors=True)   # Windows: a file still open stays


class Steps:
    """``with Steps(count, context, feedback, paths) as steps:`` ``steps.at(i)`` is the
    feedback to give step ``i`` (of ``count``), ``steps.file(name)`` a file for a step to
    write, named in ``paths`` too: a run on a worker thread leaves the steps' layers to its
    context, and its algorithm's postProcessAlgorithm (main thread) calls
    :func:`remove_steps` with them."""

    def __init__(self, count: int, context, feedback, paths: list[str]):
        self.context = context
        self.count = count
        self.paths = paths   # each in a folder of its own
        self.feedback = QgsProcessingMultiStepFeedback(count, feedback)
        if feedback.isCanceled():   # it follows the caller's cancels from now on only
            self.feedback.cancel()

    def __enter__(self) -> "Steps":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # all ran: the bar ends full (a last child that reports less than its end, as one
        # on a few features does, left it at 87.5 %)
        if exc_type is None:
            self.feedback.setCurrentStep(self.count)
        try:
            remove_steps(self.context, self.paths)
        finally:
            # freed now, in the thread that made it, which drops what was queued to it:
            # kept past the run, it passed a gdal step's queued progress on to the caller's
            # feedback after the run, which may have freed that feedback by then
            sip.delete(self.feedback)

    def at(self, step: int) -> QgsProcessingMultiStepFeedback:
        # on the main thread a gdal step's progress comes queued (from the thread reading
        # gdal's output), delivered when the main thread next processes events: counted in
        # the next step's share, it ran past it and then back
        QCoreApplication.removePostedEvents(self.feedback, QEvent.Type.MetaCall)
        self.feedback.setCurrentStep(step)
        return self.feedback

    def file(self, name: str) -> str:
        # named before the child runs: a step failed or cancelled while writing goes too
        self.paths.append(QgsProcessingUtils.generateTempFilename(name))
        return self.paths[-1]

