"""llamalite.chat: chat templates in the sandbox, the built-in formats, the
choice of format, and chat-shaped results."""
import json
import pathlib
import threading
import time
from datetime import datetime

import pytest

from llamalite import ChatTemplateError, InvalidArgumentError, chat
from llamalite.gguf import GGUFReader
from llamalite.tokenizer import Tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "chat"
USER_HI = [{"role": "user", "content": "Hi"}]


def render(template, messages=USER_HI, **kwargs):
    limits = {k: kwargs.pop(k) for k in ("timeout", "max_chars") if k in kwargs}
    return chat.Jinja2ChatFormatter(template, "</s>", "<s>", **limits)(messages, **kwargs).prompt


# -- the real models' templates, against llama-cpp-python ---------------------

@pytest.mark.parametrize("model, fixture", [
    ("smollm2-135m-instruct", "smollm2_path"),
    ("qwen2.5-coder-0.5b-instruct", "qwen25_path"),
    ("gemma3-270m", "gemma3_path"),
])
def test_real_models_format_as_llama_cpp_python(model, fixture, request):
    """Each file gets llama-cpp-python's chat_format (its own template for
    SmolLM2 and Qwen2.5, the llama-2 fallback for Gemma 3 270M, which has
    none), the same prompt text, stop strings and BOS rule, and the prompt
    tokenizes to the same ids."""
    expected = json.loads((DATA / f"{model}.json").read_text(encoding="utf-8"))
    with GGUFReader(request.getfixturevalue(fixture)) as reader:
        metadata = dict(reader.metadata)
    assert chat.guess_chat_format(metadata) == expected["chat_format"]
    formatter = chat.chat_formatter(None, metadata, bos_token=expected["bos_token"],
                                    eos_token=expected["eos_token"])
    tokenizer = Tokenizer.from_metadata(metadata)
    assert tokenizer.token_text(tokenizer.eos_id) == expected["eos_token"]
    for case in expected["cases"]:
        result = formatter(case["messages"], tools=case.get("tools"))
        assert result.prompt == case["prompt"], case["name"]
        assert result.stop == case["stop"]
        assert result.added_special == case["added_special"]
        ids = tokenizer.encode(result.prompt, add_bos=not result.added_special, special=True)
        assert ids == case["tokens"], case["name"]


def test_content_parts_are_joined_by_newlines(qwen25_path):
    with GGUFReader(qwen25_path) as reader:
        formatter = chat.chat_formatter(None, reader.metadata, eos_token="<|im_end|>")
    parts = [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]
    as_parts = formatter([{"role": "user", "content": parts}]).prompt
    assert as_parts == formatter([{"role": "user", "content": "line one\nline two"}]).prompt
    assert chat.BuiltinChatFormatter("chatml")([{"role": "user", "content": parts}]).prompt \
        .endswith("<|im_start|>user\nline one\nline two<|im_end|>\n<|im_start|>assistant\n")


def test_messages_are_not_changed():
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}]}]
    render("{{ messages[0].content }}", messages)
    assert messages == [{"role": "user", "content": [{"type": "text", "text": "a"}]}]


@pytest.mark.parametrize("messages, what", [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "type 'image_url'"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "type 'text'"),
    (["hello"], r"messages\[0\] is not a message"),
    ([{"content": "no role"}], r"messages\[0\] is not a message"),
])
def test_bad_messages_are_refused(messages, what):
    with pytest.raises(InvalidArgumentError, match=what):
        render("{{ messages }}", messages)
    with pytest.raises(InvalidArgumentError, match=what):
        chat.BuiltinChatFormatter("chatml")(messages)


# -- the environment templates expect (Hugging Face's) ---------------------------

def test_template_variables():
    template = ("{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}|"
                "{{ tool_choice }}|{{ messages[0].role }}:{{ messages[0]['content'] }}|{{ extra }}")
    assert render(template, extra=7) == "<s>|</s>|True|None|None|user:Hi|7"
    no_prompt = chat.Jinja2ChatFormatter("{{ add_generation_prompt }}", add_generation_prompt=False)
    assert no_prompt(USER_HI).prompt == "False"


