"""Tensor types: ggml's type table, and quantize / dequantize / matmul over the C core.

The table names every ggml type so a GGUF file of any type can be read and
sized; `SUPPORTED` are the ones llamalite computes with.
"""
from __future__ import annotations

import enum
from typing import NamedTuple, Union

import numpy as np

from .errors import UnsupportedModelError


class GGMLType(enum.IntEnum):
    """ggml's tensor type ids; member names are ggml's."""
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


class TypeInfo(NamedTuple):
    block_size: int   # elements per block
    type_size: int    # bytes per block


T = GGMLType
TYPE_INFO: dict[GGMLType, TypeInfo] = {
    T.F32: TypeInfo(1, 4), T.F16: TypeInfo(1, 2), T.BF16: TypeInfo(1, 2),
    T.Q4_0: TypeInfo(32, 18), T.Q4_1: TypeInfo(32, 20),
    T.Q5_0: TypeInfo(32, 22), T.Q5_1: TypeInfo(32, 24),
    T.Q8_0: TypeInfo(32, 34), T.Q8_1: TypeInfo(32, 36),
    T.Q2_K: TypeInfo(256, 84), T.Q3_K: TypeInfo(256, 110), T.Q4_K: TypeInfo(256, 144),
    T.Q5_K: TypeInfo(256, 176), T.Q6_K: TypeInfo(256, 210), T.Q8_K: TypeInfo(256, 292),
    T.IQ2_XXS: TypeInfo(256, 66), T.IQ2_XS: TypeInfo(256, 74), T.IQ3_XXS: TypeInfo(256, 98),
    T.IQ1_S: TypeInfo(256, 50), T.IQ4_NL: TypeInfo(32, 18), T.IQ3_S: TypeInfo(256, 110),
    T.IQ2_S: TypeInfo(256, 82), T.IQ4_XS: TypeInfo(256, 136),
    T.I8: TypeInfo(1, 1), T.I16: TypeInfo(1, 2), T.I32: TypeInfo(1, 4), T.I64: TypeInfo(1, 8),
    T.F64: TypeInfo(1, 8), T.IQ1_M: TypeInfo(256, 56),
    T.TQ1_0: TypeInfo(256, 54), T.TQ2_0: TypeInfo(256, 66),
    T.MXFP4: TypeInfo(32, 17), T.NVFP4: TypeInfo(64, 36), T.Q1_0: TypeInfo(128, 18),
}
del T

