"""``python -m backend stats``: the area figures of a water mask already on disk.

A mask holds 0 dry, 1 water and 255 no data (the band's own nodata value, if it
has another, is no data too); any other value counts as valid and not water, so
the flood-extent classes (1 newly flooded, 2 water before and after) give the newly
flooded area. The counting is the one every output of ``predict`` gets
(:class:`~backend.sink.AreaStats` with :meth:`~backend.grid.Grid.row_area_m2`):
each row's pixels weigh their true area, which on a geographic grid shrinks with
latitude. The mask is read in strips of whole rows, so memory stays bounded.
A probability or uncertainty that ``predict`` wrote (its SARFLOOD_OUTPUT tag) is refused:
a uint8 probability's codes would pass for mask values.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .errors import Cancelled
from .grid import grid_of
from .inputs import open_mask
from .progress import Reporter
from .raster_io import gdal_env, unreadable_rows
from .sink import MASK_NODATA, AreaStats, small_counts

STRIP_BYTES = 16 << 20   # rows read at a time: about this many bytes


def mask_stats(path: str, reporter: Reporter | None = None,
               cancel: threading.Event | None = None) -> dict:
    """Valid and water pixels and km² of a uint8 mask, and the count of each value."""
    started = time.perf_counter()
    reporter = reporter or Reporter()
    cancel = cancel or threading.Event()
    with gdal_env():
        with open_mask(path) as ds:
            grid = grid_of(ds)
            stats = AreaStats(grid)
            counts = np.zeros(256, np.int64)
            nodata = ds.nodata
            other_nodata = (nodata is not None and nodata != MASK_NODATA
                            and float(nodata).is_integer() and 0 <= nodata <= 255)
            block_h = ds.block_shapes[0][0]
            rows = max(1, min(grid.height, STRIP_BYTES // max(grid.width, 1)))
            if rows >= block_h:  # whole blocks per strip: each block is decoded once
                rows -= rows % block_h
            for r in range(0, grid.height, rows):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                h = min(rows, grid.height - r)
                try:
                    strip = ds.read(1, window=Window(0, r, grid.width, h))
                except RasterioError as exc:  # a truncated or corrupt file fails only here
                    raise unreadable_rows(path, r, r + h, exc) from None
                counts += small_counts(strip, 256)   # bincount alone copies it as int64
                if other_nodata:
                    strip[strip == int(nodata)] = MASK_NODATA
                stats.add(r, 0, strip, None)
                reporter.progress((r + h) / grid.height, "stats")
    return {"path": path, "crs": grid.crs.to_string(), "width": grid.width,
            "height": grid.height, "pixel_size_m": [round(v, 3) for v in grid.pixel_size_m()],
            **stats.fields(),
            "value_counts": {str(v): int(n) for v, n in enumerate(counts) if n},
            "seconds": round(time.perf_counter() - started, 3)}
