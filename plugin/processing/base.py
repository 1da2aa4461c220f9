"""The base of every sarflood algorithm: its identity from class attributes, and a fresh copy."""
from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm

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
