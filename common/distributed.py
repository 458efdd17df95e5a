"""Training on several processes (GPUs, nodes) with torch's own engine: torchrun and DistributedDataParallel.

``eyegc train ... --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]``
starts ``torch.distributed.run`` (torchrun), which runs ``eyegc train`` once per process with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; ``torchrun ... -m eyegc.common.cli train ...`` is the
same. Each process then sees its place in :func:`ranks_from_environment`: rank 0 reads and writes
the run folder (config, split, checkpoints, bundle), every rank trains on its share of each batch,
and rank 0 gathers the validation predictions and chooses the best epoch. nccl on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import pickle
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from eyegc.common.errors import EyegcError
from eyegc.common.ranks import LaunchOptions, Ranks
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

__all__ = [
    "GlobalBatchLoss",
    "TrainingProcessFailed",
    "broadcast_from_main",
    "end_process_group",
    "gather_to_main",
    "launch",
    "on_main",
    "start_process_group",
    "stop_process_group",
    "sync_buffers",
]

T = TypeVar("T")
#: how long a rank waits for the others at a collective (validation of a large fold takes a while).
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


def start_process_group(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the other processes (nccl on CUDA, gloo on the CPU); the device this rank trains on."""
    if not ranks.distributed:
        return device
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise EyegcError(
                f"process {ranks.local_rank} of this machine has no GPU of its own ({torch.cuda.device_count()} "
                "here): use at most one --nproc-per-node per GPU"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world, timeout=COLLECTIVE_TIMEOUT)
        global _object_group
        # Pickled objects (validation predictions, checkpoints) travel over gloo, in host memory: over
        # nccl they would be staged on the GPU, world times the largest, beside the model.
        _object_group = dist.new_group(backend="gloo") if backend == "nccl" else None
    return device


#: the gloo group that carries pickled objects when the training group is nccl (None: the default group).
_object_group: Any = None


def end_process_group() -> None:
    """Leave the group when every rank is done with it: a rank that closes its connections while
    another still uses them can make gloo abort the other, so the ranks first meet."""
    if dist.is_initialized():
        dist.barrier()
    stop_process_group()


def stop_process_group() -> None:
    """Leave the group at once (a failure: torchrun stops the other ranks)."""
    global _object_group
    _object_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_from_main(ranks: Ranks, value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not ranks.distributed:
        return value
    box = [value if ranks.main else None]
    dist.broadcast_object_list(box, src=0, group=_object_group)
    return box[0]


def gather_to_main(ranks: Ranks, value: Any) -> list[Any] | None:
    """Every rank's ``value``, in rank order, on rank 0 (``None`` on the others)."""
    if not ranks.distributed:
        return [value]
    gathered: list[Any] | None = [None] * ranks.world if ranks.main else None
    dist.gather_object(value, gathered, dst=0, group=_object_group)
    return gathered


def sync_buffers(ranks: Ranks, module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank."""
    if ranks.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _failure_line(error: ChildFailedError) -> str:
    """The process that failed first and how (the others were stopped by torchrun, after it)."""
    rank, failure = error.get_first_failure()
    signal_name = failure.signal_name() if failure.exitcode < 0 else ""
    return f"rank {rank} failed ({f'signal {signal_name}' if signal_name else f'exit {failure.exitcode}'})"


#: the signals torchrun's agent handles (torch.distributed.elastic.agent.server.api).
_TORCHRUN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class TrainingProcessFailed(EyegcError):
    """A training process under torchrun ended with an error; torchrun stopped the others."""


def launch(options: LaunchOptions, module_args: Sequence[str]) -> None:
    """Run ``python -m eyegc.common.cli <module_args>`` under torchrun with ``options``.

    Raises:
        EyegcError: a process failed; torchrun stopped the others; the message names the failed
            ranks and says how to continue.
    """
    args = get_args_parser().parse_args([*options.torchrun_args(), "-m", "eyegc.common.cli", *module_args])
    # torchrun replaces the process's signal handlers with its own and leaves them there; put ours back.
    handlers = {number: signal.getsignal(number) for number in _TORCHRUN_SIGNALS}
    try:
        run(args)
    except SignalException as signalled:  # torchrun's own handlers turn Ctrl-C and SIGTERM into this
        raise KeyboardInterrupt(str(signalled.sigval)) from None
    except ChildFailedError as error:
        what = _failure_line(error)
        raise TrainingProcessFailed(f"training stopped: {what} and torchrun stopped the others") from None
    except (RuntimeError, pickle.PicklingError, OSError) as error:
        raise EyegcError(f"torchrun could not start the training processes: {str(error).splitlines()[0]}") from None
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


class _GatherShards(torch.autograd.Function):
    """Every rank's shard of a batch, concatenated in rank order, with a gradient back to this rank's shard.

    Each rank then computes the same loss on the same global batch, so the gradient of the gathered
    tensor is the same on every rank and the backward needs no communication: this rank's slice,
    times the number of ranks, which DistributedDataParallel's average over the ranks divides again.
    """

    @staticmethod
    def forward(ctx: Any, shard: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        parts = [torch.empty_like(shard) for _ in range(world)]
        dist.all_gather(parts, shard.contiguous())
        ctx.rank, ctx.world, ctx.size = rank, world, shard.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        start = ctx.rank * ctx.size
        return grad[start : start + ctx.size] * ctx.world, None, None


class GlobalBatchLoss(torch.nn.Module):
    """``loss`` over the whole global batch on every rank (batch Dice needs all of it), not over one shard.

    With the same global batch, the parameters' gradients after DistributedDataParallel's averaging
    equal those of one process on the whole batch (tests/test_distributed.py).
    """

    def __init__(self, loss: torch.nn.Module, ranks: Ranks) -> None:
        super().__init__()
        self.loss = loss
        self.ranks = ranks

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.ranks.distributed:
            return self.loss(logits, target)
        everything = _GatherShards.apply(logits, self.ranks.rank, self.ranks.world)
        targets = [torch.empty_like(target) for _ in range(self.ranks.world)]
        dist.all_gather(targets, target.contiguous())
        return self.loss(everything, torch.cat(targets))


def on_main(ranks: Ranks, work: Callable[[], T]) -> T:
    """``work()`` on rank 0 alone (it reads and writes the run folder); its result, or the
    EyegcError it raised, on every rank."""
    outcome: tuple[Any, EyegcError | None] | None = None
    if ranks.main:
        try:
            outcome = (work(), None)
        except EyegcError as error:
            if not ranks.distributed:
                raise
            outcome = (None, error)
    result, error = broadcast_from_main(ranks, outcome)
    if error is not None:
        raise error
    return result
