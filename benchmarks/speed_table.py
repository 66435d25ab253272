"""The README's performance table: llamalite beside llama.cpp (through
llama-cpp-python) on every real model of the catalogue, 1 and 2 threads.

For each model it runs `python -m llamalite.bench`'s tests (pp512 and tg128
by default), both implementations interleaved, then measures load to first
token and peak resident memory while generating, each in a fresh process per
implementation (alternating, several times). It prints one markdown table of
speed and one of load time and memory, writes every record as JSON, and draws
a bar chart of tokens per second.

Run it in a Python where llamalite, llama-cpp-python and matplotlib are all
installed (`pip install . llama-cpp-python matplotlib`):

    python benchmarks/speed_table.py [--models a,b] [-t 1,2] [-r 5] [--out benchmarks/results]

Without llama_cpp it measures llamalite alone; without matplotlib it skips
the chart.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from llamalite import models
from llamalite.bench.machine import cpu_name
from llamalite.bench.model import (OURS, PEERS, Test, markdown_table, model_facts,
                                   peer_version, results, run_benchmark)
from llamalite.gguf import GGUFReader
from llamalite.model import ModelConfig
from llamalite.bench.kernels import thread_list
from llamalite._native import get_isa
from llamalite.threads import physical_cores

PEER = "llama-cpp-python"

# One process: load the model, generate the first token of a short prompt
# (load-to-first-token), then 128 more; print both numbers and the peak RSS.
FIRST_TOKEN = r"""
import json, sys, time
started = time.perf_counter()
impl, path, n_ctx = sys.argv[1], sys.argv[2], int(sys.argv[3])
if impl == "llamalite":
    from llamalite import Llama
else:
    from llama_cpp import Llama
llm = Llama(path, n_ctx=n_ctx, n_threads=int(sys.argv[4]), verbose=False)
gen = llm.generate(llm.tokenize(b"The capital of France is"), temp=0.0)
next(gen)
first = time.perf_counter() - started
for _ in range(128):
    next(gen)
gen.close()
# VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's RSS
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
rss = int(hwm.split()[1]) * 1024
print(json.dumps({"first_token_s": first, "peak_rss": rss}))
"""


def first_token_runs(path: Path, impls, n_threads: int, n_ctx: int, reps: int) -> dict:
    runs = {impl: [] for impl in impls}
    for rep in range(reps):
        for impl in (impls if rep % 2 == 0 else impls[::-1]):
            name = "llamalite" if impl == OURS else "llama_cpp"
            out = subprocess.run([sys.executable, "-c", FIRST_TOKEN, name, str(path),
                                  str(n_ctx), str(n_threads)],
                                 capture_output=True, text=True, check=True)
            runs[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def kv_cache_bytes(path: Path, n_ctx: int) -> int:
    """F16 K and V for every layer and position, as both implementations keep them."""
    with GGUFReader(path) as r:
        cfg = ModelConfig.from_gguf(r)
    return 2 * cfg.n_layer * n_ctx * cfg.n_head_kv * (cfg.head_dim_k + cfg.head_dim_v)


def speed_table(records, impls) -> str:
    return markdown_table(records, impls, ["model", "threads", "test"],
                          lambda r: [r["model_type"], str(r["n_threads"]), r["test"]],
                          lambda r: f"{r['median_ts']:.1f}", lambda x: f"**{x:.2f}×**")


def memory_table(rows, impls) -> str:
    names = [PEERS.get(i, i) for i in impls]
    cols = ["model", "file MiB", "KV cache MiB"]
    cols += [f"{n} first token s" for n in names] + [f"{n} peak RSS MiB" for n in names]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row["model"], f"{row['file'] / 2**20:.0f}", f"{row['kv'] / 2**20:.0f}"]
        cells += [f"{statistics.median(r['first_token_s'] for r in row['runs'][i]):.3f}"
                  for i in impls]
        cells += [f"{max(r['peak_rss'] for r in row['runs'][i]) / 2**20:.0f}" for i in impls]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(records, impls, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tests = sorted({r["test"] for r in records}, key=lambda t: (t[:2] != "pp", t))
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.5), squeeze=False)
    for ax, test in zip(axes[0], tests):
        rows = [r for r in records if r["test"] == test]
        labels = sorted({(r["model_type"], r["n_threads"]) for r in rows},
                        key=lambda x: (x[0], x[1]))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            values = [next(r["median_ts"] for r in rows if r["impl"] == impl
                           and (r["model_type"], r["n_threads"]) == lab) for lab in labels]
            ax.bar([i + k * width for i in range(len(labels))], values, width,
                   label=PEERS.get(impl, impl))
        ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(labels))])
        ax.set_xticklabels([" ".join(m.split()[:2]) + f"\n{t} thr" for m, t in labels], fontsize=8)
        ax.set_ylabel("tokens / s")
        ax.set_title(test)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(models.CATALOG))
    p.add_argument("-t", "--threads", type=thread_list, default=[1, 2])
    p.add_argument("-p", type=int, default=512)
    p.add_argument("-n", type=int, default=128)
    p.add_argument("-r", "--repetitions", type=int, default=5)
    p.add_argument("--first-token-runs", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    impls = [OURS] + ([PEER] if importlib.util.find_spec("llama_cpp") else [])
    versions = {OURS: "llamalite"}
    if len(impls) > 1:
        versions[PEER] = peer_version(PEER)
    info = {"cpu": cpu_name(), "cores": physical_cores(), "isa": get_isa(),
            "reps": args.repetitions, "versions": versions}
    tests = [Test(args.p, 0), Test(0, args.n)]
    records, memory = [], []
    for name in args.models.split(","):
        facts = model_facts(models.resolve(name))
        log = lambda m: print(f"{name}: {m}", file=sys.stderr, flush=True)  # noqa: E731
        measured = run_benchmark(facts, tests, args.threads, impls, 512, args.repetitions, log)
        records += results(facts, tests, args.threads, impls, 512, measured, info)
        n_ctx = 512
        memory.append({"model": facts.label, "file": os.path.getsize(facts.path),
                       "kv": kv_cache_bytes(facts.path, n_ctx),
                       "runs": first_token_runs(facts.path, impls, max(args.threads), n_ctx,
                                                args.first_token_runs)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps({"info": info, "records": records,
                                                    "memory": memory}, indent=2))
    by_threads = {}
    for r in records:
        by_threads.setdefault(r["n_threads"], set()).add(r["read_bandwidth_gbps"])
    bws = [(t, round(statistics.median(v), 1)) for t, v in sorted(by_threads.items())]
    print(f"{info['cpu']}, {info['cores']} cores, llamalite ISA {info['isa']}; "
          + ", ".join(versions.values()) + f"; medians of {args.repetitions} interleaved runs; "
          "memory read bandwidth (median over the models' runs) "
          + ", ".join(f"{g} GB/s ({t} thr)" for t, g in bws) + "\n")
    print(speed_table(records, impls))
    print(f"\nLoad to first token ({max(args.threads)} threads, medians of "
          f"{args.first_token_runs} fresh processes) and peak RSS after 128 tokens (n_ctx 512):\n")
    print(memory_table(memory, impls))
    if chart(records, impls, args.out / "speed.png"):
        print(f"\nchart: {args.out / 'speed.png'}")


if __name__ == "__main__":
    main()
