"""Training settings and the two presets, ``paper`` and ``cpu``.

A run's settings are one flat :class:`TrainConfig`; a preset fills it and
``--set key=value`` overrides single fields. Unknown keys and badly typed values
are refused with one message before anything is loaded.

``paper`` follows Garg et al., Appendix B: DeepLabv3+/Xception-65, batch 64,
321 x 321 crops, 30k steps of momentum SGD (0.9) with polynomial decay (power
0.9) to zero, and a grid over learning rate {0.3, 0.1, 0.003, 0.001} and weight
decay {1e-3, 1e-4, 1e-5, 1e-6} chosen on the validation split. Like the paper it
works at 16 m (chips resampled from their 10 m grid, Section 2.2).

``cpu`` keeps the methods and the architecture's layout but narrows the network
(width 0.25, smaller atrous rates to suit its crops), trains at the chips' own
10 m grid, shrinks crops, batch and steps and fixes the learning rate (chosen once
per row on validation; ``method_lr`` can set one per row) and the weight decay
instead of searching a grid, so that the whole table reproduces on 2 CPU cores in
under 2 hours (sized from step times measured on such a machine, given beside the
preset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, get_args, get_origin, get_type_hints

from .methods import BY_NAME
from .models import ARCHS, DEEPLAB
from .models.compact import COMPACT_RATES
from .models.deeplab import ASPP_RATES


JITTER_GROUPS = ("sensor", "channel")
PRECISIONS = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A preset, key or value that does not exist or does not fit."""


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "custom"
    # model: the big network (teacher, baselines, big student)
    arch: str = DEEPLAB
    width: float = 1.0
    rates: tuple[int, ...] = ASPP_RATES           # DeepLabv3+'s at output stride 16
    # start every Xception block as its shortcut (zero last BN scale of the branch):
    # the paper does not say how it initialised; False is how runs before 2026-11-21
    # started, and with it DeepLab learns far less in the cpu preset's 600 steps
    zero_init_residual: bool = True
    # the compact student of the ``student_compact`` row
    compact_arch: str = "compact"
    compact_width: float = 1.0
    compact_rates: tuple[int, ...] = COMPACT_RATES
    # the grid the model works on; chips are resampled to it (the paper: 16 m)
    pixel_size_m: float = 10.0
    # tiles the backend feeds the exported model (card tiling), at pixel_size_m;
    # the margin is the unreliable border: zero padding at a tile edge reaches
    # into the stride-16 features; four stride-16 cells is our choice
    tile_size: int = 512
    tile_margin: int = 64
    # optimisation (Appendix B)
    steps: int = 30000
    batch_size: int = 64
    crop: int = 321
    lr: float = 0.01
    weight_decay: float = 1e-4
    # weight decay on every parameter (PyTorch's SGD as given them all: the committed
    # cpu table's runs), or, as DeepLab's reference code, on the kernels of full
    # convolutions and linear layers only (not batch norm, biases or depthwise kernels)
    decay_all: bool = True
    momentum: float = 0.9
    poly_power: float = 0.9
    # "bfloat16" runs the training steps' forward passes under autocast (weights, optimiser
    # and validation stay float32): on a GPU with bf16 tensor cores, a faster step
    precision: str = "float32"
    # per-row learning rates, "method=lr" (e.g. "hand=0.01"), in place of lr for
    # those rows when there is no grid
    method_lr: tuple[str, ...] = ()
    # learning-rate x weight-decay grid searched on validation; empty = only lr/weight_decay
    lr_grid: tuple[float, ...] = ()
    wd_grid: tuple[float, ...] = ()
    # edge weighting of the cross-entropy (Section 3.1 gives no values: ours)
    edge_weight: float = 2.0
    edge_radius: int = 2
    # augmentation
    zoom: tuple[float, float] = (0.75, 1.25)
    aspect: tuple[float, float] = (0.75, 4 / 3)
    brightness: float = 0.1
    contrast: float = 0.2
    # colour jitter drawn per "channel" (the committed table's runs) or per "sensor",
    # which keeps the sign of band differences and so of spectral indices such as
    # NDWI (training.transforms.ColourJitter; measured in training/TRAINING.md)
    jitter_groups: str = "channel"
    # bookkeeping
    eval_every: int = 1000
    checkpoint_every: int = 200
    log_every: int = 10
    eval_batch: int = 4
    # before each validation, recompute batch-norm statistics on this many whole
    # training chips (training.precise_bn); 0 keeps the running averages
    precise_bn_chips: int = 0
    workers: int = 4
    cache: bool = False  # keep decoded chips in memory (see training.rundata)

    def lr_for(self, method: str) -> float:
        """A row's learning rate: its ``method_lr`` entry, else ``lr``."""
        for item in self.method_lr:
            name, value = _method_lr_entry(item)
            if name == method:
                return float(value)
        return self.lr

    def grid(self, method: str | None = None) -> list[tuple[float, float]]:
        """The (lr, weight_decay) pairs to search for a row; one pair when no grid is set."""
        lrs = self.lr_grid or (self.lr if method is None else self.lr_for(method),)
        wds = self.wd_grid or (self.weight_decay,)
        return [(lr, wd) for lr in lrs for wd in wds]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


