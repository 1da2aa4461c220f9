"""The base of every sarflood algorithm: its identity from class attributes, and a fresh copy."""
from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException

GROUPS = {"mapping": "Water mapping", "analysis": "Flood analysis"}


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
