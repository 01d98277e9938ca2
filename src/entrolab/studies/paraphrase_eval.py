"""``entrolab eval --paraphrases K``: an eval run repeated on K − 1 paraphrases of each item.

For every item of a finished (or partly finished) eval run, paraphrases 1 … K − 1
(:mod:`entrolab.studies.paraphrase`) go through the same estimators, sampling settings and
grader as the original; paraphrase 0 is the eval run's own row, so nothing is generated twice.
Each item gives one row in ``RUN_DIR/paraphrases/results.jsonl`` (appended per chunk; a killed
run resumes), holding per paraphrase the prompt and its source, the greedy answer's
correctness, every estimator's u, and the G samples' correctness, answer keys and confidences
(exp of the mean chosen-token log-probability).

:func:`paraphrase_summary` turns the rows into

* per estimator, the stability figures of :func:`entrolab.studies.stability.estimator_stability`
  (AUROC per paraphrase, its mean and spread, rank agreement, within-item spread, decision flips);
* greedy correctness across paraphrases (:func:`~entrolab.studies.stability.correctness_stability`);
* the multi-sample metrics of :func:`entrolab.studies.chaos.chaos_metrics` over the K prompts ×
  G samples: pass@G, maj@G, P(fail) mean / worst case, fragile fraction, tail risk, the
  greedy-vs-sampled gap and the items where greedy and multi-sample evaluation disagree,

all with 95% bootstrap intervals over items; the summary is written to
``RUN_DIR/paraphrases/summary.json`` and :func:`print_paraphrase_summary` prints it;
:mod:`entrolab.studies.paraphrase_html` renders it as a section of ``RUN_DIR/report.html``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.evaluation.rundir import RunDir
from entrolab.studies.paraphrase import (
    check_count,
    model_paraphrases,
    paraphrase_source_for,
    rule_paraphrases,
    template_paraphrases,
)

__all__ = [
    "SUBDIR",
    "by_mean_auroc",
    "fmt_interval",
    "load_paraphrase_rows",
    "paraphrase_summary",
    "print_paraphrase_summary",
    "report_paraphrases",
    "run_paraphrases",
    "write_paraphrase_summary",
]

SUBDIR = "paraphrases"
#: on_progress(items_done, items_total, stage)
ProgressFn = Callable[[int, int, str], None]


def _sample_stats(
    task: Any, item: Any, texts: list[str], confidence: list[float] | None
) -> dict[str, Any]:
    from entrolab.tasks import answer_key

    grades = [task.grade(item, t) for t in texts]
    return {
        "sample_correct": [bool(g.correct) for g in grades],
        "sample_keys": [_key(answer_key, g.parsed) for g in grades],
        "sample_confidence": confidence,
    }


def _trace_confidence(trace: Any) -> float:
    """exp(mean chosen-token log-probability) of a reply (0 for an empty one)."""
    return math.exp(float(trace.logprob.mean())) if len(trace) else 0.0


def _key(answer_key: Callable[[str], str], parsed: Any) -> str | None:
    if parsed is None:
        return None
    try:
        return answer_key(str(parsed))
    except EntrolabError:
        return str(parsed)


def _prompts(source: str, items: list[Any], count: int, backend: Any, seed: int):
    if source == "model":
        return model_paraphrases(backend, [it.prompt for it in items], count, seed=seed)
    make = rule_paraphrases if source == "rule" else template_paraphrases
    return [make(it.prompt, count) for it in items]


def run_paraphrases(
    backend: Any,
    results: Any,
    paraphrases: int,
    *,
    source: str = "auto",
    overwrite: bool = False,
    chunk: int = 8,
    on_progress: ProgressFn | None = None,
    fitted: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run the eval's estimators on K − 1 paraphrases of each of its items (resumable).

    Args:
        backend: the backend the eval ran with.
        results: the eval's :class:`~entrolab.evaluation.EvalResults` (with ``run_dir``).
        paraphrases: K ≥ 2 prompts per item (the original + K − 1 paraphrases).
        source: ``auto`` | ``rule`` | ``template`` | ``model`` (see
            :func:`~entrolab.studies.paraphrase.paraphrase_source_for`).
        overwrite: discard a paraphrase run with other settings.
        chunk: items per checkpoint.
        fitted: the loaded artefacts of fitted estimators, as given to ``evaluate``.
    Returns:
        the rows, one per item (see the module docstring), in item order.
    """
    from entrolab.estimators import EstimatorConfig, run_estimators
    from entrolab.tasks import load_task

    if check_count(paraphrases) < 2:
        raise EntrolabError("--paraphrases needs K ≥ 2 (the original and at least 1 paraphrase)")
    if results.run_dir is None:
        raise EntrolabError("paraphrase evaluation needs an eval run directory (--out)")
    cfg = results.config
    used = paraphrase_source_for(cfg["task"], source)
    task = load_task(cfg["task"], **(cfg.get("task_settings") or {}))
    items = task.items(cfg["n"], seed=cfg["seed"])
    est_cfg = EstimatorConfig(
        samples=cfg["samples"],
        temperature=cfg["temperature"],
        max_new_tokens=cfg["max_new_tokens"],
        seed=cfg["seed"],
    )
    names = list(cfg["estimators_run"])
    params = {k: dict(v) for k, v in (cfg.get("estimator_params") or {}).items()}
    for name, values in (fitted or {}).items():  # loaded artefacts replace stored paths
        params.setdefault(name, {}).update(values)
    stored = {
        "eval": RunDir(results.run_dir).config(),  # the eval's stored settings, as on disk
        "paraphrases": paraphrases,
        "source": used,
    }
    run = RunDir(Path(results.run_dir) / SUBDIR).open(stored, overwrite=overwrite)
    rows = {r["index"]: r for r in run.rows()}
    base = {r["index"]: r for r in results.rows}
    todo = [i for i in sorted(base) if i not in rows]
    for start in range(0, len(todo), chunk):
        idx = todo[start : start + chunk]
        if on_progress is not None:
            on_progress(len(rows), len(base), "paraphrasing")
        t0 = time.perf_counter()
        made = _prompts(used, [items[i] for i in idx], paraphrases, backend, cfg["seed"])
        para_items = [
            replace(items[i], id=f"{items[i].id}~p{p}", prompt=made[j][0][p])
            for j, i in enumerate(idx)
            for p in range(1, paraphrases)
        ]
        res = run_estimators(
            backend, para_items, names, config=est_cfg, extract_fn=task.extract,
            params=params or None,
        )  # fmt: skip
        greedy = res.greedy_texts or [""] * len(para_items)
        groups: dict[int, list[Any]] = {}
        for t in res.samples or []:
            groups.setdefault(t.prompt_index, []).append(t)
        new = []
        for j, i in enumerate(idx):
            row0 = base[i]
            orig = _sample_stats(
                task, items[i], list(row0.get("samples", [])), row0.get("sample_confidence")
            )
            per = [{"correct": bool(row0["correct"]), "u": row0["u"], **orig}]
            for p in range(1, paraphrases):
                k = j * (paraphrases - 1) + p - 1
                per.append(
                    {
                        "correct": bool(task.grade(items[i], greedy[k]).correct),
                        "u": {n: _finite(res.uncertainty[n][k]) for n in res.names},
                        "response": greedy[k],
                        **_sample_stats(
                            task,
                            items[i],
                            [t.text for t in groups.get(k, [])],
                            [_trace_confidence(t) for t in groups.get(k, [])],
                        ),
                    }
                )
            new.append(
                {
                    "index": i,
                    "id": items[i].id,
                    "answer": items[i].answer,
                    "prompts": made[j][0],
                    "sources": made[j][1],
                    "per_paraphrase": per,
                    "seconds": (time.perf_counter() - t0) / len(idx),
                }
            )
        run.append(new)
        rows.update({r["index"]: r for r in new})
    if on_progress is not None:
        on_progress(len(rows), len(base), "scoring")
    return [rows[i] for i in sorted(rows)]


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def load_paraphrase_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The stored paraphrase rows of an eval run directory (empty when there are none)."""
    path = Path(run_dir) / SUBDIR
    return sorted(RunDir(path).rows(), key=lambda r: r["index"]) if path.exists() else []


def paraphrase_summary(
    rows: list[dict[str, Any]], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Stability and multi-sample figures of paraphrase rows (see the module docstring)."""
    from entrolab.studies.chaos import chaos_metrics
    from entrolab.studies.stability import correctness_stability, estimator_stability
    from entrolab.tasks import answer_key

    if len(rows) < 2:
        raise EntrolabError("need at least 2 finished items for intervals over items")
    n_para = {len(r["per_paraphrase"]) for r in rows}
    if len(n_para) != 1:
        raise EntrolabError(f"rows hold different paraphrase counts {sorted(n_para)}")
    correct = np.array([[p["correct"] for p in r["per_paraphrase"]] for r in rows], float)
    names = sorted({n for r in rows for n in r["per_paraphrase"][0]["u"]})
    per_estimator = {}
    for name in names:
        u = np.array([[_nan(p["u"].get(name)) for p in r["per_paraphrase"]] for r in rows], float)
        per_estimator[name] = estimator_stability(u, correct, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "n_items": len(rows),
        "paraphrases": n_para.pop(),
        "sources": _source_counts(rows),
        "correctness": correctness_stability(correct, n_boot=n_boot, seed=seed),
        "estimators": per_estimator,
    }
    sizes = {len(p["sample_correct"]) for r in rows for p in r["per_paraphrase"]}
    if sizes == {0} or len(sizes) != 1:
        out["multi_sample"] = {
            "reason": "no samples were stored (run a sampling estimator and --samples ≥ 2)"
            if sizes == {0}
            else f"paraphrases hold different sample counts {sorted(sizes)}"
        }
        return out
    conf = [[p["sample_confidence"] for p in r["per_paraphrase"]] for r in rows]
    have_conf = all(c is not None for row in conf for c in row)
    out["multi_sample"] = chaos_metrics(
        correct[:, 0],
        [[p["sample_correct"] for p in r["per_paraphrase"]] for r in rows],
        sample_answers=[[p["sample_keys"] for p in r["per_paraphrase"]] for r in rows],
        reference=[_key(answer_key, r["answer"]) for r in rows],
        sample_confidence=conf if have_conf else None,
    )
    if not have_conf:
        out["multi_sample"]["tail_risk_reason"] = (
            "the eval run stored no sample confidences for the original prompts (made before "
            "they were recorded); rerun the eval into a new --out for the tail risk"
        )
    return out


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def _source_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        for s in r["sources"][1:]:
            counts[s] = counts.get(s, 0) + 1
    return counts


