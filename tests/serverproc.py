"""A real `python -m llamalite.server` process on a free loopback port, for
the server tests: started, waited for (/health), stopped with SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import llamalite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_llamalite_env() -> dict:
    """The environment, with the llamalite this test imported first on the
    path: run from a neutral directory, the server runs the same code (the
    installed package in CI, the source tree in development)."""
    env = dict(os.environ)
    root = str(Path(llamalite.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class ServerProcess:
    """The server as a subprocess; its stderr (uvicorn's and our log) goes
    to a file that log() reads."""

    def __init__(self, *args: str, ready_timeout: float = 300.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="llamalite-server-", suffix=".log",
                                                delete=False)
        self._final_log = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llamalite.server", "--host", "127.0.0.1",
             "--port", str(self.port), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=_same_llamalite_env(),
            cwd=tempfile.gettempdir())
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout   # a first run fetches the model from PyPI
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer /health in {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return Path(self._log.name).read_text(errors="replace")

    def rss_bytes(self) -> int:
        """The server's resident memory, from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit (killing it after `timeout`)."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._final_log = self.log()
            self._log.close()
            os.unlink(self._log.name)
