"""Process-group setup for multi-GPU / multi-node training with ``torchrun``.

The same command trains on one process or many: under ``torchrun`` the environment holds
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_distributed` joins the process group from it (``nccl`` on CUDA, ``gloo`` on CPU).
Without those variables it returns a single-process :class:`DistInfo` and touches nothing.

Only rank 0 writes logs and checkpoints; :func:`barrier` keeps the others from running ahead
of (or reading) a checkpoint that is being written.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_gather_floats", "barrier", "cleanup", "init_distributed", "resolve_device"]


@dataclasses.dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0  # global rank
    local_rank: int = 0  # rank on this node (selects the GPU)
    world_size: int = 1  # number of processes
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` -> ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: CUDA requested but not available (the message says to use ``device=cpu``).
    """
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={pref!r} but CUDA is not available here; pass device=cpu")
        return torch.device(f"cuda:{local_rank}") if pref == "cuda" else torch.device(pref)
    if pref != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {pref!r}")
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if the environment describes one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.distributed and dist.is_initialized():
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_gather_floats(info: DistInfo, value: float) -> list[float]:
    """Every rank's ``value``, in rank order (``[value]`` on one process)."""
    if not (info.distributed and dist.is_initialized()):
        return [value]
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    out = [torch.zeros_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return [float(x.item()) for x in out]


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
