"""Scale-out training on PyTorch's own engine: one process per device under ``torchrun``, DDP.

``torchrun --nproc_per_node N -m pipelines.train ...`` starts N copies of the training CLI with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_from_env` joins them into a process group (NCCL on
CUDA, gloo on CPU) and binds each to its GPU. A plain ``python -m pipelines.train`` has no such variables
and stays one ordinary process (:func:`current` then reports a world of one and nothing here
communicates). Helpers are no-ops in a world of one, so the training loop calls them unconditionally.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not distributed

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, prints and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self) -> torch.device:
        """This process's device: its own GPU under torchrun on CUDA, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank if self.distributed else torch.cuda.current_device())
        return torch.device("cpu")


def current() -> DistInfo:
    """The running process group's view, or a world of one when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                        dist.get_backend())
    return DistInfo()


def init_from_env() -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1); otherwise do
    nothing. NCCL when CUDA is available, gloo otherwise; each rank binds ``cuda:LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    return current()


def shutdown() -> None:
    """Leave the process group (end of a torchrun job); nothing in a world of one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` in a world of one); picklable objects."""
    info = current()
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (the values themselves in a world of one)."""
    if not current().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank.

    DDP keeps parameters equal (gradients are averaged), but BatchNorm running statistics are updated by
    each rank's own batches; broadcasting them before validation makes every rank hold, validate and
    (rank 0) save the same network."""
    if not current().distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state_dict (names, then raw bytes in order): equal weights, equal digest."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
