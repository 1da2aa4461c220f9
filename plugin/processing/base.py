"""The base of every sarflood algorithm: identity from class attributes, child runs, output styles."""
from __future__ import annotations

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsRasterLayer)

GROUPS = {"mapping": "Water mapping", "analysis": "Flood analysis"}


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
    def style_output(context, path: str, renderer_factory) -> None:
        """Give ``path`` the plugin's style if Processing will load it when the run ends."""
        if path and context.willLoadLayerOnCompletion(path):
            processor = RendererPostProcessor(renderer_factory)
            RendererPostProcessor.alive.append(processor)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
