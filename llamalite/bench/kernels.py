"""`python -m llamalite.bench kernels`: GEMV throughput per weight type, beside
this machine's memory read bandwidth measured in the same run.

A GEMV (one activation row against a weight matrix larger than the last-level
cache) has to stream every weight byte from memory once, so its speed is best
read as GB/s of weight bytes, and the fraction of the memory read bandwidth it
reaches says how close the kernel is to the machine's limit. Timings are
medians over interleaved repetitions: bandwidth, then each thread count's
GEMV, so that noise from a shared machine hits all of them alike.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from .. import quants
from .._native import get_isa, lib, ptr
from ..threads import get_pool, physical_cores
from .machine import cpu_name, last_level_cache_bytes

KERNEL_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


def _weights(qtype: str, cols: int, target_bytes: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """A weight matrix of about target_bytes: 64 quantized random rows, tiled.
    Tiling keeps set-up fast; every row still lives at its own address."""
    base = quants.quantize(np.random.default_rng(seed).standard_normal((64, cols), np.float32),
                           qtype)
    rows = max(64, target_bytes // base.shape[1] // 64 * 64)
    return np.tile(base, (rows // 64, 1)), rows


def _time(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _dequant_rate(raw_row: np.ndarray, qtype: str, cols: int, seconds: float = 0.2) -> float:
    """Single-row dequantize speed in elements per second."""
    out = np.empty(cols, np.float32)
    src, dst, t = ptr(raw_row), ptr(out, "float *"), int(quants.as_type(qtype))
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(64):
            lib.ll_to_float(t, src, raw_row.nbytes, dst, cols)
        n += 64
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n * cols / dt


def bench_kernels(types, threads, cols, target_bytes, reps, log=None):
    """Rows of results, one per type; and the measured read bandwidth per thread count."""
    pools = {t: get_pool(t) for t in threads}
    bw_samples = {t: [] for t in threads}
    rows_out = []
    for qtype in types:
        w, rows = _weights(qtype, cols, target_bytes)
        x = np.random.default_rng(1).standard_normal(cols).astype(np.float32)
        gemv = {t: [] for t in threads}
        for t in threads:  # warm-up: page in the weights, wake the workers
            quants.matmul(w, qtype, x, n_threads=t)
        for _ in range(reps):
            for t in threads:
                bw_samples[t].append(w.nbytes / _time(lib.ll_mem_read, pools[t], ptr(w), w.nbytes))
                gemv[t].append(w.nbytes / _time(quants.matmul, w, qtype, x, t))
        row = {"type": qtype, "rows": rows, "cols": cols, "bytes": int(w.nbytes),
               "bits_per_weight": 8 * w.nbytes / (rows * cols),
               "gemv_gbps": {t: statistics.median(gemv[t]) / 1e9 for t in threads},
               "dequant_melems": _dequant_rate(w[0], qtype, cols) / 1e6}
        rows_out.append(row)
        if log:
            log(f"{qtype}: " + ", ".join(f"{t} thr {row['gemv_gbps'][t]:.1f} GB/s" for t in threads))
        del w
    bandwidth = {t: statistics.median(bw_samples[t]) / 1e9 for t in threads}
    return rows_out, bandwidth


def format_markdown(rows, bandwidth, threads, info) -> str:
    head = (f"llamalite kernels — {info['cpu']}, {info['cores']} cores, ISA {info['isa']}, "
            f"weights {info['mib']} MiB per type ({info['cols']} columns), "
            f"median of {info['reps']} runs\n\n")
    head += "memory read bandwidth: " + ", ".join(
        f"{bandwidth[t]:.1f} GB/s ({t} thr)" for t in threads) + "\n\n"
    cols = ["type", "bits/weight"]
    for t in threads:
        cols += [f"GEMV {t} thr GB/s", f"% of read bw ({t} thr)"]
    cols.append("dequant 1 row M elem/s")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["type"], f"{r['bits_per_weight']:.2f}"]
        for t in threads:
            g = r["gemv_gbps"][t]
            cells += [f"{g:.1f}", f"{100 * g / bandwidth[t]:.0f}%"]
        cells.append(f"{r['dequant_melems']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def thread_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2, got {text!r}") from None
    if not values or any(v < 1 or v > 1024 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be in 1..1024, got {text!r}")
    return values


def _type_list(text: str) -> list[str]:
    names = [v.strip().upper() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in KERNEL_TYPES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown type(s) {', '.join(bad) or text!r}; choose from {', '.join(KERNEL_TYPES)}")
    return names


def main(argv=None) -> int:
    k = parser = argparse.ArgumentParser(
        prog="python -m llamalite.bench kernels",
        description="GEMV GB/s per weight type against the memory read bandwidth")
    k.add_argument("-t", "--threads", type=thread_list, default=None,
                   help="comma-separated thread counts (default: 1 and all physical cores)")
    k.add_argument("--types", type=_type_list, default=list(KERNEL_TYPES),
                   help="comma-separated weight types (default: all)")
    k.add_argument("--cols", type=int, default=8192, help="row length (default 8192)")
    k.add_argument("--mib", type=int, default=None,
                   help="weight MiB per type (default: twice the last-level cache, 256..2048)")
    k.add_argument("-r", "--repetitions", type=int, default=5, help="runs per measurement")
    k.add_argument("-o", "--output", choices=("md", "json"), default="md")
    args = parser.parse_args(argv)

    threads = args.threads or sorted({1, physical_cores()})
    if args.cols < 256 or args.cols % 256:
        parser.error("--cols must be a positive multiple of 256")
    if args.repetitions < 1:
        parser.error("--repetitions must be at least 1")
    llc = last_level_cache_bytes()
    mib = args.mib or int(min(2048, max(256, 2 * llc / 2**20)))
    if mib < 1:
        parser.error("--mib must be positive")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    rows, bandwidth = bench_kernels(args.types, threads, args.cols, mib << 20,
                                    args.repetitions, log)
    info = {"cpu": cpu_name(), "cores": physical_cores(), "isa": get_isa(), "mib": mib,
            "cols": args.cols, "reps": args.repetitions, "llc_bytes": llc}
    if args.output == "json":
        print(json.dumps({"info": info, "read_bandwidth_gbps": bandwidth, "kernels": rows},
                         indent=2))
    else:
        print(format_markdown(rows, bandwidth, threads, info), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
