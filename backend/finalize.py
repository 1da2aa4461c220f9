"""Turn a probability raster into the final mask at a chosen threshold, with provenance tags.

The plugin lets a user move the threshold while looking at the probability
layer; ``finalize`` then writes the mask at that threshold without running the
model again. The probability raster's SARFLOOD_* tags (model, version, inputs)
are carried over, SARFLOOD_THRESHOLD is set to the one used, and extra
``--tag KEY=VALUE`` pairs are added (not the tags finalize sets itself).

A uint8 probability holds round(250 p): finalized at the run's threshold it gives the
run's mask except where p lay within half a code (0.002) of the threshold, where the
code cannot tell which side p was on.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from rasterio.windows import Window

from .corrections import load_corrections
from .errors import InputError, UsageError
from .grid import grid_of
from .progress import Reporter
from .raster_io import check_outputs, gdal_env
from .inputs import check_output_kind, open_raster
from .sink import (PROB_U8_SCALE, OutputSink, check_threshold, fill_sink, mask_from_probability,
                   u8_to_probability, utc_stamp)

BLOCK = 512
_TAG_KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# what finalize and its sink write of the mask itself: a --tag must not contradict them
OWN_TAGS = ("SARFLOOD_OUTPUT", "SARFLOOD_MASK_CODES", "SARFLOOD_THRESHOLD",
            "SARFLOOD_FINALIZED", "SARFLOOD_CORRECTIONS")


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """KEY=VALUE strings -> dict; keys are letters, digits and underscores."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or set(key) - _TAG_KEY_CHARS:
            raise UsageError(f"tag {pair!r}: expected KEY=VALUE, KEY of letters, digits, _")
        tags[key] = value
    return tags


def finalize(probability: str, threshold: float, mask: str, overwrite: bool = False,
             tags: dict[str, str] | None = None, reporter: Reporter | None = None,
             cancel: threading.Event | None = None, compress: str = "zstd",
             corrections: str | None = None) -> dict:
    """Write the mask at ``threshold``; ``corrections`` (GeoJSON, :mod:`~backend.corrections`)
    are burnt into it."""
    started = time.perf_counter()
    reporter = reporter or Reporter()
    cancel = cancel or threading.Event()
    check_threshold(threshold)
    for key in tags or {}:
        # GDAL's metadata keys ignore case: sarflood_threshold replaces SARFLOOD_THRESHOLD
        if key.upper() in OWN_TAGS:
            raise UsageError(f"tag {key}: finalize sets {key.upper()} itself (from --threshold, "
                             f"--corrections, the time and the mask's codes); choose another key")
        if key.upper().startswith("SARFLOOD_") and key != key.upper():
            raise UsageError(f"tag {key}: GDAL reads tag keys without case, so it would replace "
                             f"the run's {key.upper()}; write SARFLOOD_ tags in capitals")
    with gdal_env():
        with open_raster(probability) as src:   # its grid checked as an input's is
            check_output_kind(probability, src.tags(), "probability")
            if src.count != 1 or src.dtypes[0] not in ("float32", "float64", "uint8"):
                raise InputError(f"{probability}: expected one probability band (float32 0..1 "
                                 f"or uint8 0..250), found {src.count} band(s) of {src.dtypes[0]}")
            # the scale describes the probability's codes, not the mask's
            kept = {k: v for k, v in src.tags().items() if k.startswith("SARFLOOD_")
                    and k not in ("SARFLOOD_OUTPUT", "SARFLOOD_PROBABILITY_SCALE")}
            check_outputs({"mask": mask}, [probability], overwrite)
            as_u8 = src.dtypes[0] == "uint8"
            if as_u8:
                reporter.info(f"{probability}: uint8, steps of 1/{PROB_U8_SCALE}: the mask matches "
                              f"predict's at {threshold:g} except where the probability lay "
                              f"within half a step ({0.5 / PROB_U8_SCALE:g}) of it")
            out_tags = {**kept, "SARFLOOD_THRESHOLD": f"{threshold:g}",
                        "SARFLOOD_FINALIZED": utc_stamp(),
                        **(tags or {})}
            grid = grid_of(src)
            fixes = load_corrections(corrections, grid, reporter) if corrections else None
            if fixes is not None:
                out_tags.update(SARFLOOD_CORRECTIONS=fixes.describe())
            sink = OutputSink(grid, BLOCK, threshold, out_tags, overwrite, mask=mask,
                              compress=compress)
            changed = 0

            def read(win: Window) -> dict:
                nonlocal changed
                block = src.read(1, window=win)
                prob = (u8_to_probability(block) if as_u8
                        else _float_probability(block, src.nodata))
                _check_probability(prob, probability, win)
                if fixes is None:
                    return {"prob": prob}
                corrected = mask_from_probability(prob, threshold)
                changed += fixes.apply(corrected, src.window_transform(win))
                return {"prob": prob, "mask": corrected}
            fill_sink(sink, BLOCK, read, reporter, cancel, "finalize")
    extra = {}
    if fixes is not None:
        extra = {"corrected_pixels": changed, "nodata_pixels_left": fixes.nodata_left}
        fixes.warn_nodata_left(reporter)
    return {"outputs": {"mask": mask}, "threshold": threshold, "tags": out_tags, **extra,
            "width": grid.width, "height": grid.height, **sink.stats.fields(),
            "probability_histogram": sink.stats.histogram(),
            "seconds": round(time.perf_counter() - started, 3)}


def _check_probability(prob: np.ndarray, path: str, win: Window) -> None:
    """Values beyond 0..1 (uint8 251..254) mean the raster is not a probability: its mask
    would be meaningless. Found mid-run, the error still leaves no output."""
    outside = ~((prob >= 0) & (prob <= 1)) & ~np.isnan(prob)
    if outside.any():
        r, c = np.argwhere(outside)[0]
        raise InputError(f"{path}: value {prob[r, c]:g} at row {win.row_off + r}, column "
                         f"{win.col_off + c} is not a probability (0 to 1, or uint8 0 to 250)")


def _float_probability(block: np.ndarray, nodata: float | None) -> np.ndarray:
    p = block.astype(np.float32, copy=False)
    if nodata is not None and not np.isnan(nodata):
        p = np.where(p == nodata, np.float32(np.nan), p)
    return p
