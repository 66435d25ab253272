"""convert: Hugging Face checkpoints written here (numpy weights saved by the
safetensors package, a SentencePiece model trained here, a byte-level BPE
tokenizer.json trained by the tokenizers package) converted to GGUF, then run
by llamalite and checked against a numpy forward pass in Hugging Face's own
layout (rotate-half rope on un-permuted Q/K) and against the source tokenizers."""
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from safetensors.numpy import save_file
from ttyrun import run_with_terminal_stderr

from llamalite import Llama, UnsupportedModelError
from llamalite.convert import convert
from llamalite.errors import CheckpointError, LlamaliteError
from llamalite.gguf import GGUFReader
from llamalite.quants import GGMLType
from llamalite.safetensors_reader import DTYPE_SIZES, SafetensorsFile

TEXT = ("The quick brown fox jumps over the lazy dog. A small model reads a few words, "
        "counts 1 2 3 45 678, and writes them back: hello, world! Rivers run to the sea; "
        "the sea is never full. What is written stays written. ")
CORPUS = [TEXT, TEXT.upper(), TEXT.replace(" ", "  "), "Numbers: 3.14 2718 42 and 1000000.",
          "Lines\nwith\nbreaks and\ttabs.", "café naïve résumé déjà vu", "It's, we're, they'll."
          ] * 6
PROMPTS = ["The quick brown fox", "hello, world! 42 rivers\n  run", "naïve café 🦙 x"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = QWEN2_REGEX.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


# --- writing checkpoints -------------------------------------------------------

def _train_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    """A Llama-style model: BPE with byte fallback, no normalisation."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, minloglevel=2)
    path.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(path))


def _pre_tokenizer(kind: str):
    """The pre_tokenizer of each byte-level BPE family llamalite converts."""
    from tokenizers import Regex, pre_tokenizers as pt
    if kind == "gpt-2":
        return pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "smollm":
        return pt.Sequence([pt.Digits(individual_digits=True),
                            pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    regex = {"qwen2": QWEN2_REGEX, "llama-bpe": LLAMA3_REGEX}[kind]
    return pt.Sequence([pt.Split(Regex(regex), behavior="isolated"),
                        pt.ByteLevel(add_prefix_space=False, use_regex=False)])


def _train_bpe(path: Path, kind: str = "qwen2"):
    """A byte-level BPE tokenizer.json (Qwen2's pre-tokenizer unless told)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path))
    return tok


def _weights(cfg: dict, rng, tied: bool, biases: bool) -> dict:
    n_embd, n_ff, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    nq, nkv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal(
        (cfg["vocab_size"], n_embd)).astype(np.float32), "model.norm.weight": norm(n_embd)}
    if not tied:
        w["lm_head.weight"] = mat(cfg["vocab_size"], n_embd)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": norm(n_embd),
                  p + "post_attention_layernorm.weight": norm(n_embd),
                  p + "self_attn.q_proj.weight": mat(nq, n_embd),
                  p + "self_attn.k_proj.weight": mat(nkv, n_embd),
                  p + "self_attn.v_proj.weight": mat(nkv, n_embd),
                  p + "self_attn.o_proj.weight": mat(n_embd, nq),
                  p + "mlp.gate_proj.weight": mat(n_ff, n_embd),
                  p + "mlp.up_proj.weight": mat(n_ff, n_embd),
                  p + "mlp.down_proj.weight": mat(n_embd, n_ff)})
        if biases:
            for name, n in (("q_proj", nq), ("k_proj", nkv), ("v_proj", nkv)):
                w[p + f"self_attn.{name}.bias"] = (0.3 * rng.standard_normal(n)).astype(np.float32)
    return w


