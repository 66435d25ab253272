"""JSON schema -> grammar: what the translation accepts and refuses, and
seeded generations on SmolLM2 that must validate with the jsonschema package."""
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llamalite import GrammarError, InvalidArgumentError, Llama, LlamaGrammar
from llamalite.json_schema import integer_range

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "home": {"type": "object",
                 "properties": {"city": {"type": "string", "maxLength": 6},
                                "main": {"type": "boolean"}},
                 "required": ["city"]},
    },
    "required": ["name", "age", "home"],
}
SCHEMAS = {
    "nested objects": PERSON,
    "bounded arrays": {"type": "array", "minItems": 2, "maxItems": 4,
                       "items": {"type": "integer", "minimum": -5, "maximum": 50}},
    "enums": {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]}, "size": {"enum": [1, 2, None, True]},
        "kind": {"const": "hat"}}, "required": ["color", "size", "kind"]},
    "anyOf": {"type": "object", "properties": {"value": {"anyOf": [
        {"type": "boolean"}, {"type": "string", "maxLength": 6},
        {"type": "array", "items": {"type": "null"}, "maxItems": 2}]}},
        "required": ["value"], "additionalProperties": False},
    "$ref": {"$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 9},
        "y": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x", "y"]}},
        "type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 1, "maxItems": 2},
}


def accepts(schema, doc) -> bool:
    return LlamaGrammar.from_json_schema(schema).matches(json.dumps(doc, ensure_ascii=False))


@pytest.mark.parametrize("lo, hi", [(0, None), (-5, 17), (3, 250), (None, -3), (-100, -7),
                                    (290, 300), (None, None), (10, 10), (-1, 0), (99, 1000)])
def test_integer_ranges_hold_exactly_their_numbers(lo, hi):
    g = LlamaGrammar.from_string("root ::= " + integer_range(lo, hi))
    for n in range(-1100, 1100):
        assert g.matches(str(n)) == ((lo is None or n >= lo) and (hi is None or n <= hi)), n
    assert not g.matches("-0") and not g.matches("007")


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_documents_are_accepted_exactly_when_valid(name):
    schema = SCHEMAS[name]
    docs = [
        {"name": "Ann", "age": 30, "home": {"city": "Oslo"}},
        {"name": "Ann", "age": 30, "home": {"city": "Oslo", "main": False}},
        {"name": "", "age": 30, "home": {"city": "Oslo"}},
        {"name": "Ann", "age": 121, "home": {"city": "Oslo"}},
        {"name": "Ann", "home": {"city": "Oslo"}},
        [1, 2], [1, 2, 3, 4, 5], [0], [-6, 0], [50, -5, 7],
        {"color": "red", "size": None, "kind": "hat"}, {"color": "pink", "size": 1, "kind": "hat"},
        {"value": True}, {"value": "abcdefg"}, {"value": [None, None]}, {"value": 1},
        {"value": True, "other": 1},
        [{"x": 1, "y": 2}, {"x": 9, "y": 0}], [{"x": 1}], [{"x": 1, "y": 10}],
    ]
    for doc in docs:
        valid = jsonschema.Draft202012Validator(schema).is_valid(doc)
        assert accepts(schema, doc) == valid, doc


def test_object_members_optional_required_and_extra():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "null"},
                                               "c": {"type": "boolean"}},
              "required": ["b"], "additionalProperties": {"type": "string"}}
    assert accepts(schema, {"b": None})
    assert accepts(schema, {"a": 1, "b": None, "c": True, "zz": "x", "ab": "y"})
    assert not accepts(schema, {"a": 1})
    assert not accepts(schema, {"b": None, "zz": 1})
    declared_a_as_extra = '{"b": null, "a": "x"}'
    assert not LlamaGrammar.from_json_schema(schema).matches(declared_a_as_extra)
    assert accepts({"type": "object"}, {"any": [1, {"thing": None}]})
    assert not accepts({"type": "object", "properties": {"a": {"type": "null"}}}, {"x": None})


