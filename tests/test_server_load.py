"""A bounded load test of the server: 16 concurrent clients send 64
requests in four waves (chat and completions, streamed and not), one client
hangs up mid-stream; every other request completes well-formed, the
hung-up generation stops, and the server's memory does not grow from the
first wave to the last. The figures (latency median/p95, tokens/s) are
printed, not asserted."""
import asyncio
import json
import re
import signal
import statistics
import time

import pytest

httpx = pytest.importorskip("httpx", reason="the server tests need the `test` extra")
pytest.importorskip("fastapi", reason="the server needs the `server` extra")

from serverproc import ServerProcess  # noqa: E402

CLIENTS, WAVES, MAX_TOKENS = 16, 4, 8
TOPICS = ["France", "Italy", "Spain", "Japan", "Peru", "Kenya", "Canada", "Egypt"]
# SmolLM2's <|endoftext|> and <|im_end|>: biased away, the hung-up stream would run long
NO_END = {"0": -100, "2": -100}


@pytest.fixture(scope="module")
def server(smollm2_path):
    proc = ServerProcess("--model", str(smollm2_path), "--model_alias", "smol")
    yield proc
    assert proc.stop() == -signal.SIGTERM, proc.log()


def request_body(i: int) -> tuple[str, dict]:
    """Request i: chat or completion, streamed or not, in turn."""
    topic = TOPICS[i % len(TOPICS)]
    stream = i % 2 == 1
    if i % 4 < 2:
        return "/v1/chat/completions", {
            "model": "smol", "stream": stream, "max_tokens": MAX_TOKENS, "seed": i,
            "messages": [{"role": "user", "content": f"Tell me about {topic}."}]}
    return "/v1/completions", {"model": "smol", "stream": stream, "max_tokens": MAX_TOKENS,
                               "seed": i, "prompt": f"The capital of {topic} is"}


def check_answer(path: str, answer: dict) -> None:
    chat = path.endswith("chat/completions")
    assert answer["object"] == ("chat.completion" if chat else "text_completion")
    choice = answer["choices"][0]
    text = choice["message"]["content"] if chat else choice["text"]
    assert isinstance(text, str) and choice["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    assert 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def check_stream(path: str, data: list) -> None:
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    kind = "chat.completion.chunk" if path.endswith("chat/completions") else "text_completion"
    assert chunks and all(c["object"] == kind for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def one_request(client: httpx.AsyncClient, i: int) -> float:
    """Send request i, check its answer; its latency in seconds."""
    path, body = request_body(i)
    started = time.perf_counter()
    if not body["stream"]:
        r = await client.post(path, json=body)
        assert r.status_code == 200, r.text
        check_answer(path, r.json())
    else:
        async with client.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            data = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
        check_stream(path, data)
    return time.perf_counter() - started


async def hang_up_mid_stream(client: httpx.AsyncClient) -> None:
    """A client that asks for 1000 tokens and leaves after 3 chunks."""
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 1000, "stream": True,
            "logit_bias": NO_END}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        seen = 0
        async for line in r.aiter_lines():
            seen += line.startswith("data: {")
            if seen == 3:
                return


async def wave(url: str, first: int, hang_up: bool) -> list:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        tasks = [one_request(client, i) for i in range(first, first + CLIENTS - hang_up)]
        if hang_up:
            tasks.insert(CLIENTS // 2, hang_up_mid_stream(client))
        results = await asyncio.gather(*tasks)
    return [r for r in results if r is not None]


def token_counts(log: str) -> tuple[int, int]:
    """(prompt tokens evaluated, tokens sampled) over the requests in the log."""
    pairs = re.findall(r"(\d+) prompt tokens evaluated, (\d+) sampled", log)
    return sum(int(p) for p, _ in pairs), sum(int(s) for _, s in pairs)


def test_sixteen_clients_sixty_four_requests(server, capsys):
    latencies, rss = [], []
    log_before = len(server.log())
    started = time.perf_counter()
    for w in range(WAVES):
        latencies += asyncio.run(wave(server.url, w * CLIENTS, hang_up=w == 1))
        rss.append(server.rss_bytes())
    elapsed = time.perf_counter() - started
    log = server.log()[log_before:]

    assert len(latencies) == CLIENTS * WAVES - 1     # and the one that hung up
    stopped = [int(n) for n in re.findall(r"cancelled \(client gone or server stopping\) "
                                          r"after (\d+) tokens", log)]
    assert len(stopped) == 1 and stopped[0] < 1000, log
    assert rss[-1] - rss[0] < 16 * 2**20, f"RSS grew from {rss[0]} to {rss[-1]} bytes"

    p95 = statistics.quantiles(latencies, n=20)[-1]
    prompt, sampled = token_counts(log)
    with capsys.disabled():
        print(f"\nserver load: {len(latencies)} requests + 1 hung up, {CLIENTS} concurrent, "
              f"max_tokens {MAX_TOKENS}: latency median {statistics.median(latencies):.2f} s, "
              f"p95 {p95:.2f} s; in {elapsed:.1f} s {sampled} tokens sampled "
              f"({sampled / elapsed:.1f}/s) and {prompt} prompt tokens evaluated "
              f"({prompt / elapsed:.1f}/s); RSS {rss[0] / 2**20:.1f} -> "
              f"{rss[-1] / 2**20:.1f} MiB")
