"""Run by ``torchrun`` in test_ddp.py: one tiny DDP training on in-memory chips, precise
batch norm as GPU DDP runs it, and one gradient of each loss on a fixed global batch.

Each rank saves what it ended with, and the weights its training started from, to
``OUT/rank<r>.pt`` so the test can compare them.
"""
import copy
import sys
from pathlib import Path

import torch
from torch import nn

from training import ddp
from training import train as train_module
from training.losses import distillation_loss, edge_weighted_ce
from training.precise_bn import batchnorm_layers, calibration_batches, recalibrate
from training.train import train

from .test_train import tiny_data, tiny_run


def global_batch() -> dict[str, torch.Tensor]:
    """Four chips, the same on every rank; the last two (rank 1's slice of two) are
    three quarters no-data, so the slices hold different numbers of scored pixels."""
    g = torch.Generator().manual_seed(5)
    label = (torch.rand(4, 16, 16, generator=g) > 0.5).long()
    label[2:, :12] = -1
    return {"x": torch.randn(4, 2, 16, 16, generator=g), "label": label, "valid": label >= 0,
            "p_teacher": torch.softmax(torch.randn(4, 2, 16, 16, generator=g), dim=1)}


def loss_gradients(batch: dict[str, torch.Tensor], d: ddp.Dist) -> dict[str, torch.Tensor]:
    """Each loss's gradient for this rank's slice of ``batch``, averaged by DDP. The
    net has no batch norm and no dropout, so only the losses' normalisation could
    make it differ from one process's gradient on the whole batch."""
    torch.manual_seed(0)
    net = nn.Conv2d(2, 2, 3, padding=1)
    wrapped = ddp.wrap(net, d)
    n = batch["x"].shape[0] // d.world
    part = {k: v[d.rank * n:(d.rank + 1) * n] for k, v in batch.items()}
    grads = {}
    for name in ("ce", "distill"):
        net.zero_grad()
        logits = wrapped(part["x"])
        loss = (edge_weighted_ce(logits, part["label"], d=d) if name == "ce"
                else distillation_loss(logits, part["p_teacher"], part["valid"], d))
        loss.backward()
        grads.update({f"{name} {k}": p.grad.clone() for k, p in net.named_parameters()})
    return grads


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i} {k}": v.clone() for i, m in enumerate(batchnorm_layers(model))
            for k, v in m.named_buffers()}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    d = ddp.setup("cpu")
    run = tiny_run(arch="deeplabv3plus_xception65", width=0.125, steps=4, eval_every=2,
                   precise_bn_chips=4)
    data = tiny_data()
    build, initial = train_module.build_model, {}

    def build_and_keep(spec):   # the network's weights as train() built them
        net = build(spec)
        initial.update({k: v.clone() for k, v in net.state_dict().items()})
        return net
    train_module.build_model = build_and_keep
    summary, model = train(run, data, out / "run", d=d, progress=False)
    # the layers GPU DDP gives the model (ddp.wrap): the same statistics as plain BN,
    # and no collective (on CPU they would refuse to synchronise)
    calib = calibration_batches(data.pools, ("s1",), 4, 4, 1, d.device)
    plain, sync = copy.deepcopy(model), nn.SyncBatchNorm.convert_sync_batchnorm(
        copy.deepcopy(model))
    recalibrate(plain, calib)
    recalibrate(sync, calib)
    torch.save({"summary": summary, "world": d.world, "rank": d.rank,
                "initial": initial, "state": model.state_dict(), "plain_bn": bn_buffers(plain),
                "sync_bn": bn_buffers(sync), "grads": loss_gradients(global_batch(), d)},
               out / f"rank{d.rank}.pt")
    ddp.teardown(d)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