_FIELD_TYPES = get_type_hints(TrainConfig)   # resolved: annotations are strings here

PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        # 16 m as the paper (Section 2.2): a 512 px chip at 10 m becomes 320 px, so
        # 321 px crops take whole chips and the backend feeds 320 px tiles, the
        # size the network was trained at
        width=1.0, pixel_size_m=16.0, tile_size=320, tile_margin=32,
        steps=30000, batch_size=64, crop=321,
        # lr/weight_decay: the grid point a single `train` uses; `reproduce` searches the grid
        lr=0.003, weight_decay=1e-4, decay_all=False,
        lr_grid=(0.3, 0.1, 0.003, 0.001), wd_grid=(1e-3, 1e-4, 1e-5, 1e-6),
        eval_every=1000, checkpoint_every=200, log_every=50, eval_batch=8, workers=8),
    "cpu": dict(
        # ASPP rates and compact dilations shrunk to the 8 x 8 stride-16 map of a
        # 128 px crop: with the paper's 6/12/18 most taps only ever see padding in
        # training and then meet real features on 512 px tiles (measured on
        # synthetic valid chips: IoU 0.31 on whole chips vs 0.68 in 128 px tiles)
        # Sized on this project's 2-core CPU (AMD EPYC, torch 2.13), one training step
        # of batch 8 x 128 px: DeepLab width 0.25 0.33 s with 2 threads on an idle
        # machine (0.43 s of CPU with 1 thread); distillation student (+ teacher
        # forward) 0.59 s and compact student 0.16 s of 1-thread CPU; scoring a 512 px
        # chip 0.28 s with 2 threads (DeepLab), 0.02 s (compact). With the default
        # synthetic set (446 chips each) that projects to about 29 min a seed, 90 min
        # for 3 seeds; measured: 27 min of training a seed, about 100 min for the whole
        # 3-seed table with scoring; `reproduce --estimate` measures the machine at hand.
        width=0.25, rates=(1, 2, 4), compact_width=1.0, compact_rates=(1, 2, 4),
        # batch norm's running averages over 8 x 128 px crops misjudge whole chips
        # (valid IoU 0.47 vs 0.65, see training.precise_bn), so they are recomputed
        # on 64 training chips before each validation
        steps=600, batch_size=8, crop=128, precise_bn_chips=64,
        # lr chosen per row on seed-0 validation IoU from {0.05, 0.01}
        # (training/TRAINING.md, Results): 0.05 for every row
        lr=0.05,
        weight_decay=1e-4, eval_every=300, checkpoint_every=50,
        log_every=10, eval_batch=4, workers=0, cache=True),
}


class _NotFinite(ValueError):
    """A number was read, but it is nan or infinite."""


def _scalar(kind: type, raw: Any) -> Any:
    if kind is bool:
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if kind in (int, float):
        value = float(raw)
        if not math.isfinite(value):   # nan or inf: no setting takes one
            raise _NotFinite(f"{raw} is not a finite number")
        if kind is float:
            return value
        if value != int(value):
            raise ValueError
        return int(value)
    return str(raw).strip()


