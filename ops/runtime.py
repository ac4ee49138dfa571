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
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ops.errors import PanError, UsageError
from ops.machine import bf16_is_native

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` fails clearly without a GPU.

    Accepts ``cuda:N`` too. Under torchrun each process takes ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    elif name != "cpu":
        raise UsageError(f"unknown --device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    return torch.device(name)


#: ``--amp_dtype`` names.
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

#: Warnings given once per process (the same condition holds for every step).
_warned = {"bf16": False}


def resolve_amp_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """The one precision policy of ``--amp``: ``name`` if given, else bf16 on CPU and fp16 on CUDA.

    fp16 on CPU is refused (autocast there is bf16 only in practice); bf16 on
    a GPU without bf16 support is refused. On a CPU without native bf16
    instructions (no AVX512-BF16/AMX) bf16 runs emulated and may be slower
    than fp32: that is logged once, not hidden.
    """
    if name is not None and name not in AMP_DTYPES:
        raise UsageError(f"unknown --amp_dtype {name!r}; choose one of {', '.join(AMP_DTYPES)}")
    if device.type == "cuda":
        dtype = AMP_DTYPES[name] if name else torch.float16
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise UsageError(f"--amp_dtype bfloat16 was asked for, but {torch.cuda.get_device_name(device)} lacks bf16")
        return dtype
    if name == "float16":
        raise UsageError("--amp_dtype float16 is for CUDA; on CPU use bfloat16")
    if not bf16_is_native() and not _warned["bf16"]:
        _warned["bf16"] = True
        logging.getLogger(__name__).warning(
            "this CPU has no native bf16 instructions (%s): --amp runs emulated bf16, which is slower than fp32 "
            "(0.34x measured on an AVX2 CPU); --fast auto picks a faster path", torch.backends.cpu.get_cpu_capability()
        )
    return torch.bfloat16


def amp_dtype(device: torch.device) -> torch.dtype:
    """The default autocast dtype for ``--amp`` on ``device`` (see :func:`resolve_amp_dtype`)."""
    return resolve_amp_dtype(device)


def autocast(device: torch.device, enabled: bool, dtype_name: str | None = None) -> contextlib.AbstractContextManager:
    """Autocast for ``device`` in the :func:`resolve_amp_dtype` precision when ``enabled``, else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=resolve_amp_dtype(device, dtype_name))


class CompiledWithFallback(torch.nn.Module):
    """``torch.compile``'d model that falls back to eager, with a warning, if compiling fails.

    Compilation is lazy: it happens at the first call, so that is where a
    missing compiler or an unsupported operation shows up (a try/except around
    ``torch.compile`` itself never fires); the warning names the error. Shapes
    are static: a new batch size (the last, partial batch) is compiled anew in
    seconds, while inductor's symbolic-shape simplification after a batch-size
    change ran for over 10 minutes on 2 CPU cores. ``freezing`` (inference
    only) lets inductor treat the weights as constants.
    """

    def __init__(self, model: torch.nn.Module, mode: str | None = None, freezing: bool = False) -> None:
        super().__init__()
        self.eager = model
        self.freezing = freezing
        self.failed: str | None = None
        try:
            self.compiled = torch.compile(model, mode=mode, dynamic=False)
        except Exception as err:  # noqa: BLE001 -- a platform without torch.compile at all
            self._fall_back(err)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed is None:
            try:
                import torch._inductor.config as inductor_config

                with inductor_config.patch(freezing=self.freezing):
                    return self.compiled(x)
            except Exception as err:  # noqa: BLE001 -- any compiler failure means "run eager"
                self._fall_back(err)
        return self.eager(x)

    def _fall_back(self, err: Exception) -> None:
        self.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        logging.getLogger(__name__).warning("torch.compile failed (%s); running the model without compiling",
                                            self.failed)


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


class CollectiveTimeout(PanError, RuntimeError):
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


class RankZeroFailed(PanError, RuntimeError):
    """Raised on the other processes when a step that only rank 0 performs failed there."""


def current_dist_info() -> DistInfo:
    """This process's place, read from the process group (a single process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def broadcast(obj: object, info: DistInfo) -> object:
    """``obj`` of rank 0, on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main_process(fn: Callable[[], object], info: DistInfo) -> object:
    """Run ``fn`` on rank 0 and return its result there (None elsewhere).

    If it fails, every process raises (rank 0 its own error, the others
    :class:`RankZeroFailed`), so none waits forever in a collective.
    """
    error, result = None, None
    if info.is_main:
        try:
            result = fn()
        except Exception as err:  # re-raised below, on every rank
            error = err
    message = broadcast(None if error is None else f"{type(error).__name__}: {error}", info)
    if error is not None:
        raise error
    if message is not None:
        raise RankZeroFailed(f"rank 0 failed: {message}")
    return result


def gather_objects(obj: object, info: DistInfo | None = None) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` for a single process)."""
    info = info or current_dist_info()
    if not info.distributed:
        return [obj]
    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, obj)
    return parts


def sum_over_processes(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Element-wise sums of ``values`` over the processes (float64, on ``device`` for nccl)."""
    if not info.distributed:
        return values
    box = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(box)
    return box.tolist()


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
