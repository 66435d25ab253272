"""Per-token Python overhead of Llama's generation loop.

Generates 64 tokens on the default model (SmolLM2-135M-Instruct), greedy and
with the default sampling chain, and splits each token's time into the C
forward pass (ll_forward) and everything else: the Python side of
Model.eval, sampling, detokenizing, stop-string checks and building chunks.
Times are in ms per token; the best of --repeat runs is shown. Python code
right after a forward pass runs with cold caches (the pass streams the whole
model through them), so it takes several times what a warm micro-benchmark
of the same code shows.

    python benchmarks/llama_overhead.py [--model NAME_OR_PATH] [--tokens 64] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import llamalite.model as model_module
from llamalite import Llama


class _TimedLib:
    """The C library with ll_forward timed; everything else passed through."""

    def __init__(self, lib):
        self._lib = lib
        self.seconds = 0.0
        self.calls = 0

    def ll_forward(self, *args):
        started = time.perf_counter()
        try:
            return self._lib.ll_forward(*args)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def __getattr__(self, name):
        return getattr(self._lib, name)


def measure(llm: Llama, timed: _TimedLib, prompt: str, n_tokens: int, **sampling) -> dict:
    """Stream a completion; time the decode steps (after the first chunk,
    which includes the prompt) in total and inside ll_forward."""
    llm.reset()
    chunks = llm.create_completion(prompt, max_tokens=n_tokens, stream=True, **sampling)
    next(chunks)
    timed.seconds, timed.calls = 0.0, 0
    sampling_before = llm._timings.sample_s
    started = time.perf_counter()
    for _ in chunks:
        pass
    total = time.perf_counter() - started
    tokens = timed.calls
    return {"tokens": tokens, "total_ms": total * 1e3 / tokens,
            "forward_ms": timed.seconds * 1e3 / tokens,
            "overhead_ms": (total - timed.seconds) * 1e3 / tokens,
            "sampling_ms": (llm._timings.sample_s - sampling_before) * 1e3 / tokens,
            "overhead_pct": 100 * (total - timed.seconds) / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode; the best is shown")
    args = ap.parse_args()
    timed = _TimedLib(model_module.lib)
    model_module.lib = timed
    llm = Llama(args.model, n_ctx=512, n_threads=args.threads, verbose=False)
    prompt = "Write a long story about a dragon who learns to cook."
    # Plain defaults first; then with the end-of-generation tokens banned
    # through logit_bias, which guarantees every token is generated and costs
    # a copy of the logits per token (the price of any logit_bias).
    ban_eos = {t: float("-inf") for t in llm._tokenizer.eog_ids}
    modes = {"greedy": dict(temperature=0.0),
             "default sampling": dict(seed=1234),
             "greedy, EOS banned": dict(temperature=0.0, logit_bias=ban_eos),
             "default, EOS banned": dict(seed=1234, logit_bias=ban_eos)}
    print(f"{llm.model_path}: {args.tokens} tokens, n_threads={llm.n_threads}")
    print(f"{'mode':<22}{'tokens':>7}{'ms/token':>10}{'C forward':>11}{'outside C':>11}"
          f"{'of which':>10}{'outside %':>11}")
    print(f"{'':<22}{'':>7}{'':>10}{'':>11}{'':>11}{'sampling':>10}")
    for name, sampling in modes.items():
        runs = [measure(llm, timed, prompt, args.tokens, **sampling)
                for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["overhead_pct"])
        print(f"{name:<22}{best['tokens']:>7}{best['total_ms']:>10.2f}{best['forward_ms']:>11.2f}"
              f"{best['overhead_ms']:>11.3f}{best['sampling_ms']:>10.3f}"
              f"{best['overhead_pct']:>10.1f}%")
    llm.close()


if __name__ == "__main__":
    main()
