"""The eval report: a terminal summary and a standalone HTML page.

The page holds the accuracy, the estimator ranking table, reliability diagrams and risk–coverage
curves (matplotlib, inline SVG), and the worst confidently-wrong answers with their token
heatmaps (rendered by :func:`entrolab.report.render_html`). Every piece of model or user text is
escaped.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from entrolab.evaluation.core import EvalResults
from entrolab.fileio import atomic_write_text
from entrolab.report import render_html, summarize
from entrolab.types import Trace

_COLUMNS = (
    ("auroc", "AUROC↑", ".3f"),
    ("prr", "PRR↑", ".3f"),
    ("aurc", "AURC↓", ".3f"),
    ("ece", "ECE↓", ".3f"),
    ("brier", "Brier↓", ".3f"),
)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def headline(results: EvalResults) -> str:
    c = results.config
    unparseable = sum(r["reason"] == "unparseable" for r in results.rows)
    return (
        f"{c.get('model') or 'embedded default'} on {c['task']}: accuracy {results.accuracy:.3f} "
        f"({int(results.correct.sum())}/{len(results.rows)} correct, {unparseable} unparseable), "
        f"{c['samples']} samples per item"
    )


def print_summary(results: EvalResults, console: Console | None = None) -> None:
    """Accuracy and the ranking table in the terminal."""
    console = console or Console()
    console.print(Text(headline(results), style="bold"))
    table = Table(title="estimators, best AUROC first (ECE/Brier after isotonic calibration)")
    table.add_column("estimator", overflow="fold", max_width=22)
    for _, label, _ in _COLUMNS:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("#u", justify="right", no_wrap=True)
    for s in results.scores:
        table.add_row(s.name, *(_fmt(getattr(s, k), f) for k, _, f in _COLUMNS), str(s.n_distinct))
    console.print(table)


def worst_confidently_wrong(results: EvalResults, k: int = 5) -> list[tuple[dict, float, str]]:
    """The k wrong answers the best-ranked estimator was most confident in (calibrated)."""
    best = results.best
    if best is None:
        return []
    conf = results.calibrated(best)
    wrong = [i for i, r in enumerate(results.rows) if not r["correct"] and np.isfinite(conf[i])]
    wrong.sort(key=lambda i: -conf[i])
    return [(results.rows[i], float(conf[i]), best) for i in wrong[:k]]


def render_eval_html(results: EvalResults, *, worst: int = 5) -> str:
    """The whole report page as a string."""
    esc = html.escape
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in _COLUMNS)
    body = "".join(
        f"<tr><td>{esc(s.name)}</td>"
        + "".join(f"<td>{_fmt(getattr(s, k), f)}</td>" for k, _, f in _COLUMNS)
        + f"<td>{s.n_distinct}</td></tr>"
        for s in results.scores
    )
    figures = results.plot() if any(s.auroc is not None for s in results.scores) else {}
    intro = (
        f"<p><b>{esc(headline(results))}</b></p>"
        "<h2>Which signal tells when to trust the model?</h2>"
        "<p>Estimators ranked by AUROC of their confidence for a correct answer; PRR = prediction"
        "–rejection ratio (1 = oracle, 0 = random); AURC = area under the risk–coverage curve; "
        "ECE (15 equal-width bins) and Brier after cross-fitted isotonic calibration.</p>"
        f"<table class=meta><tr><th>estimator</th>{head}<th>distinct u values</th></tr>{body}"
        "</table>"
    )
    if figures:
        intro += (
            "<h2>Reliability (calibrated confidence vs accuracy), top estimators</h2>"
            f"<div>{figures['reliability']}</div>"
            "<h2>Risk–coverage: error rate of the answers kept when abstaining on the most "
            f"uncertain</h2><div>{figures['risk_coverage']}</div>"
        )
    sel = results.selective()
    if sel is not None:
        if sel["u_threshold"] is None:
            verdict = (
                f"no threshold could be certified from {sel['n_calibration']} calibration items "
                "(the model would abstain on everything); more items or a higher risk level "
                "are needed"
            )
        else:
            risk = "–" if sel["test_risk"] is None else f"{sel['test_risk']:.2f}"
            verdict = (
                f"answer when {esc(sel['estimator'])} u ≤ {sel['u_threshold']:.4g}: on "
                f"{sel['n_test']} held-out items this answers {sel['test_coverage']:.0%} with "
                f"error rate {risk} (all answered: {1 - results.accuracy:.2f})"
            )
        intro += (
            f"<h2>Selective prediction at risk ≤ {sel['alpha']} (δ = {sel['delta']})</h2>"
            f"<p>Split-conformal (Learn then Test) on half of the items: {verdict}.</p>"
        )
    examples = worst_confidently_wrong(results, worst)
    traces, headings = [], {}
    for j, (row, conf, est) in enumerate(examples):
        if row.get("trace") is None:
            continue
        t = Trace.from_dict({**row["trace"], "prompt_index": j, "sample_index": 0})
        traces.append(t)
        headings[j] = (
            f"item {row['index']}: answered {row['parsed']!r}, expected {row['answer']!r}, "
            f"confidence {conf:.2f} ({est})"
        )
    if traces:
        intro += "<h2>Confidently wrong: the answers to distrust most</h2>"
    return render_html(
        traces,
        [summarize(t) for t in traces],
        title=f"entrolab eval — {results.config['task']}",
        meta=results.config,
        intro_html=intro,
        headings=headings,
    )


def write_eval_html(path: str | os.PathLike[str], results: EvalResults, **kwargs) -> Path:
    """Write the report atomically; returns the path."""
    return atomic_write_text(path, render_eval_html(results, **kwargs))
