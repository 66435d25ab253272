"""Thread pools of the C core, one per size, created on first use and kept."""
from __future__ import annotations

import atexit
import functools
import os
import threading
from pathlib import Path

_pools: dict[int, object] = {}
_lock = threading.Lock()


def _forget_pools_after_fork() -> None:
    """A forked child inherits the pools but not their worker threads: it must
    neither use them (it would wait forever) nor free them (joining threads
    that don't exist). Drop them without their destructors; the child makes
    its own on first use."""
    global _lock
    _lock = threading.Lock()
    if _pools:
        from ._native import ffi
    for pool in _pools.values():
        ffi.gc(pool, None)
    _pools.clear()


def _free_pools_at_exit() -> None:
    """Stop the workers while the C library is still loaded: left to the final
    garbage collection, a pool's destructor may run after cffi unloaded it."""
    if _pools:
        from ._native import ffi
    for pool in _pools.values():
        ffi.release(pool)
    _pools.clear()


atexit.register(_free_pools_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


@functools.lru_cache(maxsize=None)
def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once (read once:
    every default-sized pool lookup asks)."""
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
