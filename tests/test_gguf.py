"""GGUF reader and writer: round trips through our reader and through the
`gguf` package (llama.cpp's own Python library), both directions, and the
real models read exactly as `gguf` reads them."""
from __future__ import annotations

import os
import struct
import time

import gguf
import numpy as np
import pytest

from llamalite import UnsupportedModelError
from llamalite.gguf import GGUFReader, GGUFValueType, GGUFWriter
from llamalite.quants import SUPPORTED, TYPE_INFO, GGMLType

V = GGUFValueType

# One value of every type (at its extremes where it has them), arrays of every
# type, nested and empty arrays: key -> (value, forced type or None, leaf type).
METADATA = {
    "t.uint8": (255, "uint8", V.UINT8),
    "t.int8": (-128, "int8", V.INT8),
    "t.uint16": (65535, "uint16", V.UINT16),
    "t.int16": (-32768, "int16", V.INT16),
    "t.uint32": (2**32 - 1, "uint32", V.UINT32),
    "t.int32": (-2**31, None, V.INT32),
    "t.float32": (0.1, None, V.FLOAT32),
    "t.bool.true": (True, None, V.BOOL),
    "t.bool.false": (False, "bool", V.BOOL),
    "t.string": ("héllo ✓ \x00 tail", None, V.STRING),
    "t.string.empty": ("", None, V.STRING),
    "t.uint64": (2**64 - 1, None, V.UINT64),
    "t.int64": (-2**63, "int64", V.INT64),
    "t.float64": (0.1, "float64", V.FLOAT64),
    "t.np.uint16": (np.uint16(7), None, V.UINT16),
    "t.np.float64": (np.float64(2.5), None, V.FLOAT64),
    "a.uint8": ([0, 255], "uint8", V.UINT8),
    "a.bytes": (b"\x00\x01\xff", None, V.UINT8),
    "a.int8": ([-128, 127], "int8", V.INT8),
    "a.uint16": ([0, 65535], "uint16", V.UINT16),
    "a.int16": ([-32768, 32767], "int16", V.INT16),
    "a.uint32": ([0, 2**32 - 1], "uint32", V.UINT32),
    "a.int32": ([-2**31, 2**31 - 1], None, V.INT32),
    "a.float32": ([0.5, -1e30, 3], None, V.FLOAT32),
    "a.bool": ([True, False, True], None, V.BOOL),
    "a.string": (["a", "", "ünï", "x" * 300], None, V.STRING),
    "a.uint64": ([0, 2**64 - 1], None, V.UINT64),
    "a.int64": ([-2**63, 2**63 - 1], None, V.INT64),
    "a.float64": ([1e300, -0.1], "float64", V.FLOAT64),
    "a.numpy.int16": (np.arange(-3, 3, dtype=np.int16), None, V.INT16),
    "a.empty.int32": ([], "int32", V.INT32),
    "a.empty.string": ([], "string", V.STRING),
    "n.int32": ([[1, 2], [], [3]], None, V.INT32),
    "n.string": ([[["a"]], [["b", "c"], []]], None, V.STRING),
    "n.float32": ([[0.25], [1.5, 2]], "float32", V.FLOAT32),
}


def expected_value(value, leaf):
    """What a reader returns for `value` written with leaf type `leaf`."""
    if isinstance(value, (list, tuple, np.ndarray, bytes)):
        return [expected_value(v, leaf) for v in value]
    if leaf == V.FLOAT32:
        return float(np.float32(value))
    return value.item() if isinstance(value, np.generic) else value


def flatten(value):
    if isinstance(value, list):
        return [x for v in value for x in flatten(v)]
    return [value]


def gguf_value(field):
    """A gguf.ReaderField's value; the package flattens nested arrays."""
    return field.contents()


