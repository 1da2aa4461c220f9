"""The plugin on a QGIS whose Python is older than 3.9: one message, and nothing else.

The rest of the plugin fails to import there (built-in types subscripted at run time,
str.removeprefix), and the backend's rasterio >= 1.4 needs 3.9 as well, so a traceback at
start-up would be all the analyst got. This module is written to load on any Python 3.
"""
import sys

from qgis.core import Qgis, QgsMessageLog


class UnsupportedPython:
    """Stands in for the plugin: says why it did not load, in the message bar and the log."""

    def __init__(self, iface, needed):
        self.iface = iface
        self.message = ("SAR Flood Mapper needs Python {}.{} or newer, and this QGIS runs "
                        "Python {}: install a QGIS built with a newer Python (Help > About "
                        "shows the version)").format(needed[0], needed[1], sys.version.split()[0])

    def initProcessing(self):  # noqa: N802 (QGIS's name); qgis_process has no message bar
        QgsMessageLog.logMessage(self.message, "SAR Flood Mapper", Qgis.MessageLevel.Critical)

    def initGui(self):  # noqa: N802
        self.iface.messageBar().pushMessage("SAR Flood Mapper", self.message,
                                            Qgis.MessageLevel.Critical, 0)

    def unload(self):
        pass
