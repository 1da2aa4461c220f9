"""Streaming inference: a VV/VH raster of any size in, water probability and mask out.

The run, in order:
1. check options, load the model (:class:`~backend.model.OnnxModel`), open and check the
   inputs, match their bands to the card, check the outputs (nothing is written yet);
2. find the input units (override, metadata, values) and the conversion to the card's;
3. compare the input pixel size in metres with the card's; beyond 5% the input is
   read through a GDAL warped view at the model's pixel size, and the result resampled
   back onto the input grid in a second pass;
4. walk the tile grid row by row (:mod:`~backend.tiling`): a reader thread reads a
   window of several tiles of one row, converts units, normalises it and cuts it
   into batches (the rows it shares with the next tile row are kept for it); the
   model runs each batch (optionally under 8 flips/rotations; on 4 or more CPU cores
   several batches at once) and hands each tile's
   output to a writer thread, which blends it with its neighbours into a cell and
   writes finished GeoTIFF blocks. Only one row of overlap and of blend strips is kept
   between tile rows, so memory does not grow with the raster's height;
5. build overviews and rename the temporary files into place.

An extent (``--extent``) is processed with the tiles a run on the whole raster
uses, so it gets that run's pixels exactly (the trained models depend a little on
where tiles fall).

Cancelling (the ``cancel`` event, set by the CLI on SIGINT/SIGTERM) stops at the
next batch and deletes every temporary file.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .card import ModelCard
from .errors import Cancelled, CardError, InputError, OutputError, UsageError
from .grid import Grid, check_extent_options, metres_per_degree, run_window
from .inputs import BandSource, InputSet, input_name, open_inputs
from .model import DEVICES, OnnxModel, SeenOutputs
from .pipeline import StageClock, Worker, cleaning_up, peak_rss_mb, prefetch
from .progress import Reporter
from .raster_io import (WRITE_ERRORS, GapFilledView, ShrunkView, WindowReader, check_outputs,
                        disk_full_note, gdal_env, gdal_masked, not_whole, sample_grid,
                        temporary_path, why_write_failed)
from .resample import nearest_with_data, read_scaled
from .sink import OutputSink, check_codec, check_threshold, fill_sink, utc_stamp
from .tiling import CellsToBlocks, TileBlender, TilePlan, aligned_origin, plan_tiles
from .units import UNITS, one_or_each, prepare_bands, to_units

MODELS_DIR = Path(__file__).resolve().parents[1] / "resources" / "models"
RESAMPLE_TOLERANCE = 0.05   # pixel sizes within 5% of the card's are used as they are
# input pixels at most this many times the card's are resampled; larger ones are refused
# (Sentinel-1 IW GRD medium resolution, 40 m, is 4x a 10 m model's)
MAX_UPSAMPLING = 4.0
OUTPUT_BLOCK = 512
PROBABILITY_DTYPES = ("float32", "uint8")
READ_COLUMNS = 2048  # columns read at a time: about as fast as 4096 and half the memory
# no data within this many pixels of data is filled from it (fill_near_data). The bundled
# model on the 7 of 120 unseen synthetic chips (generator seed 7) with no-data edges: IoU
# 0.808 with no data fed as 0, 0.817 / 0.821 / 0.823 filled within 4 / 16 / 64 px (within
# 3 px of an edge 0.49, 0.88, 0.92, 0.96); the fill costs about 22 ns per pixel and band at
# 16, 58 at 64. At 16, the 31 of 446 such chips of seed 8: 0.767 -> 0.778 (edge 0.38 -> 0.72)
FILL_DISTANCE = 16
FILL_STRIP = 256     # rows filled at a time: each GDAL call costs about 1 ms before its pixels
WARM_UP_BATCH = 4    # the most tiles the first, warm-up call takes (the default batch on CUDA)


@dataclass
class PredictOptions:
    inputs: list[str]                 # one 2-band raster (VV, VH) or two 1-band rasters [VV, VH]
    mask: str | None                  # uint8 GeoTIFF: 0 dry, 1 water, 255 nodata
    probability: str | None = None    # float32 (NaN nodata), or uint8 0..250 (255 nodata)
    uncertainty: str | None = None    # TTA spread (std of the flip/rotation predictions), float32
    model: str | None = None          # None -> resources/models/<name in resources/models/DEFAULT>
    device: str = "auto"              # auto|cpu|cuda
    threshold: float | None = None    # None -> card default_threshold
    extent: tuple[float, float, float, float] | None = None   # xmin, ymin, xmax, ymax
    extent_crs: str | None = None     # CRS of extent; None -> raster CRS
    tta: bool = False
    units: str | None = None          # override detected input units: dB|linear|amplitude
    tile_size: int | None = None      # cell (and output block) edge; None -> card tile_size
    overlap: int | None = None        # None -> 2 * margin + blend zone
    batch_size: int | None = None     # tiles per model call; None -> batch_size_for()
    probability_dtype: str = "float32"
    compress: str = "zstd"            # zstd|deflate (backend.sink.CODECS)
    overwrite: bool = False
    bands: tuple[int, int] | None = None   # (VV, VH) band numbers, 1-based, of a single input
    nodata: float | None = None       # every input band's no-data value, in place of the files'


def default_model_path() -> str:
    """The bundled default model named by resources/models/DEFAULT."""
    pointer = MODELS_DIR / "DEFAULT"
    try:
        name = pointer.read_text().strip()
    except OSError as exc:
        raise UsageError(f"{pointer}: cannot read the default model's name ({exc.strerror}); "
                         "give --model") from None
    return str(MODELS_DIR / name)


def _check_options(o: PredictOptions) -> None:
    if not (o.mask or o.probability or o.uncertainty):
        raise UsageError("nothing to write: give --mask, --probability or --uncertainty")
    if o.device not in DEVICES:
        raise UsageError(f"device {o.device!r}: expected one of {', '.join(DEVICES)}")
    if o.threshold is not None:
        check_threshold(o.threshold)
    if o.units is not None and o.units not in UNITS:
        raise UsageError(f"units {o.units!r}: expected one of {', '.join(UNITS)}")
    if o.batch_size is not None and o.batch_size < 1:
        raise UsageError(f"batch size {o.batch_size}: must be at least 1")
    if o.probability_dtype not in PROBABILITY_DTYPES:
        raise UsageError(f"probability dtype {o.probability_dtype!r}: expected one of "
                         f"{', '.join(PROBABILITY_DTYPES)}")
    check_codec(o.compress)
    check_extent_options(o.extent, o.extent_crs)


def batch_size_for(model: OnnxModel, asked: int | None = None) -> int:
    """Tiles per model call: the graph's fixed batch, else ``asked``, else 1 on CPU, 4 on CUDA.

    The outputs do not depend on it. On CPU one tile at a time was measured cheapest
    (2 cores, the student-cost model: about 25% less CPU end to end than 4 tiles) and
    needs half the memory; a GPU wants bigger batches.
    """
    if model.fixed_batch:
        return model.fixed_batch
    if asked is not None:
        return asked
    return 4 if model.device_name == "cuda" else 1


def match_bands(inputs: InputSet, card: ModelCard, model_path: str) -> list[BandSource]:
    """The input band for each card band, in card order. Raises CardError if one is missing."""
    missing = [b for b in card.band_names if b not in inputs.bands]
    if missing:
        have = ", ".join(f"{n} ({s.path} band {s.index})" for n, s in inputs.bands.items())
        raise CardError(f"{model_path}: the model needs bands {', '.join(card.band_names)}; "
                        f"the input has {have}: {', '.join(missing)} missing")
    return [inputs.bands[b] for b in card.band_names]


# --------------------------------------------------------------------------- the tile loop

@dataclass
class GridJob:
    """What the tile loop needs: a reader on the processing grid, and how to prepare tiles."""
    model: OnnxModel
    reader: WindowReader
    conversions: list[tuple[str, str]]      # per band: (input units, card units)
    plan: TilePlan
    batch: int
    tta: bool
    clock: StageClock = field(default_factory=StageClock)
    stats: dict = field(default_factory=lambda: {"tiles": 0, "model_s": 0.0})


Batch = tuple[int, int, int, np.ndarray, np.ndarray]


def tile_batches(job: GridJob, cancel: threading.Event) -> Iterator[Batch]:
    """Read, convert and normalise the tiles, a batch at a time: (r, c0, c1, x, valid).

    Neighbouring tiles overlap, so taken one by one they would read and normalise
    the overlaps two to four times (1.6x the raster for the bundled model), and
    small windows cost GDAL more per pixel. Instead a window spans about
    ``READ_COLUMNS`` columns of one tile row, whatever the batch, and the rows it
    shares with the next tile row are kept for that row: each input pixel is read
    and normalised once. Tiles are then copied out into the contiguous batch ONNX
    Runtime wants. The reader gives a grid position the same value however the
    grid is cut into windows, so the tiles are exactly those read one by one.
    The first window of a row is one batch wide and the next ones double up to
    ``READ_COLUMNS``, so the model gets its first batch after one batch's read and
    each window is read while the model runs on the one before (with a whole window
    second, the model waited for it at the start of a run).
    A window with no data is read with ``FILL_DISTANCE`` more pixels on every side,
    so that its no data is filled (:func:`fill_near_data`) from every pixel a
    whole-raster fill uses. Not knowing yet, the first tile row reads every window
    that wide; a window found without no data is read at its size in the next row,
    and one found with no data first at its size is read again wider (a scene's no-data
    border runs down every tile row, so the window below is read wide at once).
    """
    plan = job.plan
    s, m, t, o = plan.stride, plan.margin, plan.tile, plan.overlap
    f = FILL_DISTANCE
    per_read = max(1, READ_COLUMNS // s) // job.batch * job.batch or job.batch
    starts, width = [0], job.batch  # every row: the same windows, the first ones narrower
    while starts[-1] + width < plan.cols:
        starts.append(starts[-1] + width)
        width = min(2 * width, per_read)
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # window -> (x, valid) of its last o rows
    wide = set(starts)  # read wide at once: the first row's, and those that held no data above
    for r in range(plan.rows):
        for w0, w1 in zip(starts, [*starts[1:], plan.cols]):
            if cancel.is_set():
                return
            top = kept.pop(w0, None)
            skip = 0 if top is None else o   # the window's first rows, kept from the row above
            box = (r * s - m + skip, r * s - m + t, w0 * s - m, (w1 - 1) * s - m + t)
            x, valid = _prepared(job, box, f if w0 in wide else 0)
            if w0 not in wide and not valid.all():  # filled from the pixels around it
                x, valid = _prepared(job, box, f)
            (wide.discard if valid.all() else wide.add)(w0)
            if r + 1 < plan.rows and s >= o:  # the next tile row starts s rows lower
                kept[w0] = (x[:, s - skip:].copy(), valid[s - skip:].copy())
            for c0 in range(w0, w1, job.batch):
                c1 = min(w1, c0 + job.batch)
                with job.clock("batch"):
                    xs = np.empty((c1 - c0, len(x), t, t), np.float32)
                    vs = np.empty((c1 - c0, t, t), bool)
                    for i, c in enumerate(range(c0, c1)):
                        cols = slice((c - w0) * s, (c - w0) * s + t)
                        if top is not None:
                            xs[i, :, :o], vs[i, :o] = top[0][:, :, cols], top[1][:, cols]
                        xs[i, :, skip:], vs[i, skip:] = x[:, :, cols], valid[:, cols]
                yield r, c0, c1, xs, vs
            del x, valid, top  # not held while the generator waits


def _prepared(job: GridJob, box: tuple[int, int, int, int], halo: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Grid rows [r0, r1) and columns [c0, c1) read, in the card's units, normalised:
    (x, valid). With a ``halo``, read that much wider, no data near data filled
    (:func:`fill_near_data`), and cut back."""
    r0, r1, c0, c1 = box
    with job.clock("read"):
        x = job.reader.read(r0 - halo, r1 + halo, c0 - halo, c1 + halo)
    with job.clock("normalise"):
        to_units(x, job.conversions)
        valid = job.model.normalize(x[None], out=x[None])[1][0]
        h, w = valid.shape
        inner = valid[halo:h - halo, halo:w - halo]
        if halo and not inner.all():
            fill_near_data(x, valid, halo)
    return x[:, halo:h - halo, halo:w - halo], inner


