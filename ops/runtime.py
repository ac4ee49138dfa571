"""Where and how code runs: device, mixed precision, processes, logging.

Shared by ``main.py``, ``test_models.py`` and the tools, so that CPU and CUDA,
one process and ``torchrun`` behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import time
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


#: Minutes a collective may wait for the other processes (``--dist-timeout``). Long enough for the
#: main process to write a large checkpoint to a slow shared disk, short enough that a stopped peer
#: is noticed well before a scheduler's time limit.
DEFAULT_DIST_TIMEOUT_MINUTES = 10.0


def init_distributed(device: torch.device, timeout_minutes: float = DEFAULT_DIST_TIMEOUT_MINUTES) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (nccl on CUDA, gloo on CPU).

    ``timeout_minutes`` bounds every collective. Returns a single-process
    :class:`DistInfo` when not launched by torchrun.
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


_HEARTBEAT_KEY = "pan/heartbeat/{rank}"
_heartbeats = 0  # this process's count, so that the process furthest behind is told first


def heartbeat(info: DistInfo, where: str) -> None:
    """Tell the other processes (through the rendezvous store) where this one is, with the time.

    Read back by :func:`describe_peers` when a collective times out, to name the process waited on.
    """
    global _heartbeats
    if not info.distributed:
        return
    _heartbeats += 1
    note = json.dumps({"where": where, "count": _heartbeats, "time": time.time(), "pid": os.getpid(),
                       "host": socket.gethostname()})
    dist.distributed_c10d._get_default_store().set(_HEARTBEAT_KEY.format(rank=info.rank), note)


def describe_peers(info: DistInfo) -> str:
    """One line per process: where it last said it was and how long ago, the furthest behind first."""
    try:
        store = dist.distributed_c10d._get_default_store()
        notes = {}
        for rank in range(info.world_size):
            key = _HEARTBEAT_KEY.format(rank=rank)
            notes[rank] = json.loads(store.get(key)) if store.check([key]) else None
    except Exception as err:  # the store itself may be gone with the failed peer
        return f"(the other processes' progress cannot be read: {err})"
    now = time.time()
    silent = sorted(notes, key=lambda r: (notes[r]["count"], notes[r]["time"]) if notes[r] else (-1, 0.0))
    lines = []
    for rank in silent:
        note = notes[rank]
        if note is None:
            lines.append(f"rank {rank}: never reported")
        else:
            lines.append(f"rank {rank} (pid {note['pid']} on {note['host']}): last at {note['where']}, "
                         f"{now - note['time']:.0f} s ago")
    return "\n  ".join(lines)


class CollectiveTimeout(RuntimeError):
    """A collective waited longer than ``--dist-timeout``; the message names the processes waited on."""


def is_timeout(err: BaseException) -> bool:
    """Whether a distributed error is a collective's time-out (gloo and nccl word it differently)."""
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("timed out" in text or "timeout" in text)


def explain_timeout(err: BaseException, info: DistInfo, timeout_minutes: float) -> CollectiveTimeout:
    """The error to report for a collective's time-out, naming the silent processes first."""
    return CollectiveTimeout(
        f"process {info.rank} waited more than --dist-timeout {timeout_minutes:g} min for the other processes "
        f"in a collective operation; the one furthest behind is waited on (stopped, hung or dead):\n  "
        f"{describe_peers(info)}\n(original error: {str(err).splitlines()[0] if str(err) else type(err).__name__})")


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
