"""Standalone HTML report: token entropy heatmaps with top-k tooltips and entropy plots.

:func:`render_html` returns one self-contained page (inline CSS, a small inline script, inline
SVG; a Content-Security-Policy forbids every external resource). Model output is untrusted: all
model text goes through :func:`html.escape` (``quote=True``), and the per-token tooltip data is
embedded as JSON in a ``<script type="application/json">`` block with ``<``, ``>``, ``&``, U+2028
and U+2029 escaped; the script builds tooltips with ``textContent`` only, never ``innerHTML``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.report.assets import CSS, JS
from entrolab.report.summary import (
    ENTROPY_SCALE_MAX,
    IdToText,
    Stops,
    TraceSummary,
    format_probability,
    scale_color,
    summarize,
    token_texts,
    visible_token,
)
from entrolab.signals import sliding_window_mean
from entrolab.types import Trace

#: Token background colours (0 nats = pale green … >= ENTROPY_SCALE_MAX = red); dark text stays
#: readable on every one of them.
HTML_STOPS: Stops = (
    (0.0, (226, 244, 221)),
    (0.33, (255, 244, 170)),
    (0.66, (253, 190, 95)),
    (1.0, (240, 110, 90)),
)
#: SVG plot geometry (viewBox units).
PLOT_WIDTH, PLOT_HEIGHT = 600, 170
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 44, 10, 22, 32

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _num(x: float, fmt: str = ".3f") -> str:
    return "n/a" if math.isnan(x) else format(x, fmt)


def script_json(obj: Any) -> str:
    """``json.dumps(obj)`` made safe to inline in a ``<script>`` element."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, rep)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _tips(trace: Trace, texts: Mapping[int, str]) -> list[list[Any]]:
    """Per token: [entropy, p(chosen), logprob, rank, [[alternative, p, is_chosen], …]]."""
    ranks = trace.rank.tolist() if trace.rank is not None else None
    rows = []
    topk_ids, topk_lps = trace.topk_ids.tolist(), trace.topk_logprobs.tolist()
    for i, (tok_id, lp, h) in enumerate(
        zip(trace.token_ids.tolist(), trace.logprob.tolist(), trace.entropy.tolist(), strict=True)
    ):
        ids = topk_ids[i]
        if ranks is not None:
            rank = str(ranks[i])
        elif tok_id in ids:
            rank = str(ids.index(tok_id))
        else:
            rank = f"≥{len(ids)}" if ids else "?"
        alts = [
            [visible_token(texts.get(a, f"#{a}")), format_probability(math.exp(alp)), a == tok_id]
            for a, alp in zip(ids, topk_lps[i], strict=True)
        ]
        rows.append([_num(h), format_probability(math.exp(lp)), _num(lp), rank, alts])
    return rows


def _token_html(piece: str) -> str:
    text = _esc(visible_token(piece, keep_layout=True))
    for mark in ("↵", "⇥", "∅"):
        text = text.replace(mark, f'<span class="ws">{mark}</span>')
    return text


def _heatmap(trace: Trace, index: int, summary: TraceSummary) -> str:
    forks = {f.position for f in summary.forks}
    spans = []
    for i, (piece, h) in enumerate(zip(trace.tokens, trace.entropy.tolist(), strict=True)):
        cls = "tok fork" if i in forks else "tok"
        bg = _hex(scale_color(h, HTML_STOPS))
        spans.append(
            f'<span class="{cls}" tabindex="0" data-i="{i}" style="background:{bg}">'
            f"{_token_html(piece)}</span>"
        )
    return f'<div class="heat" data-t="{index}">{"".join(spans)}</div>'


def _x_ticks(n: int) -> list[int]:
    """Token positions to label on the x axis: multiples of a 1-2-5 step (at most ~6), and n − 1."""
    last, step, mults = n - 1, 1, (2, 2.5, 2)
    while last / step > 6:
        step = round(step * mults[0])
        mults = (*mults[1:], mults[0])
    ticks = list(range(0, last, step))
    if len(ticks) > 1 and last - ticks[-1] < 0.6 * step:
        ticks.pop()
    return [*ticks, last] if n else []


