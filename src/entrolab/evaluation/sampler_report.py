"""The compare-samplers report: a terminal table, an accuracy-vs-temperature figure (matplotlib,
SVG) and a standalone HTML page (no scripts, no external resources; model text escaped)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from entrolab.report.assets import CSS
from entrolab.report.figures import (
    legend_below,
    new_figure,
    nudge,
    pad_limits,
    plain_log_ticks,
    same_as_notes,
    series_style,
    to_svg,
)

if TYPE_CHECKING:
    from entrolab.evaluation.sampler_compare import CompareResults

__all__ = [
    "COLUMNS",
    "accuracy_figure",
    "accuracy_svg",
    "print_compare_table",
    "render_compare_html",
]

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
    "font-variant-numeric:tabular-nums}table.cmp th{white-space:nowrap}"
    "table.cmp td:first-child,table.cmp th:first-child"
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


def accuracy_figure(table: Sequence[dict[str, Any]]):
    """Left: pass@1 vs temperature, one line per sampler, with 95% bootstrap intervals over
    items as error bars (samplers nudged sideways so no bar hides another) and pass@k as a thin
    line of the same style without markers. Right: mean kept-set size (log scale). A sampler
    whose curve coincides with an earlier one says so in the legend."""
    from matplotlib.lines import Line2D

    fig = new_figure(9.0, 3.6)
    ax_acc, ax_kept = fig.subplots(1, 2)
    samplers = list(dict.fromkeys(r["sampler"] for r in table))
    by_name = {
        name: sorted((r for r in table if r["sampler"] == name), key=lambda r: r["temperature"])
        for name in samplers
    }
    kept = {
        n: tuple(zip(*[(r["temperature"], r["kept"]) for r in rows if r["kept"]], strict=True))
        or ((), ())
        for n, rows in by_name.items()
    }
    notes = same_as_notes(
        {
            "pass@1": {
                n: ([r["temperature"] for r in rows], [r["pass1"] for r in rows])
                for n, rows in by_name.items()
            },
            "kept": kept,
        }
    )
    handles = []
    for i, (name, rows) in enumerate(by_name.items()):
        style = series_style(i)
        t = [r["temperature"] for r in rows]
        p1 = [r["pass1"] for r in rows]
        if all(r.get("pass1_low") is not None for r in rows):
            err = [
                [p - r["pass1_low"] for p, r in zip(p1, rows, strict=True)],
                [r["pass1_high"] - p for p, r in zip(p1, rows, strict=True)],
            ]
        else:
            err = [r.get("pass1_se") or 0.0 for r in rows]
        shift = nudge(ax_acc, i, len(samplers))
        ax_acc.errorbar(
            t, p1, yerr=err, transform=shift, lw=1.5, capsize=2, elinewidth=0.9, **style
        )
        ax_acc.plot(
            t,
            [r["passk"] for r in rows],
            color=style["color"],
            ls=style["ls"],
            lw=0.8,
            alpha=0.7,
            transform=shift,
        )
        if kept[name][0]:
            ax_kept.plot(*kept[name], lw=1.5, transform=nudge(ax_kept, i, len(samplers)), **style)
        handles.append(Line2D([], [], label=name + notes.get(name, ""), **style))
    handles.append(Line2D([], [], color="grey", lw=0.8, label="thin line: pass@k (same sampler)"))
    temps = sorted({r["temperature"] for r in table})
    ax_acc.set(xlabel="temperature", ylabel="pass@1 (95% bootstrap interval)", ylim=(0, 1.02))
    ax_kept.set(xlabel="temperature", ylabel="mean kept-set size (tokens, log scale)", yscale="log")
    plain_log_ticks(ax_kept.yaxis)
    values = [v for _, ys in kept.values() for v in ys]
    if values:
        ax_kept.set_ylim(min(values) / 1.3, max(values) * 1.3)
    for ax in (ax_acc, ax_kept):
        ax.grid(alpha=0.3)
        ax.set_xticks(temps, [f"{t:g}" for t in temps])
        pad_limits(ax, temps)
    legend_below(fig, handles, [h.get_label() for h in handles], ncols=min(len(handles), 4))
    return fig


def accuracy_svg(table: Sequence[dict[str, Any]]) -> str:
    """:func:`accuracy_figure` as an SVG string."""
    return to_svg(accuracy_figure(table))


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
        "over items (the error bars in the figure); Δ vs baseline = pass@1 minus the "
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
