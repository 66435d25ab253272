"""safetensors files, read lazily and validated (no torch, no safetensors package).

The format: a little-endian u64 N, N bytes of UTF-8 JSON, then the data. The
JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the data section); an optional "__metadata__" maps
strings to strings.

The header is untrusted: its length, JSON, every dtype, shape and offset is
checked before any tensor is touched, and each problem is a CheckpointError
naming the file and the tensor. The file is mapped, not read, so a tensor
costs memory only while its converted copy is alive.
"""
from __future__ import annotations

import json
import mmap
import os
import struct

import numpy as np

from .errors import CheckpointError, UnsupportedModelError

#: safetensors' own bound on the header (100 MB), which a real one never nears.
MAX_HEADER_BYTES = 100_000_000

#: dtype name -> bytes per element. The float types are the ones converted;
#: the rest are known so that a checkpoint holding them still indexes.
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


class SafetensorsTensor:
    """One tensor of a mapped file: its dtype, shape and bytes (a view)."""
    __slots__ = ("file", "name", "dtype", "shape", "_view")

    def __init__(self, file: "SafetensorsFile", name: str, dtype: str, shape: tuple,
                 view: np.ndarray):
        self.file, self.name, self.dtype, self.shape, self._view = file, name, dtype, shape, view

    def to_float32(self) -> np.ndarray:
        """The values as a new float32 array of `shape` (BF16 widened exactly)."""
        if self.dtype == "BF16":
            wide = self._view.view("<u2").astype(np.uint32) << 16
            return wide.view(np.float32).reshape(self.shape)
        if self.dtype not in _FLOAT_DTYPES:
            raise UnsupportedModelError(f"{self.file.path}: tensor {self.name!r} has dtype "
                                        f"{self.dtype}; only F32, F16, BF16 and F64 convert")
        dtype = np.dtype(_FLOAT_DTYPES[self.dtype]).newbyteorder("<")
        return self._view.view(dtype).astype(np.float32).reshape(self.shape)

    def __repr__(self) -> str:
        return f"SafetensorsTensor({self.name!r}, {self.dtype}, shape={self.shape})"


class SafetensorsFile:
    """A validated safetensors file; `tensors` maps names (sorted, as the
    safetensors library lists them) to SafetensorsTensor."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.tensors: dict[str, SafetensorsTensor] = {}
        self._mm = None
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot open: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise self._error(f"{size} bytes is too short for a safetensors file")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse(size)
        except BaseException:
            self.close()
            raise

    def _error(self, problem: str, tensor: str | None = None) -> CheckpointError:
        where = f"{self.path}: tensor {tensor!r}" if tensor is not None else self.path
        return CheckpointError(f"{where}: {problem}")

    def _parse(self, size: int) -> None:
        (n,) = struct.unpack_from("<Q", self._mm, 0)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise self._error(f"header length {n} is more than the {size - 8} bytes after it"
                              if n > size - 8 else f"header length {n} exceeds "
                              f"{MAX_HEADER_BYTES} bytes")
        try:
            header = json.loads(bytes(self._mm[8:8 + n]).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise self._error(f"the header is not valid UTF-8 JSON ({e})") from None
        if not isinstance(header, dict):
            raise self._error("the header is not a JSON object")
        data_start, data_size = 8 + n, size - 8 - n
        spans = []
        for name in sorted(header):
            if name == "__metadata__":
                continue
            dtype, shape, begin, end = self._entry(name, header[name], data_size)
            if end > begin:
                spans.append((begin, end, name))
            data = np.frombuffer(self._mm, np.uint8, count=end - begin,
                                 offset=data_start + begin)
            data.flags.writeable = False
            self.tensors[name] = SafetensorsTensor(self, name, dtype, shape, data)
        spans.sort()
        for (_, end0, name0), (begin1, _, name1) in zip(spans, spans[1:]):
            if begin1 < end0:
                raise self._error(f"data at offset {begin1} overlaps tensor {name0!r}", name1)

    def _entry(self, name: str, entry, data_size: int) -> tuple:
        if not isinstance(entry, dict):
            raise self._error("its header entry is not an object", name)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_SIZES:
            raise self._error(f"unknown dtype {dtype!r}", name)
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise self._error(f"shape {shape!r} is not a list of non-negative integers", name)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)):
            raise self._error(f"data_offsets {offsets!r} is not a pair of integers", name)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise self._error(f"data_offsets [{begin}, {end}] lie outside the "
                              f"{data_size} data bytes", name)
        expected = int(np.prod(shape, dtype=object)) * DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise self._error(f"holds {end - begin} bytes; {dtype} of shape {shape} takes "
                              f"{expected}", name)
        return dtype, tuple(shape), begin, end

    def close(self) -> None:
        """Drop the views and unmap (arrays already converted stay valid)."""
        self.tensors = {}
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass   # a caller still holds a view; the map goes with it

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
