"""Where and how code runs: device, mixed precision, processes, logging.

Shared by ``main.py``, ``test_models.py`` and the tools, so that CPU and CUDA,
one process and ``torchrun`` behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU.

    Accepts ``cuda:N`` too. Under torchrun each process takes ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name} was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    elif name != "cpu":
        raise ValueError(f"unknown --device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``--amp``: bfloat16 on CPU, float16 on CUDA."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast for ``device`` when ``enabled`` (see :func:`amp_dtype`), else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the processes of a run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, timeout_minutes: int = 30) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (nccl on CUDA, gloo on CPU).

    Returns a single-process :class:`DistInfo` when not launched by torchrun.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if info.world_size == 1:
        return info
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return info


def max_over_processes(value: int, info: DistInfo) -> int:
    """The largest ``value`` of all processes (the value itself without a process group)."""
    if not info.distributed:
        return value
    box = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return int(box.item())


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def setup_logging(is_main: bool, log_file: str | None = None, level: int = logging.INFO) -> None:
    """Log to stderr (and ``log_file``) on the main process; other ranks log warnings only."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and is_main:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=level if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