#: Types llamalite quantizes, dequantizes and multiplies with (weight types).
SUPPORTED = frozenset(GGMLType[n] for n in (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"))

TypeLike = Union[GGMLType, int, str]


def as_type(t: TypeLike) -> GGMLType:
    """A GGMLType from a member, its id, or its name ('Q4_K', case-insensitive)."""
    if isinstance(t, GGMLType):
        return t
    if isinstance(t, str):
        try:
            return GGMLType[t.upper()]
        except KeyError:
            raise ValueError(f"unknown tensor type {t!r}; known: "
                             f"{', '.join(m.name for m in GGMLType)}") from None
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
        raise ValueError(f"a tensor type is a GGMLType, a name or an integer id, not {t!r}")
    try:
        return GGMLType(int(t))
    except ValueError:
        raise ValueError(f"unknown tensor type id {t!r}") from None


def _supported(t: TypeLike) -> GGMLType:
    t = as_type(t)
    if t not in SUPPORTED:
        raise UnsupportedModelError(f"tensor type {t.name} is not supported by llamalite")
    return t


def row_bytes(t: TypeLike, n: int) -> int:
    """Bytes that a row of n elements of type t takes (n a multiple of the block size)."""
    info = TYPE_INFO[as_type(t)]
    if n % info.block_size:
        raise ValueError(f"row length {n} is not a multiple of {as_type(t).name}'s "
                         f"block size {info.block_size}")
    return n // info.block_size * info.type_size


def quantize(x: np.ndarray, qtype: TypeLike) -> np.ndarray:
    """Encode float32 rows (last dim a multiple of the block size) with llama.cpp's
    reference algorithm. Returns uint8 of shape (*x.shape[:-1], row_bytes)."""
    from ._native import check, lib, ptr
    t = _supported(qtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    rb = row_bytes(t, x.shape[-1])
    out = np.empty(x.shape[:-1] + (rb,), dtype=np.uint8)
    if x.size:
        check(lib.ll_quantize(int(t), ptr(x, "float *"), x.size, ptr(out), out.nbytes))
    return out


def dequantize(raw: np.ndarray, qtype: TypeLike, shape) -> np.ndarray:
    """Decode the bytes of a tensor of `qtype` into a float32 array of `shape`."""
    from ._native import check, lib, ptr
    t = _supported(qtype)
    shape = tuple(int(d) for d in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    n = int(np.prod(shape, dtype=np.int64))
    raw = _aligned(np.ascontiguousarray(raw).reshape(-1).view(np.uint8))
    if shape and shape[-1] % TYPE_INFO[t].block_size:
        raise ValueError(f"last dimension {shape[-1]} is not a multiple of {t.name}'s "
                         f"block size {TYPE_INFO[t].block_size}")
    out = np.empty(shape, dtype=np.float32)
    if n:
        check(lib.ll_to_float(int(t), ptr(raw), raw.nbytes, ptr(out, "float *"), n))
    elif raw.nbytes:
        raise ValueError(f"{raw.nbytes} bytes given for an empty tensor")
    return out


def pack(w_raw: np.ndarray, w_type: TypeLike, rows: int | None = None) -> np.ndarray:
    """A packed copy of the weight matrix W (uint8 of shape (rows, row_bytes), or
    flat with `rows` given): its groups of 8 rows interleaved block by block, the
    layout the prompt kernels read fastest (see `ll_pack` in llamalite.h).
    Multiply with it by `matmul(..., packed=True)`."""
    from ._native import check, lib, ptr
    t = _supported(w_type)
    w = np.ascontiguousarray(w_raw).view(np.uint8).reshape(-1).copy()
    if rows is None:
        if np.ndim(w_raw) != 2:
            raise ValueError("a flat weight buffer needs rows=")
        rows = np.shape(w_raw)[0]
    if rows <= 0 or w.nbytes % rows:
        raise ValueError(f"{w.nbytes} bytes do not split into {rows} rows")
    cols = w.nbytes // rows // TYPE_INFO[t].type_size * TYPE_INFO[t].block_size
    check(lib.ll_pack(int(t), ptr(w), w.nbytes, rows, cols))
    return w.reshape(rows, -1)


def pack_preferred(w_type: TypeLike, rows: int, cols: int) -> bool:
    """Whether the current ISA's kernels run W faster packed (see `pack`)."""
    from ._native import lib
    return bool(lib.ll_pack_preferred(int(as_type(w_type)), rows, cols))


def matmul(w_raw: np.ndarray, w_type: TypeLike, x: np.ndarray, n_threads: int | None = None,
           rows: int | None = None, packed: bool = False) -> np.ndarray:
    """Y = X . W^T with W's rows stored as `w_type` (uint8 of shape (rows, row_bytes)
    or flat with `rows` given; packed=True: as `pack` returns them) and X
    float32 of shape (n, cols) or (cols,)."""
    from ._native import check, lib, ptr
    from .threads import get_pool
    t = _supported(w_type)
    x = np.ascontiguousarray(x, dtype=np.float32)
    squeeze = x.ndim == 1
    x2 = x.reshape(1, -1) if squeeze else x
    if x2.ndim != 2 or x2.shape[1] == 0:
        raise ValueError(f"x must be 1-D or 2-D with at least one column, got shape {x.shape}")
    n, cols = x2.shape
    w = _aligned(np.ascontiguousarray(w_raw).view(np.uint8))
    rb = row_bytes(t, cols)
    if w.ndim == 2 and w.shape[1] != rb:
        raise ValueError(f"weight rows hold {w.shape[1]} bytes: {w.shape[1]} / "
                         f"{TYPE_INFO[t].type_size} x {TYPE_INFO[t].block_size} {t.name} "
                         f"elements, but x has {cols} columns")
    if rows is None:
        rows = w.shape[0] if w.ndim == 2 else w.nbytes // rb
    if w.nbytes != rows * rb:
        raise ValueError(f"weights hold {w.nbytes} bytes; {rows} rows of {cols} {t.name} "
                         f"elements take {rows * rb}")
    y = np.empty((n, rows), dtype=np.float32)
    if n and rows:
        layout = lib.LL_LAYOUT_PACKED8 if packed else lib.LL_LAYOUT_ROWS
        work = np.empty(max(lib.ll_matmul_work_size(int(t), layout, cols, n), 1), dtype=np.uint8)
        check(lib.ll_matmul(get_pool(n_threads), int(t), layout, ptr(w), w.nbytes, rows, cols,
                            ptr(x2, "float *"), x2.nbytes, n, ptr(y, "float *"), y.nbytes,
                            ptr(work), work.nbytes))
    return y[0] if squeeze else y


def _aligned(raw: np.ndarray) -> np.ndarray:
    """The bytes at an address the C kernels may read as their block type. A
    GGUF file with alignment 1 can place tensor data at an odd address; copy
    only then (such files are rare; every real one aligns to 32)."""
    return raw if raw.ctypes.data % 8 == 0 else raw.copy()
