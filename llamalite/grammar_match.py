"""Matching bytes against a compiled grammar, and which tokens may come next.

The matcher follows llama.cpp's: a grammar state is a set of parse stacks
(tuples of element positions, the top being a character class still to
match), and a code point moves every stack whose top admits it. Bytes arrive
one at a time; while a UTF-8 character is incomplete its first bytes are held
in the state (`pending`), and the state lives only if some stack can still
match a character that begins with them, so a token that ends inside a
multi-byte character is accepted when the character can continue.

Speed comes from caching, not from cleverness per token:
- states are interned, so equal states are one object, and each state keeps
  its byte transitions once computed (`_State.next`): checking a token is a
  few dict lookups;
- the tokens a state allows are found by walking a byte trie of the
  vocabulary (shared prefixes walked once, dead branches cut at their first
  byte) and kept per state (`VocabIndex.allowed`), so a grammar that comes
  back to a state (inside a string, between list items) filters for free.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .gbnf import CHAR, END, CompiledGrammar

Stack = Tuple[int, ...]

# How many states' allowed-token lists a VocabIndex keeps (each is up to one
# int32 per token of the vocabulary).
MAX_CACHED_MASKS = 512


class _State:
    """A set of parse stacks plus the bytes of an unfinished character."""
    __slots__ = ("stacks", "pending", "next", "can_end")

    def __init__(self, stacks: FrozenSet[Stack], pending: bytes):
        self.stacks = stacks
        self.pending = pending
        self.next: Dict[int, Optional["_State"]] = {}
        self.can_end = not pending and () in stacks


def _utf8_length(first: int) -> int:
    """Bytes in a character starting with `first`; 0 if no character starts so."""
    if first < 0x80:
        return 1
    if 0xC2 <= first <= 0xDF:
        return 2
    if 0xE0 <= first <= 0xEF:
        return 3
    if 0xF0 <= first <= 0xF4:
        return 4
    return 0


# The payload bits of a first byte, and the smallest code point (no overlong
# forms), by character length.
_FIRST_BITS = {2: 0x1F, 3: 0x0F, 4: 0x07}
_SMALLEST = {2: 0x80, 3: 0x800, 4: 0x10000}


def _code_point_span(prefix: bytes) -> Tuple[int, int]:
    """The lowest and highest code points whose UTF-8 starts with `prefix`
    (lo > hi when none does)."""
    n = _utf8_length(prefix[0])
    value = prefix[0] & _FIRST_BITS[n]
    for byte in prefix[1:]:
        value = (value << 6) | (byte & 0x3F)
    free = 6 * (n - len(prefix))
    lo, hi = value << free, (value << free) | ((1 << free) - 1)
    return max(lo, _SMALLEST[n]), min(hi, 0x10FFFF)


class Matcher:
    """The states of one compiled grammar and the moves between them. Shared
    by every generation under that grammar (states are immutable)."""

    def __init__(self, grammar: CompiledGrammar):
        self.g = grammar
        self._states: Dict[Tuple[FrozenSet[Stack], bytes], _State] = {}
        self._expanded: Dict[Stack, FrozenSet[Stack]] = {}
        start = set()
        for pos in grammar.alternatives[grammar.root]:
            start |= self._expand((pos,))
        self.start = self._intern(frozenset(start), b"")

    def _intern(self, stacks: FrozenSet[Stack], pending: bytes) -> _State:
        key = (stacks, pending)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(stacks, pending)
        return state

    def _expand(self, stack: Stack) -> FrozenSet[Stack]:
        """The stacks `stack` stands for with a character class on top: ends
        pop back to the caller, references push each alternative (the return
        position is left out when nothing follows the reference, so
        right-recursive repetition does not grow the stack). The empty stack
        means the grammar may end here."""
        done = self._expanded.get(stack)
        if done is not None:
            return done
        kinds = self.g.kinds
        out = set()
        todo = [stack]
        while todo:
            s = todo.pop()
            if not s:
                out.add(s)
                continue
            top = s[-1]
            kind = kinds[top]
            if kind == CHAR:
                out.add(s)
            elif kind == END:
                todo.append(s[:-1])
            else:
                rest = s[:-1] if kinds[top + 1] == END else s[:-1] + (top + 1,)
                for start in self.g.alternatives[self.g.refs[top]]:
                    todo.append(rest + (start,))
        result = self._expanded[stack] = frozenset(out)
        return result

    def _admits(self, pos: int, cp: int) -> bool:
        ranges, negated = self.g.classes[pos]
        for lo, hi in ranges:
            if lo <= cp <= hi:
                return not negated
        return negated

    def _admits_some(self, pos: int, lo: int, hi: int) -> bool:
        """Whether the class at `pos` admits any code point in [lo, hi]."""
        ranges, negated = self.g.classes[pos]
        if negated:  # some point of [lo, hi] lies outside every range
            return not any(a <= lo and hi <= b for a, b in ranges)  # ranges are merged
        return any(a <= hi and lo <= b for a, b in ranges)

    def step(self, state: _State, byte: int) -> Optional[_State]:
        """The state after one more byte, or None if the grammar rejects it."""
        if byte in state.next:
            return state.next[byte]
        result = self._step(state, byte)
        state.next[byte] = result
        return result

    def _step(self, state: _State, byte: int) -> Optional[_State]:
        pending = state.pending + bytes([byte])
        need = _utf8_length(pending[0])
        if need == 0 or (len(pending) > 1 and not 0x80 <= byte <= 0xBF):
            return None
        if len(pending) < need:
            lo, hi = _code_point_span(pending)
            if lo > hi or not any(s and self._admits_some(s[-1], lo, hi) for s in state.stacks):
                return None
            return self._intern(state.stacks, pending)
        try:
            cp = ord(pending.decode("utf-8"))
        except UnicodeDecodeError:  # overlong or a surrogate
            return None
        moved = set()
        for s in state.stacks:
            if s and self._admits(s[-1], cp):
                moved |= self._expand(s[:-1] + (s[-1] + 1,))
        if not moved:
            return None
        return self._intern(frozenset(moved), b"")

    def walk(self, state: Optional[_State], data: bytes) -> Optional[_State]:
        """The state after `data`, or None once a byte is rejected."""
        for byte in data:
            if state is None:
                return None
            nxt = state.next.get(byte, _UNSEEN)
            state = self.step(state, byte) if nxt is _UNSEEN else nxt
        return state

    def accepts_text(self, text: str) -> bool:
        """Whether the whole of `text` is a sentence of the grammar."""
        state = self.walk(self.start, text.encode("utf-8"))
        return state is not None and state.can_end


_UNSEEN = object()


class VocabIndex:
    """A vocabulary as a byte trie, for finding every token a grammar state
    allows. Tokens with no bytes (control tokens) are left out: a grammar can
    never take them; end-of-generation tokens are allowed apart, when the
    grammar can end."""

    def __init__(self, pieces: Sequence[bytes], eog: Iterable[int]):
        self.n_vocab = len(pieces)
        self.pieces = list(pieces)
        self.eog = np.array(sorted(eog), dtype=np.int32)
        self.eog_set = frozenset(int(t) for t in self.eog)
        children: List[Dict[int, int]] = [{}]
        ends: List[List[int]] = [[]]
        for token, piece in enumerate(self.pieces):
            if not piece or token in self.eog_set:
                continue
            node = 0
            for byte in piece:
                child = children[node].get(byte)
                if child is None:
                    child = children[node][byte] = len(children)
                    children.append({})
                    ends.append([])
                node = child
            ends[node].append(token)
        self._children = [tuple(c.items()) for c in children]
        self._ends = ends
        self._masks: "OrderedDict[Tuple[Matcher, int], np.ndarray]" = OrderedDict()

    def allowed(self, matcher: Matcher, state: _State) -> np.ndarray:
        """Sorted ids (int32) of the tokens `state` allows, EOG ones included
        when the grammar can end there. Cached per state."""
        key = (matcher, id(state))  # the key holds the matcher, whose table holds the state
        found = self._masks.get(key)
        if found is not None:
            self._masks.move_to_end(key)
            return found
        ids = self._walk(matcher, state)
        if state.can_end:
            ids.extend(int(t) for t in self.eog)
        found = np.array(sorted(ids), dtype=np.int32)
        self._masks[key] = found
        if len(self._masks) > MAX_CACHED_MASKS:
            self._masks.popitem(last=False)
        return found

    def _walk(self, matcher: Matcher, state: _State) -> List[int]:
        children, ends, step = self._children, self._ends, matcher.step
        allowed: List[int] = []
        todo = [(0, state)]
        while todo:
            node, st = todo.pop()
            nexts = st.next
            for byte, child in children[node]:
                nxt = nexts.get(byte, _UNSEEN)
                if nxt is _UNSEEN:
                    nxt = step(st, byte)
                if nxt is None:
                    continue
                if ends[child]:
                    allowed.extend(ends[child])
                if children[child]:
                    todo.append((child, nxt))
        return allowed


class GrammarState:
    """One generation's place in a grammar: checks and accepts tokens, and
    gives the tokens allowed next. EOG tokens are allowed only where the
    grammar can end."""

    def __init__(self, matcher: Matcher, vocab: VocabIndex):
        self.matcher = matcher
        self.vocab = vocab
        self.state = matcher.start

    def next_state(self, token: int) -> Optional[_State]:
        if token in self.vocab.eog_set:
            return self.state if self.state.can_end else None
        piece = self.vocab.pieces[token]
        if not piece:
            return None
        return self.matcher.walk(self.state, piece)

    def allows(self, token: int) -> bool:
        return self.next_state(token) is not None

    def accept(self, token: int) -> None:
        """Move past `token`; a token the grammar rejects is a ValueError."""
        nxt = self.next_state(token)
        if nxt is None:
            raise ValueError(f"token {token} ({self.vocab.pieces[token]!r}) does not fit the "
                             "grammar here")
        self.state = nxt

    def allowed(self) -> np.ndarray:
        return self.vocab.allowed(self.matcher, self.state)

    @property
    def can_end(self) -> bool:
        return self.state.can_end
