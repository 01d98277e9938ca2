"""The "Stability under paraphrase" section of the eval report (``RUN_DIR/report.html``).

:func:`paraphrase_section_html` renders a summary of
:func:`~entrolab.studies.paraphrase_eval.paraphrase_summary` and its paraphrase rows as trusted
HTML: a plain-language reading (:func:`reading_lines`), the per-estimator stability table (AUROC
per prompt, mean AUROC, spread, rank agreement, within-item spread, confident-flag flips, with
their 95% bootstrap intervals over items), AUROC per prompt as a figure, the multi-sample
(CHAOS) metrics and the items where greedy and multi-sample evaluation disagree, prompt by
prompt. Every prompt, source, answer and estimator name is escaped.

:func:`paraphrase_section` reads ``RUN_DIR/paraphrases/summary.json`` and ``results.jsonl``.
``entrolab eval`` (and ``eval --report RUN_DIR``) passes the section to
:func:`~entrolab.evaluation.report.render_eval_html` as ``sections_html``: evaluation sits below
studies in the import contract, so the report takes the section as an argument.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.evaluation.report import cell, fmt_value
from entrolab.studies.paraphrase_eval import (
    SUBDIR,
    by_mean_auroc,
    fmt_interval,
    load_paraphrase_rows,
    paraphrase_summary,
)

__all__ = [
    "auroc_by_prompt_figure",
    "paraphrase_section",
    "paraphrase_section_html",
    "reading_lines",
]

TITLE = "Stability under paraphrase"
#: greedy answers longer than this are cut (…) in the disagreement tables
ANSWER_CHARS = 200
#: items shown per disagreement list (the rest are counted)
MAX_ITEMS = 10
_STYLE = "<style>table.para td.t{overflow-wrap:anywhere}</style>"  # long answers wrap
#: (summary key, trusted header HTML, format) of the stability table's interval columns
_ESTIMATOR_COLUMNS = (
    ("auroc_mean", "mean AUROC<br>over prompts", ".3f"),
    ("auroc_spread", "AUROC spread<br>(max−min)", ".3f"),
    ("rank_agreement", "rank<br>agreement ρ", ".2f"),
    ("within_item_spread", "within-item<br>spread", ".3f"),
    ("decision_flip_rate", "confident-flag<br>flips", ".2f"),
)


def _ends(iv: Any) -> tuple[float, float] | None:
    """(low, high) of an interval dict when both are finite, else None."""
    if not isinstance(iv, dict):
        return None
    lo, hi = iv.get("low"), iv.get("high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return lo, hi


def _mean(iv: Any) -> float | None:
    m = iv.get("mean") if isinstance(iv, dict) else None
    return m if m is not None and math.isfinite(m) else None


def _versus(iv: dict, other: str, other_iv: dict, digits: int) -> str:
    """How an interval compares with the runner-up's (overlap = not significant)."""
    a, b = _ends(iv), _ends(other_iv)
    theirs = f"{other}'s {fmt_interval(other_iv, digits)}"
    if a is None or b is None:
        return f"no interval to compare with {theirs}"
    if a[0] <= b[1] and b[0] <= a[1]:
        return f"not significant: its interval overlaps {theirs}"
    return f"ahead of {theirs} (the intervals do not overlap)"


def _best(ests: Mapping[str, dict], key: str) -> list[str]:
    """Names with a finite ``key`` mean, highest first."""
    named = [(n, _mean(e.get(key))) for n, e in ests.items() if "reason" not in e]
    return [n for n, m in sorted((t for t in named if t[1] is not None), key=lambda t: -t[1])]


