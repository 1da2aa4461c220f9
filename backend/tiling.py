"""Tile geometry and seam-free blending.

The processing grid is cut into cells of ``stride`` x ``stride`` pixels; cell
(r, c) covers grid rows [r*S, (r+1)*S) and columns [c*S, (c+1)*S). On a whole
raster these are also the output GeoTIFF's blocks, so each finished cell is
written as whole blocks. An extent keeps the whole raster's cells
(:func:`aligned_origin`), and :class:`CellsToBlocks` regroups them into its blocks.
The model sees, for each cell, a tile of ``tile = stride + overlap`` pixels that
starts ``margin`` pixels before the cell::

    tile  |m|<-- blend -->|<---------- core ---------->|m|  (m = margin)
    cell     [<------------------- S ------------------->)
    next tile                                  |m|<-- blend -->|...

Neighbouring tiles overlap by ``overlap``. Within it, ``margin`` pixels at each
tile's edge are never used (the card says its output there is unreliable), and
in the ``blend = overlap - 2*margin`` pixels between, the two tiles are mixed with
weights that rise smoothly from one to the other (sin^2 ramp). Elsewhere a pixel
comes from one tile only.

Blending is exact: weights are small integers and the weighted sum is taken in
float64, so where tiles agree (a model whose receptive field fits in the margin)
the blend gives back their value bit for bit. Hence one tile or many give the
same probabilities and the same mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

WEIGHT_STEPS = 1024   # ramp weights are integers 1..1024 (products stay exact in float64)
BLOCK_MULTIPLE = 16   # GeoTIFF tiles must be multiples of 16
MAX_TILE = 4096       # bigger tiles only cost memory: the bundled model's run peaks at 2.3 GB
                      # with 4096 tiles against 0.2 GB with its 512


MIN_DEFAULT_BLEND = 8


def default_blend(margin: int) -> int:
    """Width of the zone where two tiles are mixed: enough to hide a step, small to save work."""
    return min(16, max(MIN_DEFAULT_BLEND, margin))


@dataclass(frozen=True)
class TilePlan:
    height: int       # processing grid
    width: int
    stride: int       # S: a cell, and an output block
    overlap: int      # O
    margin: int       # m

    @property
    def tile(self) -> int:
        return self.stride + self.overlap

    @property
    def blend(self) -> int:
        return self.overlap - 2 * self.margin

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.stride)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.stride)

    @property
    def tiles(self) -> int:
        return self.rows * self.cols

    def ramp(self) -> np.ndarray:
        """Integer weights (float64) of the current tile across the blend zone, rising.

        The previous tile's weight at the same pixel is ``ramp[::-1]``; both are >= 1.
        """
        b = self.blend
        a = (np.arange(b) + 0.5) / max(b, 1)
        w = np.round(WEIGHT_STEPS * np.sin(0.5 * np.pi * a) ** 2)
        return np.maximum(w, 1.0)


def plan_tiles(height: int, width: int, margin: int, stride: int | None, overlap: int | None,
               card_tile: int, size_multiple: int = 1, fixed_tile: int | None = None) -> TilePlan:
    """Choose stride and overlap.

    By default the stride is the card's ``tile_size`` and the overlap is
    ``2*margin + default_blend(margin)``, grown until the tile is a multiple of
    ``size_multiple`` (where that makes the blend wider than the stride, the narrowest
    blend of ``MIN_DEFAULT_BLEND`` or more that gives a multiple, else the narrowest).
    A graph with a fixed input size fixes the tile instead: the stride is then what is
    left after the overlap, rounded down to a multiple of 16.
    """
    min_overlap = 2 * margin
    if overlap is not None:
        if overlap < min_overlap:
            raise UsageError(f"overlap {overlap} is below twice the model's margin "
                             f"({margin}): tiles must overlap by at least {min_overlap}")
        o = overlap
    else:
        o = min_overlap + default_blend(margin)
    if stride is not None and (stride < BLOCK_MULTIPLE or stride % BLOCK_MULTIPLE):
        # the stride is the output GeoTIFF's block, which GDAL wants a multiple of 16
        raise UsageError(f"tile size {stride} must be a positive multiple of {BLOCK_MULTIPLE}")
    if fixed_tile is not None:
        if stride is not None and stride + o != fixed_tile:
            raise UsageError(f"the model only takes {fixed_tile} x {fixed_tile} tiles; "
                             f"tile size {stride} + overlap {o} does not fit")
        s = (fixed_tile - o) // BLOCK_MULTIPLE * BLOCK_MULTIPLE if stride is None else stride
        plan = TilePlan(height, width, s, fixed_tile - s, margin)
        if s < BLOCK_MULTIPLE or plan.blend > s:
            # the stride is rounded down to a block multiple, which widens the overlap
            fits = [v for v in range(min_overlap, fixed_tile)
                    if (fixed_tile - v) % BLOCK_MULTIPLE == 0
                    and TilePlan(height, width, fixed_tile - v, v, margin).blend <= fixed_tile - v]
            raise UsageError(f"the model's fixed {fixed_tile}-pixel tiles leave no room for an "
                             f"overlap of {o}" + (f"; give an overlap of at most {fits[-1]}"
                                                  if fits else ""))
        return plan
    s = card_tile if stride is None else stride   # a card's tile_size is a multiple of 16
    if s > MAX_TILE:
        raise UsageError(f"tile size {s} is above {MAX_TILE}: bigger tiles are no faster, "
                         f"and the model's working memory grows with them")
    _checked(TilePlan(height, width, s, o, margin))  # the overlap asked for, before rounding
    if overlap is None:
        # the default blend grown to the multiple can outgrow the stride (tile 128, margin 60,
        # multiple 128: 136 -> 256); then the narrowest blend of 8 px or more that fits, or
        # failing that the narrowest (the margin still holds the model's reach)
        for start in (o, min_overlap + MIN_DEFAULT_BLEND, min_overlap):
            grown = _grown(s, start, size_multiple)
            if grown - min_overlap <= s:
                return _checked(TilePlan(height, width, s, grown, margin))
    grown = _grown(s, o, size_multiple)
    if grown != o and grown - min_overlap > s:   # asked for, and no longer fits once grown
        fits = [v for v in range(min_overlap, s + min_overlap + 1) if (s + v) % size_multiple == 0]
        raise UsageError(f"overlap {o} grows to {grown} to make the tiles a multiple of "
                         f"{size_multiple} (the model's size_multiple), leaving a blend zone "
                         f"wider than the tile size {s}; "
                         + (f"give an overlap of {', '.join(map(str, fits))}" if fits else
                            "give another tile size"))
    return _checked(TilePlan(height, width, s, grown, margin))


def _grown(stride: int, overlap: int, multiple: int) -> int:
    """The least overlap from ``overlap`` up that makes the tile a multiple of ``multiple``."""
    return overlap + (-(stride + overlap)) % multiple


def _checked(plan: TilePlan) -> TilePlan:
    """A blend zone wider than a cell would reach past the neighbouring tile."""
    if plan.blend > plan.stride:
        raise UsageError(f"overlap {plan.overlap} leaves a blend zone ({plan.blend} px: the "
                         f"overlap less twice the margin) wider than the tile size "
                         f"{plan.stride}; give an overlap of at most "
                         f"{plan.stride + 2 * plan.margin}")
    return plan


def blend_cell(cur: np.ndarray, up: np.ndarray | None, upleft: np.ndarray | None,
               left: np.ndarray | None, plan: TilePlan, ramp: np.ndarray) -> np.ndarray:
    """The finished cell of one tile, mixed with its upper and left neighbours.

    ``cur`` is the tile's output ``(k, T, T)`` (k channels: probability, spread).
    ``up`` is the upper tile's bottom blend rows ``(k, blend, T)``, ``upleft`` the same
    for the upper-left tile, ``left`` the left tile's right blend columns
    ``(k, T, blend)``; None where there is no such neighbour. Returns ``(k, S, S)``.
    """
    m, s, b = plan.margin, plan.stride, plan.blend
    cell = cur[:, m:m + s, m:m + s].copy()
    if b == 0 or (up is None and left is None):
        return cell
    w = ramp                  # current tile, rising across the zone
    wp = ramp[::-1]           # previous tile, falling
    top = b if up is not None else 0
    first = b if left is not None else 0
    if up is not None:        # top zone, right of the corner
        wc, wu = w[:, None], wp[:, None]
        p = cur[:, m:m + b, m + first:m + s]
        q = up[:, :, m + first:m + s]
        cell[:, :b, first:] = (wc * p + wu * q) / (wc + wu)
    if left is not None:      # left zone, below the corner
        wc, wl = w[None, :], wp[None, :]
        p = cur[:, m + top:m + s, m:m + b]
        q = left[:, m + top:m + s, :]
        cell[:, top:, :b] = (wc * p + wl * q) / (wc + wl)
    if up is not None and left is not None:   # corner: four tiles
        wy, wyp = w[:, None], wp[:, None]
        wx, wxp = w[None, :], wp[None, :]
        num = (wy * wx * cur[:, m:m + b, m:m + b] + wy * wxp * left[:, m:m + b, :]
               + wyp * wx * up[:, :, m:m + b] + wyp * wxp * upleft[:, :, s + m:s + m + b])
        cell[:, :b, :b] = num / ((wy + wyp) * (wx + wxp))
    return cell


class TileBlender:
    """Turns the tiles' outputs, taken row by row as the tile loop makes them, into
    finished cells: each is blended with its upper and left neighbours, clipped to the
    grid, and handed to ``emit(row, col, cell)``.

    Only the bottom blend strips of one tile row are kept between rows, so memory does
    not grow with the raster's height. It runs on the writer thread, not beside the
    model: the thread that calls ONNX Runtime does nothing else.
    """

    def __init__(self, plan: TilePlan, emit, clock):
        self.plan, self.emit, self.clock = plan, emit, clock
        self.ramp = plan.ramp()
        self.above: list[np.ndarray | None] = [None] * plan.cols  # bottom strips, row r - 1
        self.below: list[np.ndarray | None] = [None] * plan.cols  # bottom strips, row r
        self.left: np.ndarray | None = None                        # right strip of (r, c - 1)

    def __call__(self, r: int, c: int, tile: np.ndarray) -> None:
        plan = self.plan
        s, m, b = plan.stride, plan.margin, plan.blend
        with self.clock("blend"):   # a StageClock: CPU time on the writer thread
            cell = blend_cell(tile, self.above[c] if r else None,
                              self.above[c - 1] if r and c else None,
                              self.left if c else None, plan, self.ramp)
            self.left = tile[:, :, s + m:s + m + b].copy()
            self.below[c] = tile[:, s + m:s + m + b, :].copy()
        if c == plan.cols - 1:
            self.above, self.below = self.below, [None] * plan.cols
        row0, col0 = r * s, c * s
        self.emit(row0, col0, cell[:, :min(s, plan.height - row0), :min(s, plan.width - col0)])


def aligned_origin(offset: int, stride: int, blend: int) -> int:
    """How far before ``offset`` (an extent's first row or column in the raster) its
    tiles must start to be the whole raster's tiles.

    The whole raster's cells start at multiples of the stride, and the first ``blend``
    rows (columns) of each are mixed with the tile before it; so an extent starts at
    the cell holding its first pixel, or one cell earlier where that pixel lies in the
    blend zone. Then its pixels are those of a whole-raster run, whatever the model.
    """
    back = offset % stride
    if back < blend and offset >= stride:
        back += stride
    return back


class CellsToBlocks:
    """Regroups cells of a tile grid that starts ``(dr, dc)`` pixels above and left of
    the output grid into the output's blocks, and hands them to ``write(row, col, block)``.

    Cells come row by row, as :class:`TileBlender` emits them; a block row
    is written once the cells below it have come. Holds two block rows at most.
    """

    def __init__(self, write, height: int, width: int, block: int, dr: int, dc: int,
                 channels: int):
        self.write, self.height, self.width, self.block = write, height, width, block
        self.dr, self.dc = dr, dc
        self.rows = np.empty((channels, 2 * block, width), np.float32)
        self.top = 0   # output row of self.rows[:, 0]

    def __call__(self, row: int, col: int, cell: np.ndarray) -> None:
        r0, c0 = row - self.dr, col - self.dc   # the cell's corner on the output grid
        h, w = cell.shape[1:]
        a0, a1 = max(r0, 0), min(r0 + h, self.height)
        b0, b1 = max(c0, 0), min(c0 + w, self.width)
        if a0 < a1 and b0 < b1:
            self.rows[:, a0 - self.top:a1 - self.top, b0:b1] = cell[:, a0 - r0:a1 - r0,
                                                                   b0 - c0:b1 - c0]
        if c0 + w < self.width:   # not the last cell of its row
            return
        done = min(r0 + h, self.height)
        while self.top < done and (self.top + self.block <= done or done == self.height):
            n = min(self.block, self.height - self.top)
            for c in range(0, self.width, self.block):
                self.write(self.top, c, self.rows[:, :n, c:c + self.block].copy())
            self.rows[:, :self.rows.shape[1] - self.block] = self.rows[:, self.block:]
            self.top += n
