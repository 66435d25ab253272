"""JSON schema -> GBNF: a grammar whose sentences are JSON documents the
schema accepts.

Covered: type (one or a list), enum, const; objects (properties, required,
additionalProperties false / true / a schema), arrays (items, prefixItems,
minItems, maxItems), strings (minLength, maxLength, format date, time,
date-time, uuid, email), integers with minimum / maximum (exclusive too),
numbers, booleans, null; anyOf / oneOf (as alternatives: exclusivity is not
enforced, but every document is valid under one of them), allOf (merged);
$ref to "#", "#/$defs/..." and "#/definitions/..." (recursion included).

Properties are written in the schema's order, optional ones may be left out.
When a schema gives properties but says nothing of additionalProperties, no
other properties are written (as llama.cpp does): a subset of what is valid.
Whatever else a grammar cannot express (pattern, multipleOf, bounds on
non-integer numbers, uniqueItems, not, if/then/else, ...) raises GrammarError
naming the keyword, rather than yielding a grammar looser than the schema.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List, Optional

from .errors import GrammarError

# Keywords that describe and do not constrain.
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
                "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "strict"}

_KEYWORDS = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"minLength", "maxLength", "format"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": set(),
    "boolean": set(),
    "null": set(),
}

_PRIMITIVES = {
    "ws": '" "?',
    "char": r'[^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "string": r'"\"" char* "\"" ws',
    "number": r'"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? '
              r'( [eE] [-+]? [0-9]{1,3} )? ws',
    "integer": r'"-"? ( "0" | [1-9] [0-9]{0,15} ) ws',
    "boolean": '( "true" | "false" ) ws',
    "null": '"null" ws',
    "value": "object | array | string | number | boolean | null",
    "object": r'"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws',
    "array": r'"[" ws ( value ( "," ws value )* )? "]" ws',
}
_NEEDS = {"string": ["char", "ws"], "number": ["ws"], "integer": ["ws"], "boolean": ["ws"],
          "null": ["ws"], "value": ["object", "array", "string", "number", "boolean", "null"],
          "object": ["ws", "string", "value"], "array": ["ws", "value"]}

_DATE = r'[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )'
_TIME = (r'( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
         r'( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )')
_FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE} \"T\" {_TIME}",
    "uuid": r'[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}',
    "email": r'[a-zA-Z0-9._%+-]{1,32} "@" [a-zA-Z0-9-]{1,32} ( "." [a-zA-Z]{2,8} ){1,3}',
}

# Digits an unbounded integer may have (as the generic integer rule).
_MAX_DIGITS = 16


def literal(text: str) -> str:
    """A GBNF string literal matching exactly `text`."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _json_literal(value: Any) -> str:
    return literal(json.dumps(value, ensure_ascii=False)) + " ws"


