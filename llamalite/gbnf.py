"""GBNF, llama.cpp's grammar notation, parsed and compiled to flat elements.

    root   ::= item ("," ws item)*      # rules, sequences, alternatives, groups
    item   ::= [a-z]+ | "\\"" [^"]* "\\""  # literals, classes (ranges, ^ negation), escapes
    ws     ::= [ \\t\\n]{0,4}               # * + ? {m} {m,} {m,n} repetition, . any char

A compiled grammar is one flat list of elements: each rule alternative is a
run of CHAR (a code point class) and REF (another rule) elements closed by an
END. Repetitions and groups become generated rules, as llama.cpp builds them,
so the matcher (grammar_match.py) only ever sees characters, references and
ends. A position in that list is an int; a parse stack is a tuple of them.

Mistakes in a grammar raise GrammarError naming the line and column.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import GrammarError

END, CHAR, REF = 0, 1, 2

# Repetitions beyond this many copies would make grammars (and their matching)
# enormous; llama.cpp refuses such counts too.
MAX_REPETITIONS = 2000

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]",
            "-": "-", "/": "/", "'": "'", "^": "^"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


# --- the parse tree --------------------------------------------------------------
#
# An item is one of:
#   ("chars", ranges, negated)      a class: ranges are (lo, hi) code points
#   ("ref", name, (line, col))      a rule reference, with where it was written
#   ("group", alternatives)         parentheses; alternatives are lists of items
#   ("repeat", item, lo, hi)        hi None: unbounded

def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    # -- positions and errors --

    def where(self, pos: Optional[int] = None) -> Tuple[int, int]:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        return line, pos - (self.text.rfind("\n", 0, pos) + 1) + 1

    def error(self, message: str, pos: Optional[int] = None) -> GrammarError:
        line, col = self.where(pos)
        return GrammarError(f"grammar line {line}, column {col}: {message}")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def skip_space(self, newlines: bool) -> None:
        """Skip blanks and comments; line breaks only where `newlines`."""
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            else:
                return

    # -- rules --

    def rules(self) -> List[Tuple[str, list, Tuple[int, int]]]:
        out = []
        self.skip_space(True)
        while self.pos < len(self.text):
            where = self.where()
            name = self.name()
            self.skip_space(False)
            if self.peek(3) != "::=":
                raise self.error("expected '::=' after the rule name")
            self.pos += 3
            self.skip_space(True)
            out.append((name, self.alternatives(nested=False), where))
            if self.pos < len(self.text) and self.peek() not in "\r\n":
                raise self.error(f"expected the end of the line, found {self.peek()!r}")
            self.skip_space(True)
        return out

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _is_name_char(self.text[self.pos]):
            self.pos += 1
        if self.pos == start:
            found = self.peek() or "the end of the grammar"
            raise self.error(f"expected a rule name, found {found!r}")
        return self.text[start:self.pos]

    def alternatives(self, nested: bool) -> list:
        alts = [self.sequence(nested)]
        while self.peek() == "|":
            self.pos += 1
            self.skip_space(True)
            alts.append(self.sequence(nested))
        return alts

    def sequence(self, nested: bool) -> list:
        items: list = []
        while self.pos < len(self.text):
            c = self.peek()
            start = self.pos
            if c == '"':
                self.pos += 1
                items.extend(("chars", ((cp, cp),), False) for cp in self.literal())
            elif c == "[":
                self.pos += 1
                items.append(self.char_class())
            elif c == ".":
                self.pos += 1
                items.append(("chars", (), True))
            elif c == "(":
                self.pos += 1
                self.skip_space(True)
                alts = self.alternatives(nested=True)
                if self.peek() != ")":
                    raise self.error("expected ')' to close the group opened", start)
                self.pos += 1
                items.append(("group", alts))
            elif c in "*+?{":
                if not items:
                    raise self.error(f"{c!r} has nothing before it to repeat")
                items.append(self.repeat(items.pop()))
            elif c == "<":
                raise self.error("token references (<...>) are not supported")
            elif _is_name_char(c):
                where = self.where()
                items.append(("ref", self.name(), where))
            else:
                break
            self.skip_space(nested)
        return items

    def literal(self) -> List[int]:
        out = []
        while True:
            if self.pos >= len(self.text) or self.peek() in "\r\n":
                raise self.error("unterminated string literal")
            if self.peek() == '"':
                self.pos += 1
                return out
            out.append(self.char())

    def char(self) -> int:
        """One code point of a literal or class, escapes decoded."""
        c = self.peek()
        if c != "\\":
            self.pos += 1
            return ord(c)
        start = self.pos
        e = self.text[self.pos + 1:self.pos + 2]
        if e in _ESCAPES:
            self.pos += 2
            return ord(_ESCAPES[e])
        if e in _HEX_DIGITS:
            n = _HEX_DIGITS[e]
            digits = self.text[self.pos + 2:self.pos + 2 + n]
            if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(f"\\{e} needs {n} hex digits", start)
            value = int(digits, 16)
            if value > 0x10FFFF:
                raise self.error(f"\\{e}{digits} is beyond the last code point U+10FFFF", start)
            self.pos += 2 + n
            return value
        raise self.error(f"unknown escape \\{e or '(end)'}", start)

    def char_class(self):
        start = self.pos - 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges = []
        while self.peek() != "]":
            if self.pos >= len(self.text):
                raise self.error("unterminated character class", start)
            lo = self.char()
            hi = lo
            if self.peek() == "-" and self.text[self.pos + 1:self.pos + 2] not in ("]", ""):
                self.pos += 1
                if self.pos >= len(self.text):
                    raise self.error("unterminated character class", start)
                hi = self.char()
                if hi < lo:
                    raise self.error(f"range {chr(lo)!r}-{chr(hi)!r} runs backwards", start)
            ranges.append((lo, hi))
        self.pos += 1
        if not ranges and not negated:
            raise self.error("empty character class matches nothing", start)
        return ("chars", tuple(ranges), negated)

    def repeat(self, item):
        c = self.peek()
        self.pos += 1
        if c != "{":
            return ("repeat", item, 0 if c in "*?" else 1, 1 if c == "?" else None)
        start = self.pos - 1
        self.skip_space(True)
        lo = self.integer()
        hi: Optional[int] = lo
        self.skip_space(True)
        if self.peek() == ",":
            self.pos += 1
            self.skip_space(True)
            hi = self.integer() if self.peek().isdigit() else None
            self.skip_space(True)
        if self.peek() != "}":
            raise self.error("expected '}' to close the repetition", start)
        self.pos += 1
        if hi is not None and hi < lo:
            raise self.error(f"repetition {{{lo},{hi}}} has its maximum below its minimum", start)
        if max(lo, hi or 0) > MAX_REPETITIONS:
            raise self.error(f"repetition counts above {MAX_REPETITIONS} are not supported", start)
        return ("repeat", item, lo, hi)

    def integer(self) -> int:
        start = self.pos
        while self.peek().isdigit() and self.peek().isascii():
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a number")
        return int(self.text[start:self.pos])


# --- compiling to flat elements --------------------------------------------------

@dataclass
class CompiledGrammar:
    """Rules as runs of elements. kinds[i] is END, CHAR or REF; for CHAR,
    classes[i] is (merged ranges, negated); for REF, refs[i] is a rule id.
    alternatives[r] are the start positions of rule r's alternatives."""
    kinds: List[int]
    classes: Dict[int, Tuple[Tuple[Tuple[int, int], ...], bool]]
    refs: Dict[int, int]
    alternatives: List[List[int]]
    names: List[str]
    root: int
    origins: Dict[str, str]  # generated rule -> the written rule it came from


