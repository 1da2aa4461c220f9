"""Put a run's outputs on the map: one layer group, styled, with no broken layer left behind;
copies of layers for work on a worker thread (:func:`private_copy`); and whether the project
is still the one a run started in (:class:`ProjectWatch`)."""
from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeatureRequest, QgsLayerTree,
                       QgsLayerTreeGroup, QgsMapLayer, QgsProcessingUtils, QgsProject,
                       QgsRasterLayer, QgsReadWriteContext, QgsVectorLayer)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QObject, QThread, pyqtSignal, pyqtSlot
from qgis.PyQt.QtXml import QDomDocument

from . import styles


class LayerError(RuntimeError):
    """An output raster could not be opened as a layer."""


@dataclass
class RunLayers:
    """The layers of one run, as added to the project."""
    group: QgsLayerTreeGroup
    mask: QgsRasterLayer
    probability: QgsRasterLayer | None = None
    uncertainty: QgsRasterLayer | None = None


def open_raster(path: str, name: str) -> QgsRasterLayer:
    """Open a GeoTIFF, or raise with the file named (never return an invalid layer)."""
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        error = layer.error().summary() or "not a readable raster"
        raise LayerError(f"{path}: cannot be opened as a raster layer ({error})")
    return layer


def add_run_layers(title: str, outputs: dict[str, str | None], project: QgsProject | None = None) -> RunLayers:
    """Add mask, probability and (optional) uncertainty as a group at the top of the legend.

    ``outputs`` is the backend's ``outputs`` map (mask, probability, uncertainty paths).
    All layers are opened before anything is added, so a failure leaves the project as it was.
    """
    project = project or QgsProject.instance()
    stem = Path(outputs["mask"]).stem
    mask = open_raster(outputs["mask"], f"water mask ({stem})")
    mask.setRenderer(styles.mask_renderer(mask.dataProvider()))
    probability = uncertainty = None
    if outputs.get("probability"):
        probability = open_raster(outputs["probability"], "water probability")
        probability.setRenderer(styles.probability_renderer(probability.dataProvider()))
    if outputs.get("uncertainty"):
        uncertainty = open_raster(outputs["uncertainty"],
                                  "uncertainty (std of water probability over 8 flips and rotations)")
        uncertainty.setRenderer(styles.uncertainty_renderer(uncertainty.dataProvider()))

    group = project.layerTreeRoot().insertGroup(0, unused_group_name(project, title))
    for layer in (mask, probability, uncertainty):
        if layer is not None:
            project.addMapLayer(layer, False)
            group.addLayer(layer)
    if uncertainty is not None:
        group.findLayer(uncertainty.id()).setItemVisibilityChecked(False)
    if probability is not None:
        # the mask answers "where is water"; probability is there for review
        group.findLayer(probability.id()).setItemVisibilityChecked(False)
    return RunLayers(group, mask, probability, uncertainty)


def in_qgis_temporary_folder(path: str | Path) -> bool:
    """Whether ``path`` lies in QGIS's temporary folder, which QGIS deletes on exit (a run
    into temporary files writes there)."""
    return Path(QgsProcessingUtils.tempFolder()).resolve() in Path(path).resolve().parents


def run_layer_nodes(layers: RunLayers, project: QgsProject | None = None) -> list:
    """The legend nodes (QgsLayerTreeLayer) of a run's layers still in the project, found by
    layer id wherever they are: the analyst may have moved them out of the run's group, or
    deleted that group (whose stored object is then a dead wrapper)."""
    root = (project or QgsProject.instance()).layerTreeRoot()
    nodes = []
    for layer in (layers.mask, layers.probability, layers.uncertainty):
        if layer is not None and not sip.isdeleted(layer):
            node = root.findLayer(layer.id())
            if node is not None:
                nodes.append(node)
    return nodes


class ProjectWatch(QObject):
    """Counts the times the project was cleared (New, Close) or another one read (Open,
    Revert): work started under one count that ends under another belongs to a project that
    is gone, and must add nothing to the one open now. ``changed`` follows each."""

    changed = pyqtSignal()

    def __init__(self, project: QgsProject | None = None):
        super().__init__()
        self.project = project or QgsProject.instance()
        self.count = 0
        self.project.cleared.connect(self._bump)
        self.project.readProject.connect(self._bump)

    def _bump(self, *_args) -> None:
        self.count += 1
        self.changed.emit()

    def close(self) -> None:
        """Stop watching (the plugin is unloaded)."""
        for signal in (self.project.cleared, self.project.readProject):
            try:
                signal.disconnect(self._bump)
            except TypeError:   # not connected (closed twice)
                pass


