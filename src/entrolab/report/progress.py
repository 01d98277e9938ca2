"""The one progress display of every command and long stage (CLI commands, the RL trainer's
SFT and RL stages): a transient rich bar with items done / total, rate and ETA in a terminal,
and periodic plain lines on stderr when output is piped or redirected (logs, CI).

None of it affects what is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import ProgressColumn, Task
from rich.text import Text

__all__ = [
    "PLAIN_PROGRESS_ENV",
    "PlainProgress",
    "StageProgress",
    "busy",
    "quiet_hf_progress",
    "stage_progress",
]


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Silence transformers' own progress bars (ours are shown instead); restores the setting."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class StageProgress:
    """A transient progress bar ``label stage ━━━ done/total rate/s elapsed ETA remaining`` on
    ``console`` (the one progress display of every command and stage), or, when ``console`` is
    not a terminal (output piped or redirected), :class:`PlainProgress` lines on stderr.

    ``start()``, then ``update(done, total, stage=None)`` as work finishes (``stage`` changes the
    text after ``label``; ``total=None`` is an open-ended bar), then ``close()``. ``done`` may
    start above 0 (a resumed run). :func:`stage_progress` is the context-manager form.
    """

    def __init__(
        self,
        console: Console | None,
        label: str = "",
        *,
        total: int | None = None,
        stage: str = "",
        done: int = 0,
    ) -> None:
        self.console = console or Console()
        self.label, self.total, self.stage, self.done = label, total, stage, done
        self._bar: Any = None
        self._plain: PlainProgress | None = None

    def start(self) -> StageProgress:
        if not self.console.is_terminal:
            self._plain = PlainProgress(self.label, self.stage, self.total)
            self._plain.update(self.done, self.total)
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        head = f"[bold]{escape(self.label)} " if self.label else "[bold]"
        self._bar = Progress(
            TextColumn(head + "{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(
            self.label or "run", total=self.total, completed=self.done, stage=self.stage
        )
        return self

    def update(self, done: int, total: int | None = None, stage: str | None = None) -> None:
        """Set the bar to ``done`` of ``total`` (None keeps the last total) items."""
        total = self.total if total is None else total
        self.total = total
        if self._plain is not None:
            self._plain.update(done, total, stage)
        elif self._bar is not None:
            fields = {} if stage is None else {"stage": stage}
            self._bar.update(self._task, completed=done, total=total, **fields)

    def close(self) -> None:
        """Remove the bar (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def stage_progress(
    console: Console, label: str = "", *, total: int | None = None, stage: str = "starting"
) -> Iterator[Callable[..., None]]:
    """:class:`StageProgress` as a context manager, with transformers' own progress bars
    silenced meanwhile. Yields ``update(done, total, stage=None)``."""
    bar = StageProgress(console, label, total=total, stage=stage)
    with quiet_hf_progress():
        bar.start()
        try:
            yield bar.update
        finally:
            bar.close()


@contextmanager
def busy(console: Console, what: str) -> Iterator[None]:
    """A spinner with ``what…`` on ``console`` for work of unknown length, or one plain line
    ``what…`` on stderr when ``console`` is not a terminal."""
    if not console.is_terminal:
        Console(stderr=True, highlight=False).print(f"{what}…", markup=False)
        yield
        return
    with console.status(Text(f"{what}…", style="bold")):
        yield


#: Seconds between two plain progress lines when output is not a terminal (env override).
PLAIN_PROGRESS_ENV = "ENTROLAB_PROGRESS_SECONDS"
PLAIN_PROGRESS_SECONDS = 10.0


class PlainProgress:
    """Progress as plain lines on stderr for output that is not a terminal (a pipe, a log file,
    CI): ``label stage: done/total (pct) rate/s elapsed 0:00:12 ETA 0:01:48``.

    A line is printed at the first update, when the stage text changes (other than in its
    numbers: ``"12 tokens"`` → ``"13 tokens"`` is no change), when ``done`` reaches
    ``total``, and otherwise at most every ``every`` seconds (default
    ``$ENTROLAB_PROGRESS_SECONDS`` or :data:`PLAIN_PROGRESS_SECONDS`). The rate counts only the
    items done since the first update (resumed items do not inflate it).
    """

    def __init__(
        self,
        label: str,
        stage: str = "",
        total: int | None = None,
        *,
        every: float | None = None,
        console: Console | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import os
        import time

        if every is None:
            try:
                every = float(os.environ.get(PLAIN_PROGRESS_ENV, PLAIN_PROGRESS_SECONDS))
            except ValueError:
                every = PLAIN_PROGRESS_SECONDS
        self.label, self.stage, self.total, self.every = label, stage, total, every
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.clock = clock or time.monotonic
        self.start: float | None = None
        self.first_done = 0
        self.last: float | None = None
        self.finished = False

    def update(self, done: int, total: int | None, stage: str | None = None) -> None:
        """Record ``done`` of ``total``; print a line when one is due (see the class doc)."""
        now = self.clock()
        if self.start is None:
            self.start, self.first_done = now, done
        new_stage = stage is not None and _shape(stage) != _shape(self.stage)
        if stage is not None:
            self.stage = stage
        self.total = total
        final = total is not None and done >= total
        due = self.last is None or new_stage or now - self.last >= self.every
        if final and not self.finished:
            due, self.finished = True, True
        elif final:
            due = False
        if due:
            self.last = now
            self.console.print(self.line(done, now), markup=False, highlight=False)

    def line(self, done: int, now: float) -> str:
        """The text of one progress line at time ``now`` with ``done`` items finished."""
        elapsed = now - (self.start if self.start is not None else now)
        made = done - self.first_done
        speed = made / elapsed if elapsed > 0 and made > 0 else None
        head = " ".join(x for x in (self.label, self.stage) if x) or "progress"
        if self.total:
            count = f"{done}/{self.total} ({100 * done / self.total:.0f}%)"
        else:
            count = f"{done} done"
        eta = "–"
        if speed and self.total:
            eta = _clock(max(self.total - done, 0) / speed)
        return f"{head}: {count} {_rate_text(speed)} elapsed {_clock(elapsed)} ETA {eta}"


def _shape(stage: str) -> str:
    """A stage text with its numbers blanked: ``"12 tokens"`` and ``"13 tokens"`` are one stage
    (no extra line), ``"generating"`` → ``"scoring"`` is a new one."""
    import re

    return re.sub(r"[-+]?\d[\d.,e+-]*", "#", stage)


def _clock(seconds: float) -> str:
    """``h:mm:ss`` as rich's time columns show it."""
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _rate_text(speed: float | None) -> str:
    """Items per second as shown in the bar: ``"0.25/s"``; ``"–/s"`` before the first item."""
    if not speed:
        return "–/s"
    return f"{speed:.2f}/s" if speed < 10 else f"{speed:.0f}/s"


class _RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        return Text(_rate_text(task.speed), style="cyan")
