"""Hugging Face checkpoints to GGUF, as llama.cpp's convert_hf_to_gguf.py writes them.

    convert("SmolLM2-135M-Instruct/", "smollm2.f16.gguf", outtype="f16")

Reads a `LlamaForCausalLM` or `Qwen2ForCausalLM` directory: config.json, the
`model*.safetensors` files (with model.safetensors.index.json when sharded),
the tokenizer (see hf_vocab) and generation_config.json. Writes the tensor
names, metadata keys and types llama.cpp's converter writes, so either
runtime loads the file:

- llama's Q and K rows are permuted from Hugging Face's rotate-half layout
  (each head's first half pairs with its second) to ggml's adjacent pairs;
  qwen2 keeps Hugging Face's layout, since llama.cpp runs it with NEOX rope.
- 1-D tensors and norms stay F32; the rest take the output type; Q8_0 falls
  back to F16 for a tensor whose rows are not whole 32-value blocks.
- `output.weight` is written only when the checkpoint has `lm_head.weight`
  (a model with tied embeddings has none, and runs off token_embd).

Tensors are converted one at a time while the file is written, read from the
mapped safetensors files, so memory stays near the largest tensor's size.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .errors import CheckpointError, LlamaliteError, UnsupportedModelError
from .gguf import GGUFWriter
from .hf_vocab import read_json, vocab_metadata
from .quants import GGMLType
from .safetensors_reader import SafetensorsFile, SafetensorsTensor

#: Hugging Face architecture -> GGUF general.architecture
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
#: --outtype -> (the type of the tensors that are not kept F32, llama.cpp's general.file_type)
OUTTYPES = {"f32": (GGMLType.F32, 0), "f16": (GGMLType.F16, 1),
            "bf16": (GGMLType.BF16, 32), "q8_0": (GGMLType.Q8_0, 7)}
GGML_QUANT_VERSION = 2
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight",
                 "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
_LAYER_NAMES = {"input_layernorm.weight": "attn_norm.weight",
                "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
                "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
                "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
                "self_attn.o_proj.weight": "attn_output.weight",
                "post_attention_layernorm.weight": "ffn_norm.weight",
                "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
                "mlp.down_proj.weight": "ffn_down.weight"}
_REQUIRED_LAYER = [n for n in _LAYER_NAMES.values() if n.endswith(".weight")]
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
# Buffers some checkpoints save that are not weights (llama.cpp skips them too).
_SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
# generation_config.json key -> (general.sampling.* key, value type)
_SAMPLING = {"sequence": ("sequence", "string"), "top_k": ("top_k", "int32"),
             "top_p": ("top_p", "float32"), "min_p": ("min_p", "float32"),
             "xtc_probability": ("xtc_probability", "float32"),
             "xtc_threshold": ("xtc_threshold", "float32"), "temperature": ("temp", "float32"),
             "penalty_last_n": ("penalty_last_n", "int32"),
             "repetition_penalty": ("penalty_repeat", "float32"),
             "mirostat": ("mirostat", "int32"), "mirostat_tau": ("mirostat_tau", "float32"),
             "mirostat_eta": ("mirostat_eta", "float32")}

# config.json's context length, under the first of these names it has
_CONTEXT_KEYS = ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                 "max_sequence_length", "model_max_length")

Progress = Callable[[int, int, str, str], None]


@dataclass
class ConvertResult:
    path: str
    architecture: str
    n_tensors: int
    size: int   # bytes of the written file


@dataclass
class _Hparams:
    """The config values the conversion needs, checked."""
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int


def convert(hf_dir: str | os.PathLike, out_path: str | os.PathLike, outtype: str = "f16",
            progress: Optional[Progress] = None) -> ConvertResult:
    """Convert the checkpoint in `hf_dir` to a GGUF file at `out_path`.

    `outtype` is f32, f16, bf16 or q8_0 (what the matrices become; norms and
    other 1-D tensors stay F32). `progress(i, n, name, line)` is called as
    each tensor is written. Raises CheckpointError for a missing or malformed
    part of the checkpoint, UnsupportedModelError for an architecture or
    tokenizer that does not convert, and LlamaliteError when the output
    cannot be written; nothing is left at `out_path` then.
    """
    hf_dir, out = Path(hf_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise LlamaliteError(f"unknown output type {outtype!r}; choose one of "
                             f"{', '.join(OUTTYPES)}")
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir}: not a directory")
    _check_output(out)
    config = read_json(hf_dir / "config.json", required=True)
    if not isinstance(config, dict):
        raise CheckpointError(f"{hf_dir / 'config.json'}: not a JSON object")
    arch = _architecture(hf_dir, config)
    hp = _hparams(hf_dir, config)
    files = _open_parts(hf_dir)
    try:
        tensors = _gguf_tensors(hf_dir, files, arch, hp)
        writer = GGUFWriter(out)
        _add_metadata(writer, hf_dir, config, arch, hp, outtype)
        vocab = vocab_metadata(hf_dir, config, arch)
        for key, (value, vtype) in vocab.entries.items():
            try:
                writer.add_metadata(key, value, vtype)
            except ValueError as e:   # e.g. a token text that is not valid Unicode
                raise CheckpointError(f"{hf_dir}: {key} from the tokenizer files: {e}") from None
        n_tensors = _add_tensors(writer, tensors, config, arch, hp, OUTTYPES[outtype][0],
                                 progress)
        try:
            writer.write()
        except OSError as e:
            raise LlamaliteError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        for f in files:
            f.close()
    return ConvertResult(str(out), arch, n_tensors, out.stat().st_size)


def _check_output(out: Path) -> None:
    if out.is_dir():
        raise LlamaliteError(f"cannot write {out}: it is a directory")
    parent = out.parent
    if not parent.is_dir():
        raise LlamaliteError(f"cannot write {out}: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LlamaliteError(f"cannot write {out}: permission denied")


def _architecture(hf_dir: Path, config: dict) -> str:
    names = config.get("architectures")
    name = names[0] if isinstance(names, list) and names else None
    if name not in ARCHITECTURES:
        raise UnsupportedModelError(f"{hf_dir / 'config.json'}: architecture {name!r} does not "
                                    f"convert; llamalite converts {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def _hparams(hf_dir: Path, config: dict) -> _Hparams:
    def count(key: str, default: Any = None) -> int:
        value = config.get(key)
        value = default if value is None else value
        if type(value) is not int or value <= 0:
            raise CheckpointError(f"{hf_dir / 'config.json'}: {key} is {value!r}, not a "
                                  "positive integer")
        return value

    n_embd, n_head = count("hidden_size"), count("num_attention_heads")
    head_dim = count("head_dim", n_embd // n_head if n_embd % n_head == 0 else None)
    n_head_kv = count("num_key_value_heads", n_head)
    if head_dim % 2 or n_head % n_head_kv:
        raise CheckpointError(f"{hf_dir / 'config.json'}: head_dim {head_dim} must be even and "
                              f"{n_head} heads a multiple of {n_head_kv} key/value heads")
    return _Hparams(count("num_hidden_layers"), n_embd, count("intermediate_size"), n_head,
                    n_head_kv, head_dim, count("vocab_size"))


# --- the safetensors files ---------------------------------------------------

def _open_parts(hf_dir: Path) -> list[SafetensorsFile]:
    """Every model*.safetensors file, or those the index names (sorted, as
    llama.cpp reads them), checked against the index's weight map."""
    index = read_json(hf_dir / "model.safetensors.index.json")
    if index is not None:
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
                isinstance(v, str) and "/" not in v for v in weight_map.values()):
            raise CheckpointError(f"{hf_dir / 'model.safetensors.index.json'}: no weight_map "
                                  "of tensor names to file names")
        names = sorted(set(weight_map.values()))
        for name in names:
            if not (hf_dir / name).is_file():
                raise CheckpointError(f"{hf_dir / name}: missing (named by "
                                      "model.safetensors.index.json)")
    else:
        weight_map = None
        names = sorted(n for n in os.listdir(hf_dir)
                       if n.startswith("model") and n.endswith(".safetensors"))
        if not names:
            raise CheckpointError(f"{hf_dir}: no model*.safetensors files (PyTorch .bin "
                                  "checkpoints do not convert)")
    files: list[SafetensorsFile] = []
    try:
        for name in names:
            files.append(SafetensorsFile(hf_dir / name))
        if weight_map is not None:
            _check_weight_map(hf_dir, weight_map, files)
    except BaseException:
        for f in files:
            f.close()
        raise
    return files


