"""Otsu's threshold on SAR backscatter in dB: the classic baseline.

Otsu (1979) picks the threshold that maximises the between-class variance of a
histogram. For SAR water mapping it is applied to VV in dB, where open water is
the dark mode. The histogram is accumulated block by block, so a scene of any
size is thresholded in two streaming passes (histogram, then mask).
"""
from __future__ import annotations

import numpy as np

# VV dB values outside this window are clipped into the end bins; water and land
# modes of Sentinel-1 VV lie well inside it.
DB_RANGE = (-40.0, 10.0)
BINS = 1000


class Histogram:
    """A fixed-bin histogram that accumulates blocks of values (NaN ignored)."""

    def __init__(self, lo: float = DB_RANGE[0], hi: float = DB_RANGE[1], bins: int = BINS):
        self.edges = np.linspace(lo, hi, bins + 1)
        self.counts = np.zeros(bins, np.int64)

    def add(self, values: np.ndarray) -> None:
        v = values[np.isfinite(values)]
        if v.size:
            v = np.clip(v, self.edges[0], self.edges[-1])
            self.counts += np.histogram(v, bins=self.edges)[0]

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def otsu_from_histogram(counts: np.ndarray, edges: np.ndarray) -> float | None:
    """The threshold (a bin edge) maximising between-class variance; None if undefined."""
    counts = counts.astype(np.float64)
    total = counts.sum()
    if total == 0:
        return None
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts)               # pixels at or below each bin
    w1 = total - w0
    m0 = np.cumsum(counts * centers)
    mean_total = m0[-1]
    valid = (w0 > 0) & (w1 > 0)
    if not valid.any():
        return None  # a single populated bin: no two classes to separate
    between = np.zeros_like(counts)
    mu0 = m0[valid] / w0[valid]
    mu1 = (mean_total - m0[valid]) / w1[valid]
    between[valid] = w0[valid] * w1[valid] * (mu0 - mu1) ** 2
    best = int(np.argmax(between))
    return float(edges[best + 1])


def otsu_threshold(values: np.ndarray) -> float | None:
    """Otsu threshold of one array of dB values (NaN ignored)."""
    hist = Histogram()
    hist.add(values)
    return otsu_from_histogram(hist.counts, hist.edges)


def water_mask(vv_db: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask: 1 water (VV at or below threshold), 0 dry, 255 no data."""
    out = np.where(vv_db <= threshold, 1, 0).astype(np.uint8)
    out[~np.isfinite(vv_db)] = 255
    return out
