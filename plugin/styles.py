"""Renderers for the backend's outputs.

Value ranges are the backend's contract, not statistics of the raster, so
styling a 4096 x 4096 output costs nothing (no pass over the pixels):

- mask: uint8, 0 dry, 1 water, 255 nodata (the file's nodata value);
- probability: float32 in [0, 1], NaN nodata;
- uncertainty: float32 spread of the test-time-augmentation predictions.
"""
from __future__ import annotations

from qgis.core import (QgsColorRampLegendNodeSettings, QgsColorRampShader, QgsPalettedRasterRenderer,
                       QgsRasterShader, QgsSingleBandPseudoColorRenderer)
from qgis.PyQt.QtGui import QColor

WATER = QColor(0, 92, 230)
TRANSPARENT = QColor(0, 0, 0, 0)
FLOOD_NEW = QColor(230, 30, 30)


def mask_renderer(provider) -> QgsPalettedRasterRenderer:
    """Water blue; dry transparent (nodata 255 is transparent as the file's nodata)."""
    classes = [QgsPalettedRasterRenderer.Class(0, TRANSPARENT, "dry"),
               QgsPalettedRasterRenderer.Class(1, WATER, "water")]
    return QgsPalettedRasterRenderer(provider, 1, classes)


def flood_extent_renderer(provider) -> QgsPalettedRasterRenderer:
    """The flood-extent raster: 1 newly flooded (red), 2 water before and after (blue)."""
    classes = [QgsPalettedRasterRenderer.Class(0, TRANSPARENT, "not flooded"),
               QgsPalettedRasterRenderer.Class(1, FLOOD_NEW, "newly flooded"),
               QgsPalettedRasterRenderer.Class(2, WATER, "water before and after the event")]
    return QgsPalettedRasterRenderer(provider, 1, classes)


def _pseudocolor(provider, shader_type, items, lo: float, hi: float) -> QgsSingleBandPseudoColorRenderer:
    ramp = QgsColorRampShader(lo, hi)
    ramp.setColorRampType(shader_type)
    ramp.setColorRampItemList(items)
    # a legend entry per item, with its words: QGIS draws an interpolated ramp's legend as
    # a gradient with the two end values only ("0.25", "0"), which dropped what they mean
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)
    ramp.setLegendSettings(legend)
    shader = QgsRasterShader(lo, hi)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    return renderer


def probability_renderer(provider) -> QgsSingleBandPseudoColorRenderer:
    """Continuous P(water): transparent at 0 through pale cyan to deep blue at 1."""
    items = [QgsColorRampShader.ColorRampItem(0.0, QColor(255, 255, 255, 0), "0 (dry)"),
             QgsColorRampShader.ColorRampItem(0.5, QColor(120, 200, 240, 170), "0.5"),
             QgsColorRampShader.ColorRampItem(1.0, QColor(0, 40, 160, 255), "1 (water)")]
    return _pseudocolor(provider, QgsColorRampShader.Type.Interpolated, items, 0.0, 1.0)


def threshold_renderer(provider, threshold: float) -> QgsSingleBandPseudoColorRenderer:
    """Two classes at ``threshold``: P <= t transparent, P > t water blue.

    The backend's mask is ``P > t``; a discrete ramp colours a value with the
    first item whose value is >= it, so the break sits exactly at ``t``.
    """
    items = [QgsColorRampShader.ColorRampItem(threshold, TRANSPARENT, f"<= {threshold:.2f}"),
             QgsColorRampShader.ColorRampItem(float("inf"), WATER, f"> {threshold:.2f} (water)")]
    return _pseudocolor(provider, QgsColorRampShader.Type.Discrete, items, 0.0, 1.0)


def uncertainty_renderer(provider, high: float = 0.25) -> QgsSingleBandPseudoColorRenderer:
    """Spread of the augmented predictions: transparent at 0, orange to magenta towards
    ``high``. The legend says what the values are: they meant nothing to an analyst who
    had not read the backend's documentation."""
    items = [QgsColorRampShader.ColorRampItem(0.0, QColor(255, 170, 0, 0),
                                              "0: the 8 flips and rotations agree"),
             QgsColorRampShader.ColorRampItem(high / 2, QColor(255, 140, 0, 180), f"{high / 2:.2f}"),
             QgsColorRampShader.ColorRampItem(high, QColor(200, 0, 160, 255),
                                              f">= {high:.2f}: water probability differs widely")]
    return _pseudocolor(provider, QgsColorRampShader.Type.Interpolated, items, 0.0, high)
