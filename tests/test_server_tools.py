"""Structured output through the server, as the official `openai` client uses
it, with Qwen2.5-Coder-0.5B-Instruct: forced tool calls (plain and streamed)
whose arguments validate against the tool's schema, a tool result that
continues the conversation, a json_schema answer that parses and validates,
and fill-in-the-middle through `suffix`."""
import json
import signal

import pytest

openai = pytest.importorskip("openai", reason="the server tests need the `test` extra")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("fastapi", reason="the server needs the `server` extra")

from serverproc import ServerProcess  # noqa: E402

WEATHER_PARAMETERS = {"type": "object", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": WEATHER_PARAMETERS}}
ASK = [{"role": "user", "content": "What's the weather in Oslo?"}]


@pytest.fixture(scope="module")
def client(qwen25_path):
    proc = ServerProcess("--model", str(qwen25_path), "--model_alias", "coder")
    yield openai.OpenAI(base_url=f"{proc.url}/v1", api_key="unused", max_retries=0)
    assert proc.stop() == -signal.SIGTERM, proc.log()


def test_required_tool_call_validates_and_its_result_continues_the_chat(client):
    reply = client.chat.completions.create(model="coder", messages=ASK, tools=[WEATHER],
                                           tool_choice="required", temperature=0, max_tokens=64)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    assert "oslo" in arguments["city"].lower()

    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id,
         "content": json.dumps({"city": "Oslo", "temperature": 12, "sky": "cloudy"})}]
    answer = client.chat.completions.create(model="coder", messages=history, tools=[WEATHER],
                                            tool_choice="none", temperature=0, max_tokens=48)
    assert answer.choices[0].message.tool_calls in (None, [])
    assert answer.choices[0].message.content.strip()


def test_streamed_tool_call_arrives_as_deltas(client):
    stream = client.chat.completions.create(model="coder", messages=ASK, tools=[WEATHER],
                                            tool_choice="required", temperature=0,
                                            max_tokens=64, stream=True)
    name, pieces, finish, ids = "", [], None, set()
    for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
            name += call.function.name or ""
            pieces.append(call.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and name == "get_weather" and len(ids) == 1
    jsonschema.validate(json.loads("".join(pieces)), WEATHER_PARAMETERS)


def test_json_schema_answer_validates(client):
    schema = {"type": "object", "properties": {
        "country": {"type": "string"}, "capital": {"type": "string"},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 2000}},
        "required": ["country", "capital"]}
    reply = client.chat.completions.create(
        model="coder", temperature=0, max_tokens=64,
        messages=[{"role": "user", "content": "Describe France's capital as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "capital", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_suffix_fills_in_the_middle(client):
    """As an editor asks: the code between a signature and a return line,
    up to the first blank line."""
    prefix, suffix = "def mean(values: list) -> float:\n", "\n    return total / len(values)\n"
    out = client.completions.create(model="coder", prompt=prefix, suffix=suffix, temperature=0,
                                    max_tokens=48, stop=["\n\n"])
    middle = out.choices[0].text
    assert "total" in middle
    compile(prefix + middle + suffix, "<fim>", "exec")
