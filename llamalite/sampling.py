"""Choosing the next token from the logits: llama.cpp's sampler chain in numpy.

The chain, in llama.cpp's order (the one llama-cpp-python builds):

    logits_processor -> logit bias -> repetition / frequency / presence penalties
    -> top-k -> typical -> top-p -> min-p -> temperature -> draw

A temperature <= 0 is greedy: the argmax after the processors, bias and
penalties. Mirostat (mode 1 or 2) replaces everything after the penalties with
temperature followed by mirostat, as llama.cpp's common sampler does.
llama-cpp-python differs in two corners, on purpose not followed here: its
mirostat ignores the temperature, and a temperature < 0 samples the plain
softmax there instead of being greedy.

Each step works on a candidate list (token ids with their logits, in an order
that matters: the draw walks the list). The steps are functions here so they
can be checked one at a time; `Sampler` strings them together and keeps the
state: the random generator, mirostat's mu, and the accepted tokens that the
penalties look at.

Cost over a 262,144-token vocabulary: nothing sorts the whole vocabulary.
top-k is one pass in C (ll_top_k, O(n)); top-p and typical sort only the head
of the order they walk, widening it until the probability mass they need is inside (see
`_walk_until_mass`); min-p is one comparison per candidate. The result is
exactly what a full sort would give, ties going to the lower token id.

The random draws follow std::mt19937 and libstdc++'s generate_canonical, as
llama.cpp's `dist` and `mirostat` samplers do, so a seed picks the token
llama.cpp picks from the same candidates in the same order (up to float
rounding in the sums).
"""
from __future__ import annotations

import dataclasses
import math
import operator
import os
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._native import check, lib, ptr
from .errors import GrammarError

#: llama.cpp's seed value that means "pick a random seed".
LLAMA_DEFAULT_SEED = 0xFFFFFFFF

#: Candidates every truncating step keeps at least (llama-cpp-python passes 1).
MIN_KEEP = 1

#: Tokens mirostat v1 fits its Zipf exponent on (llama.cpp's m).
MIROSTAT_M = 100

# How many of the best candidates the top-p / typical walk sorts first; it
# widens fourfold until the mass is reached. Most distributions a model emits
# put p = 0.95 inside the first few dozen tokens.
_HEAD = 256


# After a grammar rejects the drawn token, how many of the best tokens are
# checked one by one (in growing rounds) before the grammar's whole allowed
# set is worked out instead.
_GRAMMAR_SCAN = (64, 512, 2048)


# --- hooks, with llama-cpp-python's names and call conventions -------------

LogitsProcessor = Callable[[npt.NDArray[np.intc], npt.NDArray[np.single]], npt.NDArray[np.single]]


