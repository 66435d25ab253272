"""Hostile GGUF files: truncations, byte flips and hand-made malicious headers.

Each must end in a GGUFError (or, for a flip that happens to leave a valid file,
a clean parse): never another exception, a crash, a hang or a big allocation.
The parses run in a child process with a memory cap and a timeout, so a crash
or a runaway allocation shows up as a failed test instead of taking pytest down.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamalite import GGUFError
from llamalite import gguf
from llamalite.gguf import GGUFReader, GGUFWriter

REPO = Path(__file__).resolve().parent.parent

# Parses each file named on stdin and prints one JSON line per file:
# [path, outcome, message] with outcome "ok", "GGUFError" or another exception's name.
CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
from llamalite.errors import GGUFError
from llamalite.gguf import GGUFReader

def parse(path):
    with GGUFReader(path) as r:
        repr(r.metadata)
        for t in r.tensors.values():
            assert t.data.nbytes == t.nbytes
            int(t.data.sum(dtype="uint64"))   # touch every byte of the view

for path in sys.stdin.read().split("\n"):
    try:
        parse(path)
        result = ["ok", ""]
    except GGUFError as e:
        result = ["GGUFError", str(e)]
    except BaseException as e:
        result = [type(e).__name__, str(e)[:300]]
    print(json.dumps([path] + result), flush=True)
"""


def parse_in_child(paths: list[Path], timeout: float = 120) -> dict[str, tuple[str, str]]:
    """Outcome and message per file, parsed in one child process that must exit cleanly."""
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=pythonpath, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD], input="\n".join(map(str, paths)),
                          capture_output=True, text=True, timeout=timeout, env=env)
    results = {p: (o, m) for p, o, m in map(json.loads, proc.stdout.splitlines())}
    next_path = paths[len(results)] if len(results) < len(paths) else "-"
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode} after {len(results)} of {len(paths)} files "
        f"(next: {next_path}):\n{proc.stderr[-2000:]}")
    assert len(results) == len(paths)
    return results


# ----------------------------------------------------------------------------- building blocks

def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gstr(s):
    raw = s.encode() if isinstance(s, str) else s
    return u64(len(raw)) + raw


def header(n_tensors, n_kv, version=3, magic=b"GGUF"):
    return magic + u32(version) + u64(n_tensors) + u64(n_kv)


def kv(key, vtype, payload):
    return gstr(key) + u32(vtype) + payload


def tensor_info(name, ne, ttype=0, offset=0):
    return gstr(name) + u32(len(ne)) + b"".join(u64(d) for d in ne) + u32(ttype) + u64(offset)


def with_data(head: bytes, n_bytes: int = 256, alignment: int = 32) -> bytes:
    return head + bytes(-len(head) % alignment) + bytes(n_bytes)


UINT8, INT32, UINT32, STRING, ARRAY = 0, 5, 4, 8, 9
F32, Q4_0 = 0, 2


def small_valid_file(path: Path) -> int:
    """A small file with every kind of field; returns where its last tensor's data ends."""
    rng = np.random.default_rng(0)
    with GGUFWriter(path, alignment=16) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("llama.context_length", 256, "uint32")
        w.add_metadata("x.scores", [0.5, -1.0], "float32")
        w.add_metadata("tokenizer.ggml.tokens", ["<s>", "a", "ü"])
        w.add_metadata("x.nested", [[1, 2], [3]], "int16")
        w.add_metadata("x.flag", True)
        w.add_tensor("a", rng.standard_normal((2, 4)).astype(np.float32))
        w.add_tensor("b", rng.standard_normal((1, 32)).astype(np.float16))
        w.add_tensor("q", rng.integers(0, 255, 34, dtype=np.uint8), type="Q8_0", shape=(1, 32))
    with GGUFReader(path) as r:
        return max(t.offset + t.nbytes for t in r.tensors.values())


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = tmp_path_factory.mktemp("valid") / "valid.gguf"
    end = small_valid_file(path)
    return path, end


# ----------------------------------------------------------------------------- tests

def test_the_valid_file_parses(valid):
    path, end = valid
    assert parse_in_child([path])[str(path)] == ("ok", "")
    assert end <= path.stat().st_size


def test_every_truncation_is_a_gguf_error(valid, tmp_path):
    path, end = valid
    blob = path.read_bytes()
    paths = []
    for n in range(end):   # the header, the tensor table and every tensor's data
        paths.append(tmp_path / f"cut{n}.gguf")
        paths[-1].write_bytes(blob[:n])
    results = parse_in_child(paths)
    for p in paths:
        outcome, message = results[str(p)]
        assert outcome == "GGUFError", (p.name, outcome, message)
        assert " at byte " in message, message