def _plot(trace: Trace, index: int, summary: TraceSummary) -> str:
    """Inline SVG: entropy per token (polyline), dashed mean, fork dots, hover cursor."""
    values = trace.entropy.tolist()
    finite = [h for h in values if math.isfinite(h)]
    y_max = max(1.0, math.ceil(max(finite, default=0.0)))
    step = 1 if y_max <= 5 else math.ceil(y_max / 5)
    w = PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT
    h_px = PLOT_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    n = len(values)
    dx = w / (n - 1) if n > 1 else 0.0
    x0 = PLOT_LEFT if n > 1 else PLOT_LEFT + w / 2
    bottom = PLOT_TOP + h_px

    def y(v: float) -> float:
        return PLOT_TOP + h_px * (1 - min(max(v, 0.0), y_max) / y_max)

    parts = [
        f'<svg class="plot" id="plot-{index}" viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" '
        f'data-x0="{x0:.3f}" data-dx="{dx:.6f}" role="img" '
        f'aria-label="entropy per token in nats">'
    ]
    for tick in range(0, int(y_max) + 1, step):
        ty = y(tick)
        parts.append(
            f'<line class="gl" x1="{PLOT_LEFT}" x2="{PLOT_LEFT + w}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text x="{PLOT_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{PLOT_LEFT}" x2="{PLOT_LEFT}" y1="{PLOT_TOP}" y2="{bottom}"/>'
        f'<line class="axis" x1="{PLOT_LEFT}" x2="{PLOT_LEFT + w}" y1="{bottom}" y2="{bottom}"/>'
        f'<text x="12" y="{PLOT_TOP + h_px / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {PLOT_TOP + h_px / 2:.1f})">entropy (nats)</text>'
        f'<text x="{PLOT_LEFT + w / 2:.1f}" y="{PLOT_HEIGHT - 4}" text-anchor="middle">'
        f"token position</text>"
    )
    for pos in _x_ticks(n):
        parts.append(
            f'<text x="{x0 + pos * dx:.1f}" y="{bottom + 14}" text-anchor="middle">{pos}</text>'
        )
    segment: list[str] = []
    for i, v in enumerate([*values, math.nan]):  # NaN entropies break the line
        if math.isfinite(v):
            segment.append(f"{x0 + i * dx:.1f},{y(v):.1f}")
        elif segment:
            parts.append(f'<polyline class="line" points="{" ".join(segment)}"/>')
            segment = []
    if math.isfinite(summary.mean_entropy):
        my = y(summary.mean_entropy)
        parts.append(
            f'<line class="mean" x1="{PLOT_LEFT}" x2="{PLOT_LEFT + w}" y1="{my:.1f}" y2="{my:.1f}">'
            f"<title>mean entropy {summary.mean_entropy:.3f} nats</title></line>"
        )
    wmean = _window_means(trace, summary.window)
    if wmean:
        pts = " ".join(f"{x0 + c * dx:.1f},{y(v):.1f}" for c, v in wmean)
        parts.append(
            f'<polyline class="wmean" points="{pts}"><title>mean entropy over a sliding '
            f"window of {summary.window} tokens, drawn at the window centre</title></polyline>"
        )
    key = f'<tspan class="k-w">╍</tspan> {summary.window}-token window mean  ' if wmean else ""
    parts.append(
        f'<text class="key" x="{PLOT_LEFT + w}" y="{PLOT_TOP - 10}" text-anchor="end">'
        f'<tspan class="k-line">━</tspan> entropy  {key}<tspan class="k-m">╍</tspan> mean  '
        f'<tspan class="k-f">●</tspan> fork</text>'
    )
    for fork in summary.forks:
        if math.isfinite(fork.entropy):
            parts.append(
                f'<circle class="forkdot" cx="{x0 + fork.position * dx:.1f}" '
                f'cy="{y(fork.entropy):.1f}" r="3"/>'
            )
    parts.append(
        f'<line class="cursor" visibility="hidden" x1="0" x2="0" y1="{PLOT_TOP}" y2="{bottom}"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _window_means(trace: Trace, window: int) -> list[tuple[float, float]]:
    """(window centre position, mean entropy) of every full ``window``-token window (a centred
    rolling mean); empty unless there are at least two windows. NaN entropies are skipped."""
    entropy = trace.entropy.reshape(1, -1)
    mask = torch.isfinite(entropy)
    real = torch.nonzero(mask.reshape(-1)).reshape(-1).tolist()
    if len(real) <= window:
        return []
    means, valid = sliding_window_mean(entropy, mask, window)
    out = []
    for s, (m, ok) in enumerate(
        zip(means.reshape(-1).tolist(), valid.reshape(-1).tolist(), strict=True)
    ):
        if ok:  # window s covers the real tokens s … s + window − 1
            out.append(((real[s] + real[s + window - 1]) / 2, m))
    return out


def _summary(summary: TraceSummary) -> str:
    rows = [
        ("tokens", str(summary.n_tokens)),
        ("mean entropy", f"{_num(summary.mean_entropy)} nats"),
        ("mean logprob", f"{_num(summary.mean_logprob)} nats"),
        ("perplexity", _num(summary.perplexity)),
        (f"mean DeepConf confidence (k={summary.k})", f"{_num(summary.mean_confidence)} nats"),
        (
            f"lowest-window DeepConf confidence (w={summary.window})",
            f"{_num(summary.lowest_window_confidence)} nats",
        ),
    ]
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in rows)
    forks = " ".join(
        f"<code>{_esc(visible_token(f.token))}</code> @{f.position} {_num(f.entropy, '.2f')}"
        for f in summary.forks
    )
    return (
        f'<dl class="sum">{dl}</dl><div class="forks"><b>forking tokens</b> '
        f"(top ρ={summary.rho:g}, highest entropy first): {forks or 'none'}</div>"
    )