def assert_matches_gguf(path, theirs=None):
    """Our reader and gguf.GGUFReader agree on every key (value and type) and
    every tensor (name, type, shape, offset and bytes)."""
    theirs = theirs or gguf.GGUFReader(path)
    with GGUFReader(path) as ours:
        fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
        assert list(ours.metadata) == list(fields)
        for key, field in fields.items():
            value, vtype = ours.metadata[key], ours.value_types[key]
            if isinstance(value, list):
                assert field.types[0] == gguf.GGUFValueType.ARRAY, key
                if flatten(value):
                    assert field.types[-1] == vtype, key
                assert flatten(value) == gguf_value(field), key
            else:
                assert field.types == [vtype], key
                assert value == gguf_value(field), key
        assert ours.alignment == theirs.alignment
        assert ours.data_offset == theirs.data_offset
        assert list(ours.tensors) == [t.name for t in theirs.tensors]
        for t in theirs.tensors:
            mine = ours.tensors[t.name]
            assert int(mine.type) == int(t.tensor_type), t.name
            assert mine.shape == tuple(reversed([int(d) for d in t.shape])), t.name
            assert mine.offset == t.data_offset, t.name
            if t.tensor_type != gguf.GGMLQuantizationType.Q8_1:
                # gguf's table gives Q8_1 the 40-byte float layout ggml dropped; ggml's is 36
                assert mine.nbytes == t.n_bytes, t.name
                their_bytes = np.asarray(t.data).reshape(-1).view(np.uint8)
                assert np.array_equal(mine.data, their_bytes), t.name


def write_all_metadata(path, alignment=32):
    with GGUFWriter(path, alignment=alignment) as w:
        for key, (value, vtype, _) in METADATA.items():
            w.add_metadata(key, value, vtype)


def test_every_value_type_round_trips(tmp_path):
    path = tmp_path / "meta.gguf"
    write_all_metadata(path)
    with GGUFReader(path) as r:
        assert r.version == 3 and r.alignment == 32 and not r.tensors
        assert list(r.metadata) == list(METADATA)
        for key, (value, _, leaf) in METADATA.items():
            assert r.metadata[key] == expected_value(value, leaf), key
            assert type(r.metadata[key]) is type(expected_value(value, leaf)), key
            assert r.value_types[key] == leaf, key
    assert_matches_gguf(path)


def test_metadata_survives_a_copy_through_reader_and_writer(tmp_path):
    write_all_metadata(tmp_path / "a.gguf")
    with GGUFReader(tmp_path / "a.gguf") as r, GGUFWriter(tmp_path / "b.gguf") as w:
        for key, value in r.metadata.items():
            w.add_metadata(key, value, r.value_types[key])
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


@pytest.mark.parametrize("value, expected", [
    (7, V.INT32), (2**31, V.INT64), (2**63, V.UINT64), (1.0, V.FLOAT32), (True, V.BOOL),
    ("s", V.STRING), (np.int8(1), V.INT8), (np.float32(1), V.FLOAT32),
    ([1, 2**40], V.INT64), ([1, 2.5], V.FLOAT32), ([True], V.BOOL),
    (np.zeros(2, np.uint64), V.UINT64),
])
def test_writer_infers_value_types(tmp_path, value, expected):
    with GGUFWriter(tmp_path / "f.gguf") as w:
        w.add_metadata("k", value)
    with GGUFReader(tmp_path / "f.gguf") as r:
        assert r.value_types["k"] == expected


@pytest.mark.parametrize("value, vtype", [
    (256, "uint8"), (-1, "uint32"), (2**63, "int64"), (1.5, "int32"), ("1", "int32"),
    (1, "string"), (1, "bool"), ([1, -1], "uint16"), ([1.5], "int32"), (object(), None),
    ([1, "a"], None), ([], None), ([[], []], None), (2**64, None), ({"a": 1}, None),
    (1, "array"), (1, "no_such_type"),
])
def test_writer_rejects_values_that_do_not_fit(tmp_path, value, vtype):
    w = GGUFWriter(tmp_path / "f.gguf")
    with pytest.raises(ValueError):
        w.add_metadata("k", value, vtype)


def test_writer_replaces_a_key_in_place(tmp_path):
    with GGUFWriter(tmp_path / "f.gguf") as w:
        w.add_metadata("a", 1)
        w.add_metadata("b", 2)
        w.add_metadata("a", "x")
    with GGUFReader(tmp_path / "f.gguf") as r:
        assert r.metadata == {"a": "x", "b": 2}


def tensor_bytes(rng, t, shape):
    block, size = TYPE_INFO[t]
    n = int(np.prod(shape)) // block * size
    return rng.integers(0, 256, n, dtype=np.uint8)


