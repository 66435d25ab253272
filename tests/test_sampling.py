"""llamalite.sampling: each step of the chain on small hand-checked examples,
the chain's order, the random draws against std::mt19937, mirostat's mu,
penalties, bias, hooks, parameter checks, and the head-only sorts of top-p /
typical / top-k / min-p against plain full-sort definitions (hypothesis).

Most examples use the probabilities P = [1/2, 1/4, 1/8, 1/16, 1/16], whose
sums and logs are easy to do by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamalite import sampling
from llamalite.sampling import (LogitsProcessorList, Mt19937, Sampler, SamplingParams,
                                StoppingCriteriaList, draw_discrete, logits_to_logprobs,
                                min_p, penalize, softmax, top_k, top_logprobs, top_p, typical)

P = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
LOGITS = np.log(P).astype(np.float32)
IDS = np.arange(5)
# every step off: the distribution is the plain softmax of the scores
ALL_OFF = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, temperature=1.0)


def f32(*values):
    return np.array(values, dtype=np.float32)


# --- the steps, one at a time ---------------------------------------------------

def test_top_k_keeps_the_k_best_best_first_ties_to_the_lower_id():
    logits = f32(2, 5, 2, 1, 5)
    ids, kept = top_k(IDS, logits, 3)
    # 5 (ids 1, 4), then the first of the two 2s (id 0 before id 2)
    assert ids.tolist() == [1, 4, 0] and kept.tolist() == [5, 5, 2]
    assert top_k(IDS, logits, 0)[0].tolist() == IDS.tolist()  # k <= 0: off, order kept
    assert top_k(IDS, logits, 9)[0].tolist() == [1, 4, 0, 2, 3]  # k >= n: all, sorted


def test_top_p_stops_where_the_mass_reaches_p():
    shuffled = np.array([3, 0, 4, 2, 1])
    ids = np.array([13, 10, 14, 12, 11])
    # sorted: P = .5, .25, .125, .0625, .0625; running sums .5, .75, .875, .9375, 1
    assert top_p(ids, LOGITS[shuffled], 0.6)[0].tolist() == [10, 11]              # .75 >= .6
    assert top_p(ids, LOGITS[shuffled], 0.9)[0].tolist() == [10, 11, 12, 13]      # .9375 >= .9
    assert top_p(ids, LOGITS[shuffled], 0.0)[0].tolist() == [10]                  # min_keep 1
    assert top_p(ids, LOGITS[shuffled], 1.0)[0].tolist() == ids.tolist()          # off


def test_top_p_reaches_p_inclusively_typical_exceeds_it_strictly():
    # four equal tokens: sums .25, .5, .75, 1 exactly in float32
    flat = f32(0, 0, 0, 0)
    assert top_p(IDS[:4], flat, 0.5)[0].tolist() == [0, 1]       # .5 >= .5
    assert typical(IDS[:4], flat, 0.5)[0].tolist() == [0, 1, 2]  # .75 > .5


def test_min_keep_holds_a_floor_under_each_truncation():
    assert top_p(IDS, LOGITS, 0.0, min_keep=3)[0].tolist() == [0, 1, 2]
    assert typical(IDS, LOGITS, 0.0, min_keep=3)[0].tolist() == [1, 0, 2]
    assert min_p(IDS, LOGITS[::-1], 1.0, min_keep=2)[0].tolist() == [4, 3]  # best first


def test_min_p_keeps_tokens_within_a_factor_of_the_best_in_their_order():
    shuffled = np.array([3, 0, 4, 2, 1])
    # p_max = .5: min_p .2 keeps p >= .1 (.5, .25, .125), min_p .3 keeps p >= .15
    assert min_p(IDS, LOGITS[shuffled], 0.2)[0].tolist() == [1, 3, 4]
    assert min_p(IDS, LOGITS[shuffled], 0.3)[0].tolist() == [1, 4]
    assert min_p(IDS, LOGITS[shuffled], 0.0)[0].tolist() == IDS.tolist()


def test_typical_keeps_the_tokens_whose_surprise_is_nearest_the_entropy():
    # -log2 P = 1, 2, 3, 4, 4 bits; entropy H = .5*1 + .25*2 + .125*3 + 2*.0625*4
    # = 1.875 bits. Distances |(-log2 p) - H| = .875, .125, 1.125, 2.125, 2.125,
    # so the walk goes id 1 (p .25), id 0 (.5), id 2 (.125), ...; sums .25, .75, .875
    assert typical(IDS, LOGITS, 0.5)[0].tolist() == [1, 0]      # .75 > .5
    assert typical(IDS, LOGITS, 0.8)[0].tolist() == [1, 0, 2]   # .875 > .8
    assert typical(IDS, LOGITS, 0.25)[0].tolist() == [1, 0]     # strictly more than p
    assert typical(IDS, LOGITS, 1.0)[0].tolist() == IDS.tolist()


def test_temperature_divides_the_logits_after_truncation():
    # logits 0 and ln 2 at T = 0.5 become 0 and 2 ln 2: probabilities 1/5, 4/5
    ids, probs = Sampler(2, **{**ALL_OFF, "temperature": 0.5}).distribution(f32(0, math.log(2)))
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [0.2, 0.8], rtol=1e-6)


def test_greedy_is_the_first_argmax_after_bias_and_penalties():
    logits = f32(1, 3, 3, 2)
    assert Sampler(4, temperature=0).sample(logits) == 1
    assert Sampler(4, temperature=-1, logit_bias={1: -math.inf}).sample(logits) == 2
    s = Sampler(4, temperature=0, repeat_penalty=4.0)
    s.accept(1)
    s.accept(2)
    assert s.sample(logits) == 3  # 3 / 4 = .75 for ids 1 and 2, below id 3's 2
    ids, probs = s.distribution(logits)
    assert ids.tolist() == [3] and probs.tolist() == [1.0]


# --- the chain's order ----------------------------------------------------------

def test_top_k_runs_before_top_p():
    # P = .4, .2, .2, .2. top-k 2 keeps ids 0, 1, renormalized to 2/3, 1/3;
    # top-p .5 then stops at 2/3. (top-p first would keep ids 0, 1.)
    logits = np.log(f32(0.4, 0.2, 0.2, 0.2))
    ids, probs = Sampler(4, **{**ALL_OFF, "top_k": 2, "top_p": 0.5}).distribution(logits)
    assert ids.tolist() == [0] and probs.tolist() == [1.0]


def test_temperature_runs_after_top_p():
    # P = .5, .3, .2 and top-p .7 keep ids 0, 1 (.5, .8). Then T = .25 raises
    # them to the 4th power: .0625 and .0081 of .0706 -> .885269, .114731.
    # (Temperature first would make p0 .86 and top-p would keep id 0 alone.)
    logits = np.log(f32(0.5, 0.3, 0.2))
    ids, probs = Sampler(3, **{**ALL_OFF, "top_p": 0.7, "temperature": 0.25}).distribution(logits)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [0.0625 / 0.0706, 0.0081 / 0.0706], rtol=1e-5)


def test_bias_runs_before_the_penalties():
    # id 0: 1 + bias -2 = -1, then repeat penalty 2 multiplies a negative
    # logit: -2, below id 1's -1.8. (Penalty first: 1/2 - 2 = -1.5 would win.)
    s = Sampler(3, temperature=0, logit_bias={0: -2.0}, repeat_penalty=2.0)
    s.accept(0)
    assert s.sample(f32(1.0, -1.8, -5.0)) == 1


def test_penalties_run_before_top_k():
    # id 0 (3.0) is penalized to 1.5, so top-k 1 keeps id 1 (2.9)
    s = Sampler(3, top_k=1, seed=1, repeat_penalty=2.0)
    s.accept(0)
    assert s.distribution(f32(3.0, 2.9, 1.0))[0].tolist() == [1]


def test_logits_processors_run_before_the_bias():
    # doubled, then biased: [2*1 + 1, 2*2.6, 0] (biased first would be 4, 5.2, 0)
    s = Sampler(3, logits_processor=lambda ids, scores: scores * 2, logit_bias={0: 1.0}, **ALL_OFF)
    np.testing.assert_allclose(s.distribution(f32(1.0, 2.6, 0.0))[1], softmax(f32(3.0, 5.2, 0.0)),
                               rtol=1e-6)


# --- random draws -----------------------------------------------------------------

def test_mt19937_canonical_doubles_match_libstdcxx():
    # printed by a C++ program with g++ 12 / libstdc++:
    #   std::mt19937 g(42); std::uniform_real_distribution<double> d(0, 1); d(g) x3
    rng = Mt19937(42)
    assert [rng.canonical() for _ in range(3)] == [
        0.79654298428784598, 0.18343478789336848, 0.77969099761266125]


def test_draw_discrete_matches_std_discrete_distribution():
    # same program: std::mt19937 g(7); std::discrete_distribution<int>({.5f, .3f, .2f})(g) x6
    rng = Mt19937(7)
    assert [draw_discrete(f32(0.5, 0.3, 0.2), rng) for _ in range(6)] == [0, 0, 2, 0, 0, 0]
    # and a single candidate draws nothing (the next number is still the first)
    rng = Mt19937(7)
    assert draw_discrete(f32(1.0), rng) == 0
    assert rng.canonical() == Mt19937(7).canonical()


def test_dist_draw_walks_the_candidates_by_their_running_sum():
    # seed 42 draws u = .7965, .1834, .7797; P's running sums .5, .75, .875, ...
    # so the picks are ids 2, 0, 2
    s = Sampler(5, seed=42, **ALL_OFF)
    assert [s.sample(LOGITS) for _ in range(3)] == [2, 0, 2]
    # a single candidate still consumes a draw, as llama.cpp's dist does
    s = Sampler(5, seed=42, **{**ALL_OFF, "top_k": 1})
    s.sample(LOGITS)
    assert s._rng.canonical() == 0.18343478789336848


def test_seeded_runs_reproduce_and_different_seeds_differ():
    logits = np.random.default_rng(0).normal(size=(40, 1000)).astype(np.float32)

    def run(sampler):
        out = []
        for row in logits:
            out.append(sampler.sample(row))
            sampler.accept(out[-1])
        return out

    for params in (dict(), dict(top_k=0, top_p=0.9), dict(mirostat_mode=2), dict(mirostat_mode=1)):
        a = Sampler(1000, seed=1234, repeat_penalty=1.1, **params)
        first = run(a)
        assert first == run(Sampler(1000, seed=1234, repeat_penalty=1.1, **params))
        assert first != run(Sampler(1000, seed=4321, repeat_penalty=1.1, **params))
        a.reset()
        assert run(a) == first
    random = Sampler(1000)
    assert run(random) == run(Sampler(1000, seed=random.seed))


def test_seed_minus_one_means_random():
    seeds = {Sampler(10, seed=-1).seed for _ in range(4)} | {Sampler(10, seed=2**32 - 1).seed}
    assert len(seeds) > 1


# --- mirostat ---------------------------------------------------------------------

def test_mirostat_v2_truncates_at_mu_and_updates_it():
    # tau 1.2 -> mu = 2.4: keep surprise -log2 p <= 2.4, i.e. p >= .19: ids 0, 1,
    # renormalized 2/3, 1/3. Seed 7 draws u = .2273 -> id 0, surprise
    # -log2(2/3) = .584963; mu -= eta * (.584963 - 1.2) -> 2.4 + .1 * .615037
    s = Sampler(5, seed=7, mirostat_mode=2, mirostat_tau=1.2, mirostat_eta=0.1, temperature=1.0)
    ids, probs = s.distribution(LOGITS)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [2 / 3, 1 / 3], rtol=1e-6)
    assert s.sample(LOGITS) == 0
    assert s.mu == pytest.approx(2.4615037, abs=1e-5)
    s.reset()
    assert s.mu == pytest.approx(2.4)


def test_mirostat_v1_estimates_k_from_the_zipf_exponent_and_updates_mu():
    # t_i = ln((i+2)/(i+1)) = .693147, .405465, .287682, .223144 and
    # b_i = ln(p_i / p_(i+1)) = ln 2, ln 2, ln 2, 0:
    # s = sum(t b) / sum(t^2) = .960906 / .777409 = 1.236036, e = s - 1 = .236036.
    # mu = 2 tau = 2.4: k = (e 2^mu / (1 - 5^-e))^(1/s) = (1.245806 / .316063)^(.809037)
    # = 3.03 -> the best 3, renormalized .571429, .285714, .142857.
    # u = .2273 picks id 0: surprise -log2(4/7) = .807355, mu = 2.4 + .1 * .392645
    s = Sampler(5, seed=7, mirostat_mode=1, mirostat_tau=1.2, mirostat_eta=0.1, temperature=1.0)
    ids, probs = s.distribution(LOGITS)
    assert ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(probs, [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)
    assert s.sample(LOGITS) == 0
    assert s.mu == pytest.approx(2.4392645, abs=1e-5)
    # tau 5 -> mu 10: k = (.236036 * 1024 / .316063)^(.809037) ~ 216 -> all 5 tokens
    assert Sampler(5, mirostat_mode=1, temperature=1.0).distribution(LOGITS)[0].tolist() == [0, 1, 2, 3, 4]


def test_mirostat_applies_the_temperature_first_and_greedy_wins():
    # T = .5 squares P: .25, .0625, .015625, .0039, .0039 of .3359 -> .744, .186, ...
    # mu = 2 * 1.16 = 2.32 keeps p >= 2^-2.32 = .2003: id 0 alone, where the
    # untempered .5, .25 would both stay
    s = Sampler(5, mirostat_mode=2, mirostat_tau=1.16, temperature=0.5)
    assert s.distribution(LOGITS)[0].tolist() == [0]
    assert Sampler(5, mirostat_mode=2, mirostat_tau=1.16, temperature=1.0).distribution(
        LOGITS)[0].tolist() == [0, 1]
    assert Sampler(5, mirostat_mode=1, temperature=0).sample(LOGITS[::-1]) == 4


# --- penalties and bias -----------------------------------------------------------------

def test_penalize_divides_positive_multiplies_negative_then_subtracts():
    scores = f32(1.0, 2.0, -1.0, 0.5, 3.0)
    penalize(scores, np.array([1, 2, 3]), np.array([2, 1, 1]), 2.0, 0.5, 0.25)
    # id 1: 2/2 - (2 * .5 + .25); id 2: -1*2 - .75; id 3: .5/2 - .75
    assert scores.tolist() == [1.0, -0.25, -2.75, -0.5, 3.0]


@pytest.mark.parametrize("last_n, expected", [
    (3, [1.0, 0.25, -2.75, -0.5, 3.0]),    # window 1, 2, 3: each once
    (4, [1.0, -0.25, -2.75, -0.5, 3.0]),   # window 1, 1, 2, 3: id 1 twice
    (-1, [1.0, -0.25, -2.75, -0.5, 3.0]),  # every accepted token
    (0, [1.0, 2.0, -1.0, 0.5, 3.0]),       # off
    (1, [1.0, 2.0, -1.0, 0.25 - 0.75, 3.0]),  # only the last, id 3
])
def test_penalties_look_at_the_last_n_accepted_tokens(last_n, expected):
    s = Sampler(5, last_n_tokens=last_n, repeat_penalty=2.0, frequency_penalty=0.5,
                presence_penalty=0.25, **ALL_OFF)
    for token in (1, 1, 2, 3):
        s.accept(token)
    logits = f32(1.0, 2.0, -1.0, 0.5, 3.0)
    np.testing.assert_allclose(s.distribution(logits)[1], softmax(f32(*expected)), rtol=1e-6)
    assert logits.tolist() == [1.0, 2.0, -1.0, 0.5, 3.0]  # the caller's array is untouched
    assert s.tokens == [1, 1, 2, 3]


def test_logit_bias_adds_and_minus_inf_bans():
    s = Sampler(5, logit_bias={"0": -math.inf, 4: math.log(8.0)}, seed=3, **ALL_OFF)
    ids, probs = s.distribution(LOGITS)
    # id 0 is gone; id 4 becomes 8 * .0625 = .5 against .25, .125, .0625: sum .9375
    assert ids.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(probs, np.array([0.25, 0.125, 0.0625, 0.5]) / 0.9375, rtol=1e-6)
    assert 0 not in {s.sample(LOGITS) for _ in range(200)}
    assert Sampler(5, temperature=0, logit_bias={0: -math.inf}).sample(LOGITS) == 1


def test_every_token_banned_is_an_error():
    with pytest.raises(ValueError, match="all -inf"):
        Sampler(2, logit_bias={0: -math.inf, 1: -math.inf}).sample(f32(1, 2))


def test_banned_tokens_are_never_drawn_even_at_u_zero():
    # weight 0 first in the walk: a draw of u = 0 still goes past it
    class Zero:
        def canonical(self):
            return 0.0
    assert sampling.draw_dist(f32(-math.inf, 0.0, 0.0), Zero()) == 1


# --- hooks -------------------------------------------------------------------------

def test_logits_processor_sees_the_accepted_tokens_and_a_copy():
    seen = []

    def ban_first(input_ids, scores):
        seen.append(input_ids.copy())
        scores[0] = -np.inf  # writing to its argument must not reach the caller
        return scores

    def boost_last(input_ids, scores):
        scores[4] += 10.0
        return scores

    logits = LOGITS.copy()
    s = Sampler(5, logits_processor=[ban_first, boost_last], temperature=0)
    s.accept(2)
    s.accept(3)
    assert s.sample(logits) == 4
    assert seen[0].dtype == np.intc and seen[0].tolist() == [2, 3]
    assert s.sample(logits, input_ids=np.array([7, 8, 9])) == 4
    assert seen[1].tolist() == [7, 8, 9]
    assert logits.tolist() == LOGITS.tolist()


def test_logits_processor_list_chains_in_order():
    chain = LogitsProcessorList([lambda ids, s: s + 1, lambda ids, s: s * 2])
    assert chain(np.array([], dtype=np.intc), f32(1, 2)).tolist() == [4, 6]


def test_logits_processor_must_keep_the_shape():
    s = Sampler(5, logits_processor=lambda ids, scores: scores[:3])
    with pytest.raises(ValueError, match="logits_processor returned shape"):
        s.sample(LOGITS)


def test_stopping_criteria_list_stops_when_any_says_so_and_asks_all():
    calls = []

    def says(answer):
        def criterion(input_ids, logits):
            calls.append(answer)
            return answer
        return criterion

    ids, logits = np.array([1, 2], dtype=np.intc), f32(0, 1)
    assert StoppingCriteriaList([says(False), says(True), says(False)])(ids, logits) is True
    assert calls == [False, True, False]
    assert StoppingCriteriaList([says(False)])(ids, logits) is False
    assert StoppingCriteriaList()(ids, logits) is False


# --- log-probabilities ----------------------------------------------------------------

def test_logits_to_logprobs_and_top_logprobs():
    logprobs = logits_to_logprobs(f32(0, math.log(3), -math.inf, math.log(3)))
    np.testing.assert_allclose(logprobs[:2], np.log([1 / 7, 3 / 7]), rtol=1e-6)
    assert logprobs[2] == -np.inf and logprobs.dtype == np.float32
    best = top_logprobs(logprobs, 3)
    assert [i for i, _ in best] == [1, 3, 0]  # equal ones: lower id first
    assert best[0][1] == pytest.approx(math.log(3 / 7), rel=1e-6)
    assert len(top_logprobs(logprobs, 10)) == 4 and top_logprobs(logprobs, 0) == []
    rows = logits_to_logprobs(np.stack([LOGITS, LOGITS[::-1]]))
    np.testing.assert_allclose(np.exp(rows).sum(axis=-1), [1, 1], rtol=1e-6)


# --- parameters -------------------------------------------------------------------------

def test_defaults_are_llama_cpp_pythons():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.typical_p) == (0.8, 40, 0.95, 0.05, 1.0)
    assert (p.repeat_penalty, p.frequency_penalty, p.presence_penalty, p.last_n_tokens) == (
        1.0, 0.0, 0.0, 64)
    assert (p.mirostat_mode, p.mirostat_tau, p.mirostat_eta) == (0, 5.0, 0.1)
    assert p.logit_bias == {} and p.seed is None


def test_aliases():
    p = SamplingParams.from_kwargs(temp=0.3, mirostat=2, repeat_last_n=8)
    assert (p.temperature, p.mirostat_mode, p.last_n_tokens) == (0.3, 2, 8)
    assert SamplingParams.from_kwargs(last_n_tokens_size=5).last_n_tokens == 5
    assert Sampler(3, temp=0.0).params.temperature == 0.0
    with pytest.raises(TypeError, match="unknown sampling parameter 'tfs'"):
        SamplingParams.from_kwargs(tfs=1.0)
    with pytest.raises(TypeError, match="given twice"):
        SamplingParams.from_kwargs(temp=0.3, temperature=0.4)
    with pytest.raises(TypeError, match="not both"):
        Sampler(3, SamplingParams(), temperature=0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=float("nan")), "temperature must be finite"),
    (dict(temperature="hot"), "temperature must be a number"),
    (dict(top_k=2.5), "top_k must be an integer"),
    (dict(top_p=1.5), r"top_p must be in \[0.0, 1.0\]"),
    (dict(top_p=-0.1), "top_p must be in"),
    (dict(min_p=2.0), "min_p must be in"),
    (dict(typical_p=-1.0), "typical_p must be in"),
    (dict(repeat_penalty=0.0), "repeat_penalty must be > 0"),
    (dict(frequency_penalty=float("inf")), "frequency_penalty must be finite"),
    (dict(presence_penalty=None), "presence_penalty must be a number"),
    (dict(last_n_tokens=-2), "last_n_tokens must be >= -1"),
    (dict(mirostat_mode=3), "mirostat_mode must be 0, 1 or 2"),
    (dict(mirostat_tau=-1.0), "mirostat_tau must be >= 0"),
    (dict(mirostat_eta=float("nan")), "mirostat_eta must be finite"),
    (dict(seed=-2), r"seed must be in \[-1, 4294967295\]"),
    (dict(seed=2**32), "seed must be in"),
    (dict(logit_bias={"x": 1.0}), "logit_bias key 'x' is not a token id"),
    (dict(logit_bias={-1: 1.0}), "not a token id"),
    (dict(logit_bias={1: math.inf}), r"logit_bias\[1\] must be finite or -inf"),
    (dict(logit_bias={1: float("nan")}), "must be finite or -inf"),
])
def test_invalid_params_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_sampler_checks_tokens_and_shapes_against_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary of 5"):
        Sampler(5, logit_bias={5: 1.0})
    s = Sampler(5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.accept(5)
    with pytest.raises(ValueError, match=r"logits must have shape \(5,\)"):
        s.sample(np.zeros(6, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        s.sample(f32(0, 1, np.nan, 2, 3))


def test_a_large_vocabulary_samples_from_the_head():
    n = 262144
    logits = np.random.default_rng(5).normal(scale=3.0, size=n).astype(np.float32)
    s = Sampler(n, seed=9)
    ids, probs = s.distribution(logits)
    assert 1 <= len(ids) <= 40 and set(ids) <= set(np.argsort(-logits)[:40].tolist())
    assert s.sample(logits) in set(ids.tolist())


# --- head-only sorting equals the full-sort definitions ----------------------------------

def full_sort_order(logits):
    return np.argsort(-logits, kind="stable")  # best first, ties in input order


def naive_top_p(ids, logits, p):
    order = full_sort_order(logits)
    mass = np.cumsum(softmax(logits)[order])
    return order[:int(np.argmax(mass >= p)) + 1] if (mass >= p).any() else order


def naive_typical(ids, logits, p):
    probs = softmax(logits)
    with np.errstate(divide="ignore"):
        surprise = -np.log(probs)
    possible = probs > 0
    distance = np.abs(surprise - np.sum(probs[possible] * surprise[possible]))
    order = np.lexsort((np.arange(len(logits)), -logits, distance))
    mass = np.cumsum(probs[order])
    return order[:int(np.argmax(mass > p)) + 1] if (mass > p).any() else order


def naive_min_p(ids, logits, p):
    order = full_sort_order(logits)
    with np.errstate(divide="ignore"):  # a p below float32's range is 0: keep all
        threshold = logits[order[0]] + np.log(np.float32(p))
    kept = order[logits[order] >= threshold]
    return np.sort(kept)  # min-p keeps the input order


@st.composite
def candidate_lists(draw):
    n = draw(st.integers(1, 5000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.05, 1.0, 3.0, 20.0]))  # flat .. peaked
    logits = rng.normal(scale=scale, size=n)
    if draw(st.booleans()):
        logits = np.round(logits * 2) / 2  # many exact ties
    if draw(st.booleans()):
        logits[rng.random(n) < 0.1] = -np.inf
        logits[rng.integers(n)] = 0.0  # keep one finite
    ids = rng.permutation(n) + 7
    return ids, logits.astype(np.float32)


@settings(max_examples=150, deadline=None)
@given(candidate_lists(), st.floats(0.0, 1.0))
def test_head_sorts_select_exactly_what_full_sorts_select(cands, p):
    ids, logits = cands
    for fast, naive in ((top_p, naive_top_p), (typical, naive_typical), (min_p, naive_min_p)):
        if (fast is min_p and p <= 0) or (fast is not min_p and p >= 1):
            continue  # the step is off
        got_ids, got_logits = fast(ids, logits, p)
        want = naive(ids, logits, p)
        assert got_ids.tolist() == ids[want].tolist(), fast.__name__
        assert got_logits.tolist() == logits[want].tolist(), fast.__name__
    k = max(1, int(p * len(logits)))
    assert top_k(ids, logits, k)[0].tolist() == ids[full_sort_order(logits)[:k]].tolist()


def test_a_flat_distribution_widens_the_head_several_times():
    # p = .95 of 3000 nearly equal tokens needs ~2850 of them: heads of 256,
    # 1024 and then everything
    logits = np.random.default_rng(1).normal(scale=0.01, size=3000).astype(np.float32)
    ids = np.arange(3000)
    got = top_p(ids, logits, 0.95)[0]
    assert 2500 < len(got) < 3000
    assert got.tolist() == naive_top_p(ids, logits, 0.95).tolist()