def _check_weight_map(hf_dir: Path, weight_map: dict, files: list[SafetensorsFile]) -> None:
    where = {t: Path(f.path).name for f in files for t in f.tensors}
    for tensor, file in weight_map.items():
        if where.get(tensor) != file:
            raise CheckpointError(f"{hf_dir / file}: has no tensor {tensor!r}, which "
                                  "model.safetensors.index.json places there")
    extra = sorted(set(where) - set(weight_map))
    if extra:
        raise CheckpointError(f"{hf_dir / where[extra[0]]}: tensor {extra[0]!r} is not in "
                              "model.safetensors.index.json")


def _gguf_name(hf_name: str, n_layer: int) -> Optional[str]:
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    m = _LAYER_RE.fullmatch(hf_name)
    if m and int(m.group(1)) < n_layer and m.group(2) in _LAYER_NAMES:
        return f"blk.{int(m.group(1))}.{_LAYER_NAMES[m.group(2)]}"
    return None


def _expected_shape(name: str, hp: _Hparams) -> tuple:
    q_rows, kv_rows = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    base = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
    shapes = {"token_embd": (hp.n_vocab, hp.n_embd), "output": (hp.n_vocab, hp.n_embd),
              "output_norm": (hp.n_embd,), "attn_norm": (hp.n_embd,), "ffn_norm": (hp.n_embd,),
              "attn_q": (q_rows, hp.n_embd), "attn_k": (kv_rows, hp.n_embd),
              "attn_v": (kv_rows, hp.n_embd), "attn_output": (hp.n_embd, q_rows),
              "ffn_gate": (hp.n_ff, hp.n_embd), "ffn_up": (hp.n_ff, hp.n_embd),
              "ffn_down": (hp.n_embd, hp.n_ff)}
    shape = shapes[base]
    return shape[:1] if name.endswith(".bias") else shape


