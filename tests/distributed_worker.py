"""One training step in a process of a two-process gloo group, for tests/test_distributed.py
(spawned processes import their function from a module)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from eyegc.common.distributed import GlobalBatchLoss
from eyegc.common.losses import build_loss
from eyegc.common.networks import build_network
from eyegc.common.plugin import TaskKind
from eyegc.common.ranks import Ranks
from eyegc.common.torch_backend import train_step
from torch.nn.parallel import DistributedDataParallel

#: a small MONAI UNet (one input channel, three sigmoid classes), built the same in every process.
NETWORK = ("UNet", {"channels": [4, 8], "strides": [2], "num_res_units": 0})


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(NETWORK[0], 1, 3, dict(NETWORK[1]))


def one_step(model: torch.nn.Module, parameters: torch.nn.Module, loss: torch.nn.Module, batch: tuple) -> None:
    """SGD with learning rate 1: the change of each parameter is minus its gradient."""
    optimizer = torch.optim.SGD(parameters.parameters(), lr=1.0)
    train_step(model, optimizer, torch.amp.GradScaler("cuda", enabled=False), loss, batch)


def step_on_shard(rank: int, world: int, init_file: str, batch_file: str, out: str, gather: bool) -> None:
    """Rank ``rank`` takes its equal share of the batch in ``batch_file``; rank 0 saves the weights after the step."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        images, labels = torch.load(batch_file, weights_only=True)
        share = len(images) // world
        part = slice(rank * share, (rank + 1) * share)
        net = network()
        loss = build_loss("dice_bce", TaskKind.MULTILABEL_SEGMENTATION)
        if gather:
            loss = GlobalBatchLoss(loss, Ranks(rank=rank, world=world))
        one_step(DistributedDataParallel(net), net, loss, (images[part], labels[part], None))
        if rank == 0:
            torch.save(net.state_dict(), Path(out))
        dist.barrier()  # neither leaves while the other still talks to it (gloo aborts)
    finally:
        dist.destroy_process_group()
