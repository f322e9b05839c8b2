"""Data-parallel training under ``torchrun``: PyTorch DistributedDataParallel, gloo on CPUs, NCCL on GPUs.

``torchrun --nproc_per_node N $(which stainseg) train EXP -o MODEL`` starts N processes; each draws its own
random crops, gradients are averaged across them (the effective batch is N × batch), and rank 0 alone
writes checkpoints and the model directory. Without ``torchrun`` (no ``WORLD_SIZE``) nothing changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, the number of processes, and its device."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group started by torchrun (if any); return it and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size()), device


def wrap(model: torch.nn.Module, info: Dist, device: torch.device) -> torch.nn.Module:
    """The module to train: the model itself, or a DistributedDataParallel wrapper around it."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def agree(value: int, info: Dist) -> int:
    """Rank 0's value of an integer, on every rank (e.g. the iteration count under a time budget)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def barrier(info: Dist) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def teardown(info: Dist) -> None:
    """Leave the process group."""
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
