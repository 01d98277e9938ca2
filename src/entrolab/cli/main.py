"""``entrolab`` command: ``analyze`` a prompt, ``list`` registry entries and models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from entrolab.cli.common import load_backend
from entrolab.cli.eval_cmd import eval_command
from entrolab.cli.fit_cmd import fit_command
from entrolab.cli.leash_cmd import leash_command
from entrolab.cli.sample_cmd import compare_samplers_command, sample_command
from entrolab.cli.serve_cmd import serve_command
from entrolab.cli.think_cmd import pareto_command, think_command
from entrolab.cli.train_cmd import plot_command, train_command
from entrolab.cli.tta_cmd import tta_command
from entrolab.errors import EntrolabError

app = typer.Typer(
    name="entrolab",
    help="Entropy and confidence lab for language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
app.command("eval")(eval_command)
app.command("sample")(sample_command)
app.command("compare-samplers")(compare_samplers_command)
app.command("think")(think_command)
app.command("pareto")(pareto_command)
app.command("fit")(fit_command)
app.command("train")(train_command)
app.command("leash")(leash_command)
app.command("plot")(plot_command)
app.command("tta")(tta_command)
app.command("serve")(serve_command)


@app.command("list")
def list_entries(
    kind: Annotated[
        str,
        typer.Argument(
            help="a registry kind (signals, estimators, samplers, losses, etc.), models or all"
        ),
    ] = "signals",
    markdown: Annotated[
        bool, typer.Option(help="print a markdown table (docs/methods.md)")
    ] = False,
) -> None:
    """List the registered entries of one kind, with summaries, papers and defaults."""
    if markdown:
        from entrolab.registry import get_registry, methods_markdown, to_markdown

        typer.echo(
            methods_markdown() if kind == "all" else to_markdown(get_registry(kind)), nl=False
        )
        return
    if kind == "models":
        from entrolab.models.embedded import EMBEDDED

        table = Table("name", "summary", title="embedded models (also: any HF id or local dir)")
        for m in EMBEDDED.values():
            table.add_row(m.name, m.summary)
        console.print(table)
        return
    from entrolab.registry import KINDS, get_registry

    kinds = sorted(KINDS) if kind == "all" else [kind]
    registries = [(k, get_registry(k)) for k in kinds]  # an unknown kind fails before printing
    for name, registry in registries:
        _print_registry(name, registry)


def _print_registry(kind: str, registry) -> None:
    """A table when the terminal is wide enough to show every name in full; otherwise a list
    (name on its own line, description wrapped at word boundaries), so names are never cut."""
    rows = [
        (e.name, e.summary, e.paper or "-", ", ".join(f"{k}={v!r}" for k, v in e.defaults.items()))
        for e in registry
    ]
    title = f"{kind} ({len(registry)})"
    if console.width >= 120:
        table = Table(title=title)
        table.add_column("name", no_wrap=True, style="bold")
        for col in ("summary", "paper", "defaults"):
            table.add_column(col, overflow="fold")
        for name, summary, paper, defaults in rows:
            table.add_row(name, summary, paper, defaults or "-")
        console.print(table)
        return
    from rich.padding import Padding

    console.print(Text(title, style="bold underline"))
    for name, summary, paper, defaults in rows:
        console.print(Text(name, style="bold"))
        detail = f"{summary}\npaper: {paper}" + (f"\ndefaults: {defaults}" if defaults else "")
        console.print(Padding(Text(detail), (0, 0, 0, 4)))
    console.print()


@app.command()
def analyze(
    prompt: Annotated[str, typer.Argument(help="the prompt to answer and analyse")],
    model: Annotated[
        str | None, typer.Option(help="embedded name, HF id or local dir [default: embedded]")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="completions to sample")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="length cap in tokens")] = 128,
    temperature: Annotated[
        float | None, typer.Option(help="0 = greedy [default: 0 for one sample, 1 for several]")
    ] = None,
    top_p: Annotated[float, typer.Option(help="nucleus mass; 1 disables")] = 1.0,
    top_k: Annotated[int, typer.Option(help="keep k most likely tokens; 0 disables")] = 0,
    min_p: Annotated[float, typer.Option(help="min-p threshold; 0 disables")] = 0.0,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    k: Annotated[int, typer.Option("--k", help="top-k alternatives kept per token")] = 20,
    window: Annotated[
        int, typer.Option(help="tokens per DeepConf confidence window; 8 = deepconf_window(64)")
    ] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the traces here")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="write an HTML report here")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="let a hub id be downloaded")
    ] = False,
    attention: Annotated[
        bool,
        typer.Option(
            "--attention",
            help="also show attention entropy per layer and head (nats) on prompt + first "
            "reply: an SVG heatmap next to --html/--json (else ./attention_entropy.svg)",
        ),
    ] = False,
) -> None:
    """Answer PROMPT and show each token's entropy, the confidence summary and forking tokens."""
    from entrolab.config import GenerationConfig

    if temperature is None:
        temperature = 0.0 if samples == 1 else 1.0
    if samples > 1 and temperature == 0:
        raise EntrolabError("--samples > 1 with --temperature 0 gives identical copies; raise it")
    config = GenerationConfig(
        num_samples=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        stop=tuple(stop or ()),
        seed=seed,
        topk_logprobs=k,
    )
    if window < 1:
        raise EntrolabError("--window must be >= 1")
    backend = load_backend(console, model, dtype, allow_download)
    if attention:
        from entrolab.backends.base import require

        require(backend, "torch_module", "analyze --attention")
    traces = _generate(backend, prompt, config)

    from entrolab.report import print_traces, summarize, write_html

    summaries = [summarize(t, window=window) for t in traces]
    print_traces(traces, summaries, console=console)
    if len(traces) > 1:
        from entrolab.tasks.agreement import sample_agreement

        console.print(sample_agreement([t.text for t in traces]).line(), soft_wrap=True)
    if attention:
        from entrolab.studies.attention_capture import attention_svg_path, report_attention

        svg = attention_svg_path([html_out, json_out])
        report_attention(backend, prompt, traces[0], config, console, svg)
    if json_out is not None:
        traces.save(json_out)
        console.print(Text.assemble("traces written to ", (str(json_out), "bold")))
    if html_out is not None:
        write_html(
            html_out,
            traces,
            summaries,
            title=f"entrolab analyze — {backend.name}",
            meta={"model": backend.name, **config.to_dict()},
            id_to_text=lambda ids: [backend.decode([i], skip_special_tokens=False) for i in ids],
        )
        console.print(Text.assemble("HTML report written to ", (str(html_out), "bold")))


def _generate(backend, prompt: str, config):
    from entrolab.cli.common import on_interrupt, stage_progress

    with (
        on_interrupt(console, "nothing was saved (analyze is not checkpointed)", resumable=False),
        stage_progress(console, "generating", total=config.num_samples, stage="") as update,
    ):
        return backend.generate(
            [prompt], config, on_progress=lambda d, t, tok: update(d, t, f"{tok} tokens")
        )


def main() -> None:
    """Entry point: run the app and turn entrolab errors into a one-line message, exit code 2."""
    try:
        app()
    except EntrolabError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
