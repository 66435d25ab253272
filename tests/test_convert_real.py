"""convert on a real model: SmolLM2-135M-Instruct's GGUF rebuilt as the Hugging
Face checkpoint it came from (tests/hf_checkpoint.py: F32 weights, rotate-half
Q/K rows, tokenizer.json and tokenizer_config.json), converted back by the CLI
and compared with the original: metadata, tensors, logits and an answer."""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hf_checkpoint import write_checkpoint
from llamalite import Llama
from llamalite.gguf import GGUFReader
from llamalite.quantize import quantize_model

PROMPT = "The capital of France is"
# Keys llama.cpp's converter now writes that the original file (from an older
# converter) lacks, with the value a missing key means.
NEW_TOKENIZER_KEYS = {"tokenizer.ggml.add_eos_token": False}


@dataclass
class Files:
    hf_dir: Path            # the rebuilt checkpoint
    converted: Path         # what `convert --outtype f32` made of it
    cli: subprocess.CompletedProcess
    widened: Path           # the original file, its tensors re-typed to F32


@pytest.fixture(scope="module")
def files(smollm2_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("convert_real")
    hf_dir = work / "SmolLM2-135M-Instruct"
    write_checkpoint(smollm2_path, hf_dir, "HuggingFaceTB/SmolLM2-135M-Instruct")
    converted = work / "smollm2.f32.gguf"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cli = subprocess.run([sys.executable, "-m", "llamalite", "convert", str(hf_dir),
                          str(converted), "--outtype", "f32"], env=env, capture_output=True,
                         text=True, timeout=300)
    widened = work / "original.f32.gguf"
    quantize_model(smollm2_path, widened, "F32", allow_requantize=True)
    yield Files(hf_dir, converted, cli, widened)
    shutil.rmtree(work)   # ~1.6 GB that pytest would otherwise keep for three runs


@pytest.fixture(scope="module")
def readers(files):
    with GGUFReader(files.widened) as original, GGUFReader(files.converted) as converted:
        yield original, converted


def _logits(path, ids):
    llm = Llama(str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)])
    finally:
        llm.close()


def test_cli_converts_the_checkpoint(files):
    assert files.cli.returncode == 0, files.cli.stderr
    assert files.cli.stderr == ""   # no per-tensor lines when not on a terminal
    assert files.cli.stdout.startswith(f"wrote {files.converted}: llama, 272 tensors, ")


def test_rebuilt_tokenizer_is_the_models(files):
    """The rebuilt tokenizer.json is a working Hugging Face tokenizer that
    splits text as the converted model does."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(files.hf_dir / "tokenizer.json"))
    llm = Llama(str(files.converted), vocab_only=True, verbose=False)
    try:
        for text in (PROMPT, "In 2024, 17 llamas said: \"héllo\"\n\tworld!"):
            assert llm.tokenize(text.encode(), add_bos=False) == tok.encode(text).ids, text
    finally:
        llm.close()


def test_tokenizer_keys_are_the_originals(readers):
    original, converted = readers
    want = {k: v for k, v in original.metadata.items() if k.startswith("tokenizer.")}
    got = {k: v for k, v in converted.metadata.items() if k.startswith("tokenizer.")}
    assert {"tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.chat_template",
            "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"} <= set(want)
    for key, value in NEW_TOKENIZER_KEYS.items():
        assert key not in want and got.pop(key) == value
    assert got.keys() == want.keys()
    for key in want:   # one key at a time, so a failure names it
        assert got[key] == want[key], key
        assert converted.value_types[key] == original.value_types[key], key


def test_hyperparameters_are_the_originals(readers):
    original, converted = readers
    want = {k: v for k, v in original.metadata.items() if k.startswith("llama.")}
    got = {k: v for k, v in converted.metadata.items() if k.startswith("llama.")}
    assert got == want
    assert converted.metadata["general.name"] == "SmolLM2 135M Instruct"
    assert converted.metadata["general.file_type"] == 0   # all F32


def test_tensors_are_the_originals(readers):
    """Same names, shapes and bytes: Q/K rows went to Hugging Face's layout
    and came back, every other tensor passed through unchanged."""
    original, converted = readers
    assert {n: t.shape for n, t in converted.tensors.items()} == \
        {n: t.shape for n, t in original.tensors.items()}
    for name, tensor in original.tensors.items():
        assert converted.tensors[name].type == tensor.type, name
        same = np.array_equal(converted.tensors[name].data, tensor.data)
        assert same, f"{name} differs"


def test_logits_are_the_originals(files):
    """Bit for bit: the same weights run through the same kernels."""
    llm = Llama(str(files.converted), vocab_only=True, verbose=False)
    ids = llm.tokenize(b"The Eiffel Tower stands in Paris, which is the capital of")
    llm.close()
    want = _logits(files.widened, ids)
    assert np.isfinite(want).all()
    np.testing.assert_array_equal(_logits(files.converted, ids), want)


def test_greedy_answer(files):
    llm = Llama(str(files.converted), n_ctx=64, n_threads=2, verbose=False)
    try:
        text = llm(PROMPT, max_tokens=3, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()
    assert text.startswith(" Paris"), text
