"""ll_top_k (csrc/sample.c), the sampler's one pass over the vocabulary,
against a numpy reference: a stable sort by descending logit."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llamalite._native import lib, ptr
from llamalite.errors import InvalidArgumentError
from llamalite.sampling import Sampler, _nucleus_end, min_p, top_k, top_p


def reference(logits, k):
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:k]  # ties: lower index first
    return order.tolist(), logits[order].tolist()


def c_top_k(logits, k, out_len=None):
    out_len = min(k, len(logits)) if out_len is None else out_len
    ids = np.full(max(out_len, 1), -7, dtype=np.int32)
    vals = np.zeros(max(out_len, 1), dtype=np.float32)
    rc = lib.ll_top_k(ptr(logits, "float *"), len(logits), k, ptr(ids, "int32_t *"),
                      ptr(vals, "float *"), out_len)
    return rc, ids, vals


@st.composite
def logit_vectors(draw):
    n = draw(st.integers(1, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(scale=draw(st.sampled_from([0.01, 1.0, 30.0])), size=n)
    if draw(st.booleans()):
        logits = np.round(logits * 2) / 2  # many exact ties
    if draw(st.booleans()):
        logits[rng.random(n) < 0.2] = -np.inf
    if draw(st.booleans()):
        logits[rng.random(n) < 0.01] = np.inf
    if draw(st.booleans()):
        logits = np.sort(logits)  # ascending: every logit beats the k-th so far
    return logits.astype(np.float32)


@settings(max_examples=150, deadline=None)
@given(logit_vectors(), st.integers(1, 300))
def test_top_k_matches_a_stable_full_sort(logits, k):
    rc, ids, vals = c_top_k(logits, k)
    want_ids, want_vals = reference(logits, k)
    assert rc == 0
    assert ids[:len(want_ids)].tolist() == want_ids
    assert vals[:len(want_vals)].tolist() == want_vals


def test_ties_go_to_the_lower_index_and_minus_zero_ties_plus_zero():
    logits = np.array([1, 3, -0.0, 3, 0.0, 1, 3], dtype=np.float32)
    _, ids, vals = c_top_k(logits, 5)
    assert ids.tolist() == [1, 3, 6, 0, 5]
    _, ids, _ = c_top_k(logits, 7)
    assert ids.tolist() == [1, 3, 6, 0, 5, 2, 4]


def test_k_of_one_and_k_beyond_n():
    logits = np.array([-np.inf, 2, 7, 7, -np.inf], dtype=np.float32)
    assert c_top_k(logits, 1)[1].tolist() == [2]
    rc, ids, vals = c_top_k(logits, 1000)
    assert rc == 0 and ids.tolist() == [2, 3, 1, 0, 4]
    assert vals.tolist() == [7, 7, 2, -math.inf, -math.inf]


def test_all_minus_inf_keeps_the_first_k():
    logits = np.full(100, -np.inf, dtype=np.float32)
    assert c_top_k(logits, 3)[1].tolist() == [0, 1, 2]


def test_a_large_vocabulary_in_the_blocked_scan():
    logits = np.random.default_rng(5).normal(size=262_144).astype(np.float32)
    logits[200_001] = logits[17] = 50.0  # a tie far apart
    rc, ids, vals = c_top_k(logits, 40)
    assert rc == 0 and (ids.tolist(), vals.tolist()) == reference(logits, 40)


@pytest.mark.parametrize("where", [0, 39, 40, 41, 1000, 4999])
def test_a_nan_anywhere_is_an_error_naming_it(where):
    logits = np.random.default_rng(where).normal(size=5000).astype(np.float32)
    logits[where] = np.nan
    assert c_top_k(logits, 40)[0] == lib.LL_ERR_ARG
    with pytest.raises(InvalidArgumentError, match=f"logit {where} is NaN"):
        top_k(np.arange(5000), logits, 40)


def test_bad_arguments_are_refused_before_anything_is_written():
    logits = np.arange(10, dtype=np.float32)
    for k, out_len in ((0, 1), (-3, 1), (5, 4)):
        rc, ids, _ = c_top_k(logits, k, out_len)
        assert rc == lib.LL_ERR_ARG and ids[0] == -7
    empty = np.zeros(1, dtype=np.float32)
    ids = np.zeros(1, dtype=np.int32)
    assert lib.ll_top_k(ptr(empty, "float *"), 0, 1, ptr(ids, "int32_t *"),
                        ptr(empty, "float *"), 1) == lib.LL_ERR_ARG


@settings(max_examples=150, deadline=None)
@given(logit_vectors(), st.integers(1, 300), st.floats(0.0, 1.0))
def test_top_p_after_top_k_cuts_the_prefix_the_general_walk_keeps(logits, k, p):
    logits = np.where(np.isposinf(logits), np.float32(0), logits)  # the sampler refuses +inf
    if not np.isfinite(logits.max()):
        logits[0] = 0.0
    ids, kept = top_k(np.arange(len(logits)) + 3, logits, k)
    assert top_p(ids, kept, p)[0].tolist() == ids[:_nucleus_end(kept, p)].tolist()


@settings(max_examples=150, deadline=None)
@given(logit_vectors(), st.integers(1, 300), st.floats(0.0, 1.0), st.floats(0.0, 1.0),
       st.sampled_from([0.1, 0.8, 1.5]))
def test_the_default_chain_shortcut_equals_the_steps_one_by_one(logits, k, p, m, temperature):
    logits = np.where(np.isposinf(logits), np.float32(0), logits)
    logits[0] = max(logits[0], 0.0)  # something finite to sample
    s = Sampler(len(logits), top_k=k, top_p=p, min_p=m, temperature=temperature, seed=1)
    ids, kept = top_k(np.arange(len(logits)), logits, k)
    ids, kept = min_p(*top_p(ids, kept, p), m)
    got_ids, got_final = s._chain_best_first(logits)
    assert got_ids.tolist() == ids.tolist()
    assert got_final.tolist() == ((kept - kept.max()) / np.float32(temperature)).tolist()
