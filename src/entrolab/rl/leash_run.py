"""``entrolab leash`` runs: load two policies, sample k answers per held-out problem from each
(resumable row files), and write the Invisible-Leash table (:mod:`entrolab.rl.leash`) and plot.

A model spec is an RL run directory (the policy of its latest checkpoint), ``RUN@start`` (the
run's starting policy, e.g. the SFT'd proxy model or the base model before LoRA), or a model name
or path (:func:`entrolab.models.load_model`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.rl.leash import RowStore, format_table, leash_table, rows_from_traces
from entrolab.rl.rollout import prompt_seeds

__all__ = ["LeashSettings", "load_policy", "run_config", "run_leash"]


@dataclass
class LeashSettings:
    """Sampling settings of a leash run (recorded in ``settings.json``; a resumed run must match).

    Attributes:
        k: samples per problem. items: held-out problems. seed: sampling seed.
        temperature, max_new_tokens, chat_template: generation. batch_size: decode rows.
        chunk: problems sampled (and appended to the row file) at a time.
    """

    k: int = 64
    items: int = 128
    seed: int = 0
    temperature: float = 1.0
    max_new_tokens: int = 64
    chat_template: bool = True
    batch_size: int = 256
    chunk: int = 8


def run_config(spec: str):
    """The :class:`TrainConfig` of a run-directory spec (``RUN`` or ``RUN@start``), else None."""
    import yaml

    from entrolab.rl.config import config_from_dict

    path = Path(spec.removesuffix("@start"))
    if (path / "config.yaml").is_file():
        return config_from_dict(yaml.safe_load((path / "config.yaml").read_text()))
    if spec.endswith("@start"):
        raise EntrolabError(f"{path} is not an entrolab run directory (no config.yaml)")
    return None


def load_policy(spec: str, task, log=None):
    """(model, tokenizer) for a model spec (see module docstring)."""
    from safetensors.torch import load_file

    from entrolab.rl import checkpoint as ckpt
    from entrolab.rl.policy import build_policy

    cfg = run_config(spec)
    if cfg is None:
        from entrolab.models import load_model

        loaded = load_model(spec)
        return loaded.model.eval(), loaded.tokenizer
    model, tok, _ = build_policy(cfg, task, log=log)
    if not spec.endswith("@start"):
        latest = ckpt.latest_checkpoint(spec)
        if latest is None:
            raise EntrolabError(f"{spec} has no checkpoint yet; use {spec}@start for its start")
        ckpt.load_trainable(model, load_file(str(latest / "model.safetensors")))
    return model.eval(), tok


def _sample(backend, task, items, store: RowStore, s: LeashSettings, log) -> None:
    seeds = prompt_seeds(s.seed, 0, len(items), stream="leash")
    cfg = GenerationConfig(
        num_samples=s.k,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        topk_logprobs=0,
        chat_template=s.chat_template,
        batch_size=s.batch_size,
    )
    todo = store.missing(len(items))
    for start in range(0, len(todo), s.chunk):
        idx = todo[start : start + s.chunk]
        traces = backend.generate(
            [items[i].prompt for i in idx], cfg, seeds=[seeds[i] for i in idx]
        )
        rows = rows_from_traces(task, [items[i] for i in idx], traces, s.k)
        store.add(
            [
                type(r)(i, r.answers, r.correct, r.token_entropy)
                for i, r in zip(idx, rows, strict=True)
            ]
        )
        log(f"{store.path.stem}: {len(store.rows)}/{len(items)} problems")


def run_leash(
    base: str, trained: str, task, items, out: Path, s: LeashSettings, log=None
) -> dict[str, Any]:
    """Sample both models (skipping problems already in ``out``), write ``table.json``,
    ``table.txt`` and ``pass_at_k.png``; returns the table."""
    from entrolab.backends import HFBackend

    log = log or (lambda msg: None)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"base": base, "trained": trained, **s.__dict__, "task": task.describe()}
    saved = out / "settings.json"
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(settings)):
        raise EntrolabError(f"{out} holds a leash run with other settings; use another --out")
    atomic_write_text(saved, json.dumps(settings, indent=1))
    stores = {}
    for name, spec in (("base", base), ("trained", trained)):
        store = RowStore(out / f"{name}.jsonl")
        if store.missing(len(items)):
            model, tok = load_policy(spec, task, log)
            _sample(HFBackend(model, tok, name=spec), task, items, store, s, log)
        stores[name] = store.ordered(len(items))
    table = leash_table(stores["base"], stores["trained"])
    atomic_write_text(out / "table.json", json.dumps(table, indent=1))
    atomic_write_text(out / "table.txt", format_table(table) + "\n")
    _plot(table, out / "pass_at_k.png")
    return table


def pass_at_k_figure(table: dict[str, Any]):
    """pass@k of the base and the trained model against k (log₂ axis, plain-number ticks);
    ``table["pass_at_k"]`` maps k (int, or str as read back from JSON) → [base, trained]."""
    from entrolab.report.figures import legend_right, new_figure, series_style

    curve = {int(k): v for k, v in table["pass_at_k"].items()}
    ks = sorted(curve)
    fig = new_figure(5.6, 3.2)
    ax = fig.subplots()
    for j, label in enumerate(("base", "trained")):
        ax.plot(ks, [curve[k][j] for k in ks], label=label, **series_style(j))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k (samples per problem, log scale)")
    ax.set_ylabel("pass@k (unbiased estimator)")
    ax.set_title(f"n = {table['n']} problems, {table['k']} samples each")
    ax.grid(alpha=0.3)
    legend_right(ax, title="model")
    return fig


def _plot(table: dict[str, Any], path: Path) -> None:
    from entrolab.report.figures import save_figure

    save_figure(pass_at_k_figure(table), path.with_suffix(""), ("png",), dpi=120)
