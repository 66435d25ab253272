"""llama-quantize: rewrite a GGUF model with its weights in another type.

The file types (the "mixes" a person names: Q4_K_M, Q8_0, ...) and the
per-tensor rules that pick each tensor's type are llama.cpp's (build b11312,
src/llama-quant.cpp) for the LLaMA-family architectures llamalite runs:
which tensors are quantized at all, the output / tied-embedding tensor
getting more bits, the attn_v / ffn_down layers a _M mix keeps at more bits,
and the fallback to a 32-block type when a row does not split into 256-blocks.
Tensors are visited in llama.cpp's order (by layer, then by name), so the
layer counters its rules use, and the tensor order in the output, are the same.

Only one tensor is in memory at a time: the input is mapped, and each output
tensor is produced while the file is written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import LlamaliteError
from .gguf import GGUFReader, GGUFValueType, GGUFWriter
from .quants import GGMLType, TYPE_INFO, as_type, dequantize, quantize

T = GGMLType

# llama_ftype values as written to general.file_type, with each mix's default
# tensor type.
FILE_TYPES: dict[str, tuple[int, GGMLType]] = {
    "F32": (0, T.F32), "F16": (1, T.F16), "BF16": (32, T.BF16),
    "Q4_0": (2, T.Q4_0), "Q4_1": (3, T.Q4_1), "Q5_0": (8, T.Q5_0), "Q5_1": (9, T.Q5_1),
    "Q8_0": (7, T.Q8_0),
    "Q2_K": (10, T.Q2_K), "Q3_K_S": (11, T.Q3_K), "Q3_K_M": (12, T.Q3_K),
    "Q3_K_L": (13, T.Q3_K), "Q4_K_S": (14, T.Q4_K), "Q4_K_M": (15, T.Q4_K),
    "Q5_K_S": (16, T.Q5_K), "Q5_K_M": (17, T.Q5_K), "Q6_K": (18, T.Q6_K),
    "IQ4_NL": (25, T.IQ4_NL), "IQ4_XS": (30, T.IQ4_XS),
}

QUANTIZATION_VERSION = 2   # ggml's GGML_QNT_VERSION

# Types a tensor may be given with --output-tensor-type / --token-embedding-type.
TENSOR_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K",
                "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")

_FLOAT_TYPES = (T.F32, T.F16, T.BF16)

# the 32-block type a 256-block type falls back to when a row does not split
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1,
             T.Q6_K: T.Q8_0, T.IQ4_XS: T.IQ4_NL}

_LAYER = re.compile(r"blk\.(\d+)\.")


def _layer_of(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def file_type(name: str) -> tuple[int, GGMLType]:
    """(llama_ftype value, default tensor type) of a mix name such as 'Q4_K_M'."""
    key = name.upper()
    if key not in FILE_TYPES:
        raise LlamaliteError(f"unknown quantization type {name!r}; choose one of "
                             f"{', '.join(FILE_TYPES)}")
    return FILE_TYPES[key]


def tensor_type(name: str) -> GGMLType:
    key = name.upper()
    if key not in TENSOR_TYPES:
        raise LlamaliteError(f"unknown tensor type {name!r}; choose one of "
                             f"{', '.join(TENSOR_TYPES)}")
    return as_type(key)


def _is_quantized(t: GGMLType) -> bool:
    return t not in _FLOAT_TYPES and t not in (T.I8, T.I16, T.I32, T.I64, T.F64)


def _may_quantize(name: str, shape: tuple, leave_output: bool) -> bool:
    """llama.cpp quantizes matrices whose name ends in 'weight', except norms,
    expert routers and (with --leave-output-tensor) the output matrix."""
    return (len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and not (leave_output and name == "output.weight")
            and "ffn_gate_inp.weight" not in name)


def _more_bits(i: int, n: int) -> bool:
    """The layers an _M mix keeps at more bits: the first and last eighth,
    and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _Mix:
    """What the per-tensor rules need to know about the mix and the model."""
    ftype: str
    default: GGMLType
    n_layer: int
    n_gqa: int
    n_attn_v: int
    tied: bool
    is_70b: bool
    output_type: Optional[GGMLType]
    embedding_type: Optional[GGMLType]
    pure: bool
    i_attn_v: int = 0
    i_ffn_down: int = 0

    def target(self, name: str, shape: tuple) -> GGMLType:
        """The type llama.cpp gives this (quantizable) tensor; call in visiting order."""
        if self.embedding_type is not None and name == "token_embd.weight":
            return self.embedding_type
        if self.output_type is not None and name == "output.weight":
            return self.output_type
        new = self.default
        if not _is_quantized(new):
            return new
        if not self.pure:
            new = self._by_role(name, shape[-1], new)
        return _fallback(new, shape[-1])

    def _by_role(self, name: str, n_cols: int, new: GGMLType) -> GGMLType:
        f = self.ftype
        if name == "output.weight" or (self.tied and name == "token_embd.weight"):
            if self.output_type is not None:
                return self.output_type
            if n_cols % TYPE_INFO[new].block_size:
                return T.Q8_0
            return new if new == T.Q8_0 else T.Q6_K
        if name == "token_embd.weight":
            return new
        if "attn_v.weight" in name or "attn_qkv.weight" in name:
            return self._attn_v(new)
        if "ffn_down" in name:
            new = self._ffn_down(new)
            self.i_ffn_down += 1
            return new
        if "attn_output.weight" in name:
            return {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}.get(f, new)
        return new

    def _attn_v(self, new: GGMLType) -> GGMLType:
        f, i = self.ftype, self.i_attn_v
        if f == "Q2_K":
            new = T.Q4_K if self.n_gqa >= 4 else T.Q3_K
        elif f == "Q3_K_M":
            new = T.Q5_K if i < 2 else T.Q4_K
        elif f == "Q3_K_L":
            new = T.Q5_K
        elif f in ("IQ4_NL", "IQ4_XS") and self.n_gqa >= 4:
            new = T.Q5_K
        elif f in ("Q4_K_M", "Q5_K_M") and _more_bits(i, self.n_attn_v):
            new = T.Q6_K
        elif f == "Q4_K_S" and i < 4:
            new = T.Q5_K
        if self.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K   # 8 heads share attn_v there: more bits cost little
        self.i_attn_v += 1
        return new

    def _ffn_down(self, new: GGMLType) -> GGMLType:
        f, i, n = self.ftype, self.i_ffn_down, self.n_layer
        if f == "Q2_K":
            return T.Q3_K
        if f == "Q3_K_M":
            return T.Q5_K if i < n // 16 else T.Q4_K
        if f == "Q3_K_L":
            return T.Q5_K
        if f == "Q4_K_M":
            return T.Q6_K if _more_bits(i, n) else new
        if f in ("IQ4_NL", "IQ4_XS") and i < n // 8:
            return T.Q5_K
        if f == "Q5_K_M" and _more_bits(i, n):
            return T.Q6_K
        if f == "Q4_K_S" and i < n // 8:
            return T.Q5_K
        return new


