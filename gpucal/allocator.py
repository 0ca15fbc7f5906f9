"""glibc's allocator tuned for a calibration process (``strun``, ``gpucal demo``, Dask workers).

The NumPy backend works in blocks of rows: each block allocates and frees tens of
megabytes of temporaries.  With glibc's defaults the memory freed at the top of the heap
goes back to the system after every block (``M_TRIM_THRESHOLD`` 128 KiB, raised only
dynamically) and the next block faults it in again; on the 2-core VM this cost the whole
pipeline up to a fifth of its time (``roman_elp`` on a 1024x4096 demo, 3 runs each:
median 9.1 s against 7.3 s, the ramp fit up to 3.8 s against 2.0 s; README, Performance).  A process that runs gpucal's command line owns its
allocator, so the command line sets, once:

* ``M_MMAP_THRESHOLD`` 32 MiB: the exposure's cubes still come from (and go back to)
  ``mmap``; block temporaries come from the heap;
* ``M_TRIM_THRESHOLD`` 256 MiB: up to that much freed heap is kept for the next block.

Library use (``import gpucal``) leaves the allocator alone.  ``GPUCAL_MALLOC_TUNE=0``, or
glibc's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment,
turns this off; so does any C library without ``mallopt`` (then nothing changes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["tune_allocator", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Set the thresholds above for this process (once); return whether they are set."""
    if "done" in _state:
        return _state["done"]
    env = os.environ
    if (env.get("GPUCAL_MALLOC_TUNE", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in env
            or "MALLOC_TRIM_THRESHOLD_" in env or not sys.platform.startswith("linux")):
        _state["done"] = False
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl)
        _state["done"] = False
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state["done"] = done
    log.debug("allocator thresholds %s (mmap %d MiB, trim %d MiB)", "set" if done else "not set",
              MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    return done
