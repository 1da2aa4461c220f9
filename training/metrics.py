"""Water segmentation metrics, as the paper scores them.

Definitions (counts over *scored* pixels only):

- A pixel is scored where its label is 0 or 1 (not -1) and its Sentinel-1
  input is valid (every band finite). A scored pixel the method left without a
  prediction (no data in its mask) counts as predicted dry: a method gets no
  credit for abstaining.
- **IoU** (the headline number) = TP / (TP + FP + FN) of the water class, with
  TP, FP, FN summed over *all* scored pixels of the split: one IoU of the whole
  split, so large chips of water weigh more than small ones. This is our reading
  of the "pixel-wise mean intersection over union (IoU) of the water class" of Garg
  et al. (2023), Section 4: "mean" there could also be a mean over chips or batches,
  which the paper does not say (the mean chip IoU below is the former).
- **mean chip IoU**: the IoU of each chip, averaged over the chips where it is
  defined (TP + FP + FN > 0); chips with no water in label or prediction are
  left out and counted.
- **precision** = TP / (TP + FP), **recall** = TP / (TP + FN), both over the split.

Sen1Floods11's own notebooks average IoU over batches of chip crops instead,
which weighs chips differently and gives other numbers; we do not use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    unpredicted: int = 0   # scored pixels the method gave no value (counted as dry)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                      self.tn + other.tn, self.unpredicted + other.unpredicted)

    @property
    def scored(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def iou(self) -> float | None:
        union = self.tp + self.fp + self.fn
        return self.tp / union if union else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.scored if self.scored else None


def confusion(pred: np.ndarray, label: np.ndarray, valid: np.ndarray) -> Counts:
    """Counts of one chip. ``pred``: 1 water, 0 dry, anything else no prediction;
    ``label``: 1 water, 0 dry, -1 not scored; ``valid``: Sentinel-1 has data."""
    if not pred.shape == label.shape == valid.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, label {label.shape}, "
                         f"valid {valid.shape}")
    scored = valid & ((label == 0) | (label == 1))
    water_pred = pred == 1
    water_true = label == 1
    tp = int(np.count_nonzero(scored & water_pred & water_true))
    fp = int(np.count_nonzero(scored & water_pred & ~water_true))
    fn = int(np.count_nonzero(scored & ~water_pred & water_true))
    n = int(np.count_nonzero(scored))
    unpredicted = int(np.count_nonzero(scored & (pred != 0) & (pred != 1)))
    return Counts(tp, fp, fn, n - tp - fp - fn, unpredicted)


@dataclass
class Scoreboard:
    """Accumulates chips; :meth:`summary` gives the split's metrics."""
    chips: dict[str, Counts] = field(default_factory=dict)

    def add(self, chip_id: str, pred: np.ndarray, label: np.ndarray, valid: np.ndarray) -> Counts:
        if chip_id in self.chips:
            raise ValueError(f"chip {chip_id} scored twice")
        counts = confusion(pred, label, valid)
        self.chips[chip_id] = counts
        return counts

    @property
    def total(self) -> Counts:
        return sum(self.chips.values(), Counts())

    def summary(self) -> dict:
        total = self.total
        per_chip = [c.iou for c in self.chips.values() if c.iou is not None]
        return {
            "iou": total.iou,
            "mean_chip_iou": float(np.mean(per_chip)) if per_chip else None,
            "precision": total.precision,
            "recall": total.recall,
            "accuracy": total.accuracy,
            "chips": len(self.chips),
            "chips_with_iou": len(per_chip),
            "scored_pixels": total.scored,
            "unpredicted_pixels": total.unpredicted,
            "tp": total.tp, "fp": total.fp, "fn": total.fn, "tn": total.tn,
        }
