"""Otsu's threshold on SAR backscatter in dB: the classic baseline.

Otsu (1979) picks the threshold that maximises the between-class variance of a
histogram. For SAR water mapping it is applied to VV in dB, where open water is
the dark mode. The histogram is accumulated block by block, so a scene of any
size is thresholded in two streaming passes (histogram, then mask).
:func:`otsu_map` is the ``python -m backend otsu`` baseline: same inputs, same mask
format and area figures as ``predict``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from .errors import Cancelled
from .grid import check_extent_options, run_window
from .inputs import InputSet, input_name, open_inputs
from .pipeline import peak_rss_mb
from .progress import Reporter
from .raster_io import WindowReader, check_outputs, gdal_env, sample_grid
from .sink import MASK_NODATA, OutputSink, fill_sink, utc_stamp
from .units import prepare_bands, to_units

# VV dB values outside this window are clipped into the end bins; water and land
# modes of Sentinel-1 VV lie well inside it.
DB_RANGE = (-40.0, 10.0)
BINS = 1000
BLOCK = 512


class Histogram:
    """A fixed-bin histogram that accumulates blocks of values (NaN ignored)."""

    def __init__(self, lo: float = DB_RANGE[0], hi: float = DB_RANGE[1], bins: int = BINS):
        self.edges = np.linspace(lo, hi, bins + 1)
        self.counts = np.zeros(bins, np.int64)

    def add(self, values: np.ndarray) -> None:
        v = values[np.isfinite(values)]
        if v.size:
            # equal-width bins: the bin index is arithmetic (np.histogram's search is
            # several times slower); values outside the range go to the end bins
            n = len(self.counts)
            lo, hi = self.edges[0], self.edges[-1]
            idx = ((v - np.float32(lo)) * np.float32(n / (hi - lo))).astype(np.intp)
            np.clip(idx, 0, n - 1, out=idx)
            self.counts += np.bincount(idx, minlength=n)

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


# --------------------------------------------------------------------------- the baseline map

@dataclass
class OtsuOptions:
    inputs: list[str]                 # the same inputs as predict; VV is thresholded
    mask: str
    extent: tuple[float, float, float, float] | None = None
    extent_crs: str | None = None
    units: str | None = None
    overwrite: bool = False
    bands: tuple[int, int] | None = None   # (VV, VH) band numbers, 1-based, of a single input
    compress: str = "zstd"                 # zstd|deflate (backend.sink.CODECS)
    nodata: float | None = None            # every input band's no-data value, in place of the files'


def otsu_map(opts: OtsuOptions, reporter: Reporter | None = None,
             cancel: threading.Event | None = None) -> dict:
    """Otsu on VV in dB over the raster (or extent): histogram pass, then mask pass.

    Reads and writes 512 x 512 blocks, so memory does not grow with the raster.
    """
    started = time.perf_counter()
    reporter = reporter or Reporter()
    cancel = cancel or threading.Event()
    check_extent_options(opts.extent, opts.extent_crs)
    with gdal_env():
        inputs = open_inputs(opts.inputs, needed=("VV",), bands=opts.bands, user="Otsu",
                             nodata=opts.nodata)
        try:
            result = _otsu_map(opts, inputs, reporter, cancel)
        finally:
            inputs.close()
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _otsu_map(opts: OtsuOptions, inputs: InputSet, reporter: Reporter,
              cancel: threading.Event) -> dict:
    for note in inputs.notes:
        reporter.info(note)
    vv = inputs.bands["VV"]
    check_outputs({"mask": opts.mask}, inputs.paths, opts.overwrite, inputs.sources())
    window = run_window(inputs.grid, opts.extent, opts.extent_crs, inputs.paths[0],
                        reporter.info)
    grid = inputs.grid.window_grid(window)
    # VH, where there is one, is read too: its level helps tell the units, a VH brighter
    # than VV says the bands are swapped, and a pixel without VH is no data, as in predict
    sources = [vv] + ([inputs.bands["VH"]] if "VH" in inputs.bands else [])
    # sampled over the whole input, as predict does, so both judge its no data alike
    samples = sample_grid(WindowReader([(inputs.datasets[s.path], s.index, s.nodata)
                                        for s in sources], 0, 0),
                          inputs.grid.height, inputs.grid.width)
    prepared = prepare_bands(sources, inputs.datasets, samples, opts.units,
                             ["dB"] * len(sources), opts.nodata is not None, reporter)
    found = prepared.found[0]
    reader = WindowReader(prepared.raw, int(window.row_off), int(window.col_off))
    blocks = [(r, c) for r in range(0, grid.height, BLOCK) for c in range(0, grid.width, BLOCK)]

    def vv_db(row: int, col: int) -> np.ndarray:
        """VV in dB, NaN where VV or VH has no data."""
        if cancel.is_set():
            raise Cancelled("cancelled")
        x = to_units(reader.read(row, min(row + BLOCK, grid.height), col,
                                 min(col + BLOCK, grid.width)), prepared.conversions)
        if len(x) > 1:
            x[0][~np.isfinite(x[1])] = np.nan
        return x[0]

    hist = Histogram()
    for i, (row, col) in enumerate(blocks):
        hist.add(vv_db(row, col))
        reporter.progress(0.5 * (i + 1) / len(blocks), "histogram")
    threshold = otsu_from_histogram(hist.counts, hist.edges)
    if hist.total == 0:
        reporter.warning(f"{vv.path}: no valid VV pixel (all NaN or no data); the mask is all "
                         "no data")
    elif threshold is None:
        reporter.warning(f"{vv.path}: every valid VV pixel has the same value, so Otsu has no "
                         "threshold; the mask marks them all dry")
    tags = {"SARFLOOD_MODEL": "otsu", "SARFLOOD_MODEL_VERSION": "1",
            "SARFLOOD_INPUTS": ";".join(input_name(p) for p in inputs.paths),
            "SARFLOOD_THRESHOLD": "" if threshold is None else f"{threshold:.4f} dB",
            "SARFLOOD_CREATED": utc_stamp()}
    sink = OutputSink(grid, BLOCK, None, tags, opts.overwrite, mask=opts.mask,
                      compress=opts.compress)

    def read(win: Window) -> dict:
        db = vv_db(win.row_off, win.col_off)
        if threshold is None:
            return {"mask": np.where(np.isfinite(db), 0, MASK_NODATA).astype(np.uint8)}
        return {"mask": water_mask(db, threshold)}
    fill_sink(sink, BLOCK, read, reporter, cancel, "mask", (0.5, 1.0))
    return {"outputs": sink.paths, "model": {"name": "otsu", "version": "1"}, "device": "cpu",
            "threshold_db": threshold, "bands": inputs.mapping(), "units_detected": found.units,
            "units_source": found.source, "width": grid.width, "height": grid.height,
            "input_pixel_size_m": [round(v, 3) for v in grid.pixel_size_m()],
            **sink.stats.fields()}