def _coerce(name: str, raw: Any) -> Any:
    """Parse ``raw`` (a CLI string or a JSON value) to the declared type of field ``name``;
    a tuple field takes comma-separated items (or a list)."""
    hint = _FIELD_TYPES[name]
    try:
        if get_origin(hint) is tuple:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(_scalar(get_args(hint)[0], s) for s in items if str(s).strip() != "")
        return _scalar(hint, raw)
    except _NotFinite as exc:
        raise ConfigError(f"config key {name!r}: {exc}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: cannot read {raw!r} as "
                          f"{TrainConfig.__dataclass_fields__[name].type}") from None


def make_config(preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preset's config with ``overrides`` applied (values may be strings)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    known = [f.name for f in fields(TrainConfig) if f.name != "preset"]
    values = {**PRESETS[preset], "preset": preset}
    for key, raw in (overrides or {}).items():
        if key == "preset":  # a field, but it names the preset --preset chose
            raise ConfigError(f"the preset is chosen with --preset ({' or '.join(PRESETS)}), "
                              f"not --set")
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(known)}")
        values[key] = _coerce(key, raw)
    cfg = TrainConfig(**values)
    _check(cfg)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["lr=0.1", "steps=10"]`` -> ``{"lr": "0.1", "steps": "10"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _method_lr_entry(item: str) -> tuple[str, str]:
    """``"hand=0.01"`` -> ``("hand", "0.01")``."""
    name, _, value = item.partition("=")
    return name.strip(), value.strip()


def _check(cfg: TrainConfig) -> None:
    problems = []
    for name in ("steps", "batch_size", "crop", "eval_every", "checkpoint_every", "log_every",
                 "eval_batch"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be at least 1")
    for name in ("workers", "precise_bn_chips"):
        if getattr(cfg, name) < 0:
            problems.append(f"{name} must not be negative")
    if cfg.width <= 0 or cfg.compact_width <= 0:
        problems.append("widths must be positive")
    for name in ("rates", "compact_rates"):
        if not getattr(cfg, name) or min(getattr(cfg, name)) < 1:
            problems.append(f"{name} takes one or more positive integers")
    if cfg.crop < 32:
        problems.append("crop must be at least 32 (the encoder's stride is 16)")
    if cfg.pixel_size_m <= 0:
        problems.append("pixel_size_m must be positive")
    if cfg.tile_size % 16 or not 0 <= 2 * cfg.tile_margin < cfg.tile_size:
        problems.append("tile_size must be a multiple of 16 and above 2 x tile_margin")
    if not 0 <= cfg.momentum < 1:
        problems.append("momentum must be in [0, 1)")
    if cfg.lr <= 0 or any(v <= 0 for v in cfg.lr_grid):
        problems.append("learning rates must be positive")
    if cfg.weight_decay < 0 or any(v < 0 for v in cfg.wd_grid):
        problems.append("weight decays must not be negative")
    if cfg.poly_power <= 0:
        problems.append("poly_power must be positive")
    if cfg.edge_weight < 0 or cfg.edge_radius < 0:
        problems.append("edge_weight and edge_radius must not be negative")
    if cfg.brightness < 0 or not 0 <= cfg.contrast < 1:
        problems.append("brightness must not be negative, and contrast must be in [0, 1)")
    for name in ("arch", "compact_arch"):
        if getattr(cfg, name) not in ARCHS:
            problems.append(f"{name} {getattr(cfg, name)!r} is not one of {', '.join(ARCHS)}")
    for item in cfg.method_lr:
        name, value = _method_lr_entry(item)
        try:
            ok = float(value) > 0
        except ValueError:
            ok = False
        if name not in BY_NAME or BY_NAME[name].kind == "otsu" or not ok:
            problems.append(f"method_lr entry {item!r}: expected METHOD=LR with a trained "
                            f"method ({', '.join(n for n, m in BY_NAME.items() if m.kind != 'otsu')})"
                            " and a positive learning rate")
    if cfg.precision not in PRECISIONS:
        problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
    if cfg.jitter_groups not in JITTER_GROUPS:
        problems.append(f"jitter_groups must be one of {', '.join(JITTER_GROUPS)}")
    for name in ("zoom", "aspect"):
        pair = getattr(cfg, name)
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            problems.append(f"{name} takes two positive numbers: low,high with low <= high")
    if problems:
        raise ConfigError("bad config: " + "; ".join(problems))


__all__ = ["ConfigError", "PRESETS", "TrainConfig", "make_config",
           "parse_overrides"]