def reading_lines(summary: Mapping[str, Any]) -> list[str]:
    """The plain-language reading of a paraphrase summary, one sentence each: the most stable
    estimator (highest rank agreement) and the best mean AUROC, each against the runner-up
    (overlapping 95% intervals: "not significant"); how often the greedy answer's correctness
    changes with the wording; whether greedy evaluation over- or understates sampled accuracy."""
    ests = summary["estimators"]
    lines = []
    stable = _best(ests, "rank_agreement")
    if stable:
        top = stable[0]
        line = (
            f"most stable: {top}, rank agreement ρ {fmt_interval(ests[top]['rank_agreement'])} "
            "(1 = every wording flags the same items as risky)"
        )
        if len(stable) > 1:
            runner = stable[1]
            line += "; " + _versus(
                ests[top]["rank_agreement"], runner, ests[runner]["rank_agreement"], 2
            )
        lines.append(line)
    best = _best(ests, "auroc_mean")
    if best:
        top, iv = best[0], ests[best[0]]["auroc_mean"]
        ends = _ends(iv)
        line = f"best mean AUROC over prompts: {top}, {fmt_interval(iv, 3)}"
        if ends is not None and ends[0] <= 0.5 <= ends[1]:
            line += " (its interval includes 0.5: not distinguishable from chance)"
        line += f", moving by {fmt_interval(ests[top]['auroc_spread'], 3)} between wordings"
        if len(best) > 1:
            runner = best[1]
            line += "; " + _versus(iv, runner, ests[runner]["auroc_mean"], 3)
        lines.append(line)
    if not stable and not best:
        lines.append("no estimator could be scored on every prompt (see the table)")
    c = summary["correctness"]
    acc = ", ".join(
        f"{_prompt_label(p)} {a:.2f}" for p, a in enumerate(c["accuracy_by_paraphrase"])
    )
    lines.append(
        f"the greedy answer is right on some wordings and wrong on others for "
        f"{fmt_interval(c['flip_rate'])} of the items (greedy accuracy per prompt: {acc})"
    )
    ms = summary.get("multi_sample") or {}
    gap = ms.get("greedy_minus_sampled")
    ends = _ends(gap)
    if _mean(gap) is not None:
        if ends is not None and ends[0] <= 0 <= ends[1]:
            verdict = "greedy and sampled accuracy do not differ significantly"
        else:
            verdict = f"greedy evaluation {'over' if gap['mean'] > 0 else 'under'}states accuracy"
        lines.append(
            f"{verdict}: greedy − sampled {fmt_interval(gap)}; worst-wording P(fail) "
            f"{fmt_interval(ms['p_fail_worst'])} vs mean {fmt_interval(ms['p_fail_mean'])}"
        )
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _sources(counts: Mapping[str, int]) -> str:
    """``template 12 (per-item notes in paraphrases/results.jsonl)``: paraphrase sources by
    kind; a source's note in parentheses (e.g. why a model rewrite was rejected) is per item."""
    kinds: Counter[str] = Counter()
    for source, n in counts.items():
        kinds[source.split(" (", 1)[0]] += n
    notes = any(" (" in s for s in counts)
    text = ", ".join(f"{k} {n}" for k, n in kinds.items())
    return text + (" (per-item notes in paraphrases/results.jsonl)" if notes else "")


def _prompt_label(p: int) -> str:
    return "original" if p == 0 else f"p{p}"


def _cell(iv: Any, spec: str = ".2f") -> str:
    """An interval dict as a table cell in the main table's style, ``0.712 [.61,.80]``
    (:func:`~entrolab.evaluation.report.cell`; just the figure without finite ends)."""
    mean, ends = _mean(iv), _ends(iv)
    row = {
        "v": mean,
        **({"v_low": ends[0], "v_high": ends[1]} if ends and mean is not None else {}),
    }
    return cell(row, "v", spec)


def _estimator_table(summary: Mapping[str, Any]) -> str:
    esc = html.escape
    ests, k = summary["estimators"], summary["paraphrases"]
    prompts = ", ".join(_prompt_label(p) for p in range(k))
    head = f"<th>AUROC per prompt<br>({prompts})</th>" + "".join(
        f"<th>{label}</th>" for _, label, _ in _ESTIMATOR_COLUMNS
    )
    body = []
    for name in by_mean_auroc(ests):
        e = ests[name]
        if "reason" in e:
            cells = f"<td colspan={1 + len(_ESTIMATOR_COLUMNS)}>{esc(e['reason'])}</td>"
        else:
            per = " · ".join(fmt_value(a, ".3f") for a in e["auroc_by_paraphrase"])
            cells = f"<td>{per}</td>" + "".join(
                f"<td>{esc(_cell(e[key], spec))}</td>" for key, _, spec in _ESTIMATOR_COLUMNS
            )
        body.append(f"<tr><td>{esc(name)}</td>{cells}<td>{e['n']}</td></tr>")
    return f"<table class=meta><tr><th>estimator</th>{head}<th>n</th></tr>{''.join(body)}</table>"


