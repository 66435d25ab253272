"""GGUF files: a validating, zero-copy reader and a streaming writer.

The format (all little-endian):

    "GGUF"  u32 version  u64 n_tensors  u64 n_kv
    n_kv x      key (string), u32 value type, value
    n_tensors x name (string), u32 n_dims, u64 ne[n_dims] (ggml order: ne[0] is the row),
                u32 ggml type, u64 data offset (relative to the data section)
    padding to `general.alignment` (default 32), then the data section.

A string is a u64 byte length and UTF-8 bytes; an array is a u32 element type,
a u64 count and the elements (arrays may nest). Versions 2 and 3 share this
layout (3 only allowed big-endian files, which we do not read).

A model file is untrusted input: every count, length and offset is checked
against the bytes the file really holds before it is used, so a hostile file
costs at most time and memory proportional to its own size, and every defect
is a GGUFError naming the field and its byte offset.
"""
from __future__ import annotations

import enum
import mmap
import os
import struct
from typing import Any, Callable, Union

import numpy as np

from .errors import GGUFError
from .quants import TYPE_INFO, GGMLType, TypeLike, as_type

MAGIC = b"GGUF"
VERSIONS = (2, 3)
WRITE_VERSION = 3
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
#: llama.cpp writes no nested arrays at all; a bound keeps recursion shallow
#: against files that nest thousands deep.
MAX_ARRAY_DEPTH = 8
# Array elements a file's metadata may hold in all. Decoded into Python lists
# they take ~30-60 bytes each, so a hostile file of tiny elements could
# otherwise need ten times its size in memory. The largest real vocabularies
# (262k tokens with scores and types, or 150k tokens with merges) use < 1M.
MAX_METADATA_VALUES = 8_000_000
_MANY_STRINGS = 1024   # string arrays this long are read by _Header._many_strings
INT64_MAX = (1 << 63) - 1
ALIGNMENT_KEY = "general.alignment"


class GGUFValueType(enum.IntEnum):
    """Metadata value type ids; member names are gguf's."""
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


V = GGUFValueType
#: struct format of each fixed-size value type, little-endian.
_STRUCT = {t: struct.Struct("<" + c) for t, c in (
    (V.UINT8, "B"), (V.INT8, "b"), (V.UINT16, "H"), (V.INT16, "h"), (V.UINT32, "I"),
    (V.INT32, "i"), (V.FLOAT32, "f"), (V.BOOL, "?"), (V.UINT64, "Q"), (V.INT64, "q"),
    (V.FLOAT64, "d"))}
#: The same as numpy dtypes; BOOL is read as bytes, since any non-zero byte is true.
_DTYPE = {t: np.dtype(s.format.replace("?", "B")) for t, s in _STRUCT.items()}
#: The fewest bytes one element of each type takes in a file: a string is at
#: least its length field, an array at least its type and count.
_MIN_SIZE = {**{t: d.itemsize for t, d in _DTYPE.items()}, V.STRING: 8, V.ARRAY: 12}
del V

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MIN_KV_SIZE = 8 + 4 + 1            # key length, value type, smallest value
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 4 + 8  # name length, n_dims, type, offset

ValueTypeLike = Union[GGUFValueType, int, str]


def as_value_type(t: ValueTypeLike) -> GGUFValueType:
    """A GGUFValueType from a member, its id, or its name ('uint32', case-insensitive)."""
    if isinstance(t, GGUFValueType):
        return t
    if isinstance(t, str):
        try:
            return GGUFValueType[t.upper()]
        except KeyError:
            raise ValueError(f"unknown GGUF value type {t!r}; known: "
                             f"{', '.join(m.name.lower() for m in GGUFValueType)}") from None
    return GGUFValueType(int(t))


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


# ----------------------------------------------------------------------------- reader

