"""A sarflood:mapwater run that Processing loads into the project (the Toolbox, batch mode,
a model's final outputs), made reviewable as a run of the dialog is: its layers styled, the
probability and uncertainty hidden under the mask, the run kept on its mask layer
(:func:`..review_run.save`: the review dock takes it up when the project is opened again),
and, in the desktop, handed to the review dock at once.

Processing loads a run's layers one at a time, in the main thread and in no set order, and
calls each one's post-processor after adding it to the project; so each output's
post-processor reports its layer to one :class:`ReviewHandoff`, which acts once the mask, the
probability (the review works on it) and the uncertainty, if loaded, are in.
"""
from __future__ import annotations

from typing import Any, Callable

from qgis.core import Qgis, QgsMessageLog, QgsProject, QgsRasterLayer

from ..layers import RunLayers
from ..params import PredictParams
from ..review_run import ReviewRun, forget_threshold, run_stem, save
from .base import RendererPostProcessor

# the review dock's intake in the desktop (SarFloodPlugin.initGui; unload clears it);
# qgis_process and scripts have none, and the run is only kept on its mask layer
reviewer: Callable[[ReviewRun], None] | None = None


class ReviewHandoff:
    """The layers of one run as Processing loads them; the run, once they are all in."""

    def __init__(self, result: dict[str, Any], params: PredictParams, scene_input: Any,
                 expected: dict[str, str]):
        self.result = result
        self.params = params
        # the INPUT parameter as given: a project layer's id makes the review find the scene
        # layer (a layer object is not read here, off the main thread)
        self.scene_input = scene_input if isinstance(scene_input, str) else ""
        self.expected = expected   # kind -> the name Processing gives its layer
        self.layers: dict[str, QgsRasterLayer] = {}

    def post_processor(self, kind: str, style) -> RendererPostProcessor:
        return _Loaded(self, kind, style)

    def loaded(self, kind: str, layer) -> None:
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            return
        self.layers[kind] = layer
        if set(self.layers) != set(self.expected):
            return
        project = QgsProject.instance()
        if any(project.mapLayer(layer.id()) is not layer for layer in self.layers.values()):
            return   # loaded into another project (a script's): nothing of ours to review
        mask = self.layers["mask"]
        stem = run_stem(self.params)
        # a dialog run's names, with the run's stem on each: Processing puts every run's
        # layers in one results group (or none), where a bare "water probability" could be any
        for kind, name in (("mask", f"water mask ({stem})"),
                           ("probability", f"water probability ({stem})"),
                           ("uncertainty", f"uncertainty, std over 8 flips and rotations ({stem})")):
            # named after the output's description (not the file, a setting)
            if kind in self.layers and self.layers[kind].name() == self.expected[kind]:
                self.layers[kind].setName(name)
        group = self._on_top(project)
        forget_threshold(mask)   # a layer of the same file reused keeps an earlier review's
        scene = project.mapLayer(self.scene_input) if self.scene_input else None
        run = ReviewRun(RunLayers(group, mask, self.layers["probability"], self.layers.get("uncertainty")),
                        self.result, self.params, scene.id() if scene is not None else "",
                        title=mask.name())
        save(run, mask.name())
        if reviewer is not None:
            try:
                reviewer(run)
            except Exception as exc:   # noqa: BLE001 - Processing would call the layer broken
                QgsMessageLog.logMessage(f"The run could not be handed to the review panel: {exc!r}",
                                         "SAR Flood Mapper", Qgis.MessageLevel.Warning)

    def _on_top(self, project: QgsProject):
        """Put the run's layers first in their group (Processing adds each run's below the
        earlier ones in a results group, where those would hide it), the mask shown above the
        probability and uncertainty, which are hidden; the group."""
        root = project.layerTreeRoot()
        node = root.findLayer(self.layers["mask"].id())
        parent = node.parent() if node is not None else None
        group = parent if parent is not None and parent is not root and parent.name() else root
        for kind in ("uncertainty", "probability", "mask"):
            node = root.findLayer(self.layers[kind].id()) if kind in self.layers else None
            if node is None:
                continue
            parent = node.parent()
            moved = node.clone()
            moved.setItemVisibilityChecked(kind == "mask")
            parent.insertChildNode(0, moved)
            parent.removeChildNode(node)
        return group


class _Loaded(RendererPostProcessor):
    """Styles one output layer and reports it to its run's handoff."""

    def __init__(self, handoff: ReviewHandoff, kind: str, style):
        super().__init__(style)
        self.handoff = handoff
        self.kind = kind

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        super().postProcessLayer(layer, context, feedback)
        self.handoff.loaded(self.kind, layer)
