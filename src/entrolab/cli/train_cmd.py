"""``entrolab train`` (RL fine-tuning from a YAML recipe) and ``entrolab plot`` (its figures)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from entrolab.errors import EntrolabError

console = Console()


def train_command(
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", help="YAML recipe (see recipes/)")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="settings to override, e.g. algorithm.loss=kl_cov steps=50"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory [default: runs/<recipe name>]")
    ] = None,
    fresh: Annotated[
        bool, typer.Option(help="delete the run directory's previous run instead of resuming it")
    ] = False,
    plot: Annotated[bool, typer.Option(help="draw the run's figures at the end")] = True,
) -> None:
    """RL fine-tuning (GRPO and kin) with the entropy-dynamics monitor.

    Writes metrics.jsonl, TensorBoard logs, checkpoints and figures into the run directory.
    Run the same command again to resume a stopped run from its last checkpoint.
    """
    from entrolab.rl.config import load_config

    if recipe is None and not overrides:
        raise EntrolabError("give a recipe (--recipe recipes/proxy_grpo.yaml) or settings")
    config = load_config(recipe, list(overrides or []))
    run_dir = out or Path("runs") / (recipe.stem if recipe is not None else "train")
    if fresh and run_dir.exists():
        if not (run_dir / "config.yaml").is_file():
            raise EntrolabError(f"{run_dir} is not an entrolab run directory; not deleting it")
        shutil.rmtree(run_dir)
    from entrolab.cli.common import on_interrupt, quiet_hf_progress
    from entrolab.rl.preference_trainer import make_trainer

    def log(msg: str) -> None:
        console.print(Text(msg, style="dim"))

    saved = (
        f"the last checkpoint in {run_dir}/checkpoints (every checkpoint_every steps) and the "
        f"metrics up to it are kept; an unfinished proxy SFT resumes from {run_dir}/sft, a "
        "finished one is reused from the cache"
    )
    with on_interrupt(console, saved), quiet_hf_progress():
        trainer = make_trainer(config, run_dir, log=log)  # DPO/VPO when preference.method set
        records = trainer.train()
    _summary(records, run_dir)
    if plot and records:
        from entrolab.rl.plots import plot_run

        paths = plot_run(run_dir)
        console.print(Text.assemble("figures: ", (str(paths[0].parent), "bold")))


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("–" if value is None else str(value))


def _summary(records: list[dict], run_dir: Path) -> None:
    if not records:
        console.print(f"nothing to do: {run_dir} already has all its steps")
        return
    last = records[-1]
    evals = [r for r in records if "eval/pass@1" in r]
    table = Table("metric", "value", title=f"after step {last['step']}")
    for key in (
        "train/reward",
        "train/accuracy",
        "dyn/entropy",
        "dyn/cov",
        "dyn/sign_agree",
        "law/a",
        "law/b",
        "law/ceiling",
        "law/r2",
    ):
        table.add_row(key, _fmt(last.get(key)))
    if evals:
        for key, value in evals[-1].items():
            if key.startswith("eval/"):
                table.add_row(key, _fmt(value))
    console.print(table)
    console.print(Text.assemble("run directory: ", (str(run_dir), "bold")))


def plot_command(
    run_dir: Annotated[Path, typer.Argument(help="an `entrolab train` run directory")],
    formats: Annotated[str, typer.Option("--format", help="comma-separated: svg, png, pdf")] = (
        "svg,png"
    ),
    out: Annotated[Path | None, typer.Option(help="folder [default: RUN_DIR/plots]")] = None,
) -> None:
    """Draw an RL run's entropy, reward, covariance and fitted-law figures."""
    from entrolab.rl.plots import plot_run

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    paths = plot_run(run_dir, formats=fmts, out_dir=out)
    for p in paths:
        console.print(Text.assemble("wrote ", (str(p), "bold")))
