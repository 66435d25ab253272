"""`python -m llamalite.bench -m MODEL`: how fast a model processes a prompt
and generates, in llama-bench's vocabulary and columns.

- `pp N`: evaluate an N-token prompt (random token ids) from an empty KV
  cache, in batches of -b tokens; t/s = N / seconds.
- `tg N`: generate N tokens one at a time after a one-token prompt, each a
  forward pass plus the default sampling chain (top-k 40, top-p 0.95, min-p
  0.05, temperature 0.8); t/s = N / seconds.
- `tg N json` (with `--grammar json`): the same under a grammar, an endless
  JSON array, so constrained sampling's cost shows beside plain `tg N`.

Both run through the `Llama` API, so with `--peer llama-cpp-python` the very
same calls run on `llama_cpp.Llama`. Repetitions are interleaved (for each
repetition: the memory read bandwidth, then every test on every
implementation, the order of the implementations alternating) so that noise
on a shared machine hits all alike; the table shows mean ± sample standard
deviation, and the ratios are of medians. For generation it also shows the
weight bytes read per second (the bytes of every tensor a token reads, times
tokens per second) and what share of the machine's read bandwidth, measured
in the same run, that is: the distance to the ceiling the memory sets.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import models
from .._native import get_isa
from ..errors import LlamaliteError
from ..gguf import GGUFReader
from ..grammar import JSON_RULES, LlamaGrammar
from ..llama import Llama
from ..quantize import FILE_TYPES
from ..threads import physical_cores
from .kernels import thread_list
from .machine import bandwidth_buffer, cpu_name, read_bandwidth

OURS = "llamalite"
# A pause before each timed run: worker threads that spin a while after their
# last job (both implementations' do) are asleep again, so that neither run
# shares the cores with the other's leftovers.
SETTLE_S = 0.05
PEERS = {"llama-cpp-python": "llama.cpp"}


# Grammars generation can be timed under (--grammar): JSON values in an array
# that never closes, so every test generates its full count.
GRAMMARS = {"json": 'root ::= "[" ws value ( "," ws value )*' + JSON_RULES}


@dataclass(frozen=True)
class Test:
    n_prompt: int
    n_gen: int
    grammar: str = ""  # a GRAMMARS name, for tg

    @property
    def name(self) -> str:
        if self.n_prompt:
            return f"pp{self.n_prompt}"
        return f"tg{self.n_gen} {self.grammar}" if self.grammar else f"tg{self.n_gen}"


@dataclass
class ModelFacts:
    path: Path
    arch: str
    ftype: str
    n_params: int
    size: int            # bytes of all tensors
    bytes_per_token: int  # bytes of the tensors one generated token reads

    @property
    def label(self) -> str:
        return f"{self.arch} {_count(self.n_params)} {self.ftype}"


def model_facts(path: Path) -> ModelFacts:
    """What the table says about the model, from its GGUF header. A token
    reads every tensor once, except the token embeddings, of which it reads
    one row, unless they double as the output projection."""
    with GGUFReader(path) as r:
        tensors = r.tensors
        size = sum(t.nbytes for t in tensors.values())
        embd = tensors.get("token_embd.weight")
        per_token = size
        if embd is not None and "output.weight" in tensors:
            per_token -= embd.nbytes - embd.nbytes // max(1, embd.shape[0])
        ftype_id = r.metadata.get("general.file_type")
        names = {v[0]: k for k, v in FILE_TYPES.items()}
        return ModelFacts(path=Path(path), arch=str(r.metadata.get("general.architecture", "?")),
                          ftype=names.get(ftype_id, f"ftype {ftype_id}"),
                          n_params=sum(t.n_elements for t in tensors.values()),
                          size=size, bytes_per_token=per_token)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


class Engine:
    """One implementation's Llama for one thread count, and how to time a test on it."""

    def __init__(self, impl: str, llm, n_vocab: int, seed: int):
        self.impl, self.llm = impl, llm
        self.rng = np.random.default_rng(seed)
        self.n_vocab = n_vocab
        self.grammars: dict = {}

    def run(self, test: Test) -> float:
        return self._pp(test.n_prompt) if test.n_prompt else self._tg(test.n_gen, test.grammar)

    def _pp(self, n: int) -> float:
        tokens = self.rng.integers(0, self.n_vocab, n).tolist()
        self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(tokens)
        return time.perf_counter() - started

    def _tg(self, n: int, grammar: str = "") -> float:
        self.llm.reset()
        kwargs = {"grammar": self._grammar(grammar)} if grammar else {}
        tokens = self.llm.generate([int(self.rng.integers(0, self.n_vocab))], **kwargs)
        try:
            next(tokens)          # the one-token prompt and the first sample: not timed
            started = time.perf_counter()
            for _ in range(n):    # each: the last token's forward pass, then a sample
                next(tokens)
            return time.perf_counter() - started
        finally:
            tokens.close()

    def _grammar(self, name: str):
        """The implementation's grammar object, parsed once (the states and
        allowed tokens it works out carry over between repetitions, as they
        would between a server's requests)."""
        if name not in self.grammars:
            if self.impl == OURS:
                self.grammars[name] = LlamaGrammar.from_string(GRAMMARS[name])
            else:
                import llama_cpp
                self.grammars[name] = llama_cpp.LlamaGrammar.from_string(GRAMMARS[name],
                                                                         verbose=False)
        return self.grammars[name]


