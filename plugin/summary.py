"""Words and figures for the user, from the backend's ``result`` event.

The backend sends ``probability_histogram``: the area (km2) of valid pixels in
each of 100 probability bins, ``edges`` 0, 0.01, .. 1, bin k holding P in
(edges[k], edges[k + 1]] (and P = 0 in bin 0). The bins from k on hold exactly the
water of the mask at threshold edges[k] (P > threshold), as ``finalize`` writes it from
the run's probability file. The review dock reads the water area for any threshold
off it, without touching the rasters.
"""
from __future__ import annotations

import math
from typing import Any


def water_area_at(histogram: dict[str, list[float]], threshold: float) -> float:
    """Water area (km2) for ``P > threshold``, exact when the threshold is a bin edge (0.01
    steps); between edges, that of the next edge up."""
    edges = histogram["edges"]
    areas = histogram["area_km2"]
    # a bin (lo, hi] is water when its lower edge is at or above the threshold;
    # the tolerance absorbs float noise in edges like 0.29000000000000004
    return float(sum(a for lo, a in zip(edges[:-1], areas) if lo >= threshold - 1e-9))


def valid_area(histogram: dict[str, list[float]]) -> float:
    return float(sum(histogram["area_km2"]))


def km2_text(km2: float) -> str:
    """An area in km² to two decimals, and to three significant figures where that takes
    more: at 0.01 km², a correction of 100 pixels of 10 m showed no change."""
    decimals = 2 if km2 <= 0 else max(2, 2 - math.floor(math.log10(km2)))
    return f"{km2:,.{decimals}f} km²"


def area_text(water_km2: float, valid_km2: float) -> str:
    share = 100.0 * water_km2 / valid_km2 if valid_km2 > 0 else 0.0
    return f"{km2_text(water_km2)} of water, {share:.1f} % of the {km2_text(valid_km2)} valid area"


def model_label(result: dict[str, Any]) -> str:
    """``name version`` of the model that made a result."""
    model = result["model"]
    return f"{model['name']} {model['version']}"


def run_summary(result: dict[str, Any], seconds: float) -> str:
    """The message-bar line after a run: area, share, time, device and model."""
    text = area_text(float(result["water_area_km2"]), float(result["valid_area_km2"]))
    return f"{text}; {seconds:.1f} s on {str(result['device']).upper()}, model {model_label(result)}"