def unused_group_name(project: QgsProject, title: str) -> str:
    """``title``, or ``title (2)``, ``(3)``... where a run of the same scene left a group of
    that name: runs into temporary files have the same file names, so only this tells
    their groups apart."""
    taken = {g.name() for g in project.layerTreeRoot().findGroups(True)}
    if title not in taken:
        return title
    return next(name for name in (f"{title} ({k})" for k in itertools.count(2))
                if name not in taken)


def add_styled_raster(path: str, name: str, renderer_factory, project: QgsProject | None = None) -> QgsRasterLayer:
    """Add one styled raster at the top of the legend."""
    project = project or QgsProject.instance()
    layer = open_raster(path, name)
    layer.setRenderer(renderer_factory(layer.dataProvider()))
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
    return layer


def remove_layers_of(path: str, project: QgsProject | None = None) -> None:
    """Remove the project's layers of the file at ``path``, which was just replaced (they
    would go on drawing what it held before, beside the new layer) or is to be replaced or
    deleted: QGIS then holds the file open no longer, which Windows needs to do either."""
    project = project or QgsProject.instance()
    project.removeMapLayers([layer.id() for layer in layers_of(path, project)])


def layers_of(path: str, project: QgsProject) -> list[QgsMapLayer]:
    """The project's layers of the file at ``path``, with any pooled handles on it closed.

    QGIS keeps a GeoPackage or shapefile that a vector layer read open in a pool for a
    minute after the layer is removed (QGIS 3.22: the file's handle outlived the layer by
    61 s); reloading the layer's data first closes them."""
    real = os.path.realpath(path)
    found = [layer for layer in project.mapLayers().values()
             if os.path.realpath(layer.source().split("|")[0]) == real]
    for layer in found:
        if isinstance(layer, QgsVectorLayer) and layer.dataProvider() is not None:
            layer.dataProvider().reloadData()
    return found


@dataclass
class _Placed:
    """What puts a removed layer back as it was: the layer as a project stores it (source,
    name, id, style, CRS), its legend group and tick, and what followed it there."""
    path: str                  # the file it was released for
    xml: QDomDocument
    vector: bool
    parent: QgsLayerTreeGroup
    index: int
    visible: bool
    # the nodes after it in its group, nearest first: a node that stays, or the path of a
    # layer released with it (whose new or restored node then stands for it)
    followers: list


