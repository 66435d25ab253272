"""The C boundary: ISA selection, the thread pool, matmul's checks and its
independence from the thread count."""
import os
import subprocess
import sys

import numpy as np
import pytest

from llamalite import UnsupportedModelError, quants
from llamalite._native import ffi, get_isa, isa_available, last_error, lib, set_isa
from llamalite.threads import get_pool, physical_cores


@pytest.fixture
def restore_isa():
    before = get_isa()
    yield
    set_isa(before)


def test_scalar_is_always_available(restore_isa):
    assert isa_available("scalar")
    assert set_isa("scalar") == "scalar"


def test_default_isa_is_the_best_available(restore_isa):
    best = next(isa for isa in ("avx512", "avxvnni", "avx2", "neon", "scalar") if isa_available(isa))
    assert set_isa(None) == best


def test_unknown_isa_is_a_clear_error(restore_isa):
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
        set_isa("sse9")


def test_unavailable_isa_is_a_clear_error(restore_isa):
    missing = "neon" if isa_available("avx2") else "avx2"
    with pytest.raises(UnsupportedModelError, match=f"'{missing}' is not available"):
        set_isa(missing)


def _run_with_isa(isa):
    env = dict(os.environ, LLAMALITE_ISA=isa)
    code = "from llamalite import _native; print(_native.get_isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_llamalite_isa_env_forces_scalar():
    r = _run_with_isa("scalar")
    assert r.returncode == 0 and r.stdout.strip() == "scalar"


@pytest.mark.parametrize("isa", ["avx2", "avxvnni", "avx512", "neon"])
def test_llamalite_isa_env_forces_a_simd_isa(isa):
    if not isa_available(isa):
        pytest.skip(f"{isa} not available here")
    r = _run_with_isa(isa)
    assert r.returncode == 0 and r.stdout.strip() == isa


def test_llamalite_isa_env_rejects_unavailable_choice():
    missing = "neon" if isa_available("avx2") else "avx2"
    r = _run_with_isa(missing)
    assert r.returncode != 0
    assert f"LLAMALITE_ISA={missing}" in r.stderr and "not available" in r.stderr


def test_pool_sizes():
    assert physical_cores() >= 1
    assert lib.ll_pool_size(get_pool(3)) == 3
    assert get_pool(3) is get_pool(3)
    assert lib.ll_pool_size(get_pool(None)) == physical_cores()


def test_pool_rejects_absurd_sizes():
    assert lib.ll_pool_new(5000) == ffi.NULL
    with pytest.raises(ValueError, match="n_threads"):
        get_pool(5000)


@pytest.mark.parametrize("wtype", ["F32", "F16", "BF16", "Q8_0"])
@pytest.mark.parametrize("n", [1, 3, 17])
def test_matmul_matches_numpy_and_ignores_thread_count(wtype, n):
    rng = np.random.default_rng(n)
    w = rng.standard_normal((67, 96)).astype(np.float32)
    x = rng.standard_normal((n, 96)).astype(np.float32)
    raw = quants.quantize(w, wtype)
    wd = quants.dequantize(raw, wtype, w.shape).astype(np.float64)
    y1 = quants.matmul(raw, wtype, x, n_threads=1)
    ref = x.astype(np.float64) @ wd.T
    # float32 activations are exact for the float types; Q8_0 quantizes them
    tol = 1e-4 if wtype != "Q8_0" else 0.05
    assert np.allclose(y1, ref, rtol=tol, atol=tol * np.abs(ref).max())
    for t in (2, 3, 4):
        assert np.array_equal(quants.matmul(raw, wtype, x, n_threads=t), y1)


@pytest.mark.parametrize("wtype, packed", [("Q8_0", False), ("Q5_0", True), ("Q4_K", True)])
@pytest.mark.parametrize("n", [1, 6])
def test_matmul_in_many_claims_covers_every_row_once(wtype, packed, n):
    """Threads claim the weights in byte ranges as they go (matmul.c's
    dot_rows): over half a megabyte of weights, whose units (a row, or 8
    packed rows) straddle the ranges' ends, every output is computed, with
    the one-thread result's bits, whichever thread claims it."""
    rng = np.random.default_rng(7)
    rows, cols = 1208, 768
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    raw = quants.quantize(w, wtype)
    if packed:
        raw = quants.pack(raw, wtype)
    assert raw.nbytes > 500_000
    y1 = quants.matmul(raw, wtype, x, n_threads=1, rows=rows, packed=packed)
    ref = x.astype(np.float64) @ quants.dequantize(quants.quantize(w, wtype), wtype,
                                                   w.shape).astype(np.float64).T
    assert np.allclose(y1, ref, rtol=0.05, atol=0.05 * np.abs(ref).max())
    for t in (2, 3, 4):
        for _ in range(3):
            assert np.array_equal(quants.matmul(raw, wtype, x, n_threads=t, rows=rows,
                                                packed=packed), y1)


