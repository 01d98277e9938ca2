"""``entrolab sample`` (one prompt, one sampler) and ``entrolab compare-samplers`` (a task, many
samplers × temperatures: accuracy, diversity, kept-set size; plot, HTML table, JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from entrolab.cli.common import busy, deprecated, format_value, method_params, parse_params
from entrolab.errors import EntrolabError

console = Console()


def sample_command(
    prompt: Annotated[str, typer.Argument(help="the prompt to answer")],
    sampler: Annotated[
        str, typer.Option(help="sampler name (entrolab list samplers), e.g. top_h, min_p")
    ] = "top_h",
    param: Annotated[
        list[str] | None,
        typer.Option(help="sampler parameter [SAMPLER.]KEY=VALUE (repeatable), e.g. alpha=0.4"),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="base temperature (> 0), before the sampler")
    ] = 1.0,
    samples: Annotated[int, typer.Option("--samples", "-n", help="completions to sample")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="length cap in tokens")] = 64,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    warmup: Annotated[
        int, typer.Option(help="entropix: plain samples of the prompt used to fit its thresholds")
    ] = 4,
    model: Annotated[
        str | None, typer.Option(help="embedded name, HF id or local dir [default: embedded]")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the traces here ('-' = stdout only)")
    ] = None,
) -> None:
    """Sample PROMPT with one sampler; show each completion with its kept-set size and entropy."""
    from entrolab.config import GenerationConfig
    from entrolab.decoding import make_warper
    from entrolab.evaluation.sampler_compare import fit_thresholds_on_warmup, needs_warmup

    params = method_params(param, [sampler], what="sampler", example="alpha=0.4")[sampler]
    if not temperature > 0:
        raise EntrolabError("--temperature must be > 0: a sampler needs sampling, not greedy")
    warm = needs_warmup(sampler, params)
    make_warper(sampler, {**params, "thresholds": "fixed"} if warm else params)  # check early
    if warmup < 1 and warm:
        raise EntrolabError("--warmup must be >= 1 to fit entropix's thresholds")
    quiet = json_out is not None and str(json_out) == "-"
    out_console = Console(stderr=True) if quiet else console

    from entrolab.cli.common import load_backend

    backend = load_backend(out_console, model, dtype)
    from entrolab.cli.common import on_interrupt, stage_progress

    nothing = "nothing was saved (sampling is not checkpointed)"
    if warm:
        with (
            on_interrupt(out_console, nothing, resumable=False),
            busy(out_console, "fitting entropix thresholds on warm-up samples"),
        ):
            th = fit_thresholds_on_warmup(
                backend,
                [prompt],
                temperature,
                samples=warmup,
                max_new_tokens=max_new_tokens,
                seed=seed + 1,
            )
        params = {**params, **th}
        out_console.print(
            "entropix thresholds (nats): " + ", ".join(f"{k}={v:.3g}" for k, v in th.items())
        )
    config = GenerationConfig(
        num_samples=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        sampler=sampler,
        sampler_params=params,
    )
    with (
        on_interrupt(out_console, nothing, resumable=False),
        stage_progress(out_console, sampler, total=samples, stage="sampling") as update,
    ):
        traces = backend.generate(
            [prompt], config, on_progress=lambda d, t, tok: update(d, t, f"{tok} tokens")
        )
    if quiet:
        typer.echo(json.dumps(traces.to_dict()))
        return
    table = Table("#", "completion", "tokens", "kept", "mass", "H(q)", "H(p)", title=sampler)
    for t in traces:
        m = t.meta
        table.add_row(
            str(t.sample_index),
            Text(t.text),
            str(len(t)),
            f"{m.get('kept_mean', float('nan')):.1f}",
            f"{m.get('retained_mass_mean', float('nan')):.3f}",
            f"{m.get('entropy_after_mean', float('nan')):.3f}",
            f"{float(t.entropy.mean()) if len(t) else float('nan'):.3f}",
        )
    console.print(table)
    console.print(
        "kept = mean tokens kept per step; mass = their probability under the tempered "
        "distribution; H(q) = entropy after the sampler; H(p) = the model's own (nats)",
        style="dim",
    )
    if json_out is not None:
        traces.save(json_out)
        console.print(Text.assemble("traces written to ", (str(json_out), "bold")))


def compare_samplers_command(
    sampler: Annotated[
        list[str] | None,
        typer.Option(
            help="sampler [ALIAS=]NAME (repeatable) \\[default: plain, top_h, min_p, top_p, "
            "typical, eta with the --param values below]; an ALIAS names a second setting of "
            "one sampler (--sampler strict=top_h --param strict.alpha=0.2)"
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="sampler parameter SAMPLER.KEY=VALUE, or KEY=VALUE for every sampler "
            "(repeatable) \\[default: top_h.alpha=0.4 min_p.min_p=0.1 top_p.top_p=0.9 "
            "typical.mass=0.9 eta.epsilon=0.0003]"
        ),
    ] = None,
    temperature: Annotated[
        list[float] | None, typer.Option(help="temperature (repeatable) [default: 0.7 1 1.5 2]")
    ] = None,
    task: Annotated[
        str, typer.Option(help="arithmetic | rg:<dataset> | jsonl:<path>")
    ] = "arithmetic",
    task_setting: Annotated[
        list[str] | None, typer.Option(help="task setting KEY=VALUE (repeatable)")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="items")] = 40,
    samples: Annotated[int, typer.Option(help="samples per item and cell (the k of pass@k)")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="token budget per reply")] = 64,
    seed: Annotated[int, typer.Option(help="base seed")] = 0,
    warmup: Annotated[int, typer.Option(help="items to fit entropix thresholds on")] = 8,
    batch_size: Annotated[int, typer.Option(help="rows decoded together")] = 64,
    chunk: Annotated[int, typer.Option(help="items per checkpoint")] = 8,
    out: Annotated[
        Path | None, typer.Option(help="run directory [default: runs/samplers-TASK]")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="discard a run with other settings")] = False,
    report: Annotated[
        Path | None, typer.Option(help="re-render the report of RUN_DIR without generating")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="embedded name, HF id or local dir [default: embedded]")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
) -> None:
    """Compare samplers across temperatures on a task: pass@1/pass@k, answer diversity, kept-set
    size and entropy; writes summary.json, accuracy.svg and report.html to the run directory.

    Results are appended as items finish; run the same command again to resume.
    """
    from entrolab.evaluation.sampler_compare import (
        DEFAULT_SAMPLERS,
        DEFAULT_TEMPERATURES,
        compare_samplers,
        load_compare_results,
    )
    from entrolab.evaluation.sampler_report import print_compare_table

    if report is not None:
        results = load_compare_results(report)
        run_dir = report
    else:
        run_dir = out or Path("runs") / f"samplers-{task.replace(':', '-').replace('/', '_')}"
        settings = dict(
            task=task,
            task_settings=parse_params(task_setting, option="--task-setting", example="level=2"),
            n=n,
            samples=samples,
            samplers=sampler_specs(sampler, param, DEFAULT_SAMPLERS, console),
            temperatures=tuple(temperature or DEFAULT_TEMPERATURES),
            max_new_tokens=max_new_tokens,
            seed=seed,
            warmup=warmup,
            batch_size=batch_size,
            chunk=chunk,
            dtype=dtype,
        )
        from entrolab.evaluation.sampler_compare import CompareConfig

        CompareConfig(model=model, **settings)  # check the settings before loading the model
        results = _run(model, dtype, settings, run_dir, overwrite, compare_samplers)
    print_compare_table(results, console)
    paths = results.write(run_dir)
    console.print(Text.assemble("report written to ", (str(paths["html"]), "bold")))


def _run(model, dtype, settings, run_dir, overwrite, compare_samplers):
    from entrolab.cli.common import load_backend, on_interrupt, stage_progress

    backend = load_backend(console, model, dtype)
    saved = f"finished items are in {Path(run_dir) / 'results.jsonl'}"
    with on_interrupt(console, saved), stage_progress(console, "compare-samplers") as update:
        return compare_samplers(
            backend, out=run_dir, overwrite=overwrite, on_progress=update, **settings
        )


def sampler_specs(
    samplers: list[str] | None, pairs: list[str] | None, default: Sequence[str], out: Console
) -> tuple[str, ...]:
    """The run's sampler specs (``top_h:alpha=0.4``, the labels stored in the run) from
    ``--sampler [ALIAS=]NAME`` and ``--param [NAME.]KEY=VALUE``; with no ``--sampler``, the
    ``default`` specs (their parameters overridable with ``--param``).

    The deprecated ``--sampler NAME:key=value,...`` still works and prints, on ``out``, the
    spelling to use instead. A NAME given twice needs an ALIAS for one of them.

    Raises:
        EntrolabError: an unknown sampler, a NAME given twice, or a malformed ``--param``.
    """
    from entrolab.decoding import SAMPLERS, format_sampler_spec, parse_sampler_spec

    base: dict[str, dict] = {}  # alias -> parameters from a (default or deprecated) spec
    kinds: dict[str, str] = {}  # alias -> registered sampler name
    for spec in samplers or default:
        head, colon, rest = spec.partition(":")
        alias, _, name = head.rpartition("=")
        name = name.strip()
        alias = alias.strip() or name
        SAMPLERS.entry(name)  # unknown names fail here with the list of known ones
        if alias in kinds:
            raise EntrolabError(
                f"--sampler {alias} is given twice; name the second setting with an alias: "
                f"--sampler other={name} --param other.KEY=VALUE"
            )
        kinds[alias] = name
        base[alias] = parse_sampler_spec(f"{name}:{rest}")[1] if colon else {}
        if colon and samplers:
            given = " ".join(
                f"--param {alias}.{k}={format_value(v)}" for k, v in base[alias].items()
            )
            deprecated(out, f"--sampler {spec}", f"--sampler {head.strip()} {given}")
    names = list(kinds)
    given = method_params(pairs, names, what="sampler", example="top_h.alpha=0.4")
    return tuple(format_sampler_spec(kinds[a], {**base[a], **given[a]}) for a in names)
