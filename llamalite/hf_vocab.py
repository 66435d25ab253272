"""A Hugging Face tokenizer as GGUF `tokenizer.*` metadata, the keys and
values llama.cpp's convert_hf_to_gguf.py writes.

- `tokenizer.model` (SentencePiece) -> tokenizer.ggml.model "llama": every
  piece with its score and type, the added tokens of tokenizer_config.json.
- `tokenizer.json` (byte-level BPE) -> "gpt2": the vocabulary, added tokens
  as control or user-defined tokens, the merges, and a pre-tokenizer name
  read off the tokenizer's pre_tokenizer (llama.cpp hashes the output of the
  transformers tokenizer instead; without transformers we recognise the
  pre_tokenizers that name stands for).

Then the special tokens, add_bos/add_eos and the chat template, from
tokenizer.json's added tokens and post-processor, tokenizer_config.json and
config.json, in llama.cpp's order of precedence.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UnsupportedModelError

# tokenizer.ggml.token_type values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The two Split regexes llama.cpp's pre-tokenizers stand for, as tokenizer.json spells them.
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
#: pre_tokenizer steps -> tokenizer.ggml.pre, for names both llama.cpp and
#: llamalite.tokenizer implement.
_PRE_TOKENIZERS = {
    (("ByteLevel", True),): "gpt-2",
    (("Digits", True), ("ByteLevel", True)): "smollm",
    (("Split", _LLAMA3_REGEX), ("ByteLevel", False)): "llama-bpe",
    (("Split", _QWEN2_REGEX), ("ByteLevel", False)): "qwen2",
}
# Special token kinds in llama.cpp's order, and the GGUF key of each id it writes
# (it has none for cls).
_SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_ID_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
            "sep": "seperator_token_id", "pad": "padding_token_id", "mask": "mask_token_id"}
_ADD_KINDS = ("bos", "eos", "sep")


def read_json(path: Path, required: bool = False) -> Any:
    """A JSON file of the checkpoint; None when absent and not required."""
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path}: missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None


def looks_special(text: str) -> bool:
    """Added tokens llama.cpp makes control tokens even when not marked special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


class Vocab:
    """The metadata entries, in order: key -> (value, GGUF value type)."""

    def __init__(self):
        self.entries: dict[str, tuple[Any, str]] = {}

    def add(self, key: str, value: Any, vtype: str) -> None:
        if isinstance(value, list) and not value:
            return   # llama.cpp writes no empty arrays
        self.entries[key] = (value, vtype)


def vocab_metadata(hf_dir: Path, config: dict, arch: str) -> Vocab:
    """The tokenizer.* keys for the checkpoint in `hf_dir`."""
    vocab = Vocab()
    tok_config = read_json(hf_dir / "tokenizer_config.json")
    if tok_config is not None and not isinstance(tok_config, dict):
        raise CheckpointError(f"{hf_dir / 'tokenizer_config.json'}: not a JSON object")
    if arch == "llama" and isinstance(tok_config, dict):
        prefix = tok_config.get("add_prefix_space")
        if isinstance(prefix, bool):
            vocab.add("tokenizer.ggml.add_space_prefix", prefix, "bool")
    tokenizer_json = read_json(hf_dir / "tokenizer.json")
    if (hf_dir / "tokenizer.model").is_file():
        n_vocab = _sentencepiece(vocab, hf_dir, config, tok_config)
        with_merges = False
    elif tokenizer_json is not None:
        n_vocab = _byte_level_bpe(vocab, hf_dir / "tokenizer.json", tokenizer_json, config)
        with_merges = True
    else:
        raise CheckpointError(f"{hf_dir}: no tokenizer.model or tokenizer.json")
    _special_tokens(vocab, hf_dir, config, tok_config, tokenizer_json, n_vocab, with_merges)
    # llama.cpp's rule for Granite's small models, which any llama of 49152 tokens meets
    if arch == "llama" and config.get("vocab_size") == 49152:
        vocab.add("tokenizer.ggml.add_bos_token", False, "bool")
    return vocab


# --- SentencePiece -----------------------------------------------------------

