"""LlamaGrammar: GBNF grammars for constrained sampling, as llama-cpp-python's.

    from llamalite import Llama, LlamaGrammar
    grammar = LlamaGrammar.from_string('root ::= "yes" | "no"')
    llm("Is the sky blue? Answer: ", grammar=grammar)

A grammar is parsed and checked once (gbnf.py); its matcher (grammar_match.py)
is shared by every generation that uses it, so states and the tokens they
allow, once worked out, serve later calls too.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from .errors import GrammarError, InvalidArgumentError
from .gbnf import parse
from .grammar_match import GrammarState, Matcher, VocabIndex

#: Rules for JSON values (value, object, array, string, number, ws) to build
#: grammars on; whitespace between tokens is bounded so a small model cannot
#: pad forever.
JSON_RULES = r"""
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws
array  ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" ( [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\"" ws
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )? ws
ws     ::= ( " " | "\n" [ \t]{0,8} )?
"""

#: A JSON object (what response_format json_object asks for).
JSON_GBNF = "root ::= object" + JSON_RULES

#: A JSON array.
JSON_ARR_GBNF = "root ::= array" + JSON_RULES

#: Any JSON value.
JSON_VALUE_GBNF = "root ::= value" + JSON_RULES


class LlamaGrammar:
    """A parsed GBNF grammar (`grammar` holds its text). Build one with
    from_string, from_file or from_json_schema; pass it as `grammar=`."""

    def __init__(self, *args: Any, _grammar: str, root: str = "root", **kwargs: Any):
        self.grammar = _grammar
        self.root = root
        self._compiled = parse(_grammar, root)
        self._matcher = Matcher(self._compiled)

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        """Parse GBNF text (rule `root` starts it). GrammarError on mistakes."""
        return cls(_grammar=grammar)

    @classmethod
    def from_file(cls, file: Union[str, os.PathLike], verbose: bool = True) -> "LlamaGrammar":
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise GrammarError(f"cannot read grammar file {os.fspath(file)!r}: {e}") from None
        return cls.from_string(text, verbose=verbose)

    @classmethod
    def from_json_schema(cls, json_schema: Union[str, dict],
                         verbose: bool = True) -> "LlamaGrammar":
        """A grammar for the JSON documents a JSON schema (text, or a dict)
        accepts; GrammarError for what a grammar cannot express."""
        from .json_schema import schema_to_gbnf
        if isinstance(json_schema, (str, bytes)):
            try:
                json_schema = json.loads(json_schema)
            except ValueError as e:
                raise GrammarError(f"the JSON schema is not valid JSON: {e}") from None
        return cls.from_string(schema_to_gbnf(json_schema), verbose=verbose)

    @classmethod
    def json(cls) -> "LlamaGrammar":
        """Any JSON object."""
        return cls.from_string(JSON_GBNF)

    @classmethod
    def json_array(cls) -> "LlamaGrammar":
        """Any JSON array."""
        return cls.from_string(JSON_ARR_GBNF)

    def matches(self, text: str) -> bool:
        """Whether the whole of `text` is a sentence of the grammar."""
        return self._matcher.accepts_text(text)

    def state(self, vocab: VocabIndex) -> GrammarState:
        """A fresh place at the grammar's start, for one generation."""
        return GrammarState(self._matcher, vocab)

    def __repr__(self) -> str:
        return f"<LlamaGrammar {len(self._compiled.names)} rules>"


@functools.lru_cache(maxsize=32)
def cached_grammar(gbnf: str) -> LlamaGrammar:
    """The grammar of GBNF text, kept for the next call with the same text
    (a server sees the same schema request after request): its states and
    allowed-token lists are then already worked out."""
    return LlamaGrammar.from_string(gbnf)


def as_grammar(grammar: Any) -> LlamaGrammar:
    """A LlamaGrammar from what a caller passed as `grammar=` (a LlamaGrammar
    or GBNF text)."""
    if isinstance(grammar, LlamaGrammar):
        return grammar
    if isinstance(grammar, str):
        return cached_grammar(grammar)
    raise GrammarError(f"grammar must be a LlamaGrammar or GBNF text, not {type(grammar).__name__}")


def response_format_grammar(response_format: Any) -> Optional[LlamaGrammar]:
    """The grammar an OpenAI response_format asks for: None for text;
    {"type": "json_object"} any JSON object, or with "schema" (as
    llama-cpp-python) that schema's documents; {"type": "json_schema",
    "json_schema": {"name", "schema", "strict"}} the schema's documents."""
    from .json_schema import schema_to_gbnf
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or "type" not in response_format:
        raise InvalidArgumentError(f"response_format must be an object with a type, got "
                                   f"{response_format!r}")
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        return cached_grammar(JSON_GBNF if schema is None else schema_to_gbnf(schema))
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidArgumentError('response_format json_schema needs "json_schema": '
                                       '{"name": ..., "schema": {...}}')
        return cached_grammar(schema_to_gbnf(spec["schema"]))
    raise InvalidArgumentError(f"response_format type {kind!r}: expected text, json_object "
                               "or json_schema")
