"""Run `python -m llamalite ...` with its stderr on a pseudo-terminal, for
the tests of what the CLI shows only on a terminal (per-tensor progress)."""
from __future__ import annotations

import os
import pty
import subprocess
import sys


def run_with_terminal_stderr(*args: str, env: dict | None = None):
    """(the CompletedProcess, with stdout captured; everything written to
    the terminal on stderr, as text)."""
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "llamalite", *args], stdout=subprocess.PIPE,
                           stderr=slave, env=env, text=True, timeout=120)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # the terminal closed: everything has been read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    return r, shown.decode()
