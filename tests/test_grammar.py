"""GBNF grammars: parsing, errors with positions, the byte/UTF-8 matcher, the
token filter, and sampled generations checked by independent checkers."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llamalite import GrammarError, Llama, LlamaGrammar
from llamalite.grammar import JSON_ARR_GBNF, JSON_GBNF
from llamalite.grammar_match import VocabIndex
from llamalite.sampling import Sampler

ARITHMETIC = r"""
root  ::= (expr "=" ws term "\n")+
expr  ::= term ([-+*/] term)*
term  ::= ident | num | "(" ws expr ")" ws
ident ::= [a-z] [a-z0-9_]* ws
num   ::= [0-9]+ ws
ws    ::= [ \t\n]*
"""

LIST = r"""
root ::= item+
# one line per item; no line breaks of any kind inside
item ::= "- " [^\r\n\x0b\x0c\x85\u2028\u2029]+ "\n"
"""


# --- independent checkers ---------------------------------------------------------

def arithmetic_ok(text: str, prefix: bool = False) -> bool:
    """A recursive-descent reading of the arithmetic language; with prefix,
    whether text starts a sentence of it (the reading fails only because the
    text ends)."""
    pos = 0

    def ws():
        nonlocal pos
        while pos < len(text) and text[pos] in " \t\n":
            pos += 1

    def term():
        nonlocal pos
        m = re.compile(r"[a-z][a-z0-9_]*|[0-9]+").match(text, pos)
        if m:
            pos = m.end()
            ws()
            return True
        if text.startswith("(", pos):
            pos += 1
            ws()
            if not expr() or not text.startswith(")", pos):
                return False
            pos += 1
            ws()
            return True
        return False

    def expr():
        nonlocal pos
        if not term():
            return False
        while pos < len(text) and text[pos] in "-+*/":
            pos += 1
            if not term():
                return False
        return True

    def statements() -> bool:
        nonlocal pos
        lines = 0
        while pos < len(text):
            if not expr() or not text.startswith("=", pos):
                return False
            pos += 1
            ws()
            if not term() or not text.startswith("\n", pos - 0) and not text[:pos].endswith("\n"):
                return False
            if text.startswith("\n", pos):
                pos += 1
            lines += 1
        return lines > 0

    return statements() or (prefix and pos >= len(text))


def list_ok(text: str) -> bool:
    return re.fullmatch(r"(- [^\r\n\x0b\x0c\x85\u2028\u2029]+\n)+", text) is not None


# --- parsing ----------------------------------------------------------------------

@pytest.mark.parametrize("text, where, words", [
    ('root ::= foo', "line 1, column 10", "undefined rule 'foo'"),
    ('root ::= "abc', "line 1, column 14", "unterminated string"),
    ('root ::= [a-', "line 1, column 10", "unterminated character class"),
    ('root ::= "a"\nitem ::= ("b" | "c"', "line 2, column 10", "expected ')'"),
    ('root ::= "a"\n\nx :: "b"', "line 3, column 3", "expected '::='"),
    ('root ::= "\\q"', "line 1, column 11", "unknown escape"),
    ('root ::= "\\x4"', "line 1, column 11", "needs 2 hex digits"),
    ('root ::= "a"{3,1}', "line 1, column 13", "maximum below its minimum"),
    ('root ::= * "a"', "line 1, column 10", "nothing before it to repeat"),
    ('root ::= [z-a]', "line 1, column 10", "runs backwards"),
    ('root ::= "a" )', "line 1, column 14", "end of the line"),
    ('root ::= "a"\nroot ::= "b"', "line 2, column 1", "defined twice"),
])
def test_malformed_grammars_name_line_and_column(text, where, words):
    with pytest.raises(GrammarError) as e:
        LlamaGrammar.from_string(text)
    assert where in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ('item ::= "a"', "no 'root' rule"),
    ('root ::= root "a" | "b"', "left-recursive"),
    ('root ::= x\nx ::= y "a"\ny ::= "" | x', "left-recursive"),
    ('root ::= ("a"?)*', "left-recursive"),
])
def test_grammars_that_cannot_work_are_refused(text, words):
    with pytest.raises(GrammarError, match=words):
        LlamaGrammar.from_string(text)


def test_grammar_errors_are_value_errors_and_bad_files_say_so(tmp_path):
    assert issubclass(GrammarError, ValueError)
    with pytest.raises(GrammarError, match="cannot read grammar file"):
        LlamaGrammar.from_file(tmp_path / "missing.gbnf")
    path = tmp_path / "yes.gbnf"
    path.write_text('root ::= "yes" # comment\n')
    assert LlamaGrammar.from_file(path).matches("yes")


@pytest.mark.parametrize("grammar, good, bad", [
    ('root ::= "a" | "b" "c"', ["a", "bc"], ["", "b", "ac", "abc"]),
    ('root ::= [a-c]{2,3}', ["ab", "cca"], ["a", "abca", "ad"]),
    ('root ::= "x"{2} "y"{1,}', ["xxy", "xxyyy"], ["xy", "xx"]),
    ('root ::= ("ab")* "c"?', ["", "abab", "abc", "c"], ["a", "cc", "abcab"]),
    ('root ::= [^a-z\\n]+', ["ABC1", "日本"], ["a", "A\n", ""]),
    ('root ::= "\\x41\\u00e9\\U0001F600" [\\t\\]]', ["Aé😀\t", "Aé😀]"], ["Aé😀 "]),
    ('root ::= .+ "!"', ["hi!", "!!"], ["!", "hi"]),
    ('root ::= a\na ::= "(" a ")" | ""', ["", "()", "((()))"], ["(()", ")("]),
    ('root ::= [-a]+ [a-]', ["-a-", "aa"], ["b"]),
    ('root ::=\n  ( "a"   # first\n  | "b" )\n', ["a", "b"], ["ab"]),
])
def test_languages(grammar, good, bad):
    g = LlamaGrammar.from_string(grammar)
    for text in good:
        assert g.matches(text), text
    for text in bad:
        assert not g.matches(text), text


def test_builtin_json_grammars():
    obj, arr = LlamaGrammar.json(), LlamaGrammar.json_array()
    doc = '{"a": [1, -2.5e3, "x\\u00e9\\n", true, null], "b": {"c": {}}, "é": "日本"}'
    assert obj.matches(doc) and not arr.matches(doc)
    assert arr.matches('[{"a": 1}, []]') and not obj.matches('[1]')
    for bad in ['{"a":1', '{"a" 1}', '{a: 1}', '{"a": 01}', '{"a": "\x01"}', '{"a": tru}']:
        assert not obj.matches(bad), bad


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8))
def test_json_grammar_accepts_what_json_dumps_writes(value):
    text = json.dumps({"v": value}, ensure_ascii=False)
    if re.search(r"e[-+]?\d{4}|\.\d{17}|\d{17}", text):  # digits beyond the grammar's bounds
        return
    assert LlamaGrammar.from_string(JSON_GBNF).matches(text)


# --- tokens: bytes, partial UTF-8, the filter ------------------------------------

PIECES = [b"", b"{", b"}", b'"', b"a", b"ab", b'"a"', b"\xe6", b"\x97\xa5", b"\xe6\x97", b"\xa5",
          b"\xff", b" ", b"}}", b'{"', b"\xe6\x97\xa5"]
EOS = 0


def state(grammar: str):
    return LlamaGrammar.from_string(grammar).state(VocabIndex(PIECES, [EOS]))


def test_tokens_ending_inside_a_character_are_accepted_if_it_can_continue():
    s = state('root ::= "{" [^a-z]* "}"')
    s.accept(1)
    assert not s.allows(4) and not s.allows(11)      # a letter; a byte no character starts with
    s.accept(9)                                       # first two bytes of 日
    assert not s.allows(2) and not s.allows(9)        # the character must finish first
    s.accept(10)
    s.accept(2)
    assert s.can_end and s.allows(EOS)


def test_allowed_tokens_match_one_by_one_checks():
    s = state('root ::= "{" ( "\\"" [a-b]* "\\"" | [日] )* "}"')
    for token in (1, 3, 5):
        allowed = set(s.allowed().tolist())
        assert allowed == {t for t in range(len(PIECES)) if s.allows(t)}
        s.accept(token)
    assert set(s.allowed().tolist()) == {4, 5, 3}


def test_end_of_generation_only_where_the_grammar_can_end():
    s = state('root ::= "{" "}"')
    assert not s.allows(EOS) and EOS not in s.allowed()
    s.accept(1)
    s.accept(2)
    assert s.allows(EOS) and s.allowed().tolist() == [EOS]


def test_sampler_resamples_only_when_the_grammar_rejects():
    logits = np.zeros(len(PIECES), dtype=np.float32)
    logits[4] = 10.0                                   # the model wants "a"
    sampler = Sampler(len(PIECES), temperature=0, grammar=state('root ::= "{" "a"* "}"'))
    assert sampler.sample(logits) == 1                 # "a" is rejected: "{" is all that fits
    sampler.accept(1)
    for _ in range(3):
        assert sampler.sample(logits) == 4             # now "a" fits: no filtering
        sampler.accept(4)
    logits[4] = -np.inf
    for kwargs in ({"temperature": 0.8, "seed": 1}, {"mirostat_mode": 2, "seed": 1},
                   {"top_k": 0, "typical_p": 0.5, "seed": 1}):
        s = Sampler(len(PIECES), grammar=state('root ::= "}"'), **kwargs)
        assert s.sample(logits) == 2


def test_a_grammar_no_token_can_spell_is_an_error():
    sampler = Sampler(len(PIECES), temperature=0, grammar=state('root ::= "z"'))
    with pytest.raises(GrammarError, match="allows no token"):
        sampler.sample(np.zeros(len(PIECES), dtype=np.float32))


# --- real generations --------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    llm = Llama(str(smollm2_path), n_ctx=512, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("grammar, prompt, checker", [
    (ARITHMETIC, "Some equations:\n", arithmetic_ok),
    (LIST, "A shopping list:\n", list_ok),
    (JSON_GBNF, "A JSON object describing a cat: ", lambda t: isinstance(json.loads(t), dict)),
    (JSON_ARR_GBNF, "A JSON list of three colors: ", lambda t: isinstance(json.loads(t), list)),
])
def test_sampled_generations_satisfy_an_independent_checker(smollm2, grammar, prompt, checker):
    g = LlamaGrammar.from_string(grammar)
    for seed in range(3):
        out = smollm2(prompt, grammar=g, max_tokens=48, temperature=0.8, seed=seed)
        text, finish = out["choices"][0]["text"], out["choices"][0]["finish_reason"]
        if finish == "length":          # cut short: it must still start a sentence
            if grammar == ARITHMETIC:   # (newlines may sit inside a statement)
                assert arithmetic_ok(text, prefix=True), (seed, text)
                continue
            text = text[:text.rfind("\n") + 1] if grammar == LIST else None
            if not text:
                continue
        assert checker(text), (seed, out["choices"][0]["text"])
        assert g.matches(text)


def test_grammar_streams_and_works_in_chat_and_generate(smollm2):
    g = LlamaGrammar.from_string('root ::= ("yes" | "no") "."')
    chunks = list(smollm2("Is water wet? Answer:", grammar=g, stream=True, temperature=0.9,
                          seed=3, max_tokens=8))
    assert "".join(c["choices"][0]["text"] for c in chunks) in ("yes.", "no.")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    reply = smollm2.create_chat_completion([{"role": "user", "content": "Is fire hot?"}],
                                           grammar=g, max_tokens=8, seed=1)
    assert reply["choices"][0]["message"]["content"] in ("yes.", "no.")
    tokens = []
    for token in smollm2.generate(smollm2.tokenize(b"Answer:"), grammar=g, temp=0):
        if token == smollm2.token_eos():
            break
        tokens.append(token)
    assert smollm2.detokenize(tokens).decode() in ("yes.", "no.")


def test_bad_grammar_argument_fails_before_streaming(smollm2):
    with pytest.raises(GrammarError, match="undefined rule"):
        smollm2("x", grammar="root ::= nothing", stream=True)
    with pytest.raises(GrammarError, match="LlamaGrammar or GBNF text"):
        smollm2("x", grammar=42)


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2_path):
    with Llama(str(smollm2_path), vocab_only=True, verbose=False) as llm:
        tok = llm._tokenizer
        yield VocabIndex([tok.token_to_piece(i) for i in range(tok.n_vocab)], tok.eog_ids)


@pytest.mark.parametrize("grammar, prefix", [
    (JSON_GBNF, b'{"name": "Al'),      # inside a string: nearly every token fits
    (JSON_GBNF, b'{"name": "Al", '),   # a key must start: few fit
    (JSON_GBNF, b"{"),
    (LIST, b"- eggs\n"),
])
def test_scanning_the_best_tokens_gives_the_chain_the_same_candidates(smollm2_vocab, grammar,
                                                                       prefix):
    """After a rejection the sampler looks for the k best allowed tokens one by
    one; the chain must come out exactly as with the whole allowed set."""
    rng = np.random.default_rng(0)
    state = LlamaGrammar.from_string(grammar).state(smollm2_vocab)
    state.state = state.matcher.walk(state.state, prefix)
    allowed = state.allowed()
    for kwargs in ({"top_k": 40}, {"top_k": 3, "top_p": 0.5}, {"temperature": 0},
                   {"top_k": 40, "typical_p": 0.9}):
        sampler = Sampler(smollm2_vocab.n_vocab, grammar=state, seed=1, **kwargs)
        for _ in range(3):
            scores = rng.standard_normal(smollm2_vocab.n_vocab).astype(np.float32) * 3
            fast, whole = sampler._grammar_masked(scores), sampler._grammar_masked(scores, True)
            assert set(np.flatnonzero(np.isfinite(fast))) <= set(allowed.tolist())
            if kwargs.get("temperature") == 0:
                assert np.argmax(fast) == np.argmax(whole)
                continue
            for a, b in zip(sampler._chain(fast), sampler._chain(whole)):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("grammar, text, lives", [
    ("root ::= [\\U0001F600]", "😀", True),          # F0 9F 98 80
    ("root ::= [\\u0800-\\u0FFF]", "\u0800", True),  # E0 A0 80: E0 needs A0..BF next
    ("root ::= [^a]", "\uFFFD", True),
    ("root ::= [a-z]", "é", False),
    ("root ::= [\\u0100-\\u01FF]", "é", False),      # C3 A9 is U+00E9: dies at its last byte
])
def test_multi_byte_characters_byte_by_byte(grammar, text, lives):
    g = LlamaGrammar.from_string(grammar)
    state, data = g._matcher.start, text.encode()
    for i, byte in enumerate(data):
        state = g._matcher.step(state, byte)
        if state is None:
            break
        if i < len(data) - 1 and lives:
            assert state is not None and state.pending == data[:i + 1]
    assert (state is not None and state.can_end) == lives


def test_prefixes_no_character_starts_with_are_rejected_at_once():
    m = LlamaGrammar.from_string("root ::= [^a]*")._matcher
    assert m.walk(m.start, b"\xe0\x80") is None       # overlong: E0 must be followed by A0..BF
    assert m.walk(m.start, b"\xf4\x90") is None       # beyond U+10FFFF
    assert m.walk(m.start, b"\xc0") is None and m.walk(m.start, b"\x80") is None
    assert m.walk(m.start, b"\xf0\x9f") is not None


# --- llama.cpp's grammar sampler, recorded (tests/data/grammar/llamacpp_allowed.md) -------

DATA = Path(__file__).parent / "data" / "grammar"


def partial_end(piece: bytes) -> bool:
    """Whether the piece ends inside a UTF-8 character."""
    for back in range(1, min(4, len(piece)) + 1):
        byte = piece[-back]
        if byte & 0xC0 != 0x80:  # the last character's first byte
            need = 2 if byte >> 5 == 6 else 3 if byte >> 4 == 14 else 4 if byte >> 3 == 30 else 1
            return need > back
    return False


@pytest.mark.parametrize("model", ["smollm2", "qwen25"])
def test_allowed_tokens_match_llama_cpp_but_for_the_documented_differences(
        model, smollm2_path, qwen25_path):
    path = {"smollm2": smollm2_path, "qwen25": qwen25_path}[model]
    cases = json.loads((DATA / "llamacpp_allowed.json").read_text())
    ref = np.load(DATA / f"llamacpp_allowed_{model}.npz")
    with Llama(str(path), vocab_only=True, verbose=False) as llm:
        tok = llm._tokenizer
        pieces = [tok.token_to_piece(i) for i in range(tok.n_vocab)]
        vocab = VocabIndex(pieces, tok.eog_ids)
        assert int(ref["n_vocab"]) == tok.n_vocab
        for i, (grammar, prefix) in enumerate(cases):
            tokens = ref[f"tokens{i}"].tolist()
            assert tokens == tok.encode(prefix, add_bos=False)
            state = LlamaGrammar.from_string(grammar).state(vocab)
            for t in tokens:
                state.accept(t)
            ours = set(state.allowed().tolist())
            if f"allowed{i}" in ref:
                theirs = set(ref[f"allowed{i}"].tolist())
            else:
                theirs = set(range(tok.n_vocab)) - set(ref[f"rejected{i}"].tolist())
            for t in ours - theirs:
                assert pieces[t][:1] == b"\0" or partial_end(pieces[t]), (i, t, pieces[t])
            for t in theirs - ours:
                control = not pieces[t] and tok.token_to_piece(t, special=True)
                assert control or max(pieces[t]) >= 0xF5, (i, t, pieces[t])
            assert len(ours ^ theirs) < 0.001 * tok.n_vocab, i
