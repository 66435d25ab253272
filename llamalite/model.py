"""Models: architectures as data, hyperparameters from GGUF metadata, and the
C forward pass with its KV cache.

    model = Model("SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=2048)
    logits = model.eval([1, 504, 3458])      # the last token's logits
    model.truncate(2)                        # forget position 2 on
    logits = model.eval([3458])              # re-evaluate only the new suffix

An architecture is a small record of what sets it apart (rope layout,
activation, which norms it has, how it slides its attention window); the C
forward pass reads the flags, so no architecture has code of its own.
"""
from __future__ import annotations

import atexit
import math
import mmap
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ._native import ffi, lib, check, last_error
from .errors import ContextOverflowError, GGUFError, UnsupportedModelError
from .gguf import MAGIC, GGUFReader, GGUFTensor
from .quants import SUPPORTED, GGMLType
from .threads import get_pool


@dataclass(frozen=True)
class Architecture:
    """What one value of `general.architecture` means for the forward pass."""
    name: str
    rope_style: int                    # LL_ROPE_NORMAL (adjacent pairs) or LL_ROPE_NEOX (halves)
    activation: int = lib.LL_ACT_SILU  # of the gated FFN
    embd_scale_sqrt: bool = False      # token embeddings times sqrt(n_embd)
    qk_norm: bool = False              # RMSNorm of each query and key head before rope
    post_norms: bool = False           # RMSNorm of the attention and FFN outputs
    #: With a sliding window: every swa_pattern-th layer is global, the rest
    #: slide (llama.cpp's default for the architecture, overridden by the
    #: `attention.sliding_window_pattern` key). 0: no sliding layers.
    swa_pattern: int = 0
    #: Attention scale from the config; None: 1/sqrt(head_dim_k).
    attn_scale: Callable[["ModelConfig"], float] | None = None


def _gemma3_attn_scale(cfg: "ModelConfig") -> float:
    # query_pre_attn_scalar: the head size, except Gemma 3 27B (62 layers)
    # which uses n_embd / n_head (as llama.cpp decides it, by layer count).
    scalar = cfg.n_embd // cfg.n_head if cfg.n_layer == 62 else cfg.head_dim_k
    return 1.0 / math.sqrt(scalar)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    # LLaMA 1/2/3, Mistral, TinyLlama, SmolLM, CodeLlama
    Architecture("llama", rope_style=lib.LL_ROPE_NORMAL),
    # Qwen2 / Qwen2.5: biases on Q, K, V (bound when the file has them)
    Architecture("qwen2", rope_style=lib.LL_ROPE_NEOX),
    Architecture("gemma3", rope_style=lib.LL_ROPE_NEOX, activation=lib.LL_ACT_GELU_TANH,
                 embd_scale_sqrt=True, qk_norm=True, post_norms=True, swa_pattern=6,
                 attn_scale=_gemma3_attn_scale),
)}

#: ll_layer_tensors field -> tensor name inside `blk.N.`
LAYER_TENSORS = {
    "attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
    "wv": "attn_v.weight", "bq": "attn_q.bias", "bk": "attn_k.bias", "bv": "attn_v.bias",
    "q_norm": "attn_q_norm.weight", "k_norm": "attn_k_norm.weight",
    "wo": "attn_output.weight", "attn_post_norm": "post_attention_norm.weight",
    "ffn_norm": "ffn_norm.weight", "ffn_gate": "ffn_gate.weight", "ffn_up": "ffn_up.weight",
    "ffn_down": "ffn_down.weight", "ffn_post_norm": "post_ffw_norm.weight",
}
#: ll_model_tensors field -> tensor name
GLOBAL_TENSORS = {"token_embd": "token_embd.weight", "output_norm": "output_norm.weight",
                  "output": "output.weight", "rope_freqs": "rope_freqs.weight"}
#: The fields of the matrices that the forward pass only multiplies with:
#: these may be packed (token_embd's rows are also looked up, so it is not).
MATRICES = frozenset({"wq", "wk", "wv", "wo", "ffn_gate", "ffn_up", "ffn_down", "output"})

#: KV cache types: F16 (llama.cpp's default: half the memory and the bandwidth
#: of F32, at about 3 significant digits per cached value) or F32 (exact).
KV_TYPES = {"F16": GGMLType.F16, "F32": GGMLType.F32}