def _fallback(new: GGMLType, n_cols: int) -> GGMLType:
    """A type whose blocks split a row of n_cols: the 256-block types fall back
    to a 32-block one, and F16 is the last resort."""
    if n_cols % TYPE_INFO[new].block_size == 0:
        return new
    new = _FALLBACK.get(new, new)
    return new if n_cols % TYPE_INFO[new].block_size == 0 else T.F16


def _visiting_order(names) -> list[str]:
    """llama.cpp's: tensors outside the layers first, then layer by layer, by name."""
    return sorted(names, key=lambda n: (_layer_of(n), n))


def _mix(reader: GGUFReader, ftype: str, default: GGMLType, pure: bool,
         output_type, embedding_type) -> _Mix:
    md = reader.metadata
    arch = md.get("general.architecture", "")
    n_layer = int(md.get(f"{arch}.block_count", 0))
    n_head = md.get(f"{arch}.attention.head_count", 1)
    n_head_kv = md.get(f"{arch}.attention.head_count_kv", n_head)
    n_head = n_head[0] if isinstance(n_head, list) else n_head
    n_head_kv = n_head_kv[0] if isinstance(n_head_kv, list) else n_head_kv
    names = reader.tensors
    return _Mix(ftype=ftype, default=default, n_layer=n_layer,
                n_gqa=n_head // n_head_kv if n_head_kv else 0,
                n_attn_v=sum("attn_v.weight" in n or "attn_qkv.weight" in n for n in names),
                tied="output.weight" not in names, is_70b=arch == "llama" and n_layer == 80,
                output_type=output_type, embedding_type=embedding_type, pure=pure)