def test_matmul_single_row_returns_a_vector():
    w = np.eye(32, dtype=np.float32)
    x = np.arange(32, dtype=np.float32)
    y = quants.matmul(w.view(np.uint8), "F32", x)
    assert y.shape == (32,) and np.array_equal(y, x)


def test_matmul_checks_sizes():
    w = quants.quantize(np.ones((4, 64), np.float32), "Q8_0")
    with pytest.raises(ValueError, match="block size"):
        quants.matmul(w, "Q8_0", np.ones((1, 60), np.float32))
    with pytest.raises(ValueError, match="bytes"):
        quants.matmul(w[:, :-1], "Q8_0", np.ones((1, 64), np.float32))


def test_c_checks_buffer_lengths_it_is_given():
    """The C entry points refuse a buffer whose length does not match the count."""
    from llamalite._native import check, ptr
    x = np.ones(64, np.float32)
    out = np.empty(60, np.uint8)  # Q8_0 of 64 needs 68
    with pytest.raises(ValueError, match="holds 60 bytes"):
        check(lib.ll_quantize(int(quants.GGMLType.Q8_0), ptr(x, "float *"), 64, ptr(out), 60))
    w = np.empty(68, np.uint8)
    work = np.empty(1, np.uint8)
    y = np.empty(1, np.float32)
    with pytest.raises(ValueError, match="work buffer"):
        check(lib.ll_matmul(ffi.NULL, int(quants.GGMLType.Q8_0), 0, ptr(w), 68, 1, 64,
                            ptr(x, "float *"), 256, 1, ptr(y, "float *"), 4, ptr(work), 1))
    big = np.empty(128, np.uint8)
    with pytest.raises(ValueError, match="x holds 256 bytes; 2 rows of 64 need 512"):
        check(lib.ll_matmul(ffi.NULL, int(quants.GGMLType.Q8_0), 0, ptr(w), 68, 1, 64,
                            ptr(x, "float *"), 256, 2, ptr(y, "float *"), 4, ptr(big), 136))
    x2 = np.ones(128, np.float32)
    with pytest.raises(ValueError, match="y holds 4 bytes; 2 rows of 1 need 8"):
        check(lib.ll_matmul(ffi.NULL, int(quants.GGMLType.Q8_0), 0, ptr(w), 68, 1, 64,
                            ptr(x2, "float *"), 512, 2, ptr(y, "float *"), 4, ptr(big), 136))
    with pytest.raises(ValueError, match="overflow a 64-bit size"):
        check(lib.ll_matmul(ffi.NULL, int(quants.GGMLType.F32), 0, ptr(w), 68, 1, 2**62,
                            ptr(x, "float *"), 256, 1, ptr(y, "float *"), 4, ptr(work), 1))
    with pytest.raises(UnsupportedModelError):
        check(lib.ll_dequantize(5, ptr(w), 68, ptr(x, "float *"), 64))


def test_unsupported_types_are_named():
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS"):
        quants.quantize(np.ones((1, 256), np.float32), "IQ2_XXS")
    with pytest.raises(ValueError, match="unknown tensor type 'Q4_9'"):
        quants.as_type("Q4_9")


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avxvnni", "avx512", "neon"])
@pytest.mark.parametrize("act", ["Q8_0", "Q8_1"])
def test_activation_levels_saturate_for_vanishing_scales(isa, act, restore_isa):
    """Below ~3e-39 the inverse scale overflows: levels clamp to +-127 (the
    largest element) instead of an undefined float-to-int cast."""
    if not isa_available(isa):
        pytest.skip(f"{isa} not available here")
    from llamalite._native import check, ptr
    set_isa(isa)
    x = np.zeros(32, np.float32)
    x[3], x[7], x[9] = 2e-39, -2e-39, 1e-39
    out = np.empty(quants.row_bytes(act, 32), np.uint8)
    check(lib.ll_quantize_act(int(quants.as_type(act)), ptr(x, "float *"), 32, ptr(out), out.nbytes))
    qs = out[-32:].view(np.int8)
    assert qs[3] == 127 and qs[7] == -127 and qs[9] == 127
    assert np.count_nonzero(qs) == 3


