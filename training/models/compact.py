"""A compact encoder-decoder for fast CPU inference in the plugin (our design, not
the paper's): the student the product ships.

Same interface as :class:`~training.models.deeplab.DeepLabV3Plus`: any number of
input channels in, class logits at the input's size out. It keeps DeepLabv3+'s
ideas at a fraction of the cost: separable convs throughout, an output stride of
16 with a cascade of atrous convs (rates 2, 4, 8 by default) for context, a global-pooling
channel gate in place of ASPP, and decoder skips at stride 4 and 2.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBNReLU, SegmentationModel, SeparableConv, scaled

COMPACT_RATES = (2, 4, 8)


class ResidualSeparable(nn.Module):
    """``relu(x + sepconv(x))``: a separable conv with an identity shortcut."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv = SeparableConv(channels, channels, dilation=dilation, relu_out=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.conv(x))


class PoolGate(nn.Module):
    """Scale channels by a gate from global average pooling (image-level context)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1),
                                  nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class CompactSegNet(SegmentationModel):
    """Compact student: returns logits ``(N, num_classes, H, W)``.

    The decoder adds (rather than concatenates) each skip to the upsampled deeper
    features, after a 1x1 projection done before upsampling (the two commute), so
    the full-resolution stages move few channels.
    """

    size_multiple = 16
    encoder = ("stage2", "stage4", "stage8", "stage16")   # what chip-level pretraining trains

    def __init__(self, in_channels: int, num_classes: int = 2, width: float = 1.0,
                 rates: tuple[int, ...] = COMPACT_RATES):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = c2, c4, c8, c16 = tuple(scaled(n, width) for n in (16, 32, 64, 128))
        self.stage2 = ConvBNReLU(in_channels, c2, stride=2)
        self.stage4 = nn.Sequential(SeparableConv(c2, c4, stride=2), ResidualSeparable(c4))
        self.stage8 = nn.Sequential(SeparableConv(c4, c8, stride=2), ResidualSeparable(c8))
        self.stage16 = nn.Sequential(SeparableConv(c8, c16, stride=2),
                                     *(ResidualSeparable(c16, d) for d in rates),
                                     PoolGate(c16))
        self.project4 = nn.Conv2d(c16, c4, 1)
        self.fuse4 = ResidualSeparable(c4)
        self.project2 = nn.Conv2d(c4, c2, 1)
        self.fuse2 = ResidualSeparable(c2)
        self.classifier = nn.Conv2d(c2, num_classes, 1)

    @staticmethod
    def _up_add(x: Tensor, skip: Tensor) -> Tensor:
        return skip + F.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                    align_corners=False)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The encoder's feature pyramid at strides 2, 4, 8 and 16."""
        s2 = self.stage2(x)
        s4 = self.stage4(s2)
        s8 = self.stage8(s4)
        return s2, s4, s8, self.stage16(s8)

    def decode_features(self, s2: Tensor, s4: Tensor, s16: Tensor) -> Tensor:
        """Class logits at stride 2 from the pyramid."""
        y = self.fuse4(self._up_add(self.project4(s16), s4))
        y = self.fuse2(self._up_add(self.project2(y), s2))
        return self.classifier(y)

    def decode(self, x: Tensor) -> Tensor:
        """Class logits at stride 2."""
        s2, s4, _, s16 = self.features(x)
        return self.decode_features(s2, s4, s16)
