"""The sandbox chat templates render in (see llamalite.chat's docstring):
Jinja2's ImmutableSandboxedEnvironment, with the generated code checking a
deadline in every block body and every step that can build a large value
measured first against a size budget. Imported when the first template is
compiled, not with llamalite: jinja2 takes ~40 ms to import.
"""
from __future__ import annotations

import functools
import itertools
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterable, Optional

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .chat import MAX_TEMPLATE_CHARS, RENDER_SECONDS, _tojson
from .errors import ChatTemplateError

#: Integers a template computes stay below this many bits (2**65536 already
#: has ~20k digits; chat templates count messages).
_MAX_INT_BITS = 1 << 16
#: Counts that make a filter loop in Python (batch, slice), like the sandbox's
#: own bound on range().
_MAX_COUNT = 100_000
#: JSON indents and separators wider than this are refused: the output grows
#: by the width per line and nesting level.
_MAX_JSON_PAD = 16


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


class ChatSandbox(ImmutableSandboxedEnvironment):
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
def as_template_errors(doing: str):
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
