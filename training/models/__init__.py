"""Segmentation models, built from a small JSON-friendly spec so that checkpoints
describe their own architecture::

    {"arch": "deeplabv3plus_xception65", "in_channels": 2, "width": 0.25, "rates": [6, 12, 18]}

``rates`` are DeepLab's ASPP rates, or the compact net's cascade of dilations.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .compact import COMPACT_RATES, CompactSegNet
from .deeplab import ASPP_RATES, DeepLabV3Plus

DEEPLAB = "deeplabv3plus_xception65"   # the paper's network; the id checkpoints carry
ARCHS: dict[str, type[nn.Module]] = {
    DEEPLAB: DeepLabV3Plus,
    "compact": CompactSegNet,
}
# zero_init_residual (DeepLab only) changes the initialisation, not the network: it
# is in the spec so that a run knows how its weights started
SPEC_KEYS = ("arch", "in_channels", "num_classes", "width", "rates", "zero_init_residual")


class ModelSpecError(ValueError):
    """A model spec names an unknown architecture or has bad fields."""


DEFAULT_RATES = {DEEPLAB: ASPP_RATES, "compact": COMPACT_RATES}


def display_name(spec: dict[str, Any]) -> str:
    """Human name for tables and model cards, e.g. ``DeepLabv3+/Xception-65 (width 0.25)``;
    settings other than the paper's (or the compact net's defaults) are named."""
    arch = spec["arch"]
    base = {DEEPLAB: "DeepLabv3+/Xception-65",
            "compact": "compact separable encoder-decoder"}[arch]
    notes = []
    width = float(spec.get("width", 1.0))
    if width != 1.0:
        notes.append(f"width {width:g}")
    rates = tuple(spec.get("rates", DEFAULT_RATES[arch]))
    if rates != DEFAULT_RATES[arch]:
        kind = "ASPP rates" if arch == DEEPLAB else "dilations"
        notes.append(f"{kind} {'/'.join(map(str, rates))}")
    return base + (f" ({', '.join(notes)})" if notes else "")


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
    rates = spec.get("rates", DEFAULT_RATES[arch])
    if (not isinstance(rates, (list, tuple)) or not rates
            or not all(isinstance(r, int) and r >= 1 for r in rates)):
        raise ModelSpecError(f"rates must be a list of positive integers, got {rates!r}")
    extra = {}
    if "zero_init_residual" in spec:
        if arch != DEEPLAB:
            raise ModelSpecError(f"zero_init_residual applies to DeepLab only, not {arch!r}")
        extra["zero_init_residual"] = bool(spec["zero_init_residual"])
    return ARCHS[arch](in_channels, num_classes=int(spec.get("num_classes", 2)), width=width,
                       rates=tuple(rates), **extra)


__all__ = ["ARCHS", "DEEPLAB", "CompactSegNet", "DeepLabV3Plus", "ModelSpecError",
           "build_model", "display_name"]
