"""Fill-in-the-middle and tool calling with Qwen2.5-Coder-0.5B-Instruct."""
import json

import jsonschema
import pytest

from llamalite import InvalidArgumentError, Llama, tools

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


# --- tools: the pieces, without a model ----------------------------------------------

def test_tool_choice_is_checked():
    with pytest.raises(InvalidArgumentError, match="not among the tools"):
        tools.plan([WEATHER], {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(InvalidArgumentError, match="needs tools"):
        tools.plan(None, "required")
    with pytest.raises(InvalidArgumentError, match="tool_choice must be"):
        tools.plan([WEATHER], "sometimes")
    with pytest.raises(InvalidArgumentError, match=r"tools\[0\]"):
        tools.plan([{"type": "function"}], None)
    assert tools.plan([WEATHER], None).mode == "auto"
    legacy = tools.plan(None, None, functions=[WEATHER["function"]],
                        function_call={"name": "get_weather"})
    assert legacy.mode == "named" and legacy.name == "get_weather"


def test_replies_are_parsed_into_tool_calls():
    names = ["get_weather"]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    for text in (call, "Let me check.\n" + call, '```json\n{"name": "get_weather", '
                 '"arguments": {"city": "Oslo"}}\n```'):
        (got,) = tools.parse_calls(text, names)
        assert got["type"] == "function" and got["id"].startswith("call_")
        assert got["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert tools.parse_calls('{"name": "other", "arguments": {}}', names) is None
    assert tools.parse_calls("<tool_call>\n{not json}\n</tool_call>", names) is None
    assert tools.parse_calls("It is sunny.", names) is None


def chunks_of(pieces, finish="stop"):
    head = {"id": "chatcmpl-1", "model": "m", "created": 0, "object": "chat.completion.chunk"}
    yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                "finish_reason": None}]}
    for p in pieces:
        yield {**head, "choices": [{"index": 0, "delta": {"content": p}, "logprobs": None,
                                    "finish_reason": None}]}
    yield {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                "finish_reason": finish}]}


def test_streams_turn_calls_into_deltas_and_leave_text_alone():
    plan = tools.plan([WEATHER], "auto")
    pieces = ["<tool", "_call>\n", '{"name": "get_weather", ', '"arguments": {"city": "Rome"}}',
              "\n</tool_call>"]
    out = list(tools.stream_with_tool_calls(chunks_of(pieces), plan))
    deltas = [c["choices"][0]["delta"] for c in out]
    assert deltas[0] == {"role": "assistant"}
    assert deltas[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    assert json.loads(deltas[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Rome"}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    text = list(tools.stream_with_tool_calls(chunks_of(["It", " is", " `sunny`", "."]), plan))
    assert [c["choices"][0]["delta"].get("content") for c in text[1:-1]] == \
        ["It", " is", " `sunny`", "."]
    assert text[-1]["choices"][0]["finish_reason"] == "stop"


# --- tools: Qwen2.5-Coder --------------------------------------------------------------

QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check_call(message):
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["function"]["arguments"]),
                        WEATHER["function"]["parameters"])


def test_required_tool_choice_yields_validating_tool_calls(qwen):
    for seed in range(3):
        reply = qwen.create_chat_completion(QUESTION, tools=[WEATHER], tool_choice="required",
                                            seed=seed, temperature=0.8, max_tokens=64)
        assert reply["choices"][0]["finish_reason"] == "tool_calls"
        check_call(reply["choices"][0]["message"])


def test_named_tool_choice_streams_tool_call_deltas(qwen):
    chunks = list(qwen.create_chat_completion(
        QUESTION, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        seed=1, max_tokens=64, stream=True))
    calls = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    message = {"tool_calls": [{"id": calls[0]["id"], "type": calls[0]["type"], "function": {
        "name": calls[0]["function"]["name"],
        "arguments": "".join(d["function"]["arguments"] for d in calls)}}]}
    check_call(message)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_auto_with_an_unrelated_question_answers_in_content(qwen):
    reply = qwen.create_chat_completion([{"role": "user", "content": "Say hello in French."}],
                                        tools=[WEATHER], tool_choice="auto", seed=1,
                                        max_tokens=24)
    message = reply["choices"][0]["message"]
    assert message["content"] and "tool_calls" not in message
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")


def test_tool_results_continue_the_conversation(qwen):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather",
                         "arguments": '{"city": "Paris", "unit": "celsius"}'}}
    conversation = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"temperature": 18, "sky": "clear"}'}]
    plan = tools.plan([WEATHER], "auto")
    prompt = qwen._chat_formatter()(tools.prepared_messages(conversation, plan, native=True),
                                    tools=plan.tools).prompt
    assert '"arguments": {"city": "Paris", "unit": "celsius"}' in prompt
    assert '<tool_response>\n{"temperature": 18, "sky": "clear"}\n</tool_response>' in prompt
    reply = qwen.create_chat_completion(conversation, tools=[WEATHER], seed=1, temperature=0,
                                        max_tokens=32)
    assert "18" in reply["choices"][0]["message"]["content"]


def test_models_whose_template_knows_no_tools_get_the_builtin_format(smollm2_path):
    with Llama(str(smollm2_path), n_ctx=512, verbose=False) as llm:
        plan = tools.plan([WEATHER], "required")
        prompt = llm._chat_formatter()(tools.prepared_messages(QUESTION, plan, native=False)).prompt
        assert "<tools>" in prompt and '"name": "get_weather"' in prompt
        reply = llm.create_chat_completion(QUESTION, tools=[WEATHER], tool_choice="required",
                                           seed=3, max_tokens=48)
        check_call(reply["choices"][0]["message"])
