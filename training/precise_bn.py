"""Precise batch-norm statistics: recompute them on whole chips before scoring.

Batch norm's running averages are gathered during training, over small batches
of augmented crops, while the weights move. With the ``cpu`` preset's batch of
8 x 128 px crops they end up far from the statistics the same weights produce on
whole 512 px chips, and the network scores much worse in eval mode than it
really is (measured on the synthetic valid split, hand-labelled DeepLab row:
IoU 0.47 with the running averages, 0.65 after recomputing them on 64 training
chips). Recomputing the averages for the final weights, as an equal-weight mean
over a fixed set of training chips, is the "precise BN" of Wu & Johnson,
*Rethinking "Batch" in BatchNorm* (2021), Section 3.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MethodType

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .batches import derive_seed, stack_inputs
from .transforms import to_grid


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every batch-norm layer's running mean and variance by their average
    over ``batches`` (each batch weighs the same); returns the number of batches.

    Only the batch-norm layers run in training mode, so dropout is off as it is
    when the network is scored; the model's own mode is restored afterwards.

    SyncBatchNorm layers (GPU DDP, :func:`training.ddp.wrap`) run as plain batch
    norm here. Synchronised, they would all-gather every rank's statistics: a
    collective that hangs unless every rank recalibrates too, and that, given the
    same chips on every rank, counts each pixel once per rank (the running
    variance's n / (n - 1) would then use n times the world size). As plain batch
    norm, every rank given the same ``batches`` computes the statistics of a
    single process, with no collective.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
        if isinstance(m, nn.SyncBatchNorm):
            m.forward = MethodType(nn.modules.batchnorm._BatchNorm.forward, m)
    n = 0
    try:
        for x in batches:
            model(x)
            n += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
            m.__dict__.pop("forward", None)  # SyncBatchNorm's own forward again
        model.train(was_training)
    return n


def calibration_batches(pools: Sequence[Dataset], inputs: Sequence[str], chips: int,
                        batch: int, seed: int, device: torch.device,
                        scale: float = 1.0) -> list[Tensor]:
    """``chips`` whole training chips, unaugmented, drawn equally from every pool
    in a fixed seeded order, stacked as the model's ``inputs`` and resampled to
    the model's grid (``scale``: model pixels per chip pixel)."""
    orders = [torch.randperm(len(p), generator=torch.Generator().manual_seed(
        derive_seed(seed, "precise_bn", i))).tolist() for i, p in enumerate(pools)]
    # round robin over the pools; a pool that runs out leaves its turns to the others
    picks = [(i, order[j]) for j in range(max(len(o) for o in orders))
             for i, order in enumerate(orders) if j < len(order)][:chips]
    out, xs = [], []
    for i, j in picks:
        x = stack_inputs(pools[i][j], inputs)
        if xs and (len(xs) == batch or x.shape != xs[0].shape):  # chips of another ground grid
            out.append(to_grid(torch.stack(xs).to(device), scale))
            xs = []
        xs.append(x)
    if xs:
        out.append(to_grid(torch.stack(xs).to(device), scale))
    return out