def _load(impl: str, path: Path, n_threads: int, n_ctx: int, n_batch: int):
    if impl == OURS:
        return Llama(str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                     n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
    import llama_cpp     # present: main() checked it before
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                           n_threads=n_threads, n_threads_batch=n_threads, verbose=False)


def peer_version(peer: str) -> str:
    import llama_cpp
    return f"{peer} {llama_cpp.__version__}"


def run_benchmark(facts: ModelFacts, tests, threads, impls, n_batch: int, reps: int,
                  log=None) -> dict:
    """Samples of seconds per (impl, threads, test name), and read bandwidths
    per thread count, all interleaved."""
    n_ctx = max(t.n_prompt + t.n_gen for t in tests) + 1
    n_ctx = max(256, -(-n_ctx // 256) * 256)
    engines = {}
    for t in threads:
        for impl in impls:
            llm = _load(impl, facts.path, t, n_ctx, n_batch)
            engines[impl, t] = Engine(impl, llm, llm.n_vocab(), seed=t)
    mapping, buf = bandwidth_buffer()   # buf reads the mapping: both live to the end
    for engine in engines.values():     # warm-up: page the model in, wake the threads
        for test in tests:
            engine.run(Test(test.n_prompt, min(test.n_gen, 4), test.grammar))
    seconds = {(impl, t, test.name): [] for (impl, t) in engines for test in tests}
    bandwidth = {t: [] for t in threads}
    for rep in range(reps):
        for t in threads:
            time.sleep(SETTLE_S)
            bandwidth[t].append(read_bandwidth(buf, t))
            for test in tests:
                for impl in (impls if rep % 2 == 0 else impls[::-1]):
                    time.sleep(SETTLE_S)
                    s = engines[impl, t].run(test)
                    seconds[impl, t, test.name].append(s)
                    if log:
                        log(f"[{rep + 1}/{reps}] {impl} {t} thr {test.name}: "
                            f"{_tokens(test) / s:.2f} t/s")
    for engine in engines.values():
        close = getattr(engine.llm, "close", None)
        if close:
            close()
    return {"seconds": seconds, "bandwidth": bandwidth}


def _tokens(test: Test) -> int:
    return test.n_prompt or test.n_gen


def results(facts: ModelFacts, tests, threads, impls, n_batch, measured, info) -> list:
    """One record per implementation, thread count and test, with
    llama-bench's JSON field names plus ours."""
    out = []
    bw = {t: statistics.median(v) for t, v in measured["bandwidth"].items()}
    for t in threads:
        for test in tests:
            medians = {}
            for impl in impls:
                secs = measured["seconds"][impl, t, test.name]
                rates = [_tokens(test) / s for s in secs]
                medians[impl] = statistics.median(rates)
                rec = {
                    "impl": impl, "version": info["versions"][impl],
                    "model_filename": str(facts.path), "model_type": facts.label,
                    "model_size": facts.size, "model_n_params": facts.n_params,
                    "backend": f"CPU {info['isa']}" if impl == OURS else "CPU",
                    "cpu_info": info["cpu"], "n_batch": n_batch, "n_threads": t,
                    "n_prompt": test.n_prompt, "n_gen": test.n_gen, "test": test.name,
                    "avg_ns": int(statistics.fmean(secs) * 1e9),
                    "stddev_ns": int(_stdev(secs) * 1e9),
                    "avg_ts": statistics.fmean(rates), "stddev_ts": _stdev(rates),
                    "median_ts": medians[impl], "samples_ts": rates,
                    "read_bandwidth_gbps": bw[t] / 1e9,
                }
                if test.n_gen:
                    rec["weights_gbps"] = facts.bytes_per_token * medians[impl] / 1e9
                    rec["read_bandwidth_share"] = facts.bytes_per_token * medians[impl] / bw[t]
                out.append(rec)
            if len(impls) > 1:
                out[-len(impls)]["ratio_vs_peer"] = medians[impls[0]] / medians[impls[1]]
    return out


def _stdev(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def markdown_table(records, impls, lead_cols, lead, rate, ratio) -> str:
    """A markdown table of `records` (results() order: the implementations of
    one test side by side): the cells lead(our record) under lead_cols, then
    rate(record) per implementation, ratio(ours / peer) when there is a
    peer, and for generation the weight GB/s and its share of the read
    bandwidth."""
    names = [PEERS.get(i, i) for i in impls]
    cols = list(lead_cols) + [f"{n} t/s" for n in names]
    if len(impls) > 1:
        cols.append(f"{names[0]} / {names[1]}")
    cols += ["weights GB/s", "% of read bw"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i in range(0, len(records), len(impls)):
        group = records[i:i + len(impls)]
        ours = group[0]
        cells = list(lead(ours)) + [rate(r) for r in group]
        if len(impls) > 1:
            cells.append(ratio(ours["ratio_vs_peer"]))
        if "weights_gbps" in ours:
            cells += [f"{ours['weights_gbps']:.1f}", f"{100 * ours['read_bandwidth_share']:.0f}%"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(records, facts: ModelFacts, impls, info) -> str:
    bws = sorted({(r["n_threads"], r["read_bandwidth_gbps"]) for r in records})
    head = (f"{info['cpu']}, {info['cores']} cores, llamalite ISA {info['isa']}; "
            + ", ".join(info["versions"][i] for i in impls)
            + f"; {info['reps']} repetitions, interleaved\n"
            + "memory read bandwidth: "
            + ", ".join(f"{g:.1f} GB/s ({t} thr)" for t, g in bws) + "\n\n")
    table = markdown_table(
        records, impls, ["model", "size", "params", "threads", "test"],
        lambda r: [facts.label, f"{facts.size / 2**20:.2f} MiB", _count(facts.n_params),
                   str(r["n_threads"]), r["test"]],
        lambda r: f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}",
        lambda x: f"{x:.2f}×")
    return head + table + "\n"


CSV_FIELDS = ("impl", "version", "model_filename", "model_type", "model_size", "model_n_params",
              "backend", "n_batch", "n_threads", "n_prompt", "n_gen", "test", "avg_ns",
              "stddev_ns", "avg_ts", "stddev_ts", "median_ts", "ratio_vs_peer",
              "weights_gbps", "read_bandwidth_gbps", "read_bandwidth_share")


def format_csv(records) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    return out.getvalue()


def _count_list(flag: str):
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects counts like 128,512, "
                                             f"got {text!r}") from None
        if not values or any(v < 0 or v > 1 << 20 for v in values):
            raise argparse.ArgumentTypeError(f"{flag} counts must be in 0..1048576, got {text!r}")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llamalite.bench",
        description="Prompt processing (ppN) and generation (tgN) speed of a model, "
                    "optionally beside llama.cpp. `python -m llamalite.bench kernels` "
                    "times the kernels alone.")
    p.add_argument("-m", "--model", default=models.DEFAULT_MODEL,
                   help=f"a GGUF path or a catalogue name (default {models.DEFAULT_MODEL})")
    p.add_argument("-p", "--n-prompt", type=_count_list("-p"), default=[512],
                   help="prompt lengths, comma-separated; 0 skips (default 512)")
    p.add_argument("-n", "--n-gen", type=_count_list("-n"), default=[128],
                   help="generation lengths, comma-separated; 0 skips (default 128)")
    p.add_argument("-t", "--threads", type=thread_list, default=None,
                   help="thread counts, comma-separated (default: 1 and all physical cores)")
    p.add_argument("-b", "--batch-size", type=int, default=512,
                   help="tokens per forward call in pp (default 512)")
    p.add_argument("-r", "--repetitions", type=int, default=5, help="runs of each test (default 5)")
    p.add_argument("-o", "--output", choices=("md", "csv", "json"), default="md")
    p.add_argument("--grammar", choices=tuple(GRAMMARS), default=None,
                   help="also time each tg under this grammar (json: an endless JSON array)")
    p.add_argument("--peer", choices=tuple(PEERS), default=None,
                   help="also run the same tests through this implementation, interleaved")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("-r/--repetitions must be at least 1")
    if args.batch_size < 1:
        parser.error("-b/--batch-size must be at least 1")
    tests = [Test(n, 0) for n in args.n_prompt if n] + [Test(0, n) for n in args.n_gen if n]
    if args.grammar:
        tests += [Test(0, n, args.grammar) for n in args.n_gen if n]
    if not tests:
        parser.error("nothing to run: every -p and -n is 0")
    threads = args.threads or sorted({1, physical_cores()})
    impls = [OURS] + ([args.peer] if args.peer else [])
    try:
        facts = model_facts(models.resolve(args.model))
        versions = {OURS: f"llamalite {_our_version()}"}
        if args.peer:
            versions[args.peer] = _peer_version_or_error(args.peer)
        log = (lambda m: print(m, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
        measured = run_benchmark(facts, tests, threads, impls, args.batch_size,
                                 args.repetitions, log)
    except LlamaliteError as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    info = {"cpu": cpu_name(), "cores": physical_cores(), "isa": get_isa(),
            "reps": args.repetitions, "versions": versions}
    records = results(facts, tests, threads, impls, args.batch_size, measured, info)
    if args.output == "json":
        print(json.dumps(records, indent=2))
    elif args.output == "csv":
        print(format_csv(records), end="")
    else:
        print(format_markdown(records, facts, impls, info), end="")
    return 0


def _our_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("llamalite")
    except PackageNotFoundError:
        return "(source tree)"


def _peer_version_or_error(peer: str) -> str:
    try:
        return peer_version(peer)
    except ImportError:
        raise LlamaliteError(f"--peer {peer}: the llama_cpp package is not installed "
                             "in this Python") from None