def _chaos_rows(ms: Mapping[str, Any]) -> list[tuple[str, str]]:
    k, g = ms["k"], ms["samples"]
    return [
        ("greedy_accuracy", "greedy accuracy (original prompt)"),
        ("sampled_accuracy", f"sampled accuracy (all prompts × {g} samples)"),
        ("greedy_minus_sampled", "greedy − sampled accuracy (> 0: greedy flatters the model)"),
        (f"pass@{k}", f"pass@{k}: some of {k} samples right (unbiased, mean over prompts)"),
        (f"maj@{g}", f"maj@{g}: the majority answer of the {g} samples is right"),
        ("p_fail_mean", "P(fail) under perturbation: share of wrong samples, mean over prompts"),
        ("p_fail_worst", "P(fail) under perturbation, worst prompt"),
        ("fragile_fraction", "fragile items: some samples right, some wrong"),
        ("tail_risk", "tail risk: some sample wrong with confidence ≥ 0.9"),
    ]


def _chaos_table(ms: Mapping[str, Any]) -> str:
    esc = html.escape
    body = "".join(
        f"<tr><td>{esc(label)}</td><td>{esc(_cell(ms[key]))}</td></tr>"
        for key, label in _chaos_rows(ms)
        if key in ms
    )
    if "rate_variance" in ms:
        body += (
            "<tr><td>variance over items of the share of right samples</td>"
            f"<td>{fmt_value(ms['rate_variance'], '.3f')}</td></tr>"
        )
    note = (
        f"<p>tail risk not available: {esc(ms['tail_risk_reason'])}</p>"
        if "tail_risk_reason" in ms
        else ""
    )
    return (
        f"<table class=meta><tr><th>metric</th><th>value [95% interval]</th></tr>{body}</table>"
        + note
    )


def _clip(text: Any, limit: int = ANSWER_CHARS) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _answers(keys: Sequence[Any]) -> str:
    """``77 ×2, unparseable ×1``: a prompt's sample answers, most frequent first."""
    counts = Counter("unparseable" if k is None else _clip(k, 40) for k in keys)
    return ", ".join(f"{k} ×{n}" for k, n in counts.most_common())


def _disagreements(
    positions: Sequence[int], rows: Sequence[dict], eval_rows: Mapping[int, dict]
) -> str:
    """One table row per (item, prompt) of the listed items (positions into ``rows``)."""
    if not positions:
        return "<p>none</p>"
    esc = html.escape
    out = []
    for pos in positions[:MAX_ITEMS]:
        r = rows[pos]
        per = r["per_paraphrase"]
        for p, (prompt, src, x) in enumerate(zip(r["prompts"], r["sources"], per, strict=True)):
            reply = x.get("response", eval_rows.get(r["index"], {}).get("response"))
            right = sum(x["sample_correct"])
            item = (
                f"<td rowspan={len(per)}>item {r['index']} ({esc(str(r['id']))})<br>"
                f"reference {esc(_clip(r['answer'], 60))}</td>"
                if p == 0
                else ""
            )
            out.append(
                f"<tr>{item}<td class=t>{_prompt_label(p)}: {esc(prompt)}<br><small>{esc(src)}</small>"
                f"</td><td class=t>{esc(_clip(reply)) if reply is not None else '–'}</td>"
                f"<td>{'right' if x['correct'] else 'wrong'}</td>"
                f"<td>{right}/{len(x['sample_correct'])}</td>"
                f"<td class=t>{esc(_answers(x['sample_keys']))}</td></tr>"
            )
    more = len(positions) - MAX_ITEMS
    return (
        "<table class='meta para'><tr><th>item</th><th>prompt (source)</th><th>greedy answer"
        "</th><th>greedy</th><th>samples right</th><th>sample answers</th></tr>"
        + "".join(out)
        + "</table>"
        + (
            f"<p>and {_count(more, 'more item')} (see paraphrases/summary.json)</p>"
            if more > 0
            else ""
        )
    )


def auroc_by_prompt_figure(summary: Mapping[str, Any], top: int = 4):
    """AUROC of the ``top`` estimators (best mean first) on each prompt wording, with chance
    (0.5) dashed: flat lines = a ranking that does not depend on the wording. None when no
    estimator has an AUROC on any prompt."""
    from entrolab.report.figures import legend_under, new_figure, same_as_notes, series_style

    ests, k = summary["estimators"], summary["paraphrases"]
    x = np.arange(k, dtype=np.float64)
    series = {
        n: (x, np.array([np.nan if a is None else a for a in ests[n]["auroc_by_paraphrase"]]))
        for n in by_mean_auroc(ests)
        if "auroc_by_paraphrase" in ests[n]
    }
    series = {n: s for n, s in list(series.items())[:top] if np.isfinite(s[1]).any()}
    if not series:
        return None
    notes = same_as_notes({"": series})
    fig = new_figure(6.2, 3.6)
    ax = fig.subplots()
    for i, (name, (xs, ys)) in enumerate(series.items()):
        ax.plot(xs, ys, label=name + notes.get(name, ""), lw=1.5, **series_style(i))
    ax.axhline(0.5, ls=(0, (1, 2)), color="grey", lw=1, label="chance")
    ax.set_xticks(x, [_prompt_label(p) for p in range(k)])
    ax.set(xlim=(-0.3, k - 0.7), ylim=(0, 1.02), xlabel="prompt wording", ylabel="AUROC")
    ax.grid(alpha=0.3)
    legend_under(ax, ncols=2)
    return fig


