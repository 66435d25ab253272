"""Tokenizers against llama.cpp's own token ids for the three real models
(recorded once, see tests/data/tokenizer/README.md), plus streaming decode,
special-token parsing, BOS handling and a speed sanity run."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llamalite import GGUFError, UnsupportedModelError
from llamalite.tokenizer import CONTROL, NO_TOKEN, USER_DEFINED, Tokenizer

DATA = Path(__file__).parent / "data" / "tokenizer"
MODELS = {"smollm2": "smollm2_path", "gemma3": "gemma3_path", "qwen25": "qwen25_path"}

# Without an EOT id in the metadata llama.cpp takes the first EOT-looking token
# in hash-map order: for SmolLM2 <|endoftext|> (0), for Qwen2.5 <|im_end|>, though
# both vocabularies have both. We take the first in llama.cpp's list of texts.
OUR_EOT = {"smollm2-135m-instruct": 2}

# Text whose characters need 2, 3 and 4 UTF-8 bytes, so that some land split
# across byte-fallback or byte-level tokens.
UNICODE_TEXT = ("Zürich ñandú Ελληνικά Привет 日本語のテキスト 中文 한국어 مرحبا שלום "
                "🎉🚀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🫠 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫√∞ สวัสดี नमस्ते e\u0301 ½²")


@pytest.fixture(scope="module", params=list(MODELS))
def model(request) -> tuple[Tokenizer, dict]:
    tok = Tokenizer.from_gguf(request.getfixturevalue(MODELS[request.param]))
    ref = json.loads((DATA / f"{request.param}.json").read_text("utf-8"))
    return tok, ref


@pytest.fixture(scope="module")
def smollm2(smollm2_path) -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path)


@pytest.fixture(scope="module")
def gemma3(gemma3_path) -> Tokenizer:
    return Tokenizer.from_gguf(gemma3_path)


def _ranges(ids) -> list[list[int]]:
    out: list[list[int]] = []
    for i in ids:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def test_ids_equal_llama_cpp(model):
    tok, ref = model
    wrong = [(c["text"][:60], c["add_bos"], c["special"])
             for c in ref["cases"]
             if tok.encode(c["text"], add_bos=c["add_bos"], special=c["special"]) != c["ids"]]
    assert not wrong, f"{len(wrong)} of {len(ref['cases'])} cases differ from llama.cpp: {wrong}"


def test_bytes_input_gives_the_same_ids(model):
    tok, ref = model
    for c in ref["cases"][::7]:
        assert tok.encode(c["text"].encode(), c["add_bos"], c["special"]) == c["ids"]


def test_bytes_that_are_not_utf8_give_llama_cpp_ids(model):
    # SentencePiece: byte tokens for each symbol that is not a character;
    # byte-level BPE: U+FFFD for each such byte.
    tok, ref = model
    for c in ref["byte_cases"]:
        text = bytes.fromhex(c["hex"])
        assert tok.encode(text, add_bos=False, special=c["special"]) == c["ids"], text


def test_pieces_equal_llama_cpp(model):
    tok, ref = model
    for token, (plain, special) in ref["pieces"].items():
        assert tok.token_to_piece(int(token)).hex() == plain, token
        assert tok.token_to_piece(int(token), special=True).hex() == special, token


def test_decode_round_trips(model):
    tok, ref = model
    for c in ref["cases"]:
        if not c["add_bos"]:
            assert tok.decode(c["ids"], special=True) == c["text"].encode(), c["text"][:60]


def test_vocabulary_equals_llama_cpp(model):
    tok, ref = model
    v = ref["vocab"]
    assert tok.n_vocab == v["n_vocab"]
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (v["bos"], v["eos"], v["pad"])
    assert tok.eot_id == OUR_EOT.get(ref["model"], v["eot"])
    assert (tok.add_bos, tok.add_eos) == (v["add_bos"], v["add_eos"])
    assert sorted(tok.eog_ids) == v["eog"]
    assert all(tok.is_eog(t) for t in v["eog"])
    attrs = [tok.token_attr(i) for i in range(tok.n_vocab)]
    assert _ranges(i for i, a in enumerate(attrs) if a & CONTROL) == v["control"]
    assert _ranges(i for i, a in enumerate(attrs) if a & USER_DEFINED) == v["user_defined"]


def _whole_characters(raw: bytes) -> str:
    """The longest prefix of `raw` made of complete UTF-8 characters."""
    for cut in range(len(raw), len(raw) - 4, -1):
        try:
            return raw[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise AssertionError(f"{raw[-8:]!r} does not end in at most 3 bytes of one character")


def test_stream_never_emits_a_broken_character(model):
    tok, _ = model
    ids = tok.encode(UNICODE_TEXT, add_bos=False)
    decoder, emitted, splits = tok.stream(), "", 0
    for k, token in enumerate(ids, 1):
        text = decoder.feed(token)
        assert "\ufffd" not in text
        emitted += text
        raw = tok.decode(ids[:k])
        assert emitted == _whole_characters(raw)
        splits += len(emitted.encode()) < len(raw)
    assert emitted + decoder.flush() == UNICODE_TEXT
    assert splits, "no token split a character: the test proves nothing"


def test_decode_stream_joins_to_the_text(gemma3):
    ids = gemma3.encode(UNICODE_TEXT, add_bos=False)
    chunks = list(gemma3.decode_stream(ids))
    assert "".join(chunks) == UNICODE_TEXT
    assert all(chunks)


def test_stream_flush_replaces_an_unfinished_character(smollm2):
    ids = smollm2.encode("日", add_bos=False)
    assert len(ids) > 1   # the character spans byte-level tokens
    decoder = smollm2.stream()
    assert decoder.feed(ids[0]) == ""
    assert decoder.flush() == "\ufffd"


def test_special_text_is_a_token_only_when_asked(smollm2, gemma3):
    chat = "<|im_start|>user\nhi<|im_end|>"
    start, end = smollm2.encode("<|im_start|>", special=True), smollm2.encode("<|im_end|>",
                                                                              special=True)
    assert start == [1] and end == [2]
    ids = smollm2.encode(chat, special=True)
    assert ids[0] == 1 and ids[-1] == 2
    plain = smollm2.encode(chat, special=False)
    assert not {1, 2} & set(plain)
    assert smollm2.decode(plain) == chat.encode()
    assert smollm2.decode(ids) == b"user\nhi"                    # control text is hidden
    assert smollm2.decode(ids, special=True) == chat.encode()

    turn = gemma3.encode("<start_of_turn>", add_bos=False, special=True)
    assert turn == [105]
    assert 105 not in gemma3.encode("<start_of_turn>", add_bos=False)


def test_user_defined_tokens_match_in_plain_text(gemma3):
    # Gemma's runs of newlines, spaces and tabs, and its HTML markup, are
    # user-defined: matched before SentencePiece, with or without special.
    ids = gemma3.encode("a\n\nb  c\t\td<b>", add_bos=False)
    for text in ("\n\n", "  ", "\t\t", "<b>"):
        (token,) = gemma3.encode(text, add_bos=False)
        assert gemma3.token_attr(token) & USER_DEFINED
        assert token in ids


def test_bos_only_where_the_vocabulary_wants_it(smollm2, gemma3):
    assert gemma3.add_bos and not smollm2.add_bos
    assert gemma3.encode("hi")[0] == gemma3.bos_id
    assert gemma3.bos_id not in gemma3.encode("hi", add_bos=False)
    assert gemma3.encode("") == [gemma3.bos_id] and gemma3.encode("", add_bos=False) == []
    assert smollm2.encode("hi") == smollm2.encode("hi", add_bos=False)
    assert smollm2.encode("") == []


def test_ids_outside_the_vocabulary_are_refused(smollm2):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        smollm2.token_to_piece(smollm2.n_vocab)
    with pytest.raises(ValueError):
        smollm2.decode([0, -1])


def test_a_cached_piece_is_found_only_by_an_integer_id(smollm2):
    piece = smollm2.token_to_piece(5)   # now cached
    assert smollm2.token_to_piece(np.int64(5)) == piece
    with pytest.raises(TypeError):
        smollm2.token_to_piece(5.0)


def test_long_texts_tokenize_in_reasonable_time(smollm2, gemma3):
    # Not a timing assertion: it only has to finish (no quadratic merging, no
    # cache blow-up) on 100 KB of mostly unseen words and on one huge word.
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyzäöüéßñ日本語中文字 \n\t.,;:!?0123456789"
    text = "".join(rng.choice(alphabet) for _ in range(100_000))
    huge_word = "".join(rng.choice("abcdefghij") for _ in range(20_000))
    for tok in (smollm2, gemma3):
        for t in (text, huge_word):
            ids = tok.encode(t, add_bos=False)
            assert tok.decode(ids) == t.encode()


def _metadata(**extra) -> dict:
    tokens = ["<|endoftext|>", "a", "b", "c", "ab", "abc", "Ġ", "Ġa"]
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
          "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [3] + [1] * 7,
          "tokenizer.ggml.merges": ["a b", "ab c", "Ġ a"], "tokenizer.ggml.eos_token_id": 0}
    md.update(extra)
    return md


def _spm_metadata(**extra) -> dict:
    tokens = ["<unk>", "<s>", "</s>", "<ctl>", "\u2581", "a", "b", "\u2581a", "ab", "\u2581ab"]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    md = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.scores": [0, 0, 0, 0, 0, 0, 0, -1, -2, -3] + [0] * 256,
          "tokenizer.ggml.token_type": [2, 3, 3, 3, 1, 1, 1, 1, 1, 1] + [6] * 256}
    md.update(extra)
    return md


def test_tiny_sentencepiece_vocabulary():
    tok = Tokenizer.from_metadata(_spm_metadata())
    # Highest score first: "\u2581a" (-1) before "ab" (-2), then "\u2581ab".
    assert tok.encode("ab") == [1, 9]
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)
    # The space prefix goes before every text that follows a special token.
    assert tok.encode("ab<ctl>ab", add_bos=False, special=True) == [9, 3, 9]
    assert tok.decode([1, 9, 3, 9]) == b" ab ab"
    assert tok.decode([1, 9, 3, 9], special=True) == b"<s> ab<ctl> ab"
    # "c" and "é" are no tokens: their bytes are.
    assert tok.encode("c é", add_bos=False) == [4, 10 + 0x63, 4, 10 + 0xC3, 10 + 0xA9]
    assert tok.token_to_piece(10 + 0x63) == b"c"
    no_prefix = Tokenizer.from_metadata(_spm_metadata(**{
        "tokenizer.ggml.add_space_prefix": False, "tokenizer.ggml.add_bos_token": False}))
    assert no_prefix.encode("ab") == [8]
    assert no_prefix.encode("ab ab") == [8, 9]


def test_tiny_bpe_merges_by_rank():
    tok = Tokenizer.from_metadata(_metadata())
    assert tok.encode("abc a") == [5, 7]
    assert tok.encode("cab") == [3, 4]
    assert tok.bos_id == NO_TOKEN and tok.eos_id == 0 and tok.is_eog(0)
    # A lower rank for "b c" than for "a b" changes the split.
    tok = Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.merges": ["b c", "a b"]}))
    assert tok.encode("abc") == [1, 2, 3]


def test_bpe_symbols_that_are_no_token_give_only_their_ascii_tokens():
    # "é" is "Ã©" in GPT-2's characters: neither is a token, and no byte of
    # their UTF-8 is one character, so llama.cpp gives nothing for them
    tok = Tokenizer.from_metadata(_metadata())
    assert tok.encode("é", add_bos=False) == []
    assert tok.encode("aéb", add_bos=False) == [1, 2]


def test_a_repeated_merge_keeps_its_first_rank():
    # as llama.cpp's bpe_ranks.emplace: "a b" stays rank 0, below "b c"
    tok = Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.merges": ["a b", "b c", "a b"]}))
    assert tok.encode("abc") == [4, 3]


def test_sentencepiece_ties_merge_the_leftmost_pair_first():
    md = _spm_metadata(**{"tokenizer.ggml.add_space_prefix": False})
    md["tokenizer.ggml.tokens"] = md["tokenizer.ggml.tokens"] + ["ba"]
    md["tokenizer.ggml.scores"] = md["tokenizer.ggml.scores"] + [-2]   # as "ab"
    md["tokenizer.ggml.token_type"] = md["tokenizer.ggml.token_type"] + [1]
    tok = Tokenizer.from_metadata(md)
    assert tok.encode("aba", add_bos=False) == [8, 5]
    assert tok.encode("bab", add_bos=False) == [266, 6]


def test_vocabularies_that_are_not_text_are_refused():
    with pytest.raises(GGUFError, match="tokenizer.ggml.tokens: not all strings"):
        Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.tokens": ["a", 7]}))
    with pytest.raises(GGUFError, match="tokenizer.ggml.merges: not all strings"):
        Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.merges": ["a b", None]}))
    with pytest.raises(GGUFError, match="tokenizer.ggml.scores: not all numbers"):
        Tokenizer.from_metadata(_spm_metadata(**{"tokenizer.ggml.scores": ["x"] * 266}))


def test_whole_words_skip_merging_for_llama3():
    # llama3's pre-tokenizer takes a word that is itself a token as it is.
    md = _metadata(**{"tokenizer.ggml.merges": ["a b"]})
    assert Tokenizer.from_metadata(md).encode("abc") == [4, 3]
    llama3 = Tokenizer.from_metadata({**md, "tokenizer.ggml.pre": "llama-bpe"})
    assert llama3.encode("abc") == [5]
    assert llama3.add_bos and llama3.bos_id == NO_TOKEN and llama3.encode("abc") == [5]


TRICKY = "Hello 12345 world's DON'T\n\n  x!!\n"
SPLITS = {
    "gpt2": ["Hello", " 12345", " world", "'s", " DON", "'", "T", "\n\n ", " x", "!!", "\n"],
    "smollm": ["Hello", " ", "1", "2", "3", "4", "5", " world", "'s", " DON", "'", "T",
               "\n\n ", " x", "!!", "\n"],
    "llama3": ["Hello", " ", "123", "45", " world", "'s", " DON", "'T", "\n\n", " ", " x",
               "!!\n"],
    "qwen2": ["Hello", " ", "1", "2", "3", "4", "5", " world", "'s", " DON", "'T", "\n\n", " ",
              " x", "!!\n"],
    "default": ["Hello", " ", "123", "45", " world", "'", "s", " DON", "'", "T", "\n\n ", " x",
                "!!", "\n"],
}


@pytest.mark.parametrize("pre", list(SPLITS))
def test_pre_tokenizers_split_words_as_llama_cpp(pre):
    # Worked out by hand from llama.cpp's patterns, applied in turn, each one
    # splitting the pieces the previous ones left.
    tok = Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.pre": pre}))
    assert tok._encoder.split(TRICKY) == SPLITS[pre]


def test_unknown_kinds_are_named():
    with pytest.raises(UnsupportedModelError, match="'bert'"):
        Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.model": "bert"}))
    with pytest.raises(UnsupportedModelError, match="'no-such-pre'"):
        Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.pre": "no-such-pre"}))
    with pytest.raises(GGUFError, match="merges"):
        Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.merges": None}))
    with pytest.raises(GGUFError, match="duplicate"):
        Tokenizer.from_metadata(_metadata(**{"tokenizer.ggml.tokens": ["a"] * 8}))


# -- the C merge against a slow reference ---------------------------------------

_UTF8_LEN = [1] * 12 + [2, 2, 3, 4]
# few characters, so that random vocabularies overlap and tie often
_PIECES = ["a", "b", "é", "日", "\u2581"]


def _reference_merge(text: bytes, key, ids: dict, byte_ids: list) -> list[int]:
    """llama.cpp's merge the slow way: cut into characters (by the lead
    byte's length, clamped), then while some neighbours may merge, merge the
    pair with the highest key, the leftmost on ties; then each symbol's
    token, or its bytes' tokens."""
    syms, at = [], 0
    while at < len(text):
        n = min(_UTF8_LEN[text[at] >> 4], len(text) - at)
        syms.append(text[at:at + n])
        at += n
    while True:
        best = None
        for i in range(len(syms) - 1):
            k = key(syms[i], syms[i + 1])
            if k is not None and (best is None or k > best[0]):
                best = (k, i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    out = []
    for s in syms:
        if s in ids:
            out.append(ids[s])
        else:
            out += [byte_ids[b] for b in s if byte_ids[b] >= 0]
    return out


def _c_merge(how: str, texts: list[str], scores: list[float], merges: list[str],
             text: bytes, byte_ids: list[int]) -> list[int]:
    from llamalite import _native, tokenizer as tk
    vocab = tk._c_vocab(texts, scores)
    if merges:
        tk._set_merges(vocab, merges)
    return tk._tokenize(how, vocab, text, *(() if how == "ll_vocab_spm" else (0,)),
                        _native.ffi.new("int32_t[256]", byte_ids))


_words = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=3).map("".join)
_texts = st.lists(st.one_of(st.sampled_from(_PIECES).map(str.encode),
                            st.sampled_from([b"\x80", b"\xc3", b"\xe6\x97", b"A"])),
                  max_size=24).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_words, st.sampled_from([0.0, -1.0])), max_size=24,
                unique_by=lambda ws: ws[0]), _texts)
