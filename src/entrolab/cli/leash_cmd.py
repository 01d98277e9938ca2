"""``entrolab leash BASE TRAINED``: Invisible-Leash support metrics of a trained model vs a base."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from entrolab.errors import EntrolabError

console = Console()


def leash_command(
    base: Annotated[str, typer.Argument(help="base model: RUN_DIR@start, RUN_DIR or model name")],
    trained: Annotated[str, typer.Argument(help="trained model: RUN_DIR (latest checkpoint)")],
    task: Annotated[
        str | None, typer.Option(help="task spec [default: the trained run's task]")
    ] = None,
    k: Annotated[int, typer.Option(help="samples per problem")] = 64,
    items: Annotated[int, typer.Option(help="held-out problems")] = 128,
    item_seed: Annotated[
        int | None, typer.Option(help="item seed [default: run's eval_seed]")
    ] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 1.0,
    max_new_tokens: Annotated[int | None, typer.Option(help="[default: the run's]")] = None,
    out: Annotated[Path, typer.Option(help="output folder (resumed when re-run)")] = Path(
        "runs/leash"
    ),
) -> None:
    """Preserved / shrunk / expanded problems and correct answers, pass@k curves, answer- vs
    token-level entropy. Re-running the same command continues a killed run."""
    from entrolab.cli.common import quiet_hf_progress
    from entrolab.rl.leash import format_table
    from entrolab.rl.leash_run import LeashSettings, run_config, run_leash
    from entrolab.rl.rewards import make_task

    if k < 1 or items < 1:
        raise EntrolabError("--k and --items must be >= 1")
    cfg = run_config(trained) or run_config(base)
    if task is None and cfg is None:
        raise EntrolabError("give --task when neither model is an RL run directory")
    t = make_task(task, {}) if task is not None else make_task(cfg.task.spec, cfg.task.settings)
    eval_seed = item_seed if item_seed is not None else (cfg.task.eval_seed if cfg else 1)
    problems = t.items(items, seed=eval_seed)
    r = cfg.rollout if cfg is not None else None
    settings = LeashSettings(
        k=k,
        items=items,
        seed=seed,
        temperature=temperature,
        max_new_tokens=max_new_tokens or (r.max_new_tokens if r else 64),
        chat_template=r.chat_template if r else True,
    )

    def log(msg: str) -> None:
        console.print(Text(msg, style="dim"))

    with quiet_hf_progress():
        table = run_leash(base, trained, t, problems, out, settings, log)
    console.print(format_table(table))
    console.print(f"wrote {out}/table.json, table.txt, pass_at_k.png")