@dataclass
class QuantizeResult:
    """Sizes in bytes of the tensor data before and after, and each tensor's new type."""
    size_before: int
    size_after: int
    types: dict[str, GGMLType]


def plan(in_path, ftype: str, *, pure: bool = False, leave_output_tensor: bool = False,
         output_tensor_type: Optional[str] = None,
         token_embedding_type: Optional[str] = None) -> dict[str, GGMLType]:
    """Each tensor's type in the output of `quantize_model` (in output order)."""
    with GGUFReader(in_path) as r:
        return _plan(r, ftype, pure, leave_output_tensor, output_tensor_type,
                     token_embedding_type)


def _plan(r: GGUFReader, ftype, pure, leave_output, output_type, embedding_type):
    _, default = file_type(ftype)
    mix = _mix(r, ftype.upper(), default, pure,
               tensor_type(output_type) if output_type else None,
               tensor_type(embedding_type) if embedding_type else None)
    types = {}
    for name in _visiting_order(r.tensors):
        t = r.tensors[name]
        types[name] = (mix.target(name, t.shape) if _may_quantize(name, t.shape, leave_output)
                       else t.type)
    return types


def quantize_model(in_path, out_path, ftype: str, *, allow_requantize: bool = False,
                   pure: bool = False, leave_output_tensor: bool = False,
                   output_tensor_type: Optional[str] = None,
                   token_embedding_type: Optional[str] = None,
                   progress: Optional[Callable[[int, int, str, str], None]] = None
                   ) -> QuantizeResult:
    """Write `in_path` re-typed as the mix `ftype` (a name such as 'Q4_K_M') to
    `out_path`. Metadata is copied with its types, general.file_type and
    general.quantization_version set. A tensor already quantized may be
    changed to another type only with `allow_requantize`. `progress(i, n,
    name, line)` is called after each tensor is written."""
    in_path = Path(in_path)
    if not in_path.is_file():
        raise LlamaliteError(f"{in_path}: no such file")
    code, _ = file_type(ftype)
    with GGUFReader(in_path) as r:
        types = _plan(r, ftype, pure, leave_output_tensor, output_tensor_type,
                      token_embedding_type)
        for name, new in types.items():
            old = r.tensors[name].type
            if old != new and _is_quantized(old) and not allow_requantize:
                raise LlamaliteError(f"{name} is already {old.name}: requantizing to "
                                     f"{new.name} needs --allow-requantize")
        w = GGUFWriter(out_path, alignment=r.alignment)
        for key, value in r.metadata.items():
            if key != "general.alignment":
                w.add_metadata(key, value, r.value_types[key])
        w.add_metadata("general.quantization_version", QUANTIZATION_VERSION,
                       GGUFValueType.UINT32)
        w.add_metadata("general.file_type", code, GGUFValueType.UINT32)
        done, after = [0], [0]

        def produce(name: str, new: GGMLType):
            t = r.tensors[name]

            def data():
                out = t.data if t.type == new else quantize(
                    _as_f32(t), new).reshape(-1)
                done[0] += 1
                after[0] += out.nbytes
                if progress:
                    progress(done[0], len(types), name, _progress_line(t, new, out.nbytes))
                return out
            return data

        for name, new in types.items():
            w.add_tensor(name, produce(name, new), type=new, shape=r.tensors[name].shape)
        w.write()
        before = sum(t.nbytes for t in r.tensors.values())
    return QuantizeResult(before, after[0], types)


def _as_f32(t) -> np.ndarray:
    if t.type == T.F32:
        return t.data.view(np.float32).reshape(t.shape)
    return dequantize(t.data, t.type, t.shape)


def _progress_line(t, new: GGMLType, nbytes: int) -> str:
    mib = 1024 * 1024
    shape = ", ".join(str(d) for d in reversed(t.shape))
    head = f"{t.name:<36} - [{shape}], type = {t.type.name:>6}, "
    if new == t.type:
        return head + f"size = {t.nbytes / mib:8.3f} MiB"
    return head + (f"converting to {new.name} .. size = {t.nbytes / mib:8.2f} MiB -> "
                   f"{nbytes / mib:8.2f} MiB")
