"""The FastAPI application: OpenAI's endpoints over the served models, plus
llama-cpp-python's /extras and a chat page at `/`.

    app = create_app(ServerSettings(), {"smol": ModelWorker(Llama(...), "smol")})

Every request that touches a model becomes a Job on that model's thread
(see worker.py); the handlers only wait for its events, so the event loop
never runs a forward pass."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Dict, List, Optional

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..llama import Llama
from . import errors
from .errors import APIError
from .settings import ModelSettings, ServerSettings
from .types import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                    EmbeddingRequest, TokenizeRequest)
from .worker import Job, ModelWorker, Work

# How often a request waiting for its model looks whether its client is still there.
_DISCONNECT_POLL_S = 0.25
# How long a stream may take to say goodbye when the server shuts down.
_SHUTDOWN_GRACE_S = 2.0
_request_numbers = itertools.count(1)


def load_models(settings: List[ModelSettings]) -> Dict[str, ModelWorker]:
    """Load every model (embeddings on, so /v1/embeddings needs no flag) and
    start its thread; the first is the default."""
    aliases = [s.alias for s in settings]
    if len(set(aliases)) != len(aliases):
        raise ValueError(f"two models share a name: {aliases}; give each a model_alias")
    workers: Dict[str, ModelWorker] = {}
    try:
        for s in settings:
            llama = Llama(s.model, n_ctx=s.n_ctx, n_threads=s.n_threads, n_batch=s.n_batch,
                          chat_format=s.chat_format, embedding=True,
                          pooling_type=s.pooling_type, seed=s.seed, verbose=False)
            llama._chat_formatter()   # a wrong --chat_format fails now, not at the first chat
            workers[s.alias] = ModelWorker(llama, s.alias)
    except BaseException:
        for w in workers.values():
            w.close()
        raise
    return workers


def create_app(server: ServerSettings, workers: Dict[str, ModelWorker]) -> FastAPI:
    """The app serving `workers` (alias -> model); it closes them on shutdown."""
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for w in workers.values():
            await asyncio.to_thread(w.close)

    # FastAPIOffline: the /docs and /redoc pages load their scripts from this
    # server, not from FastAPI's default CDN, so they work without internet.
    app = FastAPIOffline(title="llamalite", version=__version__, lifespan=lifespan,
                         description="OpenAI-compatible API over llamalite models")
    app.add_middleware(_BodiesAreJSON)
    app.add_exception_handler(RequestValidationError, errors.on_invalid_body)
    app.add_exception_handler(StarletteHTTPException, errors.on_http_error)
    app.add_exception_handler(APIError, errors.on_api_error)

    def check_key(request: Request) -> None:
        if server.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() != server.api_key:
            raise errors.invalid_api_key()

    def worker_for(name: Optional[str]) -> ModelWorker:
        if name is None:
            return next(iter(workers.values()))
        if name not in workers:
            raise errors.model_not_found(name, list(workers))
        return workers[name]

    guarded = [Depends(check_key)]
    chat_page = resources.files(__package__).joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(chat_page)

    @app.get("/health", tags=["Extras"])
    async def health() -> dict:
        return {"status": "ok", "models": [{"id": a, "busy": w.busy, "waiting": w.waiting}
                                           for a, w in workers.items()]}

    @app.get("/v1/models", dependencies=guarded, tags=["OpenAI V1"])
    async def list_models() -> dict:
        return {"object": "list", "data": [
            {"id": alias, "object": "model", "created": created, "owned_by": "llamalite",
             "permissions": []} for alias in workers]}

    @app.post("/v1/completions", dependencies=guarded, tags=["OpenAI V1"])
    async def completions(request: Request, body: CompletionRequest) -> Response:
        worker = worker_for(body.model)
        return await _run(request, worker, "cmpl", _completion_work(body, worker.alias), "prompt")

    @app.post("/v1/chat/completions", dependencies=guarded, tags=["OpenAI V1"])
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        worker = worker_for(body.model)
        return await _run(request, worker, "chat", _chat_work(body, worker.alias), "messages")

    @app.post("/v1/embeddings", dependencies=guarded, tags=["OpenAI V1"])
    async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
        worker = worker_for(body.model)
        return await _run(request, worker, "embd", _embedding_work(body, worker.alias), "input")

    @app.post("/extras/tokenize", dependencies=guarded, tags=["Extras"])
    async def tokenize(request: Request, body: TokenizeRequest) -> Response:
        text = body.input.encode("utf-8")
        return await _run(request, worker_for(body.model), "tokenize",
                          lambda llama, job: {"tokens": llama.tokenize(text, special=True)},
                          "input")

    @app.post("/extras/tokenize/count", dependencies=guarded, tags=["Extras"])
    async def tokenize_count(request: Request, body: TokenizeRequest) -> Response:
        text = body.input.encode("utf-8")
        return await _run(request, worker_for(body.model), "tokenize",
                          lambda llama, job: {"count": len(llama.tokenize(text, special=True))},
                          "input")

    @app.post("/extras/detokenize", dependencies=guarded, tags=["Extras"])
    async def detokenize(request: Request, body: DetokenizeRequest) -> Response:
        def work(llama: Llama, job: Job) -> dict:
            vocab = llama.n_vocab()
            bad = [t for t in body.tokens if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})")
            return {"text": llama.detokenize(body.tokens).decode("utf-8", errors="replace")}
        return await _run(request, worker_for(body.model), "detokenize", work, "tokens")

    return app


class _BodiesAreJSON:
    """Read every request body as JSON, whatever its Content-Type says, as
    OpenAI's API does: `curl -d '{...}'` without a header sends form encoding."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


# --- running a job for a request -------------------------------------------------

