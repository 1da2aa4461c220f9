"""The base of every sarflood algorithm: identity from class attributes, child runs, backend runs,
output styles."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (QgsFeatureRequest, QgsMapLayer, QgsProcessingAlgorithm,
                       QgsProcessingException, QgsProcessingFeatureSourceDefinition,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterMapLayer,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorLayer,
                       QgsProcessingUtils, QgsProperty, QgsRasterLayer, QgsReferencedRectangle,
                       QgsVectorFileWriter)

from ..backend_env import find_interpreter
from ..backend_process import BackendProcess
from ..settings import python_setting
from ..layers import private_copy, take_copies

GROUPS = {"mapping": "Water mapping", "analysis": "Flood analysis"}
_HINTS = ((QgsProcessingParameterRasterLayer, QgsProcessingUtils.LayerHint.Raster),
          (QgsProcessingParameterFeatureSource, QgsProcessingUtils.LayerHint.Vector),
          (QgsProcessingParameterVectorLayer, QgsProcessingUtils.LayerHint.Vector),
          (QgsProcessingParameterMapLayer, QgsProcessingUtils.LayerHint.UnknownType))


def project_layer(value, context, hint=QgsProcessingUtils.LayerHint.UnknownType) -> QgsMapLayer | None:
    """The project layer a parameter value names (an id, a path, a name, a layer object or
    a feature source definition of one), as Processing resolves it; None for anything else
    (a file no project layer shows, a layer of the caller's own). Nothing is opened."""
    if isinstance(value, QgsProcessingFeatureSourceDefinition):
        value = value.source
    if isinstance(value, QgsProperty):
        value = value.valueAsString(context.expressionContext(), "")
        value = value[0] if isinstance(value, tuple) else value   # (text, ok) in PyQGIS
    if isinstance(value, str) and value:
        value = QgsProcessingUtils.mapLayerFromString(value, context, False, hint)
    if isinstance(value, QgsMapLayer) and value.project() is not None:
        return value
    return None


def own_inputs(algorithm: QgsProcessingAlgorithm, parameters: dict, context) -> dict[str, Any]:
    """For each input of ``algorithm`` that names a project layer, a value naming what the
    algorithm may read on a worker thread instead: a private copy of the layer (one per
    layer, so that two inputs naming one layer still name one layer), or for an extent
    taken from a layer, that extent. Call it in the main thread."""
    own: dict[str, Any] = {}
    copies: dict[tuple, QgsMapLayer] = {}
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        value = parameters.get(name)
        if isinstance(definition, QgsProcessingParameterExtent):
            layer = project_layer(value, context)
            if layer is not None:
                own[name] = QgsReferencedRectangle(layer.extent(), layer.crs())
            continue
        hint = next((h for kind, h in _HINTS if isinstance(definition, kind)), None)
        layer = None if hint is None else project_layer(value, context, hint)
        if layer is None:
            continue
        request, key = None, (layer.id(),)
        if isinstance(value, QgsProcessingFeatureSourceDefinition) and (
                value.selectedFeaturesOnly or value.featureLimit >= 0):
            request = QgsFeatureRequest()
            if value.selectedFeaturesOnly:
                request.setFilterFids(layer.selectedFeatureIds())
            if value.featureLimit >= 0:
                request.setLimit(value.featureLimit)
            key = (layer.id(), value.selectedFeaturesOnly, value.featureLimit)
        if key not in copies:
            copies[key] = private_copy(layer, request)
        own[name] = copies[key]
    return own


class RendererPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a raster output when Processing loads it into the project."""

    alive: list["RendererPostProcessor"] = []  # Processing holds a bare pointer: Python keeps the object

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            layer.setRenderer(self.factory(layer.dataProvider()))
            layer.triggerRepaint()


class SarFloodAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ``ID`` (the part after ``sarflood:``), ``TITLE``, ``GROUP_ID`` and ``HELP``."""
    ID = ""
    TITLE = ""
    GROUP_ID = "mapping"
    HELP = ""

    def name(self) -> str:
        return self.ID

    def displayName(self) -> str:
        return self.TITLE

    def group(self) -> str:
        return GROUPS[self.GROUP_ID]

    def groupId(self) -> str:
        return self.GROUP_ID

    def shortHelpString(self) -> str:
        return self.HELP

    def createInstance(self):
        return type(self)()

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 (QGIS's name)
        """Runs in the thread of ``context``, before ``processAlgorithm``: in the main thread
        when the Processing toolbox or the review dock runs the algorithm as a task, whose
        ``processAlgorithm`` then runs in a worker thread with the project on its context.
        There a layer id or path would resolve to the project's own layer object, which the
        main thread draws, edits and deletes meanwhile; so the project layers named by the
        inputs are copied here (:func:`own_inputs`), and ``processAlgorithm`` reads its
        parameters through :meth:`inputs`. Inputs are checked by ``processAlgorithm``, whose
        messages reach the caller as they are (Processing words failures of this step its own way).
        Not covered: as a child of a Graphical Modeler model this runs on the model's worker
        thread too (QGIS prepares children there), so the copy is made there."""
        self._own_inputs = own_inputs(self, parameters, context)
        return True

    def inputs(self, parameters: dict) -> dict:
        """``parameters`` with each project layer replaced by the copy ``prepareAlgorithm``
        made: what ``processAlgorithm`` reads, and hands its child algorithms. Copies are
        taken into the calling thread."""
        own = {**parameters, **getattr(self, "_own_inputs", {})}
        take_copies(own.values())
        return own

    def postProcessAlgorithm(self, context, feedback) -> dict:  # noqa: N802 (QGIS's name)
        """Back in the main thread after a successful run: the copies are freed here."""
        self._own_inputs = {}
        return {}

    @staticmethod
    def run_child(label: str, alg: str, params: dict, context, feedback) -> dict:
        """Run a QGIS algorithm as a child, after checking for cancel.

        Children get the caller's own feedback: a QgsProcessingMultiStepFeedback made here
        would be freed while gdal algorithms still deliver queued output to it (a crash).
        """
        import processing  # QGIS's Processing plugin; importable once QGIS has started

        if feedback.isCanceled():
            raise QgsProcessingException("cancelled")
        feedback.setProgressText(label)
        return processing.run(alg, params, context=context, feedback=feedback, is_child_algorithm=True)

    @staticmethod
    def backend_interpreter():
        """The backend's Python, checked (cached after the first check); else why not."""
        interpreter = find_interpreter(python_setting())
        if not interpreter.ok:
            raise QgsProcessingException(interpreter.problem())
        return interpreter

    def run_backend(self, args: list[str], feedback) -> dict[str, Any]:
        """Run one backend command; progress and messages go to ``feedback``.

        Processing already runs ``processAlgorithm`` in a worker thread, so the child
        process is driven synchronously here, polling ``feedback.isCanceled()``.
        """
        interpreter = self.backend_interpreter()
        feedback.pushInfo(f"backend: {interpreter.path} -m backend {' '.join(args)}")

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "progress":
                feedback.setProgress(100.0 * float(event.get("fraction", 0.0)))
            elif kind == "info":
                feedback.pushInfo(str(event.get("message", "")))
            elif kind == "warning":
                feedback.pushWarning(str(event.get("message", "")))

        outcome = BackendProcess(interpreter, args).run(on_event, feedback.isCanceled)
        if outcome.cancelled:
            raise QgsProcessingException("cancelled: the backend was stopped and wrote no output")
        if not outcome.ok:
            if outcome.stderr:   # an internal error's traceback, which its message asks for
                feedback.reportError("The backend's last error output:\n"
                                     + "\n".join(outcome.stderr), False)
            raise QgsProcessingException(outcome.error or "the backend failed")
        if outcome.cancel_came_late:
            written = [path for path in (outcome.result.get("outputs") or {}).values() if path]
            feedback.pushWarning("The cancel came too late: the backend had finished, and its "
                                 "outputs are complete and kept" +
                                 (": " + ", ".join(written) if written else ""))
        return outcome.result

    @staticmethod
    def check_destination(path: str, name: str, inputs: list) -> None:
        """Refuse, before any work, a raster destination that is not a GeoTIFF, that is one
        of the ``inputs`` (layers; replacing one would lose it), or that cannot be written."""
        if not path.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(f"{name}: {path} must be a GeoTIFF (.tif)")
        real = os.path.realpath(path)
        for layer in inputs:
            if layer is not None and os.path.realpath(layer.source().split("|")[0]) == real:
                raise QgsProcessingException(f"{name}: {path} is the input '{layer.name()}'; "
                                             f"choose another path")
        folder = os.path.dirname(real)
        try:  # os.access is no proof (root, read-only mounts): try it
            fd, probe = tempfile.mkstemp(prefix=".sarflood-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise QgsProcessingException(f"{name}: cannot write {path} "
                                         f"({exc.strerror or exc})") from None

    @staticmethod
    def remove_vector_output(destination: str) -> None:
        """Delete what a cancelled run wrote to a vector destination that is a plain file
        path (Processing replaces such a file whole). A destination inside a data source
        (``ogr:dbname=... table=...``, a memory layer) is left alone: it may hold other layers."""
        if not destination or not os.path.isfile(destination):
            return
        if destination.lower().endswith(".shp"):
            QgsVectorFileWriter.deleteShapeFile(destination)  # with its .dbf, .shx, .prj...
            return
        for suffix in ("", "-wal", "-shm", "-journal"):   # a GeoPackage's SQLite files
            Path(destination + suffix).unlink(missing_ok=True)

    @staticmethod
    def style_output(context, path: str, renderer_factory) -> None:
        """Give ``path`` the plugin's style if Processing will load it when the run ends."""
        if path and context.willLoadLayerOnCompletion(path):
            processor = RendererPostProcessor(renderer_factory)
            RendererPostProcessor.alive.append(processor)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
