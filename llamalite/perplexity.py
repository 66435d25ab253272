"""Perplexity of a model on a text, by llama.cpp's method (llama-perplexity),
so that the numbers compare with llama.cpp's:

- the whole text is tokenized once, with BOS where the vocabulary adds it;
- the tokens are cut into consecutive chunks of n_ctx tokens (a remainder
  shorter than n_ctx is dropped); each chunk is evaluated from an empty KV
  cache, its first token replaced by BOS when the vocabulary adds BOS;
- only the second half of each chunk is scored: the logits at positions
  n_ctx/2 .. n_ctx-2 predict the tokens after them, so every scored token
  has at least n_ctx/2 tokens of context;
- the negative log-likelihoods are summed in double precision;
  PPL = exp(mean), and its uncertainty is PPL times the standard error of
  the mean (sample standard deviation / sqrt(count - 1), as llama.cpp).

Cost: n_chunks x n_ctx tokens of prompt processing. The first half of each
chunk is evaluated without logits, so only half of the output projection is
computed, and only n_ctx/2 rows of logits are held at a time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .model import Model
from .tokenizer import Tokenizer


@dataclass
class PerplexityResult:
    ppl: float                 # exp(mean negative log-likelihood)
    uncertainty: float         # ± one standard error of ppl; nan with fewer than 2 scored tokens
    n_chunks: int
    n_tokens: int              # the tokens scored: n_chunks * (n_ctx - 1 - n_ctx // 2)
    running: list[float] = field(default_factory=list)   # ppl after each chunk

    def final_line(self) -> str:
        return f"Final estimate: PPL = {self.ppl:.4f} +/- {self.uncertainty:.5f}"


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] per row, in float64. As llama.cpp:
    exponentials of (logit - max) in float32, summed in float64."""
    top = logits.max(axis=1)
    sums = np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64)
    picked = logits[np.arange(len(targets)), targets]
    return top.astype(np.float64) + np.log(sums) - picked


def _model_and_tokenizer(llm_or_model):
    """(Model, Tokenizer, Llama or None) of a Llama or a Model."""
    if isinstance(llm_or_model, Model):
        return llm_or_model, Tokenizer.from_metadata(llm_or_model.reader.metadata), None
    from .llama import Llama
    if isinstance(llm_or_model, Llama):
        return llm_or_model._live_model(), llm_or_model._tokenizer, llm_or_model
    raise TypeError(f"perplexity needs a Llama or a Model, got {type(llm_or_model).__name__}")


def perplexity(llm_or_model, text: str, n_ctx: int = 512, n_chunks: Optional[int] = None,
               n_batch: int = 512,
               callback: Optional[Callable[[int, int, float], None]] = None) -> PerplexityResult:
    """llama.cpp's perplexity of `text` under a Llama or Model (see the module
    docstring). n_chunks None means every whole chunk of the text; n_batch
    caps the tokens evaluated per forward call (the model's own n_batch caps
    it too). callback(i, n_chunks, ppl_so_far) is called after chunk i (1-based).

    A Llama's evaluated tokens are reset (its KV cache is reused for the chunks).
    """
    model, tokenizer, llm = _model_and_tokenizer(llm_or_model)
    n_ctx, n_batch = int(n_ctx), int(n_batch)
    if n_ctx < 4:
        raise ValueError(f"n_ctx {n_ctx}: perplexity needs chunks of at least 4 tokens")
    if n_ctx > model.n_ctx:
        raise ValueError(f"n_ctx {n_ctx} exceeds the model's context of {model.n_ctx} positions")
    if n_batch < 1:
        raise ValueError(f"n_batch {n_batch} must be at least 1")
    if n_chunks is not None and n_chunks < 1:
        raise ValueError(f"n_chunks {n_chunks} must be at least 1")

    tokens = np.asarray(tokenizer.encode(text, add_bos=True), dtype=np.int32)
    # llama.cpp's rule: at least two chunks' worth of tokens
    if len(tokens) < 2 * n_ctx:
        raise ValueError(f"the text has {len(tokens)} tokens; perplexity with a context of "
                         f"{n_ctx} needs at least {2 * n_ctx}")
    n_chunks = len(tokens) // n_ctx if n_chunks is None else min(n_chunks, len(tokens) // n_ctx)
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    first = n_ctx // 2

    if llm is not None:
        llm.reset()
    nll = nll2 = 0.0
    count = 0
    running = []
    try:
        for i in range(n_chunks):
            chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
            if bos is not None:
                chunk[0] = bos
            logits = _chunk_logits(model, chunk, first, n_batch)
            losses = token_nll(logits[:-1], chunk[first + 1:])
            nll += float(losses.sum())
            nll2 += float(np.dot(losses, losses))
            count += len(losses)
            running.append(math.exp(nll / count))
            if callback is not None:
                callback(i + 1, n_chunks, running[-1])
    finally:
        if llm is not None:
            llm.reset()

    mean = nll / count
    ppl = math.exp(mean)
    variance = nll2 / count - mean * mean
    uncertainty = math.sqrt(variance / (count - 1)) * ppl if count > 1 and variance > 0 \
        else math.nan
    return PerplexityResult(ppl, uncertainty, n_chunks, count, running)


def _chunk_logits(model: Model, chunk: np.ndarray, first: int, n_batch: int) -> np.ndarray:
    """The logits at positions first..len(chunk)-1 of `chunk`, evaluated from
    position 0 (what the cache held is replaced), n_batch tokens per call."""
    rows = []
    for start in range(0, len(chunk), n_batch):
        piece = chunk[start:start + n_batch]
        end = start + len(piece)
        if end <= first:
            model.eval(piece, pos=start)
        else:
            cut = max(first - start, 0)
            if cut:
                model.eval(piece[:cut], pos=start)
            rows.append(model.eval(piece[cut:], pos=start + cut, all_logits=True))
    return rows[0] if len(rows) == 1 else np.concatenate(rows)
