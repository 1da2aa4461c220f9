"""Training batches as a pure function of (seed, step).

Step ``k``'s global batch takes ``batch_size / len(pools)`` chips from every pool
(equal sampling across sources), walks each pool epoch by epoch in a seeded
permutation, and draws each chip's augmentation from a generator seeded by
(seed, step, position in the batch). So a resumed run sees exactly the batches it
would have seen, whatever the number of DDP ranks: rank ``r`` of ``w`` takes the
``r``-th contiguous slice of the global batch (the interleaved order gives every
slice the same share of each pool).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from .config import TrainConfig
from .methods import INPUT_CHANNELS
from .multitask import holds_water
from .transforms import ColourJitter, CropDistort, Sample, random_flips

SampleBuilder = Callable[[Sample, torch.Generator], Sample]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of values (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class PoolSampler:
    """Index ``j`` of an endless, epoch-wise shuffled walk over ``n`` items."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, j: int) -> int:
        epoch = j // self.n
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return int(self._perm[j % self.n])


class StepBatches(Dataset):
    """``batches[k]`` is this rank's share of step ``k``'s batch, collated."""

    def __init__(self, pools: Sequence[Dataset], batch_size: int, build: SampleBuilder,
                 seed: int, steps: int, rank: int = 0, world: int = 1):
        if batch_size % (len(pools) * world):
            raise ValueError(f"batch_size {batch_size} must split evenly over "
                             f"{len(pools)} data source(s) x {world} process(es)")
        self.pools, self.build, self.seed, self.steps = list(pools), build, seed, steps
        self.per_pool = batch_size // len(pools)
        self.local = batch_size // world
        self.first = rank * self.local
        self.samplers = [PoolSampler(len(p), derive_seed(seed, "pool", i))
                         for i, p in enumerate(pools)]

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        samples = []
        for pos in range(self.first, self.first + self.local):
            pool, slot = pos % len(self.pools), pos // len(self.pools)
            index = self.samplers[pool](step * self.per_pool + slot)
            g = torch.Generator().manual_seed(derive_seed(self.seed, step, pos))
            samples.append(self.build(self.pools[pool][index], g))
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


RGB = [2, 1, 0]   # B4, B3, B2 of the s2 input (B2, B3, B4, B8)


def stack_inputs(sample: Sample, bands: Sequence[str], dim: int = 0) -> torch.Tensor:
    """A model's input: the sample's ``bands`` stacked along the channel axis ``dim``
    (0 for one chip, 1 for a batch); ``rgb`` is taken from ``s2``."""
    return torch.cat([sample["s2"].index_select(dim, torch.tensor(RGB)) if b == "rgb"
                      else sample[b] for b in bands], dim=dim)




def _groups(cfg: TrainConfig, sample: Sample, bands: Sequence[str]) -> list[int]:
    """Channels per colour-jitter draw: per sensor (S1, S2) or per channel."""
    sizes = [INPUT_CHANNELS[b] for b in bands]
    return sizes if cfg.jitter_groups == "sensor" else [1] * sum(sizes)


def supervised_builder(cfg: TrainConfig, inputs: Sequence[str], label_key: str,
                       scale: float = 1.0) -> SampleBuilder:
    """Augmented input ``x`` and its label (-1 where the input has no data);
    ``scale``: training pixels per chip pixel."""
    crop = CropDistort(cfg.crop, tuple(cfg.zoom), tuple(cfg.aspect), scale)
    jitter = ColourJitter(cfg.brightness, cfg.contrast)

    def build(sample: Sample, g: torch.Generator) -> Sample:
        label = sample[label_key].where(sample["valid"], torch.tensor(-1))
        maps = random_flips(crop({"x": stack_inputs(sample, inputs), "label": label,
                                  "valid": sample["valid"]}, g), g)
        return {"x": jitter(maps["x"], maps["valid"], g, _groups(cfg, sample, inputs)),
                "label": maps["label"]}
    return build


def distill_builder(cfg: TrainConfig, student_inputs: Sequence[str],
                    teacher_inputs: Sequence[str], scale: float = 1.0) -> SampleBuilder:
    """Student input ``x`` (geometry + colour jitter), teacher input ``x_teacher``
    (same geometry, no jitter: the teacher sees the data as it was trained on it),
    and ``valid``, where the loss counts: S1 has data and, for a teacher reading
    S2, so has S2 (elsewhere the teacher's soft label means nothing). The student's
    S1 is jittered with S1's own validity: it sees S1 wherever S1 has data, as at
    inference, S2's holes taken out of the loss alone."""
    crop = CropDistort(cfg.crop, tuple(cfg.zoom), tuple(cfg.aspect), scale)
    jitter = ColourJitter(cfg.brightness, cfg.contrast)

    def build(sample: Sample, g: torch.Generator) -> Sample:
        valid = sample["valid"] & sample["s2_valid"] if "s2" in teacher_inputs else sample["valid"]
        maps = random_flips(crop({"x": stack_inputs(sample, student_inputs),
                                  "x_teacher": stack_inputs(sample, teacher_inputs),
                                  "s1_valid": sample["valid"], "valid": valid}, g), g)
        return {"x": jitter(maps["x"], maps["s1_valid"], g,
                            _groups(cfg, sample, student_inputs)),
                "x_teacher": maps["x_teacher"], "valid": maps["valid"]}
    return build


def classify_builder(cfg: TrainConfig, inputs: Sequence[str], label_key: str,
                     scale: float = 1.0) -> SampleBuilder:
    """As :func:`supervised_builder`, the crop's label reduced to whether it holds water
    (:func:`~training.multitask.holds_water`): the chip-level label of stage 1 (002)."""
    crops = supervised_builder(cfg, inputs, label_key, scale)

    def build(sample: Sample, g: torch.Generator) -> Sample:
        out = crops(sample, g)
        return {"x": out["x"], "holds_water": holds_water(out["label"])}
    return build


def flora_builder(cfg: TrainConfig, inputs: Sequence[str], optical: Sequence[str],
                  scale: float = 1.0) -> SampleBuilder:
    """Student input ``x`` (geometry + colour jitter), its hand label where the chip
    has one (-1 elsewhere: the unlabelled pool), the teacher's optical input
    ``x_teacher``, which is also the reconstruction target (same geometry, no jitter),
    and ``valid_optical``, where both sensors have data."""
    crop = CropDistort(cfg.crop, tuple(cfg.zoom), tuple(cfg.aspect), scale)
    jitter = ColourJitter(cfg.brightness, cfg.contrast)

    def build(sample: Sample, g: torch.Generator) -> Sample:
        label = sample["label"] if "label" in sample else torch.full_like(
            sample["valid"], -1, dtype=torch.long)
        maps = random_flips(crop({"x": stack_inputs(sample, inputs),
                                  "x_teacher": stack_inputs(sample, optical),
                                  "label": label.where(sample["valid"], torch.tensor(-1)),
                                  "valid": sample["valid"],
                                  "valid_optical": sample["valid"] & sample["s2_valid"]},
                                 g), g)
        return {"x": jitter(maps["x"], maps["valid"], g, _groups(cfg, sample, inputs)),
                "x_teacher": maps["x_teacher"], "label": maps["label"],
                "valid_optical": maps["valid_optical"]}
    return build
