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