class ReleasedLayers:
    """The project's layers of files a run is about to replace, taken out of the project
    before it starts, and put back as they were (:meth:`restore`) where the run fails and
    leaves the files as they were.

    Windows refuses to replace a file that a program holds open, and QGIS holds every
    layer's file open: a second Accept to the same final mask failed there with "Access is
    denied". Where the run succeeds, the caller adds the new file's layer, and
    :meth:`take_place` puts it where the old one was. Raises LayerError, having removed
    nothing, where one of the layers has edits not saved (removing it would lose them)."""

    def __init__(self, paths: list[str], project: QgsProject | None = None):
        self.project = project or QgsProject.instance()
        found = {path: layers_of(path, self.project) for path in paths}
        for path, layers in found.items():
            for layer in layers:
                if isinstance(layer, QgsVectorLayer) and layer.isModified():
                    raise LayerError(f"the layer '{layer.name()}' of {path} has edits not "
                                     "saved; save or discard them, or choose another file")
        released = {layer.id(): path for path, layers in found.items() for layer in layers}
        # every place taken before any layer goes
        self._placed = [self._place_of(path, layer, released)
                        for path, layers in found.items() for layer in layers]
        self._now: dict[str, object] = {}   # path -> the legend node standing in for it now
        self._kept_out = False
        self.project.removeMapLayers(list(released))

    def _place_of(self, path: str, layer: QgsMapLayer, released: dict[str, str]) -> _Placed:
        root = self.project.layerTreeRoot()
        node = root.findLayer(layer.id())
        parent = node.parent() if node is not None else None
        siblings = parent.children() if parent is not None else []
        index = siblings.index(node) if parent is not None else 0
        followers = [("path", released[n.layerId()]) if QgsLayerTree.isLayer(n) and n.layerId() in released
                     else ("node", n) for n in siblings[index + 1:]]
        xml = QDomDocument("layer")
        element = xml.createElement("maplayer")
        layer.writeLayerXml(element, xml, QgsReadWriteContext())
        xml.appendChild(element)
        return _Placed(path, xml, isinstance(layer, QgsVectorLayer), parent or root, index,
                       node.itemVisibilityChecked() if node is not None else True, followers)

    def _insert(self, placed: _Placed, layer_or_node) -> object:
        """Put a layer (or a copy of a legend node) in ``placed``'s group, before the first
        of its followers still there (at the end if none is; in the legend's root if the
        group was deleted meanwhile); the new node."""
        parent = placed.parent
        if sip.isdeleted(parent):
            parent = self.project.layerTreeRoot()
        children = parent.children()
        index = len(children)
        for kind, follower in placed.followers:
            node = self._now.get(follower) if kind == "path" else follower
            if node is not None and not sip.isdeleted(node) and node in children:
                index = children.index(node)
                break
        if isinstance(layer_or_node, QgsMapLayer):
            node = parent.insertLayer(index, layer_or_node)
        else:
            node = layer_or_node
            parent.insertChildNode(index, node)
        self._now.setdefault(placed.path, node)
        return node

    def take_place(self, path: str, layer: QgsMapLayer) -> None:
        """Move ``layer``, the new layer of ``path``, to where the first layer released of
        ``path`` was (in its group, before what followed it), if there was one: an analyst
        who had moved the final mask into a group of their own found the new one at the top
        of the legend."""
        real = os.path.realpath(path)
        mine = [p for p in self._placed if os.path.realpath(p.path) == real]
        self._placed = [p for p in self._placed if p not in mine]   # replaced: none to put back
        node = self.project.layerTreeRoot().findLayer(layer.id())
        if not mine or node is None:
            return
        # the copy first: a layer whose last legend node goes leaves the project
        self._insert(mine[0], node.clone())
        node.parent().removeChildNode(node)

    def keep_out(self) -> None:
        """The run replaced a file: what is left released belongs with the file replaced
        (an earlier Accept's polygons of the mask replaced), and :meth:`restore` puts
        nothing back from now on; :meth:`take_place` still places the new layers."""
        self._kept_out = True

    def restore(self) -> None:
        """Put the layers back where they were, as they were (id, name, style, CRS, tick);
        once, and not after :meth:`keep_out`. A file gone meanwhile gets no layer (no
        broken layer)."""
        if self._kept_out:
            return
        placed_layers, self._placed = sorted(self._placed, key=lambda p: p.index), []
        for placed in reversed(placed_layers):   # each before those after it, as then
            layer = QgsVectorLayer() if placed.vector else QgsRasterLayer()
            element = placed.xml.documentElement()
            if not layer.readLayerXml(element, QgsReadWriteContext()) or not layer.isValid():
                continue
            self.project.addMapLayer(layer, False)
            self._insert(placed, layer).setItemVisibilityChecked(placed.visible)


def private_copy(layer: QgsMapLayer, request: QgsFeatureRequest | None = None,
                 crs: QgsCoordinateReferenceSystem | None = None) -> QgsMapLayer:
    """A layer object of the caller's own showing what ``layer`` shows; call it in the thread
    that owns ``layer`` (the main thread for a project layer).

    A project layer belongs to the main thread: it draws the layer, the user edits it,
    restyles it, changes its source, and removing it from the project deletes it. A worker
    thread that read it meanwhile would read a half-changed or freed object (a segfault, or
    the wrong pixels). So what a task or a Processing algorithm run as a task needs of a
    project layer is made in the main thread before it starts: a layer nothing else touches.

    A raster layer, and a vector layer whose features are all in its source, is cloned: the
    clone opens its own data provider (its own file handle), with the layer's CRS, subset
    and name. A vector layer whose features live in this process only (a memory or scratch
    layer, unsaved edits, joined, expression or auxiliary fields), or of which ``request``
    takes a part (selected features), is copied feature by feature into a memory layer,
    since reopening its source would not give what the user sees. Its features come in the
    order they were drawn (:func:`drawing_order`): where correction polygons overlap, the
    one drawn last wins. So is a vector layer given a ``crs`` other than its own: its
    features are transformed into it as the map shows them (the project's transforms)."""
    if isinstance(layer, QgsVectorLayer):
        provider = layer.dataProvider()
        in_process = (layer.providerType() == "memory" or layer.isModified()
                      or provider is None or provider.fields().count() != layer.fields().count())
        other_crs = crs is not None and crs != layer.crs()
        if in_process or request is not None or other_crs:
            ordered = drawing_order(request)
            if other_crs:
                ordered.setDestinationCrs(crs, QgsProject.instance().transformContext())
            copy = layer.materialize(ordered)
            copy.setName(layer.name())
        else:
            copy = layer.clone()
    else:
        copy = layer.clone()
    if isinstance(layer, QgsRasterLayer):   # clone() drops a no-data value set in QGIS
        source, copied = layer.dataProvider(), copy.dataProvider()
        for band in range(1, layer.bandCount() + 1):
            copied.setUserNoDataValue(band, source.userNoDataValues(band))
            copied.setUseSourceNoDataValue(band, source.useSourceNoDataValue(band))
    # of no thread until its user takes it (take_copies), as QGIS's own algorithms do
    copy.moveToThread(None)
    _main_thread_freeing()   # made before any worker needs it (let_go_of_copies)
    return copy