def _sentencepiece(vocab: Vocab, hf_dir: Path, config: dict, tok_config: dict | None) -> int:
    import sentencepiece

    path = hf_dir / "tokenizer.model"
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a SentencePiece model ({e})") from None
    n_sp = sp.vocab_size()
    n_vocab = config.get("vocab_size") or n_sp
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [UNUSED] * n_vocab
    for i in range(min(n_sp, n_vocab)):
        tokens[i], scores[i] = sp.IdToPiece(i), sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else
                    UNUSED if sp.IsUnused(i) else BYTE if sp.IsByte(i) else NORMAL)
    added = read_json(hf_dir / "added_tokens.json") or {}
    for text, i in added.items() if isinstance(added, dict) else ():
        if isinstance(i, int) and 0 <= i < n_vocab:
            tokens[i], scores[i], types[i] = text, -1000.0, USER_DEFINED
    decoder = (tok_config or {}).get("added_tokens_decoder") or {}
    for key, entry in decoder.items() if isinstance(decoder, dict) else ():
        i, text = _added_token(key, entry, "tokenizer_config.json added_tokens_decoder")
        if i >= n_vocab:
            continue
        if entry.get("special") or looks_special(text):
            types[i] = CONTROL
        else:
            text, types[i] = text.replace("\u2581", " "), USER_DEFINED
        tokens[i], scores[i] = text, -1000.0
    vocab.add("tokenizer.ggml.model", "llama", "string")
    vocab.add("tokenizer.ggml.pre", "default", "string")
    vocab.add("tokenizer.ggml.tokens", tokens, "string")
    vocab.add("tokenizer.ggml.scores", scores, "float32")
    vocab.add("tokenizer.ggml.token_type", types, "int32")
    return n_vocab


def _added_token(key: Any, entry: Any, where: str) -> tuple[int, str]:
    try:
        i = int(key)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: token id {key!r} is not an integer") from None
    if i < 0 or not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
        raise CheckpointError(f"{where}: entry {key!r} is not a token id with a content string")
    return i, entry["content"]


# --- byte-level BPE ----------------------------------------------------------

def _byte_level_bpe(vocab: Vocab, path: Path, tj: Any, config: dict) -> int:
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise UnsupportedModelError(f"{path}: a {kind or 'non-BPE'} tokenizer; only byte-level "
                                    "BPE (or a tokenizer.model) converts")
    if model.get("byte_fallback"):
        raise UnsupportedModelError(f"{path}: a SentencePiece-style BPE (byte_fallback) "
                                    "without tokenizer.model does not convert")
    pre = _pre_tokenizer_name(path, tj.get("pre_tokenizer"))
    ids = model.get("vocab")
    if not isinstance(ids, dict) or not all(isinstance(i, int) and i >= 0 for i in ids.values()):
        raise CheckpointError(f"{path}: model.vocab is not a map of tokens to ids")
    reverse = {i: t for t, i in ids.items()}
    added = {}
    for n, entry in enumerate(tj.get("added_tokens") or []):
        i, text = _added_token(entry.get("id") if isinstance(entry, dict) else None, entry,
                               f"{path}: added_tokens[{n}]")
        reverse[i], added[i] = text, entry
    n_vocab = config.get("vocab_size") or len(reverse)
    if reverse and max(reverse) >= n_vocab:
        raise CheckpointError(f"{path}: token id {max(reverse)} is past the vocab_size "
                              f"{n_vocab} of config.json")
    tokens, types = [], []
    for i in range(n_vocab):
        text = reverse.get(i)
        if text is None:
            text, kind = f"[PAD{i}]", UNUSED
        elif i in added:
            if added[i].get("special") or looks_special(text):
                kind = CONTROL
            else:
                text, kind = text.replace("\u2581", " "), USER_DEFINED
        else:
            kind = NORMAL
        tokens.append(text)
        types.append(kind)
    vocab.add("tokenizer.ggml.model", "gpt2", "string")
    vocab.add("tokenizer.ggml.pre", pre, "string")
    vocab.add("tokenizer.ggml.tokens", tokens, "string")
    vocab.add("tokenizer.ggml.token_type", types, "int32")
    return n_vocab


def _pre_tokenizer_name(path: Path, pre: Any) -> str:
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" \
        else [pre]
    signature = []
    for step in steps if isinstance(steps, list) else [steps]:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "ByteLevel":
            if step.get("add_prefix_space"):
                kind = "ByteLevel with add_prefix_space"
            signature.append((kind, bool(step.get("use_regex", True))))
        elif kind == "Digits":
            signature.append((kind, bool(step.get("individual_digits"))))
        elif kind == "Split":
            pattern = step.get("pattern")
            signature.append((kind, pattern.get("Regex") if isinstance(pattern, dict) else None))
        else:
            signature.append((kind,))
    name = _PRE_TOKENIZERS.get(tuple(signature))
    if name is None:
        raise UnsupportedModelError(f"{path}: pre_tokenizer {json.dumps(pre)[:200]} is none of "
                                    "those llamalite converts (GPT-2, SmolLM, Llama 3, Qwen2)")
    return name


def _merges(path: Path, tj: dict) -> list[str]:
    """model.merges as "left right" strings; pairs (the newer form) have their
    spaces written as U+0120 + 256, as llama.cpp stores them."""
    merges = (tj.get("model") or {}).get("merges") or []
    if not isinstance(merges, list):
        raise CheckpointError(f"{path}: model.merges is not a list")
    out = []
    for m in merges:
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(s, str) for s in m):
            out.append(" ".join(s.replace(" ", chr(ord(" ") + 256)) for s in m))
        else:
            raise CheckpointError(f"{path}: merge {m!r} is neither 'a b' nor ['a', 'b']")
    return out


