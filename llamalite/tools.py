"""Tool (function) calling for create_chat_completion: OpenAI's `tools` and
`tool_choice` in, `tool_calls` out.

How tools reach the model: a chat template that knows tools (its source
mentions `tools`, as Qwen2.5's does) gets them as the `tools` variable and
renders them its own way. Any other format gets the built-in one: a system
message (joined to the conversation's own system message, if any) that lists
each tool as JSON and asks for calls written as

    <tool_call>
    {"name": "<function name>", "arguments": {<arguments as a JSON object>}}
    </tool_call>

which is also the format Qwen2.5 and Hermes-style models answer in. Earlier
assistant tool calls and `tool` results are written back in the same format
(results as <tool_response> ... </tool_response> in a user turn).

tool_choice: "none" leaves tools out of the prompt; "auto" (the default with
tools) lets the model answer or call; "required" and a named function force a
call, generated under a grammar built from the function's parameter schema,
so the arguments always validate.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional

from .errors import InvalidArgumentError
from .json_schema import schema_to_gbnf

OPEN, CLOSE = "<tool_call>", "</tool_call>"

_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CLOSE) + r"|$)", re.S)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)
# How a reply that may be a call begins: held back from the stream until it is clear.
_CALL_STARTS = (OPEN, "```", "{")

_BUILTIN_PROMPT = (
    "You can call functions to help answer. The functions, with JSON schemas of their "
    "parameters, are:\n<tools>\n{tools}\n</tools>\n\n"
    "To call a function, reply with only this, one block per call:\n"
    "{open}\n{{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}}\n"
    "{close}\nOtherwise, answer normally.")


@dataclass
class ToolPlan:
    """What one request asks: the tools, and which call (if any) is forced."""
    tools: List[dict]
    mode: str                     # "none", "auto", "required" or "named"
    name: Optional[str] = None    # the forced function, mode "named"

    @property
    def offered(self) -> bool:
        return self.mode != "none" and bool(self.tools)

    @property
    def names(self) -> List[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")


def plan(tools: Optional[list], tool_choice: Any, functions: Optional[list] = None,
         function_call: Any = None) -> ToolPlan:
    """Check tools/tool_choice (or the legacy functions/function_call) and
    say what they ask for."""
    if functions is not None:
        if tools is not None:
            raise InvalidArgumentError("give tools or functions, not both")
        tools = [{"type": "function", "function": f} for f in functions]
    if function_call is not None:
        if tool_choice is not None:
            raise InvalidArgumentError("give tool_choice or function_call, not both")
        tool_choice = (function_call if isinstance(function_call, str)
                       else {"type": "function", "function": function_call})
    tools = [_checked_tool(t, i) for i, t in enumerate(tools or [])]
    names = [t["function"]["name"] for t in tools]
    if tool_choice is None:
        return ToolPlan(tools, "auto" if tools else "none")
    if tool_choice in ("none", "auto", "required"):
        if tool_choice == "required" and not tools:
            raise InvalidArgumentError('tool_choice "required" needs tools')
        return ToolPlan(tools, tool_choice)
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidArgumentError('tool_choice must be "none", "auto", "required" or '
                                   '{"type": "function", "function": {"name": ...}}, got '
                                   f"{tool_choice!r}")
    if name not in names:
        raise InvalidArgumentError(f"tool_choice names {name!r}, which is not among the tools "
                                   f"({', '.join(names) or 'none given'})")
    return ToolPlan(tools, "named", name)


def _checked_tool(tool: Any, i: int) -> dict:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" \
            or not isinstance(tool.get("function"), dict):
        raise InvalidArgumentError(f"tools[{i}] must be {{\"type\": \"function\", "
                                   f"\"function\": {{\"name\": ..., \"parameters\": ...}}}}")
    function = tool["function"]
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise InvalidArgumentError(f"tools[{i}].function needs a name")
    params = function.get("parameters", {"type": "object"})
    if not isinstance(params, dict):
        raise InvalidArgumentError(f"tools[{i}].function.parameters must be a JSON schema object")
    return {"type": "function", "function": {**function, "parameters": params}}


def template_knows_tools(template: Optional[str]) -> bool:
    return template is not None and "tools" in template


def prepared_messages(messages: Iterable[dict], plan: ToolPlan, native: bool) -> List[dict]:
    """The conversation as the formatter should see it. native: the
    template renders tools, calls and results itself (it gets call
    arguments as objects, as its tojson expects); otherwise the built-in
    format is written into plain system/assistant/user turns."""
    out = []
    for message in messages:
        if not isinstance(message, dict):
            out.append(message)  # the formatter names the mistake
            continue
        calls = message.get("tool_calls") or []
        if native:
            if calls:
                message = {**message, "tool_calls": [_with_object_arguments(c) for c in calls]}
        elif calls:
            text = "\n".join(_call_text(c) for c in calls)
            content = message.get("content") or ""
            message = {"role": "assistant", "content": f"{content}\n{text}" if content else text}
        elif message.get("role") == "tool":
            message = {"role": "user",
                       "content": f"<tool_response>\n{message.get('content') or ''}\n"
                                  "</tool_response>"}
        out.append(message)
    if plan.offered and not native:
        out = _with_builtin_tools_prompt(out, plan.tools)
    return out


def _with_object_arguments(call: dict) -> dict:
    function = dict(call.get("function") or call)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except ValueError:
            pass  # not JSON: the template shows the text as it is
    return {**call, "function": function} if "function" in call else function


def _call_text(call: dict) -> str:
    function = _with_object_arguments(call).get("function", call)
    body = json.dumps({"name": function.get("name"), "arguments": function.get("arguments", {})},
                      ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def _with_builtin_tools_prompt(messages: List[dict], tools: List[dict]) -> List[dict]:
    listing = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    text = _BUILTIN_PROMPT.format(tools=listing, open=OPEN, close=CLOSE)
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        return [{**first, "content": f"{first.get('content') or ''}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def call_grammar(plan: ToolPlan) -> str:
    """GBNF for one tool call block whose name is a permitted function and
    whose arguments validate against that function's parameter schema."""
    functions = [t["function"] for t in plan.tools
                 if plan.mode != "named" or t["function"]["name"] == plan.name]
    schema = {"anyOf": [{"type": "object",
                         "properties": {"name": {"const": f["name"]},
                                        "arguments": f["parameters"]},
                         "required": ["name", "arguments"]} for f in functions]}
    return schema_to_gbnf(schema, before=OPEN + "\n", after="\n" + CLOSE)


