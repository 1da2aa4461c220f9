"""Augmentations (Garg et al., Section 3.1: random crop with distortion,
horizontal/vertical flips and colour jitter), on one sample at a time.

A sample is a dict of tensors: images ``(C, H, W)`` float, label-like maps
``(H, W)`` (int labels, bool masks). Geometric transforms move every map of a
sample together, so the teacher's stacked input, the student's S1 input and the
labels stay pixel-aligned; the photometric jitter is applied only to the tensor
a model is trained on, after the geometry (for distillation, the student's S1,
never the teacher's input).

Every random draw comes from a ``torch.Generator`` passed in, so a step's batch
is a pure function of (seed, step): runs resume with the same batches and DDP
ranks agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.conventions import IGNORE

Sample = dict[str, Tensor]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def to_grid(x: Tensor, scale: float) -> Tensor:
    """Images ``(N, C, H, W)`` resampled by ``scale`` (model pixels per chip pixel),
    at least 16 px a side: chips as a model trained at another pixel size sees them."""
    if scale == 1.0:
        return x
    h, w = x.shape[-2:]
    return resize(x, (max(16, round(h * scale)), max(16, round(w * scale))))


def resize(t: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (antialiased when shrinking) for float images ``(C, H, W)`` or
    ``(N, C, H, W)``; nearest for label-like maps ``(H, W)``."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    if t.is_floating_point() and t.ndim in (3, 4):
        shrink = size[0] < t.shape[-2] or size[1] < t.shape[-1]
        batch = t if t.ndim == 4 else t[None]
        out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False,
                            antialias=shrink)
        return out if t.ndim == 4 else out[0]
    # "nearest-exact" samples pixel centres, as bilinear with align_corners=False
    # does; plain "nearest" would shift labels by up to half a pixel against images
    return F.interpolate(t[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(t.dtype)


@dataclass(frozen=True)
class CropDistort:
    """Crop a box of random size and aspect ratio and resample it to ``size`` x ``size``.

    The box side is ``size / scale`` times a zoom drawn from ``zoom``, its aspect
    ratio (w/h) is drawn log-uniformly from ``aspect``. A box larger than the sample
    along an axis covers it there, the part outside filled as no data (images 0,
    masks False, labels IGNORE), as DeepLab pads its crops: clipping it would turn
    every zoom out into a zoom in. ``scale`` is output pixels per source pixel: 10/16
    trains a 16 m model on 10 m chips. ``zoom=(1, 1), aspect=(1, 1), scale=1`` is a
    plain crop.
    """
    size: int
    zoom: tuple[float, float] = (0.75, 1.25)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    scale: float = 1.0

    def __call__(self, sample: Sample, g: torch.Generator) -> Sample:
        h, w = next(iter(sample.values())).shape[-2:]
        zoom = _uniform(g, *self.zoom) / self.scale
        ratio = math.exp(_uniform(g, math.log(self.aspect[0]), math.log(self.aspect[1])))
        bh = max(1, round(self.size * zoom / math.sqrt(ratio)))
        bw = max(1, round(self.size * zoom * math.sqrt(ratio)))
        top, left = _start(g, h, bh), _start(g, w, bw)
        if bh <= h and bw <= w:
            return {k: resize(v[..., top:top + bh, left:left + bw], (self.size, self.size))
                    for k, v in sample.items()}
        return _padded_crop(sample, top, left, bh, bw, self.size)


def _start(g: torch.Generator, n: int, box: int) -> int:
    """Where a box of ``box`` px starts on an axis of ``n`` px: inside it when it fits,
    else covering it; one draw of ``|n - box| + 1`` values either way."""
    return min(0, n - box) + int(torch.randint(0, abs(n - box) + 1, (), generator=g))


def _padded_crop(sample: Sample, top: int, left: int, bh: int, bw: int, size: int) -> Sample:
    """The box of every map resampled to ``size`` x ``size``, no data where it lies
    outside the maps: images 0, masks False, labels IGNORE. Images are resampled with
    their edge pixels repeated outwards, so the fill does not bleed into the data."""
    h, w = next(iter(sample.values())).shape[-2:]
    rows, cols = torch.arange(top, top + bh)[:, None], torch.arange(left, left + bw)
    inside = resize((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w), (size, size))
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    return {k: resize(v[..., rows, cols], (size, size)).where(inside, _no_data(v))
            for k, v in sample.items()}


def _no_data(t: Tensor) -> float | bool | int:
    """The no-data fill of a map: 0 for images, False for masks, IGNORE for labels."""
    if t.is_floating_point():
        return 0.0
    return False if t.dtype == torch.bool else IGNORE


def random_flips(sample: Sample, g: torch.Generator) -> Sample:
    """Horizontal and vertical flips, each with probability 1/2, on every map."""
    dims = [d for d in (-1, -2) if float(torch.rand((), generator=g)) < 0.5]
    return {k: v.flip(dims) for k, v in sample.items()} if dims else sample


@dataclass(frozen=True)
class ColourJitter:
    """Brightness and contrast jitter of a normalised image, one draw per group of channels.

    Within each group ``x' = M + c * (x - M) + b``, with one ``c`` in
    ``[1 - contrast, 1 + contrast]``, one ``b`` in ``[-brightness, brightness]`` and
    ``M`` the group's mean over its channels and valid pixels. With a group per
    sensor (S1's VV/VH, S2's bands) the difference of two bands only scales by
    ``c``, so its sign, which spectral indices such as NDWI threshold, is kept;
    with a group per channel a bias of 0.1 moves green - NIR by up to 0.2, as
    much as the whole water margin of the normalised S2. Pixels outside
    ``valid`` stay 0 (the no-data fill) and do not enter the mean.
    """
    brightness: float = 0.1
    contrast: float = 0.2

    def __call__(self, image: Tensor, valid: Tensor, g: torch.Generator,
                 groups: Sequence[int] | None = None) -> Tensor:
        """``groups``: channels per draw, in order (default: one per channel, as the
        config's default ``jitter_groups``)."""
        groups = list(groups) if groups else [1] * image.shape[0]
        if sum(groups) != image.shape[0]:
            raise ValueError(f"channel groups {groups} do not add up to {image.shape[0]} channels")
        v = valid.to(image.dtype)
        n = v.sum().clamp(min=1)
        gains = 1 + self.contrast * (2 * torch.rand(len(groups), generator=g) - 1)
        biases = self.brightness * (2 * torch.rand(len(groups), generator=g) - 1)
        out = []
        for part, gain, bias in zip(image.split(groups), gains, biases):
            mean = (part * v).sum() / (n * part.shape[0])
            out.append(mean + gain * (part - mean) + bias)
        return torch.cat(out) * v
