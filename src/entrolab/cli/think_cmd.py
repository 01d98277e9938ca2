"""``entrolab think`` (one test-time-compute strategy on a task) and ``entrolab pareto``
(several strategies and budgets: accuracy against generated tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from entrolab.cli.common import method_params, task_and_items
from entrolab.errors import EntrolabError

console = Console()

_MODEL = typer.Option(help="embedded name, HF id or local dir [default: embedded]")
_TASK = typer.Option(help="arithmetic | rg:<dataset> | jsonl:<path>")
_TASK_SETTING = typer.Option(help="task setting KEY=VALUE (repeatable), e.g. level=2")


def think_command(
    strategy: Annotated[str, typer.Option(help="strategy name (`entrolab list strategies`)")],
    budget: Annotated[
        int | None, typer.Option(help="the strategy's budget (traces per item)")
    ] = None,
    task: Annotated[str, _TASK] = "arithmetic",
    task_setting: Annotated[list[str] | None, _TASK_SETTING] = None,
    n: Annotated[int, typer.Option("--n", help="items to run")] = 20,
    param: Annotated[
        list[str] | None,
        typer.Option(help="strategy parameter [STRATEGY.]KEY=VALUE (repeatable), e.g. tau=0.9"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the items and the samples")] = 0,
    model: Annotated[str | None, _MODEL] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    out: Annotated[
        Path | None, typer.Option(help="run directory [default: runs/think-STRATEGY-TASK]")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="discard a run with other settings")] = False,
    chunk: Annotated[
        int, typer.Option(help="items per checkpoint (part of the run's settings)")
    ] = 8,
    report: Annotated[
        Path | None,
        typer.Option(help="show the results of RUN_DIR (or an older single-file JSON) again"),
    ] = None,
) -> None:
    """Run one test-time-compute strategy on a task: accuracy and generated tokens per item.

    Each finished item is appended to RUN_DIR/results.jsonl (settings in config.json, totals in
    summary.json); run the same command again to resume an interrupted run.
    """
    from entrolab.cli.common import load_backend, on_interrupt, stage_progress
    from entrolab.cli.think_run import load_think_run, run_think
    from entrolab.inference.base import make_strategy
    from entrolab.inference.degenerate import strategy_warnings

    if report is not None:
        record, title = load_think_run(report, console)
        for line in record.get("warnings", []):
            _warn(line)
        _print_think(record, title)
        return
    params = method_params(param, [strategy], what="strategy")[strategy]
    if budget is not None:
        params["budget"] = budget
    strat = make_strategy(strategy, **params)  # bad names/params fail before the model loads
    if chunk < 1:
        raise EntrolabError("--chunk must be >= 1 (items per checkpoint)")
    task_obj, items = task_and_items(task, task_setting, n, seed)
    run_dir = out or Path("runs") / f"think-{strategy}-{_slug(task)}"
    for line in strategy_warnings(strat):  # before the model loads
        _warn(line)
    backend = load_backend(console, model, dtype)
    config = {
        "strategy": strategy,
        "params": params,
        "task": task_obj.describe(),
        "model": backend.name,
        "dtype": dtype,
        "seed": seed,
        "chunk": chunk,  # items batched together: float noise of the batch can change results
        "items": [it.id for it in items],
    }
    saved = f"finished items are in {run_dir / 'results.jsonl'}"
    with (
        on_interrupt(console, saved),
        stage_progress(console, strategy, total=len(items), stage="") as update,
    ):
        record = run_think(
            strat, backend, task_obj, items, config, run_dir, seed=seed, chunk=chunk,
            overwrite=overwrite, on_progress=update, on_warning=_warn,
        )  # fmt: skip
    _print_think(record, strategy)
    console.print(Text.assemble("results written to ", (str(run_dir), "bold"), "/"))


def _warn(line: str) -> None:
    console.print(Text.assemble(("warning: ", "bold yellow"), line), soft_wrap=True)


def _print_think(record: dict[str, Any], title: str) -> None:
    """The per-item table and the totals row of a think record (``summary`` + ``items``)."""
    from entrolab.cli.think_run import confidence_note

    summary = record["summary"]
    item_col = Column("item", overflow="fold")  # ids are never cut
    table = Table(item_col, "reference", "answer", "correct", "tokens", "traces", title=title)
    for it in record["items"]:
        mark = Text("yes", "green") if it["correct"] else Text("no", "red")
        table.add_row(
            it["item_id"],
            str(it["reference"]),
            str(it["answer"]),
            mark,
            str(it["generated_tokens"]),
            str(it["num_traces"]),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        f"{summary['answered']}/{summary['n']} answered",
        f"{summary['accuracy']:.3f}",
        f"{summary['generated_tokens']} ({summary['tokens_per_item']:.1f}/item)",
        str(summary["traces"]),
    )
    console.print(table)
    note = confidence_note(record)
    if note:
        console.print(note, style="dim")


def _slug(task: str) -> str:
    return task.replace(":", "-").replace("/", "_")


def _split_list(text: str, what: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    if not out:
        raise EntrolabError(f"--{what} is empty; give a comma-separated list")
    return out


def pareto_command(
    strategies: Annotated[
        str,
        typer.Option(
            help="comma-separated strategy names [default: majority, deepconf-online, adaptive]",
            show_default=False,
        ),
    ] = "majority,deepconf-online,adaptive",
    budgets: Annotated[str, typer.Option(help="comma-separated budgets")] = "1,4,8,16",
    task: Annotated[str, _TASK] = "arithmetic",
    task_setting: Annotated[list[str] | None, _TASK_SETTING] = None,
    n: Annotated[int, typer.Option("--n", help="items per (strategy, budget)")] = 20,
    param: Annotated[
        list[str] | None,
        typer.Option(help="STRATEGY.KEY=VALUE, or KEY=VALUE for every strategy (repeatable)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the items and the samples")] = 0,
    model: Annotated[str | None, _MODEL] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    out: Annotated[
        Path | None, typer.Option(help="run directory [default: runs/pareto-TASK]")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="discard a run with other settings")] = False,
    chunk: Annotated[int, typer.Option(help="items per checkpoint")] = 8,
    report: Annotated[
        Path | None, typer.Option(help="redraw the plot of RUN_DIR without generating")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="strategy the others are compared with [default: majority if run]"),
    ] = None,
) -> None:
    """Accuracy against generated tokens for several strategies and budgets (resumable).

    Every (strategy, budget, item) result is appended to RUN_DIR/results.jsonl; run the same
    command again to resume, or with more strategies/budgets to extend the run. Writes
    RUN_DIR/pareto.svg (one curve per strategy), RUN_DIR/report.html (the figure, the points
    and each strategy against the baseline at the same budget, paired on items),
    RUN_DIR/points.json and RUN_DIR/comparisons.json.
    """
    from entrolab.inference.pareto import run_pareto
    from entrolab.inference.pareto_report import comparison_text, write_pareto_report

    title = task
    if report is not None:
        from entrolab.evaluation.rundir import RunDir

        run_dir = report
        title = str(RunDir(report).config().get("task", {}).get("spec") or "")
    else:
        names = _split_list(strategies, "strategies")
        try:
            sizes = [int(b) for b in _split_list(budgets, "budgets")]
        except ValueError:
            raise EntrolabError(f"--budgets must be integers, got {budgets!r}") from None
        per = method_params(param, names, what="strategy", example="deepconf-online.warmup=4")
        from entrolab.inference.base import make_strategy
        from entrolab.inference.degenerate import strategy_warnings

        for s in names:  # bad names/params fail (and degenerate settings warn) before loading
            for b in sizes:
                for line in strategy_warnings(make_strategy(s, budget=b, **per[s])):
                    console.print(Text(f"warning: {s}@{b}: {line}", style="yellow"))
        task_obj, items = task_and_items(task, task_setting, n, seed)
        from entrolab.cli.common import load_backend, stage_progress

        backend = load_backend(console, model, dtype)
        run_dir = out or Path("runs") / f"pareto-{_slug(task)}"
        config = {"model": backend.name, "task": task_obj.describe(), "n": n, "dtype": dtype}
        total = len(names) * len(sizes) * len(items)
        from entrolab.cli.common import on_interrupt

        saved = f"finished (strategy, budget, item) rows are in {run_dir}/results.jsonl"
        with (
            on_interrupt(console, saved),
            stage_progress(console, "pareto", total=total, stage="") as update,
        ):
            run_pareto(
                backend,
                task_obj,
                items,
                names,
                sizes,
                params=per,
                seed=seed,
                run_dir=run_dir,
                config=config,
                overwrite=overwrite,
                chunk=chunk,
                on_progress=update,
            )
    points, comparisons = write_pareto_report(run_dir, title=title, baseline=baseline)
    table = Table(
        "strategy", "budget", "accuracy [95% CI]", "tokens/item", "answered", "n", title="pareto"
    )
    for p in points:
        table.add_row(
            p.strategy,
            str(p.budget),
            p.accuracy_text(),
            f"{p.tokens_per_item:.1f}",
            str(p.answered),
            str(p.n),
        )
    console.print(table)
    if comparisons:
        paired = Table(
            "strategy",
            "budget",
            "vs",
            "Δ accuracy [95% CI]",
            "Δ tokens/item [95% CI]",
            "",
            title="paired on items (n.s. = interval includes 0)",
        )
        for c in comparisons:
            acc, tok, sig = comparison_text(c)
            paired.add_row(
                c["strategy"], str(c["budget"]), c["vs"], acc, tok, "" if sig else "n.s."
            )
        console.print(paired)
    run_dir = Path(run_dir)
    console.print(
        Text.assemble(
            "report written to ",
            (str(run_dir / "report.html"), "bold"),
            " (plot: ",
            (str(run_dir / "pareto.svg"), "bold"),
            ")",
        )
    )
