"""Each served model lives on one thread of its own, which runs the
requests for it one at a time in arrival order: a Llama holds one KV cache
and is not thread-safe, and running requests whole, first come first served,
keeps the prompt cache useful (a follow-up chat turn only evaluates what is
new) and makes waiting times fair.

A request is a Job: a function of the Llama that returns a dict (an answer)
or an iterator of dicts (a stream). The thread reports back to the event
loop through the job's asyncio queue and never waits on the client: a slow
reader only lets its own chunks pile up (at most max_tokens of them) while
the model moves on. Cancelling a job (its client went away) stops it before
its next token, by a logits processor that raises; a queued job that was
cancelled is skipped."""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from ..llama import Llama
from ..sampling import LogitsProcessorList

log = logging.getLogger("llamalite.server")

Work = Callable[[Llama, "Job"], Union[dict, Iterator[dict]]]


class Cancelled(Exception):
    """Raised on the model's thread, before the next token of a cancelled job."""


class Job:
    """One request's work for a model, and the events it sends back:
    ("answer", dict), or ("start", None) ("chunk", dict)... ("end", None),
    or ("error", exception) at any point."""

    def __init__(self, name: str, work: Work):
        self.name, self.work = name, work
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.tokens = 0                    # sampled so far
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def watcher(self) -> LogitsProcessorList:
        """A logits processor that counts tokens and stops a cancelled job."""
        def watch(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if self._cancelled.is_set():
                raise Cancelled
            self.tokens += 1
            return scores
        return LogitsProcessorList([watch])

    def post(self, kind: str, value: Any = None) -> None:
        """Send an event to the waiting request (from the model's thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:   # the event loop is gone: nobody is waiting any more
            self.cancel()

    async def next_event(self) -> tuple:
        return await self.events.get()


class ModelWorker:
    """A Llama and the thread that runs its jobs in arrival order."""

    def __init__(self, llama: Llama, alias: str):
        self.llama, self.alias = llama, alias
        self._jobs: "queue.Queue[Optional[Job]]" = queue.Queue()
        self.busy = False
        self._thread = threading.Thread(target=self._serve, name=f"model {alias}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def close(self) -> None:
        """Finish the job at hand and those queued, then free the model."""
        self._jobs.put(None)
        self._thread.join()
        self.llama.close()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancelled:
                log.info("%s: cancelled while waiting; skipped", job.name)
                continue
            self.busy = True
            try:
                self._run(job)
            finally:
                self.busy = False

    def _run(self, job: Job) -> None:
        started = time.perf_counter()
        try:
            result = job.work(self.llama, job)
            if isinstance(result, dict):
                job.post("answer", result)
            else:
                job.post("start")
                for chunk in result:
                    job.post("chunk", chunk)
                job.post("end")
            if job.tokens:
                # what the prompt cache saved shows here: a follow-up turn evaluates few
                log.info("%s: %d prompt tokens evaluated, %d sampled, %.2f s", job.name,
                         self.llama._timings.prompt_tokens, job.tokens,
                         time.perf_counter() - started)
        except Cancelled:
            log.info("%s: cancelled (client gone or server stopping) after %d tokens", job.name,
                     job.tokens)
        except Exception as e:  # the request's own failure: reported to it alone
            job.post("error", e)