def test_tensors_of_every_type_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "t.gguf"
    written = {}
    with GGUFWriter(path) as w:
        w.add_metadata("general.architecture", "test")
        for t in GGMLType:
            shape = (3, 2 * TYPE_INFO[t].block_size)
            written[t.name] = (t, shape, tensor_bytes(rng, t, shape))
            w.add_tensor(t.name, written[t.name][2], type=t, shape=shape)
        written["f32"] = (GGMLType.F32, (2, 3, 5), rng.standard_normal((2, 3, 5), np.float32))
        written["f16"] = (GGMLType.F16, (7,), rng.standard_normal(7).astype(np.float16))
        written["i32.4d"] = (GGMLType.I32, (1, 2, 3, 4),
                             np.arange(24, dtype=np.int32).reshape(1, 2, 3, 4))
        written["empty"] = (GGMLType.F32, (0, 4), np.zeros((0, 4), np.float32))
        for name in ("f32", "f16", "i32.4d", "empty"):
            w.add_tensor(name, written[name][2])
    with GGUFReader(path) as r:
        assert list(r.tensors) == list(written)
        for name, (t, shape, data) in written.items():
            got = r.tensors[name]
            assert (got.name, got.type, got.shape) == (name, t, shape)
            assert isinstance(got.type, GGMLType) and got.offset % 32 == 0
            assert got.nbytes == data.nbytes == got.data.nbytes
            assert got.data.dtype == np.uint8 and got.data.ndim == 1
            assert got.data.tobytes() == data.tobytes()
        assert np.array_equal(r.tensors["f32"].dequantize(), written["f32"][2])
        assert np.array_equal(r.tensors["f16"].dequantize(), written["f16"][2].astype(np.float32))
    assert_matches_gguf(path)


def test_tensor_data_is_a_read_only_view_of_the_map(tmp_path):
    path = tmp_path / "t.gguf"
    with GGUFWriter(path) as w:
        w.add_tensor("a", np.arange(10, dtype=np.float32))
        w.add_tensor("b", np.arange(3, dtype=np.float32))
    with GGUFReader(path) as r:
        a, b = r.tensors["a"], r.tensors["b"]
        assert not a.data.flags.owndata and not a.data.flags.writeable
        assert a.data.base is b.data.base
        assert b.data.ctypes.data - a.data.ctypes.data == b.offset - a.offset
        with pytest.raises(ValueError):
            a.data[0] = 1


def test_close_unmaps_and_held_views_stay_valid(tmp_path):
    path = tmp_path / "t.gguf"
    with GGUFWriter(path) as w:
        w.add_tensor("a", np.arange(8, dtype=np.float32))
    r = GGUFReader(path)
    held = r.tensors["a"].data
    r.close()
    assert r.tensors == {}
    assert np.array_equal(held.view(np.float32), np.arange(8, dtype=np.float32))
    r.close()   # twice is harmless
    with GGUFReader(path) as r2:
        pass
    assert r2._mm is None


def test_unsupported_types_refuse_to_dequantize(tmp_path):
    path = tmp_path / "t.gguf"
    t = GGMLType.IQ2_XXS
    assert t not in SUPPORTED
    with GGUFWriter(path) as w:
        w.add_tensor("q", np.zeros(66, np.uint8), type=t, shape=(256,))
    with GGUFReader(path) as r, pytest.raises(UnsupportedModelError, match="IQ2_XXS"):
        r.tensors["q"].dequantize()


def test_writer_converts_and_quantizes_floats(tmp_path):
    from llamalite.quants import quantize
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    path = tmp_path / "t.gguf"
    with GGUFWriter(path) as w:
        w.add_tensor("f16", x, type="F16")
        w.add_tensor("q8", x, type=GGMLType.Q8_0)
        w.add_tensor("q8.raw", quantize(x, "Q8_0"), type="Q8_0")   # shape from the byte shape
        w.add_tensor("f64.as.f32", x.astype(np.float64), type="F32")
    with GGUFReader(path) as r:
        assert r.tensors["f16"].data.tobytes() == x.astype(np.float16).tobytes()
        assert r.tensors["q8"].data.tobytes() == quantize(x, "Q8_0").tobytes()
        assert r.tensors["q8.raw"].shape == (4, 64) and r.tensors["q8.raw"].type == GGMLType.Q8_0
        assert r.tensors["q8.raw"].data.tobytes() == r.tensors["q8"].data.tobytes()
        assert r.tensors["f64.as.f32"].data.tobytes() == x.tobytes()


