"""``entrolab eval``: how far can I trust this model on this task, and which signal tells me?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from entrolab.cli.common import method_params, parse_params

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
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="estimator parameter ESTIMATOR.KEY=VALUE (repeatable), e.g. deepconf_tail.window=8"
        ),
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
    paraphrases: Annotated[
        int,
        typer.Option(
            help="K prompts per item: the original and K − 1 paraphrases run through the same "
            "estimators; reports confidence and correctness stability across them and "
            "multi-sample metrics (pass@k, maj@k, P(fail), tail risk) [1 = off]"
        ),
    ] = 1,
    paraphrase_source: Annotated[
        str,
        typer.Option(
            help="auto (rules for arithmetic, templates for rg:, the model's rewrites for "
            "jsonl:) | rule | template | model"
        ),
    ] = "auto",
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
        for line in _settings_warnings(results.config):
            _warn(line)
    else:
        run_dir = out or Path("runs") / f"eval-{task.replace(':', '-').replace('/', '_')}"
        names = [s.strip() for s in estimators.split(",") if s.strip()] if estimators else None
        params = _estimator_params(param, names, exclude, max_new_tokens)
        from entrolab.inference.fitted import check_fitted_given

        check_fitted_given(params, names)  # a fitted estimator without its artefact: fail now
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
            estimator_params=params,
        )
        from entrolab.studies.paraphrase import check_count, paraphrase_source_for

        settings["paraphrases"] = check_count(paraphrases)
        settings["paraphrase_source"] = paraphrase_source_for(task, paraphrase_source)
        results = _run(model, dtype, task, settings, base_url, tokenizer)
    print_summary(results, console)
    from entrolab.inference.degenerate import unparseable_warning

    unparsed = unparseable_warning([r.get("parsed") for r in results.rows])
    if unparsed:
        _warn(unparsed)
    # the HTML report and summary.json list them too (printed above, so set after the summary)
    results.config["warnings"] = _settings_warnings(results.config) + (
        [unparsed] if unparsed else []
    )
    from entrolab.studies.paraphrase_eval import report_paraphrases
    from entrolab.studies.paraphrase_html import paraphrase_section

    written = report_paraphrases(results, console)  # None: no paraphrase run of this eval
    section = paraphrase_section(run_dir, results.rows) if written else ""
    page = write_eval_html(Path(run_dir) / "report.html", results, sections_html=section)
    (Path(run_dir) / "summary.json").write_text(results.to_json())
    console.print(Text.assemble("report written to ", (str(page), "bold")))


def _estimator_params(
    pairs: list[str] | None, names: list[str] | None, exclude: str | None, max_new_tokens: int
) -> dict[str, dict]:
    """``--param ESTIMATOR.KEY=VALUE`` pairs by canonical estimator name (aliases accepted;
    unknown names fail listing the known ones), after printing once, before the model loads,
    the degeneracy warnings of the estimators that will run (e.g. a DeepConf window that covers
    every reply)."""
    from entrolab.estimators import ESTIMATORS
    from entrolab.inference.degenerate import estimator_warnings

    def canonical(name: str) -> str:
        return ESTIMATORS.entry(name).name

    dropped = {canonical(e.strip()) for e in (exclude or "").split(",") if e.strip()}
    run = [canonical(e) for e in names] if names else ESTIMATORS.names()
    run = [e for e in run if e not in dropped]
    per = method_params(
        pairs, run, what="estimator", bare=False, alias=canonical, example="deepconf_tail.window=8"
    )
    params = {name: p for name, p in per.items() if p}
    for line in estimator_warnings(run, params, max_new_tokens):
        _warn(line)
    return params


def _settings_warnings(config: dict) -> list[str]:
    """The estimator degeneracy warnings of a stored run's settings (``--report``)."""
    from entrolab.inference.degenerate import estimator_warnings

    return estimator_warnings(
        config.get("estimators_run") or [],
        config.get("estimator_params") or {},
        int(config.get("max_new_tokens", 64)),
    )


def _warn(line: str) -> None:
    console.print(Text.assemble(("warning: ", "bold yellow"), line), soft_wrap=True)


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
    from entrolab.inference.fitted import resolve_fitted

    # --param fince.scorer=PATH etc.: load the artefacts and check them against this model now
    fitted = resolve_fitted(settings["estimator_params"], backend, settings["estimators"])
    k, source = settings.pop("paraphrases", 1), settings.pop("paraphrase_source", "auto")
    saved = f"finished items are in {settings['out']}/results.jsonl" + (
        f" and {settings['out']}/paraphrases/results.jsonl" if k > 1 else ""
    )
    with on_interrupt(console, saved), stage_progress(console, total=settings["n"]) as update:
        results = evaluate(backend, task, on_progress=update, fitted=fitted, **settings)
        if k > 1:
            from entrolab.studies.paraphrase_eval import run_paraphrases

            run_paraphrases(
                backend, results, k, source=source, overwrite=settings["overwrite"],
                chunk=settings["chunk"], on_progress=update, fitted=fitted,
            )  # fmt: skip
    return results