def parse_calls(text: str, names: Iterable[str] = ()) -> Optional[List[dict]]:
    """OpenAI tool_calls from a reply holding <tool_call> blocks; None when
    it holds none, or one that is not a well-formed call. Small models also
    answer with the bare call object, alone or in a ```json fence: a whole
    reply that is {"name": <one of `names`>, "arguments": {...}} counts too."""
    bodies = [m.group(1) for m in _CALL.finditer(text)]
    if not bodies:
        bare = _FENCE.fullmatch(text.strip())
        body = bare.group(1) if bare else text.strip()
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        if not isinstance(parsed, dict) or parsed.get("name") not in set(names) \
                or not isinstance(parsed.get("arguments"), dict):
            return None
        bodies = [body]
    calls = []
    for text_of_call in bodies:
        try:
            body = json.loads(text_of_call)
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return None
        arguments = body.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": body["name"], "arguments": arguments}})
    return calls or None


def _content_before_calls(text: str) -> Optional[str]:
    content = text[:text.find(OPEN)].strip() if OPEN in text else ""
    return content or None


def with_tool_calls(response: Dict[str, Any], plan: ToolPlan) -> Dict[str, Any]:
    """A chat.completion whose reply holds tool calls, reshaped: the message
    gets `tool_calls` (content: the text before them, else None) and the
    finish_reason becomes "tool_calls"."""
    choice = response["choices"][0]
    text = choice["message"]["content"] or ""
    calls = parse_calls(text, plan.names)
    if calls is None:
        return response
    message = {"role": "assistant", "content": _content_before_calls(text), "tool_calls": calls}
    return {**response, "choices": [{**choice, "message": message,
                                     "finish_reason": "tool_calls"}]}


def stream_with_tool_calls(chunks: Iterable[Dict[str, Any]],
                           plan: ToolPlan) -> Iterator[Dict[str, Any]]:
    """chat.completion.chunks with tool calls as tool_calls deltas. Content
    streams as it comes until a <tool_call> could be starting; from there
    the text is held, and at the end becomes one delta per call (id, type,
    name and empty arguments, then the arguments) and finish_reason
    "tool_calls", or, if it is not a well-formed call after all, content."""
    held, last = "", None
    for chunk in chunks:
        choice = chunk["choices"][0]
        delta = choice["delta"]
        if choice["finish_reason"] is not None:
            held += delta.get("content") or ""
            last = chunk
            break
        if "content" not in delta:  # the role delta
            yield chunk
            continue
        held += delta["content"]
        if OPEN in held or _starts_like_call(held) or _ends_with_open_prefix(held):
            continue  # a call is, or may be, starting: wait (held only grows meanwhile)
        yield {**chunk, "choices": [{**choice, "delta": {"content": held}}]}
        held = ""
    if last is not None:
        yield from _final_chunks(last, held, plan)


def _starts_like_call(text: str) -> bool:
    start = text.lstrip()
    return bool(start) and any(start.startswith(s) or s.startswith(start) for s in _CALL_STARTS)


def _ends_with_open_prefix(text: str) -> bool:
    return any(text.endswith(OPEN[:n]) for n in range(1, len(OPEN)))


def _final_chunks(last: Dict[str, Any], held: str, plan: ToolPlan) -> Iterator[Dict[str, Any]]:
    choice = last["choices"][0]
    calls = parse_calls(held, plan.names) if choice["finish_reason"] == "stop" else None

    def chunk(delta, finish=None):
        return {**last, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    if calls is None:
        if held:
            yield chunk({"content": held})
        yield chunk({}, choice["finish_reason"])
        return
    content = _content_before_calls(held)
    if content:
        yield chunk({"content": content})
    for i, call in enumerate(calls):
        function = call["function"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": function["name"], "arguments": ""}}]})
        yield chunk({"tool_calls": [{"index": i,
                                     "function": {"arguments": function["arguments"]}}]})
    yield chunk({}, "tool_calls")
