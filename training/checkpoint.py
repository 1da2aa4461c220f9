"""Checkpoints: one ``.pt`` file per state, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no
pickled objects), so loading it cannot run code. It names its own model spec, so
``export`` and a distillation run rebuild the right network from the file alone,
and a file of another architecture is refused with a message that says so.

Files are written to a temporary name and renamed, so an interruption during a
save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .models import ModelSpecError, build_model, display_name

FORMAT = "sarflood-training-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, not ours, or does not fit."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (with the format tag) atomically; a write that fails (a full disk:
    torch says "unexpected pos ...") is a :class:`CheckpointError` naming the file."""
    kept = ("The checkpoint before it is kept" if Path(path).exists()
            else "There was no earlier checkpoint")
    try:
        # through a file object: given a path, torch names the archive's root folder after
        # the (random) temporary name, and identical checkpoints differed in their bytes
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **payload}, fh)
    except (OSError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: cannot be written ({first}); is the disk full? "
                              f"{kept}") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely; raise :class:`CheckpointError` with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a text or random file fails in many ways
        # torch's message goes on to advise weights_only=False: never for a file that is
        # not a checkpoint, and unsafe for one from elsewhere; only its first sentence is kept
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ")[0].rstrip(".")
        if isinstance(exc, (KeyError, IndexError)):  # the unpickler lost in a text file
            first = f"{type(exc).__name__} while unpickling"
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"   # torch.save writes a zip archive
        if zipped:   # an interrupted copy: torch words it by where the cut fell
            raise CheckpointError(f"{path}: a PyTorch checkpoint cut short or corrupt "
                                  f"({path.stat().st_size} bytes; {first}): restore it from a "
                                  f"copy, or train again in another --out folder") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sarflood training checkpoint "
                              f"(no format tag {FORMAT!r})")
    for key in ("model_spec", "model"):
        if key not in doc:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    return doc


def load_model(path: Path, expect_in_channels: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the checkpoint's model with its weights (in eval mode).

    Refuses a checkpoint whose weights do not fit its own spec, or whose input
    channel count differs from ``expect_in_channels``.
    """
    doc = load_checkpoint(path)
    spec = doc["model_spec"]
    try:
        # shapes only, on the meta device: a spec of a few bytes (a width of 8) would
        # otherwise allocate gigabytes before its weights could be found not to fit
        with torch.device("meta"):
            shell = build_model(spec)
    except ModelSpecError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if expect_in_channels is not None and spec["in_channels"] != expect_in_channels:
        raise CheckpointError(
            f"{path}: {display_name(spec)} takes {spec['in_channels']} input channels, "
            f"this run needs {expect_in_channels}")
    check_weights(shell, doc["model"], str(path))
    model = build_model(spec)
    model.load_state_dict(doc["model"])
    return model.eval(), doc


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a one-line message naming what does not fit."""
    check_weights(model, state, source)
    model.load_state_dict(state)


def check_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming what of ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: "
                         f"{tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"{source}: weights are of another architecture than "
                              f"{type(model).__name__}: " + ", ".join(parts))


def unfinished_at(checkpoint: Path, doc: dict[str, Any]) -> int | None:
    """The step the run of ``checkpoint`` had reached when it is still in its run folder
    and that run is unfinished (no summary.json, or one saying it diverged, as reproduce's
    grid search records such runs, but the run's last.pt or train.log beside it); None for
    a finished run or a checkpoint copied away from its folder."""
    folder = checkpoint.parent
    if (folder / "summary.json").exists() and diverged_summary(folder) is None:
        return None
    try:
        return int(load_checkpoint(folder / "last.pt")["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        pass
    # stopped before its first last.pt: its best.pt is all it saved
    return int(doc.get("best", {}).get("step", 0)) if (folder / "train.log").exists() else None


def diverged_summary(folder: Path) -> dict[str, Any] | None:
    """The run folder's summary.json where it records a divergence (reproduce's grid search
    keeps such a point's folder, best.pt included, as lost), else None (none, or unreadable:
    whoever reads it for itself says so)."""
    try:
        doc = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "diverged" in doc else None
