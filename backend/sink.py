"""From probability blocks to the output GeoTIFFs and the area figures.

:class:`OutputSink` takes blocks of water probability (and TTA spread) on the
output grid, thresholds them into the mask, counts valid and water pixels and
their area, keeps an area histogram of the probability, and writes each
requested output through :class:`~backend.raster_io.GeoTiffOut`. ``predict``,
``finalize`` and ``otsu`` all end here, so their masks and figures agree. The
histogram gives the water area of the mask ``finalize`` makes from the probability
written at any threshold k/100 (from the uint8 codes, where those are written).

Mask codes: 0 dry, 1 water (probability above the threshold), 255 no data.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from .errors import Cancelled, OutputError, UsageError
from .pipeline import StageClock, cleaning_up, set_published
from .progress import Reporter
from .grid import Grid
from .raster_io import GeoTiffOut, temporary_beside

MASK_NODATA = 255
PROB_U8_SCALE = 250        # uint8 probability: round(p * 250), 255 no data
HIST_BINS = 100
# the histogram's bin edges k/100 as the mask compares a threshold there: in float32
HIST_EDGES = (np.arange(HIST_BINS + 1) / HIST_BINS).astype(np.float32)
# each bin's lower edge, bin 0's below 0 so that p = 0 stays in it
_LOWER_EDGES = np.concatenate([[np.float32(-1)], HIST_EDGES[1:HIST_BINS]])
# GeoTIFF compression, by the name --compress takes. ZSTD level 1 (GDAL >= 2.3 built
# with zstd, as rasterio's wheels and Debian's GDAL under QGIS are) encoded the bench's
# 4096 px mask 5x faster than deflate and built its overviews 2x faster, for a file 7%
# smaller; a float probability 3.9x faster than deflate with the floating-point
# predictor, for a file 5% larger (with that predictor ZSTD took 40% longer for 3% less).
# Deflate is for readers without ZSTD; for probabilities its fastest level is 1.7x
# faster than GDAL's default 6 for much the same size, on a mask it is not.
CODECS = ("zstd", "deflate")
ZSTD_OPTIONS = {"compress": "zstd", "zstd_level": 1}
DEFLATE_OPTIONS = {"mask": {"compress": "deflate"},
                   "uint8": {"compress": "deflate", "zlevel": 1},
                   "float32": {"compress": "deflate", "predictor": 3, "zlevel": 1}}


def check_threshold(threshold: float) -> None:
    """Probabilities are float32: a threshold that rounds to 0 or 1 there (0.9999999999)
    maps every valid pixel dry, or water."""
    if not 0 < threshold < 1:
        raise UsageError(f"threshold {threshold}: must lie strictly between 0 and 1")
    if not 0 < np.float32(threshold) < 1:
        raise UsageError(f"threshold {threshold}: rounds to {float(np.float32(threshold)):g} in "
                         f"the float32 probabilities; give one between 1e-7 and 0.9999999")


def check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise UsageError(f"compression {codec!r}: expected one of {', '.join(CODECS)}")


def creation_options(codec: str, kind: str) -> dict:
    """GDAL creation options of an output: ``kind`` is mask, uint8 or float32."""
    check_codec(codec)
    return dict(ZSTD_OPTIONS) if codec == "zstd" else dict(DEFLATE_OPTIONS[kind])


def probability_to_u8(p: np.ndarray) -> np.ndarray:
    q = p * np.float32(PROB_U8_SCALE) + np.float32(0.5)
    np.nan_to_num(q, copy=False, nan=MASK_NODATA)
    return q.astype(np.uint8)


def u8_to_probability(q: np.ndarray) -> np.ndarray:
    p = q.astype(np.float32) / np.float32(PROB_U8_SCALE)
    p[q == MASK_NODATA] = np.nan
    return p


def mask_from_probability(p: np.ndarray, threshold: float) -> np.ndarray:
    m = (p > np.float32(threshold)).view(np.uint8)
    nodata = np.isnan(p)
    if nodata.any():  # a masked copy costs several times the test
        np.copyto(m, MASK_NODATA, where=nodata)
    return m


def small_counts(q: np.ndarray, bins: int) -> np.ndarray:
    """``np.bincount(q.ravel(), minlength=bins)`` for uint8 values below ``bins``, in about
    60% of its time: bincount widens each value to 8 bytes, so two bytes are counted at
    once as one uint16 (a + 256 b), and the (b, a) table is summed both ways."""
    flat = q.ravel()
    if flat.size % 2:
        return np.bincount(flat, minlength=bins)
    pairs = np.bincount(flat.view(np.uint16), minlength=256 * bins)[:256 * bins]
    pairs = pairs.reshape(bins, 256)
    return pairs.sum(axis=0)[:bins] + pairs.sum(axis=1)


def probability_bins(p: np.ndarray) -> np.ndarray:
    """uint8 histogram bins of float probabilities: bin k holds (E[k], E[k+1]] (and bin 0
    also 0), E = :data:`HIST_EDGES`, so that bins k and up hold exactly the water of the
    mask at threshold k/100 (P > E[k]). NaN gets any bin.

    float32's 100 p is rounded: for some p at or just below E[k] it is k (p = E[3] gives
    3.0), while above E[k] it is never below k. Its integer part is thus the bin or the one
    above, and the one above where p is at most that bin's lower edge (checked over every
    float32 in 0..1)."""
    with np.errstate(invalid="ignore"):   # NaN -> uint8 warns
        q = np.multiply(p, np.float32(HIST_BINS), out=np.empty(p.shape, np.uint8),
                        casting="unsafe")
    np.minimum(q, HIST_BINS - 1, out=q)
    q -= p <= _LOWER_EDGES[q]
    return q


def _hist_bins(prob: np.ndarray, mask: np.ndarray, has_nodata: bool) -> np.ndarray:
    """uint8 bins 0..HIST_BINS-1 of the probability, or of its uint8 codes, HIST_BINS where
    the mask has no data."""
    q = CODE_BINS[prob] if prob.dtype == np.uint8 else probability_bins(prob)
    if has_nodata:
        np.copyto(q, HIST_BINS, where=mask == MASK_NODATA)
    return q


# the bin of each uint8 code as finalize reads it (no data: HIST_BINS)
CODE_BINS = probability_bins(u8_to_probability(np.arange(256, dtype=np.uint8)))
CODE_BINS[MASK_NODATA] = HIST_BINS


@dataclass
class AreaStats:
    """Pixel counts and areas (m^2) of valid and water pixels, and a probability histogram:
    the area of valid pixels in each bin (k/100, (k+1)/100] of :func:`probability_bins`."""
    grid: Grid
    valid_pixels: int = 0
    water_pixels: int = 0
    valid_area_m2: float = 0.0
    water_area_m2: float = 0.0
    hist_area_m2: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS))
    # the blocks of one block row share their rows' areas: computed once, for the first
    _rows: tuple[int, int, np.ndarray] | None = field(default=None, init=False, repr=False)

    def _row_areas(self, row: int, h: int) -> np.ndarray:
        if self._rows is None or self._rows[:2] != (row, h):
            self._rows = (row, h, self.grid.row_area_m2(row, h))
        return self._rows[2]

    def add(self, row: int, col: int, mask: np.ndarray, prob: np.ndarray | None) -> None:
        """One block's mask, and its float probability or the uint8 codes written of it."""
        h, w = mask.shape
        area = self._row_areas(row, h)
        if self.grid.column_areas_vary:   # a projected grid far from true scale: per pixel
            area = area @ self.grid.column_weights(col, w)
            self._add_weighted(mask, prob, area)
            return
        per_row = self.grid.row_areas_vary
        # rows differ in area on geographic grids; elsewhere whole-block counts (several
        # times cheaper than per row) x one pixel area
        axis = 1 if per_row else None
        water = np.count_nonzero(mask == 1, axis=axis)
        valid = np.count_nonzero(mask != MASK_NODATA, axis=axis)
        valid_pixels = int(np.sum(valid))
        self.valid_pixels += valid_pixels
        self.water_pixels += int(np.sum(water))
        self.valid_area_m2 += float(valid @ area if per_row else valid * area[0])
        self.water_area_m2 += float(water @ area if per_row else water * area[0])
        if prob is None:
            return
        q = _hist_bins(prob, mask, valid_pixels < mask.size)
        # one histogram per row where rows differ in area, so each row's area weighs it
        if per_row:
            idx = q.astype(np.intp)
            idx += (np.arange(h) * (HIST_BINS + 1))[:, None]
            counts = np.bincount(idx.ravel(), minlength=h * (HIST_BINS + 1))
            self.hist_area_m2 += area @ counts.reshape(h, HIST_BINS + 1)[:, :HIST_BINS]
        else:
            self.hist_area_m2 += small_counts(q, HIST_BINS + 1)[:HIST_BINS] * area[0]

    def _add_weighted(self, mask: np.ndarray, prob: np.ndarray | None, area: np.ndarray) -> None:
        """:meth:`add` with an area for every pixel."""
        water, valid = mask == 1, mask != MASK_NODATA
        valid_pixels = int(np.count_nonzero(valid))
        self.valid_pixels += valid_pixels
        self.water_pixels += int(np.count_nonzero(water))
        self.valid_area_m2 += float(area[valid].sum())
        self.water_area_m2 += float(area[water].sum())
        if prob is not None:
            q = _hist_bins(prob, mask, valid_pixels < mask.size)
            self.hist_area_m2 += np.bincount(q.ravel(), weights=area.ravel(),
                                             minlength=HIST_BINS + 1)[:HIST_BINS]

    def fields(self) -> dict:
        valid_km2 = self.valid_area_m2 / 1e6
        return {
            "valid_pixels": self.valid_pixels,
            "water_pixels": self.water_pixels,
            "valid_area_km2": round(valid_km2, 6),
            "water_area_km2": round(self.water_area_m2 / 1e6, 6),
            "water_fraction": (round(self.water_area_m2 / self.valid_area_m2, 6)
                               if self.valid_area_m2 else 0.0),
        }

    def histogram(self) -> dict:
        return {"edges": [round(i / HIST_BINS, 2) for i in range(HIST_BINS + 1)],
                "area_km2": [round(a / 1e6, 6) for a in self.hist_area_m2]}


