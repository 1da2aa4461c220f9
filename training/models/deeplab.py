"""DeepLabv3+ (Chen et al., 2018) on the Xception-65 encoder, with the two-skip
decoder of Garg et al. (Appendix B): the ASPP output is refined at stride 4 and
again at stride 2 before the classifier.

ASPP at output stride 16: a 1x1 branch, three 3x3 atrous separable branches with
rates 6, 12 and 18, and an image-pooling branch; concatenated and projected to 256
channels. Each decoder stage upsamples, concatenates a 1x1 projection of the
encoder skip (48 channels at stride 4, as in DeepLabv3+; 32 at stride 2, our
choice) and applies two separable convs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBNReLU, SegmentationModel, SeparableConv, scaled
from .xception import Xception65

ASPP_RATES = (6, 12, 18)
OUTPUT_STRIDE = 16


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with an image-level branch."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = ASPP_RATES,
                 dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(cin, cout, kernel=1)]
            + [SeparableConv(cin, cout, dilation=r) for r in rates])
        # no BN on the pooled branch: a 1x1 map has one value per channel per image,
        # so its batch statistics are degenerate for small per-device batches
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1),
                                  nn.ReLU(inplace=True))
        self.project = nn.Sequential(ConvBNReLU(cout * (len(rates) + 2), cout, kernel=1),
                                     nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class DecoderStage(nn.Module):
    """Upsample to the skip's size, concatenate its 1x1 projection, two separable convs."""

    def __init__(self, cin: int, skip_in: int, skip_out: int, cout: int):
        super().__init__()
        self.skip = ConvBNReLU(skip_in, skip_out, kernel=1)
        self.fuse = nn.Sequential(SeparableConv(cin + skip_out, cout), SeparableConv(cout, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, self.skip(skip)], dim=1))


class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+/Xception-65 for any number of input channels; returns class logits
    ``(N, num_classes, H, W)`` at the input's size. ``width`` scales every channel
    count (1.0 is the paper's network); ``rates`` are the ASPP atrous rates.

    Rates must suit the training crop: a tap that falls outside the stride-16 map
    of every training crop only ever sees zero padding, so its weight is never
    learnt, yet it sees real features on larger inference tiles.
    """

    size_multiple = OUTPUT_STRIDE

    def __init__(self, in_channels: int, num_classes: int = 2, width: float = 1.0,
                 rates: tuple[int, ...] = ASPP_RATES, zero_init_residual: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = Xception65(in_channels, width, zero_init_residual)
        c = scaled(256, width)
        self.aspp = ASPP(self.encoder.out_channels, c, tuple(rates))
        skips = self.encoder.skip_channels
        self.decode4 = DecoderStage(c, skips["s4"], scaled(48, width), c)
        self.decode2 = DecoderStage(c, skips["s2"], scaled(32, width), c)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def decode(self, x: Tensor) -> Tensor:
        """Class logits at stride 2."""
        feats = self.encoder(x)
        y = self.aspp(feats["s16"])
        y = self.decode4(y, feats["s4"])
        y = self.decode2(y, feats["s2"])
        return self.classifier(y)
