"""Keep freed tensor memory inside the process during CPU training, so that it is not faulted in again.

glibc's ``malloc`` serves every request above its mmap threshold (128 KiB at start, raised
by itself up to 32 MiB) with a fresh ``mmap`` and gives it back to the kernel when freed; it
also trims free memory at the top of its heap above 128 KiB. The next tensor of that size is
then zero-filled by the kernel page by page on first touch. An update of the embedded model
allocates and frees activations of one to three MiB thousands of times, so much of it ran in
the kernel: on 2 cores (AMD EPYC, torch 2.13) the first update of a demo run spent 17.0 s of
its 39.2 s in system time with 545,000 minor page faults, the third 3.9 s of 28.3 s with
124,000. With both thresholds raised, the third update took 24.5 s, 0.5 s of it in the kernel,
with 4 page faults (benchmarks/RESULTS.md, 2026-12-04).

:func:`keep_freed_memory` raises them with ``mallopt``: what ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment do, or a caching allocator such as jemalloc
loaded with ``LD_PRELOAD``, as PyTorch's CPU performance guides advise, but from inside the
process and without a package. The process then keeps the memory it freed and reuses it:
its peak resident memory stays the peak of what it holds at once, but its resident memory no
longer falls after a peak. Off glibc (macOS, musl) it does nothing, and so it does where the
user set glibc's thresholds already (:data:`USER_SETTINGS` in the environment): theirs stay.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # requests above 1 GiB still get their own mapping
GLIBC_MMAP_THRESHOLD_MAX = 32 << 20  # what older glibc accepts at most on 64-bit
TRIM_THRESHOLD = (1 << 31) - 1  # the largest C int: the heap's top is kept
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad")  # the same


def keep_freed_memory(device) -> bool:
    """On a CPU ``device``, raise glibc's mmap and trim thresholds for this process; True when glibc took them.

    False, touching nothing, where the environment sets these thresholds already (``MALLOC_MMAP_THRESHOLD_``
    and its kin, or their ``GLIBC_TUNABLES``): the user's choice wins. Other malloc settings (an arena cap,
    huge pages) leave them to us."""
    return device.type == "cpu" and not user_set_thresholds() and _raise_thresholds()


def user_set_thresholds() -> bool:
    """Whether the environment sets glibc's mmap, trim or top-pad threshold itself."""
    tunables = [item.split("=")[0] for item in os.environ.get("GLIBC_TUNABLES", "").split(":")]
    return any(name in os.environ for name in USER_SETTINGS) or any(t in USER_TUNABLES for t in tunables)


@functools.cache
def _raise_thresholds() -> bool:
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX)
    return bool(mapped) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc_mallopt():
    """glibc's ``mallopt(int, int) -> int``, or None where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
