"""Chat prompts and chat-shaped results.

- `Jinja2ChatFormatter` renders a GGUF file's own `tokenizer.chat_template` as
  Hugging Face's apply_chat_template and llama-cpp-python do (same variables,
  globals, filters and whitespace rules), in a sandbox with a time and size
  budget.
- `BuiltinChatFormatter` is one of llama-cpp-python's `chat_format=` formats,
  for files without a template or users who name one; `guess_chat_format`
  is llama-cpp-python's rule for which format a file gets; `chat_formatter`
  builds the formatter for a name.
- `completion_to_chat` / `completion_chunks_to_chat` turn `text_completion`
  results into OpenAI `chat.completion` dicts and `chat.completion.chunk`
  streams with llama-cpp-python's exact keys.

A chat template comes with a downloaded file, so it is untrusted code. Jinja2's
ImmutableSandboxedEnvironment keeps it away from Python internals and from
mutating its arguments, but not from running forever or building a terabyte
string. So the code Jinja generates is compiled with a check of the render's
deadline at the top of every block body (each loop iteration, macro call and
branch), and every step that can build a large value in one go (`+ * ** %`,
`~`, filters, method calls, printed values) is measured first against a size
budget. A template that raises, overruns, or reaches for what the sandbox
forbids fails with `ChatTemplateError`, having run about the time budget at
most (plus one step, which the size budget bounds) and built a few times the
size budget at most.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Iterable, Optional, Union

from .errors import InvalidArgumentError

#: Seconds a template may take to render. Real chat templates render a
#: conversation in about a millisecond.
RENDER_SECONDS = 1.0
#: The most characters any value a template builds may have, its output
#: included: about a million tokens, past any context window llamalite runs,
#: yet small enough that a hostile template's worst step stays in the tens of
#: megabytes.
MAX_TEMPLATE_CHARS = 1 << 22
@dataclasses.dataclass
class ChatFormatterResponse:
    """A conversation formatted for completion.

    prompt: the text to tokenize (with special-token parsing). stop: strings
    that end the assistant's turn in this format. added_special: the prompt
    already holds the BOS text the format wants, so tokenize it without
    adding BOS; when False, add BOS as the vocabulary asks (llama-cpp-python's
    `add_bos=not added_special`).
    """
    prompt: str
    stop: list[str] = dataclasses.field(default_factory=list)
    added_special: bool = False


# -- messages ---------------------------------------------------------------

def _normalized(messages: Iterable[Mapping]) -> list[Mapping]:
    """The messages as templates read them: content given as a list of text
    parts becomes one string; every other key passes through unchanged."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise InvalidArgumentError(f"messages[{i}] is not a message (a dict with a 'role')")
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            message = {**message, "content": _joined_text(content, i)}
        out.append(message)
    return out


