"""A Hugging Face checkpoint rebuilt from a GGUF Llama model with a byte-level
BPE vocabulary, laid out as the Hub publishes one: config.json, F32 weights
in model.safetensors with Hugging Face's names and rotate-half Q/K rows,
tokenizer.json (vocabulary, merges, pre-tokenizer) and tokenizer_config.json
(special tokens, chat template). No checkpoint can be downloaded here; this
one holds a real model's weights and tokenizer, so converting it back and
comparing with the GGUF it came from checks convert on a real model."""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from llamalite.gguf import GGUFReader

CONTROL = 3   # tokenizer.ggml.token_type of a special token

_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
_LAYER_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
                "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
# tokenizer.ggml.pre -> the pre_tokenizer of tokenizer.json it stands for
_PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": True}]},
}
_BYTE_LEVEL = {"add_prefix_space": True, "trim_offsets": False, "use_regex": True}
# tokenizer_config.json's special token -> the GGUF id key that names it
_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def write_checkpoint(gguf_path, directory: Path, model_id: str) -> None:
    """Write the checkpoint of the model at `gguf_path` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with GGUFReader(gguf_path) as r:
        md = r.metadata
        if md["general.architecture"] != "llama" or md["tokenizer.ggml.model"] != "gpt2":
            raise ValueError(f"{gguf_path}: not a Llama model with a byte-level BPE vocabulary")
        _write_json(directory / "config.json", _config(md, "output.weight" in r.tensors,
                                                       model_id))
        save_file(_weights(r), str(directory / "model.safetensors"), metadata={"format": "pt"})
        _write_json(directory / "tokenizer.json", _tokenizer(md))
        _write_json(directory / "tokenizer_config.json", _tokenizer_config(md))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")


def _shortest(x: float) -> float:
    """A float32 metadata value as config.json spells it (1e-05, not 9.99...e-06)."""
    return float(str(np.float32(x)))


def _config(md: dict, has_output: bool, model_id: str) -> dict:
    config = {"_name_or_path": model_id, "architectures": ["LlamaForCausalLM"],
              "model_type": "llama", "hidden_size": md["llama.embedding_length"],
              "intermediate_size": md["llama.feed_forward_length"],
              "num_attention_heads": md["llama.attention.head_count"],
              "num_key_value_heads": md["llama.attention.head_count_kv"],
              "num_hidden_layers": md["llama.block_count"],
              "max_position_embeddings": md["llama.context_length"],
              "rms_norm_eps": _shortest(md["llama.attention.layer_norm_rms_epsilon"]),
              "rope_theta": _shortest(md["llama.rope.freq_base"]),
              "vocab_size": len(md["tokenizer.ggml.tokens"]),
              "tie_word_embeddings": not has_output, "torch_dtype": "float32"}
    if "llama.attention.key_length" in md:
        config["head_dim"] = md["llama.attention.key_length"]
    for name in ("bos", "eos"):
        config[f"{name}_token_id"] = md[f"tokenizer.ggml.{name}_token_id"]
    if "tokenizer.ggml.padding_token_id" in md:
        config["pad_token_id"] = md["tokenizer.ggml.padding_token_id"]
    return config


def _weights(r: GGUFReader) -> dict:
    """Every tensor as F32 under its Hugging Face name, Q and K rows back in
    rotate-half order."""
    heads = {"attn_q": r.metadata["llama.attention.head_count"],
             "attn_k": r.metadata["llama.attention.head_count_kv"]}
    weights = {}
    for name, tensor in r.tensors.items():
        x = tensor.dequantize()
        if name.startswith("blk."):
            _, layer, kind, suffix = name.split(".")
            if kind in heads:
                x = _unpermute_rows(x, heads[kind])
            hf_name = f"model.layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}"
        else:
            hf_name = _GLOBAL_NAMES[name]
        weights[hf_name] = x
    return weights


def _unpermute_rows(x: np.ndarray, n_head: int) -> np.ndarray:
    """ggml's rope pairs rows 2i and 2i + 1 of each head; Hugging Face's
    rotate-half pairs row i with row i + head_dim / 2."""
    half = x.shape[0] // n_head // 2
    return np.ascontiguousarray(
        x.reshape(n_head, half, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape))


def _tokenizer(md: dict) -> dict:
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    added = [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (text, kind) in enumerate(zip(tokens, types)) if kind == CONTROL]
    vocab = {text: i for i, (text, kind) in enumerate(zip(tokens, types)) if kind != CONTROL}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": _PRE_TOKENIZERS[md["tokenizer.ggml.pre"]],
            "post_processor": {"type": "ByteLevel", **_BYTE_LEVEL},
            "decoder": {"type": "ByteLevel", **_BYTE_LEVEL},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": md["tokenizer.ggml.merges"]}}


def _tokenizer_config(md: dict) -> dict:
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    decoder = {str(i): {"content": text, "lstrip": False, "normalized": False,
                        "rstrip": False, "single_word": False, "special": True}
               for i, (text, kind) in enumerate(zip(tokens, types)) if kind == CONTROL}
    config = {"add_prefix_space": md.get("tokenizer.ggml.add_space_prefix", False),
              "added_tokens_decoder": decoder, "clean_up_tokenization_spaces": False,
              "model_max_length": md["llama.context_length"],
              "tokenizer_class": "GPT2Tokenizer"}
    for name, key in _SPECIAL_IDS.items():
        if f"tokenizer.ggml.{key}" in md:
            config[name] = tokens[md[f"tokenizer.ggml.{key}"]]
    if "tokenizer.chat_template" in md:
        config["chat_template"] = md["tokenizer.chat_template"]
    return config