def paraphrase_section_html(
    summary: Mapping[str, Any],
    rows: Sequence[dict],
    eval_rows: Sequence[dict] | None = None,
    *,
    figure: bool = True,
) -> str:
    """The report section as trusted HTML (everything from the run escaped).

    Args:
        summary: :func:`~entrolab.studies.paraphrase_eval.paraphrase_summary` of ``rows``
            (or its JSON, with NaN as null).
        rows: the paraphrase rows it was computed from, in the same order (the disagreement
            lists are positions into them).
        eval_rows: the eval's rows (their ``response`` is the greedy answer to the original
            prompt); without them that answer shows as "–".
        figure: draw AUROC per prompt (matplotlib, inline SVG).
    """
    esc = html.escape
    by_index = {r["index"]: r for r in eval_rows or []}
    sources = _sources(summary["sources"])
    ms = summary.get("multi_sample") or {}
    samples = f", {ms['samples']} samples per prompt" if "samples" in ms else ""
    reading = "".join(f"<li>{esc(line)}</li>" for line in reading_lines(summary))
    out = [
        _STYLE,
        f"<h2>{TITLE}</h2>",
        f"<p>{summary['n_items']} items × {summary['paraphrases']} prompts: the original and "
        f"{_count(summary['paraphrases'] - 1, 'paraphrase')} (sources: {esc(sources)}){samples}. "
        "[lo, hi] = 95% bootstrap interval over items; intervals that overlap are read as "
        "not significant (a conservative check).</p>",
        f"<ul>{reading}</ul>",
        "<h2>Confidence stability across paraphrases, best mean AUROC first</h2>"
        "<p>AUROC per prompt of each estimator's confidence for a correct greedy answer; "
        "rank agreement = mean Spearman ρ of the estimator's values between prompt pairs; "
        "within-item spread = standard deviation over prompts of an item's rank-scaled value "
        "(0 = the wording never moves it); confident-flag flips = share of items that are "
        "below the median uncertainty on some prompts and above it on others.</p>",
        _estimator_table(summary),
    ]
    fig = auroc_by_prompt_figure(summary) if figure else None
    if fig is not None:
        from entrolab.report.figures import to_svg

        out.append(f"<h2>AUROC per prompt wording, top estimators</h2><div>{to_svg(fig)}</div>")
    out.append("<h2>Multi-sample evaluation under paraphrase (CHAOS)</h2>")
    if "reason" in ms or not ms:
        out.append(f"<p>not available: {esc(ms.get('reason', 'no multi-sample metrics'))}</p>")
        return "".join(out)
    out.append(_chaos_table(ms))
    for key, what in (
        ("greedy_right_sampled_below_half", "Greedy right but P(correct) &lt; 0.5"),
        ("greedy_wrong_sampled_above_half", "Greedy wrong but P(correct) ≥ 0.5"),
    ):
        positions = ms.get(key) or []
        out.append(
            f"<h2>{what}: {_count(len(positions), 'item')}</h2>"
            f"<p>P(correct) = share of right samples over all prompts.</p>"
            + _disagreements(positions, rows, by_index)
        )
    return "".join(out)


def paraphrase_section(run_dir: str | Path, eval_rows: Sequence[dict] | None = None) -> str:
    """The section for an eval run directory from ``paraphrases/summary.json`` and its rows;
    "" when the directory has no paraphrase summary. Write the summary first
    (:func:`~entrolab.studies.paraphrase_eval.report_paraphrases`, which also checks that the
    paraphrase run belongs to this eval run)."""
    path = Path(run_dir) / SUBDIR / "summary.json"
    if not path.exists():
        return ""
    summary = json.loads(path.read_text(encoding="utf-8"))
    rows = load_paraphrase_rows(run_dir)
    if len(rows) != summary["n_items"]:  # rows added since: its item lists would be off
        summary = paraphrase_summary(rows)
    return paraphrase_section_html(summary, rows, eval_rows)
