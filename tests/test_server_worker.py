"""The model worker on its own, with a stand-in for the Llama: jobs run one
at a time in arrival order, a cancelled job stops before its next token and a
cancelled queued job never runs, and a job's failure reaches that job alone."""
import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server needs the `server` extra")

from llamalite.server.worker import Job, ModelWorker  # noqa: E402


class FakeLlama:
    """Counts how many jobs use it at once."""

    def __init__(self):
        self.inside, self.most_inside, self.order = 0, 0, []
        self.lock = threading.Lock()
        self.closed = False

    def enter(self, name):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.order.append(name)

    def leave(self):
        with self.lock:
            self.inside -= 1

    def close(self):
        self.closed = True


def tokens(llama, job, n, delay=0.0):
    """A stream of n chunks, each 'sampled' through the job's watcher as a
    real generation's tokens are."""
    watcher = job.watcher()
    llama.enter(job.name)
    try:
        for i in range(n):
            watcher(np.zeros(1, np.intc), np.zeros(4, np.float32))
            time.sleep(delay)
            yield {"i": i}
    finally:
        llama.leave()


async def collect(job):
    events = []
    while True:
        what, value = await job.next_event()
        events.append((what, value))
        if what in ("answer", "end", "error"):
            return events


def test_jobs_run_one_at_a_time_in_arrival_order():
    llama = FakeLlama()
    worker = ModelWorker(llama, "fake")

    async def main():
        jobs = [Job(f"job{i}", lambda ll, job: tokens(ll, job, 3, 0.002)) for i in range(8)]
        for job in jobs:
            worker.submit(job)
        return await asyncio.gather(*(collect(job) for job in jobs))

    results = asyncio.run(main())
    worker.close()
    assert llama.order == [f"job{i}" for i in range(8)]
    assert llama.most_inside == 1 and llama.closed
    for events in results:
        assert [w for w, _ in events] == ["start", "chunk", "chunk", "chunk", "end"]


def test_cancel_stops_before_the_next_token_and_skips_queued_jobs():
    llama = FakeLlama()
    worker = ModelWorker(llama, "fake")

    async def main():
        running = Job("long", lambda ll, job: tokens(ll, job, 10_000, 0.001))
        queued = Job("queued", lambda ll, job: tokens(ll, job, 5))
        after = Job("after", lambda ll, job: {"ok": True})
        for job in (running, queued, after):
            worker.submit(job)
        assert (await running.next_event())[0] == "start"
        await running.next_event()
        queued.cancel()
        running.cancel()
        at_cancel = running.tokens
        return running, at_cancel, await collect(after)

    running, at_cancel, after_events = asyncio.run(main())
    worker.close()
    assert after_events == [("answer", {"ok": True})]
    assert llama.order == ["long"]                  # the cancelled queued job never ran
    assert running.tokens <= at_cancel + 1          # the token being made when it was cancelled
    left = []
    while not running.events.empty():
        left.append(running.events.get_nowait()[0])
    assert set(left) <= {"chunk"}                   # no end: the stream was cut, not finished


def test_a_failing_job_reports_to_itself_only():
    worker = ModelWorker(FakeLlama(), "fake")

    def broken(llama, job):
        raise ValueError("bad prompt")

    async def main():
        bad, good = Job("bad", broken), Job("good", lambda ll, job: {"fine": 1})
        worker.submit(bad)
        worker.submit(good)
        return await collect(bad), await collect(good)

    bad_events, good_events = asyncio.run(main())
    worker.close()
    assert bad_events[0][0] == "error" and str(bad_events[0][1]) == "bad prompt"
    assert good_events == [("answer", {"fine": 1})]