def test_whitespace_control_as_hugging_face():
    """trim_blocks drops the newline after a block tag, lstrip_blocks the
    indentation before one; output expressions keep theirs."""
    template = ("{% for m in messages %}\n    {% if m.content %}\n  {{ m.content }}\n"
                "    {% endif %}\n{% endfor %}")
    assert render(template) == "  Hi\n"


def test_loop_controls_and_generation_tag():
    messages = [{"role": "user", "content": str(i)} for i in range(5)]
    template = ("{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}"
                "{% if loop.index0 == 3 %}{% break %}{% endif %}{{ m.content }}{% endfor %}"
                "{% generation %}[{{ messages|length }}]{% endgeneration %}")
    assert render(template, messages) == "02[5]"


def test_tojson_as_hugging_face():
    """Non-ASCII and HTML characters kept, keys in their order, options passed on."""
    value = {"b": "Zürich <&>", "a": [1, None, True]}
    assert render("{{ v|tojson }}", v=value) == '{"b": "Zürich <&>", "a": [1, null, true]}'
    assert render("{{ v|tojson(indent=1) }}", v={"a": 1}) == '{\n "a": 1\n}'
    assert render("{{ v|tojson(separators=(',', ':'), sort_keys=true) }}",
                  v=value) == '{"a":[1,null,true],"b":"Zürich <&>"}'
    assert render("{{ v|tojson(ensure_ascii=true) }}", v="ü") == '"\\u00fc"'