_SHARED_POOL_SCRIPT = """
import os, sys, threading
import numpy as np
from llamalite import quants
w = quants.quantize(np.random.default_rng(0).standard_normal((512, 256), np.float32), "Q4_K")
x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
want = quants.matmul(w, "Q4_K", x, n_threads=2)
if sys.argv[1] == "threads":
    bad = []
    def work():
        for _ in range(300):
            if not np.array_equal(quants.matmul(w, "Q4_K", x, n_threads=2), want):
                bad.append(1)
    ts = [threading.Thread(target=work) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print("ok" if not bad else "mismatch")
else:
    pid = os.fork()
    if pid == 0:
        os._exit(0 if np.array_equal(quants.matmul(w, "Q4_K", x, n_threads=2), want) else 3)
    _, status = os.waitpid(pid, 0)
    print("ok" if status == 0 else f"child status {status}")
"""


@pytest.mark.parametrize("mode", ["threads", "fork"])
def test_pool_survives_concurrent_callers_and_fork(mode):
    """Python threads share one pool (they take turns), and a forked child,
    which inherits no worker threads, gets pools of its own: neither hangs."""
    r = subprocess.run([sys.executable, "-c", _SHARED_POOL_SCRIPT, mode],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


@pytest.mark.parametrize("qtype", sorted(t.name for t in quants.SUPPORTED))
def test_quantizers_are_defined_on_degenerate_blocks(qtype):
    """Vanishing scales (1/d overflows), infinities and NaNs: every quantizer
    returns (the sanitizer build in CI turns an undefined conversion into a
    failure), and a vanishing block decodes to finite values near zero."""
    n = 512
    rows = np.zeros((4, n), np.float32)
    rows[0, ::7] = 1e-38
    rows[0, 3] = -3e-39
    rows[1, 5] = np.inf
    rows[2, 9] = np.nan
    rows[3] = np.float32(1e-45) * np.arange(n)  # subnormals
    q = quants.quantize(rows, qtype)
    assert np.array_equal(q, quants.quantize(rows, qtype))
    back = quants.dequantize(q[[0, 3]], qtype, (2, n))
    assert np.isfinite(back).all() and np.abs(back).max() <= 1e-30


def test_matmul_python_errors_name_the_mistake():
    w = quants.quantize(np.ones((4, 64), np.float32), "Q8_0")
    with pytest.raises(ValueError, match="at least one column"):
        quants.matmul(w, "Q8_0", np.ones(0, np.float32))
    with pytest.raises(ValueError, match="weight rows hold 68 bytes.*x has 96 columns"):
        quants.matmul(w, "Q8_0", np.ones((1, 96), np.float32))
    for bad in (2.7, True):
        with pytest.raises(ValueError, match="not"):
            quants.quantize(np.ones(32, np.float32), bad)


def test_unaligned_tensor_bytes_are_read_correctly():
    """Data at an odd address (a GGUF file with alignment 1) gives the same numbers."""
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    raw = quants.quantize(w, "Q4_0")
    buf = np.empty(raw.nbytes + 1, np.uint8)
    odd = buf[1:].reshape(raw.shape)
    odd[:] = raw
    assert odd.ctypes.data % 2 == 1
    x = np.ones(64, np.float32)
    assert np.array_equal(quants.matmul(odd, "Q4_0", x), quants.matmul(raw, "Q4_0", x))
    assert np.array_equal(quants.dequantize(odd, "Q4_0", w.shape),
                          quants.dequantize(raw, "Q4_0", w.shape))


def _vocab(texts, scores=None):
    raw = b"".join(texts)
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.uint64)
    out = ffi.new("ll_vocab **")
    rc = lib.ll_vocab_new(raw, len(raw), ffi.cast("uint64_t *", ffi.from_buffer(offsets)),
                          ffi.NULL if scores is None else ffi.new("float[]", scores),
                          len(texts), out)
    return rc, ffi.gc(out[0], lib.ll_vocab_free) if rc == 0 else None


