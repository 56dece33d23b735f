"""``retain_freed_memory``: after it, glibc serves a large block from its heap (no mmapped block,
so freeing and allocating it again reuses the same pages); users' own MALLOC_* settings and
``PERTURB_RETAIN_MEMORY=0`` leave the allocator alone. Each case runs in a fresh process, as the
setting is the process's."""

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import ctypes, json
from pipeline.allocator import retain_freed_memory

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
applied = retain_freed_memory()
before = libc.mallinfo2().hblks  # blocks mapped while Python and the package started
block = libc.malloc(64 * 2**20)  # above any mmap threshold
mmapped = libc.mallinfo2().hblks - before
libc.free(block)
print(json.dumps({"applied": applied, "mmapped": mmapped}))
"""


def _probe(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PERTURB_RETAIN_MEMORY"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**environment, **env}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _has_mallinfo2() -> bool:
    try:
        return sys.platform == "linux" and hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


glibc = pytest.mark.skipif(not _has_mallinfo2(), reason="glibc 2.33 or later only (mallinfo2)")


@glibc
def test_a_large_block_comes_from_the_heap_once_retained():
    assert _probe() == {"applied": True, "mmapped": 0}


@glibc
def test_the_users_own_settings_stand():
    assert _probe(PERTURB_RETAIN_MEMORY="0") == {"applied": False, "mmapped": 1}
    assert _probe(MALLOC_TRIM_THRESHOLD_="1000000") == {"applied": False, "mmapped": 1}
