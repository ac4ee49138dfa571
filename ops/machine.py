"""What the CPU offers the kernels: the one "ISA line" printed beside every benchmark figure.

A latency means little without the instructions it ran on: bf16 autocast is
fast only with native bf16 (AVX512-BF16 or AMX), int8 convolutions are fast
with VNNI and still native without it (AVX2). The line states both what the
CPU has (``/proc/cpuinfo`` flags) and what PyTorch's kernels may use, since
``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA`` and ``FBGEMM_ENABLE_INSTRUCTIONS``
cap the latter (that is how an AVX2-only CPU is emulated on a newer one).
"""

from __future__ import annotations

import os
import platform

import torch

#: Environment variables that cap the instructions PyTorch's CPU kernels use.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")
#: ``torch.backends.cpu.get_cpu_capability()`` values below AVX-512: no native bf16 kernels there.
CAPABILITIES_WITHOUT_BF16 = ("DEFAULT", "NO AVX", "AVX", "AVX2")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (first ``flags`` line of ``cpuinfo``); empty where it cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[1].split()) if ":" in line else set()


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, else what ``platform`` says."""
    fallback = platform.processor() or platform.machine()
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), fallback)
    except OSError:
        return fallback


def bf16_is_native(capability: str | None = None) -> bool:
    """Whether bf16 autocast runs on native instructions here (AVX512-BF16 or AMX, and allowed).

    Both must hold: oneDNN reports bf16 support (``torch.ops.mkldnn._is_mkldnn_bf16_supported``,
    the check ``ops.runtime.resolve_amp_dtype`` warns on), and PyTorch's kernels are not capped
    below AVX-512 (``capability``, default ``torch.backends.cpu.get_cpu_capability()``; capped by
    ``ATEN_CPU_CAPABILITY``, where the CPU flags alone would still claim bf16).
    """
    capability = capability if capability is not None else torch.backends.cpu.get_cpu_capability()
    if capability.upper() in CAPABILITIES_WITHOUT_BF16:
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _present(flags: set[str], names: tuple[str, ...]) -> str:
    found = [name for name in names if name in flags]
    return f"yes ({', '.join(found)})" if found else "no"


def isa_line(flags: set[str] | None = None, capability: str | None = None) -> str:
    """One line: PyTorch's CPU capability, native bf16 / AMX / VNNI, and any cap set in the environment.

    ``flags`` and ``capability`` default to this machine's (for tests).
    """
    flags = cpu_flags() if flags is None else flags
    capability = capability if capability is not None else torch.backends.cpu.get_cpu_capability()
    caps = [f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)]
    return (f"ISA {capability} (torch.backends.cpu.get_cpu_capability()); "
            f"bf16 native for autocast: {'yes' if bf16_is_native(capability) else 'no'}; "
            f"CPU flags: bf16 {_present(flags, ('avx512_bf16', 'amx_bf16'))}, "
            f"AMX {_present(flags, ('amx_tile', 'amx_bf16', 'amx_int8'))}, "
            f"VNNI {_present(flags, ('avx512_vnni', 'avx_vnni'))}; "
            f"caps: {', '.join(caps) if caps else 'none'}")


def machine_description(device: torch.device) -> str:
    """The machine a figure was measured on: GPU name, or CPU model, threads and the :func:`isa_line`."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; {isa_line()}"