class _Converter:
    def __init__(self, root: Any):
        self.root = root
        self.rules: Dict[str, str] = {}
        self.refs: Dict[str, str] = {}

    # -- rules --

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = _PRIMITIVES[name]
            for need in _NEEDS.get(name, ()):
                self.primitive(need)
        return name

    def rule(self, hint: str, body: str) -> str:
        """A new rule named after `hint`; returns its name."""
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-") or "r"
        name, n = base, 1
        while name in self.rules or name in _PRIMITIVES:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        return name

    def gbnf(self, root_body: str) -> str:
        lines = [f"root ::= {root_body}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    # -- schemas --

    def visit(self, schema: Any, hint: str) -> str:
        """A GBNF expression for the documents `schema` accepts."""
        if schema is True or schema == {}:
            return self.primitive("value")
        if schema is False:
            raise GrammarError(f"{hint}: the schema false accepts nothing")
        if not isinstance(schema, dict):
            raise GrammarError(f"{hint}: a schema is an object or a boolean, not {schema!r}")
        if "$ref" in schema:
            return self.ref(schema, hint)
        if "allOf" in schema:
            return self.visit(self.merged(schema, hint), hint)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                options = schema[key]
                if not isinstance(options, list) or not options:
                    raise GrammarError(f"{hint}: {key} must be a non-empty list of schemas")
                alts = [self.visit({**rest, **o} if isinstance(o, dict) else o, f"{hint}-{i}")
                        for i, o in enumerate(options)]
                return "( " + " | ".join(alts) + " )"
        if "const" in schema:
            self.primitive("ws")
            return _json_literal(schema["const"])
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise GrammarError(f"{hint}: enum must be a non-empty list")
            self.primitive("ws")
            return "( " + " | ".join(_json_literal(v) for v in schema["enum"]) + " )"
        types = schema.get("type")
        if types is None:
            types = ("object" if "properties" in schema or "additionalProperties" in schema
                     else "array" if "items" in schema or "prefixItems" in schema
                     else None)
        if types is None:
            self.check_keywords(schema, set(), hint)
            return self.primitive("value")
        if isinstance(types, list):
            alts = [self.visit({**schema, "type": t}, f"{hint}-{t}") for t in types]
            return "( " + " | ".join(alts) + " )"
        if types not in _KEYWORDS:
            raise GrammarError(f"{hint}: unknown type {types!r}")
        self.check_keywords(schema, _KEYWORDS[types] | {"type"}, hint)
        return getattr(self, "visit_" + types)(schema, hint)

    def check_keywords(self, schema: dict, allowed: set, hint: str) -> None:
        for key in schema:
            if key not in allowed and key not in _ANNOTATIONS:
                raise GrammarError(f"{hint}: the JSON schema keyword {key!r} cannot be "
                                   "expressed as a grammar here")

    def ref(self, schema: dict, hint: str) -> str:
        target = schema["$ref"]
        if len(schema) > 1 and set(schema) - {"$ref"} - _ANNOTATIONS:
            raise GrammarError(f"{hint}: keywords beside $ref are not supported")
        if target not in self.refs:
            name = self.rule("ref-" + target.rsplit("/", 1)[-1], "")
            self.refs[target] = name
            self.rules[name] = self.visit(self.resolve(target, hint), name)
        return self.refs[target]

    def resolve(self, target: str, hint: str) -> Any:
        if target == "#":
            return self.root
        if not isinstance(target, str) or not target.startswith("#/"):
            raise GrammarError(f"{hint}: only local $refs (#/...) are supported, not {target!r}")
        node = self.root
        for part in target[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise GrammarError(f"{hint}: $ref {target!r} points at nothing")
            node = node[part]
        return node

    def merged(self, schema: dict, hint: str) -> dict:
        """allOf folded into one schema: properties and required joined,
        other keywords must agree."""
        out = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            while isinstance(part, dict) and "$ref" in part:
                part = self.resolve(part["$ref"], hint)
            if not isinstance(part, dict):
                raise GrammarError(f"{hint}: allOf must list schema objects")
            for key, value in part.items():
                if key == "properties":
                    out["properties"] = {**out.get("properties", {}), **value}
                elif key == "required":
                    out["required"] = list(dict.fromkeys([*out.get("required", []), *value]))
                elif key in out and out[key] != value and key not in _ANNOTATIONS:
                    raise GrammarError(f"{hint}: allOf parts disagree on {key!r}")
                else:
                    out[key] = value
        return out

    # -- types --

    def visit_null(self, schema, hint):
        return self.primitive("null")

    def visit_boolean(self, schema, hint):
        return self.primitive("boolean")

    def visit_number(self, schema, hint):
        return self.primitive("number")

    def visit_integer(self, schema, hint):
        lo, hi = _int_bounds(schema, hint)
        if lo is None and hi is None:
            return self.primitive("integer")
        self.primitive("ws")
        return self.rule(hint, "( " + integer_range(lo, hi) + " ) ws")

    def visit_string(self, schema, hint):
        fmt = schema.get("format")
        if fmt is not None:
            if fmt not in _FORMATS:
                raise GrammarError(f"{hint}: string format {fmt!r} is not supported (only "
                                   f"{', '.join(_FORMATS)})")
            if "minLength" in schema or "maxLength" in schema:
                raise GrammarError(f"{hint}: minLength/maxLength with a format is not supported")
            self.primitive("ws")
            return self.rule(hint, '"\\"" ' + _FORMATS[fmt] + ' "\\"" ws')
        lo = _count(schema, "minLength", 0, hint)
        hi = _count(schema, "maxLength", None, hint)
        if lo == 0 and hi is None:
            return self.primitive("string")
        if hi is not None and hi < lo:
            raise GrammarError(f"{hint}: maxLength is below minLength")
        self.primitive("char")
        self.primitive("ws")
        return self.rule(hint, f'"\\"" char{{{lo},{"" if hi is None else hi}}} "\\"" ws')

    def visit_array(self, schema, hint):
        lo = _count(schema, "minItems", 0, hint)
        hi = _count(schema, "maxItems", None, hint)
        if hi is not None and hi < lo:
            raise GrammarError(f"{hint}: maxItems is below minItems")
        self.primitive("ws")
        prefix = schema.get("prefixItems", [])
        items = [self.visit(s, f"{hint}-{i}") for i, s in enumerate(prefix)]
        rest = schema.get("items", True)
        if isinstance(rest, list):
            raise GrammarError(f"{hint}: items as a list (draft 4 tuples) is not supported; "
                               "write prefixItems")
        rest_expr = None if rest is False else self.visit(rest, f"{hint}-item")
        # lists of n items for every allowed n, written as a chain of optionals
        body = self.items_from(0, items, rest_expr, lo, hi)
        return self.rule(hint, f'"[" ws {body} "]" ws')

    def items_from(self, i: int, fixed: List[str], rest: Optional[str], lo: int,
                   hi: Optional[int]) -> str:
        """The items from position i on (i > 0: each after a comma)."""
        sep = '"," ws ' if i else ""
        if hi is not None and i >= hi:
            return ""
        if i < len(fixed):
            tail = self.items_from(i + 1, fixed, rest, lo, hi)
            one = f"{sep}{fixed[i]} {tail}".strip()
        elif rest is None:
            if i < lo:
                raise GrammarError("minItems asks for more items than prefixItems allows")
            return ""
        else:
            more_lo = max(lo - i - 1, 0)
            more_hi = "" if hi is None else hi - i - 1
            one = f'{sep}{rest} ( "," ws {rest} ){{{more_lo},{more_hi}}}'
        return f"( {one} )" if i < lo else f"( {one} )?"

    def visit_object(self, schema, hint):
        props = dict(schema.get("properties", {}))
        required = schema.get("required", [])
        if not isinstance(props, dict) or not isinstance(required, list):
            raise GrammarError(f"{hint}: properties must be an object, required a list")
        for name in required:
            props.setdefault(name, True)
        extra = schema.get("additionalProperties")
        if not props and extra is None:
            return self.primitive("object")
        self.primitive("ws")
        kvs = [(self.rule(f"{hint}-{name}-kv",
                          f'{literal(json.dumps(name, ensure_ascii=False))} ws ":" ws '
                          f'{self.visit(s, f"{hint}-{name}")}'), name in required)
               for name, s in props.items()]
        extra_kv = None
        if extra not in (None, False):
            key = self.key_except(list(props), hint)
            extra_kv = self.rule(f"{hint}-extra-kv",
                                 f'{key} ":" ws {self.visit(extra, f"{hint}-extra")}')
        body = self.members(kvs, extra_kv, hint)
        return self.rule(hint, f'"{{" ws {body} "}}" ws')

    def members(self, kvs, extra_kv, hint) -> str:
        """Declared properties in order (optional ones may be skipped), then
        any extra ones, commas only between what is written. Two rules per
        position: `after` (something was written before) and `first`."""
        after = f'( "," ws {extra_kv} )*' if extra_kv else ""
        first = f"( {extra_kv} {after} )?" if extra_kv else ""
        for i in range(len(kvs) - 1, -1, -1):
            kv, req = kvs[i]
            after_name = self.rule(f"{hint}-after-{i}", after or '""')
            first_name = self.rule(f"{hint}-first-{i}", first or '""')
            if req:
                after, first = f'"," ws {kv} {after_name}', f"{kv} {after_name}"
            else:
                after = f'( "," ws {kv} )? {after_name}'
                first = f"{kv} {after_name} | {first_name}"
        return f"( {first} )" if first else ""

    def key_except(self, names: List[str], hint: str) -> str:
        """A JSON string (plain characters, no escapes) that is none of `names`."""
        free = r'[^"\\\x00-\x1F]'
        self.primitive("ws")
        if not names:
            return self.rule(f"{hint}-key", f'"\\"" {free}* "\\"" ws')

        def node(prefix: str) -> str:
            nexts = sorted({n[len(prefix)] for n in names
                            if n.startswith(prefix) and len(n) > len(prefix)})
            alts = [] if prefix in names else ['"\\"" ws']
            alts += [f"{literal(c)} {node(prefix + c)}" for c in nexts]
            others = "".join(_class_char(c) for c in nexts)
            alts.append(f'[^"\\\\\\x00-\\x1F{others}] {free}* "\\"" ws')
            return self.rule(f"{hint}-key", " | ".join(alts))

        return f'"\\"" {node("")}'


def _class_char(c: str) -> str:
    if c in "\\]^-[":
        return "\\" + c
    return c


def _count(schema: dict, key: str, default: Optional[int], hint: str) -> Optional[int]:
    value = schema.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GrammarError(f"{hint}: {key} must be a count >= 0, got {value!r}")
    return value


def _int_bounds(schema: dict, hint: str):
    lo = hi = None
    for key, shift, is_lo in (("minimum", 0, True), ("exclusiveMinimum", 1, True),
                              ("maximum", 0, False), ("exclusiveMaximum", -1, False)):
        if key not in schema:
            continue
        value = schema[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GrammarError(f"{hint}: {key} must be a number, got {value!r}")
        bound = (math.ceil(value) if value != int(value) else int(value) + shift) if is_lo \
            else (math.floor(value) if value != int(value) else int(value) + shift)
        if is_lo:
            lo = bound if lo is None else max(lo, bound)
        else:
            hi = bound if hi is None else min(hi, bound)
    if lo is not None and hi is not None and lo > hi:
        raise GrammarError(f"{hint}: no integer lies between the bounds")
    return lo, hi


# --- integer ranges -----------------------------------------------------------------

def integer_range(lo: Optional[int], hi: Optional[int]) -> str:
    """GBNF for the decimal integers in [lo, hi] (None: unbounded, up to
    _MAX_DIGITS digits), without leading zeros or -0."""
    alts = []
    if lo is None or lo < 0:
        neg_hi = None if lo is None else -lo            # magnitudes of the negatives
        neg_lo = 1 if hi is None or hi >= 0 else -hi
        if neg_hi is None or neg_lo <= neg_hi:
            alts.append('"-" ( ' + _natural_range(neg_lo, neg_hi) + " )")
    if hi is None or hi >= 0:
        alts.append(_natural_range(max(lo or 0, 0) if lo is not None else 0, hi))
    return " | ".join(alts)


def _natural_range(lo: int, hi: Optional[int]) -> str:
    """GBNF for the naturals in [lo, hi] (hi None: up to _MAX_DIGITS digits)."""
    alts = []
    top = hi if hi is not None else 10 ** _MAX_DIGITS - 1
    for digits in range(len(str(lo)), len(str(top)) + 1):
        first = 0 if digits == 1 else 10 ** (digits - 1)
        a, b = max(lo, first), min(top, 10 ** digits - 1)
        if a <= b:
            alts.append(_same_length(str(a), str(b)))
    return " | ".join(alts)


def _same_length(a: str, b: str) -> str:
    """GBNF for the numbers from a to b, both with the same number of digits."""
    if not a:
        return '""'
    if a[0] == b[0]:
        if len(a) == 1:
            return f'"{a[0]}"'
        return f'"{a[0]}" ( {_same_length(a[1:], b[1:])} )'
    n = len(a) - 1
    if a[1:] == "0" * n and b[1:] == "9" * n:
        return f"[{a[0]}-{b[0]}]" + (f" [0-9]{{{n}}}" if n else "")
    parts = [f'"{a[0]}" ( {_same_length(a[1:], "9" * n)} )' if n else f'"{a[0]}"']
    if int(b[0]) - int(a[0]) > 1:
        parts.append(f"[{int(a[0]) + 1}-{int(b[0]) - 1}]" + (f" [0-9]{{{n}}}" if n else ""))
    parts.append(f'"{b[0]}" ( {_same_length("0" * n, b[1:])} )' if n else f'"{b[0]}"')
    return " | ".join(parts)


def schema_to_gbnf(schema: Any, before: str = "", after: str = "") -> str:
    """GBNF (rule `root`) for the JSON documents `schema` accepts, between
    the fixed texts `before` and `after`."""
    converter = _Converter(schema)
    body = converter.visit(schema, "root-value")
    return converter.gbnf(" ".join(p for p in (before and literal(before), body,
                                                after and literal(after)) if p))