def test_writer_streams_callable_sources_once_in_order(tmp_path):
    calls = []

    def source(i):
        def make():
            calls.append(i)
            return np.full((2, 32), i, np.float32)
        return make

    w = GGUFWriter(tmp_path / "t.gguf")
    for i in range(3):
        w.add_tensor(f"t{i}", source(i), type="F32", shape=(2, 32))
    assert calls == [] and not (tmp_path / "t.gguf").exists()
    w.write()
    assert calls == [0, 1, 2]
    with GGUFReader(tmp_path / "t.gguf") as r:
        for i in range(3):
            assert np.array_equal(r.tensors[f"t{i}"].dequantize(), np.full((2, 32), i, np.float32))
    with pytest.raises(ValueError):
        w.write()


def test_writer_leaves_no_file_when_a_source_fails(tmp_path):
    w = GGUFWriter(tmp_path / "t.gguf")
    w.add_tensor("ok", np.zeros(4, np.float32))
    w.add_tensor("bad", lambda: np.zeros(5, np.float32), type="F32", shape=(4,))
    with pytest.raises(ValueError, match="bad"):
        w.write()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs", [
    dict(data=np.zeros(4, np.float32), type="Q4_0"),                # row not whole blocks
    dict(data=b"\x00" * 18),                                         # raw bytes, no type
    dict(data=b"\x00" * 18, type="Q4_0"),                            # raw bytes, no shape
    dict(data=np.zeros((2, 17), np.uint8), type="Q4_0"),             # byte rows not whole blocks
    dict(data=np.zeros(4, np.uint32)),                               # no ggml type for uint32
    dict(data=np.zeros(4, np.int32), type="Q8_0"),                   # ints cannot be quantized
    dict(data=np.zeros((1, 1, 1, 1, 1), np.float32)),                # more than 4 dims
    dict(data=np.float32(1)),                                        # no dims
    dict(data=lambda: None, type="F32"),                             # callable without shape
])
def test_writer_rejects_bad_tensors(tmp_path, kwargs):
    w = GGUFWriter(tmp_path / "t.gguf")
    with pytest.raises(ValueError):
        w.add_tensor("t", **kwargs)


def test_writer_rejects_duplicate_tensor_names_and_bad_alignment(tmp_path):
    w = GGUFWriter(tmp_path / "t.gguf")
    w.add_tensor("t", np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="duplicate"):
        w.add_tensor("t", np.zeros(1, np.float32))
    for bad in (0, 3, 48):
        with pytest.raises(ValueError, match="power of two"):
            GGUFWriter(tmp_path / "u.gguf", alignment=bad)
    with pytest.raises(ValueError, match="uint32"):
        w.add_metadata("general.alignment", 64, "uint64")


@pytest.mark.parametrize("alignment", [1, 2, 8, 32, 64, 256, 4096])
def test_alignment_variants(tmp_path, alignment):
    rng = np.random.default_rng(alignment)
    path = tmp_path / "a.gguf"
    with GGUFWriter(path, alignment=alignment) as w:
        w.add_metadata("general.name", "x" * 5)   # an odd-sized header
        for i, n in enumerate((1, 3, 5, 64)):
            w.add_tensor(f"t{i}", rng.standard_normal(n).astype(np.float32))
        w.add_tensor("q", tensor_bytes(rng, GGMLType.Q4_K, (1, 256)), type="Q4_K", shape=(1, 256))
    with GGUFReader(path) as r:
        assert r.alignment == alignment and r.data_offset % alignment == 0
        if alignment != 32:
            assert r.metadata["general.alignment"] == alignment
            assert r.value_types["general.alignment"] == V.UINT32
        else:
            assert "general.alignment" not in r.metadata
        for t in r.tensors.values():
            assert t.offset % alignment == 0
        assert os.path.getsize(path) % alignment == 0
    assert_matches_gguf(path)