def _gguf_tensors(hf_dir: Path, files: list[SafetensorsFile], arch: str,
                  hp: _Hparams) -> dict[str, SafetensorsTensor]:
    """GGUF name -> source tensor, in llama.cpp's order; every name known,
    every shape as the config says, none missing."""
    out: dict[str, SafetensorsTensor] = {}
    for f in files:
        for hf_name, t in f.tensors.items():
            if hf_name.endswith(_SKIPPED_SUFFIXES):
                continue
            name = _gguf_name(hf_name, hp.n_layer)
            if name is None:
                raise CheckpointError(f"{f.path}: tensor {hf_name!r} is not part of a {arch} "
                                      f"model of {hp.n_layer} layers")
            if name in out:
                raise CheckpointError(f"{f.path}: tensor {hf_name!r} is also in "
                                      f"{out[name].file.path}")
            expected = _expected_shape(name, hp)
            if t.shape != expected:
                raise CheckpointError(f"{f.path}: tensor {hf_name!r} has shape {list(t.shape)}; "
                                      f"config.json makes it {list(expected)}")
            out[name] = t
    if hp.n_layer * len(_REQUIRED_LAYER) > len(out):
        raise CheckpointError(f"{hf_dir}: config.json's {hp.n_layer} layers need "
                              f"{hp.n_layer * len(_REQUIRED_LAYER)} layer tensors; the "
                              f"safetensors files hold {len(out)} tensors in all")
    required = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{n}" for i in range(hp.n_layer) for n in _REQUIRED_LAYER]
    missing = [n for n in required if n not in out]
    if missing:
        hf_names = {v: k for k, v in _GLOBAL_NAMES.items()}
        first = missing[0]
        if first.startswith("blk."):
            i, rest = first.split(".", 2)[1:]
            hf = f"model.layers.{i}." + next(k for k, v in _LAYER_NAMES.items() if v == rest)
        else:
            hf = hf_names[first]
        raise CheckpointError(f"{hf_dir}: tensor {hf!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return out


# --- metadata ----------------------------------------------------------------

def _title(model_id: str) -> str:
    """A model id as llama.cpp titles it: words split at '-', lower-case words
    capitalised unless they are versions or start with a digit."""
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w)
                    else w for w in model_id.strip().replace("-", " ").split())


