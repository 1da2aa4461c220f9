"""Segmentation models, built from a small JSON-friendly spec so that checkpoints
describe their own architecture::

    {"arch": "deeplabv3plus_xception65", "in_channels": 2, "width": 0.25}
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .compact import CompactSegNet
from .deeplab import DeepLabV3Plus

ARCHS: dict[str, type[nn.Module]] = {
    "deeplabv3plus_xception65": DeepLabV3Plus,
    "compact": CompactSegNet,
}
SPEC_KEYS = ("arch", "in_channels", "num_classes", "width")


class ModelSpecError(ValueError):
    """A model spec names an unknown architecture or has bad fields."""


def display_name(spec: dict[str, Any]) -> str:
    """Human name for tables and model cards, e.g. ``DeepLabv3+/Xception-65 (width 0.25)``."""
    base = {"deeplabv3plus_xception65": "DeepLabv3+/Xception-65",
            "compact": "compact separable encoder-decoder"}[spec["arch"]]
    width = float(spec.get("width", 1.0))
    return base if width == 1.0 else f"{base} (width {width:g})"


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a model from its spec; raises :class:`ModelSpecError` on a bad spec."""
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ModelSpecError(f"model spec has unknown keys {sorted(unknown)}; "
                             f"known: {', '.join(SPEC_KEYS)}")
    arch = spec.get("arch")
    if arch not in ARCHS:
        raise ModelSpecError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    in_channels = spec.get("in_channels")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ModelSpecError(f"in_channels must be a positive integer, got {in_channels!r}")
    width = float(spec.get("width", 1.0))
    if not width > 0:
        raise ModelSpecError(f"width must be positive, got {width}")
    return ARCHS[arch](in_channels, num_classes=int(spec.get("num_classes", 2)), width=width)


__all__ = ["ARCHS", "CompactSegNet", "DeepLabV3Plus", "ModelSpecError", "build_model",
           "display_name"]
