"""Tiny GGUF models with seeded random weights, for the forward-pass tests.

Dims default to multiples of 256 so every weight type (k-quants included)
can hold them; the shapes and metadata keys are llama.cpp's.
"""
from __future__ import annotations

import itertools
import os

import numpy as np

from llamalite.gguf import GGUFWriter


def write_model(path: str | os.PathLike, arch: str = "llama", *, n_layer: int = 2,
                n_embd: int = 256, n_head: int = 4, n_head_kv: int = 2, head_dim: int = 64,
                n_ff: int = 512, n_vocab: int = 320, weight_types=("F32",), tied: bool = True,
                qkv_bias: bool = False, rope_freqs: bool = False, rope_scaling: float = 0.0,
                n_swa: int = 0, swa_pattern=None, n_ctx_train: int = 512, seed: int = 0,
                metadata: dict | None = None, replace: dict | None = None) -> str:
    """Write a model of `arch` ('llama', 'qwen2', 'gemma3', or any name, for
    error tests) and return its path. Matrices take their types from
    `weight_types` in turn; vectors are F32. `rope_freqs` adds llama-3 style
    frequency divisors, `rope_scaling` a linear rope scaling factor; gemma3
    gets a window of `n_swa` positions with `swa_pattern` (an int: every n-th
    layer global; or a list of bools per layer). `metadata` adds keys;
    `replace` maps tensor names to (data, type, shape) written instead, or to
    None to leave the tensor out; names the model lacks are added at the end."""
    rng = np.random.default_rng(seed)
    types = itertools.cycle(weight_types)
    gemma = arch == "gemma3"
    dq, dkv = n_head * head_dim, n_head_kv * head_dim

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    path = os.fspath(path)
    with GGUFWriter(path) as w:
        w.add_metadata("general.architecture", arch)
        u32 = {"block_count": n_layer, "context_length": n_ctx_train, "embedding_length": n_embd,
               "feed_forward_length": n_ff, "attention.head_count": n_head,
               "attention.head_count_kv": n_head_kv}
        if head_dim != n_embd // n_head:
            u32["attention.key_length"] = u32["attention.value_length"] = head_dim
        for k, v in u32.items():
            w.add_metadata(f"{arch}.{k}", v, "uint32")
        eps = 1e-6 if gemma else 1e-5
        w.add_metadata(f"{arch}.attention.layer_norm_rms_epsilon", eps, "float32")
        w.add_metadata(f"{arch}.rope.freq_base", 1e6 if arch != "llama" else 1e4, "float32")
        if rope_scaling:
            w.add_metadata(f"{arch}.rope.scaling.type", "linear")
            w.add_metadata(f"{arch}.rope.scaling.factor", rope_scaling, "float32")
        if n_swa:
            w.add_metadata(f"{arch}.attention.sliding_window", n_swa, "uint32")
        if isinstance(swa_pattern, int):
            w.add_metadata(f"{arch}.attention.sliding_window_pattern", swa_pattern, "uint32")
        elif swa_pattern is not None:
            w.add_metadata(f"{arch}.attention.sliding_window_pattern", list(swa_pattern), "bool")
        for k, v in (metadata or {}).items():
            w.add_metadata(k, v)

        replace = dict(replace or {})

        def add(name, data, typ="F32"):
            if name not in replace:
                w.add_tensor(name, data, type=typ)
            elif replace[name] is not None:
                data, typ, shape = replace.pop(name)
                w.add_tensor(name, data, type=typ, shape=shape)

        add("token_embd.weight", rng.standard_normal((n_vocab, n_embd)).astype(np.float32),
            next(types))
        add("output_norm.weight", norm(n_embd))
        if not tied:
            add("output.weight", matrix(n_vocab, n_embd), next(types))
        if rope_freqs:
            factors = np.sort(rng.uniform(1.0, 8.0, head_dim // 2)).astype(np.float32)
            add("rope_freqs.weight", factors)
        for il in range(n_layer):
            b = f"blk.{il}."
            add(b + "attn_norm.weight", norm(n_embd))
            add(b + "attn_q.weight", matrix(dq, n_embd), next(types))
            add(b + "attn_k.weight", matrix(dkv, n_embd), next(types))
            add(b + "attn_v.weight", matrix(dkv, n_embd), next(types))
            if qkv_bias:
                for t, n in (("q", dq), ("k", dkv), ("v", dkv)):
                    add(b + f"attn_{t}.bias", (0.5 * rng.standard_normal(n)).astype(np.float32))
            if gemma:
                add(b + "attn_q_norm.weight", norm(head_dim))
                add(b + "attn_k_norm.weight", norm(head_dim))
            add(b + "attn_output.weight", matrix(n_embd, dq), next(types))
            if gemma:
                add(b + "post_attention_norm.weight", norm(n_embd))
            add(b + "ffn_norm.weight", norm(n_embd))
            add(b + "ffn_gate.weight", matrix(n_ff, n_embd), next(types))
            add(b + "ffn_up.weight", matrix(n_ff, n_embd), next(types))
            add(b + "ffn_down.weight", matrix(n_embd, n_ff), next(types))
            if gemma:
                add(b + "post_ffw_norm.weight", norm(n_embd))
        for name, new in replace.items():
            if new is not None:
                w.add_tensor(name, new[0], type=new[1], shape=new[2])
    return path
