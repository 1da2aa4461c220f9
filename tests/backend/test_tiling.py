"""Tile plans and the exact blend."""
import numpy as np
import pytest

from backend.errors import UsageError
from backend.tiling import CellsToBlocks, TilePlan, aligned_origin, blend_cell, plan_tiles


def test_default_plan_uses_the_card_tile_as_stride():
    p = plan_tiles(4096, 4096, margin=8, stride=None, overlap=None, card_tile=512)
    assert (p.stride, p.overlap, p.tile, p.blend, p.rows, p.cols) == (512, 24, 536, 8, 8, 8)


def test_size_multiple_grows_the_overlap():
    p = plan_tiles(100, 100, margin=32, stride=None, overlap=None, card_tile=512, size_multiple=32)
    # 2 x 32 + a 16 px blend = 80, a 592 px tile, grown to 608 = 19 x 32: the blend takes the 16
    assert (p.stride, p.overlap, p.tile, p.blend) == (512, 96, 608, 32)


@pytest.mark.parametrize("tile, margin, multiple, blend", [(128, 60, 128, 8), (64, 28, 64, 8),
                                                           (32, 15, 32, 2)])
def test_a_size_multiple_that_outgrows_the_default_blend_takes_a_narrower_one(tile, margin, multiple,
                                                                              blend):
    """The default overlap grown to the multiple (tile 128, margin 60: 136 -> 256) left a
    blend wider than the stride: a valid card was refused, and no --overlap could help.
    The narrowest blend of 8 px or more that fits, else the narrowest that does."""
    p = plan_tiles(1000, 1000, margin=margin, stride=None, overlap=None, card_tile=tile,
                   size_multiple=multiple)
    assert p.tile % multiple == 0 and p.stride == tile and p.blend == blend


def test_an_overlap_asked_for_that_outgrows_the_tile_names_the_ones_that_fit():
    with pytest.raises(UsageError, match="overlap 248 grows to 256 to make the tiles a multiple of 128 "
                                         r"\(the model's size_multiple\).*; give an overlap of 128$"):
        plan_tiles(1000, 1000, margin=60, stride=None, overlap=248, card_tile=128, size_multiple=128)


def test_an_overlap_too_wide_for_a_fixed_tile_names_the_widest_that_fits():
    """Asked for 100 on 128-pixel tiles, it quoted an overlap of 112 (the stride rounded down
    to 16 widens it) and a bound of 16, though 64 runs."""
    with pytest.raises(UsageError, match="fixed 128-pixel tiles leave no room for an overlap of 100; "
                                         "give an overlap of at most 64$"):
        plan_tiles(500, 500, margin=0, stride=None, overlap=100, card_tile=128, fixed_tile=128)
    assert plan_tiles(500, 500, margin=0, stride=None, overlap=64, card_tile=128,
                      fixed_tile=128).stride == 64


def test_fixed_tile_fixes_the_stride():
    p = plan_tiles(1000, 1000, margin=4, stride=None, overlap=None, card_tile=96, fixed_tile=96)
    # the overlap 2 x 4 + an 8 px blend leaves a stride of 80, a multiple of 16 as it is
    assert (p.stride, p.overlap, p.tile, p.blend) == (80, 16, 96, 8)


@pytest.mark.parametrize("kw, match", [
    (dict(stride=100), "multiple of 16"),
    (dict(overlap=7), "below twice the model's margin"),
    (dict(fixed_tile=96, stride=64, overlap=40), "only takes 96 x 96 tiles"),
    # it fitted the fixed tile, and GDAL then refused the output's 104-pixel blocks
    (dict(fixed_tile=128, stride=104, overlap=24), "multiple of 16"),
])
def test_bad_plans(kw, match):
    args = dict(height=10, width=10, margin=4, stride=None, overlap=None, card_tile=64)
    with pytest.raises(UsageError, match=match):
        plan_tiles(**{**args, **kw})


def test_ramp_is_integer_and_complementary():
    plan = TilePlan(100, 100, stride=64, overlap=24, margin=4)
    w = plan.ramp()
    assert len(w) == plan.blend == 16
    assert (w == np.round(w)).all() and w.min() >= 1 and (np.diff(w) >= 0).all()
    assert np.abs(w + w[::-1] - 1024).max() <= 1   # sin^2 + cos^2