def test_recursion_allof_types_and_formats():
    tree = {"$ref": "#/definitions/node", "definitions": {"node": {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#/definitions/node"}}},
        "required": ["kids"]}}}
    assert accepts(tree, {"kids": [{"kids": []}, {"kids": [{"kids": []}]}]})
    merged = {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}},
                         "required": ["a"]},
                        {"properties": {"b": {"type": "string"}}, "required": ["b"]}]}
    assert accepts(merged, {"a": 1, "b": "x"}) and not accepts(merged, {"a": 1})
    nullable = {"type": ["string", "null"]}
    assert accepts(nullable, None) and not accepts(nullable, 1)
    for fmt, good, bad in [("date", "2024-02-29", "2024-13-01"),
                           ("date-time", "2024-05-01T12:30:00Z", "2024-05-01 12:30"),
                           ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123"),
                           ("time", "23:59:59+01:00", "24:00:00Z")]:
        assert accepts({"type": "string", "format": fmt}, good)
        assert not accepts({"type": "string", "format": fmt}, bad)
    assert accepts({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}, 2)
    assert not accepts({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}, 3)


@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "^a+$"}, "'pattern'"),
    ({"type": "number", "minimum": 0.5}, "'minimum'"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"not": {"type": "null"}}, "'not'"),
    ({"type": "string", "format": "hostname"}, "format 'hostname'"),
    ({"$ref": "https://example.com/schema.json"}, "only local"),
    ({"$ref": "#/$defs/missing"}, "points at nothing"),
    ({"type": "tuple"}, "unknown type"),
    ({"type": "array", "items": [{"type": "null"}]}, "prefixItems"),
    ({"type": "string", "nullable": True}, "'nullable'"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "below minItems"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
    (False, "accepts nothing"),
])
def test_what_a_grammar_cannot_express_is_refused(schema, words):
    with pytest.raises(GrammarError, match=words):
        LlamaGrammar.from_json_schema(schema)
    with pytest.raises(GrammarError, match="not valid JSON"):
        LlamaGrammar.from_json_schema("{nope")


# --- generations ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    llm = Llama(str(smollm2_path), n_ctx=256, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_twenty_seeded_generations_validate(smollm2, name):
    schema = SCHEMAS[name]
    grammar = LlamaGrammar.from_json_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for seed in range(20):
        out = smollm2("JSON: ", grammar=grammar, temperature=0.8, seed=seed, max_tokens=96)
        assert out["choices"][0]["finish_reason"] == "stop", out
        validator.validate(json.loads(out["choices"][0]["text"]))


def small_schemas():
    leaf = st.one_of(
        st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
                  st.integers(-50, 50), st.integers(0, 100)),
        st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6)),
        st.lists(st.sampled_from(["a", "b", 1, None, True]), min_size=1, max_size=3,
                 unique=True).map(lambda e: {"enum": e}),
        st.sampled_from([{"type": "boolean"}, {"type": "null"}]))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda items, n: {"type": "array", "items": items, "maxItems": n},
                  inner, st.integers(0, 2)),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, min_size=1, max_size=2).flatmap(
            lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
                lambda req: {"type": "object", "properties": props, "required": req}))),
        max_leaves=3)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)  # a model in the loop: the same few schemas every run
@given(schema=small_schemas(), seed=st.integers(0, 1000))
def test_hypothesis_schemas_generate_valid_documents(smollm2, schema, seed):
    out = smollm2("JSON: ", grammar=LlamaGrammar.from_json_schema(schema), temperature=0.8,
                  seed=seed, max_tokens=64)
    assert out["choices"][0]["finish_reason"] == "stop", (schema, out)
    jsonschema.validate(json.loads(out["choices"][0]["text"]), schema)


