"""Shared fixtures: the real models of the catalogue, fetched once and cached
(~/.cache/llamalite, or $LLAMALITE_CACHE) by llamalite.models."""
import pytest

from llamalite import LlamaliteError, models


def _model(name):
    try:
        return models.fetch(name)
    except LlamaliteError as e:  # no network: say so instead of erroring obscurely
        pytest.fail(f"could not fetch the real model {name}: {e}")


@pytest.fixture(scope="session")
def smollm2_path():
    return _model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma3_path():
    return _model("gemma3-270m")


@pytest.fixture(scope="session")
def qwen25_path():
    return _model("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="module")
def scalar_kernels():
    """The scalar reference kernels for a whole test module (the definition
    of each format), whatever ISA was active before."""
    from llamalite import _native
    previous = _native.get_isa()
    _native.set_isa("scalar")
    yield
    _native.set_isa(previous)
