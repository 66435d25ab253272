"""`python -m llamalite.bench`: how fast llamalite runs on this machine.

    python -m llamalite.bench -m MODEL [-p 512] [-n 128] [-t 1,2] [--peer llama-cpp-python]
        prompt processing and generation speed of a model, llama-bench's tests
        and columns, optionally beside llama.cpp (llamalite.bench.model)
    python -m llamalite.bench kernels [-t 1,2] [--types Q4_0,Q4_K]
        GEMV throughput per weight type against the memory read bandwidth
        (llamalite.bench.kernels)
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["kernels"]:
        from . import kernels
        return kernels.main(argv[1:])
    from . import model
    return model.main(argv)