def test_blend_of_agreeing_tiles_is_exact():
    """Where neighbours agree, the blended cell is their value bit for bit."""
    plan = TilePlan(200, 200, stride=48, overlap=20, margin=3)
    s, m, b, t = plan.stride, plan.margin, plan.blend, plan.tile
    rng = np.random.default_rng(0)
    world = rng.random((1, 3 * s + t, 3 * s + t)).astype(np.float32)

    def tile(r, c):
        return world[:, r * s:r * s + t, c * s:c * s + t]
    cur = tile(1, 1)
    cell = blend_cell(cur, tile(0, 1)[:, s + m:s + m + b, :], tile(0, 0)[:, s + m:s + m + b, :],
                      tile(1, 0)[:, :, s + m:s + m + b], plan, plan.ramp())
    assert np.array_equal(cell, cur[:, m:m + s, m:m + s])


def test_blend_mixes_disagreeing_tiles_smoothly():
    plan = TilePlan(200, 200, stride=48, overlap=20, margin=3)
    b, t = plan.blend, plan.tile
    cur = np.ones((1, t, t), np.float32)
    left = np.zeros((1, t, b), np.float32)
    cell = blend_cell(cur, None, None, left, plan, plan.ramp())
    row = cell[0, 10, :b + 2]
    assert 0 < row[0] < 0.01 and (np.diff(row[:b]) > 0).all() and row[b] == 1.0


def test_blend_equals_brute_force_weighted_mean_of_four_tiles():
    """Four disagreeing tiles around a corner: the cell is sum(w p) / sum(w), with each
    tile's weight the product of a 1-D weight that is 0 in the margin and ramps up."""
    plan = TilePlan(500, 500, stride=40, overlap=22, margin=3)
    s, m, b, t = plan.stride, plan.margin, plan.blend, plan.tile
    ramp = plan.ramp()

    def w1(i):  # 1-D weight at tile-local index i, from the distance to the nearer edge
        d = min(i, t - 1 - i)
        return 0.0 if d < m else (ramp[d - m] if d - m < b else 1024.0)
    w = np.array([[w1(i) * w1(j) for j in range(t)] for i in range(t)])
    rng = np.random.default_rng(1)
    tiles = {(r, c): rng.random((1, t, t)).astype(np.float32) for r in (0, 1) for c in (0, 1)}
    num = np.zeros((2 * s + t, 2 * s + t))
    den = np.zeros_like(num)
    for (r, c), p in tiles.items():
        num[r * s:r * s + t, c * s:c * s + t] += w * p[0]
        den[r * s:r * s + t, c * s:c * s + t] += w
    expected = num[s + m:2 * s + m, s + m:2 * s + m] / den[s + m:2 * s + m, s + m:2 * s + m]
    cell = blend_cell(tiles[1, 1], tiles[0, 1][:, s + m:s + m + b, :],
                      tiles[0, 0][:, s + m:s + m + b, :], tiles[1, 0][:, :, s + m:s + m + b],
                      plan, ramp)
    assert np.abs(cell[0] - expected).max() < 1e-6


def test_an_extent_starts_at_its_cell_or_the_one_before_in_the_blend_zone():
    # stride 512, blend 16: cells start at multiples of 512, their first 16 rows are blended
    assert aligned_origin(0, 512, 16) == 0          # the raster's own first cell
    assert aligned_origin(100, 512, 16) == 100      # inside the first cell
    assert aligned_origin(600, 512, 16) == 88       # past cell 1's blend zone
    assert aligned_origin(520, 512, 16) == 520      # in cell 1's blend zone: from cell 0
    assert aligned_origin(512, 512, 16) == 512
    assert aligned_origin(528, 512, 16) == 16       # just past it


@pytest.mark.parametrize("dr, dc", [(0, 7), (100, 0), (37, 90), (70, 130)])
def test_cells_of_a_shifted_grid_come_out_as_whole_output_blocks(dr, dc):
    s, height, width = 64, 150, 170
    grid = np.arange(2 * (height + dr) * (width + dc), dtype=np.float32).reshape(
        2, height + dr, width + dc)
    blocks = []
    regroup = CellsToBlocks(lambda r, c, b: blocks.append((r, c, b)), height, width, s,
                            dr, dc, channels=2)
    for row in range(0, height + dr, s):          # row by row, clipped at the grid's end
        for col in range(0, width + dc, s):
            regroup(row, col, grid[:, row:row + s, col:col + s])
    out = np.full((2, height, width), np.nan, np.float32)
    for r, c, b in blocks:
        assert r % s == 0 and c % s == 0
        assert b.shape[1:] == (min(s, height - r), min(s, width - c))
        assert np.isnan(out[:, r:r + s, c:c + s]).all()   # each block once
        out[:, r:r + b.shape[1], c:c + b.shape[2]] = b
    assert np.array_equal(out, grid[:, dr:, dc:])
    assert [(r, c) for r, c, _ in blocks] == sorted((r, c) for r, c, _ in blocks)  # in order
