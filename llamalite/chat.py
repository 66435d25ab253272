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
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterable, Optional, Union

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError, InvalidArgumentError

#: Seconds a template may take to render. Real chat templates render a
#: conversation in about a millisecond.
RENDER_SECONDS = 1.0
#: The most characters any value a template builds may have, its output
#: included: about a million tokens, past any context window llamalite runs,
#: yet small enough that a hostile template's worst step stays in the tens of
#: megabytes.
MAX_TEMPLATE_CHARS = 1 << 22
#: Integers a template computes stay below this many bits (2**65536 already
#: has ~20k digits; chat templates count messages).
_MAX_INT_BITS = 1 << 16
#: Counts that make a filter loop in Python (batch, slice), like the sandbox's
#: own bound on range().
_MAX_COUNT = 100_000
#: JSON indents and separators wider than this are refused: the output grows
#: by the width per line and nesting level.
_MAX_JSON_PAD = 16


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


# -- the sandbox's budget ---------------------------------------------------

class _Budget:
    """One compile or render's limits: a deadline, and the most characters a
    value may turn into when printed."""

    def __init__(self, seconds: float, max_chars: int):
        self.seconds = seconds
        self.max_chars = max_chars
        self.deadline = time.monotonic() + seconds
        # id -> (container, size): lists, tuples and dicts cannot change in the
        # immutable sandbox, so each is measured once (keeping it alive keeps
        # its id from being reused).
        self._sizes: dict[int, tuple[Any, int]] = {}

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ChatTemplateError(f"the chat template ran longer than {self.seconds:g} s")

    def check(self, chars: int) -> None:
        if chars > self.max_chars:
            raise ChatTemplateError(
                f"the chat template would build a text of more than {self.max_chars} characters")

    def size(self, value: Any) -> int:
        """About len(str(value)) (exact for strings, a lower bound for
        containers); raises as soon as it passes the budget."""
        if isinstance(value, (str, bytes, bytearray)):
            n = len(value)
        elif isinstance(value, int):
            if value.bit_length() > _MAX_INT_BITS:
                raise ChatTemplateError(
                    f"the chat template built an integer of more than {_MAX_INT_BITS} bits")
            n = value.bit_length() * 3 // 10 + 1
        elif isinstance(value, (float, jinja2.Undefined)) or value is None:
            n = 1
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            return self._container_size(value)
        else:  # anything else prints as its repr (a Namespace, a dict view, ...)
            n = len(repr(value))
        self.check(n)
        return n

    def _container_size(self, value) -> int:
        known = self._sizes.get(id(value))
        if known is not None:
            return known[1]
        n = len(value)
        self.check(n)
        parts = itertools.chain.from_iterable(value.items()) if isinstance(value, dict) else value
        for part in parts:
            n += self.size(part)
            self.check(n)
        self._sizes[id(value)] = (value, n)
        return n

    def collect(self, items: Iterable) -> list:
        """An iterator's items as a list, refused once they grow past the budget."""
        out, n = [], 0
        for item in items:
            n += self.size(item) + 1
            self.check(n)
            out.append(item)
        return out

    def collected(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Call arguments with iterators (lazy map/select results) collected,
        so their size is known before the call consumes them."""
        args = tuple(self.collect(a) if isinstance(a, Iterator) else a for a in args)
        kwargs = {k: self.collect(v) if isinstance(v, Iterator) else v for k, v in kwargs.items()}
        for value in itertools.chain(args, kwargs.values()):
            self.size(value)
        return args, kwargs


def _int(value: Any) -> int:
    """An integer argument as a count or width (others fail in the call itself)."""
    return value if isinstance(value, int) else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# Sizes of what one step would build, for the steps whose result can outgrow
# their inputs by a factor the template chooses. Each raises via the budget.

_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d*)(?:\.(\*|\d*))?")
_BRACE_SPEC = re.compile(r"\{[^{}:]*:([^{}]*)\}")
_NESTED_BRACE = re.compile(r"\{[^{}]*\{")


def _arg_ints(args: Any) -> int:
    values = args.values() if isinstance(args, Mapping) else \
        args if isinstance(args, (list, tuple)) else (args,)
    return sum(abs(v) for v in values if isinstance(v, int))


def _percent_size(b: _Budget, fmt: Any, args: Any) -> None:
    """`fmt % args`: its text, the arguments' text, and every width and precision."""
    pad, star = 0, False
    for field in _PERCENT_FIELD.finditer(_text(fmt)):
        for part in field.groups():
            star |= part == "*"
            pad += int(part) if part and part != "*" else 0
    b.check(b.size(fmt) + b.size(args) + pad + (_arg_ints(args) if star else 0))


def _format_size(b: _Budget, fmt: Any, args: tuple, kwargs: dict) -> None:
    """`fmt.format(*args, **kwargs)`: as for %, with widths in {...:spec}."""
    fmt = _text(fmt)
    pad = sum(int(d) for spec in _BRACE_SPEC.findall(fmt) for d in re.findall(r"\d+", spec))
    nested = _arg_ints(args) + _arg_ints(kwargs) if _NESTED_BRACE.search(fmt) else 0
    b.check(len(fmt) + b.size(args) + b.size(kwargs) + pad + nested)


def _replace_size(b: _Budget, s: Any, old: Any, new: Any, count: Any = -1) -> None:
    s, old, new = (v if isinstance(v, (bytes, bytearray)) else _text(v) for v in (s, old, new))
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    b.check(len(s) + hits * len(new))


def _join_size(b: _Budget, sep: Any, items: Any) -> None:
    b.check(b.size(items) + len(_text(sep)) * len(items))


def _translate_size(b: _Budget, s: Any, table: Any) -> None:
    values = table.values() if isinstance(table, Mapping) else \
        table if isinstance(table, (list, tuple)) else ()
    widest = max((b.size(v) for v in values), default=1)
    b.check(len(s) * max(widest, 1))


def _pad_size(b: _Budget, s: Any, width: Any, fillchar: Any = " ") -> None:
    b.check(max(b.size(s), _int(width)))


def _expandtabs_size(b: _Budget, s: Any, tabsize: Any = 8) -> None:
    tab = b"\t" if isinstance(s, (bytes, bytearray)) else "\t"
    b.check(len(s) + s.count(tab) * max(_int(tabsize), 0))


def _to_bytes_size(b: _Budget, n: Any, length: Any = 1, byteorder: Any = "big", *,
                   signed: Any = False) -> None:
    b.check(_int(length))


#: Methods of str/bytes/int that can outgrow their inputs, by name; each
#: check gets the budget, the method's owner and the call's arguments.
_METHOD_CHECKS: dict[str, Callable] = {
    "center": _pad_size, "ljust": _pad_size, "rjust": _pad_size, "zfill": _pad_size,
    "expandtabs": _expandtabs_size, "replace": _replace_size, "join": _join_size,
    "translate": _translate_size, "to_bytes": _to_bytes_size,
    "format": lambda b, fmt, *args, **kwargs: _format_size(b, fmt, args, kwargs),
    "format_map": lambda b, fmt, mapping=None: _format_size(b, fmt, (), mapping or {}),
}


def _method_check(obj: Any) -> tuple[Optional[Callable], Any]:
    """The check for calling `obj` and the object it is a method of, when it
    is one of _METHOD_CHECKS' methods of a str, bytes or int."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox hands out str.format wrapped
    owner = getattr(target, "__self__", None)
    if isinstance(owner, (str, bytes, bytearray, int)):
        return _METHOD_CHECKS.get(getattr(target, "__name__", "")), owner
    return None, None


def _center_size(b: _Budget, value: Any, width: Any = 80) -> None:
    b.check(max(b.size(value), _int(width)))


def _indent_size(b: _Budget, s: Any, width: Any = 4, first: Any = False,
                 blank: Any = False) -> None:
    pad = len(width) if isinstance(width, str) else _int(width)
    b.check(b.size(s) + (_text(s).count("\n") + 1) * pad)


def _wordwrap_size(b: _Budget, s: Any, width: Any = 79, break_long_words: Any = True,
                   wrapstring: Any = None, break_on_hyphens: Any = True) -> None:
    # Each character could start a new line; real wraps are much rarer.
    b.check(b.size(s) + (b.size(s) + 1) * len(_text(wrapstring or "\n")))


def _urlize_size(b: _Budget, value: Any, trim_url_limit: Any = None, nofollow: Any = False,
                 target: Any = None, rel: Any = None, extra_schemes: Any = None) -> None:
    b.check(b.size(value) * (1 + len(_text(target or "")) + len(_text(rel or "")) + 40))


def _check_count(count: Any) -> None:
    if _int(count) > _MAX_COUNT:
        raise ChatTemplateError(f"the chat template asked a filter for {count} pieces "
                                f"(at most {_MAX_COUNT})")


def _batch_check(b: _Budget, value: Any, linecount: Any, fill_with: Any = None) -> None:
    _check_count(linecount)


def _slice_check(b: _Budget, value: Any, slices: Any, fill_with: Any = None) -> None:
    _check_count(slices)


def _sum_size(b: _Budget, iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if isinstance(start, (list, tuple, str)):  # sequence sums copy quadratically
        b.check(len(iterable) * b.size(iterable))


def _tojson_check(b: _Budget, value: Any, ensure_ascii: Any = False, indent: Any = None,
                  separators: Any = None, sort_keys: Any = False) -> None:
    widths = [len(indent) if isinstance(indent, str) else _int(indent)]
    widths += [len(_text(s)) for s in (separators or ())]
    if max(widths) > _MAX_JSON_PAD:
        raise ChatTemplateError(f"the chat template asked tojson for indents or separators "
                                f"wider than {_MAX_JSON_PAD} characters")


#: Filters that can outgrow their inputs, with the check each gets first
#: (the budget, then the filter's arguments without Jinja's context argument;
#: the parameters keep the filters' names, since templates may pass keywords).
_FILTER_CHECKS: dict[str, Callable] = {
    "center": _center_size, "indent": _indent_size, "wordwrap": _wordwrap_size,
    "replace": _replace_size, "urlize": _urlize_size,
    "join": lambda b, value, d="", attribute=None: _join_size(b, d, value),
    "format": lambda b, value, *args, **kwargs: _percent_size(b, value, kwargs or args),
    "batch": _batch_check, "slice": _slice_check, "sum": _sum_size, "tojson": _tojson_check,
}


# -- the sandbox ------------------------------------------------------------

class _BudgetedCodeGenerator(CodeGenerator):
    """Jinja's compiler with two checks written into the Python it generates:
    every block body starts by checking the deadline (so no loop or recursion
    outlives it), and `~` measures its parts before joining them."""

    def blockvisit(self, nodes, frame) -> None:
        self.writeline("environment.budget().check_time()")
        super().blockvisit(nodes, frame)

    def visit_Concat(self, node, frame) -> None:
        if frame.eval_ctx.volatile:  # the same join Jinja would pick
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.budgeted_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GenerationTag(Extension):
    """Hugging Face's `{% generation %}...{% endgeneration %}`, which marks the
    assistant's text for training masks; a prompt just renders the body."""
    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: Any) -> None:
    raise ChatTemplateError(f"the chat template raised: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    """Hugging Face's tojson for chat templates: plain json.dumps, keeping
    non-ASCII text and key order (Jinja's own escapes HTML and sorts keys)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """The environment Hugging Face renders chat templates in (trim_blocks,
    lstrip_blocks, loop controls, the generation tag, raise_exception,
    strftime_now, its tojson), with every hook the sandbox offers measuring
    against the current `_Budget`."""
    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self):
        super().__init__(trim_blocks=True, lstrip_blocks=True, finalize=self._finalize,
                         extensions=[_GenerationTag, loopcontrols])
        self._local = threading.local()
        # lipsum(10**6) would loop in Python for minutes, and no chat template
        # needs lorem ipsum.
        del self.globals["lipsum"]
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        filters = dict(self.filters, tojson=_tojson)
        self.filters = {name: self._budgeted_filter(f, _FILTER_CHECKS.get(name))
                        for name, f in filters.items()}

    @contextmanager
    def budgeted(self, seconds: float, max_chars: int):
        """Compile or render under a fresh budget (Jinja also runs filters
        while compiling, to fold constants)."""
        self._local.budget = _Budget(seconds, max_chars)
        try:
            yield self._local.budget
        finally:
            self._local.budget = None

    def budget(self) -> _Budget:
        budget = getattr(self._local, "budget", None)
        return budget if budget is not None else _Budget(RENDER_SECONDS, MAX_TEMPLATE_CHARS)

    # hooks the generated code calls
    def budgeted_concat(self, join: Callable, parts: tuple) -> str:
        budget = self.budget()
        budget.check(sum(budget.size(p) for p in parts))
        return join(parts)

    def _finalize(self, value: Any) -> Any:
        self.budget().size(value)  # measured before Jinja prints it
        return value

    # hooks of the sandbox
    def unsafe_undefined(self, obj: Any, attribute: str):
        raise ChatTemplateError(f"the chat template reached for {attribute!r} of a "
                                f"{type(obj).__name__} object, which the sandbox forbids")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget()
        if operator == "+" and not isinstance(left, (int, float)):
            budget.check(budget.size(left) + budget.size(right))
        elif operator == "*":
            _product_size(budget, left, right)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and left.bit_length() * right > _MAX_INT_BITS:
                raise ChatTemplateError(f"the chat template computes {left} ** {right}, "
                                        f"an integer of more than {_MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, (str, bytes)):
            _percent_size(budget, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = self.budget()
        args, kwargs = budget.collected(args, kwargs)
        check, owner = _method_check(obj)
        if check is not None:
            check(budget, owner, *args, **kwargs)
        result = super().call(context, obj, *args, **kwargs)
        budget.size(result)
        return result

    def _budgeted_filter(self, f: Callable, check: Optional[Callable]) -> Callable:
        skip = 1 if hasattr(f, "jinja_pass_arg") else 0  # context/environment first

        @functools.wraps(f)
        def budgeted(*args: Any, **kwargs: Any) -> Any:
            budget = self.budget()
            passed, (args, kwargs) = args[:skip], budget.collected(args[skip:], kwargs)
            if check is not None:
                check(budget, *args, **kwargs)
            result = f(*passed, *args, **kwargs)
            budget.size(result)
            return result
        return budgeted


def _product_size(budget: _Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise ChatTemplateError(f"the chat template multiplies integers past "
                                    f"{_MAX_INT_BITS} bits")
    elif isinstance(right, int) and not isinstance(left, (int, float)):
        budget.check(budget.size(left) * max(right, 0))
    elif isinstance(left, int) and not isinstance(right, (int, float)):
        budget.check(budget.size(right) * max(left, 0))


def _template_line(exc: BaseException) -> str:
    """' (template line N)' for the innermost template frame of a traceback
    (Jinja rewrites tracebacks to show template lines)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (template line {line})" if line else ""


@contextmanager
def _as_template_errors(doing: str):
    """Anything a template makes go wrong, as a ChatTemplateError."""
    try:
        yield
    except ChatTemplateError as e:
        raise ChatTemplateError(f"{e}{_template_line(e)}") from None
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not compile: {e.message} "
                                f"(template line {e.lineno})") from None
    except RecursionError:
        raise ChatTemplateError(f"the chat template recursed too deeply while {doing}") from None
    except MemoryError:
        raise ChatTemplateError(f"the chat template ran out of memory while {doing}") from None
    except Exception as e:
        raise ChatTemplateError(f"the chat template failed while {doing}{_template_line(e)}: "
                                f"{type(e).__name__}: {e}") from e


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
        self._env = _ChatSandbox()
        with _as_template_errors("compiling"), self._env.budgeted(timeout, max_chars):
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
        with _as_template_errors("rendering"), \
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