def _save_sharded(directory: Path, weights: dict) -> None:
    names = sorted(weights)
    halves = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for file, part in halves.items():
        save_file({n: weights[n] for n in part}, str(directory / file))
        weight_map.update(dict.fromkeys(part, file))
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=1))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """Llama: SentencePiece, F32 weights in two shards, head_dim given,
    a feed-forward size (80) that is not whole Q8_0 blocks."""
    d = tmp_path_factory.mktemp("TinyLlama-test")
    sp = _train_sentencepiece(d / "tokenizer.model")
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 80, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 16, "num_hidden_layers": 2, "vocab_size": sp.vocab_size() + 4,
           "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    _write_json(d / "config.json", cfg)
    _write_json(d / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(sp.vocab_size()): {"content": "<|im_end|>", "special": True},
                                 str(sp.vocab_size() + 1): {"content": "<tool>",
                                                            "special": False}}})
    _write_json(d / "generation_config.json", {"temperature": 0.6, "top_p": 0.9, "top_k": 20})
    _save_sharded(d, _weights(cfg, np.random.default_rng(1), tied=False, biases=False))
    return d


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    """Qwen2: byte-level BPE, F16 weights in one file, Q/K/V biases, tied embeddings."""
    d = tmp_path_factory.mktemp("qwen2-test")
    tok = _train_bpe(d / "tokenizer.json")
    n_vocab = tok.get_vocab_size() + 8
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
           "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
           "num_hidden_layers": 2, "vocab_size": n_vocab, "max_position_embeddings": 512,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
           "bos_token_id": 0, "eos_token_id": 2}
    _write_json(d / "config.json", cfg)
    _write_json(d / "tokenizer_config.json", {
        "add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE})
    w = _weights(dict(cfg, head_dim=16), np.random.default_rng(2), tied=True, biases=True)
    save_file({n: v.astype(np.float16) for n, v in w.items()}, str(d / "model.safetensors"))
    return d


def _source_weights(d: Path) -> dict:
    from safetensors.numpy import load_file
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update({n: v.astype(np.float64) for n, v in load_file(str(f)).items()})
    return out


# --- the reference: Hugging Face's forward pass, in numpy ------------------------

def _rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def hf_forward(d: Path, ids: list) -> np.ndarray:
    """Logits of every position, as transformers' LlamaForCausalLM /
    Qwen2ForCausalLM compute them (float64)."""
    cfg = json.loads((d / "config.json").read_text())
    w = _source_weights(d)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", cfg["hidden_size"] // n_head)
    eps, n = cfg["rms_norm_eps"], len(ids)
    inv_freq = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    angles = np.outer(np.arange(n), inv_freq)
    cos = np.cos(np.concatenate([angles, angles], -1))[:, None, :]
    sin = np.sin(np.concatenate([angles, angles], -1))[:, None, :]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."

        def proj(h, name):
            y = h @ w[p + f"self_attn.{name}.weight"].T
            return y + w.get(p + f"self_attn.{name}.bias", 0)
        h = _rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = proj(h, "q_proj").reshape(n, n_head, hd)
        k = proj(h, "k_proj").reshape(n, n_kv, hd)
        v = proj(h, "v_proj").reshape(n, n_kv, hd)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out = np.einsum("hts,shd->thd", att, v).reshape(n, n_head * hd)
        x = x + out @ w[p + "self_attn.o_proj.weight"].T
        h = _rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = _rmsnorm(x, w["model.norm.weight"], eps)
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def _llamalite_logits(path: Path, ids: list) -> np.ndarray:
    llm = Llama(str(path), n_ctx=64, n_threads=2, logits_all=True, type_k=0, type_v=0,
                verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float64)
    finally:
        llm.close()


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


# --- conversion runs, and the logits agree ------------------------------------------

# Worst |difference| / max |logit| allowed per output type: F32 is exact up to
# float32 arithmetic; the others round every weight (F16 to 11 bits, BF16 to 8,
# Q8_0 to 8 bits per 32-value block, and its activations to 8 bits).
TOLERANCE = {"f32": 2e-6, "f16": 2e-3, "bf16": 1.5e-2, "q8_0": 3e-2}


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("model", ["llama", "qwen2"])
def test_logits_match_hugging_face_layout(model, outtype, llama_dir, qwen2_dir, tmp_path):
    d = llama_dir if model == "llama" else qwen2_dir
    out = tmp_path / f"{model}-{outtype}.gguf"
    result = convert(d, out, outtype)
    assert result.architecture == model and out.stat().st_size == result.size
    ids = [1, 20, 57, 33, 101, 7, 250, 64, 12, 99, 3, 45]
    err = _relative_error(_llamalite_logits(out, ids), hf_forward(d, ids))
    assert err < TOLERANCE[outtype], f"{model} {outtype}: relative error {err:.2e}"


def test_unpermuted_llama_would_not_match(llama_dir, tmp_path, monkeypatch):
    """The check above has teeth: skipping llama's Q/K permutation is caught."""
    import llamalite.convert as conv
    monkeypatch.setattr(conv, "_permute_rows", lambda x, n_head: x)
    out = tmp_path / "unpermuted.gguf"
    convert(llama_dir, out, "f32")
    ids = [1, 20, 57, 33, 101, 7, 250, 64]
    assert _relative_error(_llamalite_logits(out, ids), hf_forward(llama_dir, ids)) > 1e-2


# --- what the file holds ---------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_q8(llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "llama-q8_0.gguf"
    convert(llama_dir, out, "q8_0")
    with GGUFReader(out) as r:
        yield r


@pytest.fixture(scope="module")
def qwen2_f16(qwen2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "qwen2-f16.gguf"
    convert(qwen2_dir, out, "f16")
    with GGUFReader(out) as r:
        yield r


def test_llama_metadata_is_llama_cpps(llama_q8, llama_dir):
    md, cfg = llama_q8.metadata, json.loads((llama_dir / "config.json").read_text())
    expected = {
        "general.architecture": "llama", "general.type": "model",
        "general.name": "TinyLlama Test0", "general.file_type": 7,
        "general.quantization_version": 2,
        "general.sampling.top_k": 20, "llama.block_count": 2, "llama.context_length": 256,
        "llama.embedding_length": 64, "llama.feed_forward_length": 80,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.attention.key_length": 16, "llama.attention.value_length": 16,
        "llama.vocab_size": cfg["vocab_size"], "llama.rope.dimension_count": 16,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
        "tokenizer.chat_template": CHAT_TEMPLATE}
    assert {k: md.get(k) for k in expected} == expected
    assert md["general.sampling.temp"] == pytest.approx(0.6)
    assert md["llama.rope.freq_base"] == 10000.0
    assert md["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    types = {k: llama_q8.value_types[k].name for k in (
        "llama.block_count", "llama.rope.freq_base", "tokenizer.ggml.token_type",
        "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id", "general.sampling.top_k")}
    assert types == {"llama.block_count": "UINT32", "llama.rope.freq_base": "FLOAT32",
                     "tokenizer.ggml.token_type": "INT32", "tokenizer.ggml.scores": "FLOAT32",
                     "tokenizer.ggml.bos_token_id": "UINT32",
                     "general.sampling.top_k": "INT32"}


def test_sentencepiece_vocabulary(llama_q8, llama_dir):
    sp = spm.SentencePieceProcessor(model_file=str(llama_dir / "tokenizer.model"))
    md, n_sp = llama_q8.metadata, sp.vocab_size()
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == len(md["tokenizer.ggml.scores"]) == n_sp + 4
    assert tokens[:n_sp] == [sp.IdToPiece(i) for i in range(n_sp)]
    assert types[:4] == [2, 3, 3, 6]        # <unk> unknown, <s> </s> control, <0x00> byte
    assert md["tokenizer.ggml.scores"][10] == pytest.approx(sp.GetScore(10))
    # added tokens: special -> control, the other user-defined; the rest padding
    assert tokens[n_sp:] == ["<|im_end|>", "<tool>", f"[PAD{n_sp + 2}]", f"[PAD{n_sp + 3}]"]
    assert types[n_sp:] == [3, 4, 5, 5]


def test_tensor_names_and_types(llama_q8, qwen2_f16):
    t = {n: v.type for n, v in llama_q8.tensors.items()}
    assert "output.weight" in t and "rope_freqs.weight" not in t
    assert t["blk.0.attn_norm.weight"] == t["output_norm.weight"] == GGMLType.F32
    assert t["blk.1.attn_q.weight"] == t["token_embd.weight"] == GGMLType.Q8_0
    assert t["blk.1.ffn_gate.weight"] == GGMLType.Q8_0      # rows of 64
    assert t["blk.1.ffn_down.weight"] == GGMLType.F16       # rows of 80: not whole blocks
    assert len(t) == 3 + 2 * 9
    q = {n: v.type for n, v in qwen2_f16.tensors.items()}
    assert "output.weight" not in q                          # tied embeddings
    assert q["blk.0.attn_q.bias"] == q["blk.0.ffn_norm.weight"] == GGMLType.F32
    assert q["blk.0.attn_k.weight"] == GGMLType.F16
    assert len(q) == 2 + 2 * 12
    assert list(q)[:3] == ["token_embd.weight", "blk.0.attn_norm.weight",
                           "blk.0.ffn_down.weight"]          # sorted by Hugging Face name


def test_qwen2_tensors_are_not_permuted(qwen2_f16, qwen2_dir):
    src = _source_weights(qwen2_dir)
    t = qwen2_f16.tensors["blk.1.attn_k.weight"]
    got = t.data.view(np.float16).reshape(t.shape)
    assert np.array_equal(got, src["model.layers.1.self_attn.k_proj.weight"].astype(np.float16))


def test_quantized_bytes_are_gguf_packages(llama_dir, tmp_path):
    """Q8_0 and BF16 bytes as the gguf package (llama.cpp's converter) makes them."""
    import gguf
    src = _source_weights(llama_dir)["model.layers.0.mlp.up_proj.weight"].astype(np.float32)
    for outtype, qtype in (("q8_0", gguf.GGMLQuantizationType.Q8_0),
                           ("bf16", gguf.GGMLQuantizationType.BF16)):
        out = tmp_path / f"{outtype}.gguf"
        convert(llama_dir, out, outtype)
        with GGUFReader(out) as r:
            got = r.tensors["blk.0.ffn_up.weight"].data
            want = gguf.quants.quantize(src, qtype)
            assert np.array_equal(got, want.reshape(-1).view(np.uint8))


def test_qwen2_bpe_vocabulary(qwen2_f16, qwen2_dir):
    tj = json.loads((qwen2_dir / "tokenizer.json").read_text())
    md = qwen2_f16.metadata
    assert md["general.architecture"] == "qwen2" and md["general.file_type"] == 1
    assert "qwen2.vocab_size" not in md and "qwen2.rope.dimension_count" not in md
    assert md["qwen2.rope.freq_base"] == 1e6
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "qwen2"
    assert "tokenizer.ggml.scores" not in md
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    n = len(tj["model"]["vocab"])
    assert len(tokens) == n + 8
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and types[:3] == [3] * 3
    assert all(tokens[i] == t for t, i in tj["model"]["vocab"].items())
    assert types[3:n] == [1] * (n - 3) and types[n:] == [5] * 8
    assert md["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m
                                           for m in tj["model"]["merges"]]
    assert md["tokenizer.ggml.eos_token_id"] == 2             # tokenizer_config's <|im_end|>
    assert md["tokenizer.ggml.padding_token_id"] == 0
    assert md["tokenizer.ggml.bos_token_id"] == 0             # config.json
    assert md["tokenizer.ggml.add_bos_token"] is False


# --- tokenization agrees with the source tokenizers ----------------------------------

def test_sentencepiece_tokenization(llama_dir, tmp_path):
    out = tmp_path / "llama.gguf"
    convert(llama_dir, out, "f16")
    sp = spm.SentencePieceProcessor(model_file=str(llama_dir / "tokenizer.model"))
    llm = Llama(str(out), n_ctx=64, vocab_only=True, verbose=False)
    for text in PROMPTS + [TEXT]:
        assert llm.tokenize(text.encode()) == [1] + sp.encode(text), text
    assert llm.tokenize(b"a<|im_end|>", add_bos=False, special=True)[-1] == sp.vocab_size()


def test_bpe_tokenization(qwen2_dir, tmp_path):
    from tokenizers import Tokenizer
    out = tmp_path / "qwen2.gguf"
    convert(qwen2_dir, out, "f16")
    tok = Tokenizer.from_file(str(qwen2_dir / "tokenizer.json"))
    llm = Llama(str(out), n_ctx=64, vocab_only=True, verbose=False)
    for text in PROMPTS + [TEXT, "<|im_start|>user\nhi<|im_end|>"]:
        assert llm.tokenize(text.encode(), special=True) == tok.encode(text).ids, text
        assert llm.detokenize(tok.encode(text).ids, special=True) == text.encode()


@pytest.mark.parametrize("kind", ["gpt-2", "smollm", "llama-bpe"])
def test_other_bpe_pre_tokenizers(kind, qwen2_dir, tmp_path):
    """Each pre_tokenizer becomes the tokenizer.ggml.pre name that splits text
    as it does."""
    d = _broken_copy(qwen2_dir, tmp_path / kind)
    tok = _train_bpe(d / "tokenizer.json", kind)
    convert(d, tmp_path / "x.gguf", "f16")
    with GGUFReader(tmp_path / "x.gguf") as r:
        assert r.metadata["tokenizer.ggml.pre"] == kind
    llm = Llama(str(tmp_path / "x.gguf"), n_ctx=64, vocab_only=True, verbose=False)
    for text in PROMPTS + [TEXT, "x 12345 y\n\n  z's"]:
        assert llm.tokenize(text.encode(), add_bos=False) == tok.encode(text).ids, text


# --- the command line ----------------------------------------------------------------

def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "llamalite", *map(str, args)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("model, args, n_tensors", [
    ("qwen2", ["--outfile", "{out}", "--outtype", "q8_0"], 26),
    ("llama", ["{out}", "--outtype", "f32"], 21),
])
def test_cli_converts(model, args, n_tensors, llama_dir, qwen2_dir, tmp_path):
    d, out = (llama_dir if model == "llama" else qwen2_dir), tmp_path / "cli.gguf"
    r = _cli("convert", d, *[a.format(out=out) for a in args])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                      # no progress lines when not on a terminal
    assert f"wrote {out}: {model}, {n_tensors} tensors" in r.stdout
    ids = [1, 60, 7, 100, 33]
    err = _relative_error(_llamalite_logits(out, ids), hf_forward(d, ids))
    assert err < TOLERANCE[args[-1]]


def _broken_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _error_line(r) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llamalite: error: "), r.stderr
    return lines[0]


def test_cli_errors(qwen2_dir, tmp_path):
    out = tmp_path / "x.gguf"
    assert "not a directory" in _error_line(_cli("convert", tmp_path / "nope", out))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json: missing" in _error_line(_cli("convert", empty, out))
    assert "invalid choice" in _error_line(_cli("convert", qwen2_dir, out, "--outtype", "q4_0"))
    assert "name the GGUF file to write once" in _error_line(_cli("convert", qwen2_dir))
    assert "name the GGUF file to write once" in _error_line(
        _cli("convert", qwen2_dir, out, "--outfile", out))
    gpt2 = _broken_copy(qwen2_dir, tmp_path / "gpt2")
    cfg = json.loads((gpt2 / "config.json").read_text())
    _write_json(gpt2 / "config.json", dict(cfg, architectures=["GPT2LMHeadModel"]))
    assert "'GPT2LMHeadModel' does not convert" in _error_line(_cli("convert", gpt2, out))
    assert "no directory" in _error_line(_cli("convert", qwen2_dir, tmp_path / "no" / "x.gguf"))
    assert "is a directory" in _error_line(_cli("convert", qwen2_dir, tmp_path))
    corrupt = _broken_copy(qwen2_dir, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 64)
    assert "model.safetensors: header length" in _error_line(_cli("convert", corrupt, out))
    assert not out.exists()


def _rewrite_weights(d: Path, edit) -> None:
    from safetensors.numpy import load_file
    w = load_file(str(d / "model.safetensors"))
    edit(w)
    save_file(w, str(d / "model.safetensors"))


def test_missing_unknown_and_misshapen_tensors(qwen2_dir, tmp_path):
    cases = {
        "missing": (lambda w: w.pop("model.layers.1.mlp.up_proj.weight"),
                    "tensor 'model.layers.1.mlp.up_proj.weight' is missing"),
        "unknown": (lambda w: w.update(extra=np.zeros(3, np.float16)),
                    "tensor 'extra' is not part of a qwen2 model"),
        "layer past the end": (lambda w: w.update({"model.layers.2.input_layernorm.weight":
                                                   np.ones(64, np.float16)}),
                               "'model.layers.2.input_layernorm.weight' is not part"),
        "misshapen": (lambda w: w.update({"model.norm.weight": np.ones(63, np.float16)}),
                      "has shape [63]; config.json makes it [64]"),
    }
    for i, (edit, message) in enumerate(cases.values()):
        d = _broken_copy(qwen2_dir, tmp_path / f"case{i}")
        _rewrite_weights(d, edit)
        with pytest.raises(CheckpointError, match=message.replace("[", r"\[")):
            convert(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_sharded_index_must_match(llama_dir, tmp_path):
    d = _broken_copy(llama_dir, tmp_path / "shards")
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors: missing"):
        convert(d, tmp_path / "x.gguf")
    d = _broken_copy(llama_dir, tmp_path / "shards2")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    _write_json(d / "model.safetensors.index.json", index)
    with pytest.raises(CheckpointError, match="has no tensor 'model.layers.9.mlp.up_proj"):
        convert(d, tmp_path / "x.gguf")


def test_unknown_pre_tokenizer_is_a_clear_error(qwen2_dir, tmp_path):
    d = _broken_copy(qwen2_dir, tmp_path / "pre")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Whitespace"}
    _write_json(d / "tokenizer.json", tj)
    with pytest.raises(UnsupportedModelError, match="pre_tokenizer .*Whitespace"):
        convert(d, tmp_path / "x.gguf")


# --- hostile safetensors headers -----------------------------------------------------

def _safetensors(path: Path, header, data: bytes = b"\0" * 64, length=None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}


@pytest.mark.parametrize("header, length, message", [
    (GOOD, 10**9, "header length 1000000000 is more than"),
    (GOOD, 2**64 - 1, "header length"),
    (b"{not json", None, "not valid UTF-8 JSON"),
    (b"\xff\xfe", None, "not valid UTF-8 JSON"),
    ([1, 2], None, "not a JSON object"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 160]}}, None,
     r"tensor 'a': data_offsets \[0, 160\] lie outside the 64 data bytes"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [-4, 12]}}, None, "lie outside"),
    ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, None,
     "tensor 'b': data at offset 8 overlaps tensor 'a'"),
    ({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, None,
     r"tensor 'a': holds 16 bytes; F32 of shape \[2, 3\] takes 24"),
    ({"a": {"dtype": "F17", "shape": [2], "data_offsets": [0, 8]}}, None, "unknown dtype 'F17'"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, None, "shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, None, "data_offsets"),
    ({"a": "F32"}, None, "not an object"),
])
def test_hostile_headers(tmp_path, header, length, message):
    path = _safetensors(tmp_path / "model.safetensors", header, length=length)
    with pytest.raises(CheckpointError, match=message) as e:
        SafetensorsFile(path)
    assert str(path) in str(e.value)


