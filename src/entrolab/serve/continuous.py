"""Continuous batching: requests join the running decode between steps and leave when done.

One worker thread owns the backend's step-wise engine (``backend.engine()``, a
:class:`~entrolab.backends.hf_rows.GenerationEngine`; backends declare it with the
``continuous_batching`` capability). The thread loops: take the requests that arrived, admit
those that fit under ``max_rows`` decoding rows (they are prefilled together at the next step
and merged into the running batch), run one decode step, resolve the requests that finished.
A request never waits for another request's decode to end, only for rows to free up; every row
keeps its own generator and positions, so a request's answer is what it gets alone.

Requests that cannot join a decode (DeepConf early stopping, echo scoring) run on the same
thread between two steps. When the engine is idle the thread blocks; the first request then
waits ``window_s`` for others that arrive with it, so simultaneous requests share one prefill.
A request whose client went away (``job.cancelled``) leaves at the next step.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from typing import Any

from entrolab.serve.batcher import Batcher, Job, _resolve, by_prompt

__all__ = ["ContinuousBatcher"]


class ServerStopping(Exception):
    """The server shut down before the request finished."""


class ContinuousBatcher(Batcher):
    """The worker thread of continuous batching (same queue, ``submit`` and 429 as
    :class:`~entrolab.serve.batcher.Batcher`).

    Args:
        backend: a backend with the ``continuous_batching`` capability.
        max_queue: requests waiting or running at most (more → ``QueueFull``).
        window_s: how long an idle engine gathers requests before its first step (seconds).
        max_rows: rows (prompts × n) decoding at once; a request that does not fit waits for
            rows to leave (a request larger than ``max_rows`` runs when the engine is empty).
    """

    mode = "continuous"

    def __init__(
        self, backend: Any, *, max_queue: int = 256, window_s: float = 0.01, max_rows: int = 64
    ) -> None:
        super().__init__(backend, max_queue=max_queue, window_s=window_s, max_rows=max_rows)
        self.stats.update(steps=0, joined_running=0, max_rows_decoding=0, cancelled=0)

    def _loop(self) -> None:
        engine = self.backend.engine()
        waiting: deque[Job] = deque()
        running: dict[int, Job] = {}
        stopping = False
        while True:
            idle = engine.idle and not waiting
            if stopping:
                self._fail([*waiting, *running.values()])
                return
            stopping = self._collect(waiting, block=idle)
            self._admit(engine, waiting, running)
            for handle, job in list(running.items()):
                if job.cancelled:
                    engine.cancel(handle)
                    running.pop(handle)
                    self.stats["cancelled"] += 1
                    if not job.future.done():
                        job.future.set_result(None)
            if engine.idle:
                continue
            self.stats["max_rows_decoding"] = max(self.stats["max_rows_decoding"], engine.rows)
            try:
                finished = engine.step()
            except BaseException as err:  # a failed step: every running request fails
                for job in running.values():
                    if not job.future.done():
                        job.future.set_exception(err)
                running.clear()
                engine.reset()
                continue
            self.stats["steps"] += 1
            for handle, traces in finished:
                job = running.pop(handle)
                _resolve(job, by_prompt(traces, len(job.prompts)))

    def _collect(self, waiting: deque[Job], *, block: bool) -> bool:
        """Move arrived jobs to ``waiting`` (blocking for the first when idle); True on stop."""
        try:
            job = self._queue.get() if block else self._queue.get_nowait()
        except queue.Empty:
            return False
        deadline = time.monotonic() + (self.window_s if block else 0.0)
        while True:
            if job is None:
                return True
            waiting.append(job)
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False

    def _admit(self, engine: Any, waiting: deque[Job], running: dict[int, Job]) -> None:
        """Start the waiting jobs that fit, in arrival order (jobs that run alone run now)."""
        while waiting:
            job = waiting[0]
            if job.run is None and engine.rows and engine.rows + job.rows > self.max_rows:
                return
            waiting.popleft()
            if not job.future.set_running_or_notify_cancel():
                continue
            if job.cancelled:  # the client went away while the request waited
                job.future.set_result(None)
                self.stats["cancelled"] += 1
                continue
            self.stats["jobs"] += 1
            if job.run is not None:
                self.stats["calls"] += 1
                try:
                    _resolve(job, job.run(self.backend))
                except BaseException as err:
                    job.future.set_exception(err)
                continue
            joins_running = not engine.idle
            try:
                handle = engine.add(
                    job.prompts, job.config, seeds=job.seeds, on_tokens=job.on_tokens
                )
            except BaseException as err:
                job.future.set_exception(err)
                continue
            running[handle] = job
            self.stats["rows"] += job.rows
            self.stats["joined_running"] += int(joins_running)
            self.stats["max_batch_jobs"] = max(self.stats["max_batch_jobs"], len(running))

    @staticmethod
    def _fail(jobs: list[Job]) -> None:
        for job in jobs:
            f = job.future
            if f.done() or (not f.running() and not f.set_running_or_notify_cancel()):
                continue
            f.set_exception(ServerStopping("the server is shutting down"))
