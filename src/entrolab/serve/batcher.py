"""Micro-batching: requests that arrive within a short window share one ``backend.generate``.

One worker thread owns the backend (in-process backends are not thread-safe). It blocks for the
first job, then keeps collecting jobs for ``window_s`` seconds or until ``max_rows`` rows
(prompts × samples) are waiting, groups the collected jobs whose generation settings are equal
apart from the seed, and runs each group as one ``generate`` call with one seed per prompt
(``seeds=``), so every request's samples are exactly what it would get alone. Jobs that cannot
share a call (DeepConf early stopping, echo scoring) run alone, in arrival order.

This is *micro-batching*: a request arriving while a batch decodes waits for that batch to
finish. Backends that declare ``continuous_batching`` are served by
:class:`~entrolab.serve.continuous.ContinuousBatcher` instead (``--batching``). The queue is bounded: :meth:`Batcher.submit` raises :class:`QueueFull`
when ``max_queue`` jobs are waiting or running (the server answers 429).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from entrolab.config import GenerationConfig
from entrolab.types import TraceBatch

__all__ = ["Batcher", "Job", "QueueFull", "by_prompt"]


class QueueFull(Exception):
    """The batcher holds ``max_queue`` jobs already."""


@dataclass
class Job:
    """One request's work.

    Attributes:
        prompts: P prompts (text or token ids).
        config: generation settings (``num_samples`` = the request's n).
        seeds: P per-prompt base seeds.
        run: for jobs that cannot be batched: ``run(backend) -> result`` (then prompts,
            config and seeds are unused).
        post: ``post(result) -> result`` run on the worker thread before the future resolves
            (work that must not race the backend, e.g. tokenizer calls).
        future: resolves to a list of P lists of traces (sample order), or ``run``'s result.
        on_tokens: a per-step token callback (continuous batching only; see
            :data:`~entrolab.backends.hf_rows.TokenCallback`), for streaming.
        cancelled: set by the server when the client went away; the continuous batcher then
            drops the request's rows (its future resolves to None).
    """

    prompts: Sequence[Any] = ()
    config: GenerationConfig | None = None
    seeds: Sequence[int] = ()
    run: Callable[[Any], Any] | None = None
    post: Callable[[Any], Any] | None = None
    future: Future = field(default_factory=Future)
    on_tokens: Callable[..., None] | None = None
    cancelled: bool = False

    @property
    def rows(self) -> int:
        return len(self.prompts) * (self.config.num_samples if self.config else 1)

    def key(self) -> str | None:
        """Jobs with equal keys can share a ``generate`` call (None: run alone)."""
        if self.run is not None or self.config is None:
            return None
        settings = self.config.to_dict()
        settings.pop("seed")
        return json.dumps(settings, sort_keys=True, default=str)


class Batcher:
    """The worker thread and its bounded queue (micro-batching).

    Args:
        backend: the backend every job runs on.
        max_queue: jobs waiting or running at most (more → :class:`QueueFull`).
        window_s: how long to gather jobs after the first one arrives (seconds).
        max_rows: rows (prompts × samples) that end the gathering early.
    """

    def __init__(
        self, backend: Any, *, max_queue: int = 256, window_s: float = 0.01, max_rows: int = 64
    ) -> None:
        self.backend = backend
        self.max_queue, self.window_s, self.max_rows = max_queue, window_s, max_rows
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.stats = {"jobs": 0, "calls": 0, "rows": 0, "max_batch_jobs": 0}

    #: the batching mode reported by ``/health``
    mode = "micro-batching"

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="entrolab-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, job: Job) -> Future:
        """Queue ``job``; raises :class:`QueueFull` when the queue is at ``max_queue``."""
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull
            self._pending += 1
        job.future.add_done_callback(self._done)
        self._queue.put(job)
        return job.future

    def _done(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    # ------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        carry: list[Job] = []
        while True:
            first = carry.pop(0) if carry else self._queue.get()
            if first is None:
                return
            jobs, rows = [first], first.rows
            deadline = time.monotonic() + self.window_s
            while first.run is None and rows < self.max_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:  # stop after this batch
                    carry.append(nxt)
                    break
                if nxt.run is not None:  # a job that runs alone keeps its place for later
                    carry.append(nxt)
                    break
                jobs.append(nxt)
                rows += nxt.rows
            self._run(jobs)

    def _run(self, jobs: list[Job]) -> None:
        groups: dict[str | None, list[Job]] = {}
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                groups.setdefault(job.key() if job.run is None else id(job), []).append(job)  # type: ignore[arg-type]
        self.stats["max_batch_jobs"] = max(self.stats["max_batch_jobs"], len(jobs))
        for group in groups.values():
            self.stats["jobs"] += len(group)
            self.stats["calls"] += 1
            try:
                if group[0].run is not None:
                    _resolve(group[0], group[0].run(self.backend))
                    continue
                self._generate(group)
            except BaseException as err:
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(err)

    def _generate(self, group: list[Job]) -> None:
        prompts = [p for job in group for p in job.prompts]
        seeds = [s for job in group for s in job.seeds]
        config = group[0].config
        self.stats["rows"] += len(prompts) * config.num_samples  # type: ignore[union-attr]
        batch: TraceBatch = self.backend.generate(prompts, config, seeds=seeds)
        groups = by_prompt(batch, len(prompts))
        start = 0
        for job in group:
            _resolve(job, groups[start : start + len(job.prompts)])
            start += len(job.prompts)


def by_prompt(traces: Any, prompts: int) -> list[list[Any]]:
    """Traces grouped by ``prompt_index`` (P lists, sample order kept)."""
    out: list[list[Any]] = [[] for _ in range(prompts)]
    for trace in traces:
        out[trace.prompt_index].append(trace)
    return out


def _resolve(job: Job, result: Any) -> None:
    try:
        job.future.set_result(result if job.post is None else job.post(result))
    except BaseException as err:
        job.future.set_exception(err)