def fill_near_data(x: np.ndarray, valid: np.ndarray, distance: int) -> None:
    """In place: normalised bands ``(C, H, W)`` get, at each invalid pixel within
    ``distance`` px of a valid one, GDAL's inverse-distance fill of the valid pixels
    around it (``rasterio.fill.fillnodata``, no smoothing); farther ones stay as they are.

    ``normalize`` feeds no data as 0 after normalisation, for the bundled models the low
    end of each band's clip: open water's signature, so they drew a false-water fringe
    along every no-data edge (a swath's border, a masked area). The fill continues the
    scene across the edge instead. It depends only on pixels within ``distance``, so a window read with that
    much more on every side is filled as the whole raster would be.

    GDAL's cost grows with the area it is given, and most of a window's no data can lie
    far from any data (a scene's corner): strips of ``FILL_STRIP`` rows each get only the
    columns within ``distance`` of an edge pixel (no data beside data) of their rows,
    and ``distance`` more for context; the result is the same.
    """
    from rasterio.fill import fillnodata   # GDAL's algorithm, loaded on first use

    invalid = ~valid
    edge = np.zeros_like(valid)
    edge[:, 1:] |= invalid[:, 1:] & valid[:, :-1]
    edge[:, :-1] |= invalid[:, :-1] & valid[:, 1:]
    edge[1:] |= invalid[1:] & valid[:-1]
    edge[:-1] |= invalid[:-1] & valid[1:]
    h = len(valid)
    for a in range(0, h, FILL_STRIP):
        b = min(a + FILL_STRIP, h)
        r0, r1 = max(a - distance, 0), min(b + distance, h)
        cols = np.flatnonzero(edge[r0:r1].any(axis=0))
        if not cols.size:
            continue
        c0, c1 = max(cols[0] - 2 * distance, 0), cols[-1] + 2 * distance + 1
        mask = valid[r0:r1, c0:c1].astype(np.uint8)   # GDAL fills where it is 0
        for band in x:
            # a copy: GDAL writes into the array it is given, rows of other strips too
            filled = fillnodata(band[r0:r1, c0:c1].copy(), mask=mask,
                                max_search_distance=distance, smoothing_iterations=0)
            band[a:b, c0:c1] = filled[a - r0:b - r0]


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 flips/rotations of the last two axes (k = 0 is identity)."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return y[..., ::-1] if k >= 4 else y