def drawing_order(request: QgsFeatureRequest | None = None) -> QgsFeatureRequest:
    """``request`` (or all features) in the order they were drawn: saved features by id,
    then unsaved ones. QGIS gives unsaved features (negative ids, counting down as they are
    drawn) before saved ones, so a polygon drawn after the last save came before older ones."""
    ordered = QgsFeatureRequest(request) if request is not None else QgsFeatureRequest()
    ordered.setOrderBy(QgsFeatureRequest.OrderBy([
        QgsFeatureRequest.OrderByClause("$id < 0"), QgsFeatureRequest.OrderByClause("abs($id)")]))
    return ordered


def take_copies(values) -> None:
    """Make the layers among ``values`` that :func:`private_copy` made (of no thread) the
    current thread's: call it in the thread that reads them."""
    here = QThread.currentThread()
    for value in values:
        if isinstance(value, QgsMapLayer) and value.thread() is None:
            value.moveToThread(here)


class _MainThreadFreeing(QObject):
    """Frees in the main thread the copies that work on worker threads lets go of.

    Why: PyQt keeps a set of the QObjects made by C++ that Python has wrapped (a copy is
    one). A copy freed on a worker thread has its end handled in the main thread's event
    loop, where PyQt changes that set without holding Python's lock, while the worker,
    holding it, may change the set too: the main thread can crash there (as it did when
    Processing steps' layers were freed on a worker, see processing/steps.py)."""
    let_go = pyqtSignal()

    def __init__(self):
        super().__init__()
        # made where the first copy is: a Graphical Modeler model prepares on its worker
        self.moveToThread(QCoreApplication.instance().thread())
        self.lock = threading.Lock()   # the worker hands over as a whole, or not yet
        self.held: list[QgsMapLayer] = []
        self.let_go.connect(self.free)   # from a worker: queued to the main thread

    @pyqtSlot()
    def free(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        del held   # the last references: the copies are freed here


_FREEING: list[_MainThreadFreeing] = []


def _main_thread_freeing() -> _MainThreadFreeing:
    if not _FREEING:
        _FREEING.append(_MainThreadFreeing())
    return _FREEING[0]


def let_go_of_copies(copies: list[QgsMapLayer]) -> None:
    """Free the layers in ``copies`` (made by :func:`private_copy`), which the caller holds
    no other reference to: at once on the main thread, else handed back to it and freed
    there by its event loop. ``copies`` is emptied."""
    main = QCoreApplication.instance().thread()
    if not copies or QThread.currentThread() == main:
        copies.clear()
        return
    freeing = _main_thread_freeing()
    with freeing.lock:
        for copy in copies:
            if copy.thread() == QThread.currentThread():
                copy.moveToThread(main)   # deleted in the thread it belongs to
        freeing.held.extend(copies)
        copies.clear()
    freeing.let_go.emit()


def free_copies_let_go() -> None:
    """Free now what workers let go of and the main thread has not freed yet (the plugin
    unloading, QGIS closing): freed after QGIS's data providers, at Python's exit, a copy
    crashed the process. Call it in the main thread."""
    if _FREEING:
        _FREEING[0].free()
