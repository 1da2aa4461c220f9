"""Water IoU over all scored pixels, per-chip mean IoU, precision, recall."""
import numpy as np
import pytest

from training.metrics import Counts, Scoreboard, confusion


def test_confusion_counts_only_scored_pixels():
    label = np.array([[1, 1, 0, 0], [-1, -1, 1, 0]])
    pred = np.array([[1, 0, 1, 0], [1, 1, 1, 255]])
    valid = np.array([[True, True, True, True], [True, True, False, True]])
    c = confusion(pred, label, valid)
    # (1,1) tp; (1,0) fn; (0,1) fp; (0,0) tn; -1 labels and the invalid pixel are not scored;
    # the last pixel has no prediction (255): counted as dry -> tn, and as unpredicted
    assert (c.tp, c.fn, c.fp, c.tn, c.unpredicted) == (1, 1, 1, 2, 1)
    assert c.scored == 5
    assert c.iou == pytest.approx(1 / 3)
    assert c.precision == pytest.approx(0.5) and c.recall == pytest.approx(0.5)


def test_unpredicted_water_is_a_miss():
    label = np.ones((2, 2), int)
    c = confusion(np.full((2, 2), -1), label, np.ones((2, 2), bool))
    assert (c.tp, c.fn, c.unpredicted) == (0, 4, 4)
    assert c.iou == 0.0


def test_total_iou_differs_from_mean_chip_iou():
    board = Scoreboard()
    ones = np.ones((10, 10), bool)
    big = np.zeros((10, 10), int)
    big[:8] = 1                                  # 80 water pixels, all found
    board.add("big", big.copy(), big, ones)
    small = np.zeros((10, 10), int)
    small[0, :2] = 1                             # 2 water pixels, none found, 2 false alarms
    pred = np.zeros((10, 10), int)
    pred[9, :2] = 1
    board.add("small", pred, small, ones)
    s = board.summary()
    assert s["iou"] == pytest.approx(80 / 84)     # pooled: 80 / (80 + 2 + 2)
    assert s["mean_chip_iou"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["chips"] == 2 and s["chips_with_iou"] == 2


def test_chip_without_water_anywhere_has_no_iou():
    board = Scoreboard()
    z = np.zeros((4, 4), int)
    board.add("dry", z, z, np.ones((4, 4), bool))
    s = board.summary()
    assert s["iou"] is None and s["mean_chip_iou"] is None
    assert s["chips"] == 1 and s["chips_with_iou"] == 0 and s["scored_pixels"] == 16


def test_scoring_a_chip_twice_or_with_mismatched_shapes_fails():
    board = Scoreboard()
    z = np.zeros((4, 4), int)
    board.add("a", z, z, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="twice"):
        board.add("a", z, z, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="shapes differ"):
        confusion(np.zeros((4, 5)), z, np.ones((4, 4), bool))


def test_counts_add_up():
    assert Counts(1, 2, 3, 4, 5) + Counts(10, 20, 30, 40, 50) == Counts(11, 22, 33, 44, 55)
