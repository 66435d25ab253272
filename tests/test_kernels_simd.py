"""SIMD kernels (every ISA this CPU runs besides scalar) against the scalar
reference, and against an independent float64 numpy model of each dot product.

- activation quantizers: the same bytes as the scalar ones;
- dot products: within 1e-6 of the scalar result, relative to the sum of the
  magnitudes of the terms the dot adds up (float order differs, integers don't);
- dequantizers: the same bits as the scalar ones;
- matmul: SIMD against scalar for n = 1, 5 and 9, and the same bits for 1 or 2
  threads, and for a row alone or in a batch (batches use the 4-row kernels);
- packed weights: the same products as rows, and the same bits on every ISA
  (scalar included), thread count and batch size.
"""
from __future__ import annotations

import gguf.quants
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamalite import _native
from llamalite.errors import UnsupportedModelError
from llamalite.quants import (SUPPORTED, TYPE_INFO, GGMLType as T, matmul, pack, pack_preferred,
                              row_bytes)

ffi, lib = _native.ffi, _native.lib

SIMD_ISAS = [isa for isa in ("avx2", "avxvnni", "avx512", "neon") if _native.isa_available(isa)]

ACT_TYPE = {T.F32: T.F32, T.F16: T.F32, T.BF16: T.F32,
            T.Q4_0: T.Q8_0, T.Q5_0: T.Q8_0, T.Q8_0: T.Q8_0, T.IQ4_NL: T.Q8_0,
            T.Q4_1: T.Q8_1, T.Q5_1: T.Q8_1,
            T.Q2_K: T.Q8_K, T.Q3_K: T.Q8_K, T.Q4_K: T.Q8_K, T.Q5_K: T.Q8_K,
            T.Q6_K: T.Q8_K, T.IQ4_XS: T.Q8_K}
WEIGHT_TYPES = sorted(ACT_TYPE, key=int)
QUANT_ACT_TYPES = [T.Q8_0, T.Q8_1, T.Q8_K]

# byte offsets of each block's float16 scale fields; the second one of the
# types with a min is the min's scale (dmin, or m for Q4_1 / Q5_1)
SCALE_FIELDS = {T.Q4_0: (0,), T.Q5_0: (0,), T.Q8_0: (0,), T.IQ4_NL: (0,), T.IQ4_XS: (0,),
                T.Q4_1: (0, 2), T.Q5_1: (0, 2), T.Q4_K: (0, 2), T.Q5_K: (0, 2),
                T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q6_K: (208,)}

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=SIMD_ISAS)
def isa(request):
    """A SIMD ISA's name; the ISA in use before the test is restored after it."""
    before = _native.get_isa()
    yield request.param
    _native.set_isa(before)


# ---- calling the C kernels ----------------------------------------------------

def quantize_act(t: T, x: np.ndarray) -> np.ndarray:
    out = np.zeros(row_bytes(t, x.size), dtype=np.uint8)
    _native.check(lib.ll_quantize_act(int(t), _native.ptr(x, "float *"), x.size,
                                      _native.ptr(out), out.nbytes))
    return out


def vec_dot(wt: T, n: int, w: np.ndarray, act: np.ndarray) -> float:
    out = ffi.new("float *")
    _native.check(lib.ll_vec_dot(int(wt), n, _native.ptr(w), w.nbytes, _native.ptr(act), act.nbytes, out))
    return out[0]


def to_float(t: T, raw: np.ndarray, n: int) -> np.ndarray:
    """The current ISA's dequantizer."""
    out = np.empty(n, dtype=np.float32)
    _native.check(lib.ll_to_float(int(t), _native.ptr(raw), raw.nbytes, _native.ptr(out, "float *"), n))
    return out


def on(isa_name: str, fn, *args):
    _native.set_isa(isa_name)
    return fn(*args)


# ---- inputs ---------------------------------------------------------------------