def _undo_dihedral(y: np.ndarray, k: int) -> np.ndarray:
    if k >= 4:
        y = y[..., ::-1]
    return np.rot90(y, -(k % 4), axes=(-2, -1))


def _infer(job: GridJob, x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(b, k, T, T): probability, and with TTA its spread over the 8 transforms; and when
    the model calls began and ended (``time.perf_counter``)."""
    model = job.model
    n = len(x)
    fixed = model.fixed_batch
    if fixed and n != fixed:  # a graph with a fixed batch size gets padded batches
        x = np.concatenate([x, np.zeros((fixed - n, *x.shape[1:]), x.dtype)])
    t0 = time.perf_counter()
    if job.tta:
        preds = np.stack([_undo_dihedral(model.infer(np.ascontiguousarray(_dihedral(x, k))), k)
                          for k in range(8)])[:, :n]
        out = np.stack([preds.mean(axis=0), preds.std(axis=0)], axis=1)
    else:
        out = model.infer(x)[:n, None]
    t1 = time.perf_counter()
    if not valid.all():
        np.copyto(out, np.nan, where=~valid[:, None])
    return out, t0, t1


def run_grid(job: GridJob, emit: Callable[[int, int, np.ndarray], None], reporter: Reporter,
             cancel: threading.Event, span: tuple[float, float] = (0.0, 1.0)) -> None:
    """Run every tile of the plan; emit(r, c, out) each tile's output (k, T, T), in
    row-major order (a :class:`~backend.tiling.TileBlender` makes cells of them).

    Up to ``streams`` batches run on the model's threads at once; when the oldest is done
    it is emitted and the next one starts, so outputs come in the order they were read.
    ``job.stats["model_s"]``: the time during which at least one call ran.
    """
    plan = job.plan
    streams = job.model.streams
    running: deque = deque()   # (r, c0, c1, future), oldest first
    busy_until = 0.0           # the end of the last call counted in model_s

    def finish_oldest() -> None:
        nonlocal busy_until
        r, c0, c1, future = running.popleft()
        out, t0, t1 = future.result()
        # calls start in the order they are submitted: counting each from the end of
        # those before it counts overlapping calls once
        job.stats["model_s"] += max(0.0, t1 - max(t0, busy_until))
        busy_until = max(busy_until, t1)
        for i, c in enumerate(range(c0, c1)):
            emit(r, c, out[i])
        job.stats["tiles"] += c1 - c0
        reporter.progress(span[0] + (span[1] - span[0]) * job.stats["tiles"] / plan.tiles,
                          "predict")

    with ThreadPoolExecutor(streams, thread_name_prefix="sarflood-model") as pool:
        try:
            for r, c0, c1, x, valid in prefetch(tile_batches(job, cancel), depth=streams + 1):
                if cancel.is_set():
                    break
                running.append((r, c0, c1, pool.submit(_infer, job, x, valid)))
                if len(running) == streams:
                    finish_oldest()
            while running and not cancel.is_set():
                finish_oldest()
        finally:   # leave no call queued behind an error or a cancel
            for *_, future in running:
                future.cancel()
    if cancel.is_set():
        raise Cancelled("cancelled")


# --------------------------------------------------------------------------- predict

def provenance_tags(card: ModelCard, inputs: list[str], threshold: float, tta: bool
                    ) -> dict[str, str]:
    return {
        "SARFLOOD_MODEL": card.name,
        "SARFLOOD_MODEL_VERSION": card.version,
        "SARFLOOD_INPUTS": ";".join(input_name(p) for p in inputs),
        "SARFLOOD_THRESHOLD": f"{threshold:g}",
        "SARFLOOD_TTA": "yes" if tta else "no",
        "SARFLOOD_CREATED": utc_stamp(),
    }


def _model_grid(out_grid: Grid, src_grid: Grid, target_m: float, stride: int, blend: int
                ) -> tuple[Grid, Window, Affine, int, int]:
    """The model-pixel grid over the output window, inside a warped view of the whole input.

    Returns (processing grid, its window in the view, view transform, view width, height).
    The view is the one a run on the whole input uses (north-up from the input's corner,
    model pixels sized at the input's centre), and the processing grid starts where that
    run's tiles do (:func:`~backend.tiling.aligned_origin`), so an extent sees the model
    pixels and tiles of the whole-raster run. Real pixels outside the window give context;
    mirror padding is used only beyond the input. The processing grid reaches a few model
    pixels beyond the window, past the input's right and bottom edges too, so that warping
    back has its full kernel at its edges.

    The view holds every model pixel that reaches into the input (by more than a
    millionth of a pixel): one that reaches past its edge is the average of the input
    pixels under its part inside (GDAL's average warper gives it that, and
    :class:`~backend.raster_io.GapFilledView` a bilinear view). The input's last column
    can lie wholly in such a pixel (5 m x 101 px = 50.5 model pixels of 10 m): a view
    that ended before it mirrored the pixel before, and the column's data never reached
    the model. Beyond the view, the reader mirrors it.
    """
    px, py = src_grid.pixel_size_m()
    dx = abs(src_grid.transform.a) * target_m / px
    dy = abs(src_grid.transform.e) * target_m / py
    left, bottom, right, top = src_grid.bounds()
    x0, y1, x1, y0 = out_grid.bounds()
    vw = max(1, math.ceil((right - left) / dx - 1e-6))
    vh = max(1, math.ceil((top - bottom) / dy - 1e-6))
    pad = 2 * math.ceil(max(px, py, target_m) / target_m) + 1
    c0 = max(math.floor((x0 - left) / dx + 1e-9) - pad, 0)
    r0 = max(math.floor((top - y0) / dy + 1e-9) - pad, 0)
    c1 = math.ceil((x1 - left) / dx - 1e-9) + pad
    r1 = math.ceil((top - y1) / dy - 1e-9) + pad
    c0 -= aligned_origin(c0, stride, blend)
    r0 -= aligned_origin(r0, stride, blend)
    view = Affine(dx, 0, left, 0, -dy, top)
    grid = Grid(out_grid.crs, view @ Affine.translation(c0, r0), c1 - c0, r1 - r0)
    return grid, Window(c0, r0, c1 - c0, r1 - r0), view, vw, vh


def predict(opts: PredictOptions, reporter: Reporter | None = None,
            cancel: threading.Event | None = None, model: OnnxModel | None = None) -> dict:
    """Map water on the inputs; write the requested outputs; return the result fields.

    ``model``: one already loaded, for many runs in one process (``opts.model`` and
    ``opts.device`` are then not read): a CUDA session costs seconds to start.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    reporter = reporter or Reporter()
    cancel = cancel or threading.Event()
    _check_options(opts)
    with gdal_env():
        if model is None:
            model = OnnxModel(opts.model or default_model_path(), opts.device)
            # the tile shape does not depend on the raster: the first call runs while
            # the inputs are opened and sampled. Not on a batch bigger than the default's:
            # a call never holds more tiles than a row has, which is not known yet (asked
            # for 64, a 9-tile scene peaked at 2.5 GB instead of 0.25)
            batch = batch_size_for(model, opts.batch_size)
            model.warm_up(batch if model.fixed_batch else min(batch, WARM_UP_BATCH),
                          _plan(opts, model, 1, 1).tile)
        card = model.card
        notes = "; ".join(model.provider_notes)
        reporter.info(f"model {card.name} {card.version} on {model.device_name} "
                      f"({model.provider})" + (f"; {notes}" if notes else ""))
        try:
            inputs = open_inputs(opts.inputs, card.band_names, opts.bands, nodata=opts.nodata)
            try:
                result = _predict(opts, model, inputs, reporter, cancel)
            finally:
                inputs.close()
        finally:
            model.finish_warm_up()
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["cpu_seconds"] = round(time.process_time() - cpu_started, 3)  # all threads
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _predict(opts: PredictOptions, model: OnnxModel, inputs: InputSet, reporter: Reporter,
             cancel: threading.Event) -> dict:
    card = model.card
    model.seen = SeenOutputs()   # a loaded model serves many runs: this run's outputs only
    for note in inputs.notes:
        reporter.info(note)
    sources = match_bands(inputs, card, model.path)
    outputs = {"mask": opts.mask, "probability": opts.probability,
               "uncertainty": opts.uncertainty}
    check_outputs(outputs, inputs.paths, opts.overwrite, inputs.sources())
    tta = opts.tta or bool(opts.uncertainty)
    if opts.uncertainty and not opts.tta:
        reporter.info("--uncertainty needs test-time augmentation: running with --tta")
    window = run_window(inputs.grid, opts.extent, opts.extent_crs, inputs.paths[0],
                        reporter.info)
    out_grid = inputs.grid.window_grid(window)
    clock = StageClock()
    with clock("units"):
        # judged on the whole input, so an extent reads it as a whole-raster run does (an
        # extent clear of a NaN edge took exact 0 for the no-data value, and the resampled
        # read then spread the NaN: probabilities 0.08 off)
        samples = sample_grid(WindowReader([(inputs.datasets[s.path], s.index, s.nodata)
                                            for s in sources], 0, 0),
                              inputs.grid.height, inputs.grid.width)
        prepared = prepare_bands(sources, inputs.datasets, samples, opts.units,
                                 [b.units for b in card.bands], opts.nodata is not None, reporter)
    raw, conversions = prepared.raw, prepared.conversions
    note = clipped_note(samples, conversions, card, model.path)
    if note:
        reporter.warning(note)

    threshold = card.default_threshold if opts.threshold is None else float(opts.threshold)
    tags = provenance_tags(card, inputs.paths, threshold, tta)
    # the whole input's (at its centre latitude when geographic), so an extent takes the
    # path and the model pixels of a whole-raster run
    in_px = inputs.grid.pixel_size_m()
    if max(in_px) > MAX_UPSAMPLING * card.pixel_size_m:
        raise InputError(f"{inputs.paths[0]}: its pixels are {in_px[0]:.1f} x {in_px[1]:.1f} "
                         f"m, over {MAX_UPSAMPLING:g}x the {card.pixel_size_m:g} m the model "
                         "was trained at: it would look for detail the data does not hold; "
                         "give data nearer that pixel size, or a model trained at this one")
    # the model learnt north-up scenes (the radar's look direction, shadows on one side):
    # a flipped grid is read through a north-up view, like one at another pixel size
    resample = (any(abs(v / card.pixel_size_m - 1) > RESAMPLE_TOLERANCE for v in in_px)
                or not out_grid.north_up)

    note = latitude_note(inputs.grid, card.pixel_size_m if resample else in_px[0],
                         card.pixel_size_m, inputs.paths[0])
    if note:
        reporter.warning(note)

    common = dict(model=model, conversions=conversions, tta=tta, clock=clock,
                  batch=batch_size_for(model, opts.batch_size))
    if opts.batch_size not in (None, common["batch"]):
        reporter.info(f"batch size {opts.batch_size} taken as {common['batch']}: the graph "
                      f"fixes its batch at {common['batch']} tiles")
    shape = _plan(opts, model, 1, 1)
    if opts.overlap is not None and shape.overlap != opts.overlap:
        fits = ("its fixed size" if model.fixed_tile else
                f"a multiple of {model.card.size_multiple}, the card's size_multiple")
        reporter.info(f"overlap {opts.overlap} grown to {shape.overlap}: the model takes "
                      f"tiles of {shape.tile} px ({fits})")
    if not resample:
        plan = _plan(opts, model, out_grid.height, out_grid.width)
        # an extent's tiles are the whole raster's, so it gets the same pixels
        dr = aligned_origin(int(window.row_off), plan.stride, plan.blend)
        dc = aligned_origin(int(window.col_off), plan.stride, plan.blend)
        plan = replace(plan, height=plan.height + dr, width=plan.width + dc)
        reader = WindowReader(raw, int(window.row_off) - dr, int(window.col_off) - dc)
        job = GridJob(reader=reader, plan=plan, **common)
        sink = OutputSink(out_grid, plan.stride, threshold, tags, opts.overwrite,
                          probability_dtype=opts.probability_dtype, compress=opts.compress,
                          clock=clock, **outputs)
        _stream(job, sink, reporter, cancel, shift=(dr, dc))
        model_grid = out_grid
    else:
        model_grid, job, sink = _predict_resampled(opts, inputs, raw, window, out_grid,
                                                   threshold, tags, common, reporter, cancel)
    stats = sink.stats
    if stats.valid_pixels == 0:
        where = " in the extent" if opts.extent else ""
        reporter.warning(f"{', '.join(inputs.paths)}: no valid pixel (all NaN or no data)"
                         f"{where}; the outputs are all no data")
    doubt = model.kind_doubt()
    if doubt:
        reporter.warning(doubt)
    plan = job.plan
    return {
        "outputs": sink.paths,
        "model": {"name": card.name, "version": card.version},
        "model_name": card.name,
        "model_version": card.version,
        "model_path": os.path.abspath(model.path),
        "device": model.device_name,
        "provider": model.provider,
        "provider_notes": model.provider_notes,
        "threshold": threshold,
        "tta": tta,
        "bands": inputs.mapping(),
        "units_detected": one_or_each(card.band_names, [f.units for f in prepared.found]),
        "units_source": one_or_each(card.band_names, [f.source for f in prepared.found]),
        "units_used": one_or_each(card.band_names, [dst for _, dst in conversions]),
        "input_pixel_size_m": [round(v, 3) for v in in_px],
        "model_pixel_size_m": card.pixel_size_m,
        "resampled": resample,
        "processing_pixel_size_m": [round(v, 3) for v in model_grid.pixel_size_m()],
        "width": out_grid.width,
        "height": out_grid.height,
        "window": {"col_off": int(window.col_off), "row_off": int(window.row_off),
                   "width": int(window.width), "height": int(window.height)},
        "tiles": {"count": plan.tiles, "tile": plan.tile, "stride": plan.stride,
                  "overlap": plan.overlap, "margin": plan.margin, "batch": job.batch},
        **stats.fields(),
        "probability_histogram": stats.histogram(),
        "model_seconds": round(job.stats["model_s"], 3),
        # CPU seconds of each stage outside the model, on its own thread
        "stage_cpu_seconds": clock.fields(),
    }


def clipped_note(samples: np.ndarray, conversions: list[tuple[str, str]], card: ModelCard,
                 model_path: str) -> str | None:
    """The warning for a band whose sampled values, in the card's units, all lie at or
    beyond one end of the card's clip window: the model would get that end, one constant,
    everywhere (a window in other units than the card's, say)."""
    x = to_units(samples.copy(), conversions)
    for k, (band, spec) in enumerate(zip(x, card.bands)):
        v = band[np.isfinite(band)]
        lo, hi = spec.clip
        if v.size and (v.min() >= hi or v.max() <= lo):
            return (f"{model_path}: every sampled {spec.name} value ({v.min():.4g} to "
                    f"{v.max():.4g} {spec.units}) lies {'above' if v.min() >= hi else 'below'} "
                    f"the card's clip window [{lo:g}, {hi:g}] (inputs.bands[{k}].clip): the "
                    f"model gets {hi if v.min() >= hi else lo:g} for {spec.name} everywhere; "
                    f"is the window in {spec.units}?")
    return None


def latitude_note(grid: Grid, centre_width_m: float, target_m: float, path: str) -> str | None:
    """The warning for a geographic grid so tall that its pixels' ground width at the top
    or bottom row lies over ``RESAMPLE_TOLERANCE`` from the model's, though the run's
    pixels (``centre_width_m`` wide at the centre latitude) are sized for its centre: a
    degree of longitude shrinks with latitude (a 250 km tall scene: 3 % at 60 N, 7 % at
    75 N). None for a projected grid, or one short enough."""
    if not grid.geographic:
        return None
    _, south, _, north = grid.bounds()
    half = abs(grid.transform.e) / 2
    at_centre = metres_per_degree(grid.centre_latitude())[0]
    widths = [centre_width_m * metres_per_degree(lat)[0] / at_centre
              for lat in (north - half, south + half)]   # the top and bottom rows' centres
    if all(abs(w / target_m - 1) <= RESAMPLE_TOLERANCE for w in widths):
        return None
    return (f"{path}: the scene spans latitudes {south:.2f} to {north:.2f} on a geographic "
            f"grid, where a pixel's ground width changes with latitude: the model sees pixels "
            f"{widths[0]:.1f} m wide at the top and {widths[1]:.1f} m at the bottom, against "
            f"the {target_m:g} m it was trained at (over {RESAMPLE_TOLERANCE:.0%} off); "
            "reproject the scene to a projected CRS (UTM) for pixels of one size, or map it "
            "in parts (--extent)")


def _plan(opts: PredictOptions, model: OnnxModel, height: int, width: int) -> TilePlan:
    card = model.card
    try:
        return plan_tiles(height, width, card.margin, opts.tile_size, opts.overlap,
                          card.tile_size, card.size_multiple, model.fixed_tile)
    except UsageError as exc:
        if not model.fixed_tile:
            raise
        # the graph's size is at stake: name it, and the tile size that fits
        raise UsageError(f"{model.path}: {exc}{_fitting_tile(opts, model)}") from None


def _fitting_tile(opts: PredictOptions, model: OnnxModel) -> str:
    """For a --tile-size that a graph's fixed input size refuses: the largest that fits."""
    card = model.card
    if opts.tile_size is None:
        return ""
    try:
        fits = plan_tiles(1, 1, card.margin, None, opts.overlap, card.tile_size,
                          card.size_multiple, model.fixed_tile)
    except UsageError:   # the overlap does not fit either, which the message says
        return ""
    return (f"; the largest tile size that fits is {fits.stride}, with --overlap "
            f"{fits.overlap}: give both, or leave --tile-size out")


def _stream(job: GridJob, sink: OutputSink, reporter: Reporter, cancel: threading.Event,
            shift: tuple[int, int] = (0, 0)) -> None:
    """Tiles -> blended cells -> sink on a writer thread; commit, or clean up on failure.

    ``shift``: rows and columns by which the tile grid starts above and left of the sink's.
    """
    def write(row: int, col: int, cell: np.ndarray) -> None:
        sink.write(row, col, cell[0], cell[1] if len(cell) > 1 else None)
    to_blocks = write if shift == (0, 0) else CellsToBlocks(
        write, sink.grid.height, sink.grid.width, job.plan.stride, *shift,
        channels=2 if job.tta else 1)
    writer = Worker(TileBlender(job.plan, to_blocks, job.clock))
    try:
        run_grid(job, writer.put, reporter, cancel, (0.0, 0.95))
        writer.close()
        if cancel.is_set():
            raise Cancelled("cancelled")
        sink.commit(cancel)  # overviews, then rename
        reporter.progress(1.0, "overviews")
    except BaseException:
        with cleaning_up():
            writer.abandon()
            sink.abort()
        raise


def _same_value(a: float | None, b: float | None) -> bool:
    """Two no-data values that mark the same pixels (NaN marks NaN)."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _model_pixel_views(raw: list[tuple], src_grid: Grid, view_t: Affine, vw: int, vh: int
                       ) -> tuple[dict, list[tuple]]:
    """The inputs seen at the model's pixels: a view per dataset, and the reader's sources.

    Model pixels no smaller than the input's both ways (within ``RESAMPLE_TOLERANCE``)
    take the average of the input pixels under them, weighted by overlap (bilinear, which
    GDAL's warper widens to the footprint when shrinking, cost twice as much, and made no
    data of model pixels mostly outside the data); larger input pixels are bilinear, and a
    model pixel that the bilinear warper leaves without data takes the average too
    (:class:`~backend.raster_io.GapFilledView`).
    GDAL's warper makes the view; where a float band's nodata tag marks its no data,
    GDAL's read-time average does most of it (:class:`~backend.raster_io.ShrunkView`;
    it averages an integer band in its own type, rounding to the stored unit).
    """
    src_t = src_grid.transform
    # an axis within the tolerance counts as shrinking: Sen1Floods11's degree pixels are
    # 10.01 m tall above 55 N, and a bilinear view of them grew the no-data edge by a
    # model pixel, losing input pixels with data (301 of a 1024 px scene at 65 N)
    same = 1 - RESAMPLE_TOLERANCE
    shrinking = view_t.a >= abs(src_t.a) * same and -view_t.e >= abs(src_t.e) * same
    views, sources = {}, []
    for ds, i, nodata in raw:   # nodata: the file's, 0 (zero_is_nodata) or untagged_fill's
        if id(ds) not in views:
            src_nodata = nodata if nodata is not None else (
                float("nan") if np.dtype(ds.dtypes[0]).kind == "f" else None)
            def warped(resampling: Resampling) -> WarpedVRT:
                return WarpedVRT(ds, crs=ds.crs, transform=view_t, width=vw, height=vh,
                                 resampling=resampling, src_nodata=src_nodata,
                                 nodata=float("nan"), dtype="float32")
            # the bilinear warper drops model pixels with little data in their kernel
            view = (warped(Resampling.average) if shrinking else
                    GapFilledView(warped(Resampling.bilinear), warped(Resampling.average)))
            # the file's own tag (0 is read as no data only in bands without one), and the
            # value the run reads as no data (--nodata 0 on a NaN-tagged file: GDAL's read-time
            # average left out the NaN and mixed the 0 border into the edge pixels)
            own = all(np.dtype(ds.dtypes[k - 1]).kind == "f" and ds.nodatavals[k - 1] is not None
                      and not gdal_masked(ds, k) and _same_value(n, ds.nodatavals[k - 1])
                      for d, k, n in raw if d is ds)
            if shrinking and src_grid.north_up and own:
                view = ShrunkView(ds, view, view_t.a / src_t.a, view_t.e / src_t.e)
            views[id(ds)] = view
        view = views[id(ds)]   # a shrunk view marks no data by the tag, a warped one by NaN
        sources.append((view, i, nodata if isinstance(view, ShrunkView) else None))
    return views, sources


def _predict_resampled(opts: PredictOptions, inputs: InputSet, raw: list[tuple],
                       window: Window, out_grid: Grid, threshold: float, tags: dict[str, str],
                       common: dict, reporter: Reporter, cancel: threading.Event
                       ) -> tuple[Grid, GridJob, OutputSink]:
    """Pass 1 on the model grid into a temporary file; pass 2 resamples it back onto the
    input grid, no data exactly where the input has none."""
    card = common["model"].card
    plan = _plan(opts, common["model"], out_grid.height, out_grid.width)  # sized below
    model_grid, sub, view_t, vw, vh = _model_grid(out_grid, inputs.grid, card.pixel_size_m,
                                                  plan.stride, plan.blend)
    px, py = inputs.grid.pixel_size_m()
    reporter.info((f"input pixels are {px:.2f} x {py:.2f} m; the model's are "
                   f"{card.pixel_size_m:g} m" if out_grid.north_up else
                   "the input grid is not north-up (its rows run south to north or its "
                   "columns east to west)")
                  + ": resampling on the fly and writing back on the input grid")
    views, sources = _model_pixel_views(raw, inputs.grid, view_t, vw, vh)
    first = next(p for p in (opts.mask, opts.probability, opts.uncertainty) if p)
    tmp = temporary_path(os.path.dirname(os.path.abspath(first)), "sarflood-model-grid")

    def unwritten(why: str) -> OutputError:   # named by the user's output, not the hidden file
        return OutputError(f"{first}: cannot be written (the model-grid file of the "
                           f"resampling pass, beside it: {why})")
    try:
        reader = WindowReader(sources, int(sub.row_off), int(sub.col_off))
        plan = replace(plan, height=model_grid.height, width=model_grid.width)
        job = GridJob(reader=reader, plan=plan, **common)
        k = 2 if common["tta"] else 1
        try:
            with rasterio.open(tmp, "w", driver="GTiff", width=model_grid.width,
                               height=model_grid.height, count=k, dtype="float32",
                               crs=model_grid.crs, transform=model_grid.transform,
                               nodata=float("nan"), tiled=True, blockxsize=plan.stride,
                               blockysize=plan.stride, compress="zstd", zstd_level=1,
                               bigtiff="IF_SAFER") as mid:
                def write_mid(row: int, col: int, cell: np.ndarray) -> None:
                    with job.clock("encode"):
                        mid.write(cell, window=Window(col, row, cell.shape[2], cell.shape[1]))
                writer = Worker(TileBlender(plan, write_mid, job.clock))
                try:
                    run_grid(job, writer.put, reporter, cancel, (0.0, 0.85))
                    writer.close()
                except BaseException:
                    with cleaning_up():
                        writer.abandon()
                    raise
        except WRITE_ERRORS as exc:   # input read errors are InputError by now
            raise unwritten(why_write_failed(exc, tmp)) from None
        # a full disk may fail its last writes with no error but on stderr (see not_whole)
        problem = not_whole(tmp, [])
        if problem:
            raise unwritten(problem + disk_full_note(tmp))
        sink = OutputSink(out_grid, OUTPUT_BLOCK, threshold, tags, opts.overwrite,
                          probability_dtype=opts.probability_dtype, compress=opts.compress,
                          clock=job.clock,
                          mask=opts.mask, probability=opts.probability,
                          uncertainty=opts.uncertainty)
        # read on the output's north-up twin and flipped here: a read cannot flip, and
        # GDAL (3.x) blurs when it warps onto a flipped grid (measured: 0.18 off in probability)
        twin = out_grid.north_up_twin()
        flip_rows, flip_cols = out_grid.transform.e > 0, out_grid.transform.a < 0
        on_input = WindowReader(raw, int(window.row_off), int(window.col_off))
        with rasterio.open(tmp) as mid:
            to_mid = ~mid.transform @ twin.transform   # twin pixel -> model-grid pixel
            def read(win: Window) -> dict:
                r0 = out_grid.height - win.row_off - win.height if flip_rows else win.row_off
                c0 = out_grid.width - win.col_off - win.width if flip_cols else win.col_off
                flip = (slice(None), slice(None, None, -1 if flip_rows else 1),
                        slice(None, None, -1 if flip_cols else 1))
                at = Window(c0, r0, win.width, win.height)
                try:   # the model-grid file: a block not_whole passed may still not read
                    with job.clock("resample back"):
                        cell = read_scaled(mid, to_mid, at)
                    with job.clock("input no data"):   # as the tile loop decides it
                        x = to_units(on_input.read(win.row_off, win.row_off + win.height,
                                                         win.col_off, win.col_off + win.width),
                                           common["conversions"])
                        valid = np.isfinite(x).all(axis=0)
                        # an input pixel with data gets a probability, whatever lay nearest
                        nearest_with_data(mid, to_mid, at, cell,
                                          valid[flip[1:]] & np.isnan(cell).any(axis=0))
                except WRITE_ERRORS as exc:   # the input's read errors are InputErrors
                    raise unwritten(f"it does not read back: {why_write_failed(exc, tmp)}") from None
                cell = cell[flip]
                cell[:, ~valid] = np.nan
                return {"prob": cell[0], "spread": cell[1] if len(cell) > 1 else None}
            fill_sink(sink, OUTPUT_BLOCK, read, reporter, cancel, "resample", (0.85, 1.0))
        return model_grid, job, sink
    finally:
        with cleaning_up():   # a second signal waits: the hidden model-grid file goes first
            for v in views.values():
                v.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