def test_too_short_file(tmp_path):
    (tmp_path / "s.safetensors").write_bytes(b"\1\0")
    with pytest.raises(CheckpointError, match="too short"):
        SafetensorsFile(tmp_path / "s.safetensors")


def test_reader_values_and_bf16(tmp_path):
    x = np.array([[1.5, -2.0], [3.25, 1e-3]], np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)   # these values are exact in BF16
    raw = x[:1].tobytes() + bf16.tobytes()
    header = {"__metadata__": {"format": "pt"},
              "f": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]},
              "h": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},
              "i": {"dtype": "I32", "shape": [0], "data_offsets": [16, 16]}}
    with SafetensorsFile(_safetensors(tmp_path / "m.safetensors", header, raw)) as f:
        assert list(f.tensors) == ["f", "h", "i"]
        assert np.array_equal(f.tensors["f"].to_float32(), x[:1])
        got = f.tensors["h"].to_float32()
        want = (x.view(np.uint32) & 0xFFFF0000).view(np.float32)
        assert got.dtype == np.float32 and np.array_equal(got, want)
        with pytest.raises(UnsupportedModelError, match="dtype I32"):
            f.tensors["i"].to_float32()


def test_bad_outtype_and_output(qwen2_dir, tmp_path):
    with pytest.raises(LlamaliteError, match="unknown output type 'q4_0'"):
        convert(qwen2_dir, tmp_path / "x.gguf", "q4_0")