class LogitsProcessorList(List[LogitsProcessor]):
    """Processors applied in order, each to the scores the previous returned."""

    def __call__(self, input_ids: npt.NDArray[np.intc],
                 scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


StoppingCriteria = Callable[[npt.NDArray[np.intc], npt.NDArray[np.single]], bool]


class StoppingCriteriaList(List[StoppingCriteria]):
    """Stop when any criterion says so (every criterion is called)."""

    def __call__(self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> bool:
        return any([criterion(input_ids, logits) for criterion in self])


# --- parameters --------------------------------------------------------------

@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings, named and defaulted as llama-cpp-python's
    create_completion() (last_n_tokens is Llama's last_n_tokens_size).

    top_k <= 0, top_p = 1, min_p = 0, typical_p = 1 each switch their step off;
    temperature <= 0 is greedy; last_n_tokens = 0 switches the penalties off and
    -1 makes them look at every accepted token; seed None, -1 or
    LLAMA_DEFAULT_SEED draws a random seed. logit_bias keys may be strings of
    digits (as OpenAI's JSON sends them); a bias of -inf bans a token.
    """
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    last_n_tokens: int = 64
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    logit_bias: Optional[Mapping[int, float]] = None
    seed: Optional[int] = None

    #: Other names the same settings go by in llama-cpp-python and llama.cpp.
    ALIASES = {"temp": "temperature", "repeat_last_n": "last_n_tokens",
               "last_n_tokens_size": "last_n_tokens", "mirostat": "mirostat_mode"}

    @classmethod
    def from_kwargs(cls, **kwargs) -> "SamplingParams":
        """Build from keyword arguments that may use the aliases (temp=...,
        mirostat=..., repeat_last_n=...). Unknown names raise TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        resolved = {}
        for key, value in kwargs.items():
            name = cls.ALIASES.get(key, key)
            if name not in names:
                raise TypeError(f"unknown sampling parameter {key!r}")
            if name in resolved:
                raise TypeError(f"sampling parameter {name!r} given twice (as {key!r})")
            resolved[name] = value
        return cls(**resolved)

    def __post_init__(self):
        _check_real("temperature", self.temperature)
        _check_int("top_k", self.top_k)
        _check_real("top_p", self.top_p, 0.0, 1.0)
        _check_real("min_p", self.min_p, 0.0, 1.0)
        _check_real("typical_p", self.typical_p, 0.0, 1.0)
        _check_real("repeat_penalty", self.repeat_penalty)
        if self.repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty!r}")
        _check_real("frequency_penalty", self.frequency_penalty)
        _check_real("presence_penalty", self.presence_penalty)
        _check_int("last_n_tokens", self.last_n_tokens, -1)
        if self.mirostat_mode not in (0, 1, 2):
            raise ValueError(f"mirostat_mode must be 0, 1 or 2, got {self.mirostat_mode!r}")
        _check_real("mirostat_tau", self.mirostat_tau, 0.0)
        _check_real("mirostat_eta", self.mirostat_eta, 0.0)
        if self.seed is not None:
            _check_int("seed", self.seed, -1, LLAMA_DEFAULT_SEED)
        object.__setattr__(self, "logit_bias", _normalize_bias(self.logit_bias))


def _check_real(name, value, lo=None, hi=None):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if hi is not None and not lo <= x <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    if lo is not None and x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")


def _check_int(name, value, lo=None, hi=None):
    try:
        x = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if hi is not None and not lo <= x <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    if lo is not None and x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")


def _normalize_bias(bias) -> dict:
    if not bias:
        return {}
    out = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias key {key!r} is not a token id") from None
        if token < 0:
            raise ValueError(f"logit_bias key {key!r} is not a token id (negative)")
        try:
            b = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias[{key!r}] must be a number, got {value!r}") from None
        if math.isnan(b) or b == math.inf:
            raise ValueError(f"logit_bias[{key!r}] must be finite or -inf, got {value!r}")
        out[token] = b
    return out


# --- the chain's steps over a candidate list ----------------------------------
#
# A candidate list is a pair of equal-length arrays: token ids (int64) and
# their logits (float32). Each step returns a new pair; the order of the pair
# is the order the final draw walks. Steps that sort keep equal logits in
# their input order; the chain starts from the vocabulary in id order, so
# inside it ties always go to the lower token id.

def softmax(logits: np.ndarray, top: Optional[np.float32] = None) -> np.ndarray:
    """Probabilities of a candidate list (float32); -inf logits get 0. `top`
    is the largest logit when the caller knows it (a best-first list)."""
    e = np.exp(logits - (logits.max() if top is None else top))
    return e / e.sum()


def top_k(ids: np.ndarray, logits: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k best candidates, best first; k <= 0 keeps all. One pass in C
    (ll_top_k) finds and orders them; a NaN logit is a ValueError."""
    if k <= 0:
        return ids, logits
    positions, values = _best_k(logits, k)
    return ids[positions], values


def _best_k(logits: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Positions (int32) and float32 values of the min(k, n) best logits,
    best first, ties to the lower position."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    kept = min(k, len(logits))
    positions = np.empty(kept, dtype=np.int32)
    values = np.empty(kept, dtype=np.float32)
    if kept:
        check(lib.ll_top_k(ptr(logits, "float *"), len(logits), kept,
                           ptr(positions, "int32_t *"), ptr(values, "float *"), kept))
    return positions, values


def top_p(ids: np.ndarray, logits: np.ndarray, p: float,
          min_keep: int = MIN_KEEP) -> Tuple[np.ndarray, np.ndarray]:
    """Nucleus: the best candidates, best first, up to and including the one
    where their probability mass reaches p. p >= 1 keeps all (in their order)."""
    if p >= 1.0:
        return ids, logits
    keep = _walk_until_mass(-logits, lambda head: _best_first(logits, head),
                            softmax(logits), p, min_keep, inclusive=True)
    return ids[keep], logits[keep]


def _nucleus_end(logits: np.ndarray, p: float, min_keep: int = MIN_KEEP) -> int:
    """How many candidates top_p() keeps of a list already best first with
    ties in id order (top-k's output): its walk follows the list, so it keeps
    a prefix, and the same float32 running sum, never decreasing, finds the
    end with one search."""
    if p >= 1.0:
        return len(logits)
    mass = np.cumsum(softmax(logits, top=logits[0]))
    first = int(np.searchsorted(mass, np.float32(p), side="left"))  # first mass >= p
    return min(max(first, min_keep - 1) + 1, len(logits))


def typical(ids: np.ndarray, logits: np.ndarray, p: float,
            min_keep: int = MIN_KEEP) -> Tuple[np.ndarray, np.ndarray]:
    """Locally typical sampling: candidates whose surprise -log p is closest to
    the entropy, closest first (equally close: higher logit first), until their
    mass exceeds p. p >= 1 keeps all."""
    if p >= 1.0:
        return ids, logits
    probs = softmax(logits)
    with np.errstate(divide="ignore"):
        surprise = -np.log(probs)
    possible = probs > 0  # 0 * log 0 counts as 0
    entropy = np.sum(probs[possible] * surprise[possible])
    distance = np.abs(surprise - entropy)
    keep = _walk_until_mass(distance,
                            lambda head: head[np.lexsort((-logits[head], distance[head]))],
                            probs, p, min_keep, inclusive=False)
    return ids[keep], logits[keep]


def min_p(ids: np.ndarray, logits: np.ndarray, p: float,
          min_keep: int = MIN_KEEP) -> Tuple[np.ndarray, np.ndarray]:
    """Candidates with probability >= p times the best one's, in their order.
    One comparison per candidate: p_i >= p * p_max <=> logit_i >= max + log p."""
    if p <= 0.0 or len(logits) == 0:
        return ids, logits
    with np.errstate(divide="ignore"):  # a p below float32's range is 0: keep all
        threshold = logits.max() + np.log(np.float32(p))
    keep = logits >= threshold
    if np.count_nonzero(keep) < min_keep:
        return top_k(ids, logits, min_keep)
    return ids[keep], logits[keep]


def _best_first(logits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """positions (ascending) reordered by logit, highest first, equal logits
    keeping their order. One sort of uint64 keys (order-preserving bits of the
    logit above, position below) is several times faster than a two-key or a
    stable float sort."""
    bits = (logits[positions] + np.float32(0)).view(np.int32).astype(np.int64)  # -0.0 -> +0.0
    ascending = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float's value
    descending = (np.int64(0x7FFFFFFF) - ascending).astype(np.uint64)
    keys = (descending << np.uint64(32)) | positions.astype(np.uint64)
    return (np.sort(keys) & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _walk_until_mass(primary, sort_head, probs, p, min_keep, inclusive):
    """Positions of the shortest run of candidates, in the order sort_head
    gives (ascending primary key first), whose summed probability reaches p
    (>= p if inclusive, else > p) and holds at least min_keep; all candidates
    if it never does.

    The run is a prefix of that order, so only the head needs sorting: take the
    m smallest primary keys together with everything tied with the m-th (a set
    that is exactly a prefix of the full order), sort and sum it; if the mass
    is not reached, widen m. The running sum is float32 and sequential, as
    llama.cpp's, so the prefix sums equal those of a full sort bit for bit.
    """
    n = len(primary)
    m = _HEAD
    while True:
        if m >= n:
            head = np.arange(n)
        else:
            mth = np.partition(primary, m - 1)[m - 1]
            head = np.flatnonzero(primary <= mth)
        head = sort_head(head)
        mass = np.cumsum(probs[head])
        reached = mass >= p if inclusive else mass > p
        reached[:min_keep - 1] = False
        if reached.any():
            return head[:int(np.argmax(reached)) + 1]
        if len(head) == n:
            return head
        m *= 4


# --- random draws, as llama.cpp makes them ------------------------------------

class Mt19937:
    """std::mt19937 seeded with a 32-bit value, drawing doubles in [0, 1) as
    libstdc++'s generate_canonical<double, 53> does: two outputs a, b give
    (a + b * 2**32) / 2**64. numpy's legacy RandomState seeding is
    std::mt19937's, so its state seeds the bit generator."""

    def __init__(self, seed: int):
        state = np.random.RandomState(seed).get_state(legacy=False)["state"]
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": state}

    def canonical(self) -> float:
        a, b = self._bits.random_raw(2)
        x = float(int(a) + (int(b) << 32)) / 2.0 ** 64
        return x if x < 1.0 else math.nextafter(1.0, 0.0)


def draw_dist(logits: np.ndarray, rng: Mt19937, top: Optional[np.float32] = None) -> int:
    """llama.cpp's dist sampler: one uniform draw u (always, even for a single
    candidate), then the first candidate where the running sum of
    exp(logit - max), in double, passes u times the total. llama.cpp stops
    where the sum reaches the target (>=); stopping where it passes it (>)
    differs only when they are exactly equal, and never picks a candidate of
    weight 0 (a banned token), even for u = 0. `top`: the largest logit, when
    the caller knows it."""
    u = rng.canonical()
    weights = np.exp(logits - (logits.max() if top is None else top))
    running = np.cumsum(weights, dtype=np.float64)
    return int(np.searchsorted(running, running[-1] * u, side="right"))


def draw_discrete(probs: np.ndarray, rng: Mt19937) -> int:
    """std::discrete_distribution as libstdc++ implements it (mirostat draws
    this way): no draw for a single candidate; otherwise the weights are
    normalized in double, their running sum is capped to 1 at the end, and the
    first sum >= u wins."""
    if len(probs) < 2:
        return 0
    weights = probs.astype(np.float64)
    total = np.cumsum(weights)[-1]
    running = np.cumsum(weights / total)
    running[-1] = 1.0
    return int(np.searchsorted(running, rng.canonical(), side="left"))


# --- penalties and log-probabilities --------------------------------------------

def penalize(scores: np.ndarray, tokens: np.ndarray, counts: np.ndarray,
             repeat_penalty: float, frequency_penalty: float, presence_penalty: float) -> None:
    """Penalize, in place, each token that occurred `counts` times recently:
    a positive logit is divided by repeat_penalty and a negative one multiplied
    (so both become less likely), then count * frequency_penalty + presence_penalty
    is subtracted."""
    logit = scores[tokens]
    logit = np.where(logit <= 0, logit * np.float32(repeat_penalty),
                     logit / np.float32(repeat_penalty))
    count = counts.astype(np.float32)
    logit -= count * np.float32(frequency_penalty) + np.float32(presence_penalty)
    scores[tokens] = logit


def logits_to_logprobs(logits: npt.ArrayLike, axis: int = -1) -> np.ndarray:
    """Log-softmax along axis, in float32, as llama-cpp-python's
    Llama.logits_to_logprobs: a -inf logit (a banned token) gets -inf."""
    logits = np.asarray(logits, dtype=np.float32)
    peak = np.amax(logits, axis=axis, keepdims=True)
    peak[~np.isfinite(peak)] = 0
    shifted = logits - peak
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def top_logprobs(logprobs: np.ndarray, n: int) -> List[Tuple[int, float]]:
    """The n most likely (token id, logprob) pairs of a 1-D logprob vector,
    best first, ties by lower id: top-k's one pass over the vocabulary."""
    logprobs = np.asarray(logprobs, dtype=np.float32)
    n = min(max(n, 0), len(logprobs))
    if n == 0:
        return []
    best, values = top_k(np.arange(len(logprobs)), logprobs, n)
    return [(int(i), float(v)) for i, v in zip(best, values)]


# --- the sampler ---------------------------------------------------------------

ProcessorArg = Union[LogitsProcessor, Sequence[LogitsProcessor], None]


class Sampler:
    """Samples token ids from logit vectors and keeps the state between draws.

        sampler = Sampler(n_vocab, temperature=0.7, seed=42)
        token = sampler.sample(logits)   # does not record the token
        sampler.accept(token)            # record it for the penalties

    `accept` is separate from `sample` so the caller decides what counts as
    history (a prompt can be accepted too). `input_ids` given to `sample` is
    what logits processors see; by default the accepted tokens.

    `grammar` (a grammar_match.GrammarState) constrains the draws as
    llama.cpp's common sampler does: the chain draws from the unconstrained
    candidates first, and only when the grammar rejects that token are the
    candidates cut to what it allows and the chain run again. `accept` then
    also moves the grammar past the token (so accept only generated tokens).
    """

    def __init__(self, n_vocab: int, params: Optional[SamplingParams] = None, *,
                 logits_processor: ProcessorArg = None, grammar=None, **kwargs):
        if n_vocab < 1:
            raise ValueError(f"n_vocab must be >= 1, got {n_vocab}")
        if params is not None and kwargs:
            raise TypeError("give either params or keyword sampling parameters, not both")
        self.params = params if params is not None else SamplingParams.from_kwargs(**kwargs)
        self.n_vocab = int(n_vocab)
        self.logits_processor = _as_processor(logits_processor)
        self.grammar = grammar
        bias = self.params.logit_bias
        for token in bias:
            if token >= n_vocab:
                raise ValueError(f"logit_bias token {token} is outside the vocabulary of {n_vocab}")
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        self._bias_values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
        self._vocab_ids = np.arange(self.n_vocab)
        with np.errstate(divide="ignore"):  # a p below float32's range is 0: keep all
            self._log_min_p = np.log(np.float32(self.params.min_p))
        self.reset()

    # -- state --

    def reset(self) -> None:
        """Forget the accepted tokens, restart mirostat at mu = 2 tau and reseed
        (a random seed is drawn again, as llama.cpp does)."""
        seed = self.params.seed
        if seed is None or seed in (-1, LLAMA_DEFAULT_SEED):
            seed = int.from_bytes(os.urandom(4), "little")
        self.seed = seed
        self._rng = Mt19937(seed)
        self.mu = np.float32(2.0 * self.params.mirostat_tau)
        self._history: List[int] = []
        last_n = self.params.last_n_tokens
        self._window: deque = deque(maxlen=None if last_n < 0 else last_n)
        self._counts: Counter = Counter()

    def accept(self, token: int) -> None:
        """Record a chosen (or prompt) token: it joins the penalty window."""
        token = operator.index(token)
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token {token} is outside the vocabulary of {self.n_vocab}")
        if self.grammar is not None:
            self.grammar.accept(token)
        self._history.append(token)
        if self._window.maxlen == 0:
            return
        if len(self._window) == self._window.maxlen:
            oldest = self._window[0]
            self._counts[oldest] -= 1
            if not self._counts[oldest]:
                del self._counts[oldest]
        self._window.append(token)
        self._counts[token] += 1

    @property
    def tokens(self) -> List[int]:
        """The accepted tokens, oldest first."""
        return list(self._history)

    # -- sampling --

    def sample(self, logits: npt.ArrayLike, input_ids: Optional[npt.ArrayLike] = None) -> int:
        """The next token id. Advances the random generator and, with mirostat,
        mu; does not accept the token."""
        scores = self._scores(logits, input_ids)
        if self.grammar is None:
            return self._draw(scores)
        mu = self.mu
        token = self._draw(scores)
        if self.grammar.allows(token):
            return token
        self.mu = mu  # the rejected draw does not count
        return self._draw(self._grammar_masked(scores))

    def _grammar_masked(self, scores: np.ndarray, whole: bool = False) -> np.ndarray:
        """scores with every token the grammar rejects here set to -inf.
        When the chain starts with top-k (or is greedy), only the k best
        allowed tokens can matter: they are looked for first by checking
        tokens one by one in order of score (cheap in a permissive state,
        such as inside a string), and the rest are left at -inf too; the
        chain's result is the same. Otherwise (or when the k are not among
        the first few thousand) the grammar's whole allowed set is used.
        `whole` asks for the whole set always."""
        k = 1 if self.params.temperature <= 0 else self.params.top_k
        if not whole and k > 0 and not self.params.mirostat_mode:
            best = self._best_allowed(scores, k)
            if best is not None:
                masked = np.full_like(scores, -np.inf)
                masked[best] = scores[best]
                return masked
        allowed = self.grammar.allowed()
        if len(allowed) == 0:
            raise GrammarError("the grammar allows no token here (the vocabulary cannot "
                               "spell anything it accepts next)")
        masked = np.full_like(scores, -np.inf)
        masked[allowed] = scores[allowed]
        return masked

    def _best_allowed(self, scores: np.ndarray, k: int) -> Optional[np.ndarray]:
        """The k best-scoring tokens the grammar allows (ties: lower id), or
        all allowed ones when fewer; None when the scan gives up."""
        found: List[int] = []
        seen = 0
        for m in _GRAMMAR_SCAN:
            positions, _ = _best_k(scores, m)
            for token in positions[seen:].tolist():
                if self.grammar.allows(token):
                    found.append(token)
                    if len(found) == k:
                        return np.array(found)
            seen = len(positions)
            if seen == len(scores):
                return np.array(found) if found else None
        return None

    def _draw(self, scores: np.ndarray) -> int:
        """One token from processed scores through the chain (or greedy, or
        mirostat)."""
        p = self.params
        if p.temperature <= 0:
            token = int(np.argmax(scores))  # a NaN, else +inf, is the argmax
            _require_samplable(scores[token])
            return token
        if p.mirostat_mode:
            ids, probs = self._mirostat_candidates(scores)
            pick = draw_discrete(probs, self._rng)
            error = -np.log2(probs[pick]) - np.float32(p.mirostat_tau)  # observed - target surprise
            self.mu = np.float32(self.mu - np.float32(p.mirostat_eta) * error)
            return int(ids[pick])
        ids, final = self._chain(scores)
        return int(ids[draw_dist(final, self._rng, top=np.float32(0))])  # best is 0 after temperature

    def distribution(self, logits: npt.ArrayLike,
                     input_ids: Optional[npt.ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The candidates the next draw would choose from and their
        probabilities (float32), in the order the draw walks them. Changes no
        state. Greedy gives the argmax with probability 1."""
        scores = self._scores(logits, input_ids)
        if self.grammar is not None:
            scores = self._grammar_masked(scores, whole=True)
        if self.params.temperature <= 0:
            token = np.argmax(scores)
            _require_samplable(scores[token])
            return np.array([token]), np.ones(1, dtype=np.float32)
        if self.params.mirostat_mode:
            return self._mirostat_candidates(scores)
        ids, final = self._chain(scores)
        allowed = final > -np.inf
        return ids[allowed], softmax(final[allowed])

    def _scores(self, logits, input_ids) -> np.ndarray:
        """Logits after the processors, the bias and the penalties; the
        caller's array is never written to."""
        scores = np.asarray(logits, dtype=np.float32)
        if scores.shape != (self.n_vocab,):
            raise ValueError(f"logits must have shape ({self.n_vocab},), got {scores.shape}")
        p = self.params
        penalties_on = self._counts and (p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0
                                         or p.presence_penalty != 0.0)
        if self.logits_processor is not None:
            if input_ids is None:
                input_ids = np.array(self._history, dtype=np.intc)
            processed = self.logits_processor(np.asarray(input_ids, dtype=np.intc), scores.copy())
            scores = np.array(processed, dtype=np.float32)  # ours to write, whatever it returned
            if scores.shape != (self.n_vocab,):
                raise ValueError(f"logits_processor returned shape {scores.shape}, "
                                 f"expected ({self.n_vocab},)")
        elif len(self._bias_ids) or penalties_on:
            scores = scores.copy()
        if len(self._bias_ids):
            scores[self._bias_ids] += self._bias_values
        if penalties_on:
            tokens = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.int64, count=len(self._counts))
            penalize(scores, tokens, counts,
                     p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
        return scores

    def _chain(self, scores):
        """top-k -> typical -> top-p -> min-p -> temperature."""
        p = self.params
        if p.top_k > 0 and p.typical_p >= 1.0:
            return self._chain_best_first(scores)
        _require_samplable(scores.max())
        ids, logits = top_k(self._vocab_ids, scores, p.top_k)
        ids, logits = typical(ids, logits, p.typical_p)
        ids, logits = top_p(ids, logits, p.top_p)
        ids, logits = min_p(ids, logits, p.min_p)
        return ids, _with_temperature(logits, p.temperature)

    def _chain_best_first(self, scores):
        """The chain when top-k leads and typical is off (the default). top-k's
        list is best first with ties in id order, so top-p and min-p each keep
        a prefix of it: one search and one count over the float32 values
        top_p() and min_p() compute give its length, and the result is theirs
        exactly. Each numpy call costs microseconds with the caches cold after
        a forward pass; this takes a dozen instead of some forty."""
        p = self.params
        ids, logits = _best_k(scores, p.top_k)  # positions are token ids; NaN raises
        _require_samplable(logits[0])
        end = _nucleus_end(logits, p.top_p)
        if p.min_p > 0.0:  # min_p(): logit >= the best + log p, never none
            end = min(end, int(np.count_nonzero(logits >= logits[0] + self._log_min_p)))
        return ids[:end], _with_temperature(logits[:end], p.temperature, top=logits[0])

    def _mirostat_candidates(self, scores):
        """Temperature, then mirostat's truncation at the current mu; the kept
        candidates best first with their renormalized probabilities. Banned
        (-inf) ones are left out: std::discrete_distribution could pick a
        trailing weight-0 candidate when rounding leaves its sums short of 1."""
        _require_samplable(scores.max())
        logits = _with_temperature(scores, self.params.temperature)
        if self.params.mirostat_mode == 1:
            ids, kept = top_k(self._vocab_ids, logits, self._mirostat_v1_k(logits))
        else:
            ids, kept = self._mirostat_v2_keep(logits)
        allowed = kept > -np.inf
        return ids[allowed], softmax(kept[allowed])

    def _mirostat_v1_k(self, logits) -> int:
        """Mirostat v1's k: fit a Zipf exponent s to the best MIROSTAT_M tokens'
        probability ratios, then k = (e 2^mu / (1 - N^-e))^(1/s), e = s - 1."""
        head = top_k(self._vocab_ids, logits, MIROSTAT_M)[1]
        head = head[head > -np.inf]  # a banned token's ratio would be inf or NaN
        n = len(head)
        if n < 2:
            return 1
        # ratios p_i / p_(i+1) need no normalization: log ratio = logit difference
        b = head[:-1] - head[1:]
        i = np.arange(n - 1, dtype=np.float32)
        t = np.log((i + 2) / (i + 1))
        with np.errstate(all="ignore"):
            s = np.float32(np.sum(t * b) / np.sum(t * t))
            eps = s - np.float32(1)
            k = (eps * np.float32(2) ** self.mu
                 / (np.float32(1) - np.float32(self.n_vocab) ** -eps)) ** (np.float32(1) / s)
        if not np.isfinite(k):
            return self.n_vocab
        return int(min(max(int(k), 1), self.n_vocab))

    def _mirostat_v2_keep(self, logits):
        """Mirostat v2 keeps the tokens whose surprise -log2 p is at most mu
        (at least the best one), best first."""
        with np.errstate(divide="ignore"):
            surprise = -np.log2(softmax(logits))
        keep = np.flatnonzero(surprise <= self.mu)
        if len(keep) == 0:
            return top_k(self._vocab_ids, logits, 1)
        order = _best_first(logits, keep)
        return self._vocab_ids[order], logits[order]


def _require_samplable(best_logit) -> None:
    """The best logit (a NaN, if any) must be finite for any token to be drawn.
    Each path finds it its own way, so none pays a second pass over the
    vocabulary for the check."""
    if not math.isfinite(best_logit):
        raise ValueError("no token can be sampled: the logits are all -inf, "
                         "or contain NaN or +inf")


def _with_temperature(logits, temperature, top=None):
    """Logits divided by the temperature, shifted so the best is 0 first: the
    probabilities are the same, and a tiny temperature cannot overflow to inf.
    The best of the result is exactly 0 (draw_dist can be told so)."""
    return (logits - (logits.max() if top is None else top)) / np.float32(temperature)


def _as_processor(processor: ProcessorArg) -> Optional[LogitsProcessor]:
    if processor is None or callable(processor):
        return processor
    return LogitsProcessorList(processor)