def test_budget_checks_refuse_nothing_legitimate():
    """Every filter and method with a size check, called with keywords where
    it takes them, renders as in a plain sandbox configured as Hugging Face's."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = (
        "{{ 'ab'|center }}|{{ 'ab'|center(width=6) }}|{{ 'a\nb'|indent }}|"
        "{{ 'a\nb'|indent(width=2, first=True, blank=True) }}|{{ 'a'|indent('> ', true) }}|"
        "{{ 'aaa bbb'|wordwrap(width=3, break_on_hyphens=False, wrapstring='/') }}|"
        "{{ 'aXbX'|replace('X', 'Y', count=1) }}|{{ messages|join(d='-', attribute='role') }}|"
        "{{ '%s=%d'|format('x', 3) }}|{{ [1, 2, 3]|batch(linecount=2, fill_with=0)|list }}|"
        "{{ [1, 2, 3]|slice(slices=2, fill_with=0)|list }}|{{ [[1], [2]]|sum(start=[0]) }}|"
        "{{ {'a': [1]}|tojson(indent=2, separators=(',', ': ')) }}|"
        "{{ 'see https://x.org'|urlize(target='_blank', rel='x', extra_schemes=['ftp:']) }}|"
        "{{ 'a\tb'.expandtabs(tabsize=4) }}|{{ 'ab'.replace('a', 'c') }}|"
        "{{ '-'.join(messages|map(attribute='content')) }}|{{ 'abc'.translate({97: 'xy'}) }}|"
        "{{ '{:>4}|{x:.2f}'.format(1, x=2) }}|{{ '{a}'.format_map({'a': 3}) }}|"
        "{{ (5).to_bytes(length=2, byteorder='big') }}|"
        "{{ (5).to_bytes(1, 'little', signed=true) }}|"
        "{{ 'ab'.zfill(4) }}|{{ 'ab'.ljust(3) }}|{{ 'ab'.center(5, '*') }}|{{ 'ab'|wordwrap }}|"
        "{{ '%(a)s %%' % {'a': 1} }}|{{ 'x' ~ 1 ~ [2] }}|{{ [1] + [2] }}|{{ 'ab' * 2 }}|"
        "{{ 2 ** 10 }}|{{ 3 * 4 }}|{{ (messages|first).items()|list }}")
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                          extensions=[loopcontrols])
    plain.filters["tojson"] = chat._tojson
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert render(template, messages) == plain.from_string(template).render(messages=messages)


def test_strftime_now():
    year = datetime.now().year
    assert render("{{ strftime_now('%Y') }}") in (str(year), str(year + 1))


def test_raise_exception_reaches_the_caller():
    template = ("{% if messages[0].role != 'system' %}"
                "{{ raise_exception('Conversation must start with a system message') }}{% endif %}")
    with pytest.raises(ChatTemplateError,
                       match="raised: Conversation must start with a system message"):
        render(template)
    assert issubclass(ChatTemplateError, ValueError)


def test_syntax_errors_fail_at_construction():
    with pytest.raises(ChatTemplateError, match=r"does not compile: .*template line 2"):
        chat.Jinja2ChatFormatter("ok\n{% for %}")
    with pytest.raises(InvalidArgumentError):
        chat.Jinja2ChatFormatter(None)


def test_ordinary_failures_name_the_error():
    with pytest.raises(ChatTemplateError, match="ZeroDivisionError"):
        render("{{ 1 / 0 }}")
    with pytest.raises(ChatTemplateError, match="UndefinedError: 'nothing' is undefined"):
        render("{{ nothing.here() }}")


# -- hostile templates ------------------------------------------------------------

BIG = "{% set s = 'x' * 4000000 %}"
HOSTILE = {
    # Python internals
    "__class__": ("{{ ''.__class__ }}", "reached for '__class__' of a str"),
    "__globals__": ("{{ cycler.__init__.__globals__.os.popen('id').read() }}",
                    "reached for '__init__'"),
    "__subclasses__": ("{{ ().__class__.__base__.__subclasses__() }}", "reached for '__class__'"),
    "format field": ("{{ '{0.__class__}'.format('') }}", "reached for '__class__'"),
    "mutation": ("{{ messages.append(1) }}", "reached for 'append' of a list"),
    "attr filter": ("{{ ''|attr('__class__') }}", "reached for '__class__'"),
    "lipsum": ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
    # time
    "huge range": ("{% for i in range(10**12) %}x{% endfor %}", "Range too big"),
    # (finite, so that a broken deadline fails the test after a few seconds
    # instead of hanging it)
    "nested ranges": ("{% for i in range(100000) %}{% for j in range(1000) %}"
                      "{% endfor %}{% endfor %}", "ran longer than 0.3 s"),
    "filtered loops": ("{% for i in range(100000) %}{% for j in range(1000) if j < 0 %}"
                       "{% endfor %}{% endfor %}", "ran longer than 0.3 s"),
    "endless recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
                          "recursed too deeply"),
    "exponential recursion": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
                              "{% endmacro %}{{ f(22) }}", "ran longer than 0.3 s"),
    # size, one step at a time
    "repeat": ("{{ 'x' * 10**10 }}", "more than 4194304 characters"),
    "repeat list": ("{{ [1] * 10**10 }}", "more than 4194304 characters"),
    "power": ("{{ 2 ** (10**10) }}", "more than 65536 bits"),
    "squares": ("{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
                "{% endfor %}", "past 65536 bits"),
    "doubling ~": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                   "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "more than 4194304 characters"),
    "doubling +": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                   "{% set ns.s = ns.s + ns.s %}{% endfor %}", "more than 4194304 characters"),
    "doubling macro": ("{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
                       "{{ d('x', 60) }}", "more than 4194304 characters"),
    "center": ("{{ 'x'|center(9999999999) }}", "more than 4194304 characters"),
    "str.center": ("{{ 'x'.center(9999999999) }}", "more than 4194304 characters"),
    "replace": (BIG + "{{ s|replace('', s) }}", "more than 4194304 characters"),
    "str.replace": (BIG + "{{ s.replace('x', s) }}", "more than 4194304 characters"),
    "join": (BIG + "{{ range(1000)|map('string')|join(s) }}", "more than 4194304 characters"),
    "str.join": (BIG + "{{ s.join(range(1000)|map('string')) }}", "more than 4194304 characters"),
    "% width": ("{{ '%*d' % (999999999, 1) }}", "more than 4194304 characters"),
    "format width": ("{{ '%999999999d'|format(1) }}", "more than 4194304 characters"),
    "str.format width": ("{{ '{:>{}}'.format(1, 999999999) }}", "more than 4194304 characters"),
    "translate": (BIG + "{{ s.translate({120: s}) }}", "more than 4194304 characters"),
    "expandtabs": ("{{ ('\t' * 100000).expandtabs(100000) }}", "more than 4194304 characters"),
    "to_bytes": ("{{ (5).to_bytes(10**10, 'big') }}", "more than 4194304 characters"),
    "printed list": (BIG + "{{ [s, s, s, s, s] }}", "more than 4194304 characters"),
    "stringified list": (BIG + "{{ [s, s, s, s, s]|upper }}", "more than 4194304 characters"),
    "indent": ("{{ ('a\n' * 1000000)|indent(1000) }}", "more than 4194304 characters"),
    "batch": ("{{ [1]|batch(10**9, 'x')|list }}", "1000000000 pieces"),
    "tojson indent": ("{{ [[1]]|tojson(indent=10**9) }}", "wider than 16 characters"),
    # (100-character pieces: 42k of them reach the limit in ~0.04 s; 10-character
    # ones took ~0.35 s, past the 0.3 s deadline on a slow machine)
    "output flood": ("{% for i in range(100000) %}{% for j in range(1000) %}"
                     + "0123456789" * 10 + "{% endfor %}{% endfor %}",
                     "more than 4194304 characters"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_templates_fail_quickly_and_clearly(name):
    template, message = HOSTILE[name]
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=message):
        render(template, timeout=0.3)
    assert time.monotonic() - start < 2.0


def test_default_budget_stops_an_endless_loop():
    template = HOSTILE["nested ranges"][0]
    start = time.monotonic()
    with pytest.raises(ChatTemplateError, match=f"ran longer than {chat.RENDER_SECONDS:g} s"):
        render(template)
    assert time.monotonic() - start < chat.RENDER_SECONDS + 1.0


def test_size_budget_is_configurable():
    assert render("{{ 'ab' * 50 }}", max_chars=100) == "ab" * 50
    with pytest.raises(ChatTemplateError, match="more than 100 characters"):
        render("{{ 'ab' * 51 }}", max_chars=100)
    with pytest.raises(ChatTemplateError, match="more than 100 characters"):
        render("{% for i in range(11) %}0123456789{% endfor %}", max_chars=100)


def test_a_formatter_recovers_after_a_failure_and_serves_threads():
    formatter = chat.Jinja2ChatFormatter(
        "{% if messages[0].content == 'loop' %}{% for i in range(100000) %}"
        "{% for j in range(1000) %}{% endfor %}{% endfor %}{% endif %}{{ messages[0].content }}",
        timeout=0.2)
    results = []

    def talk(word):
        try:
            results.append(formatter([{"role": "user", "content": word}]).prompt)
        except ChatTemplateError as e:
            results.append(type(e))

    threads = [threading.Thread(target=talk, args=(w,)) for w in ("loop", "a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == sorted(["a", "b", ChatTemplateError], key=str)
    assert formatter([{"role": "user", "content": "again"}]).prompt == "again"


# -- built-in formats -------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The "
                 "assistant gives helpful, detailed, and polite answers to the user's questions.")
# Written by hand from llama-cpp-python's llama_chat_format.py, quirks included
# (llama-2's "<s>" text and double spaces, zephyr's blank line after a role,
# alpaca's missing response header, vicuna ignoring the system message).
BUILTIN = {
    "chatml": ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
               "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
               "<|im_start|>assistant\n", ["<|im_end|>"]),
    "qwen": ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
             "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
             "<|im_start|>assistant\n", ["<|endoftext|>"]),
    "llama-2": ("[INST] <<SYS>>\nBe brief.\n<</SYS>> Hi [/INST]Hello! </s><s>[INST]2+2?  [/INST]",
                []),
    "llama-3": ("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n", ["<|eot_id|>"]),
    "mistral-instruct": ("[INST] Hi [/INST]Hello!</s>[INST] 2+2? [/INST]", ["</s>"]),
    "gemma": ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
              "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n",
              ["<end_of_turn>\n"]),
    "alpaca": ("Be brief.\n\n### Instruction: Hi\n\n### Response: Hello!</s>"
               "### Instruction: 2+2?\n\n", []),
    "vicuna": (VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello!</s>USER: 2+2? ASSISTANT:", []),
    "zephyr": ("<|system|>\nBe brief.</s>\n<|user|>\n\nHi</s>\n<|assistant|>\n\nHello!</s>\n"
               "<|user|>\n\n2+2?</s>\n<|assistant|>\n\n", ["</s>"]),
}
# Without a system message, a tool result dropped, an empty assistant turn.
BUILTIN_NO_SYSTEM = [{"role": "user", "content": "Hi"},
                     {"role": "tool", "tool_call_id": "1", "content": "42"},
                     {"role": "assistant", "content": ""},
                     {"role": "user", "content": "Go on"}]
BUILTIN_NO_SYSTEM_PROMPTS = {
    "chatml": "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
              "<|im_start|>assistant\n<|im_start|>user\nGo on<|im_end|>\n<|im_start|>assistant\n",
    "qwen": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "Hi<|im_end|>\n<|im_start|>assistant\n<|im_start|>user\nGo on<|im_end|>\n"
            "<|im_start|>assistant\n",
    "llama-2": " <s>[INST]Hi  [/INST] <s>[INST]Go on  [/INST]",
    "llama-3": "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"
               "<|start_header_id|>user<|end_header_id|>\n\nGo on<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral-instruct": "[INST] Hi [/INST]</s>[INST] Go on [/INST]",
    "gemma": "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
             "<start_of_turn>user\nGo on<end_of_turn>\n<start_of_turn>model\n",
    "alpaca": "\n\n### Instruction: Hi\n\n### Response:### Instruction: Go on\n\n",
    "vicuna": VICUNA_SYSTEM + " USER: Hi ASSISTANT:USER: Go on ASSISTANT:",
    "zephyr": "<|system|>\n</s>\n<|user|>\n\nHi</s>\n<|assistant|>\n\n<|user|>\n\nGo on</s>\n"
              "<|assistant|>\n\n",
}


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_formats(name):
    prompt, stop = BUILTIN[name]
    formatter = chat.BuiltinChatFormatter(name)
    result = formatter(CONVERSATION, tools=[{"type": "function"}])
    assert result == chat.ChatFormatterResponse(prompt, stop, added_special=False)
    assert formatter(BUILTIN_NO_SYSTEM).prompt == BUILTIN_NO_SYSTEM_PROMPTS[name]


def test_builtin_names():
    assert set(chat.CHAT_FORMATS) == set(BUILTIN)
    with pytest.raises(InvalidArgumentError, match="unknown chat format 'nope'.*chatml"):
        chat.BuiltinChatFormatter("nope")


# -- which format a file gets --------------------------------------------------------

# The Hugging Face ChatML template of OpenHermes-2.5, which llama-cpp-python
# recognizes by its text.
CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                   "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_guess_chat_format():
    assert chat.guess_chat_format({}) == "llama-2"
    assert chat.guess_chat_format({"general.architecture": "gemma3"}) == "llama-2"
    assert chat.guess_chat_format({"tokenizer.chat_template": CHATML_TEMPLATE}) == "chatml"
    assert chat.guess_chat_format({"tokenizer.chat_template": CHATML_TEMPLATE + " "}) \
        == "chat_template.default"
    # Only a named template: llama-cpp-python still falls back to llama-2.
    assert chat.guess_chat_format({"tokenizer.chat_template.tool_use": "x"}) == "llama-2"


@pytest.mark.parametrize("name, prompt_start", [
    ("mistral-instruct", "<s>[INST] Hi [/INST]"),
    ("llama-3", "<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"),
])
def test_known_templates_render_and_map_to_their_format(name, prompt_start):
    known = [t for t, n in chat._KNOWN_TEMPLATES.items() if n == name]
    assert known
    for template in known:
        assert render(template).startswith(prompt_start)
        assert chat.guess_chat_format({"tokenizer.chat_template": template}) == name


def test_chat_formatter_choices():
    metadata = {"tokenizer.chat_template": "default:{{ messages[0].content }}",
                "tokenizer.chat_template.tool_use": "tools:{{ tools|length }}",
                "tokenizer.chat_template.rag": 5}  # not a string: ignored
    assert chat.chat_templates(metadata) == {
        "chat_template.default": "default:{{ messages[0].content }}",
        "chat_template.tool_use": "tools:{{ tools|length }}"}
    assert chat.chat_formatter(None, metadata)(USER_HI).prompt == "default:Hi"
    tool_use = chat.chat_formatter("chat_template.tool_use", metadata, eos_token="E")
    assert tool_use(USER_HI, tools=[1, 2]) == chat.ChatFormatterResponse("tools:2", ["E"], True)
    assert isinstance(chat.chat_formatter("gemma", metadata), chat.BuiltinChatFormatter)
    assert chat.chat_formatter(None, {})(USER_HI).prompt == " <s>[INST]Hi  [/INST]"
    with pytest.raises(InvalidArgumentError, match="chat_template.tool_use, .*chatml"):
        chat.chat_formatter("nope", metadata)
    limited = chat.chat_formatter(None, metadata, timeout=0.5, max_chars=10)
    assert (limited.timeout, limited.max_chars) == (0.5, 10)


def test_no_empty_stop_string_without_eos():
    assert chat.Jinja2ChatFormatter("x")(USER_HI).stop == []


# -- text_completion -> chat.completion -------------------------------------------

def completion(text, finish_reason, logprobs=None, usage=True):
    out = {"id": "cmpl-42", "object": "text_completion", "created": 1700000000,
           "model": "m.gguf",
           "choices": [{"text": text, "index": 0, "logprobs": logprobs,
                        "finish_reason": finish_reason}]}
    if usage:
        out["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return out


def test_completion_to_chat():
    assert chat.completion_to_chat(completion("Hello!", "stop")) == {
        "id": "chatcmpl-42", "object": "chat.completion", "created": 1700000000,
        "model": "m.gguf",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def test_completion_logprobs_to_chat():
    logprobs = {"tokens": ["He", "llo"], "text_offset": [0, 2], "token_logprobs": [-0.5, -0.1],
                "top_logprobs": [{"He": -0.5, "Hi": -1.5}, {"llo": -0.1}]}
    converted = chat.completion_to_chat(completion("Hello", "length", logprobs))
    assert converted["choices"][0]["logprobs"] == {"content": [
        {"token": "He", "bytes": None, "logprob": -0.5,
         "top_logprobs": [{"token": "He", "logprob": -0.5, "bytes": None},
                          {"token": "Hi", "logprob": -1.5, "bytes": None}]},
        {"token": "llo", "bytes": None, "logprob": -0.1,
         "top_logprobs": [{"token": "llo", "logprob": -0.1, "bytes": None}]}],
        "refusal": None}
    assert converted["choices"][0]["finish_reason"] == "length"


def test_completion_chunks_to_chat():
    chunks = [completion("Hel", None, usage=False), completion("lo", None, usage=False),
              completion("", "stop", usage=False)]
    head = {"id": "chatcmpl-42", "model": "m.gguf", "created": 1700000000,
            "object": "chat.completion.chunk"}

    def chunk(delta, finish_reason=None):
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish_reason}]}

    assert list(chat.completion_chunks_to_chat(iter(chunks))) == [
        chunk({"role": "assistant"}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
        chunk({}, "stop")]
    # A finishing chunk that still carries text keeps it.
    last = list(chat.completion_chunks_to_chat([completion("!", "length", usage=False)]))
    assert [c["choices"][0]["delta"] for c in last] == [{"role": "assistant"}, {"content": "!"}]
    assert list(chat.completion_chunks_to_chat([])) == []
