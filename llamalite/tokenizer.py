"""Tokenizers built from a GGUF file's metadata alone, giving llama.cpp's token ids.

Two kinds of vocabulary (`tokenizer.ggml.model`):

- ``"llama"``: SentencePiece. The C core (csrc/vocab.c) merges characters
  into pieces by score, as llama.cpp does, falling back to <0xNN> bytes.
- ``"gpt2"``: byte-level BPE. A pre-tokenizer chosen by `tokenizer.ggml.pre`
  cuts the text into words, each word's UTF-8 bytes become printable
  characters (GPT-2's table), and merges apply by rank.

Both first cut the raw text at the text of special tokens, as llama.cpp does:
user-defined tokens always, control tokens only when `special=True`.
"""
from __future__ import annotations

import codecs
import operator
import os
import re
from typing import Iterable, Iterator

import numpy as np

from .errors import GGUFError, UnsupportedModelError

NO_TOKEN = -1   # llama.cpp's LLAMA_TOKEN_NULL: an id the vocabulary does not have

# Token attributes, as bits (a token can gain CONTROL when its text marks an end
# of generation). GGUF's tokenizer.ggml.token_type values map onto them.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 4, 8, 16, 32
_ATTR_OF_TYPE = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}
_SHOWN_ONLY_IF_SPECIAL = UNKNOWN | CONTROL