async def _run(request: Request, worker: ModelWorker, kind: str, work: Work,
               param: str) -> Response:
    """Queue `work` on the model and answer with its result: JSON, a stream of
    server-sent events, or the error JSON of what it raised."""
    job = Job(f"{kind}-{next(_request_numbers)}", work)
    worker.submit(job)
    event = await _first_event(request, job)
    if event is None:
        return Response(status_code=499)   # nobody is there to read it
    what, value = event
    if what == "error":
        raise errors.from_llama(value, param)
    if what == "answer":
        return JSONResponse(value)
    closing = anyio.Event()
    return EventSourceResponse(_events(job, param, closing), sep="\n", shutdown_event=closing,
                               shutdown_grace_period=_SHUTDOWN_GRACE_S)


async def _first_event(request: Request, job: Job) -> Optional[tuple]:
    """The job's first event; None (and the job cancelled) if the client
    leaves while the job waits for the model or runs."""
    getting = asyncio.ensure_future(job.next_event())
    try:
        while True:
            done, _ = await asyncio.wait({getting}, timeout=_DISCONNECT_POLL_S)
            if done:
                return getting.result()
            if await request.is_disconnected():
                job.cancel()
                return None
    finally:
        if not getting.done():   # the client left, or this handler was cancelled
            getting.cancel()
            job.cancel()


async def _events(job: Job, param: str, closing: anyio.Event):
    """A started stream's chunks as server-sent events, then [DONE]. When the
    client leaves this generator is closed; when the server shuts down
    (`closing`) it ends the stream with an error event. Either way the job
    is cancelled before its next token."""
    shutdown = asyncio.ensure_future(closing.wait())
    try:
        while True:
            getting = asyncio.ensure_future(job.next_event())
            await asyncio.wait({getting, shutdown}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                error = APIError(503, "the server is shutting down; this answer was cut short",
                                 type="server_error", code="server_shutdown")
                yield {"data": json.dumps(error.body())}
                yield {"data": "[DONE]"}
                return
            what, value = getting.result()
            if what == "chunk":
                yield {"data": json.dumps(value, ensure_ascii=False)}
                continue
            if what == "error":   # after the first chunk: the error is the last event
                yield {"data": json.dumps(errors.from_llama(value, param).body())}
            yield {"data": "[DONE]"}
            return
    finally:
        shutdown.cancel()
        job.cancel()


# --- what each endpoint asks of the model ---------------------------------------------

def _sampling(body, llama: Llama) -> dict:
    """The sampling keywords both completions and chat take."""
    return dict(temperature=body.temperature, top_p=body.top_p, min_p=body.min_p,
                top_k=body.top_k, typical_p=body.typical_p, stop=body.stop,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty, repeat_penalty=body.repeat_penalty,
                seed=body.seed, mirostat_mode=body.mirostat_mode,
                mirostat_tau=body.mirostat_tau, mirostat_eta=body.mirostat_eta,
                grammar=body.grammar, logit_bias=_logit_bias(body, llama))


def _logit_bias(body, llama: Llama) -> Optional[Dict[int, float]]:
    """OpenAI's {"token id": bias}, or with logit_bias_type "tokens" {"text": bias}
    (every token of the text gets the bias)."""
    if not body.logit_bias:
        return None
    bias: Dict[int, float] = {}
    for key, value in body.logit_bias.items():
        if body.logit_bias_type == "tokens":
            for token in llama.tokenize(key.encode("utf-8"), add_bos=False, special=True):
                bias[token] = value
            continue
        try:
            token = int(key)
        except ValueError:
            raise ValueError(f"logit_bias key {key!r} is not a token id (send "
                             "logit_bias_type 'tokens' to bias token texts)") from None
        if not 0 <= token < llama.n_vocab():
            raise ValueError(f"logit_bias token id {token} is outside the vocabulary "
                             f"(0..{llama.n_vocab() - 1})")
        bias[token] = value
    return bias


def _completion_work(body: CompletionRequest, alias: str) -> Work:
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) > 1:
            raise APIError(400, f"{len(prompt)} prompts in one request: this server answers "
                                "one prompt per request", param="prompt")
        prompt = prompt[0]
    elif isinstance(prompt, list) and not prompt:
        prompt = ""

    def work(llama: Llama, job: Job):
        return llama.create_completion(
            prompt, suffix=body.suffix, max_tokens=body.max_tokens, logprobs=body.logprobs,
            echo=body.echo, stream=body.stream, model=alias,
            logits_processor=job.watcher(), **_sampling(body, llama))
    return work


def _chat_work(body: ChatCompletionRequest, alias: str) -> Work:
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    max_tokens = body.max_tokens if body.max_tokens is not None else body.max_completion_tokens

    def work(llama: Llama, job: Job):
        return llama.create_chat_completion(
            messages, functions=body.functions, function_call=body.function_call,
            tools=body.tools, tool_choice=body.tool_choice,
            response_format=body.response_format, max_tokens=max_tokens,
            logprobs=body.logprobs, top_logprobs=body.top_logprobs, stream=body.stream,
            model=alias, logits_processor=job.watcher(), **_sampling(body, llama))
    return work


def _embedding_work(body: EmbeddingRequest, alias: str) -> Work:
    def work(llama: Llama, job: Job) -> dict:
        if body.dimensions is not None and body.dimensions != llama.n_embd():
            raise ValueError(f"dimensions {body.dimensions}: this model's embeddings have "
                             f"{llama.n_embd()} (it cannot shorten them)")
        answer = llama.create_embedding(body.input, model=alias)
        if body.encoding_format == "base64":
            for item in answer["data"]:
                raw = np.asarray(item["embedding"], dtype="<f4").tobytes()
                item["embedding"] = base64.b64encode(raw).decode("ascii")
        return answer
    return work
