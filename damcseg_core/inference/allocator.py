"""Keep freed tensor memory in the process for reuse (glibc malloc), instead of returning it to the OS.

A frame of ``damcseg_edge`` allocates and frees dozens of 2.5-10 MB tensors (the 19-class
score maps of the refinement stage at 128x256 and 256x512). glibc serves blocks that size with
``mmap`` and unmaps them on ``free``, or trims them off the heap top, so every frame faults the
same pages in again. Measured on a 2-core Xeon in fresh processes
(``benchmarks/results/allocator_2026-12-03.md``): with the blocks kept, the model forward ran
1.12x and ``Predictor.predict`` 1.08x as fast as in a plain process; torchvision LRASPP gained
1.16x, so the speed ratio to that peer does not improve (0.68x plain, 0.66x tuned). PyTorch's CPU tuning guide gives the
same advice through jemalloc / tcmalloc (``LD_PRELOAD``); :func:`tune_allocator` gets the effect
without a second library by raising glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``
(``mallopt(3)``) in the running process.

The cost: memory a frame freed stays in the process (its resident size stays at the peak of a
frame instead of dipping between frames); nothing else changes, outputs are bit-identical.
Process-wide, so the library never calls it on its own: the ROS node does at configure
(parameter ``tune_allocator``, default true), a library user calls it once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Any

__all__ = ["MMAP_THRESHOLD_MAX_MB", "tune_allocator"]

# mallopt(3) parameter numbers (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 on older releases: 32 MiB on 64-bit.
MMAP_THRESHOLD_MAX_MB = 32


def _libc() -> Any:
    """The C library, or None where it cannot be loaded (kept separate so tests can replace it)."""
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator(mmap_threshold_mb: int = MMAP_THRESHOLD_MAX_MB) -> tuple[bool, str]:
    """Make glibc keep freed blocks below ``mmap_threshold_mb`` MiB in the process for reuse.

    Sets ``M_MMAP_THRESHOLD`` to ``mmap_threshold_mb`` MiB (blocks smaller than that come from
    the heap, not from a fresh ``mmap`` each time) and ``M_TRIM_THRESHOLD`` to four times that
    (the heap top is handed back to the OS only beyond it). Safe to call more than once.

    Args:
        mmap_threshold_mb: 1 to :data:`MMAP_THRESHOLD_MAX_MB`; the default covers one
            19 x 256 x 512 float32 score map (10 MB).

    Returns:
        ``(applied, message)``: ``applied`` is False, with the reason, on a C library other
        than glibc (musl, macOS, Windows) or when ``mallopt`` refuses a value; nothing is
        changed then.

    Raises:
        ValueError: ``mmap_threshold_mb`` outside 1..32.
    """
    if (
        isinstance(mmap_threshold_mb, bool)
        or not isinstance(mmap_threshold_mb, int)
        or not 1 <= mmap_threshold_mb <= MMAP_THRESHOLD_MAX_MB
    ):
        raise ValueError(
            f"mmap_threshold_mb must be an integer from 1 to {MMAP_THRESHOLD_MAX_MB} (MiB), got "
            f"{mmap_threshold_mb!r}; the default ({MMAP_THRESHOLD_MAX_MB}) covers the model's largest tensors"
        )
    libc_name, libc_version = platform.libc_ver()
    if libc_name != "glibc":
        return False, f"allocator left as it is: not glibc ({libc_name or platform.system()})"
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False, "allocator left as it is: glibc's mallopt could not be loaded"
    mmap_bytes = mmap_threshold_mb << 20
    trim_bytes = 4 * mmap_bytes
    # The mmap threshold first: when it is refused nothing has changed yet.
    if libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes) != 1:
        return False, f"allocator left as it is: glibc {libc_version} mallopt refused {mmap_threshold_mb} MiB"
    if libc.mallopt(M_TRIM_THRESHOLD, trim_bytes) != 1:  # accepts any size in every glibc we know
        return False, f"glibc {libc_version}: mmap threshold set, trim threshold refused"
    return True, (
        f"glibc {libc_version} malloc keeps freed blocks up to {mmap_threshold_mb} MiB for reuse "
        f"(mmap threshold {mmap_threshold_mb} MiB, trim threshold {4 * mmap_threshold_mb} MiB)"
    )
