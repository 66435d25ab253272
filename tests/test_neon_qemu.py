"""The NEON kernels, really run on this x86-64 machine.

tests/neon/neon_check.c is cross-compiled for aarch64 together with the
library's C sources and run under user-mode qemu, once on a CPU model with the
dotprod extension (SDOT kernels) and once on one without (plain NEON kernels).
It compares ll_set_isa("neon") with ll_set_isa("scalar") through the public C
API and prints one line per check.

Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user
(.ci/run installs them).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVER = ROOT / "tests" / "neon" / "neon_check.c"
SOURCES = ["types.c", "quants.c", "quants_k.c", "threads.c", "matmul.c", "pack.c", "kernels_neon.c"]
CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"

# (qemu CPU model, the kernel set the library must pick on it)
CPU_MODELS = [("max", "dotprod"), ("cortex-a57", "nodotprod")]

WEIGHT_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL",
                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]

pytestmark = pytest.mark.skipif(
    shutil.which(CC) is None or shutil.which(QEMU) is None,
    reason=f"{CC} or {QEMU} not found: install Debian's gcc-aarch64-linux-gnu, "
           "libc6-dev-arm64-cross and qemu-user to run the NEON kernels")


@pytest.fixture(scope="module")
def neon_check(tmp_path_factory) -> Path:
    """The driver, linked statically for aarch64 with the library's sources.
    No FMA contraction, as the library's reference code is built."""
    exe = tmp_path_factory.mktemp("neon") / "neon_check"
    cmd = [CC, "-std=gnu11", "-O2", "-static", "-pthread", "-ffp-contract=off",
           "-Wall", "-Wextra", "-Wno-unused-parameter", f"-I{CSRC}",
           *(str(CSRC / s) for s in SOURCES), str(DRIVER), "-lm", "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"cross build failed:\n{built.stderr}"
    return exe


@pytest.mark.parametrize("cpu,kernels", CPU_MODELS)
def test_neon_matches_scalar_under_qemu(neon_check: Path, cpu: str, kernels: str) -> None:
    run = subprocess.run([QEMU, "-cpu", cpu, str(neon_check), kernels],
                         capture_output=True, text=True, timeout=600)
    lines = run.stdout.splitlines()
    failures = [ln for ln in lines if ln.startswith("FAIL")]
    assert run.returncode == 0 and not failures, \
        f"qemu -cpu {cpu}: exit {run.returncode}\n" + "\n".join(failures) + run.stderr
    assert re.fullmatch(rf"all checks passed: \d+ checks \({kernels} kernels\)", lines[-1]), lines[-1]
    # every weight type went through every kind of check
    for t in WEIGHT_TYPES:
        for kind in ("vec_dot", "to_float", "matmul"):
            assert any(ln.startswith(f"ok   {kind} {t} ") for ln in lines), f"no {kind} check for {t}"
    for t in ("Q8_0", "Q8_1", "Q8_K"):
        assert any(ln.startswith(f"ok   quantize_act {t} ") for ln in lines), f"no quantize_act check for {t}"