def _card(trace: Trace, index: int, summary: TraceSummary) -> str:
    prov = f"{trace.provenance.logits} logits, {trace.provenance.vocab} vocab"
    head = (
        f"sample {trace.sample_index} <small>· {_esc(trace.finish_reason)} · {_esc(prov)}"
        f"{' · ' + _esc(trace.model) if trace.model else ''}</small>"
    )
    return (
        f'<div class="card"><h3>{head}</h3>{_heatmap(trace, index, summary)}'
        f"{_plot(trace, index, summary)}{_summary(summary)}</div>"
    )


def _legend() -> str:
    steps = [i / 10 for i in range(11)]
    stops = ",".join(_hex(scale_color(x * ENTROPY_SCALE_MAX, HTML_STOPS)) for x in steps)
    ticks = "".join(
        f"<span>{'≥' if v == ENTROPY_SCALE_MAX else ''}{v:g}</span>"
        for v in (0.0, ENTROPY_SCALE_MAX / 3, 2 * ENTROPY_SCALE_MAX / 3, ENTROPY_SCALE_MAX)
    )
    return (
        '<div class="legend"><span>token entropy (nats)</span><div>'
        f'<div class="bar" style="background:linear-gradient(to right,{stops})"></div>'
        f'<div class="ticks">{ticks}</div></div><span>underlined = forking token; '
        "hover or focus a token for its top-k alternatives</span></div>"
    )


def render_html(
    traces: Iterable[Trace],
    summaries: Sequence[TraceSummary] | None = None,
    *,
    title: str = "entrolab analyze",
    meta: Mapping[str, Any] | None = None,
    id_to_text: IdToText | None = None,
    intro_html: str = "",
    headings: Mapping[int, str] | None = None,
) -> str:
    """One standalone HTML page for ``traces`` (samples of a prompt side by side).

    Args:
        traces: the completions (e.g. a :class:`~entrolab.types.TraceBatch`).
        summaries: one :class:`TraceSummary` per trace, same order (computed with
            :func:`summarize` defaults when omitted).
        title: page title and heading.
        meta: run details, shown in a collapsible table (strings as they are, other values as JSON).
        id_to_text: text of top-k alternative token ids: a function from a list of ids to their
            strings (e.g. ``lambda ids: [tok.decode([i]) for i in ids]``) or a mapping. Ids it
            does not cover use the traces' own chosen tokens, else ``#<id>``.
        intro_html: trusted HTML placed before the traces (e.g. the eval report's tables and
            figures); the caller must have escaped any model or user text in it.
        headings: plain-text heading per ``prompt_index`` (escaped here); default "prompt i".

    Returns:
        The page as a string.
    """
    traces = list(traces)
    if summaries is None:
        summaries = [summarize(t) for t in traces]
    if len(summaries) != len(traces):
        raise EntrolabError(f"got {len(summaries)} summaries for {len(traces)} traces")
    texts = token_texts(traces, id_to_text)
    meta_rows = "".join(
        f"<tr><td>{_esc(k)}</td><td>{_esc(v if isinstance(v, str) else json.dumps(v, default=str))}"
        "</td></tr>"
        for k, v in (meta or {}).items()
    )
    if meta_rows:
        meta_rows = f"<details><summary>run settings</summary><table class=meta>{meta_rows}</table></details>"
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(traces):
        groups.setdefault(t.prompt_index, []).append(i)
    sections = []
    for prompt_index, idx in groups.items():
        cards = "".join(_card(traces[i], i, summaries[i]) for i in idx)
        sections.append(
            f"<section><h2>{_esc((headings or {}).get(prompt_index, f'prompt {prompt_index}'))}</h2>"
            f'<pre class="prompt">'
            f'{_esc(traces[idx[0]].prompt)}</pre><div class="grid">{cards}</div></section>'
        )
    data = script_json([_tips(t, texts) for t in traces])
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        f"{meta_rows}{intro_html}"
        f"{_legend()}{''.join(sections) or '<p>no traces</p>'}"
        '<div id="tip" role="tooltip" hidden></div>'
        f'<script type="application/json" id="entrolab-data">{data}</script>'
        f"<script>{JS}</script></body></html>\n"
    )


def write_html(
    path: str | os.PathLike[str],
    traces: Iterable[Trace],
    summaries: Sequence[TraceSummary] | None = None,
    **kwargs: Any,
) -> Path:
    """Render with :func:`render_html` (same keyword arguments) and write ``path`` atomically
    (a temporary file in the same folder, renamed into place). Returns the path."""
    return atomic_write_text(path, render_html(traces, summaries, **kwargs))
