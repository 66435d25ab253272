"""Perplexity across quantization levels: the tutorial's F16 / Q2_K ... Q6_K
table, for a model of the catalogue.

The model's shipped file is first widened to F32 (`quantize ... F32
--allow-requantize`: every tensor dequantized, so the F32 file carries exactly
the shipped weights), then that F32 file is quantized to each type with
llama.cpp's mixes and rules, and every file's perplexity is measured on the
Wikipedia text of shared/MODELS.md by llama.cpp's method. Files go to a
temporary folder and are deleted afterwards.

    python benchmarks/quant_perplexity.py [-m smollm2-135m-instruct] [-c 512] [--chunks 40]
        [--types F32,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K] [-t N]

Prints a markdown table: type, file size, bits per weight, PPL ± its standard
error, and the change against F32.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from llamalite import corpus, models
from llamalite.gguf import GGUFReader
from llamalite.model import Model
from llamalite.perplexity import perplexity
from llamalite.quantize import quantize_model

DEFAULT_TYPES = "F32,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K"


def n_weights(path: Path) -> int:
    with GGUFReader(path) as r:
        return sum(t.n_elements for t in r.tensors.values())


def measure(path: Path, text: str, args) -> tuple:
    started = time.perf_counter()
    with Model(path, n_ctx=args.ctx_size, n_threads=args.threads) as model:
        result = perplexity(model, text, n_ctx=args.ctx_size, n_chunks=args.chunks)
    return result, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=models.DEFAULT_MODEL)
    p.add_argument("-c", "--ctx-size", type=int, default=512)
    p.add_argument("--chunks", type=int, default=40)
    p.add_argument("--types", default=DEFAULT_TYPES)
    p.add_argument("-t", "--threads", type=int, default=None)
    args = p.parse_args()

    source = models.resolve(args.model)
    text = corpus.wiki_text()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "model-F32.gguf"
        quantize_model(source, f32, "F32", allow_requantize=True)
        n = n_weights(f32)
        for name in args.types.split(","):
            path = f32 if name == "F32" else Path(tmp) / f"model-{name}.gguf"
            if path != f32:
                quantize_model(f32, path, name)
            result, seconds = measure(path, text, args)
            size = os.path.getsize(path)
            rows.append((name, size, result))
            print(f"{name}: {result.final_line()} ({seconds:.0f} s)", flush=True)
            if path != f32:
                path.unlink()
    base = rows[0][2].ppl if rows and rows[0][0] == "F32" else None
    print(f"\n{source.name} widened to F32, then quantized; wiki text, -c {args.ctx_size}, "
          f"{rows[0][2].n_chunks if rows else 0} chunks\n")
    print("| type | size MiB | bits/weight | PPL | vs F32 |")
    print("|---|---|---|---|---|")
    for name, size, result in rows:
        change = f"{(result.ppl / base - 1) * 100:+.2f}%" if base else ""
        print(f"| {name} | {size / 2**20:.1f} | {size * 8 / n:.2f} | "
              f"{result.ppl:.4f} ± {result.uncertainty:.4f} | {change} |")


if __name__ == "__main__":
    main()