def test_vocab_finds_texts_by_their_bytes():
    texts = [b"", b"a", b"ab", b"\xe2\x96\x81", b"a\x00b"] + [b"t%d" % i for i in range(1000)]
    rc, v = _vocab(texts)
    assert rc == 0 and lib.ll_vocab_size(v) == len(texts)
    for i, t in enumerate(texts):
        assert lib.ll_vocab_find(v, t, len(t)) == i
    for missing in (b"b", b"abc", b"a\x00", b"t1000"):
        assert lib.ll_vocab_find(v, missing, len(missing)) == -1


def test_vocab_checks_what_it_is_given():
    rc, _ = _vocab([b"a", b"b", b"a"])
    assert rc == lib.LL_ERR_ARG and "2 duplicates 0" in last_error()
    out = ffi.new("ll_vocab **")
    bad = np.array([0, 5, 2], np.uint64)   # text 1 ends before it starts
    assert lib.ll_vocab_new(b"abcde", 5, ffi.cast("uint64_t *", ffi.from_buffer(bad)), ffi.NULL,
                            2, out) == lib.LL_ERR_ARG
    past = np.array([0, 2, 9], np.uint64)  # ends past the 5 bytes
    assert lib.ll_vocab_new(b"abcde", 5, ffi.cast("uint64_t *", ffi.from_buffer(past)),
                            ffi.NULL, 2, out) == lib.LL_ERR_ARG
    assert "outside the 5 bytes" in last_error()
    assert lib.ll_vocab_new(b"", 0, ffi.cast("uint64_t *", ffi.from_buffer(past)), ffi.NULL,
                            0, out) == lib.LL_ERR_ARG
    rc, v = _vocab([b"a", b"b"])
    byte_ids = ffi.new("int32_t[256]", [0] * 256)
    ids, n_out = ffi.new("int32_t[4]"), ffi.new("size_t *")
    assert lib.ll_vocab_spm(v, b"abab", 4, byte_ids, ids, 3, n_out) == lib.LL_ERR_ARG
    assert "room for 3 tokens" in last_error()
    byte_ids[7] = 2   # not in a vocabulary of 2
    assert lib.ll_vocab_spm(v, b"abab", 4, byte_ids, ids, 4, n_out) == lib.LL_ERR_ARG
    assert "byte 0x07 is 2" in last_error()


def test_string_array_reads_lengths_and_bounds():
    import struct
    blob = b"".join(struct.pack("<Q", len(t)) + t for t in (b"ab", b"", b"\xc3\xbc"))
    end = ffi.new("size_t *")
    assert lib.ll_string_array(blob, len(blob), 0, 3, end, ffi.NULL, 0) == 0
    assert end[0] == len(blob)
    joined = bytearray(end[0] - 7 * 3)
    assert lib.ll_string_array(blob, len(blob), 0, 3, end, ffi.from_buffer(joined),
                               len(joined)) == 0
    assert bytes(joined) == b"\x00ab\x00\x00\xc3\xbc"
    assert lib.ll_string_array(blob, len(blob) - 1, 0, 3, end, ffi.NULL, 0) == lib.LL_ERR_ARG
    assert "string 2 runs past the end" in last_error()
    assert lib.ll_string_array(blob, len(blob), 0, 4, end, ffi.NULL, 0) == lib.LL_ERR_ARG
    assert "string 3's length" in last_error()
    assert lib.ll_string_array(blob, len(blob), 0, 3, end, ffi.from_buffer(joined),
                               len(joined) - 1) == lib.LL_ERR_ARG


def test_the_compiled_declarations_match_the_header():
    """The build's _ffi.py (what `import llamalite` loads) declares what
    llamalite.h declares."""
    import cffi
    from llamalite import _native
    from llamalite._cdef import cdef_source
    compiled = _native._compiled_ffi(_native._library)
    if compiled is None:
        pytest.skip("this build has no _ffi.py beside its library (cmake without cffi)")
    parsed = cffi.FFI()
    parsed.cdef(cdef_source(_native._header_text(_native._library)))
    ours, theirs = compiled.dlopen(_native._library), parsed.dlopen(_native._library)
    assert sorted(dir(ours)) == sorted(dir(theirs))
    for name in dir(theirs):
        value = getattr(theirs, name)
        if isinstance(value, int):
            assert getattr(ours, name) == value, name
        else:   # (the compiled one spells opaque typedefs "struct ll_context")
            assert compiled.typeof(getattr(ours, name)).cname.replace("struct ", "") == \
                parsed.typeof(value).cname.replace("struct ", ""), name
