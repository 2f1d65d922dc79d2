"""What the training machine can do: CPU model, cores and threads, and whether bfloat16 is fast.

Training logs and benchmark results record :func:`machine_record` so a throughput number always
names the machine it was measured on. :func:`bf16_is_fast` says whether the CPU has bfloat16
instructions (AMX tiles or AVX-512 BF16, from ``/proc/cpuinfo`` flags, or torch's own probes
where ``/proc/cpuinfo`` is absent). Having them does not mean bf16 autocast pays for a given model:
on an AMX Xeon a bf16 GEMM is several times an fp32 one, but a model whose step is dominated by
convolutions of few channels, interpolation and element-wise glue gains little and pays casts;
``benchmarks/profile_train.py --bf16`` measures it on the machine at hand (see its result files).
Without bf16 instructions autocast only emulates it and is slower: keep float32.

Example:
    >>> rec = machine_record()
    >>> sorted(rec)[:3]
    ['available_cpus', 'bf16', 'cgroup_cpu_limit']
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BF16_FLAGS",
    "available_cpus",
    "bf16_is_fast",
    "bf16_support",
    "cgroup_cpu_limit",
    "cpu_flags",
    "cpu_model_name",
    "machine_record",
    "physical_cores",
]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of CPUs with native bfloat16 arithmetic (AMX tiles, AVX-512 BF16)."""

_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo(text: str | None) -> str:
    if text is not None:
        return text
    try:
        return _CPUINFO.read_text()
    except OSError:
        return ""


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name (first ``model name`` of ``/proc/cpuinfo``), else ``platform``'s guess."""
    for line in _cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty when unknown)."""
    for line in _cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def physical_cores(cpuinfo: str | None = None) -> int | None:
    """Distinct (socket, core) pairs of ``/proc/cpuinfo``; ``None`` when it does not say."""
    pairs = set()
    phys = core = None
    for line in [*_cpuinfo(cpuinfo).splitlines(), ""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not key:  # blank line ends one processor's block
            if core is not None:
                pairs.add((phys, core))
            phys = core = None
    return len(pairs) or None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time the container's cgroup allows (``cpu.max`` quota / period); ``None`` = no limit."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _torch_probe(name: str) -> bool | None:
    fn = getattr(torch.cpu, name, None)
    if fn is None:
        return None
    try:
        return bool(fn())
    except (RuntimeError, AttributeError):
        return None


def bf16_support(cpuinfo: str | None = None) -> dict[str, Any]:
    """Which bfloat16 instructions the CPU has and where that was read.

    Returns:
        ``amx_bf16`` and ``avx512_bf16`` (bools), ``fast`` (either of them), ``source``
        (``"/proc/cpuinfo"`` or ``"torch"``: torch's own CPU probes when there are no flags)
        and ``torch_cpu_capability`` (the vector ISA torch's kernels dispatch to, e.g. ``AVX512``).
    """
    flags = cpu_flags(cpuinfo)
    if flags:
        amx, avx = "amx_bf16" in flags, "avx512_bf16" in flags
        source = "/proc/cpuinfo"
    else:
        amx = bool(_torch_probe("_is_amx_tile_supported"))
        avx = bool(_torch_probe("_is_avx512_bf16_supported"))
        source = "torch"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = "unknown"
    return {
        "amx_bf16": amx,
        "avx512_bf16": avx,
        "fast": amx or avx,
        "source": source,
        "torch_cpu_capability": capability,
    }


def bf16_is_fast(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has native bfloat16 arithmetic (a precondition for CPU bf16 autocast to pay)."""
    return bool(bf16_support(cpuinfo)["fast"])


def machine_record(device: str | torch.device = "cpu") -> dict[str, Any]:
    """A JSON-serialisable description of the machine, for logs and benchmark results.

    Args:
        device: The training device; a CUDA device adds its name and memory.
    """
    rec: dict[str, Any] = {
        "cpu_model": cpu_model_name(),
        "logical_cpus": os.cpu_count() or 1,
        "physical_cores": physical_cores(),
        "available_cpus": available_cpus(),
        "cgroup_cpu_limit": cgroup_cpu_limit(),
        "torch_threads": torch.get_num_threads(),
        "bf16": bf16_support(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(dev)
        rec["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
    return rec