def test_sentencepiece_merge_equals_the_slow_reference(vocab, text):
    texts = [w for w, _ in vocab] + [f"<0x{b:02X}>" for b in range(256)]
    scores = [s for _, s in vocab] + [0.0] * 256
    ids = {t.encode(): i for i, t in enumerate(texts)}
    byte_ids = [len(vocab) + b for b in range(256)]

    def key(a, b):
        i = ids.get(a + b)
        return None if i is None else scores[i]

    assert _c_merge("ll_vocab_spm", texts, scores, [], text, byte_ids) == \
        _reference_merge(text, key, ids, byte_ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(_words, min_size=1, max_size=24, unique=True),
       st.lists(st.tuples(_words, _words), max_size=30), _texts)
def test_bpe_merge_equals_the_slow_reference(words, pairs, text):
    texts = words + ["A"]
    ids = {t.encode(): i for i, t in enumerate(texts)}
    merges = [f"{a} {b}" for a, b in pairs]
    rank = {}
    for r, m in enumerate(merges):
        rank.setdefault(m.encode(), r)   # a repeated merge keeps its first rank
    byte_ids = [-1] * 256
    byte_ids[ord("A")] = len(words)

    def key(a, b):
        r = rank.get(a + b" " + b)
        return None if r is None else -r

    assert _c_merge("ll_vocab_bpe", texts, [0.0] * len(texts), merges, text, byte_ids) == \
        _reference_merge(text, key, ids, byte_ids)


def test_bpe_ties_merge_the_leftmost_pair_first():
    # "a a" applies at 0 and at 1 of "aaa": the leftmost goes first
    assert _c_merge("ll_vocab_bpe", ["a", "aa"], [0.0, 0.0], ["a a"], b"aaa", [-1] * 256) == [1, 0]