def gguf_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def test_reads_a_version_2_file(tmp_path):
    """Version 2 has version 3's layout; written here byte by byte."""
    data = np.arange(4, dtype=np.float32)
    header = b"GGUF" + struct.pack("<IQQ", 2, 1, 2)
    header += gguf_string("general.name") + struct.pack("<I", 8) + gguf_string("v2")
    header += gguf_string("v2.list") + struct.pack("<IIQ", 9, 4, 2) + struct.pack("<2I", 7, 9)
    header += gguf_string("w") + struct.pack("<IQIQ", 1, 4, 0, 0)
    body = header + b"\x00" * (-len(header) % 32) + data.tobytes()
    (tmp_path / "v2.gguf").write_bytes(body)
    with GGUFReader(tmp_path / "v2.gguf") as r:
        assert r.version == 2
        assert r.metadata == {"general.name": "v2", "v2.list": [7, 9]}
        assert r.data_offset == len(header) + (-len(header) % 32)
        assert np.array_equal(r.tensors["w"].dequantize(), data)
    assert_matches_gguf(tmp_path / "v2.gguf")


def test_reads_files_written_by_gguf_package(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint8("k.u8", 200)
    w.add_int8("k.i8", -5)
    w.add_uint16("k.u16", 60000)
    w.add_int16("k.i16", -30000)
    w.add_uint32("k.u32", 4000000000)
    w.add_int32("k.i32", -2000000000)
    w.add_float32("k.f32", 0.3)
    w.add_uint64("k.u64", 2**64 - 2)
    w.add_int64("k.i64", -2**62)
    w.add_float64("k.f64", 0.3)
    w.add_bool("k.bool", True)
    w.add_string("k.str", "ünïcode")
    w.add_array("k.strs", ["a", "bb", ""])
    w.add_array("k.ints", [1, 2, 3])
    w.add_array("k.floats", [0.5, 1.5])
    w.add_array("k.bools", [True, False])
    w.add_array("k.nested", [[1, 2], [3]])
    w.add_custom_alignment(64)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((4,)).astype(np.float16))
    for t in (GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.IQ4_XS):
        raw = tensor_bytes(rng, t, (2, 256)).reshape(2, -1)
        w.add_tensor(t.name, raw, raw_dtype=gguf.GGMLQuantizationType(int(t)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFReader(path) as r:
        assert r.metadata["k.nested"] == [[1, 2], [3]]
        assert r.metadata["k.u64"] == 2**64 - 2 and r.alignment == 64
        assert r.tensors["Q4_K"].shape == (2, 256)
    assert_matches_gguf(path)


# ----------------------------------------------------------------------------- real models

@pytest.fixture(scope="module", params=["smollm2_path", "gemma3_path"])
def real_model(request):
    """Each real model (conftest fetches and caches them)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def their_reader(real_model):
    """gguf's reader of the model, parsed once (~10 s for Gemma's vocabulary)."""
    return gguf.GGUFReader(real_model)


def test_real_model_reads_as_gguf_reads_it(real_model, their_reader):
    start = time.perf_counter()
    with GGUFReader(real_model) as r:
        elapsed = time.perf_counter() - start
        assert len(r.metadata["tokenizer.ggml.tokens"]) >= 49152
    # gguf.GGUFReader takes ~10 s on Gemma's 262k-token vocabulary; ours ~0.1 s.
    assert elapsed < 5, f"parsing took {elapsed:.1f} s"
    assert_matches_gguf(real_model, their_reader)


def test_real_model_dequantizes_as_gguf_does(real_model, their_reader):
    with GGUFReader(real_model) as ours:
        for t in their_reader.tensors:
            mine = ours.tensors[t.name].dequantize()
            assert mine.dtype == np.float32 and mine.shape == ours.tensors[t.name].shape
            rows = mine.reshape(-1, mine.shape[-1])
            their_rows = np.asarray(t.data).reshape(rows.shape[0], -1)
            for lo in range(0, rows.shape[0], 16384):   # bounds gguf's numpy temporaries
                ref = gguf.quants.dequantize(their_rows[lo:lo + 16384], t.tensor_type)
                np.testing.assert_allclose(rows[lo:lo + 16384], ref, rtol=1e-6, atol=1e-7,
                                           err_msg=f"{t.name} ({t.tensor_type.name})")
