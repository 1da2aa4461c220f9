"""The run dialog's choices, remembered between sessions in QgsSettings under ``sarflood/``."""
from __future__ import annotations

from dataclasses import dataclass, fields

from qgis.core import QgsSettings

PREFIX = "sarflood/"
PYTHON_KEY = PREFIX + "python"  # interpreter for the backend; empty: found automatically


@dataclass
class RunSettings:
    model: str = ""                 # empty: the bundled model
    device: str = "auto"
    use_model_threshold: bool = True
    threshold: float = 0.5
    units: str = ""                 # empty: detected by the backend
    tile_size: int = 0              # 0: the model card's
    overlap: int = -1               # -1: from the model card's margin
    batch_size: int = 0             # 0: the backend's choice for the device
    tta: bool = False
    temporary: bool = True
    output_dir: str = ""
    extent_mode: str = "layer"      # layer | canvas | polygon
    extent_layer: str = ""          # the polygon layer's id; its source if the id is gone
    extent_layer_source: str = ""
    two_layers: bool = False

    @classmethod
    def load(cls) -> "RunSettings":
        store = QgsSettings()
        values = {}
        for f in fields(cls):
            default = f.default
            values[f.name] = store.value(PREFIX + f.name, default, type=type(default))
        return cls(**values)

    def save(self) -> None:
        store = QgsSettings()
        for f in fields(self):
            store.setValue(PREFIX + f.name, getattr(self, f.name))


def python_setting() -> str | None:
    return QgsSettings().value(PYTHON_KEY, "", type=str) or None
