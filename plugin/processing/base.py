"""The base of every sarflood algorithm: identity from class attributes, child runs, backend runs,
output styles."""
from __future__ import annotations

import functools
import os
import tempfile
import threading
import traceback
from typing import Any

from qgis.core import (QgsFeatureRequest, QgsMapLayer, QgsProcessingAlgorithm,
                       QgsProcessingException, QgsProcessingFeatureSource,
                       QgsProcessingFeatureSourceDefinition,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingParameterDefinition,
                       QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterMapLayer,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorLayer,
                       QgsProcessingUtils, QgsProperty, QgsRasterLayer, QgsReferencedRectangle,
                       QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes)

from ..backend_env import find_interpreter
from ..backend_process import BackendProcess
from ..settings import python_setting
from ..layers import let_go_of_copies, private_copy, take_copies
from ..outputs import is_plain_file, remove_stale
from ..review_run import layer_file
from .steps import remove_steps

# set when the plugin unloads, cleared by a new provider: a run inside a Graphical Modeler
# model, whose task is named after the model (unload cannot tell it from another plugin's),
# stops its backend too
STOPPING = threading.Event()

GROUPS = {"mapping": "Water mapping", "analysis": "Flood analysis"}
_HINTS = ((QgsProcessingParameterRasterLayer, QgsProcessingUtils.LayerHint.Raster),
          (QgsProcessingParameterFeatureSource, QgsProcessingUtils.LayerHint.Vector),
          (QgsProcessingParameterVectorLayer, QgsProcessingUtils.LayerHint.Vector),
          (QgsProcessingParameterMapLayer, QgsProcessingUtils.LayerHint.UnknownType))


def frees_inputs(process_algorithm):
    """For ``processAlgorithm``: the copies of project layers it read (:meth:`SarFloodAlgorithm.inputs`)
    are freed as it ends, in the main thread (:func:`~..layers.let_go_of_copies`: freed on a
    worker thread, a copy could crash QGIS). When it fails, the locals of its frames (and of
    the frames of the errors it chained) are cleared first: an error's traceback holds its
    frames, their locals the copies, in a cycle with the frames of Processing's own Python
    that only the cyclic collector breaks, whenever it next runs: a copy freed then
    (possibly at QGIS's exit, after the data providers) crashed the process (a segfault
    when the tests' interpreter exited)."""
    @functools.wraps(process_algorithm)
    def run(self, parameters, context, feedback):
        try:
            return process_algorithm(self, parameters, context, feedback)
        except BaseException as error:
            seen = set()
            while error is not None and id(error) not in seen:
                seen.add(id(error))
                traceback.clear_frames(error.__traceback__)   # skips this running frame
                error = error.__cause__ or error.__context__
            raise
        finally:
            let_go_of_copies(self.__dict__.pop("_copies", []))
    return run


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


def source_file(value, context) -> str | None:
    """The file behind a vector input's value (a project layer, a path, a layer object),
    to tell a destination that would replace it; None when there is none. Call it in the
    main thread: a project layer is read."""
    layer = project_layer(value, context, QgsProcessingUtils.LayerHint.Vector)
    if layer is None and isinstance(value, QgsProcessingFeatureSourceDefinition):
        value = value.source.staticValue()
    if layer is None and isinstance(value, QgsMapLayer):
        layer = value
    path = layer.source() if layer is not None else value
    if not isinstance(path, str) or not path:
        return None
    path = path.split("|")[0]
    return path if os.path.isfile(path) else None


def unchecked_features(source, request: QgsFeatureRequest | None = None):
    """The features of a Processing feature source without QGIS's geometry validity check,
    for reads that cope with invalid polygons: that check is Processing's setting, "stop"
    by default in the Toolbox, batch runs and processing.run, none in qgis_process, so a
    self-intersecting polygon (a hand-drawn one often is) failed from one and not the other."""
    return source.getFeatures(request or QgsFeatureRequest(),
                              QgsProcessingFeatureSource.Flag.FlagSkipGeometryValidityChecks)


