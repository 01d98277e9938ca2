"""Pieces shared by the sub-commands."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from entrolab.errors import EntrolabError

_WORDS: dict[str, Any] = {"true": True, "false": False, "none": None, "null": None}


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


@contextmanager
def stage_progress(
    console: Console, label: str = "", *, total: int | None = None, stage: str = "starting"
) -> Iterator[Callable[..., None]]:
    """A transient progress bar ``[label] stage ━━━ done/total rate/s elapsed ETA remaining`` with
    transformers' own bars silenced meanwhile (the one progress display of every command). When
    ``console`` is not a terminal (output piped or redirected), :class:`PlainProgress` prints
    periodic plain lines on stderr instead.

    Yields ``update(done, total, stage=None)``: sets the bar to ``done`` of ``total`` items and,
    when ``stage`` is given, the text after ``label``. ``total=None`` starts an open-ended bar.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not console.is_terminal:  # piped or redirected: periodic plain lines on stderr instead
        with quiet_hf_progress():
            yield PlainProgress(label, stage, total).update
        return
    head = f"[bold]{label} " if label else "[bold]"
    progress = Progress(
        TextColumn(head + "{task.fields[stage]}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with quiet_hf_progress(), progress:
        bar = progress.add_task(label or "run", total=total, stage=stage)

        def update(done: int, total: int | None, stage: str | None = None) -> None:
            fields = {} if stage is None else {"stage": stage}
            progress.update(bar, completed=done, total=total, **fields)

        yield update


#: Seconds between two plain progress lines when output is not a terminal (env override).
PLAIN_PROGRESS_ENV = "ENTROLAB_PROGRESS_SECONDS"
PLAIN_PROGRESS_SECONDS = 10.0


class PlainProgress:
    """Progress as plain lines on stderr for output that is not a terminal (a pipe, a log file,
    CI): ``label stage: done/total (pct) rate/s elapsed 0:00:12 ETA 0:01:48``.

    A line is printed at the first update, when the stage text changes, when ``done`` reaches
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
        new_stage = stage is not None and stage != self.stage
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


def resume_command(argv: Sequence[str] | None = None) -> str:
    """The command line that was run, as ``entrolab …`` quoted for a POSIX shell (the command that
    resumes a resumable run: the same one again)."""
    import shlex
    import sys

    return shlex.join(["entrolab", *(sys.argv[1:] if argv is None else argv)])


@contextmanager
def on_interrupt(console: Console, saved: str, *, resumable: bool = True) -> Iterator[None]:
    """Turn Ctrl-C (KeyboardInterrupt) into one line saying what was saved and the exact command
    that resumes (or restarts) the work, then exit with status 130.

    ``saved`` says what is on disk, e.g. ``"finished items are in runs/x/results.jsonl"``.
    """
    try:
        yield
    except KeyboardInterrupt:
        import typer

        verb = "resume with" if resumable else "run again with"
        console.print(
            Text.assemble(
                ("interrupted: ", "bold yellow"), f"{saved}; {verb}: ", (resume_command(), "bold")
            ),
            soft_wrap=True,
        )
        raise typer.Exit(130) from None


def load_backend(console: Console, model: str | None, dtype: str, allow_download: bool = False):
    """Load a model behind a spinner (transformers' own progress bars silenced meanwhile)."""
    from entrolab.backends import HFBackend
    from entrolab.models import DEFAULT_MODEL, EMBEDDED, converted_dir

    name = model or DEFAULT_MODEL
    first = name in EMBEDDED and not (converted_dir(name) / "model.safetensors").is_file()
    what = "converting the embedded model once (~20 s)" if first else f"loading {name}"
    if not console.is_terminal:  # no spinner in a pipe: one plain line on stderr
        Console(stderr=True, highlight=False).print(f"{what}…", markup=False)
    with quiet_hf_progress(), console.status(Text(f"{what}…", style="bold")):
        return HFBackend.load(name, dtype=dtype, allow_download=allow_download)  # type: ignore[arg-type]


def parse_value(text: str) -> Any:
    """One ``--param``/``--task-setting`` value: JSON when it parses (numbers, ``true``,
    ``null``, lists, quoted strings), else ``True``/``False``/``None`` spelled in any case, else
    the text itself with surrounding spaces removed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        word = text.strip()
        return _WORDS.get(word.lower(), word)


def format_value(value: Any) -> str:
    """Inverse of :func:`parse_value`: ``value`` as typed on the command line (strings bare
    when they read back as themselves, anything else as JSON)."""
    if isinstance(value, str) and parse_value(value) == value:
        return value
    return json.dumps(value)


def parse_params(
    pairs: Sequence[str] | None, *, option: str = "--param", example: str = "tau=0.9"
) -> dict[str, Any]:
    """``["tau=0.9", "voter=majority"]`` → ``{"tau": 0.9, "voter": "majority"}``.

    Values go through :func:`parse_value`; keys are stripped. ``option`` and ``example`` name
    the flag and a valid pair in error messages.

    Raises:
        EntrolabError: a pair without ``=`` or with an empty key, or a key given twice.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EntrolabError(f"{option} takes KEY=VALUE (e.g. {option} {example}), got {pair!r}")
        if key in out:
            raise EntrolabError(f"{option} {key}=… is given twice; keep one of them")
        out[key] = parse_value(value)
    return out


#: The one spelling of method parameters on every command (shown in errors and deprecations).
PARAM_FORM = "--param [NAME.]KEY=VALUE"


def method_params(
    pairs: Sequence[str] | None,
    names: Sequence[str],
    *,
    what: str = "method",
    bare: bool = True,
    alias: Callable[[str], str] | None = None,
    example: str = "tau=0.9",
) -> dict[str, dict[str, Any]]:
    """Parse ``--param [NAME.]KEY=VALUE`` pairs (the one parameter convention of the CLI) into
    ``{name: {key: value}}`` for the methods ``names`` a command runs.

    ``NAME.KEY=VALUE`` sets ``KEY`` of method ``NAME`` only; a bare ``KEY=VALUE`` sets it for
    every method in ``names``, and a ``NAME.KEY`` beats a bare ``KEY`` (``bare=False`` forbids that, for commands whose methods share no
    parameters). Values follow :func:`parse_value`. ``alias`` maps a NAME as typed to the name
    in ``names`` (e.g. a registry alias to its canonical name; default: unchanged).

    Raises:
        EntrolabError: a pair that is not ``[NAME.]KEY=VALUE``, a NAME the command does not
            run, a bare KEY where ``bare=False``, or the same (NAME, KEY) given twice. The
            message shows the right spelling.
    """
    shared: dict[str, Any] = {}  # bare KEY=VALUE; a NAME.KEY=VALUE overrides it for NAME
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        target, dot, sub = key.rpartition(".") if "." in key else ("", "", key)
        if not sep or not sub or (dot and not target):
            raise EntrolabError(
                f"--param takes [NAME.]KEY=VALUE, e.g. --param {example}; got {pair!r}"
            )
        if dot:
            name = alias(target) if alias is not None else target
            if name not in out:
                raise EntrolabError(
                    f"--param {key}=…: {target!r} is not one of the {_plural(what)} run "
                    f"({', '.join(names) or 'none'}); write --param NAME.{sub}=VALUE with NAME "
                    "one of them"
                )
            if sub in out[name]:
                raise EntrolabError(f"--param {name}.{sub}=… is given twice; keep one of them")
            out[name][sub] = parse_value(raw)
        elif bare:
            if sub in shared:
                raise EntrolabError(f"--param {sub}=… is given twice; keep one of them")
            shared[sub] = parse_value(raw)
        else:
            raise EntrolabError(
                f"--param {key}=…: say which {what} it is for: --param NAME.{key}=VALUE "
                f"(e.g. --param {example})"
            )
    return {n: {**shared, **own} for n, own in out.items()}


def _plural(word: str) -> str:
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def deprecated(console: Console, old: str, new: str) -> None:
    """One line on ``console`` saying that spelling ``old`` is deprecated (it still works in this
    release) and what to write instead."""
    console.print(
        Text.assemble(
            ("deprecated: ", "bold yellow"),
            f"{old} still works in this release but will be removed; write ",
            (new, "bold"),
        ),
        soft_wrap=True,
    )


def task_and_items(
    task: str, settings: Sequence[str] | None, n: int, seed: int
) -> tuple[Any, list]:
    """Load task spec ``task`` with its ``--task-setting`` pairs and draw ``n`` items."""
    from entrolab.tasks import load_task

    if n < 1:
        raise EntrolabError("--n must be >= 1 (the number of items)")
    task_obj = load_task(task, **parse_params(settings, option="--task-setting", example="level=2"))
    return task_obj, task_obj.items(n, seed=seed)