def test_cli_shows_each_tensor_on_a_terminal(qwen2_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r, shown = run_with_terminal_stderr("convert", str(qwen2_dir), str(tmp_path / "t.gguf"),
                                        env=env)
    assert r.returncode == 0
    lines = shown.splitlines()
    assert len(lines) == 26
    assert lines[0].startswith("[   1/  26] token_embd.weight,")
    assert lines[0].endswith("F16 --> F16, shape = {64, 328}")
    assert any("blk.0.attn_q.bias," in ln and ln.endswith(" F16 --> F32, shape = {64}")
               for ln in lines)


def test_llama3_rope_scaling_writes_rope_freqs(llama_dir, tmp_path):
    d = _broken_copy(llama_dir, tmp_path / "llama3")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    _write_json(d / "config.json", cfg)
    convert(d, tmp_path / "l3.gguf", "f32")
    with GGUFReader(tmp_path / "l3.gguf") as r:
        t = r.tensors["rope_freqs.weight"]
        assert list(r.tensors)[0] == "rope_freqs.weight" and t.type == GGMLType.F32
        factors = t.data.view(np.float32)
        assert "llama.rope.scaling.type" not in r.metadata
    # high frequencies (short wavelengths) are left alone, low ones divided by the factor,
    # the ones between blend smoothly
    hd = cfg["head_dim"]
    wavelen = 2 * np.pi * 10000.0 ** (np.arange(0, hd, 2) / hd)
    assert len(factors) == hd // 2
    assert np.all(factors[wavelen < 64 / 4] == 1) and np.all(factors[wavelen > 64] == 8)
    middle = factors[(wavelen >= 16) & (wavelen <= 64)]
    assert middle.size and np.all((middle > 1) & (middle < 8)) and np.all(np.diff(middle) > 0)


def test_linear_rope_scaling_keys(llama_dir, tmp_path):
    d = _broken_copy(llama_dir, tmp_path / "linear")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    _write_json(d / "config.json", cfg)
    convert(d, tmp_path / "lin.gguf", "f32")
    with GGUFReader(tmp_path / "lin.gguf") as r:
        assert r.metadata["llama.rope.scaling.type"] == "linear"
        assert r.metadata["llama.rope.scaling.factor"] == 2.0


def test_hostile_config_counts(qwen2_dir, tmp_path):
    d = _broken_copy(qwen2_dir, tmp_path / "layers")
    cfg = json.loads((d / "config.json").read_text())
    _write_json(d / "config.json", dict(cfg, num_hidden_layers=10**12))
    with pytest.raises(CheckpointError, match="layers need"):
        convert(d, tmp_path / "x.gguf")
    for key, value in (("hidden_size", -1), ("vocab_size", "many"), ("num_attention_heads", 0)):
        _write_json(d / "config.json", dict(cfg, **{key: value}))
        with pytest.raises(CheckpointError, match=f"{key} is {value!r}, not a positive"):
            convert(d, tmp_path / "x.gguf")
    _write_json(d / "config.json", dict(cfg, vocab_size=10**9))
    with pytest.raises(CheckpointError, match="config.json makes it"):
        convert(d, tmp_path / "x.gguf")


@pytest.mark.parametrize("file, key, value", [
    ("tokenizer.json", "added_tokens", "x"),
    ("tokenizer.json", "added_tokens", [{"id": -1, "content": "a"}]),
    ("tokenizer.json", "added_tokens", [{"id": 10**9, "content": "a"}]),
    ("tokenizer.json", "model", {"type": "BPE", "vocab": {"a": "b"}, "merges": []}),
    ("tokenizer.json", "model", {"type": "WordPiece", "vocab": {}}),
    ("tokenizer.json", "model", {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}),
    ("tokenizer.json", "pre_tokenizer", {"type": "Split", "pattern": "x"}),
    ("tokenizer.json", "pre_tokenizer", [1, 2]),
    ("tokenizer.json", "post_processor", {"type": "TemplateProcessing", "single": {"a": 1}}),
    ("tokenizer.json", "post_processor", {"processors": [{"type": "TemplateProcessing",
                                                          "single": ["x", {"SpecialToken": 3}]}]}),
    ("tokenizer_config.json", "chat_template", 7),
    ("tokenizer_config.json", "chat_template", [{"name": "tool use", "template": "t"}, "x"]),
    ("tokenizer_config.json", "eos_token", {"content": 5}),
    ("tokenizer_config.json", None, [1]),
    ("config.json", "eos_token_id", -3),
    ("config.json", "_name_or_path", "org/\ud800"),
    ("generation_config.json", "sequence", "\udfff"),
    ("generation_config.json", "top_k", 10**20),
])
def test_malformed_tokenizer_files_fail_cleanly(qwen2_dir, tmp_path, file, key, value):
    """Odd tokenizer files either convert or raise a llamalite error naming the
    file; never a TypeError or KeyError from deep inside."""
    d = _broken_copy(qwen2_dir, tmp_path / "tok")
    if key is None:
        _write_json(d / file, value)
    else:
        old = json.loads((d / file).read_text()) if (d / file).is_file() else {}
        _write_json(d / file, dict(old, **{key: value}))
    try:
        convert(d, tmp_path / "x.gguf")
    except LlamaliteError as e:
        assert file in str(e)


def test_named_chat_templates(qwen2_dir, tmp_path):
    d = _broken_copy(qwen2_dir, tmp_path / "templates")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "default", "template": "D"},
                            {"name": "tool use", "template": "T"}]
    _write_json(d / "tokenizer_config.json", cfg)
    convert(d, tmp_path / "x.gguf")
    with GGUFReader(tmp_path / "x.gguf") as r:
        assert r.metadata["tokenizer.chat_template"] == "D"
        assert r.metadata["tokenizer.chat_template.tool_use"] == "T"
        assert r.metadata["tokenizer.chat_templates"] == ["tool_use"]


