"""Training losses (Garg et al., Section 3): cross-entropy weighted up on the
edges of the label, and the cross-modal distillation loss. Label -1 is ignored.

Both reduce to a mean over the pixels that count, so their scale does not depend
on how much of a batch is no-data; under DDP, a mean over the global batch (see
:func:`weighted_mean`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ddp

IGNORE = -1


def edge_mask(label: Tensor, radius: int) -> Tensor:
    """Pixels within ``radius`` (Chebyshev distance) of the water/dry boundary.

    ``label`` is ``(N, H, W)`` with 0 dry, 1 water, -1 ignored. The inner edge is
    water near dry, the outer edge dry near water; ignored pixels are neither.
    """
    water = (label == 1).float().unsqueeze(1)
    dry = (label == 0).float().unsqueeze(1)
    k = 2 * radius + 1
    near_water = F.max_pool2d(water, k, stride=1, padding=radius) > 0
    near_dry = F.max_pool2d(dry, k, stride=1, padding=radius) > 0
    inner = (water > 0) & near_dry
    outer = (dry > 0) & near_water
    return (inner | outer).squeeze(1)


def edge_weights(label: Tensor, edge_weight: float, radius: int) -> Tensor:
    """Per-pixel weights: ``edge_weight`` on edges, 1 elsewhere, 0 where label is -1."""
    w = torch.ones(label.shape, dtype=torch.float32, device=label.device)
    w[edge_mask(label, radius)] = edge_weight
    w[label == IGNORE] = 0.0
    return w


def weighted_mean(values: Tensor, weights: Tensor, d: ddp.Dist | None = None) -> Tensor:
    """``sum(weights * values) / sum(weights)``; 0 (with a gradient path) when the
    weights are all 0.

    Under DDP (``d``) each rank holds a slice of the global batch and DDP averages
    the ranks' gradients, so a rank returns its share ``world * sum_r(weights *
    values) / sum(weights)``, the weight summed over every rank: the averaged
    gradient is then the one of a single process on the whole batch, however the
    scored pixels fall between the slices (a per-rank mean would weigh a pixel of
    a slice that is mostly no-data more).
    """
    if d is None or not d.active:
        return (weights * values).sum() / weights.sum().clamp(min=1.0)
    return d.world * (weights * values).sum() / ddp.all_sum(weights.sum(), d).clamp(min=1.0)


def edge_weighted_ce(logits: Tensor, label: Tensor, edge_weight: float = 2.0,
                     radius: int = 2, d: ddp.Dist | None = None) -> Tensor:
    """Cross-entropy with edge weighting: ``sum(w * ce) / sum(w)`` over the batch.

    ``logits`` ``(N, K, H, W)``; ``label`` ``(N, H, W)`` int64. Returns 0 (with a
    gradient path) when no pixel is labelled.
    """
    w = edge_weights(label, edge_weight, radius)
    ce = F.cross_entropy(logits, label.clamp(min=0), reduction="none")
    return weighted_mean(ce, w, d)


def distillation_loss(student_logits: Tensor, teacher_prob: Tensor, valid: Tensor,
                      d: ddp.Dist | None = None) -> Tensor:
    """``L_KD = -sum_k p_t,k log p_s,k`` averaged over valid pixels (Section 3.2).

    It differs from KL(p_t || p_s) only by the teacher's entropy, a constant for the
    student, so the gradients are those of the KL divergence. ``teacher_prob``
    ``(N, K, H, W)`` sums to 1 over K; ``valid`` ``(N, H, W)`` bool marks pixels
    where the inputs had data.
    """
    log_ps = F.log_softmax(student_logits, dim=1)
    per_pixel = -(teacher_prob * log_ps).sum(dim=1)
    return weighted_mean(per_pixel, valid.float(), d)


# Losses of the FLoRA-style method (seed paper 003, whose summary names them and gives
# no weights or windows): Dice beside the edge-weighted cross-entropy for the mask,
# Charbonnier, SSIM and FFT magnitude for the SAR-to-optical reconstruction, and a
# feature-distillation term. Each is a mean over the pixels that count.

def dice_loss(logits: Tensor, label: Tensor, d: ddp.Dist | None = None) -> Tensor:
    """``1 - 2 sum(p y) / (sum(p) + sum(y))`` of the water probability over labelled
    pixels (sums over the global batch under DDP); 1, with no gradient, where nothing is
    labelled."""
    p = torch.softmax(logits, dim=1)[:, 1]
    known = (label != IGNORE).float()
    y = (label == 1).float()
    sums = torch.stack([(p * y * known).sum(), ((p + y) * known).sum()])
    if d is not None and d.active:
        sums = ddp.all_sum(sums, d) / d.world   # DDP averages the ranks' gradients
    return 1.0 - 2.0 * sums[0] / sums[1].clamp(min=1.0)


def charbonnier(pred: Tensor, target: Tensor, valid: Tensor, eps: float = 1e-3,
                d: ddp.Dist | None = None) -> Tensor:
    """``sqrt((pred - target)^2 + eps^2)``, a smooth L1 (Charbonnier et al., 1994),
    averaged over channels and ``valid`` pixels; ``(N, C, H, W)``, ``valid (N, H, W)``."""
    per_pixel = torch.sqrt((pred - target) ** 2 + eps * eps).mean(dim=1)
    return weighted_mean(per_pixel, valid.float(), d)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_loss(pred: Tensor, target: Tensor, valid: Tensor,
              d: ddp.Dist | None = None) -> Tensor:
    """``1 - SSIM`` averaged over channels and ``valid`` pixels, for values in [0, 1]:
    Wang et al. (2004), 11 x 11 Gaussian window of sigma 1.5, C1 = 0.01^2, C2 = 0.03^2."""
    c = pred.shape[1]
    w = _gaussian_window().to(pred).expand(c, 1, -1, -1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, padding=w.shape[-1] // 2, groups=c)
    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p ** 2
    var_t = blur(target * target) - mu_t ** 2
    cov = blur(pred * target) - mu_p * mu_t
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)
            / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2)))
    return weighted_mean(1.0 - ssim.mean(dim=1), valid.float(), d)


def fft_magnitude_loss(pred: Tensor, target: Tensor, valid: Tensor,
                       d: ddp.Dist | None = None) -> Tensor:
    """Mean absolute difference of the 2-D Fourier magnitudes (orthonormal), each image
    taken as 0 where ``valid`` is false, so that no-data agrees; per image, weighted by
    its share of valid pixels."""
    keep = valid.unsqueeze(1).to(pred.dtype)
    mag_p = torch.fft.rfft2(pred * keep, norm="ortho").abs()
    mag_t = torch.fft.rfft2(target * keep, norm="ortho").abs()
    per_image = (mag_p - mag_t).abs().mean(dim=(1, 2, 3))
    return weighted_mean(per_image, valid.float().mean(dim=(1, 2)), d)


def feature_distillation_loss(student: list[Tensor], teacher: list[Tensor], valid: Tensor,
                              d: ddp.Dist | None = None) -> Tensor:
    """Mean over pyramid levels of the squared distance (0 to 4) between
    channel-normalised student and teacher features (scale-free: the two networks'
    activations differ in size), averaged over the cells whose pixels are all ``valid``."""
    total = torch.zeros((), device=valid.device)
    for s, t in zip(student, teacher):
        cell = -F.adaptive_max_pool2d(-valid.float().unsqueeze(1), s.shape[-2:])[:, 0]
        gap = ((F.normalize(s, dim=1) - F.normalize(t, dim=1)) ** 2).sum(dim=1)
        total = total + weighted_mean(gap, cell, d)
    return total / len(student)
