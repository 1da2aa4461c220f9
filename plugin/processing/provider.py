"""The Processing provider ``sarflood``: Toolbox, Model Builder, batch mode and qgis_process see it."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import STOPPING
from .correct_mask import CorrectMaskAlgorithm
from .flood_extent import FloodExtentAlgorithm
from .map_water import MapWaterAlgorithm
from .otsu import OtsuAlgorithm
from .threshold import ThresholdAlgorithm
from .vectorize import VectorizeAlgorithm
from .zonal import ZonalWaterAlgorithm

ICON = Path(__file__).resolve().parents[2] / "resources" / "icon.svg"
ALGORITHMS = (MapWaterAlgorithm, OtsuAlgorithm, ThresholdAlgorithm, FloodExtentAlgorithm,
              CorrectMaskAlgorithm, VectorizeAlgorithm, ZonalWaterAlgorithm)


class SarFloodProvider(QgsProcessingProvider):

    def __init__(self) -> None:
        super().__init__()
        STOPPING.clear()   # registered again after an unload: its runs may run

    def id(self) -> str:
        return "sarflood"

    def name(self) -> str:
        return "SAR Flood Mapper"

    def longName(self) -> str:
        return "SAR Flood Mapper (Sentinel-1 water mapping)"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS's name)
        """GeoTIFF only: the backend writes nothing else. Processing's own default raster
        format (a setting, e.g. gpkg) would otherwise name every TEMPORARY_OUTPUT, which the
        algorithms then refuse; the file dialogs offer .tif alone."""
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802 (QGIS's name)
        return "tif"

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
