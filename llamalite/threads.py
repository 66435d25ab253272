"""Thread pools of the C core, one per size, created on first use and kept."""
from __future__ import annotations

import os
import threading
from pathlib import Path

_pools: dict[int, object] = {}
_lock = threading.Lock()


def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(f.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def get_pool(n_threads: int | None = None):
    """The pool of n_threads threads (default: physical cores)."""
    from ._native import ffi, lib, check
    n = physical_cores() if n_threads is None or n_threads <= 0 else int(n_threads)
    with _lock:
        pool = _pools.get(n)
        if pool is None:
            raw = lib.ll_pool_new(n)
            if raw == ffi.NULL:
                check(-1)
            pool = ffi.gc(raw, lib.ll_pool_free)
            _pools[n] = pool
        return pool
