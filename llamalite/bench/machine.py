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


def bandwidth_buffer(min_bytes: int = 256 << 20) -> np.ndarray:
    """A buffer twice the last-level cache (at least min_bytes), so that
    reading it measures DRAM, not a cache."""
    size = max(min_bytes, 2 * last_level_cache_bytes())
    return np.ones(size // 8, np.float64)   # written once: every page is real


def read_bandwidth(buf: np.ndarray, n_threads: int) -> float:
    """Bytes per second of one threaded read of `buf` (ll_mem_read: each
    thread sums its share with wide loads)."""
    pool = get_pool(n_threads)
    started = time.perf_counter()
    lib.ll_mem_read(pool, ptr(buf), buf.nbytes)
    return buf.nbytes / (time.perf_counter() - started)
