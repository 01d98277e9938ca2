"""The compare-samplers report: a terminal table, an accuracy-vs-temperature figure (matplotlib,
SVG) and a standalone HTML page (no scripts, no external resources; model text escaped)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from entrolab.evaluation.figures import _COLORS, _figure, _svg
from entrolab.report.assets import CSS

if TYPE_CHECKING:
    from entrolab.evaluation.sampler_compare import CompareResults

__all__ = ["COLUMNS", "accuracy_svg", "print_compare_table", "render_compare_html"]

#: (key, heading, format) of the summary table
COLUMNS = (
    ("pass1", "pass@1 [95% CI]", ".3f"),
    ("delta_pass1", "Δ vs baseline", "+.3f"),
    ("passk", "pass@k [95% CI]", ".3f"),
    ("distinct", "distinct", ".2f"),
    ("answer_entropy", "H(answers)", ".3f"),
    ("unparseable", "unparsed", ".2f"),
    ("kept", "kept", ".1f"),
    ("entropy_after", "H(q)", ".3f"),
    ("entropy", "H(p)", ".3f"),
    ("tokens", "tokens", ".1f"),
)
_TERMINAL = ("pass1", "delta_pass1", "passk", "distinct", "kept", "entropy_after")
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_EXTRA_CSS = (
    "table.cmp{border-collapse:collapse;font-size:12px;margin:6px 0 14px}"
    "table.cmp th,table.cmp td{padding:2px 8px;border-bottom:1px solid #e3e3e3;text-align:right;"
    "font-variant-numeric:tabular-nums}table.cmp td:first-child,table.cmp th:first-child"
    "{text-align:left}table.cmp tr.first td{border-top:2px solid #bbb}"
    ".reply{white-space:pre-wrap;font:12px/1.4 ui-monospace,monospace;background:#fff;"
    "border:1px solid #ddd;border-radius:4px;padding:4px 6px;margin:3px 0}.ok{color:#1b7a1b}"
    ".bad{color:#b3261e}"
)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _cell(row: dict[str, Any], key: str, spec: str, sep: str = " ") -> str:
    """A figure with its interval where the row has one; Δ cells say "n.s." when the paired
    interval includes 0."""
    value = _fmt(row.get(key), spec)
    low_key, high_key = {"delta_pass1": ("delta_low", "delta_high")}.get(
        key, (f"{key}_low", f"{key}_high")
    )
    if row.get(key) is None or row.get(low_key) is None:
        return value
    text = f"{value}{sep}[{row[low_key]:.2f},{row[high_key]:.2f}]"
    if key == "delta_pass1" and row[low_key] <= 0.0 <= row[high_key]:
        text += " n.s."
    return text


def accuracy_svg(table: Sequence[dict[str, Any]]) -> str:
    """pass@1 (±1 SE) vs temperature, one line per sampler, next to the mean kept-set size."""
    fig = _figure(9.0, 3.4)
    ax_acc, ax_kept = fig.subplots(1, 2)
    samplers = list(dict.fromkeys(r["sampler"] for r in table))
    for name, color in zip(samplers, _COLORS * 4, strict=False):
        rows = sorted((r for r in table if r["sampler"] == name), key=lambda r: r["temperature"])
        t = [r["temperature"] for r in rows]
        se = [r["pass1_se"] or 0.0 for r in rows]
        ax_acc.errorbar(
            t,
            [r["pass1"] for r in rows],
            yerr=se,
            label=name,
            color=color,
            marker="o",
            ms=3,
            lw=1.5,
            capsize=2,
        )
        ax_acc.plot(t, [r["passk"] for r in rows], color=color, ls=":", lw=1)
        kept = [(r["temperature"], r["kept"]) for r in rows if r["kept"]]
        if kept:
            ax_kept.plot(*zip(*kept, strict=True), color=color, marker="o", ms=3, lw=1.5)
    ax_acc.set(xlabel="temperature", ylabel="accuracy (pass@1; dotted: pass@k)", ylim=(0, 1))
    ax_kept.set(xlabel="temperature", ylabel="mean kept-set size (tokens)", yscale="log")
    ax_acc.legend(fontsize=7, loc="best")
    return _svg(fig)


def print_compare_table(results: CompareResults, console: Console | None = None) -> None:
    """The summary table in the terminal (one row per sampler and temperature)."""
    console = console or Console()
    c = results.config
    table = Table(
        title=f"{c.get('model') or 'embedded default'} on {c['task']}: {c['n']} items × "
        f"{c['samples']} samples (k = {c['samples']})"
    )
    table.add_column("sampler", overflow="fold", min_width=10, max_width=24)
    table.add_column("T", justify="right")
    columns = [c for c in COLUMNS if c[0] in _TERMINAL]
    for _, label, _ in columns:
        table.add_column(label, justify="right", no_wrap=True)
    previous = None
    for r in results.table():
        name = r["sampler"] if r["sampler"] != previous else ""
        previous = r["sampler"]
        table.add_row(
            name, f"{r['temperature']:g}", *(_cell(r, k, f, sep="\n") for k, _, f in columns)
        )
    console.print(table)
    base = c["samplers"][0]
    console.print(
        "pass@1 with a 95% bootstrap interval over items; pass@k with an exact (Clopper–Pearson) "
        f"interval; Δ = pass@1 minus {base}'s at the same temperature on the same items (paired "
        "bootstrap; n.s. = interval includes 0); distinct answers per item; kept = mean kept-set "
        "size; H(q) = entropy after the sampler (nats); more in summary.json / report.html",
        style="dim",
    )


def _examples(results: CompareResults, per_cell: int) -> str:
    esc = html.escape
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(results.rows, key=lambda r: r["index"]):
        by_cell.setdefault(r["cell"], []).append(r)
    parts = []
    for cell, rows in by_cell.items():
        items = []
        for r in rows[:per_cell]:
            replies = "".join(
                f'<div class="reply"><span class="{"ok" if ok else "bad"}">'
                f"[{esc(str(parsed))}]</span> {esc(text)}</div>"
                for text, parsed, ok in zip(r["responses"], r["parsed"], r["correct"], strict=True)
            )
            items.append(
                f"<p>item {r['index']}: {esc(r['prompt'])} — expected <b>{esc(r['answer'])}</b>"
                f"</p>{replies}"
            )
        parts.append(f"<details><summary>{esc(cell)}</summary>{''.join(items)}</details>")
    return "".join(parts)


def render_compare_html(results: CompareResults, *, examples_per_cell: int = 3) -> str:
    """The standalone report page as a string."""
    esc = html.escape
    table = results.table()
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in COLUMNS)
    body, previous = [], None
    for r in table:
        first = r["sampler"] != previous
        previous = r["sampler"]
        body.append(
            f'<tr class="{"first" if first else ""}"><td>{esc(r["sampler"]) if first else ""}</td>'
            f"<td>{r['temperature']:g}</td>"
            + "".join(f"<td>{esc(_cell(r, k, f))}</td>" for k, _, f in COLUMNS)
            + "</tr>"
        )
    c = results.config
    meta = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in c.items()
    )
    th = ""
    if results.thresholds:
        th = (
            "<p>entropix thresholds fitted on warm-up items (nats): "
            + esc(json.dumps(results.thresholds))
            + "</p>"
        )
    title = f"entrolab compare-samplers — {c['task']}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{esc(title)}</title><style>{CSS}{_EXTRA_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f"<details><summary>run settings</summary><table class=meta>{meta}</table></details>"
        "<h2>Accuracy vs temperature</h2>"
        f"<p>{c['n']} items × {c['samples']} samples per sampler and temperature, the same seeds "
        "in every cell. pass@1 = mean share of correct samples, with a 95% bootstrap interval "
        "over items (the figure shows ±1 standard error); Δ vs baseline = pass@1 minus the "
        f"first sampler's ({esc(c['samplers'][0])}) at the same temperature on the same items, "
        "95% paired-bootstrap interval, n.s. when it includes 0 (uncorrected for the number of "
        "cells); "
        f"pass@k = share of items with a correct sample (k = {c['samples']}; exact "
        "Clopper–Pearson interval); distinct = "
        "distinct answers per item and H(answers) their entropy (nats; an unparseable reply is "
        "one more answer); kept = mean kept-set size; H(q) = entropy after the sampler, "
        "H(p) = the model's own entropy (nats, means over tokens of each reply, then replies)."
        f"</p><div>{accuracy_svg(table)}</div>"
        f'<table class="cmp"><tr><th>sampler</th><th>T</th>{head}</tr>{"".join(body)}</table>'
        f"{th}<h2>Replies (first items of each cell)</h2>"
        f"{_examples(results, examples_per_cell)}</body></html>\n"
    )