def test_response_formats_in_chat(smollm2):
    question = [{"role": "user", "content": "Give me a color as JSON."}]
    schema = SCHEMAS["enums"]
    for fmt in ({"type": "json_object", "schema": schema},
                {"type": "json_schema",
                 "json_schema": {"name": "c", "schema": schema, "strict": True}}):
        reply = smollm2.create_chat_completion(question, response_format=fmt, seed=1, max_tokens=64)
        jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), schema)
    reply = smollm2.create_chat_completion(question, response_format={"type": "json_object"},
                                           seed=2, max_tokens=64)
    content = reply["choices"][0]["message"]["content"]
    assert reply["choices"][0]["finish_reason"] != "stop" or isinstance(json.loads(content), dict)
    with pytest.raises(InvalidArgumentError, match="json_schema"):
        smollm2.create_chat_completion(question, response_format={"type": "json_schema"})
    with pytest.raises(InvalidArgumentError, match="expected text"):
        smollm2.create_chat_completion(question, response_format={"type": "yaml"})
    with pytest.raises(InvalidArgumentError, match="not both"):
        smollm2.create_chat_completion(question, response_format={"type": "json_object"},
                                       grammar='root ::= "x"')


@pytest.mark.parametrize("schema, doc", [({"enum": ["a"]}, "a"), ({"const": 3}, 3),
                                         ({"type": "integer", "minimum": 2}, 7)])
def test_bare_leaf_schemas(schema, doc):
    assert accepts(schema, doc)


def schemas_with_documents():
    """(schema, strategy of documents valid under it) pairs."""
    def integers(lo, span):
        return {"type": "integer", "minimum": lo, "maximum": lo + span}, st.integers(lo, lo + span)

    def strings(n):
        return {"type": "string", "maxLength": n}, st.text(max_size=n)

    def enums(values):
        return {"enum": values}, st.sampled_from(values)

    leaf = st.one_of(
        st.builds(integers, st.integers(-10**6, 10**6), st.integers(0, 10**4)),
        st.builds(strings, st.integers(0, 6)),
        st.builds(enums, st.lists(st.sampled_from(["a", "b", 1, -2.5, None, True, [1]]),
                                  min_size=1, max_size=3, unique_by=json.dumps)),
        st.sampled_from([({"type": "boolean"}, st.booleans()), ({"type": "null"}, st.none()),
                         ({"type": "number"}, st.floats(-1e6, 1e6).map(lambda x: round(x, 6)))]))

    def arrays(inner, lo, extra):
        schema, docs = inner
        return ({"type": "array", "items": schema, "minItems": lo, "maxItems": lo + extra},
                st.lists(docs, min_size=lo, max_size=lo + extra))

    def objects(props, required):
        schema = {"type": "object", "properties": {k: s for k, (s, _) in props.items()},
                  "required": sorted(required & set(props))}
        members = {k: d for k, (_, d) in props.items()}
        return schema, st.fixed_dictionaries(
            {k: members[k] for k in schema["required"]},
            optional={k: d for k, d in members.items() if k not in schema["required"]},
        ).map(lambda doc: {k: doc[k] for k in props if k in doc})  # the grammar's order

    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(arrays, inner, st.integers(0, 2), st.integers(0, 2)),
        st.builds(objects, st.dictionaries(st.sampled_from(["a", "b", "c d", "é"]), inner,
                                           min_size=1, max_size=3),
                  st.sets(st.sampled_from(["a", "b", "c d", "é"])))), max_leaves=5)


@settings(max_examples=60, deadline=None)
@given(pair=schemas_with_documents(), data=st.data())
def test_hypothesis_schemas_accept_their_valid_documents(pair, data):
    schema, docs = pair
    grammar = LlamaGrammar.from_json_schema(schema)
    for _ in range(3):
        doc = data.draw(docs)
        for separators in ((", ", ": "), (",", ":")):
            text = json.dumps(doc, ensure_ascii=False, separators=separators)
            assert grammar.matches(text), (schema, text)


def test_prefix_items_against_jsonschema():
    schema = {"type": "array", "prefixItems": [{"type": "integer"}, {"enum": ["a", "b"]}],
              "items": False}
    for doc in ([], [1], [1, "a"], [1, "c"], [1, "a", 2], ["a"]):
        assert accepts(schema, doc) == jsonschema.Draft202012Validator(schema).is_valid(doc), doc
    more = {**schema, "items": {"type": "null"}, "minItems": 3}
    for doc in ([1, "a"], [1, "a", None], [1, "b", None, None], [1, "b", 2]):
        assert accepts(more, doc) == jsonschema.Draft202012Validator(more).is_valid(doc), doc