def _model_name(hf_dir: Path, config: dict) -> str:
    name_or_path = config.get("_name_or_path")
    if (_fits(name_or_path, "string") and name_or_path.strip()
            and name_or_path.count("/") <= 1):
        return _title(name_or_path.split("/")[-1])
    # a directory name that is not UTF-8 reaches Python with surrogates: shown as '?'
    name = hf_dir.resolve().name.encode("utf-8", "replace").decode("utf-8")
    return _title(name) or "model"


def _rope_parameters(config: dict) -> dict:
    params = config.get("rope_parameters", config.get("rope_scaling")) or {}
    if not isinstance(params, dict):
        return {}
    params = params.get("full_attention", params)
    params = dict(params) if isinstance(params, dict) else {}
    if "rope_theta" not in params and "rope_theta" in config:
        params["rope_theta"] = config["rope_theta"]
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    return params


def _add_metadata(w: GGUFWriter, hf_dir: Path, config: dict, arch: str, hp: _Hparams,
                  outtype: str) -> None:
    """general.* and <arch>.* keys, in llama.cpp's order and types."""
    w.add_metadata("general.architecture", arch)
    w.add_metadata("general.type", "model")
    try:
        generation = read_json(hf_dir / "generation_config.json")
    except CheckpointError:
        generation = None   # llama.cpp passes over a broken one too
    for key, (gguf_key, vtype) in _SAMPLING.items():
        value = generation.get(key) if isinstance(generation, dict) else None
        if _fits(value, vtype):
            w.add_metadata(f"general.sampling.{gguf_key}", value, vtype)
    w.add_metadata("general.name", _model_name(hf_dir, config))
    a = arch
    w.add_metadata(f"{a}.block_count", hp.n_layer, "uint32")
    n_ctx = next((config[n] for n in _CONTEXT_KEYS if n in config), None)
    if _fits(n_ctx, "uint32"):
        w.add_metadata(f"{a}.context_length", n_ctx, "uint32")
    w.add_metadata(f"{a}.embedding_length", hp.n_embd, "uint32")
    w.add_metadata(f"{a}.feed_forward_length", hp.n_ff, "uint32")
    w.add_metadata(f"{a}.attention.head_count", hp.n_head, "uint32")
    if config.get("num_key_value_heads") is not None:
        w.add_metadata(f"{a}.attention.head_count_kv", hp.n_head_kv, "uint32")
    rope = _rope_parameters(config)
    _add_rope_scaling(w, a, rope)
    if _fits(rope.get("rope_theta"), "float32"):
        w.add_metadata(f"{a}.rope.freq_base", float(rope["rope_theta"]), "float32")
    eps = config.get("rms_norm_eps", config.get("norm_eps"))
    if _fits(eps, "float32"):
        w.add_metadata(f"{a}.attention.layer_norm_rms_epsilon", float(eps), "float32")
    if config.get("head_dim") is not None:
        w.add_metadata(f"{a}.attention.key_length", hp.head_dim, "uint32")
        w.add_metadata(f"{a}.attention.value_length", hp.head_dim, "uint32")
    w.add_metadata("general.file_type", OUTTYPES[outtype][1], "uint32")
    if arch == "llama":
        w.add_metadata(f"{a}.vocab_size", hp.n_vocab, "uint32")
        w.add_metadata(f"{a}.rope.dimension_count", hp.head_dim, "uint32")
    w.add_metadata("general.quantization_version", GGML_QUANT_VERSION, "uint32")


def _fits(value: Any, vtype: str) -> bool:
    if vtype == "string":
        if not isinstance(value, str):
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:   # a lone surrogate, as JSON's "\ud800" reads
            return False
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if vtype == "uint32":
        return isinstance(value, int) and 0 <= value < 2**32
    if vtype == "int32":
        return isinstance(value, int) and -2**31 <= value < 2**31
    return math.isfinite(value) and abs(value) <= _FLOAT32_MAX


def _number(rope: dict, key: str, default: float) -> np.float32:
    value = rope.get(key, default)
    if not _fits(value, "float32"):
        raise CheckpointError(f"config.json: rope scaling {key} is {value!r}, not a number")
    return np.float32(value)


