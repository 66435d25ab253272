"""quantize: llama.cpp's mixes, tensor by tensor, checked against what
llama.cpp's own quantizer wrote for the same synthetic model
(tests/data/quantize, recorded once; its README says how)."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llamalite import quants
from llamalite.gguf import GGUFReader, GGUFValueType
from llamalite.model import Model
from llamalite.quantize import FILE_TYPES, plan, quantize_model
from synthetic import write_model
from ttyrun import run_with_terminal_stderr

DATA = Path(__file__).parent / "data" / "quantize"
LLAMACPP = json.loads((DATA / "llamacpp_types.json").read_text())
LEGACY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory):
    """The model llama.cpp quantized: 8 layers so the _M layer rules differ
    between layers, 4 query heads per KV head, and ffn_down rows of 544 that
    do not split into 256-blocks (the k-quants fall back there)."""
    path = tmp_path_factory.mktemp("quantize") / "f32.gguf"
    return write_model(path, n_layer=8, n_embd=256, n_head=4, n_head_kv=1, head_dim=64,
                       n_ff=544, n_vocab=256, tied=False, metadata={"general.name": "synthetic"})


@pytest.fixture(scope="module")
def quantized(f32_model, tmp_path_factory):
    """Each file type written once (they are small), by name."""
    out = tmp_path_factory.mktemp("quantized")
    return {ft: (quantize_model(f32_model, out / f"{ft}.gguf", ft), out / f"{ft}.gguf")
            for ft in FILE_TYPES}


def _digest(raw) -> str:
    return hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()[:16]


def test_every_llamacpp_file_type_is_recorded():
    assert set(LLAMACPP) == set(FILE_TYPES)


@pytest.mark.parametrize("ftype", sorted(FILE_TYPES))
def test_tensor_types_order_and_bytes_equal_llamacpp(quantized, ftype):
    _, path = quantized[ftype]
    want = LLAMACPP[ftype]
    with GGUFReader(path) as r:
        assert r.metadata["general.file_type"] == want["file_type"]
        got = {name: [t.type.name, _digest(t.data)] for name, t in r.tensors.items()}
    assert list(got) == list(want["tensors"])
    assert {n: v[0] for n, v in got.items()} == {n: v[0] for n, v in want["tensors"].items()}
    assert got == want["tensors"]


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q3_K_M", "Q5_K_M", "Q4_K_S"])
def test_the_k_mixes_vary_by_layer_and_fall_back(quantized, ftype):
    """The recorded tables are not trivially uniform: more-bits layers and the
    256-block fallback on ffn_down both show."""
    types = quantized[ftype][0].types
    v = {types[f"blk.{i}.attn_v.weight"].name for i in range(8)}
    down = {types[f"blk.{i}.ffn_down.weight"].name for i in range(8)}
    assert len(v) > 1 or len(down) > 1
    assert not any(t.endswith("_K") for t in down)
    assert types["output_norm.weight"].name == "F32"


@pytest.mark.parametrize("ftype", LEGACY)
def test_legacy_tensors_are_the_reference_quantizer_bytes(f32_model, quantized, ftype):
    _, path = quantized[ftype]
    with GGUFReader(f32_model) as src, GGUFReader(path) as out:
        for name, t in out.tensors.items():
            x = src.tensors[name].data.view(np.float32).reshape(t.shape)
            if t.type == quants.GGMLType.F32:
                assert np.array_equal(t.data, src.tensors[name].data)
            else:
                assert np.array_equal(t.data, quants.quantize(x, t.type).reshape(-1)), name


def test_metadata_is_copied_with_types_and_the_file_type_set(f32_model, quantized):
    result, path = quantized["Q4_K_M"]
    with GGUFReader(f32_model) as src, GGUFReader(path) as out:
        for key, value in src.metadata.items():
            assert out.metadata[key] == value and out.value_types[key] == src.value_types[key]
        assert out.metadata["general.file_type"] == 15
        assert out.value_types["general.file_type"] == GGUFValueType.UINT32
        assert out.metadata["general.quantization_version"] == 2
        assert result.size_before == sum(t.nbytes for t in src.tensors.values())
        assert result.size_after == sum(t.nbytes for t in out.tensors.values())
    assert result.size_after < result.size_before / 4


def test_the_output_loads_in_llamalite_and_the_gguf_package(f32_model, quantized):
    gguf = pytest.importorskip("gguf")
    _, path = quantized["Q4_K_M"]
    tokens = [1, 5, 9, 17]
    with Model(f32_model, n_ctx=32) as ref:
        want = np.ravel(ref.eval(tokens))
    for ftype, min_corr in (("Q8_0", 0.999), ("Q4_K_M", 0.95)):   # random weights: a low bar
        with Model(quantized[ftype][1], n_ctx=32) as q:
            assert np.corrcoef(want, np.ravel(q.eval(tokens)))[0, 1] > min_corr, ftype
    r = gguf.GGUFReader(str(path))
    assert r.tensors[0].name == "output.weight"
    assert r.tensors[0].tensor_type.name == "Q6_K"


def test_pure_gives_every_quantized_tensor_the_mix_type(f32_model):
    types = plan(f32_model, "Q4_K_M", pure=True)
    down = types.pop("blk.0.ffn_down.weight")
    assert down.name == "Q5_0"   # still the fallback: 544 does not split into 256-blocks
    assert {t.name for n, t in types.items() if "norm" not in n and "ffn_down" not in n} \
        == {"Q4_K"}


def test_leave_output_and_explicit_output_and_embedding_types(f32_model):
    assert plan(f32_model, "Q4_0", leave_output_tensor=True)["output.weight"].name == "F32"
    assert plan(f32_model, "Q4_0")["output.weight"].name == "Q6_K"
    types = plan(f32_model, "Q4_K_M", output_tensor_type="q8_0", token_embedding_type="F16")
    assert types["output.weight"].name == "Q8_0" and types["token_embd.weight"].name == "F16"


def test_tied_embeddings_take_the_output_rule(tmp_path):
    path = write_model(tmp_path / "tied.gguf", n_layer=2, tied=True)
    assert plan(path, "Q4_K_M")["token_embd.weight"].name == "Q6_K"
    assert plan(path, "Q8_0")["token_embd.weight"].name == "Q8_0"
    assert plan(path, "Q4_K_M", output_tensor_type="Q5_K")["token_embd.weight"].name == "Q5_K"


def test_requantizing_needs_allow_requantize(quantized, tmp_path):
    from llamalite.errors import LlamaliteError
    _, q4 = quantized["Q4_0"]
    with pytest.raises(LlamaliteError, match="--allow-requantize"):
        quantize_model(q4, tmp_path / "q8.gguf", "Q8_0")
    assert not (tmp_path / "q8.gguf").exists()
    quantize_model(q4, tmp_path / "q8.gguf", "Q8_0", allow_requantize=True)
    with GGUFReader(q4) as a, GGUFReader(tmp_path / "q8.gguf") as b:
        t, u = a.tensors["blk.0.attn_q.weight"], b.tensors["blk.0.attn_q.weight"]
        assert u.type.name == "Q8_0"
        assert np.array_equal(u.data, quants.quantize(t.dequantize(), "Q8_0").reshape(-1))
        assert b.tensors["output.weight"].type.name == "Q8_0"   # was Q6_K: Q8_0 keeps Q8_0
        assert np.array_equal(b.tensors["output_norm.weight"].data,
                              a.tensors["output_norm.weight"].data)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llamalite", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_the_file_and_prints_the_sizes(f32_model, tmp_path):
    r = _cli("quantize", f32_model, tmp_path / "q.gguf", "q4_k_m")
    assert r.returncode == 0, r.stderr
    assert "model size  =    18.27 MiB" in r.stdout and "quant size  =" in r.stdout
    assert r.stderr == ""   # per-tensor progress only on a terminal
    with GGUFReader(tmp_path / "q.gguf") as out:
        assert out.metadata["general.file_type"] == 15


def test_cli_shows_each_tensor_on_a_terminal(f32_model, tmp_path):
    r, shown = run_with_terminal_stderr("quantize", str(f32_model), str(tmp_path / "q.gguf"),
                                        "Q4_K_M")
    assert r.returncode == 0
    lines = shown.splitlines()
    assert len(lines) == len(LLAMACPP["Q4_K_M"]["tensors"])
    assert lines[0].startswith("[   1/  75] output.weight")
    assert "converting to Q6_K .. size =     0.25 MiB ->     0.05 MiB" in lines[0]
    assert any("blk.0.attn_norm.weight" in ln and "type =    F32, size =    0.001 MiB" in ln
               for ln in lines)


@pytest.mark.parametrize("args, message", [
    (["{src}", "{out}", "Q9_K"], "unknown quantization type 'Q9_K'"),
    (["{missing}", "{out}", "Q4_0"], "no such file"),
    (["{bad}", "{out}", "Q4_0"], "magic"),
    (["{src}", "{out}", "Q4_0", "--output-tensor-type", "Q7"], "unknown tensor type 'Q7'"),
    (["{q4}", "{out}", "Q8_0"], "needs --allow-requantize"),
])
def test_cli_errors_are_one_line(f32_model, quantized, tmp_path, args, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    paths = dict(src=f32_model, out=tmp_path / "out.gguf", missing=tmp_path / "nope.gguf",
                 bad=bad, q4=quantized["Q4_0"][1])
    r = _cli("quantize", *(a.format(**paths) for a in args))
    assert r.returncode == 1
    assert r.stderr.startswith("llamalite: error:") and r.stderr.count("\n") == 1
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.gguf").exists()


def test_requantized_real_model_still_knows_paris(smollm2_path, tmp_path):
    """SmolLM2's Q4_1 file, named by its catalogue name, requantized to Q8_0
    (about 6 s here) still continues the sentence as the original does."""
    out = tmp_path / "smollm2-q8_0.gguf"
    r = _cli("quantize", "smollm2-135m-instruct", out, "Q8_0", "--allow-requantize")
    assert r.returncode == 0, r.stderr
    with GGUFReader(out) as q:
        assert {t.type.name for n, t in q.tensors.items() if n.endswith("attn_q.weight")} \
            == {"Q8_0"}
    r = _cli("run", "-m", out, "--temp", 0, "-n", 2, "-p", "The capital of France is",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is Paris")