class _Compiler:
    def __init__(self, parsed, root: str):
        self.ids: Dict[str, int] = {}
        self.names: List[str] = []
        self.bodies: List[Optional[list]] = []
        self.origins: Dict[str, str] = {}
        for name, alts, where in parsed:
            if name in self.ids and self.bodies[self.ids[name]] is not None:
                line, col = where
                raise GrammarError(f"grammar line {line}, column {col}: rule {name!r} "
                                   "is defined twice")
            self.bodies[self._rule_id(name)] = alts
        if root not in self.ids:
            raise GrammarError(f"the grammar has no {root!r} rule to start from")
        self.root = self.ids[root]

    def _rule_id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
            self.bodies.append(None)
        return self.ids[name]

    def _new_rule(self, base: str, alts: list) -> int:
        n = 1
        while f"{base}-{n}" in self.ids:
            n += 1
        rid = self._rule_id(f"{base}-{n}")
        self.origins[f"{base}-{n}"] = self.origins.get(base, base)
        self.bodies[rid] = alts
        return rid

    def compile(self) -> CompiledGrammar:
        kinds: List[int] = []
        classes, refs = {}, {}
        alternatives: List[List[int]] = []
        r = 0
        while r < len(self.bodies):  # generated rules are appended as we go
            starts = []
            for alt in self.bodies[r]:
                starts.append(len(kinds))
                for kind, value in self._flat(alt, self.names[r]):
                    if kind == CHAR:
                        classes[len(kinds)] = value
                    elif kind == REF:
                        refs[len(kinds)] = value
                    kinds.append(kind)
                kinds.append(END)
            alternatives.append(starts)
            r += 1
        return CompiledGrammar(kinds, classes, refs, alternatives, list(self.names), self.root,
                               self.origins)

    def _flat(self, items: list, rule: str):
        """(kind, value) of each element of a sequence; groups and
        repetitions become references to generated rules."""
        for item in items:
            tag = item[0]
            if tag == "chars":
                yield CHAR, (_merged(item[1]), item[2])
            elif tag == "ref":
                name, (line, col) = item[1], item[2]
                if name not in self.ids or self.bodies[self.ids[name]] is None:
                    raise GrammarError(f"grammar line {line}, column {col}: undefined rule "
                                       f"{name!r}")
                yield REF, self.ids[name]
            elif tag == "group":
                yield REF, self._new_rule(rule, item[1])
            else:
                yield from self._flat(self._repetition(item, rule), rule)

    def _repetition(self, item, rule: str) -> list:
        """x{lo,hi} as lo copies of x, then a generated rule for the rest:
        unbounded, R ::= x R | (nothing); bounded, nested optionals
        R1 ::= x | (nothing), Rk ::= x R(k-1) | (nothing)."""
        _, inner, lo, hi = item
        if inner[0] in ("group", "repeat"):  # copied below: make it one reference
            inner = ("ref", self.names[self._new_rule(rule, [[inner]])], (0, 0))
        out = [inner] * lo
        if hi is None:
            rid = self._new_rule(rule, [])
            self.bodies[rid] = [[inner, ("ref", self.names[rid], (0, 0))], []]
            out.append(("ref", self.names[rid], (0, 0)))
        elif hi > lo:
            tail = None
            for _ in range(hi - lo):
                seq = [inner] if tail is None else [inner, ("ref", self.names[tail], (0, 0))]
                tail = self._new_rule(rule, [seq, []])
            out.append(("ref", self.names[tail], (0, 0)))
        return out