def test_random_byte_flips_never_escape(valid, tmp_path):
    path, end = valid
    blob = path.read_bytes()
    with GGUFReader(path) as r:
        table_end = r.data_offset
    rng = np.random.default_rng(1234)
    paths = []
    for i in range(300):
        mutant = bytearray(blob)
        for _ in range(rng.integers(1, 4)):
            at = int(rng.integers(0, table_end))
            mutant[at] = int(rng.choice([mutant[at] ^ (1 << int(rng.integers(8))), 0, 0xFF,
                                         int(rng.integers(256))]))
        paths.append(tmp_path / f"flip{i}.gguf")
        paths[-1].write_bytes(bytes(mutant))
    results = parse_in_child(paths)
    outcomes = [results[str(p)][0] for p in paths]
    assert set(outcomes) <= {"ok", "GGUFError"}, [results[str(p)] for p in paths
                                                  if results[str(p)][0] not in ("ok", "GGUFError")]
    assert outcomes.count("GGUFError") > 200   # most flips in a header break it


def nested(depth):
    """An array nested `depth` deep holding one uint8."""
    return b"".join(u32(ARRAY) + u64(1) for _ in range(depth - 1)) + u32(UINT8) + u64(1) + b"\x07"


BIG = 2**64 - 1
HOSTILE = {
    # header
    "empty": (b"", "magic"),
    "short magic": (b"GG", "magic"),
    "bad magic": (header(0, 0, magic=b"GGML"), "magic"),
    "version 1": (header(0, 0, version=1), "version"),
    "version 4": (header(0, 0, version=4), "version"),
    "big-endian": (header(0, 0, version=3 << 24), "big-endian"),
    "no counts": (b"GGUF" + u32(3), "tensor count"),
    "huge kv count": (header(0, BIG), "cannot fit"),
    "huge tensor count": (header(2**63, 0), "cannot fit"),
    "second key past the end": (header(0, 2) + kv("a", UINT8, b"\x01") + u64(50) + b"k" * 10,
                                "metadata key #1"),
    # metadata
    "huge key length": (header(0, 1) + u64(BIG) + b"k" * 20, "metadata key #0"),
    "key length one past the end": (header(0, 1) + u64(14) + b"k" * 13, "metadata key #0"),
    "empty key": (header(0, 1) + kv("", UINT8, b"\x01"), "empty"),
    "key not utf-8": (header(0, 1) + kv(b"\xff\xfe", UINT8, b"\x01"), "UTF-8"),
    "duplicate key": (header(0, 2) + kv("a", UINT8, b"\x01") * 2, "duplicate key 'a'"),
    "unknown value type": (header(0, 1) + kv("a", 13, b"\x00" * 8), "unknown value type 13"),
    "value type -1": (header(0, 1) + kv("a", 2**32 - 1, b"\x00" * 8), "unknown value type"),
    "value past the end": (header(0, 1) + kv("a", 10, b"\x00" * 7), "value of key 'a'"),
    "huge string": (header(0, 1) + kv("a", STRING, u64(BIG) + b"x" * 10), "value of key 'a'"),
    "negative string": (header(0, 1) + kv("a", STRING, u64(2**63 + 5) + b"x"), "value of key 'a'"),
    "value not utf-8": (header(0, 1) + kv("a", STRING, gstr(b"ok\xc3")), "UTF-8"),
    "huge array": (header(0, 1) + kv("a", ARRAY, u32(UINT8) + u64(BIG) + b"\x00" * 64),
                   "cannot fit"),
    "array one past the end": (header(0, 1) + kv("a", ARRAY, u32(UINT32) + u64(4) + b"\x00" * 15),
                               "cannot fit"),
    "huge string array": (header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(2**40) + b"\x00" * 64),
                          "cannot fit"),
    "string array lengths past the end": (
        header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(3) + gstr("x") + u64(BIG) + u64(1)),
        "value of key 'a'[1]"),
    "string array not utf-8": (header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(2) + gstr("x")
                                                 + gstr(b"\x80")), "UTF-8"),
    # the same in arrays long enough for the one-pass reader (gguf._many_strings),
    # which declines them, so that the string at fault is named
    "long string array, lengths past the end": (
        header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(2000) + gstr("x") * 1500 + u64(BIG)
                          + u64(1) * 600), "value of key 'a'[1500]"),
    "long string array, truncated": (
        header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(2000) + gstr("xyz") * 1999 + u64(3)),
        "value of key 'a'[1999]"),
    "long string array not utf-8": (
        header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(2000) + gstr("x") * 1234 + gstr(b"\xe2\x82")
                          + gstr("y") * 765), "value of key 'a'[1234] at byte"),
    "huge array of arrays": (header(0, 1) + kv("a", ARRAY, u32(ARRAY) + u64(2**62) + b"\x00" * 64),
                             "cannot fit"),
    "unknown array element type": (header(0, 1) + kv("a", ARRAY, u32(77) + u64(1) + b"\x00" * 8),
                                   "unknown value type 77"),
    "depth bomb": (header(0, 1) + kv("a", ARRAY, nested(10000)), "nested"),
    "depth bomb, just too deep": (header(0, 1) + kv("a", ARRAY, nested(9)), "nested"),
    # alignment
    "alignment 0": (header(0, 1) + kv("general.alignment", UINT32, u32(0)), "power of two"),
    "alignment 48": (header(0, 1) + kv("general.alignment", UINT32, u32(48)), "power of two"),
    "alignment 2**31+1": (header(0, 1) + kv("general.alignment", UINT32, u32(2**31 + 1)),
                          "power of two"),
    "alignment int32": (header(0, 1) + kv("general.alignment", INT32, u32(32)), "uint32"),
    "alignment array": (header(0, 1) + kv("general.alignment", ARRAY,
                                          u32(UINT32) + u64(1) + u32(32)), "uint32"),
    # tensor table
    "huge tensor name": (header(1, 0) + u64(BIG) + bytes(64), "tensor name #0"),
    "tensor name not utf-8": (with_data(header(1, 0) + tensor_info(b"\xc0\xaf", [4])), "UTF-8"),
    "duplicate tensor": (with_data(header(2, 0) + tensor_info("t", [4])
                                   + tensor_info("t", [4], offset=32)), "duplicate tensor name"),
    "5 dims": (with_data(header(1, 0) + tensor_info("t", [1, 1, 1, 1, 1])), "n_dims 5"),
    "2**32-1 dims": (with_data(header(1, 0) + gstr("t") + u32(2**32 - 1) + bytes(64)), "n_dims"),
    "dims past the end": (header(1, 0) + gstr("t") + u32(4) + u64(1) * 3, "dims"),
    "negative dim": (with_data(header(1, 0) + tensor_info("t", [4, 2**63])), "negative"),
    "element count overflow": (with_data(header(1, 0) + tensor_info("t", [2**32, 2**32])),
                               "overflows"),
    "element count overflow, 4 dims": (
        with_data(header(1, 0) + tensor_info("t", [2**16, 2**16, 2**16, 2**15])), "overflows"),
    "unknown tensor type": (with_data(header(1, 0) + tensor_info("t", [4], ttype=99)),
                            "unknown tensor type 99"),
    "removed tensor type Q4_2": (with_data(header(1, 0) + tensor_info("t", [32], ttype=4)),
                                 "unknown tensor type 4"),
    "tensor type -1": (with_data(header(1, 0) + tensor_info("t", [4], ttype=2**32 - 1)),
                       "unknown tensor type"),
    "row not whole blocks": (with_data(header(1, 0) + tensor_info("t", [33, 2], ttype=Q4_0)),
                             "block size 32"),
    "0 dims of a block type": (with_data(header(1, 0) + tensor_info("t", [], ttype=Q4_0)),
                               "block size"),
    "offset past the table": (header(1, 0) + gstr("t") + u32(1) + u64(4) + u32(0) + u32(0),
                              "data offset"),
    "misaligned offset": (with_data(header(1, 0) + tensor_info("t", [4], offset=4)),
                          "not a multiple of the alignment"),
    "offset past the end": (with_data(header(1, 0) + tensor_info("t", [4], offset=2**64 - 32)),
                            "past the end"),
    "data past the end": (with_data(header(1, 0) + tensor_info("t", [65]), n_bytes=256),
                          "past the end"),
    "huge tensor": (with_data(header(1, 0) + tensor_info("t", [2**40, 2**20])), "past the end"),
    "overlapping tensors": (with_data(header(2, 0) + tensor_info("a", [16])
                                      + tensor_info("b", [4], offset=32)), "overlaps tensor 'a'"),
    "same offset": (with_data(header(2, 0) + tensor_info("a", [4]) + tensor_info("b", [4])),
                    "overlaps"),
    "no data section": (with_data(header(1, 0) + tensor_info("t", [8]), n_bytes=0),
                                      "past the end"),
}


