"""`python -m llamalite` driven as a user would, as a subprocess."""
import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "llamalite", *args],
                          capture_output=True, text=True, timeout=120)


def test_info_describes_the_real_default_model(smollm2_path):
    r = run_cli("info", "-m", str(smollm2_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "architecture:  llama" in out
    assert "layers:        30" in out and "heads:         9" in out and "kv heads:      3" in out
    assert "Q4_1 210" in out and "Q8_0 1" in out
    assert "tokenizer:     gpt2, 49152 tokens" in out
    assert "chat template: yes" in out
    assert "parameters:    134.5 M" in out


def test_info_errors_are_one_line(tmp_path):
    missing = run_cli("info", "-m", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(100))
    r = run_cli("info", "-m", str(bad))
    assert r.returncode == 1 and r.stderr.startswith("llamalite: error:")
    assert "magic" in r.stderr and "Traceback" not in r.stderr


def test_info_shows_hostile_metadata_safely(tmp_path):
    from llamalite.gguf import GGUFWriter
    path = tmp_path / "odd.gguf"
    with GGUFWriter(path) as w:
        w.add_metadata("general.architecture", "llama")
        w.add_metadata("general.name", "evil\x1b[2J\nforged: line")
        w.add_metadata("tokenizer.ggml.tokens", 7)  # a scalar where a list belongs
    r = run_cli("info", "-m", str(path))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "forged: line" not in r.stdout.splitlines()
    assert r"name:          evil\x1b[2J\nforged: line" in r.stdout
    assert "tokenizer:     none" in r.stdout
