"""`python -m llamalite [run|chat]` driven as a person would: as a
subprocess on the real default model, and through a pseudo-terminal for the
interactive modes (Ctrl-C and Ctrl-D are the terminal's own keys there)."""
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llamalite

FRANCE = "The capital of France is"
BOB = ("Transcript of a dialog between User and Bob, a helpful assistant.\n\n"
       "User: Hello, Bob.\nBob: Hello. How may I help you today?\nUser:")
SUMMARY = {
    "load time": r"llamalite:        load time = +[\d.]+ ms",
    "sample time": r"llamalite:      sample time = +[\d.]+ ms / +(\d+) runs +\( +[\d.]+ ms per "
                   r"token, +[\d.]+ tokens per second\)",
    "prompt eval": r"llamalite: prompt eval time = +[\d.]+ ms / +(\d+) tokens \( +[\d.]+ ms per "
                   r"token, +[\d.]+ tokens per second\)",
    "eval": r"llamalite:        eval time = +[\d.]+ ms / +(\d+) runs +\( +[\d.]+ ms per token, "
            r"+[\d.]+ tokens per second\)",
    "total": r"llamalite:       total time = +[\d.]+ ms / +(\d+) tokens",
    "memory": r"llamalite:      memory used = +[\d.]+ MiB \(model ([\d.]+) MiB \+ KV cache "
              r"([\d.]+) MiB; peak resident [\d.]+ MiB\)",
}


def _env():
    """The parent's environment, with the llamalite it imported first on the
    path, so the subprocess (in a temporary directory) runs the same code."""
    env = dict(os.environ)
    root = str(Path(llamalite.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_cli(tmp_path, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "llamalite", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env())


def summary(stderr):
    """{line name: the numbers it holds}; every line must be there."""
    found = {}
    for name, pattern in SUMMARY.items():
        m = re.search(pattern, stderr)
        assert m, f"no {name} line in:\n{stderr}"
        found[name] = [float(g) for g in m.groups()]
    return found


def test_run_greedy_streams_paris_then_the_summary(smollm2_path, tmp_path):
    r = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 8, "-p", FRANCE, "-c", 256)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(FRANCE + " Paris.")
    stats = summary(r.stderr)
    assert stats["sample time"] == [8]                # -n 8: eight tokens sampled
    assert stats["prompt eval"] == [5]                # BOS-less GPT-2 vocabulary: 5 tokens
    assert stats["eval"] == [7]                       # the last one is never evaluated
    assert stats["total"] == [12]
    model_mib, kv_mib = stats["memory"]
    assert model_mib == pytest.approx(smollm2_path.stat().st_size / 2**20, abs=0.01)
    # n_ctx x layers x (K, V) x kv heads x head size x f16
    assert kv_mib == pytest.approx(256 * 30 * 2 * 3 * 64 * 2 / 2**20, abs=0.01)
    assert "Traceback" not in r.stderr


def test_run_is_the_default_subcommand(smollm2_path, tmp_path):
    implicit = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 3, "-p", FRANCE)
    explicit = run_cli(tmp_path, "run", "-m", smollm2_path, "--temp", 0, "-n", 3, "-p", FRANCE)
    assert implicit.returncode == explicit.returncode == 0
    assert implicit.stdout == explicit.stdout and implicit.stdout.startswith(FRANCE + " Paris")


def test_n_predict_and_no_display_prompt(smollm2_path, tmp_path):
    r = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 2, "-p", FRANCE,
                "--no-display-prompt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == " Paris.\n"
    assert summary(r.stderr)["sample time"] == [2]


def test_seed_reproduces_a_sampled_continuation(smollm2_path, tmp_path):
    def sampled(seed):
        r = run_cli(tmp_path, "-m", smollm2_path, "-s", seed, "--temp", 1.5, "--top-k", 0,
                    "--min-p", 0, "-n", 16, "-p", "Once upon a time", "-c", 128)
        assert r.returncode == 0, r.stderr
        return r.stdout
    first = sampled(1234)
    assert sampled(1234) == first
    assert sampled(99) != first


def test_escapes_only_with_e(smollm2_path, tmp_path):
    prompt = r"tab\there\nline\\ \x41"
    plain = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 1, "-p", prompt)
    escaped = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 1, "-e", "-p", prompt)
    assert plain.stdout.startswith(prompt)
    assert escaped.stdout.startswith("tab\there\nline\\ A")
    assert escaped.returncode == plain.returncode == 0


def test_prompt_from_a_file(smollm2_path, tmp_path):
    (tmp_path / "prompt.txt").write_text(FRANCE, encoding="utf-8")
    r = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 2, "-f", "prompt.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == FRANCE + " Paris.\n"


