"""PyTorch datasets over checked chip lists (see ``sets.py``).

An item is a dict:

- ``id``: chip id (str)
- ``s1``: float32 ``(2, H, W)``, VV and VH normalised per Garg et al. Appendix A
- ``valid``: bool ``(H, W)``, the Sentinel-1 pixels with data in both bands
- ``label`` (hand labels) or ``weak_label`` (the weak and external sets):
  int64 ``(H, W)``, 1 water, 0 dry, -1 ignore (also where S1 is invalid)
- ``s2``, ``s2_valid``: float32 ``(4, H, W)`` B2, B3, B4, B8 normalised, and its
  validity, and ``ndvi`` float32 ``(1, H, W)`` in [0, 1]
  (:func:`~training.data.conventions.ndvi01`), when the dataset was built with Sentinel-2

Items lie on a grid of ``CHIP_PIXEL_M`` ground pixels: a chip whose pixels are more than
the backend's tolerance away from it either way (Sen1Floods11's EPSG:4326 chips away from
the equator: 7.9 x 10.0 m in Spain) is resampled to it, as the backend resamples such an
input for a model, so that a network learns and is scored on the ground it will be shown.

Augmentation belongs to the training transforms, not here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .conventions import (CHIP_PIXEL_M, IGNORE, TEACHER_S2_BANDS, ndvi01, normalise_s1,
                          normalise_s2)
from ..transforms import resize
from .io import ground_pixel_m, read_label, read_s1, read_s2
from .layout import ChipFiles, DatasetError
from .sets import external_chips, hand_chips, weak_chips


class ChipDataset(Dataset):
    """Chips as tensors; ``s2`` only if every chip has that layer."""

    def __init__(self, chips: list[ChipFiles], *, label_key: str = "label", s2: bool = False):
        if s2 and any(c.s2 is None for c in chips):
            raise DatasetError("Sentinel-2 was asked for, but some chips have no S2 layer")
        self.chips = list(chips)
        self.label_key = label_key
        self.with_s2 = s2

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> dict:
        chip = self.chips[index]
        s1, valid = normalise_s1(read_s1(chip.s1))
        item = {"id": chip.chip_id, "s1": torch.from_numpy(s1), "valid": torch.from_numpy(valid)}
        if chip.label is not None:
            item[self.label_key] = torch.from_numpy(_ignore_invalid(read_label(chip.label), valid))
        if self.with_s2:
            raw = read_s2(chip.s2, TEACHER_S2_BANDS)
            s2, s2_valid = normalise_s2(raw)
            item["s2"] = torch.from_numpy(s2)
            item["s2_valid"] = torch.from_numpy(s2_valid)
            b4, b8 = (raw[TEACHER_S2_BANDS.index(b)] for b in ("B4", "B8"))
            item["ndvi"] = torch.from_numpy(ndvi01(b4, b8, s2_valid))
        return on_ground_grid(item, ground_pixel_m(chip.s1))


def on_ground_grid(item: dict, pixel_m: tuple[float, float] | None) -> dict:
    """``item`` resampled to ``CHIP_PIXEL_M`` ground pixels where its own, (height, width)
    ``pixel_m``, differ from them by more than the backend's tolerance either way (the rule
    by which the backend resamples an input to a model's pixel size)."""
    from backend.engine import RESAMPLE_TOLERANCE   # here: onnxruntime only when asked
    if pixel_m is None or all(abs(v / CHIP_PIXEL_M - 1) <= RESAMPLE_TOLERANCE for v in pixel_m):
        return item
    h, w = item["valid"].shape
    size = (max(1, round(h * pixel_m[0] / CHIP_PIXEL_M)), max(1, round(w * pixel_m[1] / CHIP_PIXEL_M)))
    # the float maps are normalised to 0..1; resampling's rounding strays past by 1e-7
    return {k: v if k == "id" else resize(v, size).clamp(0, 1) if v.is_floating_point()
            else resize(v, size) for k, v in item.items()}


def _ignore_invalid(label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = label.astype(np.int64)
    out[~valid] = IGNORE
    return out


def hand_labeled(root: str | Path, split: str, *, s2: bool = True,
                 split_file: str | Path | None = None) -> ChipDataset:
    """Sen1Floods11 hand-labelled ``train``/``valid``/``test``/``bolivia``."""
    return ChipDataset(hand_chips(root, split, split_file=split_file, s2=s2), s2=s2)


def weakly_labeled(root: str | Path, *, s2: bool = False) -> ChipDataset:
    """Sen1Floods11 weakly labelled S1 chips with their S2 index labels."""
    return ChipDataset(weak_chips(root, s2=s2), label_key="weak_label", s2=s2)


def external(root: str | Path, split: str = "train", *, s2: bool = True) -> ChipDataset:
    """The external paired S1 + S2 set with NDWI weak labels."""
    return ChipDataset(external_chips(root, split, s2=s2), label_key="weak_label", s2=s2)
