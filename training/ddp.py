"""Multi-process training with torch.distributed (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node N -m training train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them a run is a single process. The backend is NCCL on GPUs
and gloo on CPU (which is how the tests run two processes here). A worker's error
line (``training.cli.fail``) also goes to torchrun, whose failure report, printed
last, names it as the root cause.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from .cli import DEVICES

T = TypeVar("T")
RANK_WAIT = timedelta(hours=3)


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def pick_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return torch.device("cuda") if use_cuda else torch.device("cpu")


def setup(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun; pick this rank's device."""
    dev = pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, dev)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:   # torch would raise a CUDA error with a traceback
            raise ValueError(f"torchrun started local rank {local_rank}, but this machine has "
                             f"{gpus} GPU(s) visible: give --nproc_per_node {gpus} or fewer")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        # ranks wait in a collective while rank 0 alone validates, scores, exports and
        # benchmarks (reproduce): longer than NCCL's default 10 minutes on the paper's splits
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=RANK_WAIT,
                                device_id=dev if dev.type == "cuda" else None)
    return Dist(dist.get_rank(), dist.get_world_size(), dev)


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """DDP-wrap a model; on GPUs batch norm is synchronised across ranks (each rank
    sees only ``batch / world`` chips). SyncBatchNorm needs GPUs, so on CPU each
    rank keeps its own batch statistics."""
    if not d.active:
        return model
    if d.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index])
    return torch.nn.parallel.DistributedDataParallel(model)


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop together)."""
    if not d.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_sum(t: Tensor, d: Dist) -> Tensor:
    """``t`` summed over the ranks, detached (no gradient flows to the other ranks)."""
    t = t.detach().clone()
    if d.active:
        dist.all_reduce(t)
    return t


def from_main(obj: T, d: Dist) -> T:
    """Rank 0's ``obj`` (any picklable value) on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=d.device)
    return box[0]


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


_group_ended = False   # see ended_a_group


def teardown(d: Dist) -> None:
    global _group_ended
    if d.active and dist.is_initialized():
        # every rank past its last collective first: a rank tearing gloo's connections
        # down while a peer still used them once aborted it ("terminate called without
        # an active exception", rank 0 of a 2-rank reproduce in CI)
        dist.barrier()
        dist.destroy_process_group()
        _group_ended = True


def ended_a_group() -> bool:
    """Whether this process ran in a process group and tore it down. Once a
    DistributedDataParallel was built, gloo's worker threads outlive
    ``destroy_process_group`` (the group stays referenced from C++), and a rank exiting
    normally beside them aborted now and then in the interpreter's finalization
    ("terminate called without an active exception", rank 0 exit -6, about 1 in 60 test
    runs under load, always after its output was complete): such a rank ends with
    ``os._exit`` instead (``training.__main__``)."""
    return _group_ended