def _joined_text(parts: Iterable, i: int) -> str:
    """OpenAI content parts as one text, joined by newlines as llama.cpp
    joins them (no newline before the first non-empty text)."""
    text = ""
    for part in parts:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise InvalidArgumentError(
                f"messages[{i}]: a content part of type {kind!r}: only text parts "
                "(type 'text' with a string 'text') can be formatted")
        text += ("\n" if text else "") + part["text"]
    return text


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    """Hugging Face's tojson for chat templates: plain json.dumps, keeping
    non-ASCII text and key order (Jinja's own escapes HTML and sorts keys)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


# -- formatters -------------------------------------------------------------

class Jinja2ChatFormatter:
    """Formats conversations with a Jinja chat template (a GGUF file's
    `tokenizer.chat_template`), as llama-cpp-python's Jinja2ChatFormatter:
    the template sees `messages`, `bos_token`, `eos_token`,
    `add_generation_prompt`, `tools`, `tool_choice`, `functions`,
    `function_call` and any extra keyword; the prompt is exactly what the
    template renders (it adds BOS text itself if it wants it), and the stop
    string is the EOS text.

    timeout and max_chars bound each compile and render (see the module
    docstring). Raises ChatTemplateError when the template does not compile.
    """

    def __init__(self, template: str, eos_token: str = "", bos_token: str = "",
                 add_generation_prompt: bool = True, *,
                 timeout: float = RENDER_SECONDS, max_chars: int = MAX_TEMPLATE_CHARS):
        if not isinstance(template, str):
            raise InvalidArgumentError(
                f"a chat template is a string, not {type(template).__name__}")
        self.template = template
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.add_generation_prompt = add_generation_prompt
        self.timeout = timeout
        self.max_chars = max_chars
        from .chat_sandbox import ChatSandbox, as_template_errors   # imports jinja2: ~40 ms

        self._env = ChatSandbox()
        with as_template_errors("compiling"), self._env.budgeted(timeout, max_chars):
            self._template = self._env.from_string(template)

    def __call__(self, messages: Iterable[Mapping], *, tools: Optional[list] = None,
                 tool_choice: Any = None, functions: Optional[list] = None,
                 function_call: Any = None, **kwargs: Any) -> ChatFormatterResponse:
        """The prompt for `messages` (OpenAI-shaped dicts: role, content as a
        string or a list of text parts, name, tool_calls, tool_call_id)."""
        variables = {**kwargs, "messages": _normalized(messages),
                     "bos_token": self.bos_token, "eos_token": self.eos_token,
                     "add_generation_prompt": self.add_generation_prompt,
                     "tools": tools, "tool_choice": tool_choice,
                     "functions": functions, "function_call": function_call}
        from .chat_sandbox import as_template_errors   # loaded by __init__ already

        with as_template_errors("rendering"), \
                self._env.budgeted(self.timeout, self.max_chars) as budget:
            pieces, n = [], 0
            for piece in self._template.generate(variables):
                n += len(piece)
                budget.check(n)
                pieces.append(piece)
        # llama-cpp-python stops on [eos_token] even when the vocabulary has
        # no EOS and the text is "", which would stop at once.
        return ChatFormatterResponse("".join(pieces), [self.eos_token] if self.eos_token else [],
                                     added_special=True)


# llama-cpp-python's built-in formats (llama_chat_format.py), prompt for
# prompt, quirks included: code written for llama_cpp should get the same
# text. Each takes the messages and gives the prompt; a role the format has no
# label for (tool, and system except in llama-3) is left out.

Turns = list[tuple[str, Optional[str]]]  # (role label, content or None)


def _system_text(messages: list[Mapping]) -> str:
    """The first system message's content, '' without one."""
    for message in messages:
        if message["role"] == "system":
            return message.get("content") or ""
    return ""


def _turns(messages: list[Mapping], labels: dict[str, str]) -> Turns:
    """(label, content) of each message with a labelled role; content that is
    not a string (None beside tool_calls) is None."""
    return [(labels[m["role"]], m.get("content") if isinstance(m.get("content"), str) else None)
            for m in messages if m["role"] in labels]


def _layout_chatml(system: str, turns: Turns, sep: str) -> str:
    text = system + sep + "\n" if system else ""
    return text + "".join(f"{role}\n{content}{sep}\n" if content else f"{role}\n"
                          for role, content in turns)


def _layout_plain(system: str, turns: Turns, sep: str) -> str:
    return system + "".join(f"{role}{content}{sep}" if content else role
                            for role, content in turns)


def _layout_colon_two(system: str, turns: Turns, seps: tuple[str, str]) -> str:
    """Turn i ends with seps[i % 2], counted over turns, not roles."""
    return system + seps[0] + "".join(
        f"{role}: {content}{seps[i % 2]}" if content else f"{role}:"
        for i, (role, content) in enumerate(turns))


def _format_llama2(messages: list[Mapping]) -> str:
    system = _system_text(messages)
    if system:
        system = f"[INST] <<SYS>>\n{system}\n<</SYS>>"
    seps = (" ", "</s>")
    text = system + " "
    for i, (role, content) in enumerate(_turns(messages, {"user": "<s>[INST]",
                                                          "assistant": "[/INST]"})):
        if system and i == 0:  # the first turn joins the system block, unlabelled
            text += (content or "") + seps[0]
        elif content:
            text += f"{role}{content} {seps[i % 2]}"
        else:
            text += role + " "
    return text + "[/INST]"


def _format_llama3(messages: list[Mapping]) -> str:
    labels = {role: f"<|start_header_id|>{role}<|end_header_id|>\n\n"
              for role in ("system", "user", "assistant")}
    turns = _turns(messages, labels) + [(labels["assistant"], None)]
    return _layout_plain("", turns, "<|eot_id|>")


