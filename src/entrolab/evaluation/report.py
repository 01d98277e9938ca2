"""The eval report: a terminal summary and a standalone HTML page.

The page holds the accuracy, the estimator ranking table, reliability diagrams and risk–coverage
curves (matplotlib, inline SVG), and the worst confidently-wrong answers with their token
heatmaps (rendered by :func:`entrolab.report.render_html`); ``entrolab eval`` adds the paraphrase
stability section of :mod:`entrolab.studies.paraphrase_html` when the run has one. Every piece of
model or user text is escaped.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
from rich import box
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


def fmt_value(value, spec: str) -> str:
    """``value`` in format ``spec``, "–" for None."""
    return "–" if value is None else format(value, spec)


def _short(value: float | None) -> str:
    """An interval end in 2 decimals without the leading zero: 0.61 → .61, −0.05 → -.05."""
    if value is None:
        return "?"
    text = f"{value:.2f}"
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text


def cell(row: dict, key: str, spec: str = ".3f", *, sep: str = " ") -> str:
    """``0.712 [.61,.80]``: a table figure with its interval (just the figure without one);
    ``sep="\n"`` puts the interval on a second line (narrow terminals)."""
    value = fmt_value(row.get(key), spec)
    if row.get(key) is None or f"{key}_low" not in row:
        return value
    text = f"{value}{sep}[{_short(row[f'{key}_low'])},{_short(row[f'{key}_high'])}]"
    if key == "auroc" and row.get("auroc_vs_chance") == "not significant":
        text += "†"
    return text


def rank_label(row: dict, position: int) -> str:
    """``"3"`` for a tier leader at position 3, ``"=1"`` for a member of the tier led by rank 1."""
    tier = row.get("tier")
    if tier is None:
        return "–" if row.get("auroc") is None else str(position)
    return str(tier) if tier == position else f"={tier}"


def headline(results: EvalResults) -> str:
    c = results.config
    unparseable = sum(r["reason"] == "unparseable" for r in results.rows)
    acc = results.accuracy_interval()
    return (
        f"{c.get('model') or 'embedded default'} on {c['task']}: accuracy {results.accuracy:.3f} "
        f"[{acc.low:.2f}, {acc.high:.2f}] ({int(results.correct.sum())}/{len(results.rows)} "
        f"correct, {unparseable} unparseable), {c['samples']} samples per item"
    )


def reading_lines(rows: list[dict]) -> list[str]:
    """Plain-language reading of the table: is the best estimator better than chance, and
    which estimators are distinguishable (one line each)."""
    ranked = [r for r in rows if r.get("auroc") is not None]
    if not ranked:
        return ["no estimator could be scored (the items need both correct and wrong answers)"]
    best = ranked[0]
    level = best.get("ci_level", 0.95)
    lines = []
    if "auroc_low" in best:
        iv = f"AUROC {best['auroc']:.3f} [{best['auroc_low']:.3f}, {best['auroc_high']:.3f}]"
        if best["auroc_vs_chance"] == "above":
            lines.append(f"best: {best['name']}, {iv}: its {level:.0%} interval excludes chance")
        else:
            above = [r["name"] for r in ranked if r.get("auroc_vs_chance") == "above"]
            lines.append(
                f"best: {best['name']}, {iv}: NOT distinguishable from chance (0.5) on "
                f"{best['n']} items"
                + (f"; above chance: {', '.join(above)}" if above else "; evaluate more items")
            )
    tiers: dict[int, list[str]] = {}
    for r in ranked:
        if r.get("tier") is not None:
            tiers.setdefault(r["tier"], []).append(r["name"])
    if tiers:
        if len(tiers) == 1:
            lines.append(
                "no ranking is significant: every AUROC is within DeLong p ≥ 0.05 of the best"
            )
        else:
            groups = "; ".join(f"rank {k}: {', '.join(v)}" for k, v in tiers.items())
            lines.append(f"distinguishable groups (DeLong vs each group's leader): {groups}")
    return lines


def footnote(rows: list[dict], n_items: int) -> str:
    level = next((r["ci_level"] for r in rows if "ci_level" in r), None)
    if level is None:
        return ""
    return (
        f"[lo,hi] = {level:.0%} bootstrap interval over the {n_items} items (AUROC/PRR/AURC "
        "stratified by correctness); =k in the rank (#) column: AUROC not distinguishable "
        "from rank k's (DeLong p ≥ 0.05, uncorrected); † AUROC interval includes 0.5 (chance)"
    )


def print_summary(results: EvalResults, console: Console | None = None) -> None:
    """Accuracy and the ranking table (figures with intervals, ties marked) in the terminal.

    Estimator names are never cut: when the table with full names does not fit the console,
    each estimator's rank and name take a line of their own, with its figures below.
    """
    console = console or Console()
    console.print(Text(headline(results), style="bold"))
    rows = results.table(ci=0.95)
    name_width = max((len(r["name"]) for r in rows), default=9)
    if console.width < name_width + 4 + 11 * len(_COLUMNS) + 5:
        _print_list_layout(rows, console)
    else:
        _print_table(rows, console)
    note = footnote(rows, len(results.rows))
    if note:
        console.print(Text(note, style="dim"))
    for line in reading_lines(rows):
        console.print(Text(line))
    for line in skipped_lines(results.config):
        console.print(Text(line, style="dim"))


_TITLE = "estimators, best AUROC first (ECE/Brier after isotonic calibration)"


def _print_table(rows: list[dict], console: Console) -> None:
    """One row per estimator; below 140 columns each interval goes on a second line."""
    sep = " " if console.width >= 140 else "\n"
    table = Table(
        title=_TITLE, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("estimator", no_wrap=True)
    for _, label, _ in _COLUMNS:
        table.add_column(label, justify="right", min_width=10)
    table.add_column("#u", justify="right", no_wrap=True)
    for i, r in enumerate(rows, start=1):
        table.add_row(
            rank_label(r, i),
            r["name"],
            *(cell(r, k, f, sep=sep) for k, _, f in _COLUMNS),
            str(r["n_distinct"]),
        )
    console.print(table)


def _print_list_layout(rows: list[dict], console: Console) -> None:
    """The ranking for narrow terminals: rank and full name on one line, the figures on the
    next and their intervals on the one after (fixed 11-character columns, 64 in all)."""
    console.print(Text(_TITLE, style="bold"))
    heads = "  # " + "".join(f"{label:>11}" for _, label, _ in _COLUMNS) + f"{'#u':>5}"
    console.print(Text(heads, style="bold"), no_wrap=True)
    for i, r in enumerate(rows, start=1):
        console.print(Text(f"{rank_label(r, i):>3} {r['name']}", style="bold"), no_wrap=True)
        cells = [cell(r, k, f, sep="\n").split("\n") for k, _, f in _COLUMNS]
        figures = "".join(f"{c[0]:>11}" for c in cells) + f"{r['n_distinct']:>5}"
        console.print(Text("    " + figures), no_wrap=True)
        if any(len(c) > 1 for c in cells):
            intervals = "".join(f"{c[1] if len(c) > 1 else '':>11}" for c in cells)
            console.print(Text("    " + intervals), no_wrap=True)


def skipped_lines(config: dict) -> list[str]:
    """One line per estimator the backend could not run, with the reason (e.g. top-k-only
    servers cannot give self-certainty, which needs full logits)."""
    skipped = config.get("estimators_skipped") or {}
    warned = [f"warning: {w}" for w in config.get("warnings") or []]  # degenerate settings
    return warned + [f"skipped {name}: {why}" for name, why in sorted(skipped.items())]


def worst_confidently_wrong(results: EvalResults, k: int = 5) -> list[tuple[dict, float, str]]:
    """The k wrong answers the best-ranked estimator was most confident in (calibrated)."""
    best = results.best
    if best is None:
        return []
    conf = results.calibrated(best)
    wrong = [i for i, r in enumerate(results.rows) if not r["correct"] and np.isfinite(conf[i])]
    wrong.sort(key=lambda i: -conf[i])
    return [(results.rows[i], float(conf[i]), best) for i in wrong[:k]]


def render_eval_html(results: EvalResults, *, worst: int = 5, sections_html: str = "") -> str:
    """The whole report page as a string.

    ``sections_html``: trusted HTML placed after the selective-prediction section, e.g. the
    paraphrase stability section of :mod:`entrolab.studies.paraphrase_html` (studies sit above
    evaluation in the import contract, so the caller renders it); any run text in it must
    already be escaped.
    """
    esc = html.escape
    rows = results.table(ci=0.95)
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in _COLUMNS)
    body = "".join(
        f"<tr><td>{esc(rank_label(r, i))}</td><td>{esc(r['name'])}</td>"
        + "".join(f"<td>{esc(cell(r, k, f))}</td>" for k, _, f in _COLUMNS)
        + f"<td>{fmt_value(r.get('p_vs_leader'), '.3f')}</td><td>{r['n_distinct']}</td></tr>"
        for i, r in enumerate(rows, start=1)
    )
    figures = results.plot() if any(s.auroc is not None for s in results.scores) else {}
    reading = "".join(
        f"<li>{esc(line)}</li>" for line in reading_lines(rows) + skipped_lines(results.config)
    )
    intro = (
        f"<p><b>{esc(headline(results))}</b> (accuracy interval: exact Clopper–Pearson)</p>"
        "<h2>Which signal tells when to trust the model?</h2>"
        "<p>Estimators ranked by AUROC of their confidence for a correct answer; PRR = prediction"
        "–rejection ratio (1 = oracle, 0 = random); AURC = area under the risk–coverage curve; "
        "ECE (15 equal-width bins) and Brier after cross-fitted isotonic calibration. "
        f"{esc(footnote(rows, len(results.rows)))}; p vs leader = DeLong p-value against the "
        "first estimator of its rank group.</p>"
        f"<ul>{reading}</ul>"
        "<table class=meta><tr><th>rank</th><th>estimator</th>"
        f"{head}<th>p vs leader</th><th>distinct u values</th></tr>{body}</table>"
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
    intro += sections_html
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
