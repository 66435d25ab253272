"""A plain numpy float64 forward pass for the architectures llamalite runs,
written to be read, not to be fast: the whole sequence at once, positions
0..n-1, no cache. It reads the GGUF file itself (metadata keys and defaults as
llama.cpp reads them), so a mistake in llamalite.model's reading shows up too.

With kv_f16, keys and values are rounded to float16, as an F16 KV cache
stores them. Matmul inputs stay float64: the C forward pass rounds them to
8 bits for quantized weights (as llama.cpp does), which the tests budget for.
"""
from __future__ import annotations

import math

import numpy as np

from llamalite.gguf import GGUFReader
from llamalite.quants import dequantize

class Weights:
    """The file's tensors, dequantized to float64 on first use."""

    def __init__(self, reader: GGUFReader):
        self.reader, self.cache = reader, {}

    def __contains__(self, name: str) -> bool:
        return name in self.reader.tensors

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.cache:
            t = self.reader.tensors[name]
            self.cache[name] = dequantize(t.data, t.type, t.shape).astype(np.float64)
        return self.cache[name]

    def matmul(self, x: np.ndarray, name: str) -> np.ndarray:
        """x . W^T"""
        return x @ self[name].T


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, pos: np.ndarray, base: float, scale: float, neox: bool,
         factors: np.ndarray | None) -> np.ndarray:
    """Rotate pairs of each head of x (tokens, heads, d) by pos * freq_i."""
    d = x.shape[-1]
    freq = scale * base ** (-np.arange(d // 2) * 2.0 / d)
    if factors is not None:
        freq = freq / factors
    theta = pos[:, None, None] * freq          # (tokens, 1, d/2)
    cos, sin = np.cos(theta), np.sin(theta)
    if neox:   # pairs (i, i + d/2)
        a, b = x[..., :d // 2], x[..., d // 2:]
    else:      # pairs (2i, 2i + 1)
        a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    ra, rb = a * cos - b * sin, a * sin + b * cos
    if neox:
        out[..., :d // 2], out[..., d // 2:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def attention(q, k, v, scale: float, window: int | None) -> np.ndarray:
    """Causal softmax attention; query heads share K/V heads in groups (GQA).
    q (n, H, d), k (n, Hkv, d), v (n, Hkv, dv) -> (n, H * dv)."""
    n, n_head, _ = q.shape
    group = n_head // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("ihd,jhd->hij", q, k) * scale
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    visible = j <= i
    if window:
        visible &= i - j < window
    scores = np.where(visible, scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hij,jhd->ihd", p, v).reshape(n, -1)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1 + np.exp(-x))


def hyperparameters(reader: GGUFReader) -> dict:
    md = reader.metadata
    arch = md["general.architecture"]
    assert arch in ("llama", "qwen2", "gemma3"), arch

    def key(name, default=None):
        v = md.get(f"{arch}.{name}", default)
        return v[0] if isinstance(v, list) and name != "attention.sliding_window_pattern" else v

    n_embd, n_head = key("embedding_length"), key("attention.head_count")
    hp = dict(arch=arch, n_layer=key("block_count"), n_embd=n_embd, n_head=n_head,
              n_head_kv=key("attention.head_count_kv", n_head),
              head_dim=key("attention.key_length", n_embd // n_head),
              eps=key("attention.layer_norm_rms_epsilon"),
              rope_base=key("rope.freq_base", 10000.0),
              rope_base_swa=key("rope.freq_base_swa", 10000.0),
              neox=arch in ("qwen2", "gemma3"))
    factor = key("rope.scaling.factor", key("rope.scale_linear", 0.0))
    hp["rope_scale"] = 1.0 / factor if factor else 1.0
    hp["attn_scale"] = 1.0 / math.sqrt(hp["head_dim"])
    window = key("attention.sliding_window", 0) if arch == "gemma3" else 0
    pattern = key("attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        hp["sliding"] = [bool(p) and window > 0 for p in pattern]
    else:
        hp["sliding"] = [window > 0 and il % pattern < pattern - 1 for il in range(hp["n_layer"])]
    hp["window"] = window
    hp["softcap"] = key("final_logit_softcapping", 0.0) if arch == "gemma3" else 0.0
    if arch == "gemma3" and hp["n_layer"] == 62:
        hp["attn_scale"] = 1.0 / math.sqrt(n_embd // n_head)
    return hp


def forward(path, tokens, kv_f16: bool = False) -> np.ndarray:
    """Logits (len(tokens), n_vocab) in float64 for tokens at positions 0.. ."""
    with GGUFReader(path) as reader:
        hp = hyperparameters(reader)
        w = Weights(reader)
        return _forward(hp, w, np.asarray(tokens), kv_f16)


def _forward(hp: dict, w: Weights, tokens: np.ndarray, kv_f16: bool) -> np.ndarray:
    n, hd, eps = len(tokens), hp["head_dim"], hp["eps"]
    gemma = hp["arch"] == "gemma3"
    pos = np.arange(n, dtype=np.float64)
    factors = w["rope_freqs.weight"] if "rope_freqs.weight" in w else None
    x = w["token_embd.weight"][tokens]
    if gemma:
        x = x * math.sqrt(hp["n_embd"])
    for il in range(hp["n_layer"]):
        b = f"blk.{il}."
        h = rmsnorm(x, w[b + "attn_norm.weight"], eps)
        q, k, v = (w.matmul(h, b + f"attn_{t}.weight") for t in "qkv")
        if b + "attn_q.bias" in w:
            q, k, v = (y + w[b + f"attn_{t}.bias"] for y, t in zip((q, k, v), "qkv"))
        n_head_kv = k.shape[1] // hd
        q, k, v = q.reshape(n, -1, hd), k.reshape(n, n_head_kv, hd), v.reshape(n, n_head_kv, -1)
        if gemma:
            q = rmsnorm(q, w[b + "attn_q_norm.weight"], eps)
            k = rmsnorm(k, w[b + "attn_k_norm.weight"], eps)
        sliding = hp["sliding"][il]
        base = hp["rope_base_swa"] if sliding else hp["rope_base"]
        scale = 1.0 if sliding else hp["rope_scale"]
        q = rope(q, pos, base, scale, hp["neox"], None if sliding else factors)
        k = rope(k, pos, base, scale, hp["neox"], None if sliding else factors)
        if kv_f16:
            k, v = k.astype(np.float16).astype(np.float64), v.astype(np.float16).astype(np.float64)
        a = attention(q, k, v, hp["attn_scale"], hp["window"] if sliding else None)
        o = w.matmul(a, b + "attn_output.weight")
        if gemma:
            o = rmsnorm(o, w[b + "post_attention_norm.weight"], eps)
        x = x + o
        h = rmsnorm(x, w[b + "ffn_norm.weight"], eps)
        act = gelu_tanh if gemma else silu
        f = act(w.matmul(h, b + "ffn_gate.weight")) * w.matmul(h, b + "ffn_up.weight")
        f = w.matmul(f, b + "ffn_down.weight")
        if gemma:
            f = rmsnorm(f, w[b + "post_ffw_norm.weight"], eps)
        x = x + f
    x = rmsnorm(x, w["output_norm.weight"], eps)
    out = "output.weight" if "output.weight" in w else "token_embd.weight"
    logits = w.matmul(x, out)
    cap = hp["softcap"]
    return cap * np.tanh(logits / cap) if cap else logits