# Token texts that llama.cpp recognises when the metadata does not name the
# token: the first one present wins. Each recognised token becomes CONTROL.
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
              "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
              "<end_of_utterance>")
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
# Texts of tokens that end generation, whatever the metadata says.
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["))


class _Vocab:
    """Token texts, scores and attributes, and the special ids, from the metadata."""

    def __init__(self, md: dict, kind: str):
        texts = md.get("tokenizer.ggml.tokens")
        if not isinstance(texts, list) or not texts:
            raise GGUFError("tokenizer.ggml.tokens: missing or empty")
        n = len(texts)
        # llama.cpp names empty tokens so that every text is a distinct key.
        self.texts = texts if all(texts) else [t if t else f"[EMPTY_{i}]"
                                                for i, t in enumerate(texts)]
        types = _per_token(md, "tokenizer.ggml.token_type", n, 1)
        self.attrs = _attrs(types[:n])
        self._c = _c_vocab(self.texts, _per_token(md, "tokenizer.ggml.scores", n, 0.0))
        self.special = self._special_ids(md, kind)
        self._find_unnamed_specials()
        self.eog = self._eog_ids()

    def find(self, text: str) -> int | None:
        """The id of the token whose text is `text`, or None."""
        raw = text.encode("utf-8", "surrogatepass")
        found = _native().lib.ll_vocab_find(self._c, raw, len(raw))
        return None if found < 0 else found

    def _special_ids(self, md: dict, kind: str) -> dict[str, int]:
        # llama.cpp's defaults per vocabulary kind, then the metadata's ids when in range.
        names = ("bos", "eos", "eot", "eom", "unk", "sep", "pad", *_FIM_TEXTS)
        ids = dict.fromkeys(names, NO_TOKEN)
        if kind == "llama":
            ids.update(bos=1, eos=2, unk=0)
        else:
            ids.update(bos=11, eos=11)
        n = len(self.texts)
        keys = {"bos": "bos", "eos": "eos", "eot": "eot", "eom": "eom", "unk": "unknown",
                "sep": "seperator", "pad": "padding", **{k: k for k in _FIM_TEXTS}}
        for name, key in keys.items():
            if ids[name] >= n:
                ids[name] = NO_TOKEN
            value = md.get(f"tokenizer.ggml.{key}_token_id")
            if isinstance(value, int) and 0 <= value < n:
                ids[name] = value
        return ids

    def _find_unnamed_specials(self) -> None:
        for name, texts in (("eot", _EOT_TEXTS), ("eom", ("<|eom_id|>",)), *_FIM_TEXTS.items()):
            if self.special[name] != NO_TOKEN:
                continue
            found = next((i for i in map(self.find, texts) if i is not None), NO_TOKEN)
            if found != NO_TOKEN:
                self.special[name] = found
                self.attrs[found] |= CONTROL

    def _eog_ids(self) -> frozenset[int]:
        eog = {self.special[k] for k in ("fim_pad", "fim_rep", "fim_sep", "eos", "eot", "eom")}
        for text in _EOG_TEXTS:
            i = self.find(text)
            if i is not None:
                eog.add(i)
                self.attrs[i] |= CONTROL
        eog.discard(NO_TOKEN)
        return frozenset(eog)

    def special_tokens(self) -> list[tuple[str, int]]:
        """(text, id) of every token matched in raw text, longest text first."""
        mask = CONTROL | USER_DEFINED | UNKNOWN
        attrs = np.fromiter(self.attrs, np.int64, len(self.attrs))
        found = [(self.texts[i], i) for i in np.flatnonzero(attrs & mask).tolist()]
        found.sort(key=lambda ti: (-len(ti[0].encode()), ti[1]))
        return found


def _attrs(types: list) -> list[int]:
    """Each token's attribute bits from its GGUF token type (0 for a type
    llama.cpp does not know), with numpy: a loop took 0.1 s of a load."""
    try:
        values = np.asarray(types, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return [_ATTR_OF_TYPE.get(t, 0) for t in types]
    table = np.zeros(max(_ATTR_OF_TYPE) + 1, np.int64)
    table[list(_ATTR_OF_TYPE)] = list(_ATTR_OF_TYPE.values())
    known = (values >= 0) & (values < len(table))
    return np.where(known, table[np.where(known, values, 0)], 0).tolist()


def _per_token(md: dict, key: str, n: int, default):
    values = md.get(key)
    if values is None:
        return [default] * n
    if not isinstance(values, list) or len(values) < n:
        raise GGUFError(f"{key}: expected {n} values, found "
                        f"{len(values) if isinstance(values, list) else type(values).__name__}")
    return values


def _native():
    from . import _native   # the C core: imported when a tokenizer is first built
    return _native


def _joined(texts: list, key: str):
    """Every text's UTF-8 bytes back to back, and the n + 1 offsets where
    each starts (the last: where the last ends), as the C core takes them."""
    n = len(texts)
    try:
        # all at once, NUL-separated (when a text holds a NUL, one by one)
        joined = "\0".join(texts)
        if joined.count("\0") == n - 1:
            data = np.frombuffer(joined.encode("utf-8", "surrogatepass") + b"\0", np.uint8)
            lens = np.diff(np.flatnonzero(data == 0), prepend=-1) - 1
            raw = data[data != 0].tobytes()
        else:
            parts = [t.encode("utf-8", "surrogatepass") for t in texts]
            lens = np.fromiter(map(len, parts), np.int64, n)
            raw = b"".join(parts)
    except TypeError:
        raise GGUFError(f"{key}: not all strings") from None
    offsets = np.zeros(n + 1, np.uint64)
    np.cumsum(lens, out=offsets[1:])
    return raw, offsets


def _c_vocab(texts: list, scores: list):
    """The C core's vocabulary of `texts` (id -> text, and text -> id by hash)
    with their `scores`, freed with the returned handle."""
    try:
        values = np.asarray(scores[:len(texts)], dtype=np.float32)
    except (TypeError, ValueError):
        raise GGUFError("tokenizer.ggml.scores: not all numbers") from None
    raw, offsets = _joined(texts, "tokenizer.ggml.tokens")
    native = _native()
    ffi, lib = native.ffi, native.lib
    out = ffi.new("ll_vocab **")
    rc = lib.ll_vocab_new(raw, len(raw), native.ptr(offsets, "uint64_t *"),
                          native.ptr(values, "float *"), len(texts), out)
    if rc != 0:
        raise GGUFError(f"tokenizer.ggml.tokens: {native.last_error()}")
    return ffi.gc(out[0], lib.ll_vocab_free)


def _set_merges(c_vocab, merges: list) -> None:
    """Give the C core's vocabulary its BPE merges ("left right", by rank)."""
    raw, offsets = _joined(merges, "tokenizer.ggml.merges")
    native = _native()
    rc = native.lib.ll_vocab_set_merges(c_vocab, raw, len(raw),
                                        native.ptr(offsets, "uint64_t *"), len(merges))
    if rc != 0:
        raise GGUFError(f"tokenizer.ggml.merges: {native.last_error()}")


def _tokenize(how: str, vocab, text: bytes, *args) -> list[int]:
    """ll_vocab_spm or ll_vocab_bpe (how) over text: the token ids."""
    native = _native()
    ids = native.ffi.new("int32_t[]", len(text))
    n_out = native.ffi.new("size_t *")
    native.check(getattr(native.lib, how)(vocab, text, len(text), *args, ids, len(text), n_out))
    return native.ffi.unpack(ids, n_out[0])


def _flag(md: dict, key: str, default: bool) -> bool:
    value = md.get(key)
    return bool(value) if isinstance(value, bool) else default


# --- SentencePiece -----------------------------------------------------------

# Bytes of `bytes` input that were not UTF-8, kept by the "surrogateescape" decoding.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _byte_token(vocab: _Vocab, byte: int, fallback: int) -> int:
    """llama.cpp's byte_to_token: the <0xNN> token, else the byte as a
    one-character token."""
    found = vocab.find(f"<0x{byte:02X}>")
    if found is None and byte < 0x80:
        found = vocab.find(chr(byte))
    return fallback if found is None else found


class _SentencePieceEncoder:
    def __init__(self, vocab: _Vocab, md: dict):
        unk = vocab.special["unk"]
        if unk == NO_TOKEN:
            raise UnsupportedModelError("a SentencePiece vocabulary without an unknown token")
        self.add_space_prefix = _flag(md, "tokenizer.ggml.add_space_prefix", True)
        self._vocab = vocab
        self._byte_ids = _native().ffi.new("int32_t[256]",
                                           [_byte_token(vocab, b, unk) for b in range(256)])

    def encode(self, fragments: list, out: list[int]) -> None:
        # Texts and tokens alternate, so as in llama.cpp every text gets the
        # space prefix: it starts the input or follows a special token.
        prefix = " " if self.add_space_prefix else ""
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
            else:
                self._encode_text(prefix + frag, out)

    def _encode_text(self, text: str, out: list[int]) -> None:
        # the raw bytes (any that were not UTF-8 kept by surrogateescape), spaces
        # made U+2581, merged in C as llama.cpp merges them
        raw = text.replace(" ", "\u2581").encode("utf-8", "surrogateescape")
        out.extend(_tokenize("ll_vocab_spm", self._vocab._c, raw, self._byte_ids))


# --- byte-level BPE ----------------------------------------------------------

def _byte_chars() -> list[str]:
    """GPT-2's table: printable bytes stand for themselves, the others for
    characters from U+0100 up, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = [""] * 256
    for b in printable:
        chars[b] = chr(b)
    extra = 0x100
    for b in range(256):
        if not chars[b]:
            chars[b] = chr(extra)
            extra += 1
    return chars


_BYTE_CHARS = _byte_chars()
_BYTE_OF_CHAR = {c: b for b, c in enumerate(_BYTE_CHARS)}
_BYTES_TO_CHARS = {b: c for b, c in enumerate(_BYTE_CHARS)}   # a str.translate table on latin-1

# llama.cpp's whitespace (not Python's \s, which adds \x1c-\x1f).
_WS = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
_LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Each pre-tokenizer is a chain of patterns: every pattern splits each piece the
# previous ones left, keeping what it does not match as pieces too (llama.cpp's
# unicode_regex_split). The GPT-2 pattern ends in "|\s+" as llama.cpp's own
# matcher for it does.
_PRE_TOKENIZERS = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt2": (_GPT2,),
    "smollm": (r"\p{N}", _GPT2),
    "llama3": (_LLAMA3,),
    "qwen2": (_QWEN2,),
}
# tokenizer.ggml.pre names -> (pre-tokenizer, whole words that are tokens skip merging, add BOS)
_PRE_NAMES = {
    "default": ("default", False, False),
    **{n: ("gpt2", False, False) for n in ("gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais")},
    **{n: ("smollm", False, False) for n in ("smollm", "starcoder", "refact", "command-r",
                                             "codeshell", "exaone", "minerva-7b")},
    **{n: ("llama3", True, True) for n in ("llama3", "llama-v3", "llama-bpe", "falcon3",
                                           "falcon-h1", "pixtral", "midm-2.0", "lfm2")},
    **{n: ("llama3", False, False) for n in ("dbrx", "smaug-bpe")},
    **{n: ("qwen2", False, False) for n in ("qwen2", "deepseek-r1-qwen", "stablelm2")},
}


def _compile(pattern: str):
    """The pattern with \\s and \\S meaning llama.cpp's whitespace. In these
    patterns \\s appears inside a class only as "[^\\s"."""
    import regex

    pattern = (pattern.replace(r"[^\s", "[^" + _WS).replace(r"\s", f"[{_WS}]")
               .replace(r"\S", f"[^{_WS}]"))
    return regex.compile(pattern)


class _BPEEncoder:
    _CACHE_LIMIT = 1 << 16   # distinct words remembered; cleared when full

    def __init__(self, vocab: _Vocab, md: dict, pre: str):
        merges = md.get("tokenizer.ggml.merges")
        if not isinstance(merges, list):
            raise GGUFError("tokenizer.ggml.merges: missing (a gpt2 vocabulary needs its merges)")
        if pre not in _PRE_NAMES:
            raise UnsupportedModelError(f"pre-tokenizer {pre!r} (tokenizer.ggml.pre)")
        chain, self.whole_words, self.add_bos_default = _PRE_NAMES[pre]
        self._patterns = [_compile(p) for p in _PRE_TOKENIZERS[chain]]
        if merges:
            _set_merges(vocab._c, merges)
        self._vocab = vocab
        # Not a token: llama.cpp looks up each single byte of the symbol's
        # text; only one-byte characters can match (-1: no token).
        ascii_ids = [vocab.find(chr(b)) for b in range(128)]
        self._byte_ids = _native().ffi.new("int32_t[256]", [
            -1 if i is None else i for i in ascii_ids] + [-1] * 128)
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, fragments: list, out: list[int]) -> None:
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
                continue
            # llama.cpp reads each byte that is not UTF-8 as U+FFFD.
            for word in self.split(_ESCAPED_BYTE.sub("\ufffd", frag)):
                ids = self._cache.get(word)
                if ids is None:
                    ids = self._word_ids(word)
                out.extend(ids)

    def split(self, text: str) -> list[str]:
        """The pre-tokenizer's words, in order; they join back to `text`."""
        pieces = [text]
        for pattern in self._patterns:
            split = []
            for piece in pieces:
                at = 0
                for m in pattern.finditer(piece):
                    if m.start() > at:
                        split.append(piece[at:m.start()])
                    split.append(m.group())
                    at = m.end()
                if at < len(piece):
                    split.append(piece[at:])
            pieces = split
        return pieces

    def _word_ids(self, word: str) -> tuple[int, ...]:
        chars = word.encode().decode("latin-1").translate(_BYTES_TO_CHARS)
        ids = tuple(_tokenize("ll_vocab_bpe", self._vocab._c, chars.encode(), self.whole_words,
                              self._byte_ids))
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids


# --- the tokenizer -----------------------------------------------------------

class Tokenizer:
    """A GGUF file's tokenizer: text <-> token ids, as llama.cpp tokenizes.

    Build it with `Tokenizer.from_gguf(path)` or `Tokenizer.from_metadata(md)`.
    Ids that the vocabulary lacks (no EOT token, say) are `NO_TOKEN` (-1).
    """

    def __init__(self, md: dict):
        kind = md.get("tokenizer.ggml.model")
        if kind not in ("llama", "gpt2"):
            raise UnsupportedModelError(f"tokenizer {kind!r} (tokenizer.ggml.model)")
        self.kind = kind
        self._vocab = vocab = _Vocab(md, kind)
        if kind == "llama":
            self._encoder = _SentencePieceEncoder(vocab, md)
            add_bos = True
        else:
            pre = md.get("tokenizer.ggml.pre") or "default"
            self._encoder = _BPEEncoder(vocab, md, pre)
            add_bos = self._encoder.add_bos_default
        self.add_bos = _flag(md, "tokenizer.ggml.add_bos_token", add_bos)
        self.add_eos = _flag(md, "tokenizer.ggml.add_eos_token", False)
        self._specials = vocab.special_tokens()
        # Each token's bytes, made on first use: [without special, with special]
        # (dicts: a few thousand distinct tokens get decoded, of 262k).
        self._pieces: tuple[dict, dict] = ({}, {})

    @classmethod
    def from_metadata(cls, md: dict) -> "Tokenizer":
        """From a GGUF metadata dict (`GGUFReader(path).metadata`)."""
        return cls(md)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> "Tokenizer":
        from .gguf import GGUFReader

        with GGUFReader(path) as reader:
            return cls(reader.metadata)

    # -- the vocabulary
    @property
    def n_vocab(self) -> int:
        return len(self._vocab.texts)

    @property
    def bos_id(self) -> int:
        return self._vocab.special["bos"]

    @property
    def eos_id(self) -> int:
        return self._vocab.special["eos"]

    @property
    def eot_id(self) -> int:
        return self._vocab.special["eot"]

    @property
    def pad_id(self) -> int:
        return self._vocab.special["pad"]

    @property
    def unk_id(self) -> int:
        return self._vocab.special["unk"]

    @property
    def eog_ids(self) -> frozenset[int]:
        """Every token that ends generation (EOS, EOT and their kin)."""
        return self._vocab.eog

    def is_eog(self, token: int) -> bool:
        return token in self._vocab.eog

    def token_text(self, token: int) -> str:
        """The token's text as the vocabulary stores it (byte-level or with U+2581)."""
        return self._vocab.texts[self._checked(token)]

    def token_attr(self, token: int) -> int:
        """The token's attribute bits (NORMAL, CONTROL, USER_DEFINED, ...)."""
        return self._vocab.attrs[self._checked(token)]

    # -- text -> ids
    def encode(self, text: str | bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of `text`.

        add_bos: add BOS (and EOS) where the vocabulary asks for them, as
        llama.cpp's add_special does. special: match control-token text such as
        "<|im_start|>" as that token; otherwise it is plain text. User-defined
        tokens always match. Bytes that are not UTF-8 tokenize as in llama.cpp
        (byte tokens for SentencePiece, U+FFFD for byte-level BPE).
        """
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8", "surrogateescape")
        out: list[int] = []
        if add_bos and self.add_bos and self.bos_id != NO_TOKEN:
            out.append(self.bos_id)
        if text:
            self._encoder.encode(self._partition(text, special), out)
        if add_bos and self.add_eos and self.eos_id != NO_TOKEN:
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, special: bool) -> list:
        """Cut `text` at special-token text, longest token first, into a list of
        strings and token ids (llama.cpp's tokenizer_st_partition)."""
        attrs = self._vocab.attrs
        fragments: list = [text]
        for tok_text, tok in self._specials:
            if not special and attrs[tok] & _SHOWN_ONLY_IF_SPECIAL:
                continue
            if tok_text not in text:
                continue
            cut: list = []
            for frag in fragments:
                if isinstance(frag, int) or tok_text not in frag:
                    cut.append(frag)
                    continue
                for j, part in enumerate(frag.split(tok_text)):
                    if j:
                        cut.append(tok)
                    if part:
                        cut.append(part)
            fragments = cut
        return fragments

    # -- ids -> text
    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """The bytes one token stands for. Control and unknown tokens give b""
        unless `special`."""
        pieces = self._pieces[bool(special)]
        token = operator.index(token)   # as the list these were cached in: 3.0 is no id
        piece = pieces.get(token)
        if piece is None:
            piece = pieces[token] = self._piece(self._checked(token), special)
        return piece

    def _piece(self, token: int, special: bool) -> bytes:
        text, attr = self._vocab.texts[token], self._vocab.attrs[token]
        if attr & _SHOWN_ONLY_IF_SPECIAL and not special:
            return b""
        if attr & (_SHOWN_ONLY_IF_SPECIAL | USER_DEFINED):
            return text.encode()
        if attr & NORMAL:
            if self.kind == "llama":
                return text.replace("\u2581", " ").encode()
            return _unmap_bytes(text)
        if attr & BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def decode(self, tokens: Iterable[int], special: bool = False) -> bytes:
        """The bytes of `tokens`, joined exactly (no space is stripped or added)."""
        return b"".join(self.token_to_piece(t, special) for t in tokens)

    def stream(self, special: bool = False) -> "StreamDecoder":
        """A decoder that takes tokens one by one and gives back only whole characters."""
        return StreamDecoder(self, special)

    def decode_stream(self, tokens: Iterable[int], special: bool = False) -> Iterator[str]:
        """Text as the tokens arrive; a character split across tokens comes out
        whole, once its last byte has arrived."""
        decoder = self.stream(special)
        for t in tokens:
            text = decoder.feed(t)
            if text:
                yield text
        text = decoder.flush()
        if text:
            yield text

    def _checked(self, token: int) -> int:
        if not 0 <= token < len(self._vocab.texts):
            raise ValueError(f"token id {token} is outside the vocabulary "
                             f"(0..{len(self._vocab.texts) - 1})")
        return token

    def __repr__(self) -> str:
        return f"<Tokenizer {self.kind} n_vocab={self.n_vocab}>"


def _unmap_bytes(text: str) -> bytes:
    out = bytearray()
    for c in text:
        b = _BYTE_OF_CHAR.get(c)
        if b is not None:
            out.append(b)
        else:   # not a byte-level character: shown the way llama.cpp shows it
            out += b"[UNK_BYTE_0x" + c.encode().hex().encode() + text.encode() + b"]"
    return bytes(out)


class StreamDecoder:
    """Turns tokens into text as they arrive. `feed` returns only complete
    UTF-8 characters, holding back the first bytes of one that is split across
    tokens; `flush` gives what is left (bytes that never completed a character
    become U+FFFD)."""

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self._tokenizer = tokenizer
        self._special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token: int) -> str:
        return self._utf8.decode(self._tokenizer.token_to_piece(token, self._special))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