class GGUFTensor:
    """One tensor of a GGUF file: where its bytes are and how to read them.

    `shape` is in numpy order (ggml's ne reversed); `data` is a read-only uint8
    view of exactly the tensor's bytes inside the mapped file (no copy).
    """
    __slots__ = ("name", "type", "shape", "offset", "nbytes", "data")

    def __init__(self, name: str, type: GGMLType, shape: tuple, offset: int, nbytes: int,
                 data: np.ndarray):
        self.name, self.type, self.shape = name, type, shape
        self.offset, self.nbytes, self.data = offset, nbytes, data

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def dequantize(self) -> np.ndarray:
        """The values as a float32 array of `shape` (UnsupportedModelError for a
        type llamalite does not compute)."""
        from .quants import dequantize
        return dequantize(self.data, self.type, self.shape)

    def __repr__(self) -> str:
        return (f"GGUFTensor({self.name!r}, {self.type.name}, shape={self.shape}, "
                f"offset={self.offset}, nbytes={self.nbytes})")


class _Header:
    """A cursor over the mapped file's header. Every read checks first that
    the bytes are there; errors name the field and where it starts."""

    def __init__(self, mm: mmap.mmap, where: str):
        self.mm, self.size, self.pos, self.where = mm, len(mm), 0, where
        self.values_left = MAX_METADATA_VALUES

    def error(self, what: str, at: int, problem: str) -> GGUFError:
        return GGUFError(f"{self.where}: {what} at byte {at}: {problem}")

    def need(self, n: int, what: str) -> None:
        left = self.size - self.pos
        if n > left:
            raise self.error(what, self.pos, f"needs {n} bytes but the file has only "
                                             f"{left} left")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.mm, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.mm, self.pos)
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(f"{what} (length)")
        self.check_length(n, start, what)
        self.pos += n
        return self._decode(start + 8, n, what)

    def check_length(self, n: int, start: int, what: str) -> None:
        """A string of length `n` (its length field at `start`) must fit what is left."""
        left = self.size - start - 8
        if n > left:
            raise self.error(what, start, f"string length {n} is more than the {left} bytes "
                                          f"left in the file")

    def _decode(self, at: int, n: int, what: str) -> str:
        try:
            return self.mm[at:at + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(what, at - 8, f"not valid UTF-8 ({e.reason} at byte "
                                           f"{at + e.start})") from None

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        raw = self.u32(what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.error(what, at, f"unknown value type {raw}") from None

    def value(self, vtype: GGUFValueType, what: str) -> tuple[Any, GGUFValueType]:
        """A value of `vtype` and its leaf type (the element type of arrays)."""
        if vtype == GGUFValueType.STRING:
            return self.string(what), vtype
        if vtype == GGUFValueType.ARRAY:
            return self.array(what, 1)
        self.need(_MIN_SIZE[vtype], what)
        (v,) = _STRUCT[vtype].unpack_from(self.mm, self.pos)
        self.pos += _MIN_SIZE[vtype]
        return v, vtype

    def array(self, what: str, depth: int) -> tuple[list, GGUFValueType]:
        start = self.pos
        if depth > MAX_ARRAY_DEPTH:
            raise self.error(what, start, f"arrays nested more than {MAX_ARRAY_DEPTH} deep")
        etype = self.value_type(f"{what} (element type)")
        count = self.u64(f"{what} (length)")
        left = self.size - self.pos
        if count > left // _MIN_SIZE[etype]:
            raise self.error(what, start, f"{count} {etype.name} elements cannot fit in "
                                          f"the {left} bytes left")
        self.values_left -= count
        if self.values_left < 0:
            raise self.error(what, start, f"the metadata holds more than {MAX_METADATA_VALUES} "
                                          "array elements in all")
        if etype == GGUFValueType.STRING:
            return self.strings(count, what), etype
        if etype == GGUFValueType.ARRAY:
            items = [self.array(f"{what}[{i}]", depth + 1) for i in range(count)]
            leaf = items[0][1] if items else etype
            return [v for v, _ in items], leaf
        dtype = _DTYPE[etype]
        arr = np.frombuffer(self.mm, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * dtype.itemsize
        values = (arr != 0).tolist() if etype == GGUFValueType.BOOL else arr.tolist()
        del arr   # releases the mmap export at once
        return values, etype

    def strings(self, count: int, what: str) -> list[str]:
        if count >= _MANY_STRINGS:
            found = self._many_strings(count)
            if found is not None:
                return found
        # one by one: short arrays, and long ones that _many_strings declined
        # (this loop then names the string at fault)
        mm, size, pos = self.mm, self.size, self.pos
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        for i in range(count):
            if size - pos < 8:
                self.pos = pos
                self.need(8, f"{what}[{i}] (length)")
            (n,) = unpack(mm, pos)
            pos += 8
            if n > size - pos:
                self.check_length(n, pos - 8, f"{what}[{i}]")
            try:
                append(mm[pos:pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                self._decode(pos, n, f"{what}[{i}]")
            pos += n
        self.pos = pos
        return out

    def _many_strings(self, count: int) -> list[str] | None:
        """A long string array (a vocabulary: 262k strings) in C, then one
        decode and one split: ~10x faster than one by one. None when a
        string runs past the file's end, is not UTF-8 or holds a NUL."""
        from ._native import ffi, lib

        buf, end = ffi.from_buffer(self.mm), ffi.new("size_t *")
        if lib.ll_string_array(buf, self.size, self.pos, count, end, ffi.NULL, 0) != 0:
            return None
        joined = bytearray(end[0] - self.pos - 7 * count)
        if lib.ll_string_array(buf, self.size, self.pos, count, end,
                               ffi.from_buffer(joined), len(joined)) != 0:
            return None
        del buf   # releases the mmap export at once
        try:
            texts = joined.decode("utf-8").split("\0")
        except UnicodeDecodeError:
            return None
        if len(texts) != count + 1:
            return None
        self.pos = end[0]
        del texts[0]
        return texts


class GGUFReader:
    """A GGUF file (version 2 or 3), mapped read-only and validated.

    `file_size` is the file's length in bytes, `data_offset` where the tensor
    data starts. `metadata` maps each key to a plain Python value (arrays as lists);
    `value_types` maps it to its GGUFValueType (for arrays: the element type,
    for nested arrays the innermost one). `tensors` maps names to GGUFTensor in
    file order; their `data` are views of the one mapping, so nothing is read
    twice or copied. Raises GGUFError for any malformed or hostile file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, GGUFValueType] = {}
        self.tensors: dict[str, GGUFTensor] = {}
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise GGUFError(f"{self.path}: magic at byte 0: the file is empty")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.file_size = len(self._mm)
        try:
            self._parse(_Header(self._mm, self.path))
        except BaseException:
            self.close()
            raise

    def _parse(self, h: _Header) -> None:
        h.need(4, "magic")
        if self._mm[:4] != MAGIC:
            raise h.error("magic", 0, f"expected {MAGIC!r}, found {self._mm[:4]!r}")
        h.pos = 4
        self.version = h.u32("version")
        if self.version not in VERSIONS:
            hint = " (a big-endian file?)" if self.version & 0xFFFF == 0 else ""
            raise h.error("version", 4, f"version {self.version} is not one of "
                                        f"{VERSIONS}{hint}")
        n_tensors = h.u64("tensor count")
        n_kv = h.u64("metadata count")
        if n_kv * _MIN_KV_SIZE + n_tensors * _MIN_TENSOR_INFO_SIZE > h.size - h.pos:
            raise h.error("tensor count and metadata count", 8,
                          f"{n_tensors} tensors and {n_kv} keys cannot fit in the "
                          f"{h.size - h.pos} bytes left")
        self._parse_metadata(h, n_kv)
        self.alignment = self._alignment(h)
        infos = [self._parse_tensor_info(h, i) for i in range(n_tensors)]
        self.data_offset = _pad(h.pos, self.alignment)
        self._bind_tensors(h, infos)

    def _parse_metadata(self, h: _Header, n_kv: int) -> None:
        for i in range(n_kv):
            at = h.pos
            key = h.string(f"metadata key #{i}")
            if not key:
                raise h.error(f"metadata key #{i}", at, "the key is empty")
            if key in self.metadata:
                raise h.error(f"metadata key #{i}", at, f"duplicate key {key!r}")
            if key == ALIGNMENT_KEY:
                self._alignment_at = at
            vtype = h.value_type(f"type of key {key!r}")
            self.metadata[key], self.value_types[key] = h.value(vtype, f"value of key {key!r}")

    def _alignment(self, h: _Header) -> int:
        if ALIGNMENT_KEY not in self.metadata:
            return DEFAULT_ALIGNMENT
        where = f"key {ALIGNMENT_KEY!r}"
        vtype, value = self.value_types[ALIGNMENT_KEY], self.metadata[ALIGNMENT_KEY]
        if vtype != GGUFValueType.UINT32 or isinstance(value, list):
            raise h.error(where, self._alignment_at, f"must be a uint32, is {vtype.name}"
                          + (" array" if isinstance(value, list) else ""))
        if value <= 0 or value & (value - 1):
            raise h.error(where, self._alignment_at, f"alignment {value} is not a power of two")
        return value

    def _parse_tensor_info(self, h: _Header, i: int) -> tuple:
        at = h.pos
        name = h.string(f"tensor name #{i}")
        what = f"tensor {name!r}"
        n_dims = h.u32(f"{what} n_dims")
        if n_dims > MAX_DIMS:
            raise h.error(what, at, f"n_dims {n_dims} is more than {MAX_DIMS}")
        h.need(8 * n_dims, f"{what} dims")
        ne = struct.unpack_from(f"<{n_dims}Q", h.mm, h.pos)
        h.pos += 8 * n_dims
        n = 1
        for j, d in enumerate(ne):
            if d > INT64_MAX:
                raise h.error(what, at, f"dimension {j} is {d}, negative as an int64")
            n *= d
        if n > INT64_MAX:
            raise h.error(what, at, f"element count of dims {list(ne)} overflows int64")
        type_at = h.pos
        raw_type = h.u32(f"{what} type")
        try:
            ttype = GGMLType(raw_type)
        except ValueError:
            raise h.error(f"{what} type", type_at, f"unknown tensor type {raw_type}") from None
        block, type_size = TYPE_INFO[ttype]
        row = ne[0] if ne else 1
        if row % block:
            raise h.error(what, at, f"row length {row} is not a multiple of {ttype.name}'s "
                                    f"block size {block}")
        offset = h.u64(f"{what} data offset")
        return at, name, ttype, tuple(reversed(ne)), n // block * type_size, offset

    def _bind_tensors(self, h: _Header, infos: list[tuple]) -> None:
        """Check every tensor's bytes lie aligned, inside the file and apart from
        the others, then make the views."""
        spans = []
        for at, name, ttype, shape, nbytes, rel in infos:
            what = f"tensor {name!r}"
            if name in self.tensors:
                raise h.error(what, at, "duplicate tensor name")
            if rel % self.alignment:
                raise h.error(what, at, f"data offset {rel} is not a multiple of the "
                                        f"alignment {self.alignment}")
            start = self.data_offset + rel
            if start + nbytes > h.size:
                raise h.error(what, at, f"data [{start}, {start + nbytes}) lies past the end "
                                        f"of the file ({h.size} bytes)")
            self.tensors[name] = GGUFTensor(name, ttype, shape, start, nbytes, None)
            if nbytes:
                spans.append((start, start + nbytes, name, at))
        spans.sort()
        for (_, end0, name0, _), (start1, _, name1, at1) in zip(spans, spans[1:]):
            if start1 < end0:
                raise h.error(f"tensor {name1!r}", at1, f"data at byte {start1} overlaps "
                                                        f"tensor {name0!r}")
        self._bytes = np.frombuffer(self._mm, dtype=np.uint8)
        self._bytes.flags.writeable = False
        for t in self.tensors.values():
            t.data = self._bytes[t.offset:t.offset + t.nbytes]

    def close(self) -> None:
        """Drop this reader's views and unmap the file. Tensor arrays the caller
        still holds keep the mapping alive (and valid) until they are freed."""
        self.tensors = {}
        self._bytes = None
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass   # outside views remain; the map goes with the last of them

    def __enter__(self) -> "GGUFReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFReader({self.path!r}, version={self.version}, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")


# ----------------------------------------------------------------------------- writer

_NUMPY_TO_GGML = {np.dtype(np.float32): GGMLType.F32, np.dtype(np.float16): GGMLType.F16,
                  np.dtype(np.float64): GGMLType.F64, np.dtype(np.int8): GGMLType.I8,
                  np.dtype(np.int16): GGMLType.I16, np.dtype(np.int32): GGMLType.I32,
                  np.dtype(np.int64): GGMLType.I64}
_NUMPY_TO_VALUE = {np.dtype(d): t for d, t in (
    (np.uint8, GGUFValueType.UINT8), (np.int8, GGUFValueType.INT8),
    (np.uint16, GGUFValueType.UINT16), (np.int16, GGUFValueType.INT16),
    (np.uint32, GGUFValueType.UINT32), (np.int32, GGUFValueType.INT32),
    (np.uint64, GGUFValueType.UINT64), (np.int64, GGUFValueType.INT64),
    (np.float16, GGUFValueType.FLOAT32), (np.float32, GGUFValueType.FLOAT32),
    (np.float64, GGUFValueType.FLOAT64), (np.bool_, GGUFValueType.BOOL))}
_INT_RANGE = {t: (int(np.iinfo(d).min), int(np.iinfo(d).max)) for t, d in _DTYPE.items()
              if d.kind in "iu" and t != GGUFValueType.BOOL}

#: What a metadata array may be given as (bytes: an array of uint8).
_SEQUENCES = (list, tuple, np.ndarray, bytes, bytearray)

TensorSource = Union[np.ndarray, bytes, bytearray, memoryview, Callable[[], Any]]


def _infer_scalar_type(value: Any, key: str) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, np.generic):
        if value.dtype in _NUMPY_TO_VALUE:
            return _NUMPY_TO_VALUE[value.dtype]
    elif isinstance(value, float):
        return GGUFValueType.FLOAT32
    elif isinstance(value, int):
        for t in (GGUFValueType.INT32, GGUFValueType.INT64, GGUFValueType.UINT64):
            lo, hi = _INT_RANGE[t]
            if lo <= value <= hi:
                return t
        raise ValueError(f"metadata {key!r}: {value} does not fit 64 bits")
    elif isinstance(value, (list, tuple, np.ndarray, bytes, bytearray)):
        return GGUFValueType.ARRAY
    raise ValueError(f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF")


def _infer_leaf_type(items: Any, key: str) -> GGUFValueType:
    """The element type of an array: from its dtype, or the widest type that
    holds all its elements (bools, ints -> int32/int64/uint64, floats -> float32)."""
    if isinstance(items, (bytes, bytearray)):
        return GGUFValueType.UINT8
    if isinstance(items, np.ndarray):
        if items.dtype not in _NUMPY_TO_VALUE:
            raise ValueError(f"metadata {key!r}: arrays of {items.dtype} cannot be stored")
        return _NUMPY_TO_VALUE[items.dtype]
    kinds = {_infer_scalar_type(v, key) for v in items}
    if not kinds:
        raise ValueError(f"metadata {key!r}: the element type of an empty array must be "
                         "given")
    if len(kinds) == 1:
        return kinds.pop()
    ints = {GGUFValueType.INT32, GGUFValueType.INT64, GGUFValueType.UINT64}
    if kinds <= ints:
        return GGUFValueType.UINT64 if GGUFValueType.UINT64 in kinds else GGUFValueType.INT64
    if kinds <= ints | {GGUFValueType.FLOAT32}:
        return GGUFValueType.FLOAT32
    raise ValueError(f"metadata {key!r}: array elements of mixed types "
                     f"{sorted(k.name for k in kinds)}")


def _encode_scalar(out: bytearray, vtype: GGUFValueType, value: Any, key: str) -> None:
    if vtype == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"metadata {key!r}: a string value must be str, got "
                             f"{type(value).__name__}")
        raw = value.encode("utf-8")
        out += _U64.pack(len(raw))
        out += raw
        return
    if vtype == GGUFValueType.BOOL and not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"metadata {key!r}: a bool value must be bool, got {value!r}")
    if vtype in _INT_RANGE and not isinstance(value, (int, np.integer)):
        raise ValueError(f"metadata {key!r}: {vtype.name} needs an integer, got {value!r}")
    try:
        out += _STRUCT[vtype].pack(value)
    except (struct.error, TypeError, OverflowError):
        raise ValueError(f"metadata {key!r}: {value!r} does not fit {vtype.name}") from None


def _encode_numbers(out: bytearray, leaf: GGUFValueType, items: Any, key: str) -> None:
    """A flat array of fixed-size values, checked and converted by numpy in one go
    (Python ints are never routed through float64, which would round 2**64-1)."""
    if isinstance(items, (bytes, bytearray)):
        items = np.frombuffer(items, np.uint8)
    is_int = leaf in _INT_RANGE
    if isinstance(items, np.ndarray):
        if items.ndim != 1:
            raise ValueError(f"metadata {key!r}: arrays of {leaf.name} must be flat")
        kinds = "b" if leaf == GGUFValueType.BOOL else "iub" if is_int else "iubf"
        fits = items.size == 0 or items.dtype.kind in kinds
    else:
        accepted = ((bool, np.bool_) if leaf == GGUFValueType.BOOL else
                    (int, np.integer) if is_int else (int, float, np.integer, np.floating))
        fits = all(isinstance(v, accepted) for v in items)
    if not fits:
        raise ValueError(f"metadata {key!r}: elements do not suit a {leaf.name} array")
    if is_int and len(items):
        lo, hi = _INT_RANGE[leaf]
        if int(min(items)) < lo or int(max(items)) > hi:
            raise ValueError(f"metadata {key!r}: values do not fit {leaf.name}")
    out += np.array(items, dtype=_DTYPE[leaf]).tobytes()


def _encode_array(out: bytearray, leaf: GGUFValueType, items: Any, key: str,
                  depth: int) -> None:
    if depth > MAX_ARRAY_DEPTH:
        raise ValueError(f"metadata {key!r}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
    nested = len(items) > 0 and isinstance(items[0], _SEQUENCES)
    etype = GGUFValueType.ARRAY if nested or leaf == GGUFValueType.ARRAY else leaf
    out += _U32.pack(etype)
    out += _U64.pack(len(items))
    if etype == GGUFValueType.ARRAY:
        for inner in items:
            if not isinstance(inner, _SEQUENCES):
                raise ValueError(f"metadata {key!r}: nested arrays mix lists and scalars")
            _encode_array(out, leaf, inner, key, depth + 1)
    elif etype == GGUFValueType.STRING:
        for s in items:
            _encode_scalar(out, etype, s, key)
    else:
        _encode_numbers(out, etype, items, key)


def _first_flat_array(value: Any, key: str, depth: int = 1) -> Any:
    """The first non-empty array of scalars inside a (possibly nested) array."""
    if depth > MAX_ARRAY_DEPTH:
        raise ValueError(f"metadata {key!r}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
    if not any(isinstance(v, _SEQUENCES) for v in value):
        return value if len(value) else None
    for inner in value:
        if isinstance(inner, _SEQUENCES):
            found = _first_flat_array(inner, key, depth + 1)
            if found is not None:
                return found
    return None


def _nested_leaf_type(value: Any, key: str) -> GGUFValueType:
    """The element type of a (possibly nested) array, from its first scalars."""
    flat = value if isinstance(value, (np.ndarray, bytes, bytearray)) else (
        _first_flat_array(value, key))
    if flat is None:
        raise ValueError(f"metadata {key!r}: the element type of an empty array must be "
                         "given")
    return _infer_leaf_type(flat, key)


class _PendingTensor:
    __slots__ = ("name", "type", "shape", "nbytes", "source")

    def __init__(self, name, type, shape, nbytes, source):
        self.name, self.type, self.shape, self.nbytes, self.source = (
            name, type, shape, nbytes, source)


def _encoded_size(ttype: GGMLType, shape: tuple, name: str) -> int:
    if not 1 <= len(shape) <= MAX_DIMS:
        raise ValueError(f"tensor {name!r}: shape {shape} must have 1 to {MAX_DIMS} dims")
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor {name!r}: shape {shape} has a negative dimension")
    block, type_size = TYPE_INFO[ttype]
    if shape[-1] % block:
        raise ValueError(f"tensor {name!r}: row length {shape[-1]} is not a multiple of "
                         f"{ttype.name}'s block size {block}")
    return int(np.prod(shape, dtype=object)) // block * type_size


def _as_bytes(data: Any, ttype: GGMLType, shape: tuple, name: str) -> np.ndarray:
    """The encoded bytes of a tensor given as raw bytes, as an array of its
    own type, or as floats to convert (F16 by numpy, the rest by quants.quantize)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    arr = np.asarray(data)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr).reshape(-1)
    if _NUMPY_TO_GGML.get(arr.dtype) == ttype:
        return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    if arr.dtype.kind != "f":
        raise ValueError(f"tensor {name!r}: cannot store {arr.dtype} data as {ttype.name}")
    if arr.size != int(np.prod(shape, dtype=object)):
        raise ValueError(f"tensor {name!r}: {arr.size} values given for shape {shape}")
    arr = arr.reshape(shape)
    if ttype in (GGMLType.F32, GGMLType.F16, GGMLType.F64):
        return np.ascontiguousarray(arr, dtype=_dtype_of(ttype)).reshape(-1).view(np.uint8)
    from .quants import quantize
    return quantize(arr.astype(np.float32), ttype).reshape(-1)


def _dtype_of(ttype: GGMLType) -> np.dtype:
    return next(d for d, t in _NUMPY_TO_GGML.items() if t == ttype)


class GGUFWriter:
    """Writes a version-3 GGUF file.

        with GGUFWriter("model.gguf") as w:
            w.add_metadata("general.architecture", "llama")
            w.add_metadata("llama.context_length", 8192, "uint32")
            w.add_tensor("token_embd.weight", embeddings)            # float32 -> F32
            w.add_tensor("blk.0.attn_q.weight", x, type="Q4_K")      # quantized on write
            w.add_tensor("output.weight", raw, type="Q8_0", shape=(rows, cols))

    Metadata types are inferred (bool, int -> INT32 or wider, float -> FLOAT32,
    str, list -> ARRAY of the elements' type, numpy scalars and arrays by dtype)
    unless forced: the `type` of `add_metadata` is the value's type, or for an
    array its element type. llama.cpp checks types exactly (UINT32 hyper-
    parameters, FLOAT32 epsilons), so converters should force them.

    Tensors are held by reference (or produced by a callable) and written one
    at a time when the file is written, so a converter never holds all of them
    in memory. The file appears under its name only once it is complete.
    """

    def __init__(self, path: str | os.PathLike, alignment: int = DEFAULT_ALIGNMENT):
        self.path = os.fspath(path)
        self._metadata: dict[str, tuple[GGUFValueType, Any]] = {}
        self._tensors: dict[str, _PendingTensor] = {}
        self._written = False
        self.alignment = DEFAULT_ALIGNMENT
        if alignment != DEFAULT_ALIGNMENT:
            self.add_metadata(ALIGNMENT_KEY, alignment, GGUFValueType.UINT32)

    def add_metadata(self, key: str, value: Any, type: ValueTypeLike | None = None) -> None:
        """Set `key` to `value` (replacing an earlier value, keeping its place).
        `type` forces the value type, or the element type of an array."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys are non-empty strings, got {key!r}")
        if key == ALIGNMENT_KEY and type is None:
            type = GGUFValueType.UINT32
        if isinstance(value, _SEQUENCES):
            leaf = (as_value_type(type) if type is not None
                    else _nested_leaf_type(value, key))
            vtype = GGUFValueType.ARRAY
        else:
            vtype = as_value_type(type) if type is not None else _infer_scalar_type(value, key)
            if vtype == GGUFValueType.ARRAY:
                raise ValueError(f"metadata {key!r}: an ARRAY value must be a sequence")
            leaf = vtype
        encoded = bytearray()
        if vtype == GGUFValueType.ARRAY:
            _encode_array(encoded, leaf, value, key, 1)
        else:
            _encode_scalar(encoded, vtype, value, key)
        if key == ALIGNMENT_KEY:
            self._set_alignment(vtype, value)
        self._metadata[key] = (vtype, bytes(encoded))

    def _set_alignment(self, vtype: GGUFValueType, value: Any) -> None:
        if vtype != GGUFValueType.UINT32:
            raise ValueError(f"{ALIGNMENT_KEY} must be a uint32, not {vtype.name}")
        if value <= 0 or value & (value - 1):
            raise ValueError(f"{ALIGNMENT_KEY} {value} is not a power of two")
        self.alignment = int(value)

    def add_tensor(self, name: str, data: TensorSource, type: TypeLike | None = None,
                   shape: tuple | None = None) -> None:
        """Add a tensor, written in the order added.

        `data` is one of: a float32/float16 (or float64, int8..int64) array stored
        as its own type; a float array with a different `type` (converted on write:
        F16 by numpy, quantized types by llamalite.quants.quantize); raw encoded
        bytes (bytes or a uint8 array) with its `type` and `shape`; or a callable
        returning any of those, called only when the tensor is written (then
        `type` and `shape` are required). `shape` is in numpy order. A uint8 array
        of shape (..., row bytes), as quants.quantize returns, needs no `shape`.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names are non-empty strings, got {name!r}")
        if name in self._tensors:
            raise ValueError(f"duplicate tensor name {name!r}")
        if callable(data):
            if type is None or shape is None:
                raise ValueError(f"tensor {name!r}: a callable source needs type and shape")
            ttype = as_type(type)
        else:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                data = np.asarray(data)
            ttype, shape = self._resolve(name, data, type, shape)
        shape = tuple(int(d) for d in shape)
        nbytes = _encoded_size(ttype, shape, name)
        self._tensors[name] = _PendingTensor(name, ttype, shape, nbytes, data)

    @staticmethod
    def _resolve(name: str, data: Any, type: TypeLike | None, shape: tuple | None):
        raw = isinstance(data, (bytes, bytearray, memoryview)) or data.dtype == np.uint8
        if type is None:
            if raw or data.dtype not in _NUMPY_TO_GGML:
                raise ValueError(f"tensor {name!r}: give the type of "
                                 f"{'raw bytes' if raw else data.dtype}")
            ttype = _NUMPY_TO_GGML[data.dtype]
        else:
            ttype = as_type(type)
        if shape is not None:
            return ttype, shape
        if not raw:
            if ttype != _NUMPY_TO_GGML.get(data.dtype) and data.dtype.kind != "f":
                raise ValueError(f"tensor {name!r}: cannot store {data.dtype} data as "
                                 f"{ttype.name}")
            return ttype, data.shape
        if isinstance(data, np.ndarray) and data.ndim >= 1:
            block, type_size = TYPE_INFO[ttype]
            if data.shape[-1] % type_size:
                raise ValueError(f"tensor {name!r}: a row of {data.shape[-1]} bytes is not "
                                 f"whole {ttype.name} blocks of {type_size} bytes")
            return ttype, data.shape[:-1] + (data.shape[-1] // type_size * block,)
        raise ValueError(f"tensor {name!r}: raw bytes need a shape")

    def write(self) -> None:
        """Write the file: header, then each tensor in turn (once)."""
        if self._written:
            raise ValueError(f"{self.path} was already written")
        self._written = True
        tmp = f"{self.path}.partial"
        try:
            with open(tmp, "wb") as f:
                header = self._header()
                f.write(header)
                f.write(bytes(_pad(len(header), self.alignment) - len(header)))
                for t in self._tensors.values():
                    self._write_tensor(f, t)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def _header(self) -> bytearray:
        out = bytearray(MAGIC)
        out += _U32.pack(WRITE_VERSION)
        out += _U64.pack(len(self._tensors))
        out += _U64.pack(len(self._metadata))
        for key, (vtype, encoded) in self._metadata.items():
            _encode_scalar(out, GGUFValueType.STRING, key, key)
            out += _U32.pack(vtype)
            out += encoded
        offset = 0
        for t in self._tensors.values():
            _encode_scalar(out, GGUFValueType.STRING, t.name, t.name)
            out += _U32.pack(len(t.shape))
            out += struct.pack(f"<{len(t.shape)}Q", *reversed(t.shape))
            out += _U32.pack(t.type)
            out += _U64.pack(offset)
            offset += _pad(t.nbytes, self.alignment)
        return out

    def _write_tensor(self, f, t: _PendingTensor) -> None:
        data = t.source() if callable(t.source) else t.source
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = np.asarray(data)
        raw = _as_bytes(data, t.type, t.shape, t.name)
        if raw.nbytes != t.nbytes:
            raise ValueError(f"tensor {t.name!r}: {raw.nbytes} bytes given; {t.type.name} "
                             f"of shape {t.shape} takes {t.nbytes}")
        f.write(memoryview(raw))
        f.write(bytes(_pad(t.nbytes, self.alignment) - t.nbytes))
        t.source = None   # let the caller's data go as soon as it is on disk

    def __enter__(self) -> "GGUFWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._written:
            self.write()