def test_mutated_headers_raise_only_checkpoint_errors(tmp_path):
    from hypothesis import given, settings, strategies as st
    good = _safetensors(tmp_path / "good.safetensors", GOOD, bytes(range(24))).read_bytes()

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)),
                    min_size=1, max_size=4))
    def check(edits):
        raw = bytearray(good)
        for at, byte in edits:
            raw[at] = byte
        path = tmp_path / "m.safetensors"
        path.write_bytes(bytes(raw))
        try:
            with SafetensorsFile(path) as f:
                for t in f.tensors.values():   # what loads is consistent
                    assert t._view.nbytes == np.prod(t.shape) * DTYPE_SIZES[t.dtype]
        except CheckpointError:
            pass
    check()


def test_token_text_that_is_not_unicode(qwen2_dir, tmp_path):
    d = _broken_copy(qwen2_dir, tmp_path / "surrogate")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["added_tokens"].append({"id": 325, "content": "\ud800", "special": True})
    _write_json(d / "tokenizer.json", tj)    # json.dumps writes the lone surrogate escaped
    with pytest.raises(CheckpointError, match="tokenizer.ggml.tokens from the tokenizer files"):
        convert(d, tmp_path / "x.gguf")


def test_rope_scaling_values_must_be_numbers(llama_dir, tmp_path):
    d = _broken_copy(llama_dir, tmp_path / "rope")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": "big"}
    _write_json(d / "config.json", cfg)
    with pytest.raises(CheckpointError, match="rope scaling factor is 'big', not a number"):
        convert(d, tmp_path / "x.gguf")
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    _write_json(d / "config.json", cfg)
    with pytest.raises(CheckpointError, match="yarn rope scaling needs"):
        convert(d, tmp_path / "x.gguf")