# --- special tokens ----------------------------------------------------------

def _special_tokens(vocab: Vocab, hf_dir: Path, config: dict, tok_config: dict | None,
                    tj: Any, n_vocab: int, with_merges: bool) -> None:
    """llama.cpp's SpecialVocab: the first source to name a token wins."""
    ids: dict[str, int] = {}
    add: dict[str, bool] = {}

    def set_id(kind: str, value: Any, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or kind in ids:
            return
        if value < 0:
            raise CheckpointError(f"{where}: {kind} token id {value} is negative")
        if value < n_vocab:
            ids[kind] = value

    added = tj.get("added_tokens") or [] if isinstance(tj, dict) else []
    if isinstance(tj, dict):
        if with_merges:
            vocab.add("tokenizer.ggml.merges", _merges(hf_dir / "tokenizer.json", tj), "string")
        _post_processor(tj.get("post_processor"), tok_config, add)
    if tok_config is not None:
        template = _chat_template(hf_dir, tok_config)
        for kind in _SPECIAL_KINDS:
            flag = tok_config.get(f"add_{kind}_token")
            if isinstance(flag, bool):
                add.setdefault(kind, flag)
            entry = tok_config.get(f"{kind}_token")
            text = entry.get("content") if isinstance(entry, dict) else entry
            if isinstance(text, str):
                found = next((a.get("id") for a in added
                              if isinstance(a, dict) and a.get("content") == text), None)
                set_id(kind, found, str(hf_dir / "tokenizer.json"))
    else:
        template = None
    for kind in _SPECIAL_KINDS:
        set_id(kind, config.get(f"{kind}_token_id"), str(hf_dir / "config.json"))
    for kind, i in ids.items():
        if kind in _ID_KEYS:
            vocab.add(f"tokenizer.ggml.{_ID_KEYS[kind]}", i, "uint32")
    for kind, flag in add.items():
        if kind in _ADD_KINDS:
            vocab.add(f"tokenizer.ggml.add_{kind}_token", flag, "bool")
    _add_chat_template(vocab, template)


def _post_processor(post: Any, tok_config: dict | None, add: dict) -> None:
    """Whether the tokenizer adds BOS/EOS, from a ByteLevel or simple
    TemplateProcessing post-processor (llama.cpp's reading of the common cases)."""
    if not isinstance(post, dict):
        return
    bos = (tok_config or {}).get("bos_token")
    eos = (tok_config or {}).get("eos_token")
    bos = bos.get("content") if isinstance(bos, dict) else bos
    eos = eos.get("content") if isinstance(eos, dict) else eos
    processors = post.get("processors", [post])
    for proc in processors if isinstance(processors, list) else []:
        kind = proc.get("type") if isinstance(proc, dict) else None
        if kind == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
        elif kind == "TemplateProcessing":
            single = proc.get("single")
            if isinstance(single, list) and len(single) > 1:
                first, last = _template_token(single[0]), _template_token(single[-1])
                if first:
                    add["bos"] = first == bos or tok_config is None
                if last:
                    add["eos"] = last == eos or tok_config is None


def _template_token(item: Any) -> Any:
    """The id of a TemplateProcessing {"SpecialToken": {"id": ...}} item, else None."""
    special = item.get("SpecialToken") if isinstance(item, dict) else None
    return special.get("id") if isinstance(special, dict) else None


def _chat_template(hf_dir: Path, tok_config: dict) -> Any:
    """tokenizer_config.json's chat_template, else chat_template.jinja or .json."""
    if "chat_template" in tok_config:
        template = tok_config["chat_template"]
    elif (hf_dir / "chat_template.jinja").is_file():
        try:
            template = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{hf_dir / 'chat_template.jinja'}: cannot read ({e})") from None
    else:
        template = (read_json(hf_dir / "chat_template.json") or {}).get("chat_template")
    return template if isinstance(template, (str, list)) else None


def _add_chat_template(vocab: Vocab, template: Any) -> None:
    """A string is the template; a list of {name, template} gives the default
    one and the others under tokenizer.chat_template.NAME."""
    if isinstance(template, str):
        vocab.add("tokenizer.chat_template", template, "string")
        return
    if not isinstance(template, list):
        return
    default, names = None, []
    for choice in template:
        if not isinstance(choice, dict) or not isinstance(choice.get("template"), str):
            continue
        name = re.sub(r"[^A-Za-z0-9]", "_", str(choice.get("name", "")))
        if name == "default":
            default = choice["template"]
        elif name:
            names.append(name)
            vocab.add(f"tokenizer.chat_template.{name}", choice["template"], "string")
    vocab.add("tokenizer.chat_templates", names, "string")
    if default is not None:
        vocab.add("tokenizer.chat_template", default, "string")
