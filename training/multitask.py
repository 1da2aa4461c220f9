"""The networks trained beside the exported one by the methods of the two other seed
papers. Each wraps the segmentation network the product exports (``model``) with
``heads`` that only training uses; checkpoints keep the two apart, so a run's
``best.pt`` exports like any other.

- :class:`ChipClassifier` (seed paper 002, Boehm et al., landslides): stage 1 learns
  whether a crop holds any of the target, from chip-level labels; stage 2 (method
  ``pretrained``) segments, its encoder started from stage 1's. Here the chip labels
  come from Sen1Floods11's weak labels (a crop "holds water" when at least
  :data:`HOLDS_WATER` of its labelled pixels are water): the cheap, plentiful labels,
  as chip-level ones are beside hand-drawn masks.
- :class:`FloraTrainee` (seed paper 003, FLoRA): an S1 network with a second decoder
  that reconstructs the optical image (RGB + NDVI) from SAR, and adapters that bring
  its encoder's feature pyramid onto a frozen optical teacher's (feature
  distillation). FLoRA's cross-attention and FiLM fusion, which mix optical features
  into the SAR path, are left out: the product runs on Sentinel-1 alone, and the
  summary of the paper does not give their form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.compact import CompactSegNet, ResidualSeparable

HOLDS_WATER = 0.01   # share of a crop's labelled pixels; ours: 002 has "contains any"
PYRAMID = (1, 2, 3)  # feature levels distilled: strides 4, 8, 16 (of 2, 4, 8, 16)


def holds_water(label: Tensor) -> Tensor:
    """A crop's chip-level label ``(H, W)`` -> 1.0, 0.0, or -1.0 with no labelled pixel."""
    known = label >= 0
    if not known.any():
        return torch.tensor(-1.0)
    share = (label == 1).sum() / known.sum()
    return (share >= HOLDS_WATER).float()


def _compact(model: nn.Module, method: str) -> CompactSegNet:
    if not isinstance(model, CompactSegNet):
        raise ValueError(f"method {method!r} trains the compact network, not {type(model).__name__}")
    return model


class ChipClassifier(nn.Module):
    """The network's encoder, global average pooling and one linear layer: the logit
    that a crop holds water, ``(N,)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model = _compact(model, "chip_classifier")
        self.encoder = nn.Sequential(*(getattr(model, name) for name in model.encoder))
        self.heads = nn.Linear(model.channels[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.heads(self.encoder(x).mean(dim=(2, 3)))[:, 0]


class ReconstructionDecoder(nn.Module):
    """The segmentation decoder's shape, ending in ``out_channels`` values in [0, 1]."""

    def __init__(self, channels: tuple[int, ...], out_channels: int):
        super().__init__()
        c2, c4, _, c16 = channels
        self.project4 = nn.Conv2d(c16, c4, 1)
        self.fuse4 = ResidualSeparable(c4)
        self.project2 = nn.Conv2d(c4, c2, 1)
        self.fuse2 = ResidualSeparable(c2)
        self.out = nn.Conv2d(c2, out_channels, 1)

    def forward(self, s2: Tensor, s4: Tensor, s16: Tensor, size: tuple[int, int]) -> Tensor:
        y = self.fuse4(CompactSegNet._up_add(self.project4(s16), s4))
        y = self.fuse2(CompactSegNet._up_add(self.project2(y), s2))
        return F.interpolate(self.out(y), size=size, mode="bilinear",
                             align_corners=False).sigmoid()


class FloraTrainee(nn.Module):
    """``forward(x)`` -> (class logits, reconstructed optical image, adapted features of
    the :data:`PYRAMID` levels, to compare with the teacher's)."""

    def __init__(self, model: nn.Module, teacher: nn.Module, optical_channels: int):
        super().__init__()
        self.model = _compact(model, "flora")
        teacher = _compact(teacher, "flora's teacher")
        self.heads = nn.ModuleDict({
            "reconstruct": ReconstructionDecoder(self.model.channels, optical_channels),
            "adapt": nn.ModuleList(nn.Conv2d(self.model.channels[i], teacher.channels[i], 1)
                                   for i in PYRAMID)})

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        pyramid = self.model.features(x)
        s2, s4, _, s16 = pyramid
        size = tuple(x.shape[-2:])
        logits = F.interpolate(self.model.decode_features(s2, s4, s16), size=size,
                               mode="bilinear", align_corners=False)
        optical = self.heads["reconstruct"](s2, s4, s16, size)
        adapted = [a(pyramid[i]) for a, i in zip(self.heads["adapt"], PYRAMID)]
        return logits, optical, adapted


def teacher_pyramid(teacher: nn.Module, x: Tensor) -> list[Tensor]:
    """The frozen teacher's features at the :data:`PYRAMID` levels."""
    pyramid = teacher.features(x)
    return [pyramid[i] for i in PYRAMID]