def test_hand_made_hostile_headers(tmp_path):
    paths = {}
    for i, (name, (blob, _)) in enumerate(HOSTILE.items()):
        paths[name] = tmp_path / f"hostile{i}.gguf"
        paths[name].write_bytes(blob)
    results = parse_in_child(list(paths.values()))
    for name, (_, expected) in HOSTILE.items():
        outcome, message = results[str(paths[name])]
        assert outcome == "GGUFError", (name, outcome, message)
        assert expected in message and " at byte " in message, (name, message)


def test_a_hostile_file_does_not_take_time_or_memory_in_its_counts(tmp_path):
    """Counts are bounded by the file before anything is built, so a claimed
    2**40 strings in a 100-byte file fails at once, in this very process."""
    path = tmp_path / "h.gguf"
    path.write_bytes(header(0, 1) + kv("a", ARRAY, u32(STRING) + u64(2**40) + u64(0) * 8))
    with pytest.raises(GGUFError, match=r"value of key 'a' at byte 37: 1099511627776 STRING"):
        GGUFReader(path)


def test_long_string_arrays_read_as_one_by_one(tmp_path, monkeypatch):
    """The one-pass reader of long string arrays gives what the loop gives:
    empty strings, non-ASCII text, and a NUL inside a string (the one pass
    splits at NULs, so it must notice and decline)."""
    rng = np.random.default_rng(1)
    alphabet = ["a", "b", " ", "ü", "日", "🎉", "\n", ""]
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 6))) for _ in range(3000)]
    with_nul = texts[:1500] + ["a\0b"] + texts[1500:]
    path = tmp_path / "s.gguf"
    path.write_bytes(header(0, 3)
                     + kv("long", ARRAY, u32(STRING) + u64(len(texts)) + b"".join(map(gstr, texts)))
                     + kv("nul", ARRAY, u32(STRING) + u64(len(with_nul))
                          + b"".join(map(gstr, with_nul)))
                     + kv("after", UINT8, b"\x07"))
    one_pass = gguf._Header._many_strings
    took = []
    monkeypatch.setattr(gguf._Header, "_many_strings",
                        lambda h, count: took.append(one_pass(h, count)) or took[-1])
    with GGUFReader(path) as r:
        assert r.metadata["long"] == texts
        assert r.metadata["nul"] == with_nul
        assert r.metadata["after"] == 7
    assert took[0] == texts and took[1] is None   # one pass, then declined


