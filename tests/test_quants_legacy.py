"""The legacy formats (Q4_0 .. Q8_1) and IQ4_NL / IQ4_XS: the scalar reference
in csrc/quants.c checked against llama.cpp.

- bytes: equal to the gguf package's quantizers (random rows, scales from 1e-30
  to 1e30, zero blocks) and to llama.cpp's own output for fixed rows
  (tests/data/llamacpp_quant_iq4.npz; its .md says how it was made);
- dequantize: equal to the gguf package's on arbitrary block bytes;
- quantize -> dequantize error and dot error within the budgets of llama.cpp's
  tests/test-quantize-fns.cpp, on its synthetic data;
- the scalar dot: within 2% of the float64 dot of the float inputs, and equal
  up to float32 rounding to float64 arithmetic on the decoded blocks;
- matmul: against numpy, and the same bits for 1 and 2 threads.

Everything runs on the scalar kernels (selected for this module).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from llamalite import quants
from llamalite._native import check, ffi, lib, ptr
from llamalite.quants import GGMLType

FIXTURE = Path(__file__).parent / "data" / "llamacpp_quant_iq4.npz"

GGUF_QUANTIZES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
WEIGHT_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS"]
#: the activation type each weight type's dot takes, as llama.cpp pairs them
ACT_TYPE = {"Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "IQ4_NL": "Q8_0",
            "Q4_1": "Q8_1", "Q5_1": "Q8_1", "IQ4_XS": "Q8_K", "F16": "F32", "BF16": "F32"}
#: weight types whose blocks carry a min m after d (x = d * q + m)
WITH_MIN = {"Q4_1", "Q5_1"}

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("scalar_kernels")


def block_size(t: str) -> int:
    return quants.TYPE_INFO[GGMLType[t]].block_size


def type_size(t: str) -> int:
    return quants.TYPE_INFO[GGMLType[t]].type_size


# ---- inputs ----------------------------------------------------------------------


def noise(rng: np.random.Generator, kind: str, shape) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, shape)
    if kind == "positive":  # one-signed: the min formats' offset does the work
        return rng.uniform(0.5, 1.0, shape)
    if kind == "outliers":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.03] *= 50.0
        return x
    if kind == "steps":  # a coarse grid: many equal values and exact ties
        return np.round(rng.standard_normal(shape) * 4) / 4
    raise ValueError(kind)


@st.composite
def float_rows(draw, unit: int, max_elems: int = 1024, exp_range=(-30, 30), arbitrary=True):
    """float32 rows (1 to 3), a whole number of `unit`s long: seeded noise of a
    few shapes with each 32-group at its own power of ten within exp_range and
    some groups zero, or (when `arbitrary`) any floats with |x| in
    [10^lo, 10^hi] or 0. No NaN, no inf."""
    unit = max(unit, 32)
    n = unit * draw(st.integers(1, max(1, max_elems // unit)))
    rows = draw(st.integers(1, 3))
    lo, hi = exp_range
    if arbitrary and draw(st.booleans()):
        mag = st.floats(float(np.float32(10.0 ** lo)), float(np.float32(10.0 ** hi)), width=32)
        elem = st.one_of(st.just(0.0), mag, mag.map(lambda v: -v))
        return draw(hnp.arrays(np.float32, (rows, n), elements=elem))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "uniform", "positive", "outliers", "steps"]))
    e0 = draw(st.integers(lo, hi))
    e1 = draw(st.integers(e0, hi))
    groups = noise(rng, kind, (rows, n // 32, 32))
    groups *= 10.0 ** rng.uniform(e0, e1, (rows, n // 32, 1))
    groups[rng.random((rows, n // 32)) < draw(st.sampled_from([0.0, 0.25]))] = 0.0
    return np.clip(groups.reshape(rows, n), -(10.0 ** hi), 10.0 ** hi).astype(np.float32)


def gguf_quantize(x: np.ndarray, t: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = gguf_quants.quantize(x, GGMLQuantizationType[t])
    return np.ascontiguousarray(out).view(np.uint8)


def gguf_dequantize(raw: np.ndarray, t: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        return gguf_quants.dequantize(raw, GGMLQuantizationType[t])


# ---- the C entry points not wrapped by llamalite.quants -------------------------------


def c_quantize(x: np.ndarray, t: str) -> np.ndarray:
    """The reference quantizer of any type the C table has (Q8_1 included)."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.empty(x.size // block_size(t) * type_size(t), np.uint8)
    check(lib.ll_quantize(int(GGMLType[t]), ptr(x, "float *"), x.size, ptr(out), out.nbytes))
    return out