class OutputSink:
    """Writes mask / probability / uncertainty GeoTIFFs from probability blocks."""

    def __init__(self, grid: Grid, block: int, threshold: float | None, tags: dict[str, str],
                 overwrite: bool, mask: str | None = None, probability: str | None = None,
                 uncertainty: str | None = None, probability_dtype: str = "float32",
                 compress: str = "zstd", clock: StageClock | None = None):
        # a new run's outputs: a first run's commit (demo: predict, then Otsu) no longer
        # makes a second Ctrl-C wait
        set_published(False)
        self.grid = grid
        self.clock = clock or StageClock()
        self.threshold = threshold
        self.prob_u8 = probability_dtype == "uint8"
        self.stats = AreaStats(grid)
        self.outputs: dict[str, GeoTiffOut] = {}
        common = dict(grid=grid, block=block, overwrite=overwrite)
        float_options = creation_options(compress, "float32")
        try:
            if mask:
                self.outputs["mask"] = GeoTiffOut(
                    mask, dtype="uint8", nodata=MASK_NODATA, description="water mask",
                    options=creation_options(compress, "mask"),
                    tags={**tags, "SARFLOOD_OUTPUT": "mask",
                          "SARFLOOD_MASK_CODES": "0 dry, 1 water, 255 no data"},
                    overview_resampling=Resampling.nearest, **common)
            if probability:
                self.outputs["probability"] = GeoTiffOut(
                    probability, dtype="uint8" if self.prob_u8 else "float32",
                    options=creation_options(compress, "uint8") if self.prob_u8 else float_options,
                    nodata=MASK_NODATA if self.prob_u8 else float("nan"),
                    description="water probability",
                    tags={**tags, "SARFLOOD_OUTPUT": "probability",
                          **({"SARFLOOD_PROBABILITY_SCALE": f"1/{PROB_U8_SCALE}"}
                             if self.prob_u8 else {})},
                    scale=1 / PROB_U8_SCALE if self.prob_u8 else None,
                    overview_resampling=Resampling.average, **common)
            if uncertainty:
                self.outputs["uncertainty"] = GeoTiffOut(
                    uncertainty, dtype="float32", nodata=float("nan"), options=float_options,
                    description="TTA spread (standard deviation of the probability)",
                    tags={**tags, "SARFLOOD_OUTPUT": "uncertainty"},
                    overview_resampling=Resampling.average, **common)
        except BaseException:
            with cleaning_up():
                self.abort()
            raise

    @property
    def paths(self) -> dict[str, str | None]:
        return {k: (self.outputs[k].path if k in self.outputs else None)
                for k in ("mask", "probability", "uncertainty")}

    def write(self, row: int, col: int, prob: np.ndarray | None = None,
              spread: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """One block at (row, col) of the output grid: probability, or a ready mask."""
        with self.clock("mask and area"):
            if mask is None:
                mask = mask_from_probability(prob, self.threshold)
            if self.prob_u8:   # finalize reads the codes: the histogram bins them too
                prob = probability_to_u8(prob)
            self.stats.add(row, col, mask, prob)
        out = self.outputs
        with self.clock("encode"):
            if "mask" in out:
                out["mask"].write(mask, row, col)
            if "probability" in out:
                out["probability"].write(prob, row, col)
            if "uncertainty" in out and spread is not None:
                out["uncertainty"].write(spread, row, col)

    def commit(self, cancel: threading.Event | None = None) -> None:
        """Finish every output (overviews), then rename them all into place: all or
        nothing. A cancel that arrives while the overviews are built still leaves nothing.
        A file an output replaces (``--overwrite``) is kept aside, hard-linked, until
        every output is in place, and put back if one fails (where the disk cannot
        link, it is replaced: removing the new file then would lose both).
        """
        published, kept, markers = [], {}, []
        try:
            with self.clock("overviews"):
                for o in self.outputs.values():
                    o.finish()
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            set_published()
            for o in self.outputs.values():
                kept[o.path] = _kept_aside(o.path)
                if kept[o.path] is None:   # for the plugin, should this process be killed
                    markers.append(_marked_new(o.path))
                o.publish()
                published.append(o)
        except BaseException:
            with cleaning_up():
                self.abort()
                for o in published:
                    if kept[o.path]:
                        os.replace(kept[o.path], o.path)
                    elif kept[o.path] is None and os.path.exists(o.path):
                        os.unlink(o.path)
            raise
        finally:
            with cleaning_up():
                for aside in [*kept.values(), *markers]:
                    if aside and os.path.exists(aside):
                        os.unlink(aside)

    def abort(self) -> None:
        for o in self.outputs.values():
            o.abort()


def _kept_aside(path: str) -> str | None:
    """A hard link to the file at ``path`` under a temporary name; None where there is
    no file, "" where the disk cannot link one."""
    if not os.path.exists(path):
        return None
    aside = temporary_beside(path, "kept")
    try:
        os.link(path, aside)
    except OSError:
        return ""
    return aside


def _marked_new(path: str) -> str:
    """An empty marker saying that the output at ``path`` replaces no file (see
    :func:`~backend.raster_io.temporary_path`)."""
    marker = temporary_beside(path, "new")
    try:
        open(marker, "w").close()
    except OSError as exc:   # no inode left: the disk is full
        raise OutputError(f"{path}: cannot be written (no file can be made beside it: "
                          f"{exc.strerror or exc})") from None
    return marker


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fill_sink(sink: OutputSink, block: int, read: Callable[[Window], dict[str, np.ndarray]],
              reporter: Reporter, cancel: threading.Event, stage: str,
              span: tuple[float, float] = (0.0, 1.0)) -> None:
    """Write the sink's whole grid block by block from ``read(window)`` (keyword arrays
    for :meth:`OutputSink.write`), then commit; on any failure or cancel, abort."""
    grid = sink.grid
    rows = range(0, grid.height, block)
    try:
        for i, row in enumerate(rows):
            for col in range(0, grid.width, block):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                win = Window(col, row, min(block, grid.width - col), min(block, grid.height - row))
                sink.write(row, col, **read(win))
            reporter.progress(span[0] + (span[1] - span[0]) * (i + 1) / len(rows), stage)
        sink.commit(cancel)
    except BaseException:
        with cleaning_up():
            sink.abort()
        raise
