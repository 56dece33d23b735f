"""Keep freed memory in the process: the allocator setting of the ``perturb`` command.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most 32 MiB)
with a fresh ``mmap`` and unmaps it when it is freed. A solver iteration frees and allocates the same large temporaries
again and again (the blur pyramid's levels, the masks' upsampled views, the classifier's
activations for a batch), so on a CPU every iteration had the kernel map and zero those pages
anew: on the 2-core CPU of ``results/benchmarks/allocator-cpu.csv`` an extremal solve spent 23.6 of
its 41.6 s in the kernel (``python benchmarks/run.py allocator``). :func:`retain_freed_memory` makes malloc take every block
from its heap and keep the freed top of the heap, so later iterations reuse the same pages. The
process's resident memory then stays near its peak instead of falling between batches.

``perturb`` applies it at start; a library user may call it. It changes nothing where the C
library is not glibc, and nothing when the user set glibc's own ``MALLOC_MMAP_MAX_`` or
``MALLOC_TRIM_THRESHOLD_`` (their choice stands). ``PERTURB_RETAIN_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_KEEP_BYTES = 2**31 - 1  # the largest trim threshold mallopt takes (an int): the freed top stays


def retain_freed_memory() -> bool:
    """Set this process's glibc malloc to serve large blocks from its heap and keep freed memory
    (``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 2 GiB); returns whether it did."""
    if sys.platform != "linux" or os.environ.get("PERTURB_RETAIN_MEMORY", "1") == "0":
        return False
    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
