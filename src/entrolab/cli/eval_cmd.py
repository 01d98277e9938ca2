"""``entrolab eval``: how far can I trust this model on this task, and which signal tells me?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from entrolab.cli.common import parse_params

console = Console()


def eval_command(
    model: Annotated[
        str | None, typer.Option(help="embedded name, HF id or local dir [default: embedded]")
    ] = None,
    task: Annotated[
        str, typer.Option(help="arithmetic | rg:<dataset> | jsonl:<path>")
    ] = "arithmetic",
    task_setting: Annotated[
        list[str] | None, typer.Option(help="task setting KEY=VALUE (repeatable), e.g. level=2")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="items to evaluate")] = 40,
    samples: Annotated[int, typer.Option(help="samples per item for set-level estimators")] = 5,
    estimators: Annotated[
        str | None, typer.Option(help="comma-separated names [default: all that apply]")
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(help="comma-separated estimators to leave out of 'all that apply'"),
    ] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="token budget per reply")] = 64,
    seed: Annotated[int, typer.Option(help="base seed")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="run directory [default: runs/eval-TASK]")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="discard a run with other settings")] = False,
    report: Annotated[
        Path | None, typer.Option(help="re-render the report of RUN_DIR without generating")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    chunk: Annotated[int, typer.Option(help="items per checkpoint (appended when done)")] = 8,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="evaluate a model behind an OpenAI-compatible server (http://HOST:PORT/v1); "
            "--model then names the server's model, --tokenizer the local tokenizer"
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="with --base-url: tokenizer name or dir [default: the embedded one]"),
    ] = None,
) -> None:
    """Evaluate confidence estimators on a task: accuracy, ranking table, plots, HTML report.

    Results are appended to the run directory as items finish; run the same command again to
    resume a stopped run.
    """
    from entrolab.evaluation import load_results
    from entrolab.evaluation.report import print_summary, write_eval_html

    if report is not None:
        results = load_results(report)
        run_dir = report
    else:
        run_dir = out or Path("runs") / f"eval-{task.replace(':', '-').replace('/', '_')}"
        names = [s.strip() for s in estimators.split(",") if s.strip()] if estimators else None
        settings = dict(
            n=n,
            samples=samples,
            estimators=names,
            exclude=[s.strip() for s in exclude.split(",") if s.strip()] if exclude else (),
            out=run_dir,
            overwrite=overwrite,
            task_settings=parse_params(task_setting, option="--task-setting", example="level=2"),
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
            chunk=chunk,
        )
        results = _run(model, dtype, task, settings, base_url, tokenizer)
    print_summary(results, console)
    page = write_eval_html(Path(run_dir) / "report.html", results)
    (Path(run_dir) / "summary.json").write_text(json.dumps(results.to_json(), indent=2))
    console.print(Text.assemble("report written to ", (str(page), "bold")))


def _run(
    model: str | None,
    dtype: str,
    task: str,
    settings: dict,
    base_url: str | None = None,
    tokenizer: str | None = None,
):
    from entrolab.cli.common import load_backend, on_interrupt, stage_progress
    from entrolab.evaluation import evaluate

    if base_url is not None:
        from entrolab.backends import OpenAIBackend
        from entrolab.models import DEFAULT_MODEL

        backend = OpenAIBackend(
            base_url, model=model, tokenizer=tokenizer or DEFAULT_MODEL, token_ids=True
        )
    else:
        backend = load_backend(console, model, dtype)
    saved = f"finished items are in {settings['out']}/results.jsonl"
    with on_interrupt(console, saved), stage_progress(console, total=settings["n"]) as update:
        return evaluate(backend, task, on_progress=update, **settings)
