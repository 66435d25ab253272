"""The forward pass: tiny synthetic models against the float64 reference in
tests/reference.py, determinism across threads and batch sizes, the KV cache,
errors; and the real models against logits recorded from llama.cpp
(tests/data/forward/README.md)."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import reference
import synthetic
from llamalite import ContextOverflowError, GGUFError, UnsupportedModelError, _native, quants
from llamalite._native import ffi, lib, last_error
from llamalite.model import Model
from llamalite.threads import get_pool

DATA = Path(__file__).parent / "data" / "forward"

#: Each architecture and feature, small enough for the float64 reference.
CASES = {
    # GQA (4 query heads, 2 KV heads), separate output, llama-3 rope frequency factors
    "llama": dict(arch="llama", tied=False, rope_freqs=True),
    # plain multi-head attention, tied output, linear rope scaling, optional Q/K/V biases
    "llama-linear": dict(arch="llama", n_head_kv=4, rope_scaling=2.0, qkv_bias=True),
    "qwen2": dict(arch="qwen2", qkv_bias=True, tied=False, n_head_kv=1),
    # head_dim 128 != n_embd / n_head; window 4 < the 12 test tokens; layer 0 slides
    "gemma3": dict(arch="gemma3", n_head_kv=1, head_dim=128, n_swa=4, swa_pattern=2),
    # the pattern as one bool per layer: layer 1 slides
    "gemma3-list": dict(arch="gemma3", n_head=2, n_head_kv=2, head_dim=128, n_swa=3,
                        swa_pattern=[False, True]),
}
QUANT_MIXES = [("Q8_0",), ("Q4_K", "Q6_K", "Q5_0"), ("Q4_1", "Q4_0", "IQ4_NL")]
TOKENS = np.random.default_rng(7).integers(0, 320, 12)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    made = {}

    def make(case, weight_types=("F32",), **extra):
        key = (case, weight_types, repr(sorted(extra.items())))
        if key not in made:
            path = tmp_path_factory.mktemp("forward") / f"{case}.gguf"
            made[key] = synthetic.write_model(path, weight_types=weight_types,
                                              **{**CASES[case], **extra})
        return made[key]
    return make


def rel_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def logits_one_by_one(model, tokens) -> np.ndarray:
    return np.stack([model.eval([t]) for t in tokens])


# ---- agreement with the float64 reference -------------------------------------------------

@pytest.mark.parametrize("kv_type", ["F32", "F16"])
@pytest.mark.parametrize("case", CASES)
def test_f32_weights_match_the_reference(model_file, case, kv_type):
    path = model_file(case)
    want = reference.forward(path, TOKENS, kv_f16=kv_type == "F16")
    with Model(path, n_ctx=32, kv_type=kv_type) as m:
        batched = m.eval(TOKENS, all_logits=True)
        m.truncate(0)
        single = logits_one_by_one(m, TOKENS)
    assert rel_error(batched, want) <= 1e-4
    assert rel_error(single, want) <= 1e-4


@pytest.mark.parametrize("mix", QUANT_MIXES, ids="/".join)
@pytest.mark.parametrize("case", CASES)
def test_quantized_weights_match_the_reference(model_file, case, mix):
    # The reference multiplies float64 activations with the dequantized weights;
    # the C core rounds each matmul input to 8-bit blocks first (Q8_0, Q8_1 or
    # Q8_K, as llama.cpp does): about 0.4% per value, compounding through the
    # layers. Measured up to 1.8e-2 of the largest logit on these models.
    path = model_file(case, mix)
    with Model(path, n_ctx=32) as m:
        got = m.eval(TOKENS, all_logits=True)
    assert rel_error(got, reference.forward(path, TOKENS, kv_f16=True)) <= 3e-2


def test_the_sliding_window_hides_old_keys(model_file):
    # The same weights and rope with and without a window of 4: positions 0..3
    # see the same keys (bit-identical logits), later ones do not.
    same_rope = {"gemma3.rope.freq_base_swa": 1e6}
    windowed = model_file("gemma3", metadata=same_rope)
    with Model(windowed, n_ctx=32) as m:
        slid = m.eval(TOKENS, all_logits=True)
    full = model_file("gemma3", metadata=same_rope, n_swa=0)
    with Model(full, n_ctx=32) as m:
        unslid = m.eval(TOKENS, all_logits=True)
    assert np.array_equal(slid[:4], unslid[:4])
    assert all(rel_error(slid[p], unslid[p]) > 1e-3 for p in range(4, len(TOKENS)))


# ---- determinism and the KV cache ---------------------------------------------------------

@pytest.mark.parametrize("mix", [("F32",), ("Q4_K", "Q6_K", "Q5_0")], ids="/".join)
@pytest.mark.parametrize("case", CASES)
def test_logits_do_not_depend_on_threads_or_batch_size(model_file, case, mix):
    path = model_file(case, mix)
    results = {}
    for n_threads in (1, 2):
        for n_batch in (1, 7, 512):
            with Model(path, n_ctx=32, n_batch=n_batch, n_threads=n_threads) as m:
                results[n_threads, n_batch] = m.eval(TOKENS, all_logits=True)
    first = results[1, 1]
    for key, got in results.items():
        assert np.array_equal(got, first), key


def test_a_token_alone_equals_the_same_token_in_a_batch(model_file):
    path = model_file("qwen2", ("Q4_K", "Q6_K", "Q5_0"))
    with Model(path, n_ctx=32) as m:
        together = m.eval(TOKENS, all_logits=True)
        m.truncate(0)
        m.eval(TOKENS[:-1])
        alone = m.eval(TOKENS[-1:])
        assert m.n_past == len(TOKENS)
    assert np.array_equal(alone, together[-1])


@pytest.mark.parametrize("case", ["llama", "gemma3"])
def test_truncate_and_reevaluate_equals_a_fresh_evaluation(model_file, case):
    path = model_file(case, ("Q8_0",))
    suffix = np.array([5, 17, 300, 2])
    with Model(path, n_ctx=32) as fresh:
        want = fresh.eval(np.concatenate([TOKENS[:6], suffix]), all_logits=True)[6:]
    with Model(path, n_ctx=32) as m:
        m.eval(TOKENS)
        m.truncate(6)
        assert m.n_past == 6
        assert np.array_equal(m.eval(suffix, all_logits=True), want)
        # evaluating at an earlier position replaces what followed it
        m.eval(TOKENS[6:])
        assert np.array_equal(m.eval(suffix, pos=6, all_logits=True), want)
        assert m.n_past == 10


def test_the_last_logits_are_the_last_row_of_all_logits(model_file):
    path = model_file("llama")
    with Model(path, n_ctx=32, n_batch=5) as m:
        every = m.eval(TOKENS, all_logits=True)
        m.truncate(0)
        last = m.eval(TOKENS)
    assert every.shape == (len(TOKENS), 320) and last.shape == (320,)
    assert np.array_equal(last, every[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_evaluates_with_its_own_threads(model_file):
    with Model(model_file("llama"), n_ctx=32, n_threads=2) as m:
        want = m.eval(TOKENS)
        m.truncate(0)
        pid = os.fork()
        if pid == 0:   # the parent's pool threads do not exist here
            signal.alarm(60)
            os._exit(0 if np.array_equal(m.eval(TOKENS), want) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_kv_cache_size(model_file):
    # 2 layers x 2 KV heads x (64 + 64) dims x 32 positions, 2 or 4 bytes each
    with Model(model_file("llama"), n_ctx=32, kv_type="F16") as m:
        assert m.kv_bytes() == 2 * 2 * 128 * 32 * 2
    with Model(model_file("llama"), n_ctx=32, kv_type="F32") as m:
        assert m.kv_bytes() == 2 * 2 * 128 * 32 * 4
    with pytest.raises(ValueError, match="kv_type 'Q8_0'"):
        Model(model_file("llama"), kv_type="Q8_0")


# ---- errors -----------------------------------------------------------------------------

def test_bad_token_ids_are_errors_and_leave_the_cache_alone(model_file):
    with Model(model_file("llama"), n_ctx=16) as m:
        m.eval([1, 2, 3])
        for bad in ([-1], [320], [5, 2 ** 40], [[1, 2]], [1.5], []):
            with pytest.raises(ValueError):
                m.eval(bad)
        with pytest.raises(ValueError, match="token id 320 .at 1. is out of range"):
            m.eval([0, 320])
        assert m.n_past == 3


def test_context_overflow_and_bad_positions(model_file):
    with Model(model_file("llama"), n_ctx=16, n_batch=4) as m:
        with pytest.raises(ContextOverflowError, match="17 tokens at position 0 need 17"):
            m.eval(np.arange(17))
        m.eval(np.arange(10))
        with pytest.raises(ContextOverflowError, match="context holds 16"):
            m.eval(np.arange(7))
        with pytest.raises(ValueError, match="position 11"):
            m.eval([1], pos=11)
        with pytest.raises(ValueError, match="cannot keep 11"):
            m.truncate(11)
        m.eval(np.arange(6))
        assert m.n_past == 16
    with pytest.raises(ValueError, match="closed"):
        m.eval([1])


def test_the_c_core_checks_what_python_already_checked(model_file):
    # ll_forward is a C entry point of its own: it must refuse bad input too.
    with Model(model_file("llama"), n_ctx=16, n_batch=4) as m:
        logits = np.empty(320, np.float32)

        def forward(tokens, pos=0, nbytes=logits.nbytes):
            ids = np.array(tokens, np.int32)
            return lib.ll_forward(m._ctx, get_pool(1), ffi.cast("int32_t *", ffi.from_buffer(ids)),
                                  len(ids), pos, ffi.cast("float *", ffi.from_buffer(logits)),
                                  nbytes, 0)
        assert forward([7, -5]) == lib.LL_ERR_ARG and "token id -5" in last_error()
        assert forward([7, 320]) == lib.LL_ERR_ARG and "token id 320" in last_error()
        assert forward([1] * 5) == lib.LL_ERR_ARG and "n_batch" in last_error()
        assert forward([1], pos=1) == lib.LL_ERR_ARG and "position 1" in last_error()
        assert forward([1], nbytes=logits.nbytes - 4) == lib.LL_ERR_ARG
        assert "logits buffer" in last_error()
        assert forward([1, 2]) == 0 and m.n_past == 2


def test_unsupported_architectures_and_types_are_named(tmp_path):
    path = synthetic.write_model(tmp_path / "mamba.gguf", arch="mamba")
    with pytest.raises(UnsupportedModelError, match="'mamba'"):
        Model(path)
    raw = np.zeros(256 * 66, np.uint8)   # 256 rows of 256 IQ2_XXS values (66 bytes each)
    path = synthetic.write_model(tmp_path / "iq2.gguf",
                                 replace={"blk.1.attn_q.weight": (raw, "IQ2_XXS", (256, 256))})
    with pytest.raises(UnsupportedModelError, match="blk.1.attn_q.weight.*IQ2_XXS"):
        Model(path)
    bias = np.zeros(256, np.float32)
    path = synthetic.write_model(tmp_path / "bias.gguf",
                                 replace={"blk.0.attn_output.bias": (bias, "F32", (256,))})
    with pytest.raises(UnsupportedModelError, match="blk.0.attn_output.bias"):
        Model(path)
    path = synthetic.write_model(tmp_path / "yarn.gguf",
                                 metadata={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(UnsupportedModelError, match="yarn"):
        Model(path)


def test_malformed_models_are_gguf_errors(tmp_path):
    path = synthetic.write_model(tmp_path / "short.gguf",
                                 replace={"blk.0.attn_k.weight": (np.zeros((96, 256), np.float32),
                                                                  "F32", (96, 256))})
    with pytest.raises(GGUFError, match=r"blk.0.attn_k is 96 x 256.* 128 x 256"):
        Model(path)
    path = synthetic.write_model(tmp_path / "missing.gguf", replace={"blk.1.ffn_up.weight": None})
    with pytest.raises(GGUFError, match="blk.1.ffn_up.weight"):
        Model(path)
    path = synthetic.write_model(tmp_path / "nonorm.gguf", arch="gemma3",
                                 replace={"blk.0.attn_q_norm.weight": None})
    with pytest.raises(GGUFError, match="blk.0.attn_q_norm.weight"):
        Model(path)


# ---- real models against llama.cpp --------------------------------------------------------

REAL = ["smollm2", "gemma3", "qwen25"]
#: A position's top-1 may differ only where llama.cpp itself has a near tie.
NEAR_TIE = 0.5


def value_tolerance(values: np.ndarray) -> np.ndarray:
    # Both implementations round every matmul input to 8 bits. Against a float64
    # evaluation of the same dequantized weights, each deviates by a median 0.3-0.4
    # and up to 2.4 (ours) / 3.6 (llama.cpp) logits on its top-20 values, growing
    # with the logit's size; independently, so they differ by up to the sum.
    return 0.5 + 0.12 * np.abs(values)


@pytest.fixture(scope="module")
def real_model(request, smollm2_path, gemma3_path, qwen25_path):
    paths = {"smollm2": smollm2_path, "gemma3": gemma3_path, "qwen25": qwen25_path}
    opened = {}

    def get(name):
        if name not in opened:
            opened[name] = Model(paths[name], n_ctx=256)
        return opened[name]
    yield get
    for m in opened.values():
        m.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_logits_match_llama_cpp(real_model, name):
    record = json.loads((DATA / f"{name}.json").read_text())
    m = real_model(name)
    for case in record["cases"]:
        ids = case["prompt"] + case["greedy"][:-1]
        m.truncate(0)
        ours = m.eval(ids, all_logits=True)
        top_ids, top_values = np.array(case["top_ids"]), np.array(case["top_values"])
        assert ours.shape[0] == len(top_ids)
        for pos, (tid, tval, row) in enumerate(zip(top_ids, top_values, ours)):
            mine = int(row.argmax())
            if mine != tid[0]:
                assert mine in tid and tval[0] - tval[list(tid).index(mine)] < NEAR_TIE, (
                    f"{case['text']!r} position {pos}: our top token {mine} is not llama.cpp's "
                    f"{tid[0]}, nor near it")
            np.testing.assert_array_less(np.abs(row[tid] - tval), value_tolerance(tval))


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_greedy_continuation_equals_llama_cpp(real_model, name):
    record = json.loads((DATA / f"{name}.json").read_text())
    m = real_model(name)
    case = record["cases"][-1]     # the one chosen for clear margins (see the README)
    m.truncate(0)
    logits = m.eval(case["prompt"])
    greedy = []
    for _ in case["greedy"]:
        greedy.append(int(logits.argmax()))
        logits = m.eval(greedy[-1:])
    assert greedy == case["greedy"]


# ---- packed weights -----------------------------------------------------------------------

def test_packed_weights_read_or_mapped_give_the_same_logits(model_file):
    """Where the kernels run Q5_0 and Q4_K faster packed, the model packs those
    matrices (not token_embd, whose rows are looked up), in the memory the
    weights were read into or, with use_mmap, in memory of its own; the
    logits are the same bits either way, and close to unpacked ones."""
    path = model_file("qwen2", ("Q5_0", "Q4_K"))
    isa = _native.get_isa()
    if not quants.pack_preferred("Q5_0", 256, 256):
        pytest.skip(f"the {isa} kernels do not pack Q5_0")
    with Model(path, n_ctx=32) as read, Model(path, n_ctx=32, use_mmap=True) as mapped:
        assert read._packed_names == mapped._packed_names
        packable = {quants.GGMLType.Q4_1, quants.GGMLType.Q5_0, quants.GGMLType.Q4_K}
        assert read._packed_names == {
            name for name, t in read.reader.tensors.items()
            if t.type in packable and name != "token_embd.weight" and len(t.shape) == 2}
        assert mapped._weights is None and mapped._packed_copy is not None
        packed = read.eval(TOKENS, all_logits=True)
        assert np.array_equal(mapped.eval(TOKENS, all_logits=True), packed)
    try:
        _native.set_isa("scalar")     # scalar kernels: nothing is packed
        with Model(path, n_ctx=32) as rows:
            assert not rows._packed_names
            unpacked = rows.eval(TOKENS, all_logits=True)
    finally:
        _native.set_isa(isa)
    assert rel_error(packed, unpacked) <= 1e-4


def test_the_c_core_checks_the_layout_of_each_tensor(model_file):
    path = model_file("qwen2", ("Q5_0", "Q2_K"))
    with Model(path, n_ctx=32) as m:
        globals_, layers = m._c_tensors
        hp, out = m.config.hparams(), ffi.new("ll_model **")

        def refused(tensor, layout, message):
            before = tensor.layout
            tensor.layout = layout
            try:
                rc = lib.ll_model_new(hp, globals_, layers, m.config.n_layer, out)
            finally:
                tensor.layout = before
            return rc == lib.LL_ERR_ARG and message in last_error()

        q2k = next(f for f in ("wq", "wk", "wv", "wo", "ffn_gate", "ffn_up", "ffn_down")
                   if getattr(layers[0], f).type == quants.GGMLType.Q2_K)
        assert refused(layers[0].wq, 7, "blk.0.attn_q has an unknown layout 7")
        assert refused(globals_.token_embd, lib.LL_LAYOUT_PACKED8, "token_embd cannot be packed")
        assert refused(layers[0].attn_norm, lib.LL_LAYOUT_PACKED8, "attn_norm cannot be packed")
        assert refused(getattr(layers[0], q2k), lib.LL_LAYOUT_PACKED8, "Q2_K has no packed layout")