def _merged(ranges) -> Tuple[Tuple[int, int], ...]:
    """Ranges sorted with overlapping or touching ones joined."""
    out: List[List[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _check_left_recursion(g: CompiledGrammar) -> None:
    """Refuse rules that can reach themselves without consuming a character:
    matching them would recurse forever."""
    n = len(g.alternatives)
    nullable = [False] * n
    changed = True
    while changed:
        changed = False
        for r in range(n):
            if not nullable[r] and any(_nullable_run(g, s, nullable) for s in g.alternatives[r]):
                nullable[r] = changed = True
    firsts = [set() for _ in range(n)]  # rules reachable at the left edge
    for r in range(n):
        for pos in g.alternatives[r]:
            while g.kinds[pos] == REF:
                firsts[r].add(g.refs[pos])
                if not nullable[g.refs[pos]]:
                    break
                pos += 1
    for r in range(n):
        seen, todo = set(), list(firsts[r])
        while todo:
            x = todo.pop()
            if x == r:
                raise GrammarError(f"rule {_user_name(g, r)!r} is left-recursive (it can reach "
                                   "itself before matching any character)")
            if x not in seen:
                seen.add(x)
                todo.extend(firsts[x])


def _user_name(g: CompiledGrammar, r: int) -> str:
    """The rule as written: a generated rule (a group or repetition) is named
    after the rule it came from."""
    return g.origins.get(g.names[r], g.names[r])


def _nullable_run(g: CompiledGrammar, pos: int, nullable: List[bool]) -> bool:
    while g.kinds[pos] != END:
        if g.kinds[pos] == CHAR or not nullable[g.refs[pos]]:
            return False
        pos += 1
    return True


def parse(text: str, root: str = "root") -> CompiledGrammar:
    """Parse and compile GBNF text, starting at rule `root`."""
    if not isinstance(text, str):
        raise GrammarError(f"a grammar is GBNF text (str), not {type(text).__name__}")
    parser = _Parser(text)
    parsed = parser.rules()
    if not parsed:
        raise GrammarError("the grammar is empty: it has no rules")
    compiled = _Compiler(parsed, root).compile()
    _check_left_recursion(compiled)
    return compiled
