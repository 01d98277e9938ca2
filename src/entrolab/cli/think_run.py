"""The run directory of ``entrolab think``: resumable, chunked runs of one strategy.

Layout (the :class:`~entrolab.evaluation.rundir.RunDir` of ``entrolab eval``/``pareto``)::

    RUN_DIR/
      config.json     strategy, params, task, model, dtype, seed, item ids (a resume must match)
      results.jsonl   one row per finished item: {index, reference, prompt, **ItemOutcome}
      summary.json    the record: settings, summary (accuracy, tokens, …) and warnings

A run interrupted between chunks resumes from the rows already written. Every item's samples are
drawn from its own seed (``item_seeds``), but batching items together changes the logits in the
last bits, which can flip a confidence threshold; so chunks are appended whole and ``chunk`` is
part of the settings: a resumed run batches exactly as an uninterrupted one and equals it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from entrolab.errors import EntrolabError

SUMMARY = "summary.json"


def run_think(
    strategy: Any,
    backend: Any,
    task: Any,
    items: Sequence[Any],
    config: dict[str, Any],
    run_dir: str | Path,
    *,
    seed: int = 0,
    chunk: int = 8,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``strategy`` on the ``items`` not yet in ``run_dir``, ``chunk`` items per checkpoint;
    write ``summary.json`` and return the record (settings, ``summary``, ``items``, ``warnings``).

    ``on_progress(items_done, items_total)`` counts resumed items as done. ``on_warning`` gets
    the unparseable-replies warning once, as soon as the first chunk shows it.

    Raises:
        EntrolabError: ``run_dir`` is a file (an older single-file result) or holds a run with
            other settings (unless ``overwrite``).
    """
    from entrolab.evaluation.rundir import RunDir
    from entrolab.fileio import atomic_write_text
    from entrolab.inference.base import ItemOutcome, summarize_outcomes
    from entrolab.inference.degenerate import strategy_warnings, unparseable_warning
    from entrolab.tasks.base import json_safe

    path = Path(run_dir)
    if path.is_file():
        raise EntrolabError(
            f"{path} is a single-file result of an older entrolab; think now writes a run "
            f"directory: show the old file with `entrolab think --report {path} --strategy "
            f"{config['strategy']}` and pass a directory to --out"
        )
    run = RunDir(path).open(config, overwrite=overwrite)
    done = {int(r["index"]): r for r in run.rows()}
    total = len(items)
    todo = [i for i in range(total) if i not in done]
    warned = False
    if on_progress is not None:
        on_progress(total - len(todo), total)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        base = total - len(todo) + start

        def progress(k: int, _n: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + k, total)

        outcomes = strategy.run(
            backend, task, [items[i] for i in part], seed=seed, on_progress=progress
        )
        rows = [
            json_safe(
                {"index": i, "reference": items[i].answer, "prompt": items[i].prompt, **o.to_dict()}
            )  # any answer type (rg: datasets) survives the JSON line
            for i, o in zip(part, outcomes, strict=True)
        ]
        run.append(rows)
        done.update((r["index"], r) for r in rows)
        if not warned and on_warning is not None:
            line = unparseable_warning(_answers(rows))
            if line:
                on_warning(line)
                warned = True
    rows = [done[i] for i in range(total)]
    outcomes = [ItemOutcome.from_dict(r) for r in rows]
    warnings = strategy_warnings(strategy)
    late = unparseable_warning(_answers(rows))
    record = {
        **{k: v for k, v in config.items() if k != "items"},
        "summary": summarize_outcomes(outcomes),
        "warnings": warnings + ([late] if late else []),
        "items": rows,
    }
    atomic_write_text(
        path / SUMMARY,
        json.dumps({k: v for k, v in record.items() if k != "items"}, indent=2, default=str),
    )
    return record


def _answers(rows: Sequence[dict[str, Any]]) -> list[str | None]:
    """Every trace's parsed answer key over ``rows`` (``meta["answers"]``), or the item's chosen
    answer where a strategy stores no per-trace answers."""
    out: list[str | None] = []
    for r in rows:
        out += r.get("meta", {}).get("answers", [r.get("answer")])
    return out


def load_think_run(path: str | Path, console: Console) -> tuple[dict[str, Any], str]:
    """``(record, title)`` of a think run directory, or of an older single-file JSON result
    (said so on ``console``)."""
    from entrolab.evaluation.rundir import RunDir
    from entrolab.inference.base import ItemOutcome, summarize_outcomes

    path = Path(path)
    if path.is_file():
        console.print(
            f"{path} is a single-file result of an older entrolab (new runs write a run "
            "directory); showing it",
            style="yellow",
        )
        record = json.loads(path.read_text(encoding="utf-8"))
        for i, it in enumerate(record.get("items", [])):
            it.setdefault("index", i)
        return record, str(record.get("strategy", ""))
    run = RunDir(path)
    config = run.config()
    rows = sorted(run.rows(), key=lambda r: int(r["index"]))
    if not rows:
        raise EntrolabError(f"{path} holds no finished items yet; run the think command first")
    record = {
        **{k: v for k, v in config.items() if k != "items"},
        "summary": summarize_outcomes([ItemOutcome.from_dict(r) for r in rows]),
        "items": rows,
    }
    summary = path / SUMMARY
    if summary.is_file():  # the warnings of the finished run
        record["warnings"] = json.loads(summary.read_text(encoding="utf-8")).get("warnings", [])
    if len(rows) < len(config.get("items", rows)):
        console.print(
            f"{path}: {len(rows)} of {len(config['items'])} items finished (run the same think "
            "command again to resume)",
            style="yellow",
        )
    return record, str(config.get("strategy", ""))


def confidence_note(record: dict[str, Any]) -> str:
    """One line on DeepConf's confidence for deepconf-* runs: what it is and its unit (nats),
    with the run's mean lowest-window confidence and stop threshold where stored."""
    if not str(record.get("strategy", "")).startswith("deepconf"):
        return ""
    lows = [c for it in record["items"] for c in it.get("meta", {}).get("lowest_window", [])]
    ths = [it["meta"]["threshold"] for it in record["items"] if "threshold" in it.get("meta", {})]
    line = (
        "DeepConf confidence = -mean log-probability of the top-k tokens (k=20), in nats "
        "(>= 0, higher = more confident; not a probability)"
    )
    if lows:
        line += f"; mean lowest-window confidence {sum(lows) / len(lows):.3f} nats"
    if ths:
        line += f", mean stop threshold {sum(ths) / len(ths):.3f} nats"
    return line
