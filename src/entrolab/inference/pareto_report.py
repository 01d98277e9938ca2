"""The ``entrolab pareto`` report: points, paired comparisons and a standalone HTML page.

:func:`write_pareto_report` turns a pareto run directory into ``pareto.svg`` (accuracy vs
generated tokens), ``points.json`` (one point per strategy and budget), ``comparisons.json``
(each strategy against a baseline at the same budget, paired on items) and ``report.html``
(no scripts, no external resources; every string from the run is escaped).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.inference.pareto import ParetoPoint, paired_comparisons, pareto_svg, points_from_rows
from entrolab.report.assets import CSS

__all__ = ["choose_baseline", "comparison_text", "render_pareto_html", "write_pareto_report"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_EXTRA_CSS = (
    "table.cmp{border-collapse:collapse;font-size:12px;margin:6px 0 14px}"
    "table.cmp th,table.cmp td{padding:2px 8px;border-bottom:1px solid #e3e3e3;text-align:right;"
    "font-variant-numeric:tabular-nums}table.cmp td:first-child,table.cmp th:first-child"
    "{text-align:left}.ns{color:#888}"
)


def choose_baseline(points: Sequence[ParetoPoint], preferred: str | None = None) -> str:
    """The strategy every other one is compared with: ``preferred`` when given, else
    ``majority`` when it was run, else the first strategy by name.

    Raises:
        EntrolabError: ``preferred`` is not among the run's strategies.
    """
    names = sorted({p.strategy for p in points})
    if preferred is not None:
        if preferred not in names:
            raise EntrolabError(
                f"baseline {preferred!r} was not run (strategies: {', '.join(names)}); "
                "pass one of them"
            )
        return preferred
    return "majority" if "majority" in names else names[0]


def _interval(d: Mapping[str, Any], spec: str) -> str:
    diff, low, high = d.get("difference"), d.get("low"), d.get("high")
    if diff is None:
        return "–"
    if low is None or high is None:
        return format(diff, spec)
    return f"{format(diff, spec)} [{format(low, spec)}, {format(high, spec)}]"


def comparison_text(row: Mapping[str, Any]) -> tuple[str, str, bool]:
    """``(accuracy difference text, tokens/item difference text, significant)`` of one row of
    :func:`~entrolab.inference.pareto.paired_comparisons`; significant = the accuracy interval
    excludes 0."""
    acc = row["accuracy"]
    low, high = acc.get("low"), acc.get("high")
    significant = low is not None and high is not None and (low > 0 or high < 0)
    return _interval(acc, "+.3f"), _interval(row["tokens_per_item"], "+.1f"), significant


def render_pareto_html(
    points: Sequence[ParetoPoint],
    comparisons: Sequence[Mapping[str, Any]],
    *,
    title: str,
    config: Mapping[str, Any],
    svg: str,
) -> str:
    """The standalone report page as a string (figure inline, tables, run settings)."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(p.strategy)}</td><td>{p.budget}</td><td>{esc(p.accuracy_text())}</td>"
        f"<td>{p.tokens_per_item:.1f}</td><td>{p.answered}</td><td>{p.n}</td></tr>"
        for p in points
    )
    cmp_rows = []
    for r in comparisons:
        acc, tok, sig = comparison_text(r)
        cls = "" if sig else ' class="ns"'
        cmp_rows.append(
            f"<tr{cls}><td>{esc(str(r['strategy']))}</td><td>{r['budget']}</td>"
            f"<td>{esc(str(r['vs']))}</td><td>{r['n']}</td><td>{esc(acc)}</td>"
            f"<td>{esc(tok)}</td><td>{'yes' if sig else 'n.s.'}</td></tr>"
        )
    cmp_html = (
        '<table class="cmp"><tr><th>strategy</th><th>budget</th><th>vs</th><th>n</th>'
        "<th>Δ accuracy [95% CI]</th><th>Δ tokens/item [95% CI]</th><th>significant</th></tr>"
        + "".join(cmp_rows)
        + "</table>"
        if cmp_rows
        else "<p>No comparison: only one strategy was run (or no shared items).</p>"
    )
    meta = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in config.items()
    )
    page_title = f"entrolab pareto — {title}" if title else "entrolab pareto"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{esc(page_title)}</title><style>{CSS}{_EXTRA_CSS}</style></head><body>"
        f"<h1>{esc(page_title)}</h1>"
        f"<details><summary>run settings</summary><table class=meta>{meta}</table></details>"
        "<h2>Accuracy against generated tokens</h2>"
        "<p>One curve per strategy, each point labelled with its budget. Accuracy = share of "
        "items answered correctly, with an exact (Clopper–Pearson) 95% interval over items; "
        "tokens per item = every token the strategy made the model generate (stopped and "
        f"discarded traces included), averaged over items.</p><div>{svg}</div>"
        '<table class="cmp"><tr><th>strategy</th><th>budget</th><th>accuracy [95% CI]</th>'
        f"<th>tokens/item</th><th>answered</th><th>n</th></tr>{rows}</table>"
        "<h2>Paired comparisons</h2>"
        "<p>Each strategy against the baseline at the same budget, on the items both finished: "
        "accuracy difference with a 95% paired-bootstrap interval (exact McNemar test behind "
        "it) and the difference in generated tokens per item with its paired-bootstrap "
        "interval. n.s. = the accuracy interval includes 0 (uncorrected for the number of "
        f"comparisons).</p>{cmp_html}</body></html>\n"
    )


def write_pareto_report(
    run_dir: str | Path, *, title: str = "", baseline: str | None = None
) -> tuple[list[ParetoPoint], list[dict[str, Any]]]:
    """Write ``pareto.svg``, ``points.json``, ``comparisons.json`` and ``report.html`` into
    ``run_dir`` from its stored rows (no model needed).

    Returns:
        ``(points, comparisons)``: one point per (strategy, budget) and the paired
        comparisons against the baseline (:func:`choose_baseline`).

    Raises:
        EntrolabError: the run has no finished rows, or ``baseline`` was not run.
    """
    from entrolab.evaluation.rundir import RunDir

    rd = RunDir(run_dir)
    rows = rd.rows()
    if not rows:
        raise EntrolabError(f"{run_dir} has no finished results; run `entrolab pareto` first")
    points = points_from_rows(rows)
    base = choose_baseline(points, baseline)
    comparisons = paired_comparisons(rows, base)
    svg = pareto_svg(points, title=title)
    d = Path(run_dir)
    atomic_write_text(d / "pareto.svg", svg)
    atomic_write_text(d / "points.json", json.dumps([p.to_dict() for p in points], indent=2))
    atomic_write_text(d / "comparisons.json", json.dumps(comparisons, indent=2))
    config = rd.config() if rd.config_path.exists() else {}
    atomic_write_text(
        d / "report.html",
        render_pareto_html(points, comparisons, title=title, config=config, svg=svg),
    )
    return points, comparisons