def _format_chatml(messages: list[Mapping], default_system: str = "") -> str:
    system = "<|im_start|>system\n" + (_system_text(messages) or default_system)
    turns = _turns(messages, {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"})
    return _layout_chatml(system, turns + [("<|im_start|>assistant", None)], "<|im_end|>")


def _format_mistral_instruct(messages: list[Mapping]) -> str:
    text = ""
    for message in messages:
        content = message.get("content")
        if message["role"] == "user" and isinstance(content, str):
            text += "[INST] " + content
        elif message["role"] == "assistant" and content is not None:
            text += f" [/INST]{content}</s>"
    return text + " [/INST]"


def _format_gemma(messages: list[Mapping]) -> str:
    turns = _turns(messages, {"user": "<start_of_turn>user\n",
                              "assistant": "<start_of_turn>model\n"})
    return _layout_plain("", turns + [("<start_of_turn>model\n", None)], "<end_of_turn>\n")


def _format_alpaca(messages: list[Mapping]) -> str:
    turns = _turns(messages, {"user": "### Instruction", "assistant": "### Response"})
    return _layout_colon_two(_system_text(messages), turns, ("\n\n", "</s>"))


_VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's "
                  "questions.")


def _format_vicuna(messages: list[Mapping]) -> str:
    turns = _turns(messages, {"user": "USER", "assistant": "ASSISTANT"})
    return _layout_colon_two(_VICUNA_SYSTEM, turns + [("ASSISTANT", None)], (" ", "</s>"))


def _format_zephyr(messages: list[Mapping]) -> str:
    turns = _turns(messages, {"user": "<|user|>\n", "assistant": "<|assistant|>\n"})
    return _layout_chatml("<|system|>\n" + _system_text(messages),
                          turns + [("<|assistant|>\n", None)], "</s>")


#: name -> (prompt maker, stop strings), as llama-cpp-python's chat_format names them.
_BUILTIN_FORMATS: dict[str, tuple[Callable[[list], str], list[str]]] = {
    "llama-2": (_format_llama2, []),
    "llama-3": (_format_llama3, ["<|eot_id|>"]),
    "alpaca": (_format_alpaca, []),
    "qwen": (functools.partial(_format_chatml, default_system="You are a helpful assistant."),
             ["<|endoftext|>"]),
    "vicuna": (_format_vicuna, []),
    "zephyr": (_format_zephyr, ["</s>"]),
    "chatml": (_format_chatml, ["<|im_end|>"]),
    "mistral-instruct": (_format_mistral_instruct, ["</s>"]),
    "gemma": (_format_gemma, ["<end_of_turn>\n"]),
}
#: The built-in chat_format names.
CHAT_FORMATS = tuple(_BUILTIN_FORMATS)


class BuiltinChatFormatter:
    """One of llama-cpp-python's built-in chat formats by name (CHAT_FORMATS).
    Its prompt holds no BOS: the tokenizer adds it as the vocabulary asks."""

    def __init__(self, name: str):
        if name not in _BUILTIN_FORMATS:
            raise InvalidArgumentError(f"unknown chat format {name!r}; the built-in ones are "
                                       f"{', '.join(CHAT_FORMATS)}")
        self.name = name
        self._format, self._stop = _BUILTIN_FORMATS[name]

    def __call__(self, messages: Iterable[Mapping], **kwargs: Any) -> ChatFormatterResponse:
        """The prompt for `messages`; keywords (tools, ...) are accepted and
        ignored, as llama-cpp-python's formats ignore them."""
        return ChatFormatterResponse(self._format(_normalized(messages)), list(self._stop))


ChatFormatter = Union[Jinja2ChatFormatter, BuiltinChatFormatter]


# -- which format a file gets -----------------------------------------------

# Templates llama-cpp-python recognizes by their exact text and maps to a
# built-in format (the Hugging Face templates of OpenHermes-2.5, Mistral- and
# Mixtral-Instruct, and Llama-3-Instruct).
_CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")
_MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token%s}}{% else %}{{ raise_exception('Only user and "
    "assistant roles are supported!') }}{% endif %}{% endfor %}")
_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
_KNOWN_TEMPLATES = {
    _CHATML_TEMPLATE: "chatml",
    _MISTRAL_TEMPLATE.replace("%s", " + ' ' "): "mistral-instruct",
    _MISTRAL_TEMPLATE.replace("%s", ""): "mistral-instruct",  # Mixtral's
    _LLAMA3_TEMPLATE: "llama-3",
}

_TEMPLATE_KEY = "tokenizer.chat_template"


def chat_templates(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The chat templates in a GGUF file's metadata, under the chat_format
    names llama-cpp-python gives them: "chat_template.default" for
    tokenizer.chat_template, "chat_template.<name>" for
    tokenizer.chat_template.<name>."""
    templates = {key[len("tokenizer."):]: value for key, value in metadata.items()
                 if key.startswith(_TEMPLATE_KEY + ".") and isinstance(value, str)}
    if isinstance(metadata.get(_TEMPLATE_KEY), str):
        templates["chat_template.default"] = metadata[_TEMPLATE_KEY]
    return templates


def guess_chat_format(metadata: Mapping[str, Any]) -> str:
    """The chat_format llama-cpp-python's Llama uses when given none: a
    built-in format when the file's template is one it knows by heart,
    else the file's template ("chat_template.default"), and "llama-2" for a
    file without one (it does not guess from the architecture)."""
    template = chat_templates(metadata).get("chat_template.default")
    if template is None:
        return "llama-2"
    return _KNOWN_TEMPLATES.get(template, "chat_template.default")


def chat_formatter(chat_format: Optional[str], metadata: Mapping[str, Any], *,
                   bos_token: str = "", eos_token: str = "", **limits: Any) -> ChatFormatter:
    """The formatter for `chat_format` (None: `guess_chat_format`): one of the
    file's templates by its `chat_templates` name, else a built-in format.
    bos_token/eos_token are the texts of the vocabulary's BOS and EOS tokens;
    limits (timeout, max_chars) go to Jinja2ChatFormatter."""
    if chat_format is None:
        chat_format = guess_chat_format(metadata)
    templates = chat_templates(metadata)
    if chat_format in templates:
        return Jinja2ChatFormatter(templates[chat_format], eos_token, bos_token, **limits)
    if chat_format not in _BUILTIN_FORMATS:
        offered = ", ".join([*templates, *CHAT_FORMATS])
        raise InvalidArgumentError(f"unknown chat_format {chat_format!r}; this model offers "
                                   f"{offered}")
    return BuiltinChatFormatter(chat_format)


# -- text_completion -> chat.completion -------------------------------------

def _chat_logprobs(logprobs: Optional[Mapping]) -> Optional[dict]:
    """Completion logprobs (parallel lists) as chat logprobs (one entry per token)."""
    if logprobs is None:
        return None
    return {
        "content": [
            {"token": token, "bytes": None, "logprob": logprob,
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                              for t, lp in (top or {}).items()]}
            for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                                           logprobs["top_logprobs"])],
        "refusal": None,
    }


def completion_to_chat(completion: Mapping) -> dict:
    """A `text_completion` dict as a `chat.completion` dict: id "chat" + the
    completion's "cmpl-..." id, one choice holding the assistant's message,
    the usage unchanged."""
    choice = completion["choices"][0]
    return {
        "id": "chat" + completion["id"],
        "object": "chat.completion",
        "created": completion["created"],
        "model": completion["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": choice["text"]},
            "logprobs": _chat_logprobs(choice["logprobs"]),
            "finish_reason": choice["finish_reason"],
        }],
        "usage": completion["usage"],
    }


def completion_chunks_to_chat(chunks: Iterable[Mapping]) -> Iterator[dict]:
    """`text_completion` stream chunks as `chat.completion.chunk`s: first a
    chunk whose delta is {"role": "assistant"}, then one per completion chunk
    with {"content": text}; the chunk that carries the finish_reason has an
    empty delta (or the content, should it carry text)."""
    for i, chunk in enumerate(chunks):
        choice = chunk["choices"][0]
        head = {"id": "chat" + chunk["id"], "model": chunk["model"],
                "created": chunk["created"], "object": "chat.completion.chunk"}
        if i == 0:
            yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                        "logprobs": None, "finish_reason": None}]}
        finished = choice["finish_reason"] is not None
        delta = {} if finished and not choice["text"] else {"content": choice["text"]}
        yield {**head, "choices": [{"index": 0, "delta": delta,
                                    "logprobs": _chat_logprobs(choice["logprobs"]),
                                    "finish_reason": choice["finish_reason"]}]}