_MISSING = object()


class _Metadata:
    """Typed access to one architecture's metadata keys; errors name the key."""

    def __init__(self, reader: GGUFReader, arch: str):
        self.md, self.arch, self.path = reader.metadata, arch, reader.path

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        full = f"{self.arch}.{key}"
        if full not in self.md:
            if default is _MISSING:
                raise GGUFError(f"{self.path}: metadata key {full!r} is missing")
            return default
        value = self.md[full]
        if isinstance(value, list):
            if kind is list:
                return value
            # a per-layer array: fine when every layer agrees
            if not value or any(v != value[0] for v in value):
                raise UnsupportedModelError(f"{self.path}: {full} differs between layers "
                                            f"({value[:8]}...); llamalite runs uniform layers")
            value = value[0]
        if kind is list:
            return value
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise GGUFError(f"{self.path}: metadata key {full!r} is {value!r}, not an integer")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise GGUFError(f"{self.path}: metadata key {full!r} is {value!r}, not a number")
        if kind is str and not isinstance(value, str):
            raise GGUFError(f"{self.path}: metadata key {full!r} is {value!r}, not a string")
        return kind(value)


@dataclass
class ModelConfig:
    """The hyperparameters of a model file, as the forward pass uses them."""
    arch: Architecture
    n_layer: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    norm_eps: float
    rope_base: float
    rope_scale: float = 1.0          # positions are multiplied by it (1 / linear scaling factor)
    rope_base_swa: float = 10000.0
    rope_scale_swa: float = 1.0
    n_swa: int = 0
    sliding: tuple = ()              # per layer: does it slide?
    attn_scale: float = 0.0
    embd_scale: float = 1.0
    logit_softcap: float = 0.0
    qkv_bias: bool = False
    tied_output: bool = False
    has_rope_freqs: bool = False

    @classmethod
    def from_gguf(cls, reader: GGUFReader) -> "ModelConfig":
        arch_name = reader.metadata.get("general.architecture")
        if not isinstance(arch_name, str):
            raise GGUFError(f"{reader.path}: metadata key 'general.architecture' is missing")
        arch = ARCHITECTURES.get(arch_name)
        if arch is None:
            raise UnsupportedModelError(
                f"{reader.path}: architecture {arch_name!r} is not supported "
                f"(llamalite runs {', '.join(sorted(ARCHITECTURES))})")
        md = _Metadata(reader, arch_name)
        if "token_embd.weight" not in reader.tensors:
            raise GGUFError(f"{reader.path}: tensor 'token_embd.weight' is missing")
        n_embd = md.get("embedding_length", int)
        n_head = md.get("attention.head_count", int)
        if n_head <= 0:
            raise GGUFError(f"{reader.path}: {arch_name}.attention.head_count is {n_head}")
        head_dim_k = md.get("attention.key_length", int, n_embd // n_head)
        cfg = cls(
            arch=arch,
            n_layer=md.get("block_count", int),
            n_embd=n_embd,
            n_ff=md.get("feed_forward_length", int),
            n_vocab=int(reader.tensors["token_embd.weight"].shape[0]),
            n_head=n_head,
            n_head_kv=md.get("attention.head_count_kv", int, n_head),
            head_dim_k=head_dim_k,
            head_dim_v=md.get("attention.value_length", int, n_embd // n_head),
            n_ctx_train=md.get("context_length", int),
            norm_eps=md.get("attention.layer_norm_rms_epsilon", float),
            rope_base=md.get("rope.freq_base", float, 10000.0),
            rope_base_swa=md.get("rope.freq_base_swa", float, 10000.0),
            logit_softcap=md.get("final_logit_softcapping", float, 0.0),
            qkv_bias="blk.0.attn_q.bias" in reader.tensors,
            tied_output="output.weight" not in reader.tensors,
            has_rope_freqs="rope_freqs.weight" in reader.tensors,
        )
        cfg._read_rope_scaling(md)
        cfg._read_sliding_window(md)
        cfg.attn_scale = arch.attn_scale(cfg) if arch.attn_scale else 1.0 / math.sqrt(head_dim_k)
        cfg.embd_scale = math.sqrt(n_embd) if arch.embd_scale_sqrt else 1.0
        return cfg

    def _read_rope_scaling(self, md: _Metadata) -> None:
        n_rot = md.get("rope.dimension_count", int, self.head_dim_k)
        if n_rot != self.head_dim_k:
            raise UnsupportedModelError(f"{md.path}: rope over {n_rot} of {self.head_dim_k} "
                                        "head dims (partial rope) is not supported")
        kind = md.get("rope.scaling.type", str, "linear")
        if kind not in ("none", "linear"):
            raise UnsupportedModelError(f"{md.path}: rope scaling {kind!r} is not supported "
                                        "(llamalite runs none, linear and llama-3 rope_freqs)")
        factor = md.get("rope.scaling.factor", float, md.get("rope.scale_linear", float, 0.0))
        self.rope_scale = 1.0 if factor == 0.0 else 1.0 / factor
        if md.get("rope.scaling.attn_factor", float, 1.0) != 1.0:
            raise UnsupportedModelError(f"{md.path}: rope.scaling.attn_factor is not supported")

    def _read_sliding_window(self, md: _Metadata) -> None:
        self.n_swa = md.get("attention.sliding_window", int, 0) if self.arch.swa_pattern else 0
        if self.n_swa <= 0:
            self.n_swa, self.sliding = 0, (False,) * self.n_layer
            return
        pattern = md.get("attention.sliding_window_pattern", list, self.arch.swa_pattern)
        if isinstance(pattern, list):          # one bool per layer
            if len(pattern) != self.n_layer:
                raise GGUFError(f"{md.path}: sliding_window_pattern has {len(pattern)} entries "
                                f"for {self.n_layer} layers")
            self.sliding = tuple(bool(p) for p in pattern)
        else:                                  # every n-th layer is global
            n = int(pattern)
            self.sliding = tuple(n == 0 or il % n < n - 1 for il in range(self.n_layer))

    def hparams(self):
        """The C struct ll_hparams."""
        hp = ffi.new("ll_hparams *")
        for name in ("n_layer", "n_embd", "n_ff", "n_vocab", "n_head", "n_head_kv", "head_dim_k",
                     "head_dim_v", "norm_eps", "rope_base", "rope_scale", "rope_base_swa",
                     "rope_scale_swa", "embd_scale", "attn_scale", "logit_softcap", "n_swa"):
            setattr(hp, name, getattr(self, name))
        hp.rope_style = self.arch.rope_style
        hp.activation = self.arch.activation
        hp.qkv_bias = int(self.qkv_bias)
        hp.qk_norm = int(self.arch.qk_norm)
        hp.post_norms = int(self.arch.post_norms)
        hp.tied_output = int(self.tied_output)
        return hp

    def tensor_names(self) -> dict:
        """Every tensor the forward pass binds: C field -> GGUF name (layers as
        'blk.N.field')."""
        wanted = {"token_embd": GLOBAL_TENSORS["token_embd"],
                  "output_norm": GLOBAL_TENSORS["output_norm"]}
        if not self.tied_output:
            wanted["output"] = GLOBAL_TENSORS["output"]
        if self.has_rope_freqs:
            wanted["rope_freqs"] = GLOBAL_TENSORS["rope_freqs"]
        skip = set()
        if not self.qkv_bias:
            skip |= {"bq", "bk", "bv"}
        if not self.arch.qk_norm:
            skip |= {"q_norm", "k_norm"}
        if not self.arch.post_norms:
            skip |= {"attn_post_norm", "ffn_post_norm"}
        for il in range(self.n_layer):
            for fld, name in LAYER_TENSORS.items():
                if fld not in skip:
                    wanted[f"blk.{il}.{fld}"] = f"blk.{il}.{name}"
        return wanted


_HUGE_PAGE = 2 << 20


def huge_page_memory(size: int) -> tuple[mmap.mmap, np.ndarray]:
    """`size` bytes of private anonymous memory, 2 MiB-aligned and advised to
    use 2 MiB pages: (the mapping, a writable uint8 view of the bytes)."""
    # private: a shared anonymous mapping is shmem, which gets no huge pages
    mem = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        mem.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(mem, dtype=np.uint8)
    start = -whole.ctypes.data % _HUGE_PAGE   # huge pages need 2 MiB-aligned spans
    return mem, whole[start:start + size]


#: Bytes read per call: a cancelled read stops within one of these.
_READ_CHUNK = 64 << 20


class _Cancelled(Exception):
    pass


def read_file(path: str | os.PathLike, cancel: threading.Event | None = None):
    """The whole file read into anonymous memory that asks for 2 MiB pages:
    (the memory, a uint8 view of the file's bytes). Stops with _Cancelled
    once `cancel` is set; a file that does not start with GGUF's magic is
    not read past it (GGUFReader says what is wrong with it).

    Two threads read a half each: faulting in fresh huge pages is most of a
    read's time on a VM, and two take 0.08-0.1 s for 500 MB here where one
    took 0.15-0.8 s."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != MAGIC:
            return None
        mem, data = huge_page_memory(max(size, 1))
        data[:4] = np.frombuffer(MAGIC, np.uint8)
        view = memoryview(data)
        if not hasattr(os, "preadv"):
            _read_span(f.fileno(), path, view, 4, size, cancel)
            return mem, data[:size]
        half = max(4, size // 2 // _HUGE_PAGE * _HUGE_PAGE)
        errors: list[BaseException] = []

        def second_half() -> None:
            try:
                _read_span(f.fileno(), path, view, half, size, cancel)
            except BaseException as e:   # raised below, in the calling thread
                errors.append(e)

        helper = threading.Thread(target=second_half, daemon=True, name="llamalite weights 2")
        helper.start()
        try:
            _read_span(f.fileno(), path, view, 4, half, cancel)
        finally:
            helper.join()
        if errors:
            raise errors[0]
    return mem, data[:size]


def _read_span(fd: int, path, view: memoryview, start: int, end: int,
               cancel: threading.Event | None) -> None:
    """Bytes [start, end) of the file into view[start:end], a chunk at a time."""
    done = start
    while done < end:
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        part = view[done:min(end, done + _READ_CHUNK)]
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [part], done)
        else:   # one thread only, then
            os.lseek(fd, done, os.SEEK_SET)
            n = os.readv(fd, [part])
        if not n:
            raise GGUFError(f"{path}: the file shrank while it was being read")
        done += n


def tensor_data(read, reader: GGUFReader) -> tuple[mmap.mmap, np.ndarray] | None:
    """From read_file's value for reader's file: (the memory, a uint8 view of
    the tensor data whose byte 0 is file byte reader.data_offset), or None when
    the file holds no tensor bytes. The whole 2 MiB pages before the tensor
    data (the metadata) are given back.

    Why read at all: generating a token streams every weight once, and over a
    file mapping's 4 KiB pages the TLB misses cost a third of that speed here
    (a Q8_0 GEMV: 14.8 GB/s mapped, 20.3 GB/s from huge pages). Read, not
    copied from the mapping, so the file's pages never count twice in the
    resident set. Costs a read of the file at load: ~0.1 s per 500 MB from
    the page cache, several times that where fresh memory is slow to fault
    in (a VM), which is why Llama starts it before anything else."""
    if read is None or len(read[1]) != reader.file_size:
        raise GGUFError(f"{reader.path}: the file changed while it was being read")
    mem, whole = read
    if reader.data_offset >= len(whole):
        return None
    metadata_pages = reader.data_offset // _HUGE_PAGE * _HUGE_PAGE
    if metadata_pages and hasattr(mmap, "MADV_DONTNEED"):
        first = whole.ctypes.data - np.frombuffer(mem, np.uint8).ctypes.data
        mem.madvise(mmap.MADV_DONTNEED, first, metadata_pages)
    return mem, whole[reader.data_offset:]


def read_tensor_data(reader: GGUFReader) -> tuple[mmap.mmap, np.ndarray] | None:
    """tensor_data(read_file(reader.path), reader): the tensor data read into
    huge-page memory."""
    return tensor_data(read_file(reader.path), reader)


class WeightsReader:
    """read_file(path) on a thread of its own, started before the file is
    parsed, so that the caller can parse it and build the tokenizer meanwhile
    (the read releases the GIL). result(reader) waits for it and returns
    tensor_data's value, or raises the read's exception; cancel() stops it."""

    def __init__(self, path: str | os.PathLike):
        self._value = self._error = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True,
                                        name="llamalite weights")
        self._thread.start()

    def _run(self, path) -> None:
        try:
            self._value = read_file(path, self._cancel)
        except BaseException as e:   # handed to the caller by result()
            self._error = e

    def cancel(self) -> None:
        """Stop the read and drop what it read (a load that failed)."""
        self._cancel.set()
        self._thread.join()
        self._value = None

    def result(self, reader: GGUFReader):
        self._thread.join()
        if self._error is not None:
            raise self._error
        value, self._value = self._value, None
        return tensor_data(value, reader)


def _shape2(t: GGUFTensor) -> tuple[int, int]:
    """(rows, cols) of a tensor as C sees it (numpy order; a vector is 1 x cols)."""
    rows = int(np.prod(t.shape[:-1], dtype=np.int64)) if len(t.shape) > 1 else 1
    return rows, int(t.shape[-1]) if t.shape else 1


def _bind(t: GGUFTensor, c_tensor, keep: list, data: np.ndarray, packed: bool) -> None:
    """Point c_tensor at t's bytes `data` (packed: as ll_pack left them)."""
    if t.type not in SUPPORTED:
        raise UnsupportedModelError(f"tensor {t.name!r} has type {t.type.name}, which "
                                    "llamalite does not run")
    buf = ffi.from_buffer(data)
    keep.append(buf)
    c_tensor.data = buf
    c_tensor.nbytes = t.nbytes
    c_tensor.type = int(t.type)
    c_tensor.layout = lib.LL_LAYOUT_PACKED8 if packed else lib.LL_LAYOUT_ROWS
    c_tensor.rows, c_tensor.cols = _shape2(t)


def _pack(t: GGUFTensor, data: np.ndarray) -> None:
    """Pack t's bytes `data` (writable) in place."""
    rows, cols = _shape2(t)
    check(lib.ll_pack(int(t.type), ffi.from_buffer(data), data.nbytes, rows, cols))


#: Models not closed yet: closed at exit, while the C library is still loaded.
_open_models: "weakref.WeakSet[Model]" = weakref.WeakSet()


@atexit.register
def _close_open_models() -> None:
    for m in list(_open_models):
        m.close()


class Model:
    """A GGUF model bound to the C forward pass, with a KV cache of n_ctx positions.

    `model` is a path or an open GGUFReader. The weights are read into
    huge-page memory (read_tensor_data; `weights`, a WeightsReader of the same
    reader, when the caller started that read), or with use_mmap used in place
    in the file's mapping (nothing read until touched, pages shared with other
    processes, generation slower; the matrices that the kernels run packed are
    copied out of it). Matrices are packed where the kernels prefer it
    (`_packed_names`). n_ctx None or 0 means the model's training
    context; n_batch is clamped to n_ctx; n_threads None means the physical
    cores; kv_type is "F16" (default, as llama.cpp) or "F32".
    """

    def __init__(self, model: str | os.PathLike | GGUFReader, n_ctx: int | None = None,
                 n_batch: int = 512, n_threads: int | None = None, kv_type: str = "F16",
                 use_mmap: bool = False, weights: "WeightsReader | None" = None):
        self._model = self._ctx = self._weights = self._packed_copy = None
        self._packed_names: set = set()
        self._lock = threading.Lock()   # one evaluation at a time: the cache and scratch are shared
        self._owns_reader = not isinstance(model, GGUFReader)
        self.reader = GGUFReader(model) if self._owns_reader else model
        try:
            self.config = cfg = ModelConfig.from_gguf(self.reader)
            self.n_ctx = int(n_ctx) if n_ctx else cfg.n_ctx_train
            self.n_batch = max(1, min(int(n_batch), self.n_ctx))
            if kv_type not in KV_TYPES:
                raise ValueError(f"kv_type {kv_type!r}: expected one of {', '.join(KV_TYPES)}")
            self.kv_type = kv_type
            self.n_threads = lib.ll_pool_size(get_pool(n_threads))
            if weights is not None:
                self._weights = weights.result(self.reader)
            elif not use_mmap:
                self._weights = read_tensor_data(self.reader)
            self._model = self._new_model()
            ctx = ffi.new("ll_context **")
            check(lib.ll_context_new(self._model, self.n_ctx, self.n_batch, self.n_threads,
                                     int(KV_TYPES[kv_type]), ctx))
            self._ctx = ctx[0]
            _open_models.add(self)
        except BaseException:
            self.close()
            raise

    def _new_model(self):
        cfg, tensors = self.config, self.reader.tensors
        wanted = cfg.tensor_names()
        unused = sorted(set(tensors) - set(wanted.values()))
        if unused:
            raise UnsupportedModelError(
                f"{self.reader.path}: tensor {unused[0]!r} is not used by llamalite's "
                f"{cfg.arch.name} ({len(unused)} such tensors)")
        self._keep: list = []
        for name in wanted.values():
            if name not in tensors:
                raise GGUFError(f"{self.reader.path}: tensor {name!r} is missing")
        data = self._tensor_bytes(wanted)
        globals_ = ffi.new("ll_model_tensors *")
        layers = ffi.new("ll_layer_tensors[]", cfg.n_layer)
        for fld, name in wanted.items():
            c_tensor = (getattr(layers[int(fld.split(".")[1])], fld.split(".", 2)[2])
                        if fld.startswith("blk.") else getattr(globals_, fld))
            _bind(tensors[name], c_tensor, self._keep, data[name], name in self._packed_names)
        for il, slides in enumerate(cfg.sliding):
            layers[il].sliding = int(slides)
        self._c_tensors = globals_, layers   # what ll_model_new was given
        out = ffi.new("ll_model **")
        rc = lib.ll_model_new(cfg.hparams(), globals_, layers, cfg.n_layer, out)
        if rc == lib.LL_ERR_ARG:  # shapes and sizes come from the file
            raise GGUFError(f"{self.reader.path}: {last_error()}")
        check(rc)
        return out[0]

    def _tensor_bytes(self, wanted: dict) -> dict:
        """Every wanted tensor's bytes, by name, with the matrices that the
        kernels run faster packed (ll_pack_preferred) packed: in place in
        the memory the weights were read into, or with use_mmap in memory of
        their own (llama.cpp's repacked tensors leave the mapping too)."""
        tensors, offset = self.reader.tensors, self.reader.data_offset
        weights = self._weights[1] if self._weights else None
        data = {name: tensors[name].data if weights is None else
                weights[tensors[name].offset - offset:][:tensors[name].nbytes]
                for name in wanted.values()}
        self._packed_names = {
            name for fld, name in wanted.items()
            if fld.rsplit(".", 1)[-1] in MATRICES and tensors[name].type in SUPPORTED
            and lib.ll_pack_preferred(int(tensors[name].type), *_shape2(tensors[name]))}
        if weights is None and self._packed_names:
            size = sum(tensors[name].nbytes for name in self._packed_names)
            self._packed_copy = huge_page_memory(size)
            at = 0
            for name in sorted(self._packed_names):
                dest = self._packed_copy[1][at:at + tensors[name].nbytes]
                dest[:] = data[name]
                data[name], at = dest, at + dest.nbytes
        for name in self._packed_names:
            _pack(tensors[name], data[name])
        if weights is not None:
            weights.flags.writeable = False
        return data

    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    @property
    def n_past(self) -> int:
        """Positions 0..n_past-1 are in the KV cache."""
        return lib.ll_context_n_past(self._live())

    def kv_bytes(self) -> int:
        return lib.ll_context_kv_bytes(self._live())

    def truncate(self, n_keep: int) -> None:
        """Forget every cached position from n_keep on."""
        check(lib.ll_context_truncate(self._live(), int(n_keep)))

    def eval(self, ids, pos: int | None = None, all_logits: bool = False) -> np.ndarray:
        """Evaluate token ids at positions pos.. (default: after what is cached;
        what was cached from pos on is replaced), in pieces of n_batch.

        Returns the last token's logits (n_vocab float32), or with all_logits
        every token's (len(ids) x n_vocab).
        """
        ctx, ids = self._live(), self._check_ids(ids)
        pos, n = self._check_pos(ids, pos), len(ids)
        out = np.empty((n, self.n_vocab) if all_logits else self.n_vocab, np.float32)
        pool = get_pool(self.n_threads)   # looked up each time: a forked child gets its own
        with self._lock:
            for start in range(0, n, self.n_batch):
                chunk = ids[start:start + self.n_batch]
                last = start + len(chunk) == n
                dest = out[start:start + len(chunk)] if all_logits else out if last else None
                logits = ffi.NULL if dest is None else ffi.cast("float *", ffi.from_buffer(dest))
                nbytes = 0 if dest is None else dest.nbytes
                check(lib.ll_forward(ctx, pool, ffi.cast("int32_t *", ffi.from_buffer(chunk)),
                                     len(chunk), pos + start, logits, nbytes, int(all_logits)))
        return out

    def hidden(self, ids, pos: int | None = None) -> np.ndarray:
        """Evaluate like eval(), but return every token's final hidden state
        (after output_norm, before the output projection: llama.cpp's
        embeddings), len(ids) x n_embd float32."""
        ctx, ids = self._live(), self._check_ids(ids)
        pos = self._check_pos(ids, pos)
        out = np.empty((len(ids), self.config.n_embd), np.float32)
        pool = get_pool(self.n_threads)
        with self._lock:
            for start in range(0, len(ids), self.n_batch):
                chunk, dest = ids[start:start + self.n_batch], out[start:start + self.n_batch]
                tokens = ffi.cast("int32_t *", ffi.from_buffer(chunk))
                hidden = ffi.cast("float *", ffi.from_buffer(dest))
                check(lib.ll_forward_hidden(ctx, pool, tokens, len(chunk), pos + start, hidden,
                                            dest.nbytes))
        return out

    def save_cache(self, n_pos: int | None = None) -> bytes:
        """The KV cache's first n_pos positions (default: all cached) as bytes."""
        ctx = self._live()
        n_pos = self.n_past if n_pos is None else int(n_pos)
        size = lib.ll_context_state_bytes(ctx, n_pos)
        buf = bytearray(max(size, 0))
        check(lib.ll_context_state_get(ctx, n_pos, ffi.from_buffer(buf), len(buf)))
        return bytes(buf)

    def load_cache(self, data: bytes, n_pos: int) -> None:
        """Restore positions 0..n_pos-1 from save_cache() of a Model of the same
        file, n_ctx and kv_type; n_past becomes n_pos."""
        check(lib.ll_context_state_set(self._live(), int(n_pos), ffi.from_buffer(data), len(data)))

    def _check_pos(self, ids: np.ndarray, pos: int | None) -> int:
        n, n_past = len(ids), self.n_past
        pos = n_past if pos is None else int(pos)
        if not 0 <= pos <= n_past:
            raise ValueError(f"position {pos}: the cache holds {n_past} positions, so a "
                             f"batch starts at 0..{n_past}")
        if pos + n > self.n_ctx:
            raise ContextOverflowError(f"{n} tokens at position {pos} need {pos + n} positions; "
                                       f"the context holds {self.n_ctx} (n_ctx)")
        return pos

    def _check_ids(self, ids) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.size == 0:
            raise ValueError("no token ids to evaluate")
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ValueError(f"token ids must be a flat sequence of integers, got {arr.dtype} "
                             f"of shape {arr.shape}")
        # ll_forward checks every id of a batch before it evaluates any; ids
        # that span several batches, or would not survive the cast to int32,
        # are checked here so that no batch of them is evaluated at all
        if len(arr) > self.n_batch or arr.dtype.itemsize > 4:
            bad = np.flatnonzero((arr < 0) | (arr >= self.n_vocab))
            if bad.size:
                raise ValueError(f"token id {arr[bad[0]]} (at {bad[0]}) is out of range: the "
                                 f"vocabulary has {self.n_vocab} tokens")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def _live(self):
        if self._ctx is None:
            raise ValueError("the model is closed")
        return self._ctx

    def close(self) -> None:
        """Free the KV cache and the model; close the file if this Model opened it."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            lib.ll_context_free(ctx)
        model, self._model = self._model, None
        if model is not None:
            lib.ll_model_free(model)
        self._keep = []
        # the last references: the memory is unmapped now
        self._weights = self._packed_copy = None
        if self._owns_reader and getattr(self, "reader", None) is not None:
            self.reader.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