SCALES = [0.0, 1e-40, 1e-30, 1e-6, 1e-2, 1.0, 127.0, 1e4, 1e6, 1e20, 3e38]


@st.composite
def float_rows(draw, block: int, max_blocks: int, scales=SCALES, spike=1e4):
    """A float32 row of whole blocks: normal or uniform values at one of many
    scales, optional zero blocks, spikes, and rows of exact .5 ties."""
    n = draw(st.integers(1, max_blocks)) * block
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from(scales))
    kind = draw(st.sampled_from(["normal", "uniform", "spiky", "ties"]))
    if kind == "ties":
        # amax 127 makes the quantizers' scale exactly 1: every value is a tie
        # or one float below a tie (0.49999997 must round to 0, not 1)
        x = (rng.integers(-127, 127, n) + 0.5).astype(np.float32)
        near = rng.random(n) < 0.3
        x[near] = np.nextafter(x[near], np.float32(0))
        x[rng.random(n) < 0.1] = np.nextafter(np.float32(0.5), np.float32(0)) * rng.choice([-1, 1])
        x[::block] = rng.choice([-127.0, 127.0], n // block)
    elif kind == "uniform":
        x = rng.uniform(-1, 1, n)
    else:
        x = rng.standard_normal(n)
        if kind == "spiky":
            x[rng.integers(0, n, max(1, n // 64))] *= spike
        x *= scale
    with np.errstate(over="ignore"):  # the largest scales overflow to inf on purpose
        x = x.astype(np.float32)
    if draw(st.booleans()):
        x.reshape(-1, block)[rng.random(n // block) < 0.3] = 0.0
    return x


def random_halves(rng, k: int) -> np.ndarray:
    """Finite float16 scales of either sign over several decades."""
    mag = 10.0 ** rng.uniform(-5, 1, k)
    return (rng.choice([-1.0, 1.0], k) * mag).astype(np.float16)


def random_weights(t: T, n: int, rng) -> np.ndarray:
    """A weight row of n elements: random quants, finite random scales."""
    if t == T.F32:
        return (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32).view(np.uint8)
    if t == T.F16:
        return (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float16).view(np.uint8)
    if t == T.BF16:
        f = (rng.standard_normal(n) * 10.0 ** rng.uniform(-20, 20)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    bs, ts = TYPE_INFO[t]
    blocks = rng.integers(0, 256, (n // bs, ts), dtype=np.uint8)
    for off in SCALE_FIELDS[t]:
        blocks[:, off:off + 2] = random_halves(rng, n // bs).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(-1)


# ---- the float64 model of a dot product ------------------------------------------

def decode_act(at: T, act: np.ndarray):
    """(values, per-block s) of an activation row; s only for Q8_1."""
    if at == T.F32:
        return act.view(np.float32).astype(np.float64), None
    blocks = act.reshape(-1, TYPE_INFO[at].type_size)
    if at == T.Q8_K:
        d = blocks[:, :4].copy().view(np.float32).astype(np.float64)
        qs = blocks[:, 4:4 + 256].view(np.int8)
        return (d * qs).reshape(-1), None
    d = blocks[:, :2].copy().view(np.float16).astype(np.float64)
    qs = blocks[:, -32:].view(np.int8)
    s = blocks[:, 2:4].copy().view(np.float16).astype(np.float64).reshape(-1) if at == T.Q8_1 else None
    return (d * qs).reshape(-1), s


def split_weights(wt: T, w: np.ndarray, n: int):
    """The dequantized row as (scale part, min part), each found by
    dequantizing with the other's float16 scale zeroed."""
    def dequantized(zero_at=None):
        b = w.reshape(-1, TYPE_INFO[wt].type_size).copy()
        if zero_at is not None:
            b[:, zero_at:zero_at + 2] = 0
        return gguf.quants.dequantize(b.reshape(-1), wt).astype(np.float64).reshape(-1)

    fields = SCALE_FIELDS.get(wt, ())
    if len(fields) < 2:
        return dequantized(), np.zeros(n)
    d_at, m_at = fields
    return dequantized(zero_at=m_at), dequantized(zero_at=d_at)


def model_dot(wt: T, w: np.ndarray, act: np.ndarray, n: int):
    """(exact value, scale): the dot as the kernels define it, in float64, and
    the sum of the magnitudes of its terms (the tolerance's yardstick)."""
    a, s = decode_act(ACT_TYPE[wt], act)
    wd, wm = split_weights(wt, w, n)
    value = np.dot(wd, a)
    scale = np.abs(wd * a).sum()
    if s is not None:  # Q8_1: the min meets the stored block sum s = d * sum(qs)
        m = wm.reshape(-1, 32)[:, 0]
        value += np.dot(m, s)
        scale += np.abs(m * s).sum()
    else:
        value += np.dot(wm, a)
        scale += np.abs(wm * a).sum()
    return value, scale


def close(got: float, want: float, scale: float, rel: float = 1e-6) -> bool:
    return abs(float(got) - float(want)) <= rel * scale


# ---- activation quantizers ------------------------------------------------------

@pytest.mark.parametrize("at", QUANT_ACT_TYPES, ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_quantize_act_matches_scalar(isa, at, data):
    x = data.draw(float_rows(TYPE_INFO[at].block_size, 12))
    want = on("scalar", quantize_act, at, x)
    got = on(isa, quantize_act, at, x)
    np.testing.assert_array_equal(got, want)


def q8_model(at: T, x: np.ndarray) -> np.ndarray:
    """ggml's reference activation quantizers in numpy (finite inputs)."""
    bs = TYPE_INFO[at].block_size
    xb = x.reshape(-1, bs)
    out = []
    for v in xb:
        if at == T.Q8_K:
            i = int(np.argmax(np.abs(v)))
            if v[i] == 0:
                out.append(np.zeros(TYPE_INFO[at].type_size, np.uint8))
                continue
            iscale = np.float32(-127.0) / v[i]
            q = np.minimum(np.rint((iscale * v).astype(np.float64)), 127).astype(np.int8)
            bsums = q.reshape(16, 16).astype(np.int16).sum(axis=1).astype(np.int16)
            out.append(np.concatenate([(np.float32(1) / iscale).reshape(1).view(np.uint8),
                                       q.view(np.uint8), bsums.view(np.uint8)]))
            continue
        d = np.abs(v).max() / np.float32(127)
        idv = np.float32(1) / d if d else np.float32(0)
        p = (v * idv).astype(np.float64)
        q = (np.sign(p) * np.floor(np.abs(p) + 0.5)).astype(np.int8)  # roundf: halves away from 0
        with np.errstate(over="ignore"):  # half overflows to inf, as in the C code
            head = [np.float16(d).reshape(1).view(np.uint8)]
            if at == T.Q8_1:
                s = np.float32(int(q.astype(np.int32).sum())) * d
                head.append(np.float16(s).reshape(1).view(np.uint8))
        out.append(np.concatenate(head + [q.view(np.uint8)]))
    return np.concatenate(out)


@pytest.mark.parametrize("at", QUANT_ACT_TYPES, ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_quantize_act_matches_numpy_model(isa, at, data):
    # scales whose reciprocals and float16 conversions stay finite
    x = data.draw(float_rows(TYPE_INFO[at].block_size, 8, scales=[0.0, 1e-30, 1e-6, 1.0, 127.0, 1e4, 1e6]))
    np.testing.assert_array_equal(on(isa, quantize_act, at, x), q8_model(at, x))


# ---- dot products ------------------------------------------------------------------

# activations whose float16 block scales (and Q8_1's block sums d * sum(qs))
# stay finite; 1e-4 gives subnormal ones
DOT_SCALES = [0.0, 1e-4, 1e-2, 1.0, 10.0]


def dot_case(data, wt: T):
    bs = TYPE_INFO[wt].block_size
    block = TYPE_INFO[ACT_TYPE[wt]].block_size if bs == 1 else bs
    x = data.draw(float_rows(block, 8 if bs == 256 else 24, scales=DOT_SCALES, spike=30.0))
    if bs == 1:  # float rows need not be whole blocks of 32
        x = x[:data.draw(st.integers(1, x.size))].copy()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return x, random_weights(wt, x.size, rng)


@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_vec_dot_matches_scalar(isa, wt, data):
    x, w = dot_case(data, wt)
    act = on("scalar", quantize_act, ACT_TYPE[wt], x)
    want = on("scalar", vec_dot, wt, x.size, w, act)
    got = on(isa, vec_dot, wt, x.size, w, act)
    _, scale = model_dot(wt, w, act, x.size)
    assert close(got, want, scale), (got, want, scale)


@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_vec_dot_matches_float64_model(isa, wt, data):
    x, w = dot_case(data, wt)
    act = on(isa, quantize_act, ACT_TYPE[wt], x)
    got = on(isa, vec_dot, wt, x.size, w, act)
    want, scale = model_dot(wt, w, act, x.size)
    assert close(got, want, scale), (got, want, scale)


# ---- dequantizers --------------------------------------------------------------------

@pytest.mark.parametrize("t", sorted(SUPPORTED, key=int), ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_dequantize_matches_scalar(isa, t, data):
    """Any bytes at all, NaN and infinite scales included: the same bits."""
    bs, ts = TYPE_INFO[t]
    nb = data.draw(st.integers(1, 8 if bs == 256 else 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    raw = rng.integers(0, 256, nb * ts, dtype=np.uint8)
    want = on("scalar", to_float, t, raw, nb * bs)
    got = on(isa, to_float, t, raw, nb * bs)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("t", sorted(SUPPORTED, key=int), ids=lambda t: t.name)
@SETTINGS
@given(data=st.data())
def test_dequantize_matches_gguf(isa, t, data):
    bs = TYPE_INFO[t].block_size
    n = data.draw(st.integers(1, 8 if bs == 256 else 40)) * (bs if bs > 1 else 8)
    raw = random_weights(t, n, np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))))
    want = gguf.quants.dequantize(raw, t).reshape(-1)
    np.testing.assert_allclose(on(isa, to_float, t, raw, n), want, rtol=1e-6, atol=0)


# ---- matmul --------------------------------------------------------------------------

@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 5, 9])
@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_matmul_matches_scalar_and_thread_count(isa, wt, n, data):
    bs = TYPE_INFO[wt].block_size
    block = 32 if bs == 1 else bs
    cols = data.draw(st.integers(1, 4 if bs == 256 else 12)) * block
    rows = data.draw(st.integers(2, 9))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = np.stack([random_weights(wt, cols, rng) for _ in range(rows)])
    x = (rng.standard_normal((n, cols)) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)

    want = on("scalar", matmul, w, wt, x, 1)
    got = on(isa, matmul, w, wt, x, 1)
    assert np.array_equal(on(isa, matmul, w, wt, x, 2), got)
    for j in range(n):
        assert np.array_equal(on(isa, matmul, w, wt, x[j:j + 1], 1)[0], got[j]), j
        act = on(isa, quantize_act, ACT_TYPE[wt], x[j]) if ACT_TYPE[wt] != T.F32 else x[j].view(np.uint8)
        for r in range(rows):
            _, scale = model_dot(wt, w[r], act, cols)
            assert close(got[j, r], want[j, r], scale), (j, r, got[j, r], want[j, r], scale)


# ---- packed weights ----------------------------------------------------------------------

PACKED_TYPES = [T.Q4_1, T.Q5_0, T.Q4_K]
ALL_ISAS = ["scalar"] + SIMD_ISAS


@pytest.mark.parametrize("wt", PACKED_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("packed_isa", ALL_ISAS)
@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_packed_matmul_matches_rows_with_the_same_bits_everywhere(packed_isa, wt, data):
    """Packed weights give what the same weights in rows give (float order
    differs), and the same bits on every ISA, for any thread count, and for a
    row of X alone or in a batch of any size."""
    before = _native.get_isa()
    bs = TYPE_INFO[wt].block_size
    cols = data.draw(st.integers(1, 12)) * bs
    rows = 8 * data.draw(st.integers(1, 4))
    n = data.draw(st.integers(1, 9))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = np.stack([random_weights(wt, cols, rng) for _ in range(rows)])
    x = (rng.standard_normal((n, cols)) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
    p = pack(w, wt)
    try:
        got = on(packed_isa, matmul, p, wt, x, 1, None, True)
        want = on(packed_isa, matmul, w, wt, x, 1)
        assert np.array_equal(on("scalar", matmul, p, wt, x, 1, None, True), got)
        assert np.array_equal(on(packed_isa, matmul, p, wt, x, 2, None, True), got)
        for j in range(n):
            alone = on(packed_isa, matmul, p, wt, x[j:j + 1], 1, None, True)[0]
            assert np.array_equal(alone, got[j]), j
            act = on(packed_isa, quantize_act, ACT_TYPE[wt], x[j])
            for r in range(rows):
                _, scale = model_dot(wt, w[r], act, cols)
                assert close(got[j, r], want[j, r], scale), (j, r, got[j, r], want[j, r])
    finally:
        _native.set_isa(before)


@pytest.mark.parametrize("at", ["LL_TYPE_Q8_0P", "LL_TYPE_Q8_1P"])
@SETTINGS
@given(data=st.data())
def test_packed_activation_quantizers_match_scalar(isa, at, data):
    """The packed kernels' activation types (not GGUF types: sized by the C
    table) come out of each ISA's quantizer byte for byte as the scalar one's."""
    at = getattr(lib, at)
    bs, ts, vdt = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("int *")
    _native.check(lib.ll_type_info(at, bs, ts, vdt))
    x = data.draw(float_rows(bs[0], 12))

    def quantize(isa_name):
        _native.set_isa(isa_name)
        out = np.zeros(x.size // bs[0] * ts[0], dtype=np.uint8)
        _native.check(lib.ll_quantize_act(at, _native.ptr(x, "float *"), x.size,
                                          _native.ptr(out), out.nbytes))
        return out
    np.testing.assert_array_equal(quantize(isa), quantize("scalar"))


def test_packing_is_offered_where_a_kernel_is_faster_and_refused_where_it_cannot_be():
    before = _native.get_isa()
    try:
        _native.set_isa("scalar")
        assert not pack_preferred(T.Q5_0, 16, 64)        # the scalar kernels gain nothing
        for isa in ("avx2", "avxvnni", "avx512"):
            if isa in SIMD_ISAS:
                _native.set_isa(isa)
                assert pack_preferred(T.Q5_0, 16, 64)
                assert not pack_preferred(T.Q5_0, 12, 64)    # not whole groups of 8
                assert not pack_preferred(T.Q5_0, 16, 48)    # not whole blocks
                assert not pack_preferred(T.Q8_K, 16, 256)   # no packed form
    finally:
        _native.set_isa(before)
    w = np.zeros((12, row_bytes(T.Q5_0, 64)), np.uint8)
    with pytest.raises(ValueError, match="groups of 8, got 12 rows"):
        pack(w, T.Q5_0)
    with pytest.raises(ValueError, match="do not split into 8 rows"):
        pack(w.reshape(-1)[:100], T.Q5_0, rows=8)
    with pytest.raises(UnsupportedModelError, match="no packed layout"):
        pack(np.zeros((8, 34), np.uint8), T.Q8_0)
    with pytest.raises(ValueError, match="groups of 8 rows, not 12"):
        matmul(w, T.Q5_0, np.ones((1, 64), np.float32), packed=True)
    bad = np.zeros(8 * 44 + 8, np.uint8)
    assert lib.ll_pack(int(T.Q5_0), _native.ptr(bad), bad.nbytes, 8, 64) == lib.LL_ERR_ARG
    assert "bytes given for 8 x 64 Q5_0" in _native.last_error()
    assert lib.ll_pack(int(T.Q5_0), _native.ptr(bad), 0, 8, 0) == lib.LL_ERR_ARG
    assert "at least one block, got 0 columns" in _native.last_error()
    assert lib.ll_pack(int(T.Q5_0), _native.ptr(bad), bad.nbytes, 8, 40) == lib.LL_ERR_ARG
    assert "not a multiple of Q5_0's block size" in _native.last_error()


def test_packed_rows_are_the_same_weights_rearranged():
    """Unpacking by the layout llamalite.h describes gives back every row."""
    rng = np.random.default_rng(5)
    w = np.stack([random_weights(T.Q5_0, 96, rng) for _ in range(16)])
    p = pack(w, T.Q5_0).reshape(2, 3, 176)            # groups, blocks, packed block
    rows = w.reshape(2, 8, 3, 22)                     # groups, rows, blocks, Q5_0 block
    for g in range(2):
        for b in range(3):
            blk = p[g, b]
            d, qh, qs = blk[:16].view(np.uint16), blk[16:48], blk[48:].reshape(4, 32)
            for r in range(8):
                orig = rows[g, r, b]
                assert d[r] == orig[:2].view(np.uint16)[0]
                for j in range(4):
                    assert np.array_equal(qs[j, 4 * r:4 * r + 4], orig[6 + 4 * j:10 + 4 * j])
                bits = int.from_bytes(orig[2:6].tobytes(), "little")
                for e in range(32):
                    assert (qh[4 * r + e % 4] >> (e // 4)) & 1 == (bits >> e) & 1


# ---- the feed-forward's gated activations --------------------------------------------------

def glu(activation: int, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    out = gate.copy()
    _native.check(lib.ll_glu(activation, _native.ptr(out, "float *"), _native.ptr(up, "float *"),
                             out.size))
    return out


def glu_model(activation: int, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    x = gate.astype(np.float64)
    if activation == lib.LL_ACT_SILU:
        with np.errstate(over="ignore"):   # e^-x is inf for x < -709: the limit, 0, is right
            act = x / (1 + np.exp(-x))
    else:
        act = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return act * up


@pytest.mark.parametrize("activation", ["LL_ACT_SILU", "LL_ACT_GELU_TANH"])
@pytest.mark.parametrize("glu_isa", ALL_ISAS)
@SETTINGS
@given(data=st.data())
def test_gated_activations_match_float64(glu_isa, activation, data):
    act = getattr(lib, activation)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(0, 40))
    gate = (rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 2, n)).astype(np.float32)
    gate[rng.random(n) < 0.1] = rng.choice([0.0, -0.0, 88.0, -88.0, 1e4, -1e4, 200.0, -200.0])
    up = rng.standard_normal(n).astype(np.float32)
    before = _native.get_isa()
    try:
        got = on(glu_isa, glu, act, gate, up)
    finally:
        _native.set_isa(before)
    want = glu_model(act, gate, up)
    # a few ulp of the result, or of |x * up| where the activation nearly cancels
    tol = 4e-7 * np.abs(want) + 1e-7 * np.abs(gate.astype(np.float64) * up) + 1e-37
    assert np.all(np.abs(got - want) <= tol), (gate, got, want)


def test_a_gated_activation_refuses_bad_arguments():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="unknown activation 7"):
        _native.check(lib.ll_glu(7, _native.ptr(x, "float *"), _native.ptr(x, "float *"), 4))
    with pytest.raises(ValueError, match="needs both rows"):
        _native.check(lib.ll_glu(0, ffi.NULL, ffi.NULL, 4))
