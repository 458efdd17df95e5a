"""Where this process stands among the training processes, and torchrun's options (no torch import:
the command line builds its parser from these).

Training on several processes is :mod:`eyegc.common.distributed`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from eyegc.common.errors import EyegcError

__all__ = ["SINGLE_PROCESS", "LaunchOptions", "Ranks", "ranks_from_environment"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that reads and writes the run folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


#: one process: rank 0 of 1.
SINGLE_PROCESS = Ranks()


def ranks_from_environment() -> Ranks:
    """The ranks torchrun set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without them."""
    try:
        return Ranks(
            rank=int(os.environ.get("RANK", "0")),
            world=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        raise EyegcError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them)") from None


@dataclass(frozen=True)
class LaunchOptions:
    """torchrun's own options, as ``eyegc train`` takes them."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def wanted(self) -> bool:
        """More than one process in all: launch through torchrun."""
        return self.nproc_per_node * self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        """The options as torchrun spells them (each field is one: ``nproc_per_node`` -> ``--nproc-per-node``)."""
        return [f"--{field.name.replace('_', '-')}={getattr(self, field.name)}" for field in fields(self)]
