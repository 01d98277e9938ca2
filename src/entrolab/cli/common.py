"""Pieces shared by the sub-commands."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.text import Text

from entrolab.errors import EntrolabError
from entrolab.report.progress import (  # noqa: F401 - the commands' progress helpers, re-exported
    PlainProgress,
    StageProgress,
    _rate_text,
    busy,
    quiet_hf_progress,
    stage_progress,
)

_WORDS: dict[str, Any] = {"true": True, "false": False, "none": None, "null": None}


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
    with quiet_hf_progress(), busy(console, what):
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