@pytest.mark.parametrize("args, says", [
    (["-m", "missing.gguf", "-p", "x"], "missing.gguf: no such file"),
    (["-m", "no-such-model", "-p", "x"], "not a catalogue model"),
    (["-m", "{model}", "-n", "many"], "argument -n/--n-predict: invalid int value: 'many'"),
    (["-m", "{model}", "--temp", "hot"], "argument --temp: invalid float value"),
    (["-m", "{model}", "--mirostat", "3"], "invalid choice: 3"),
    (["-m", "{model}", "--top-p", "2"], "--top-p must be in [0.0, 1.0]"),
    (["-m", "{model}", "-t", "0"], "-t/--threads must be >= 1"),
    (["-m", "{model}", "-f", "absent.txt"], "cannot read prompt file absent.txt"),
    (["-m", "{model}", "-f", "."], "cannot read prompt file ."),
    (["-m", "{model}", "-p", "a", "-f", "prompt.txt"], "give the prompt with -p or -f"),
    (["-m", "not.gguf", "-p", "x"], "magic"),
    (["-m", "{model}", "-c", "8", "-p", "one two three four five six seven eight nine"],
     "the prompt is 9 tokens, the context only 8"),
    (["-m", "{model}", "-c", "16", "-n", "100", "-p", "hi"], "exceed the context of 16"),
    (["chat", "-m", "{model}", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_mistakes_are_one_line_and_a_failure(smollm2_path, tmp_path, args, says):
    (tmp_path / "not.gguf").write_text("this is text, not a model\n")
    (tmp_path / "prompt.txt").write_text("hello")
    r = run_cli(tmp_path, *[a.format(model=smollm2_path) for a in args])
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("llamalite: error: ") and says in r.stderr, r.stderr
    assert r.stdout == ""


def test_chat_answers_through_the_template(smollm2_path, tmp_path):
    r = run_cli(tmp_path, "chat", "-m", smollm2_path, "--temp", 0, "-c", 512,
                stdin="What is the capital of France? Answer in English.\n")
    assert r.returncode == 0, r.stderr
    answer = r.stdout.split("Answer in English.\n", 1)[1]
    assert "Paris" in answer


def test_chat_keeps_the_kv_cache_between_turns(smollm2_path, tmp_path):
    """The second turn evaluates only what is new (the end of the answer, the
    question, the template's markers), not the transcript again."""
    def prompt_tokens(turns):
        r = run_cli(tmp_path, "chat", "-m", smollm2_path, "--temp", 0, "-c", 512,
                    "--system", "You answer in one short sentence.", stdin=turns)
        assert r.returncode == 0, r.stderr
        return r.stdout, int(summary(r.stderr)["prompt eval"][0])
    _, one = prompt_tokens("What is the capital of France?\n")
    out, two = prompt_tokens("What is the capital of France?\nAnd of Italy?\n")
    assert "Paris" in out and "Rome" in out
    assert one > 20
    assert two - one < 25     # re-reading the transcript would cost more than `one` again


def test_cnv_flag_is_the_chat_subcommand(smollm2_path, tmp_path):
    r = run_cli(tmp_path, "-m", smollm2_path, "-cnv", "--temp", 0, "-c", 512,
                "-p", "What is the capital of France? Answer in English.")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


# --- through a pseudo-terminal --------------------------------------------------

class Terminal:
    """The CLI on a pseudo-terminal: what it writes, keys sent to it."""

    def __init__(self, tmp_path, *args):
        self.out = b""
        pid, fd = pty.fork()
        if pid == 0:   # the child: its stdin, stdout and stderr are the terminal
            try:
                os.chdir(tmp_path)
                os.execve(sys.executable, [sys.executable, "-m", "llamalite", *map(str, args)],
                          _env())
            finally:
                os._exit(127)
        self.pid, self.fd, self.status = pid, fd, None

    def _read(self, seconds):
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:   # the child is gone
            return False
        self.out += data
        return bool(data)

    def expect(self, pattern, timeout=20.0):
        """Wait until the output so far matches `pattern` (a regex)."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.out.decode(errors="replace")):
            if time.monotonic() > deadline or not self._read(0.2) and self.exited():
                shown = self.out.decode(errors="replace")
                raise AssertionError(f"never saw {pattern!r} in:\n{shown}")
        return self.out.decode(errors="replace")

    def quiet(self, seconds=0.6, timeout=15.0):
        """Wait until nothing is written for `seconds`."""
        deadline = time.monotonic() + timeout
        while self._read(seconds):
            assert time.monotonic() < deadline, "the output never went quiet"

    def send(self, data: bytes):
        os.write(self.fd, data)

    def exited(self):
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def wait(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not self.exited():
            self._read(0.1)
            if time.monotonic() > deadline:
                raise AssertionError(f"still running:\n{self.out.decode(errors='replace')}")
        while self._read(0.05):
            pass
        return self.status

    def close(self):
        if not self.exited():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path):
    opened = []

    def start(*args):
        opened.append(Terminal(tmp_path, *args))
        return opened[-1]
    yield start
    for t in opened:
        t.close()


def test_reverse_prompt_hands_over_and_a_typed_line_is_answered(smollm2_path, terminal):
    t = terminal("-m", smollm2_path, "--temp", 0, "-c", 512, "-n", 48, "--color", "off",
                 "-i", "-r", "User:", "-p", BOB)
    t.expect(r"How may I help you today\?\r?\nUser:$")   # the prompt ends with the reverse prompt
    t.quiet()
    assert t.out.decode().count("User:") == 2              # so the person speaks first
    t.send(b" What is the capital of France?\n")
    seen = t.expect(r"capital of France\?\r?\n[\s\S]*Bob:[\s\S]*User:$")
    reply = seen.split("capital of France?", 1)[1]
    assert re.search(r"Bob: \S", reply)                     # the model answered as Bob
    t.send(b"\x04")                                          # Ctrl-D: end of input
    assert t.wait() == 0
    stats = summary(t.out.decode(errors="replace"))
    assert stats["sample time"][0] >= 2


def test_ctrl_c_interrupts_a_generation_and_ctrl_d_exits(smollm2_path, terminal):
    t = terminal("-m", smollm2_path, "--temp", 0, "-c", 1024, "-n", 900, "--color", "off",
                 "-i", "-p", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    t.expect(r"12, 13, 14")                                 # counting on, for a long while
    t.send(b"\x03")
    t.quiet()                                              # stopped: back at the prompt
    t.send(b" 999\n")                                       # a line of ours is accepted...
    t.expect(r"999\r?\n")
    t.send(b"\x03")                                         # ...its answer interrupted too
    t.quiet()
    t.send(b"\x04")
    assert t.wait() == 0
    stats = summary(t.out.decode(errors="replace"))
    assert stats["sample time"][0] < 900                    # far from -n: it was interrupted
    assert "Traceback" not in t.out.decode(errors="replace")


def test_ctrl_c_at_the_prompt_exits_cleanly(smollm2_path, terminal):
    t = terminal("-m", smollm2_path, "--temp", 0, "-c", 512, "--color", "off",
                 "-i", "-r", "User:", "-p", BOB)
    t.expect(r"User:$")
    t.quiet()
    t.send(b"\x03")
    assert t.wait() == 0
    assert "Traceback" not in t.out.decode(errors="replace")


def test_colours_on_a_terminal_only_unless_forced(smollm2_path, terminal, tmp_path):
    t = terminal("-m", smollm2_path, "--temp", 0, "-n", 2, "-p", FRANCE)
    assert t.wait() == 0
    assert f"\x1b[33m{FRANCE}\x1b[0m Paris" in t.out.decode()    # prompt yellow, answer plain
    piped = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 2, "-p", FRANCE)
    assert "\x1b" not in piped.stdout
    forced = run_cli(tmp_path, "-m", smollm2_path, "--temp", 0, "-n", 2, "-p", FRANCE, "--color")
    assert forced.stdout.startswith(f"\x1b[33m{FRANCE}\x1b[0m Paris")


def test_ctrl_c_without_i_stops_with_the_summary(smollm2_path, terminal):
    t = terminal("-m", smollm2_path, "--temp", 0, "-c", 1024, "--color", "off",
                 "-p", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    t.expect(r"12, 13, 14")
    t.send(b"\x03")
    assert t.wait() == 130                                  # llama.cpp's status for Ctrl-C
    out = t.out.decode(errors="replace")
    assert summary(out)["sample time"][0] < 1000 and "Traceback" not in out


def test_a_reader_that_goes_away_ends_it_quietly(smollm2_path, tmp_path):
    args = ["-m", str(smollm2_path), "--temp", "0", "-c", "1024", "-p", "1, 2, 3,"]
    cli = subprocess.Popen([sys.executable, "-m", "llamalite", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, cwd=tmp_path, env=_env())
    assert cli.stdout.read(20).startswith(b"1, 2, 3, 4")
    cli.stdout.close()                                      # as `| head -c 20` does
    err = cli.stderr.read().decode()
    assert cli.wait(timeout=60) == 141
    assert "error" not in err and "Traceback" not in err and "load time" in err
