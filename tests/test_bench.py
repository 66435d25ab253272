"""`python -m llamalite.bench`, run as a user runs it: the tables and records
it prints are well formed. No speed is asserted."""
import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from llamalite.bench.model import CSV_FIELDS


def bench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "llamalite.bench", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def json_run(smollm2_path):
    r = bench("-m", smollm2_path, "-p", 16, "-n", 4, "-t", "1,2", "-r", 2, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_json_has_one_record_per_thread_count_and_test(json_run, smollm2_path):
    assert [(r["n_threads"], r["test"]) for r in json_run] == \
        [(1, "pp16"), (1, "tg4"), (2, "pp16"), (2, "tg4")]
    for r in json_run:
        assert r["impl"] == "llamalite" and r["model_filename"] == str(smollm2_path)
        assert r["model_type"] == "llama 135M Q4_1" and r["model_n_params"] == 134_515_008
        assert (r["n_prompt"], r["n_gen"]) == ((16, 0) if r["test"] == "pp16" else (0, 4))
        assert len(r["samples_ts"]) == 2 and all(s > 0 for s in r["samples_ts"])
        assert r["avg_ts"] == pytest.approx(sum(r["samples_ts"]) / 2)
        assert r["stddev_ts"] >= 0 and r["avg_ns"] > 0 and r["read_bandwidth_gbps"] > 0
        assert "ratio_vs_peer" not in r


def test_generation_records_say_how_many_weight_bytes_a_token_reads(json_run):
    """SmolLM2 ties its embeddings to the output, so a token reads every
    tensor byte: GB/s = model size x tokens per second."""
    for r in json_run:
        if r["n_gen"]:
            assert r["weights_gbps"] == pytest.approx(r["model_size"] * r["median_ts"] / 1e9)
            assert r["read_bandwidth_share"] == pytest.approx(
                r["weights_gbps"] / r["read_bandwidth_gbps"])
        else:
            assert "weights_gbps" not in r


def test_grammar_adds_constrained_generation_beside_plain(smollm2_path):
    r = bench("-m", smollm2_path, "-p", 0, "-n", 4, "-t", 1, "-r", 1, "-o", "json",
              "--grammar", "json")
    assert r.returncode == 0, r.stderr
    assert [rec["test"] for rec in json.loads(r.stdout)] == ["tg4", "tg4 json"]
    assert "invalid choice" in bench("--grammar", "yaml").stderr


def test_markdown_and_csv(smollm2_path):
    r = bench("-m", smollm2_path, "-p", 8, "-n", 0, "-t", 1, "-r", 1)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Intel") or "cores" in lines[0]
    assert lines[1].startswith("memory read bandwidth:")
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == ("| model | size | params | threads | test | llamalite t/s "
                        "| weights GB/s | % of read bw |")
    assert len(table) == 3 and "| 1 | pp8 |" in table[2]
    r = bench("-m", smollm2_path, "-p", 0, "-n", 3, "-t", 1, "-r", 1, "-o", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert tuple(csv.DictReader(io.StringIO(r.stdout)).fieldnames) == CSV_FIELDS
    assert len(rows) == 1 and rows[0]["test"] == "tg3" and float(rows[0]["avg_ts"]) > 0


STAND_IN = '''
"""A stand-in for llama_cpp: llamalite's own Llama under the peer's name,
counting the calls the benchmark makes."""
import llamalite

__version__ = "0.0-stand-in"
calls = []


class Llama(llamalite.Llama):
    def eval(self, tokens):
        calls.append(("eval", len(tokens)))
        return super().eval(tokens)
'''


def test_peer_runs_the_same_tests_interleaved_with_ratios(smollm2_path, tmp_path):
    """With --peer, each test runs on both implementations through the same
    Llama calls; here the peer is a stand-in package, so this runs without
    llama.cpp installed."""
    pkg = tmp_path / "llama_cpp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(STAND_IN))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    r = bench("-m", smollm2_path, "-p", 8, "-n", 2, "-t", 1, "-r", 3, "-o", "json",
              "--peer", "llama-cpp-python", env=env)
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [(x["impl"], x["test"]) for x in records] == [
        ("llamalite", "pp8"), ("llama-cpp-python", "pp8"),
        ("llamalite", "tg2"), ("llama-cpp-python", "tg2")]
    assert records[1]["version"] == "llama-cpp-python 0.0-stand-in"
    for ours, peer in (records[0:2], records[2:4]):
        assert len(peer["samples_ts"]) == 3
        assert ours["ratio_vs_peer"] == pytest.approx(ours["median_ts"] / peer["median_ts"])
    r = bench("-m", smollm2_path, "-p", 8, "-n", 0, "-t", 1, "-r", 1,
              "--peer", "llama-cpp-python", env=env)
    assert r.returncode == 0, r.stderr
    assert "| llamalite t/s | llama.cpp t/s | llamalite / llama.cpp |" in r.stdout


def test_user_mistakes_are_one_line(tmp_path):
    r = bench("-m", tmp_path / "missing.gguf", "-r", 1)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "missing.gguf: no such file" in r.stderr
    for args, message in ((["-p", 0, "-n", 0], "nothing to run"),
                          (["-t", 0], "thread counts"),
                          (["-p", "x"], "-p expects counts"),
                          (["-r", 0], "at least 1"),
                          (["--peer", "vllm"], "invalid choice")):
        r = bench(*args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_peer_missing_is_a_clear_error(smollm2_path):
    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.skip("llama_cpp is installed in this Python")
    r = bench("-m", smollm2_path, "-r", 1, "--peer", "llama-cpp-python")
    assert r.returncode == 1 and "llama_cpp package is not installed" in r.stderr
    assert r.stderr.count("\n") == 1


def test_kernels_subcommand_still_runs():
    r = bench("kernels", "--types", "Q4_0", "--mib", 8, "-t", 1, "-r", 1, "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [k["type"] for k in out["kernels"]] == ["Q4_0"]
    assert out["kernels"][0]["gemv_gbps"]["1"] > 0
