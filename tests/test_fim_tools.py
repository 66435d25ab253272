"""Fill-in-the-middle and tool calling with Qwen2.5-Coder-0.5B-Instruct."""
import json

import jsonschema
import pytest

from llamalite import Llama

WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "description": "the city"},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}


@pytest.fixture(scope="module")
def qwen(qwen25_path):
    llm = Llama(str(qwen25_path), n_ctx=1024, verbose=False)
    yield llm
    llm.close()


def test_fill_in_the_middle_writes_a_body_that_compiles(qwen):
    prefix = "def mean(values: list) -> float:\n"
    suffix = "\n    return total / len(values)\n"
    out = qwen(prefix, suffix=suffix, max_tokens=48, temperature=0, stop=["\n\n"])
    middle = out["choices"][0]["text"]
    assert "total" in middle
    compile(prefix + middle + suffix, "<fim>", "exec")
    streamed = "".join(c["choices"][0]["text"] for c in qwen(
        prefix, suffix=suffix, max_tokens=48, temperature=0, stop=["\n\n"], stream=True))
    assert streamed == middle
