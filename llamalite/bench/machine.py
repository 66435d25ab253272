"""Facts about this machine that benchmarks print beside their numbers."""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from .._native import lib, ptr
from ..threads import get_pool


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_level_cache_bytes() -> int:
    """The largest cache Linux reports for cpu0 (0 when unknown)."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best


def bandwidth_buffer(min_bytes: int = 256 << 20) -> tuple:
    """A buffer twice the last-level cache (at least min_bytes), so that
    reading it measures DRAM, not a cache; in 2 MiB pages, as the weights
    (llamalite.model.read_tensor_data), so that both pay the same for TLB
    misses. Returns (the mapping, which must stay alive, a float64 view)."""
    from ..model import huge_page_memory
    size = max(min_bytes, 2 * last_level_cache_bytes()) // 8 * 8
    mem, raw = huge_page_memory(size)
    buf = raw.view(np.float64)
    buf[:] = 1.0   # written once: every page is real
    return mem, buf


def read_bandwidth(buf: np.ndarray, n_threads: int, reads: int = 3) -> float:
    """Bytes per second of the fastest of `reads` threaded reads of `buf`
    (ll_mem_read: each thread sums its share with wide loads). The first read
    after a pause runs well below the others (the cores wake up and raise
    their clocks), hence several."""
    pool = get_pool(n_threads)
    best = float("inf")
    for _ in range(reads):
        started = time.perf_counter()
        lib.ll_mem_read(pool, ptr(buf), buf.nbytes)
        best = min(best, time.perf_counter() - started)
    return buf.nbytes / best