def write_paraphrase_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """``RUN_DIR/paraphrases/summary.json`` (NaN written as null)."""
    path = Path(run_dir) / SUBDIR / "summary.json"
    path.write_text(json.dumps(_jsonable(summary), indent=2), encoding="utf-8")
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def fmt_interval(iv: Any, digits: int = 2) -> str:
    """``0.71 [0.60, 0.80]``: an interval dict ``{"mean", "low", "high"}`` in ``digits``
    decimals (just the mean when an end is missing or not finite; "–" without a finite mean)."""
    if not isinstance(iv, dict) or iv.get("mean") is None or not math.isfinite(iv["mean"]):
        return "–"
    lo, hi = iv.get("low"), iv.get("high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{iv['mean']:.{digits}f}"
    return f"{iv['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def by_mean_auroc(estimators: dict[str, dict[str, Any]]) -> list[str]:
    """Estimator names of a summary's ``"estimators"``, best mean AUROC over prompts first
    (those without one last, in name order)."""

    def order(name: str) -> float:
        m = estimators[name].get("auroc_mean", {}).get("mean")
        return -m if m is not None and math.isfinite(m) else math.inf

    return sorted(estimators, key=order)


def print_paraphrase_summary(summary: dict[str, Any], console: Any) -> None:
    """The terminal view: correctness across paraphrases, multi-sample metrics, per-estimator
    stability table (best mean AUROC first)."""
    from rich.table import Table

    c = summary["correctness"]
    console.print(
        f"\n[bold]Paraphrase stability[/bold] — {summary['n_items']} items × "
        f"{summary['paraphrases']} prompts (sources: "
        + ", ".join(f"{k} {v}" for k, v in summary["sources"].items())
        + "); 95% bootstrap intervals over items"
    )
    acc = ", ".join(f"p{i}: {a:.2f}" for i, a in enumerate(c["accuracy_by_paraphrase"]))
    console.print(
        f"greedy accuracy per prompt {acc}; items whose greedy correctness flips with the "
        f"wording {fmt_interval(c['flip_rate'])}"
    )
    ms = summary.get("multi_sample", {})
    if "reason" in ms:
        console.print(f"multi-sample metrics: not available ({ms['reason']})")
    else:
        keys = [k for k in ms if k.startswith(("pass@", "maj@"))] + [
            "sampled_accuracy", "greedy_minus_sampled", "p_fail_mean", "p_fail_worst",
            "fragile_fraction", "tail_risk",
        ]  # fmt: skip
        console.print(
            "; ".join(f"{k} {fmt_interval(ms[k])}" for k in keys if k in ms), soft_wrap=True
        )
        console.print(
            f"greedy right but P(correct) < 0.5: items {ms['greedy_right_sampled_below_half']}; "
            f"greedy wrong but P(correct) ≥ 0.5: items {ms['greedy_wrong_sampled_above_half']}",
            soft_wrap=True,
        )
    table = Table(
        "estimator", "AUROC mean over prompts", "AUROC spread (max−min)", "rank agreement ρ",
        "within-item spread", "confident-flag flips", "n",
        title="confidence stability across paraphrases",
    )  # fmt: skip
    ests = summary["estimators"]
    for name in by_mean_auroc(ests):
        e = ests[name]
        if "reason" in e:
            table.add_row(name, e["reason"], "", "", "", "", str(e["n"]))
            continue
        table.add_row(
            name, fmt_interval(e["auroc_mean"], 3), fmt_interval(e["auroc_spread"], 3),
            fmt_interval(e["rank_agreement"]), fmt_interval(e["within_item_spread"], 3),
            fmt_interval(e["decision_flip_rate"]), str(e["n"]),
        )  # fmt: skip
    console.print(table)


def report_paraphrases(results: Any, console: Any) -> Path | None:
    """Print and write the paraphrase summary of an eval run directory, if it has one that
    belongs to this eval run (None otherwise, or when fewer than 2 items are finished)."""
    if results.run_dir is None:
        return None
    path = Path(results.run_dir) / SUBDIR
    if not (path / "config.json").exists():
        return None
    stored = RunDir(path).config()
    if stored.get("eval") != RunDir(results.run_dir).config():  # the eval's stored settings
        console.print(
            f"note: {path} belongs to an eval run with other settings; rerun with "
            "--paraphrases K --overwrite to redo it"
        )
        return None
    rows = load_paraphrase_rows(results.run_dir)
    if len(rows) < 2:
        return None
    summary = paraphrase_summary(rows)
    print_paraphrase_summary(summary, console)
    return write_paraphrase_summary(results.run_dir, summary)