def unchecked_input(layer, context) -> QgsProcessingFeatureSourceDefinition:
    """A child algorithm's input reading ``layer`` without the geometry validity check, as
    :func:`unchecked_features` reads a source. The layer goes to the run's temporary layer
    store, where the child finds it by its id; the caller frees it (steps.free_layers)."""
    context.temporaryLayerStore().addMapLayer(layer)
    return QgsProcessingFeatureSourceDefinition(
        layer.id(), False, -1, QgsProcessingFeatureSourceDefinition.Flag.FlagOverrideDefaultGeometryCheck,
        QgsFeatureRequest.InvalidGeometryCheck.GeometryNoCheck)


def check_polygons(source, label: str) -> None:
    """Refuse a feature source of lines or points where polygons are wanted (qgis_process
    and scripts pass any layer; only the Processing dialog filters them)."""
    kinds = {QgsWkbTypes.GeometryType.LineGeometry: "lines", QgsWkbTypes.GeometryType.PointGeometry: "points",
             QgsWkbTypes.GeometryType.NullGeometry: "no geometries"}
    kind = QgsWkbTypes.geometryType(source.wkbType())
    if kind == QgsWkbTypes.GeometryType.UnknownGeometry:   # mixed (a GeoJSON file): each feature
        request = QgsFeatureRequest().setNoAttributes()
        for number, feature in enumerate(unchecked_features(source, request), start=1):
            kind = feature.geometry().type()
            if kind in kinds and not feature.geometry().isNull():
                raise QgsProcessingException(f"{label} '{source.sourceName()}': feature {number} "
                                             f"is not a polygon; polygons are needed")
        return
    if kind in kinds:
        raise QgsProcessingException(f"{label} '{source.sourceName()}' holds {kinds[kind]}; "
                                     f"polygons are needed")


class RendererPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a raster output when Processing loads it into the project."""

    alive: list["RendererPostProcessor"] = []  # Processing holds a bare pointer: Python keeps the object

    def __init__(self, factory):
        super().__init__()
        self.factory = factory
        RendererPostProcessor.alive.append(self)

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            # a run into a file the project has a layer of is loaded as that layer, which
            # still reads the replaced file (GDAL keeps it open): the map showed the old run
            layer.reload()
            layer.setRenderer(self.factory(layer.dataProvider()))
            layer.triggerRepaint()


class VectorReloadPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Makes a vector output loaded into the project show the file this run wrote."""

    alive: list["VectorReloadPostProcessor"] = []  # as RendererPostProcessor.alive

    def __init__(self):
        super().__init__()
        VectorReloadPostProcessor.alive.append(self)

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        if isinstance(layer, QgsVectorLayer) and layer.isValid():
            # as for rasters: a run into a file the project has a layer of is loaded as
            # that layer, whose provider kept the replaced file's features
            layer.dataProvider().reloadData()
            layer.updateExtents()
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

    def add_described(self, parameter: QgsProcessingParameterDefinition, help_text: str) -> None:
        """Add a parameter whose label stays short (the dialog's column is about 70
        characters wide): the rest goes to its tooltip in the dialog."""
        parameter.setHelp(help_text)
        self.addParameter(parameter)

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
        taken into the calling thread and freed as ``processAlgorithm`` ends, failed or not
        (:func:`frees_inputs`; kept on the algorithm, they outlived QGIS's providers, and
        Python's exit crashed)."""
        copies = getattr(self, "_own_inputs", {})
        own = {**parameters, **copies}
        # freed as processAlgorithm ends (frees_inputs), when what this returns is gone
        self._copies = [value for value in copies.values() if isinstance(value, QgsMapLayer)]
        self._own_inputs = {}
        take_copies(own.values())
        return own

    def step_files(self) -> list[str]:
        """The list this run's :class:`~.steps.Steps` names its files in."""
        self._step_files: list[str] = []
        return self._step_files

    def postProcessAlgorithm(self, context, feedback) -> dict:  # noqa: N802 (QGIS's name)
        """In the main thread after a run that succeeded (as a task; at once otherwise): the
        layers of its child steps, which a run on a worker thread leaves in the context (see
        :func:`~.steps.free_layers`), are freed, and their folders removed (Windows: they
        could not be while open). Their results stand (none returned here)."""
        remove_steps(context, self.__dict__.pop("_step_files", []))
        return {}

    @staticmethod
    def run_child(label: str, alg: str, params: dict, context, feedback) -> dict:
        """Run a QGIS algorithm as a child, after checking for cancel. ``feedback`` is a
        step's of :class:`~.steps.Steps`, whose one progress runs over the steps; a
        QgsProcessingMultiStepFeedback made here would be freed while gdal algorithms still
        deliver queued output to it (a crash): Steps frees its own as the run ends."""
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
        run = BackendProcess(self.backend_interpreter(), args, processing=True)
        feedback.pushInfo(f"backend: {run.command}")   # for a report: the run in a terminal

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "progress":
                feedback.setProgress(100.0 * float(event.get("fraction", 0.0)))
            elif kind == "info":
                feedback.pushInfo(str(event.get("message", "")))
            elif kind == "warning":
                feedback.pushWarning(str(event.get("message", "")))

        outcome = run.run(on_event, lambda: feedback.isCanceled() or STOPPING.is_set())
        if outcome.cancelled:
            why = "the plugin was unloaded" if STOPPING.is_set() else "cancelled"
            raise QgsProcessingException(f"{why}: the backend was stopped and wrote no output")
        if not outcome.ok:
            if outcome.stderr:   # an internal error's traceback, which its message asks for
                feedback.reportError("The backend's error output:\n"
                                     + "\n".join(outcome.stderr), False)
            raise QgsProcessingException(outcome.error or "the backend failed")
        if outcome.cancel_came_late:
            written = [path for path in (outcome.result.get("outputs") or {}).values() if path]
            feedback.pushWarning("The cancel came too late: the backend had finished, and its "
                                 "outputs are complete and kept" +
                                 (": " + ", ".join(written) if written else ""))
        return outcome.result

    @staticmethod
    def check_destination(path: str, name: str, inputs: list, feedback, raster: bool = True,
                          probe: bool = True) -> None:
        """Before any work: refuse a destination that is not a GeoTIFF (``raster``), that is
        one of the ``inputs`` (layers, or file paths; replacing one would lose it), or
        (``probe``) that cannot be written; then remove what killed runs left beside it,
        and say that a file there will be replaced. A vector destination that is no plain
        file (``memory:``, a table of a database) is left to Processing."""
        if not raster and not is_plain_file(path):
            return
        if raster and not path.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(f"{name}: {path} must be a GeoTIFF (.tif)")
        extension = os.path.splitext(path)[1].lower().lstrip(".")
        if not raster and extension not in QgsVectorFileWriter.supportedFormatExtensions():
            # QGIS would write PATH.gpkg beside it, and the run report a file never written
            raise QgsProcessingException(f"{name}: {path} is no vector format's file name; "
                                         "end it with .gpkg, .shp or .geojson")
        real = os.path.realpath(path)
        for given in inputs:
            if isinstance(given, QgsMapLayer):
                # the layer's file, also where its source is a GDAL name (GPKG:file:table)
                source = layer_file(given)
                label = f"the input '{given.name()}'"
            else:
                source, label = given, f"the input '{os.path.splitext(os.path.basename(given or ''))[0]}'"
            if source and os.path.realpath(source) == real:
                raise QgsProcessingException(f"{name}: {path} is {label}; choose another path")
        if probe:
            try:  # os.access is no proof (root, read-only mounts): try it
                fd, tried = tempfile.mkstemp(prefix=".sarflood-probe-", dir=os.path.dirname(real))
                os.close(fd)
                os.unlink(tried)
            except OSError as exc:
                raise QgsProcessingException(f"{name}: cannot write {path} "
                                             f"({exc.strerror or exc})") from None
        SarFloodAlgorithm.remove_leftovers(path, feedback)
        if os.path.exists(path):
            feedback.pushInfo(f"{path} exists and will be replaced")

    @staticmethod
    def remove_leftovers(path: str, feedback) -> None:
        """Remove the hidden files that killed runs writing ``path`` left beside it."""
        for what in remove_stale(path):
            feedback.pushInfo(what)

    @staticmethod
    def reload_output(context, path: str) -> None:
        """Reload the vector layer of ``path`` if Processing will load it when the run ends."""
        if path and context.willLoadLayerOnCompletion(path):
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(VectorReloadPostProcessor())

    @staticmethod
    def style_output(context, path: str, renderer_factory) -> None:
        """Give ``path`` the plugin's style if Processing will load it when the run ends."""
        if path and context.willLoadLayerOnCompletion(path):
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(
                RendererPostProcessor(renderer_factory))
