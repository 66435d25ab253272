"""The OpenAI-compatible server as a real uvicorn process with SmolLM2,
driven by the official `openai` client (answers) and by raw httpx (errors:
each the right status and error JSON, and the server answers afterwards)."""
import base64
import contextlib
import io
import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest

openai = pytest.importorskip("openai", reason="the server tests need the `test` extra")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the server needs the `server` extra")

from serverproc import ServerProcess  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in English."}]


@pytest.fixture(scope="module")
def server(smollm2_path):
    proc = ServerProcess("--model", str(smollm2_path), "--model_alias", "smol")
    yield proc
    assert proc.stop() == -signal.SIGTERM, proc.log()   # uvicorn exits by the signal it got


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def post(server, path, body=None, content=None, **kw):
    return httpx.post(f"{server.url}{path}", json=body, content=content, timeout=60, **kw)


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def assert_still_answers(server):
    r = post(server, "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 2,
                                         "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith(" Paris")


# --- the openai client ---------------------------------------------------------

def test_completion_continues_with_paris(client):
    out = client.completions.create(model="smol", prompt="The capital of France is",
                                    max_tokens=4, temperature=0)
    assert out.object == "text_completion" and out.model == "smol"
    choice = out.choices[0]
    assert choice.text.startswith(" Paris") and choice.finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (5, 4)
    assert out.usage.total_tokens == 9


def test_completion_stop_and_stream(client):
    streamed = client.completions.create(model="smol", prompt="The capital of France is",
                                         max_tokens=8, temperature=0, stop=["."], stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == " Paris"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_answers_paris(client):
    out = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0,
                                         max_tokens=16)
    assert out.object == "chat.completion"
    message = out.choices[0].message
    assert message.role == "assistant" and "Paris" in message.content
    assert out.usage.completion_tokens <= 16
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_streamed_chat_equals_the_whole_answer(client):
    whole = client.chat.completions.create(model="smol", messages=QUESTION, temperature=0,
                                           max_tokens=16)
    chunks = list(client.chat.completions.create(model="smol", messages=QUESTION,
                                                 temperature=0, max_tokens=16, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert len(chunks) > 3   # token by token, not one piece
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stream_is_server_sent_events_ending_in_done(server):
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                      json={"messages": QUESTION, "max_tokens": 4, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert [json.loads(d)["object"] for d in data[:-1]] == ["chat.completion.chunk"] * (len(data) - 1)


def test_embeddings(client, server):
    out = client.embeddings.create(model="smol", input=["Paris is in France", "cheese"])
    assert [d.index for d in out.data] == [0, 1]
    a, b = (np.array(d.embedding) for d in out.data)
    assert a.shape == b.shape == (576,) and not np.allclose(a, b)
    assert out.usage.prompt_tokens == out.usage.total_tokens > 4
    # the float format gives the same numbers the client decoded from base64
    r = post(server, "/v1/embeddings", {"input": "cheese", "encoding_format": "float"})
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], b, rtol=1e-6)
    r = post(server, "/v1/embeddings", {"input": "cheese", "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), b.astype(np.float32))


def test_models(client):
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["smol"]
    assert listed.data[0].object == "model"


def test_tokenize_detokenize_health_docs(server):
    tokens = post(server, "/extras/tokenize", {"input": "The capital of France is"}).json()
    assert tokens == {"tokens": [504, 3575, 282, 4649, 314]}
    assert post(server, "/extras/tokenize/count", {"input": "The capital"}).json() == {"count": 2}
    text = post(server, "/extras/detokenize", {"tokens": tokens["tokens"]}).json()
    assert text == {"text": "The capital of France is"}
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["models"][0]["id"] == "smol"
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()   # no outside host: the page works offline
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = httpx.get(f"{server.url}/static-offline-docs/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models",
            "/extras/tokenize", "/extras/detokenize", "/health"} <= set(paths)


def test_chat_page_is_served(server):
    r = httpx.get(f"{server.url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "v1/chat/completions" in r.text   # the browser test (test_server_chat_page) drives it


def test_a_follow_up_turn_only_evaluates_what_is_new(server):
    first = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 8,
                                                  "temperature": 0}).json()
    turn = QUESTION + [first["choices"][0]["message"],
                       {"role": "user", "content": "And of Italy?"}]
    second = post(server, "/v1/chat/completions", {"messages": turn, "max_tokens": 8,
                                                   "temperature": 0}).json()
    evaluated = [int(n) for n in re.findall(r"chat-\d+: (\d+) prompt tokens evaluated",
                                            server.log())]
    n_first, n_second = first["usage"]["prompt_tokens"], second["usage"]["prompt_tokens"]
    assert evaluated[-2] == n_first
    assert evaluated[-1] <= n_second - n_first + 1, "the first turn was evaluated again"


def test_readme_client_example(server):
    """The README's `openai` example prints what its comments say."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [code] = [c for c in re.findall(r"```py\n(.*?)```", readme, re.S) if "openai" in c]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("http://127.0.0.1:8000", server.url), "README.md", "exec"), {})
    expected = [line.split("#", 1)[1].strip() for line in code.splitlines()
                if line.startswith("print(")]
    assert [line.strip() for line in out.getvalue().splitlines()] == expected


# --- errors over raw HTTP --------------------------------------------------------

@pytest.mark.parametrize("path,content,status,code", [
    ("/v1/chat/completions", b'{"messages": [', 400, "invalid_json"),
    ("/v1/completions", b"prompt=hello", 400, "invalid_json"),
    ("/v1/chat/completions", b'{"messages": "hello"}', 422, "invalid_value"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], '
                             b'"max_tokens": "many"}', 422, "invalid_value"),
    ("/v1/chat/completions", b'{"messages": [{"role": "robot", "content": "hi"}]}', 422,
     "invalid_value"),
    ("/v1/chat/completions", b'{"model": "smol"}', 422, "invalid_value"),
    ("/v1/embeddings", b'{"model": "smol"}', 422, "invalid_value"),
    ("/v1/completions", b'{"prompt": "hi", "temperature": 9}', 422, "invalid_value"),
    ("/extras/detokenize", b'{"tokens": [1, "x"]}', 422, "invalid_value"),
])
def test_bad_bodies(server, path, content, status, code):
    error = assert_error(post(server, path, content=content,
                              headers={"content-type": "application/json"}), status, code)
    assert error["type"] == "invalid_request_error"


def test_missing_field_is_named(server):
    error = assert_error(post(server, "/v1/chat/completions", {"model": "smol"}), 422)
    assert error["param"] == "messages" and "messages" in error["message"]


def test_overlong_prompt_names_the_numbers(server):
    r = post(server, "/v1/completions", {"prompt": "Paris " * 3000, "max_tokens": 4})
    error = assert_error(r, 400, "context_length_exceeded")
    assert "2048" in error["message"] and "3001" in error["message"]
    r = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 4000})
    error = assert_error(r, 400, "context_length_exceeded")
    assert "4000" in error["message"] and "2048" in error["message"]
    assert_still_answers(server)


def test_unknown_model_and_path(server, client):
    error = assert_error(post(server, "/v1/chat/completions",
                              {"model": "gpt-4", "messages": QUESTION}), 404, "model_not_found")
    assert "gpt-4" in error["message"] and "smol" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi", max_tokens=1)
    assert_error(httpx.get(f"{server.url}/v1/nothing"), 404)


def test_bad_values_the_model_refuses_are_400(server):
    assert_error(post(server, "/extras/detokenize", {"tokens": [10 ** 9]}), 400)
    assert_error(post(server, "/v1/completions", {"prompt": "hi", "logit_bias": {"x": 1}}), 400)
    assert_error(post(server, "/v1/completions", {"prompt": ["a", "b"]}), 400)
    assert_error(post(server, "/v1/embeddings", {"input": "hi", "dimensions": 3}), 400)
    assert_still_answers(server)


def test_grammar_json_mode_and_tools_pass_through(server):
    """The request fields Llama takes for structured output reach it: a GBNF
    grammar, JSON mode and tools (test_server_tools.py drives them on a model
    that calls tools well)."""
    r = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 8,
                                              "temperature": 0,
                                              "grammar": 'root ::= "yes" | "no"'})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] in ("yes", "no")
    r = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 64,
                                              "temperature": 0,
                                              "response_format": {"type": "json_object", "schema": {
                                                  "type": "object", "required": ["city"],
                                                  "properties": {"city": {
                                                      "type": "string", "maxLength": 20}}}}})
    assert r.status_code == 200, r.text
    assert set(json.loads(r.json()["choices"][0]["message"]["content"])) == {"city"}
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}
    r = post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 32,
                                              "temperature": 0,
                                              "tools": [tool], "tool_choice": "required"})
    assert r.status_code == 200, r.text
    call = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "f" and isinstance(json.loads(call["arguments"])["x"], int)
    assert_error(post(server, "/v1/chat/completions", {"messages": QUESTION,
                                                        "grammar": "root ::= ("}), 400)
    assert_still_answers(server)


# --- a server with a key and two models from a config file -----------------------------

@pytest.fixture(scope="module")
def keyed(smollm2_path, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "models.yaml"
    config.write_text(f"api_key: sesame\nmodels:\n"
                      f"  - model: {smollm2_path}\n    model_alias: smol\n"
                      f"  - model: {smollm2_path}\n    model_alias: tiny\n    n_ctx: 256\n")
    proc = ServerProcess("--config", str(config))
    yield proc
    assert proc.stop() == -signal.SIGTERM, proc.log()   # uvicorn exits by the signal it got


def test_api_key(keyed):
    body = {"model": "smol", "prompt": "The capital of France is", "max_tokens": 2,
            "temperature": 0}
    assert_error(post(keyed, "/v1/completions", body), 401, "invalid_api_key")
    assert_error(post(keyed, "/v1/completions", body,
                      headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    assert_error(httpx.get(f"{keyed.url}/v1/models"), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong",
                      max_retries=0).models.list()
    assert httpx.get(f"{keyed.url}/health").status_code == 200
    r = post(keyed, "/v1/completions", body, headers={"Authorization": "Bearer sesame"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith(" Paris")


def test_config_serves_each_model_by_name(keyed):
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="sesame", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["smol", "tiny"]
    for name in ("smol", "tiny"):
        out = client.completions.create(model=name, prompt="The capital of France is",
                                        max_tokens=2, temperature=0)
        assert out.model == name and out.choices[0].text.startswith(" Paris")
    # tiny's context is 256 tokens, smol's 2048
    with pytest.raises(openai.BadRequestError, match="256"):
        client.completions.create(model="tiny", prompt="Paris " * 300, max_tokens=1)
    assert client.completions.create(model="smol", prompt="Paris " * 300, max_tokens=1)


# --- shutdown ---------------------------------------------------------------------------

def test_sigterm_ends_a_stream_cleanly(smollm2_path):
    """SIGTERM during a stream: the stream ends well-formed (an error event
    saying why, then [DONE]), generation stops, the process exits."""
    proc = ServerProcess("--model", str(smollm2_path), "--model_alias", "smol")
    body = {"prompt": "Once upon a time", "max_tokens": 1500, "stream": True,
            "logit_bias": {"0": -100, "2": -100}}   # no end-of-text: it runs to 1500 tokens
    with httpx.stream("POST", f"{proc.url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                break
        proc.terminate()
        data = [x[len("data: "):] for x in lines if x.startswith("data: ")]
    assert proc.stop() == -signal.SIGTERM
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == "server_shutdown"
    assert len(data) < 1000
    log = proc.log()
    assert "cancelled (client gone or server stopping) after" in log
    assert "Finished server process" in log


# --- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--n_ctx", "abc"], "--n_ctx: Input should be a valid integer"),
    (["--port", "70000"], "--port: Input should be less than or equal to 65535"),
    (["--model", "no-such-model"], "Model path does not exist: no-such-model"),
    (["--config", "/no/such/file.yaml"], "cannot read the config file /no/such/file.yaml"),
    (["--chat_format", "nonsense"], "unknown chat_format 'nonsense'"),
])
def test_serve_mistakes_are_one_line(args, message, capsys):
    from llamalite import cli
    assert cli.main(["serve", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamalite serve: error: ") and message in err
    assert err.count("\n") == 1


def test_config_file_mistakes(tmp_path, capsys):
    from llamalite.server.__main__ import main
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": [{"modle": "x"}]}')
    assert main(["--config", str(bad)]) == 1
    assert "models.0.modle: Extra inputs are not permitted" in capsys.readouterr().err
    bad.write_text('{"models": [')
    assert main(["--config", str(bad)]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text('{"models": [{"model": "smollm2-135m-instruct"}]}')
    assert main(["--config", str(good), "--n_ctx", "64"]) == 1
    assert "--n_ctx cannot be given with --config" in capsys.readouterr().err


def test_settings_from_flags_environment_and_file(tmp_path, monkeypatch):
    from llamalite.server.settings import Settings
    monkeypatch.setenv("N_CTX", "4096")
    monkeypatch.setenv("API_KEY", "from-env")
    server, models = Settings(_cli_parse_args=["--model_alias", "smol", "--port", "9"]).served()
    assert (server.port, server.api_key, server.host) == (9, "from-env", "127.0.0.1")
    assert [(m.alias, m.n_ctx) for m in models] == [("smol", 4096)]
    config = tmp_path / "c.yaml"
    config.write_text("port: 8001\nmodels:\n  - model: a.gguf\n  - model: b.gguf\n"
                      "    model_alias: bee\n    n_ctx: 128\n")
    monkeypatch.delenv("N_CTX")
    server, models = Settings(_cli_parse_args=["--config", str(config), "--port", "9"]).served()
    assert (server.port, server.api_key) == (9, "from-env")   # flags and env beat the file
    assert [(m.alias, m.n_ctx) for m in models] == [("a.gguf", 2048), ("bee", 128)]
