"""Building blocks shared by the segmentation models: conv + BN + ReLU and the
depthwise-separable convolution of Xception (Chollet, 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled(channels: int, width: float, multiple: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``multiple`` (at least ``multiple``),
    so narrow variants keep SIMD-friendly channel counts."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)


class ConvBNReLU(nn.Sequential):
    """k x k convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel // 2),
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SeparableConv(nn.Module):
    """Depthwise 3x3 (strided or atrous) -> BN -> ReLU -> pointwise 1x1 -> BN [-> ReLU].

    The BN + ReLU after the depthwise step is DeepLabv3+'s change to Xception
    (Chen et al., 2018, Section 3.2); ``relu_out`` adds one after the pointwise step.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1,
                 relu_out: bool = True):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation,
                                   groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.relu_out = relu_out

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn_dw(self.depthwise(x)))
        x = self.bn_pw(self.pointwise(x))
        return self.relu(x) if self.relu_out else x


class SegmentationModel(nn.Module):
    """Base of the segmentation models: subclasses define :meth:`decode`, the class
    logits at a reduced resolution; ``forward`` upsamples them to the input size."""

    in_channels: int
    num_classes: int
    size_multiple: int

    def decode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, num_classes, H, W)`` at the input's size."""
        return F.interpolate(self.decode(x), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)

    def water_probability(self, x: Tensor) -> Tensor:
        """P(water) ``(N, 1, H, W)``, equal to ``softmax(forward(x))[:, 1:2]`` for two classes.

        With two classes softmax is the sigmoid of the logit difference, and bilinear
        upsampling is linear, so the difference is taken before upsampling: one
        channel to resize and no full-resolution softmax (the costliest ops of the
        compact model in ONNX Runtime).
        """
        logits = self.decode(x)
        diff = logits[:, 1:2] - logits[:, 0:1]
        return torch.sigmoid(F.interpolate(diff, size=x.shape[-2:], mode="bilinear",
                                           align_corners=False))