def quantize_act(x: np.ndarray, t: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.empty(x.size // block_size(t) * type_size(t), np.uint8)
    check(lib.ll_quantize_act(int(GGMLType[t]), ptr(x, "float *"), x.size, ptr(out), out.nbytes))
    return out


def vec_dot(wtype: str, w: np.ndarray, xq: np.ndarray, n: int) -> float:
    out = ffi.new("float *")
    check(lib.ll_vec_dot(int(GGMLType[wtype]), n, ptr(w), w.nbytes, ptr(xq), xq.nbytes, out))
    return out[0]


# ---- Q8_K, built here (its C quantizer belongs to the k-quant work) --------------------

Q8_K_BLOCK = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
assert Q8_K_BLOCK.itemsize == 292


def q8_k(x: np.ndarray) -> np.ndarray:
    """llama.cpp's quantize_row_q8_K_ref in numpy: per 256-block, the value of
    largest magnitude m maps to -127, q = round-half-even(-127/m * x) capped at
    127, d = 1 / (-127/m); an all-zero block is all zero."""
    b = np.asarray(x, np.float32).reshape(-1, 256)
    out = np.zeros(len(b), Q8_K_BLOCK)
    m = b[np.arange(len(b)), np.abs(b).argmax(axis=1)]
    nz = m != 0
    iscale = np.float32(-127) / m[nz]
    q = np.minimum(127, np.rint(iscale[:, None] * b[nz])).astype(np.int8)
    out["qs"][nz] = q
    out["d"][nz] = np.float32(1) / iscale
    out["bsums"][nz] = q.reshape(-1, 16, 16).sum(axis=-1, dtype=np.int16)
    return out.view(np.uint8)


def activation(x: np.ndarray, t: str) -> np.ndarray:
    return q8_k(x) if t == "Q8_K" else quantize_act(x, t)


# ---- decoding blocks in numpy -------------------------------------------------------------


def half_field(raw: np.ndarray, t: str, offset: int) -> np.ndarray:
    """The float16 at byte `offset` of every block, as float64."""
    blocks = raw.reshape(-1, type_size(t))
    return blocks[:, offset:offset + 2].copy().view(np.float16).astype(np.float64).ravel()


def decode_act(xq: np.ndarray, t: str) -> np.ndarray:
    """Dequantized activation values, float64 (exact: half * int8 fits a float32)."""
    if t == "Q8_K":
        b = xq.view(Q8_K_BLOCK)
        return (b["d"].astype(np.float64)[:, None] * b["qs"]).ravel()
    if t == "Q8_1":
        qs = xq.reshape(-1, 36)[:, 4:].view(np.int8)
        return (half_field(xq, t, 0)[:, None] * qs).ravel()
    return quants.dequantize(xq, t, (xq.size // type_size(t) * block_size(t),)).astype(np.float64)


def exact_dot(wtype: str, w: np.ndarray, xq: np.ndarray, n: int) -> tuple[float, float]:
    """(the dot of the decoded blocks in float64, the sum of magnitudes its
    float32 evaluation rounds against). For Q4_1/Q5_1 the min term is m * s
    with the activation block's stored s = d * sum(q), as the format defines."""
    act = ACT_TYPE[wtype]
    w_deq = quants.dequantize(w, wtype, (n,)).astype(np.float64)
    x_deq = decode_act(xq, act)
    ref = float(np.dot(w_deq, x_deq))
    scale = float(np.abs(w_deq) @ np.abs(x_deq))
    if wtype in WITH_MIN:
        m = half_field(w, wtype, 2)
        s = half_field(xq, act, 2)
        dq_sums = x_deq.reshape(-1, 32).sum(axis=1)
        ref += float(np.sum(m * (s - dq_sums)))
        scale += float(np.abs(m) @ np.abs(x_deq.reshape(-1, 32)).sum(axis=1) + np.abs(m) @ np.abs(s))
    return ref, scale


# ---- 1. bytes and values against the gguf package --------------------------------------------


@pytest.mark.parametrize("t", GGUF_QUANTIZES)
@SETTINGS
@given(data=st.data())
def test_quantize_matches_gguf(t, data):
    x = data.draw(float_rows(block_size(t)))
    ours = quants.quantize(x, t)
    np.testing.assert_array_equal(ours, gguf_quantize(x, t).reshape(ours.shape))


@pytest.mark.parametrize("t", GGUF_QUANTIZES + ["IQ4_NL", "IQ4_XS"])
@SETTINGS
@given(data=st.data())
def test_dequantize_matches_gguf_on_any_bytes(t, data):
    nblocks = data.draw(st.integers(1, 4 if block_size(t) == 256 else 32))
    nbytes = nblocks * type_size(t)
    raw = np.frombuffer(data.draw(st.binary(min_size=nbytes, max_size=nbytes)), np.uint8)
    ours = quants.dequantize(raw, t, (nblocks * block_size(t),))
    # NaN in the same places counts as equal
    np.testing.assert_array_equal(ours, gguf_dequantize(raw, t).ravel())


#: (most negative, most positive) value of a block whose scale comes out as
#: exactly 1, so that every half-integer in it is a rounding tie
TIE_BLOCK_RANGE = {"Q4_0": (-8, 7.5), "Q5_0": (-16, 15.5), "Q8_0": (-127, 127),
                   "Q4_1": (-8, 7), "Q5_1": (-16, 15)}


@pytest.mark.parametrize("t", TIE_BLOCK_RANGE)
def test_ties_round_like_gguf(t):
    lo, hi = TIE_BLOCK_RANGE[t]
    halves = np.arange(2 * lo, 2 * hi + 1) / 2
    rest = np.resize(halves, (len(halves) + 29) // 30 * 30).reshape(-1, 30)
    blocks = np.concatenate([np.full((len(rest), 1), lo), np.full((len(rest), 1), hi), rest], axis=1)
    for power in (-40, 0, 40):  # a power of two keeps every tie exact
        x = (blocks * 2.0 ** power).astype(np.float32).reshape(1, -1)
        np.testing.assert_array_equal(quants.quantize(x, t), gguf_quantize(x, t).reshape(1, -1))


def test_zero_blocks_quantize_to_zero():
    x = np.zeros((2, 512), np.float32)
    for t in WEIGHT_TYPES:
        np.testing.assert_array_equal(quants.dequantize(quants.quantize(x, t), t, x.shape), x)


# ---- 2. bytes against llama.cpp itself ----------------------------------------------------


@pytest.fixture(scope="module")
def llamacpp():
    return np.load(FIXTURE)


@pytest.mark.parametrize("t", WEIGHT_TYPES)
def test_quantize_matches_llamacpp(llamacpp, t):
    x = llamacpp["x"]
    ours = quants.quantize(x, t)
    for row, dist in enumerate(llamacpp["dist"]):
        assert np.array_equal(ours[row], llamacpp[t][row]), f"{t}, row {row} ({dist})"


def test_q8_1_activations_match_llamacpp(llamacpp):
    x = llamacpp["x"]
    expected = llamacpp["Q8_1"].ravel()
    np.testing.assert_array_equal(c_quantize(x, "Q8_1"), expected)
    np.testing.assert_array_equal(quantize_act(x, "Q8_1"), expected)


def test_fixture_dequantizes_like_gguf(llamacpp):
    for t in ("IQ4_NL", "IQ4_XS"):
        np.testing.assert_array_equal(quants.dequantize(llamacpp[t], t, llamacpp["x"].shape),
                                      gguf_dequantize(llamacpp[t], t).reshape(llamacpp["x"].shape))


def test_activation_pairing_matches_c_table():
    bs, ts, vdt = ffi.new("int64_t *"), ffi.new("int64_t *"), ffi.new("int *")
    for t, act in ACT_TYPE.items():
        check(lib.ll_type_info(int(GGMLType[t]), bs, ts, vdt))
        assert GGMLType(vdt[0]).name == act, t


# ---- 3. llama.cpp's error budgets (tests/test-quantize-fns.cpp) -----------------------------

GGML_TEST_SIZE = 32 * 128
MAX_QUANTIZATION_TOTAL_ERROR = 0.002
MAX_DOT_PRODUCT_ERROR = 0.02


def ggml_synthetic(offset: float, n: int = GGML_TEST_SIZE, amplitude: float = 2.0) -> np.ndarray:
    """test-quantize-fns' data: 0.1 + amplitude * cosf(i + offset), in float32."""
    i = np.arange(n, dtype=np.float32)
    wave = np.float32(amplitude) * np.cos(i + np.float32(offset))
    return (0.1 + wave.astype(np.float64)).astype(np.float32)


def ggml_rmse(a: np.ndarray, b: np.ndarray) -> float:
    """test-quantize-fns' 'rmse': sqrt(sum of squared differences) / n."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.sqrt(np.sum(d * d)) / d.size)


@pytest.mark.parametrize("t", ["F16", "BF16"] + WEIGHT_TYPES)
def test_round_trip_error_within_ggml_budget(t):
    x = ggml_synthetic(0.0)
    y = quants.dequantize(quants.quantize(x, t), t, x.shape)
    assert ggml_rmse(x, y) < MAX_QUANTIZATION_TOTAL_ERROR


@pytest.mark.parametrize("t", ["F16", "BF16"] + WEIGHT_TYPES)
def test_dot_error_within_ggml_budget(t):
    a, b = ggml_synthetic(0.0), ggml_synthetic(1.0)
    got = vec_dot(t, quants.quantize(a, t), activation(b, ACT_TYPE[t]), a.size)
    ref = float(np.sum((a * b).astype(np.float64)))
    assert abs(got - ref) / a.size < MAX_DOT_PRODUCT_ERROR


# ---- 4. the scalar dot ----------------------------------------------------------------------


@st.composite
def dot_operands(draw, t: str):
    """A weight row and an activation row of 1024..4096 well-scaled values:
    seeded noise times 10^[-1, 3], where half-precision block scales are
    normal numbers and Q8_1's block sums s stay finite."""
    n = 1024 * draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = st.sampled_from(["normal", "uniform", "positive", "steps"])
    w = noise(rng, draw(kinds), n) * 10.0 ** draw(st.floats(-1, 3))
    x = noise(rng, draw(kinds), n) * 10.0 ** draw(st.floats(-1, 3))
    return w.astype(np.float32), x.astype(np.float32)


@pytest.mark.parametrize("t", WEIGHT_TYPES)
@SETTINGS
@given(data=st.data())
def test_dot_within_2_percent_of_float64(t, data):
    w, x = data.draw(dot_operands(t))
    got = vec_dot(t, quants.quantize(w, t), activation(x, ACT_TYPE[t]), w.size)
    ref = float(np.dot(w.astype(np.float64), x.astype(np.float64)))
    scale = float(np.linalg.norm(w.astype(np.float64)) * np.linalg.norm(x.astype(np.float64)))
    assert abs(got - ref) <= 0.02 * scale


@pytest.mark.parametrize("t", WEIGHT_TYPES)
@SETTINGS
@given(data=st.data())
def test_dot_is_float64_arithmetic_on_decoded_blocks(t, data):
    # |x| <= 1e3 keeps every half-precision scale and Q8_1's block sums s
    # (<= 32e3) finite; tiny values are fine (subnormal or zero scales are
    # decoded the same way on both sides)
    rows = data.draw(float_rows(block_size(t), max_elems=2048, exp_range=(-30, 3)))
    w = rows[0]
    x = data.draw(float_rows(block_size(t), max_elems=w.size, exp_range=(-30, 3)))[0]
    x = np.resize(x, w.size)
    wq, xq = quants.quantize(w, t), activation(x, ACT_TYPE[t])
    ref, scale = exact_dot(t, wq, xq, w.size)
    assert abs(vec_dot(t, wq, xq, w.size) - ref) <= 1e-5 * scale


# ---- 5. matmul -------------------------------------------------------------------------------


@pytest.mark.parametrize("t", WEIGHT_TYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_matmul_matches_numpy_and_ignores_thread_count(t, data):
    cols = max(block_size(t), 256) * data.draw(st.integers(1, 4))
    rows = data.draw(st.integers(1, 9))
    n = data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    wq = quants.quantize(w, t)
    y1 = quants.matmul(wq, t, x, n_threads=1)
    y2 = quants.matmul(wq, t, x, n_threads=2)
    np.testing.assert_array_equal(y1, y2)

    w_deq = quants.dequantize(wq, t, w.shape).astype(np.float64)
    ref = x.astype(np.float64) @ w_deq.T
    # the only difference left is the activations' 8-bit quantization
    scale = np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(w_deq, axis=1))
    assert np.all(np.abs(y1 - ref) <= 0.02 * scale)
    # and each output is exactly the quantized activation row . the weight row
    for j in range(n):
        xq = activation(x[j], ACT_TYPE[t])
        for r in range(rows):
            assert y1[j, r] == np.float32(vec_dot(t, wq[r], xq, cols))