def _add_rope_scaling(w: GGUFWriter, a: str, rope: dict) -> None:
    kind, factor = rope.get("rope_type"), rope.get("factor")
    if kind == "linear" and _fits(factor, "float32"):
        w.add_metadata(f"{a}.rope.scaling.type", "linear")
        w.add_metadata(f"{a}.rope.scaling.factor", float(factor), "float32")
    elif kind == "yarn" and _fits(factor, "float32"):
        w.add_metadata(f"{a}.rope.scaling.type", "yarn")
        w.add_metadata(f"{a}.rope.scaling.factor", float(factor), "float32")
        if not _fits(rope.get("original_max_position_embeddings"), "uint32"):
            raise CheckpointError("config.json: yarn rope scaling needs "
                                  "original_max_position_embeddings")
        w.add_metadata(f"{a}.rope.scaling.original_context_length",
                       rope["original_max_position_embeddings"], "uint32")
        for key, names in (("yarn_ext_factor", ("extrapolation_factor",)),
                           ("yarn_attn_factor", ("attention_factor", "attn_factor")),
                           ("yarn_beta_fast", ("beta_fast",)), ("yarn_beta_slow", ("beta_slow",))):
            value = next((rope[n] for n in names if n in rope), None)
            if _fits(value, "float32"):
                w.add_metadata(f"{a}.rope.scaling.{key}", float(value), "float32")


def _llama3_rope_factors(rope: dict, head_dim: int) -> Optional[np.ndarray]:
    """Llama 3.1's per-frequency rope divisors (rope_freqs.weight), or None."""
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    # float32 throughout, as llama.cpp computes them (in torch)
    f32 = np.float32
    base, factor = _number(rope, "rope_theta", 10000.0), _number(rope, "factor", 8.0)
    low, high = _number(rope, "low_freq_factor", 1.0), _number(rope, "high_freq_factor", 4.0)
    old_ctx = _number(rope, "original_max_position_embeddings", 8192)
    freqs = f32(1.0) / (base ** (np.arange(0, head_dim, 2, dtype=f32) / f32(head_dim)))
    out = []
    for freq in freqs:
        wavelen = f32(2 * math.pi) / freq
        if wavelen < old_ctx / high:
            out.append(f32(1.0))
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(f32(1.0) / ((f32(1.0) - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# --- tensors -----------------------------------------------------------------

def _permute_rows(x: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's rotate-half rows -> ggml's adjacent pairs, per head:
    row i of each half-head goes to 2i, row i of the second half to 2i + 1."""
    return np.ascontiguousarray(
        x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2)
        .reshape(x.shape))


def _tensor_type(name: str, shape: tuple, outtype: GGMLType) -> GGMLType:
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return GGMLType.F32
    if outtype == GGMLType.Q8_0 and shape[-1] % 32:
        return GGMLType.F16   # llama.cpp's fallback for rows that are not whole blocks
    return outtype


def _add_tensors(w: GGUFWriter, tensors: dict[str, SafetensorsTensor], config: dict, arch: str,
                 hp: _Hparams, outtype: GGMLType, progress: Optional[Progress]) -> int:
    """Queue every tensor (converted when written); returns how many."""
    factors = _llama3_rope_factors(_rope_parameters(config), hp.head_dim) if arch == "llama" \
        else None
    if factors is not None:   # llama.cpp writes it first
        w.add_tensor("rope_freqs.weight", factors)
    n = len(tensors)
    for i, (name, src) in enumerate(tensors.items(), 1):
        kind = name.split(".")[-2]
        heads = None
        if arch == "llama" and kind in ("attn_q", "attn_k"):
            heads = hp.n_head if kind == "attn_q" else hp.n_head_kv
        ttype = _tensor_type(name, src.shape, outtype)
        w.add_tensor(name, _loader(src, heads, i, n, name, ttype, progress), type=ttype,
                     shape=src.shape)
    return n + (factors is not None)


def _loader(src: SafetensorsTensor, heads: Optional[int], i: int, n: int, name: str,
            ttype: GGMLType, progress: Optional[Progress]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        x = src.to_float32()
        if heads is not None:
            x = _permute_rows(x, heads)
        if progress is not None:
            shape = "{" + ", ".join(str(d) for d in reversed(src.shape)) + "}"
            progress(i, n, name, f"{name + ',':<32} {src.dtype} --> {ttype.name}, "
                                 f"shape = {shape}")
        return x
    return load