def test_arrays_nested_to_the_limit_parse(tmp_path):
    path = tmp_path / "n.gguf"
    path.write_bytes(header(0, 1) + kv("a", ARRAY, nested(8)))
    with GGUFReader(path) as r:
        assert r.metadata["a"] == [[[[[[[[7]]]]]]]]


def test_errors_are_value_errors(tmp_path):
    path = tmp_path / "h.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="version at byte 4"):
        GGUFReader(path)


@pytest.fixture(scope="module")
def mutant_path(tmp_path_factory):
    return tmp_path_factory.mktemp("mutants") / "mutant.gguf"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
           [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x09, 0x08, 0x20])), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10**6)),
       insert=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.binary(min_size=1,
                                                                                  max_size=9))))
def test_hypothesis_mutations_give_gguf_error_or_parse(valid, mutant_path, edits, cut, insert):
    """Structured mutations (bytes set to boundary values, cuts, insertions) of
    the valid file, parsed in this process: a GGUFError or a clean parse."""
    path, _ = valid
    blob = bytearray(path.read_bytes())
    with GGUFReader(path) as r:
        table_end = r.data_offset
    for at, value in edits:
        blob[at % table_end] = value
    if insert is not None:
        at, extra = insert
        blob[at % table_end:at % table_end] = extra
    if cut is not None:
        del blob[cut % len(blob):]
    mutant_path.write_bytes(bytes(blob))
    try:
        with GGUFReader(mutant_path) as r:
            for t in r.tensors.values():
                assert t.data.nbytes == t.nbytes and t.offset + t.nbytes <= len(blob)
    except GGUFError as e:
        assert " at byte " in str(e)


def test_metadata_element_budget_bounds_memory(tmp_path):
    """Millions of one-byte elements would become tens of bytes each as Python
    values: past the budget the reader refuses instead of swelling."""
    from llamalite.gguf import MAX_METADATA_VALUES
    count = MAX_METADATA_VALUES + 1
    payload = u32(0) + u64(count) + bytes(count)  # element type UINT8
    path = tmp_path / "many.gguf"
    path.write_bytes(header(0, 1) + kv("tokenizer.bomb", 9, payload))
    with pytest.raises(GGUFError, match=r"'tokenizer.bomb'.*more than 8000000 array elements"):
        GGUFReader(path)
