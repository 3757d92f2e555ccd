"""Where this process sits in a (possibly) distributed run, and the device it trains on.

One engine serves three launchers: a plain ``python train_entry.py`` (one process), ``torchrun``
/ ``python -m torch.distributed.launch --use_env`` (the published way: ``RANK``/``WORLD_SIZE``
/``LOCAL_RANK`` in the environment, process group created here) and a Ray Train worker (the
process group already exists, the device is handed in by the worker function). Nothing is done
at import time: the published code created its process group on import, which made the module
impossible to import in tests or tools.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process (rank 0 / size 1 when not distributed)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def _collective_device(self) -> torch.device:
        backend = dist.get_backend() if dist.is_initialized() else "gloo"
        return self.device if backend == "nccl" else torch.device("cpu")


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if preference == "cpu":
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        raise ValueError("'cuda' was asked for but no CUDA device is visible; use cpu or auto")
    if has_cuda:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup_distributed(device_preference: str = "auto",
                      device: Optional[torch.device] = None) -> DistContext:
    """Join or create the process group described by the environment.

    ``device`` is given by launchers that already chose one (Ray Train's ``get_device()``).
    NCCL is used when training on CUDA, gloo on CPU.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        dev = device or resolve_device(device_preference, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistContext(rank, world, local_rank, dev, owns_process_group=False)
    dev = device or resolve_device(device_preference, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if env_world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        log.info("process group: %s, rank %d of %d", backend, dist.get_rank(), env_world)
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev,
                           owns_process_group=True)
    return DistContext(0, 1, 0, dev)


def teardown_distributed(ctx: DistContext) -> None:
    """Destroy the process group only if this engine created it (Ray owns its own)."""
    if ctx.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()
