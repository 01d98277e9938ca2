"""Accuracy against generated tokens: run several strategies at several budgets, resumably.

Every (strategy, budget, item) outcome is appended as one JSON line to a run directory
(:class:`~entrolab.evaluation.rundir.RunDir`: ``config.json`` + append-only ``results.jsonl``),
so a killed run resumes where it stopped and new strategies or budgets can be added to an
existing run. ``config.json`` pins what every row must share (model, task, items, seed); the
strategy parameters are stored in each row, and a resumed run refuses rows whose parameters
differ from the ones asked for.

One :class:`ParetoPoint` per (strategy, budget): accuracy (with its exact binomial interval) and
generated tokens per item (the mean over items of the exact per-item counts); :func:`pareto_svg`
draws one curve per strategy with error bars; :func:`paired_comparisons` tests each strategy
against a baseline on the same items.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entrolab.backends.base import Backend
from entrolab.calibration import clopper_pearson
from entrolab.errors import EntrolabError
from entrolab.inference.base import ItemOutcome, make_strategy, summarize_outcomes

if TYPE_CHECKING:
    from entrolab.tasks import Task, TaskItem

__all__ = [
    "ParetoPoint",
    "load_points",
    "paired_comparisons",
    "pareto_figure",
    "pareto_svg",
    "points_from_rows",
    "run_pareto",
]

#: on_progress(units_done, units_total, label): one unit = one (strategy, budget, item)
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ParetoPoint:
    """One strategy at one budget, over ``n`` items.

    Attributes:
        strategy: strategy name. budget: its budget parameter.
        accuracy: fraction of items answered correctly.
        tokens_per_item: mean generated tokens per item (every trace, stopped ones included).
        generated_tokens: total over the items.
        n: items. answered: items with an answer.
        accuracy_low, accuracy_high: exact (Clopper–Pearson) 95% interval of the accuracy
            over the n items (None when not computed).
    """

    strategy: str
    budget: int
    accuracy: float
    tokens_per_item: float
    generated_tokens: int
    n: int
    answered: int
    accuracy_low: float | None = field(default=None, compare=False)  # derived from the above
    accuracy_high: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def accuracy_text(self) -> str:
        """``"0.675 [0.51, 0.81]"`` (just the accuracy when no interval was computed)."""
        if self.accuracy_low is None or self.accuracy_high is None:
            return f"{self.accuracy:.3f}"
        return f"{self.accuracy:.3f} [{self.accuracy_low:.2f}, {self.accuracy_high:.2f}]"


def _canon(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params), sort_keys=True, default=str))


def run_pareto(
    backend: Backend,
    task: Task,
    items: Sequence[TaskItem],
    strategies: Sequence[str],
    budgets: Sequence[int],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    chunk: int = 8,
    on_progress: ProgressFn | None = None,
) -> list[ParetoPoint]:
    """Run every strategy at every budget on ``items``; return one point per pair.

    Args:
        backend, task, items: what to run on (items in a fixed order).
        strategies: :data:`~entrolab.inference.STRATEGIES` names (each must take ``budget``).
        budgets: budget values (≥ 1), passed to each strategy as ``budget=``.
        params: per-strategy extra parameters {name: {param: value}}.
        seed: the strategies' seed (the same for all, so their samples are paired).
        run_dir: directory for ``config.json`` + ``results.jsonl`` (None: in memory only).
        config: what the run directory must match on resume (model, task, n, …); ``seed`` and
            the item ids are added.
        overwrite: discard a run directory holding another configuration.
        chunk: items per strategy call (the unit of checkpointing).
        on_progress: ``(done, total, "strategy@budget")`` in (strategy, budget, item) units.
    """
    from entrolab.evaluation.rundir import RunDir

    strategies, budgets, items = list(strategies), [int(b) for b in budgets], list(items)
    if not strategies:
        raise EntrolabError("no strategies given; name at least one (e.g. majority)")
    if not budgets or any(b < 1 for b in budgets):
        raise EntrolabError(f"budgets must be a non-empty list of ints >= 1, got {budgets}")
    if not items:
        raise EntrolabError("no task items given")
    if chunk < 1:
        raise EntrolabError("chunk must be >= 1")
    params = {name: _canon((params or {}).get(name, {})) for name in strategies}
    built = {(s, b): make_strategy(s, budget=b, **params[s]) for s in strategies for b in budgets}
    stored = {**_canon(config or {}), "seed": seed, "items": [it.id for it in items]}
    run = RunDir(run_dir).open(stored, overwrite=overwrite) if run_dir is not None else None
    rows = run.rows() if run is not None else []
    done: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["strategy"], int(r["budget"]), r["item_id"])
        if r["strategy"] in params and r.get("params") != params[r["strategy"]]:
            raise EntrolabError(
                f"{run_dir} holds {r['strategy']!r} results run with parameters {r.get('params')} "
                f"but {params[r['strategy']]} were asked for; use the same parameters, another "
                "output directory, or --overwrite"
            )
        done[key] = r
    total, count = len(built) * len(items), 0
    for (s, b), strategy in built.items():
        todo = [it for it in items if (s, b, it.id) not in done]
        count += len(items) - len(todo)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            if on_progress is not None:
                on_progress(count, total, f"{s}@{b}")
            base = count

            def progress(k: int, _n: int, base: int = base, label: str = f"{s}@{b}") -> None:
                if on_progress is not None:
                    on_progress(base + k, total, label)

            outcomes = strategy.run(backend, task, part, seed=seed, on_progress=progress)
            new = [
                {"strategy": s, "budget": b, "params": params[s], **o.to_dict()} for o in outcomes
            ]
            if run is not None:
                run.append(new)
            for r in new:
                done[(s, b, r["item_id"])] = r
            count += len(part)
    if on_progress is not None:
        on_progress(total, total, "done")
    wanted = [r for (s, b, i), r in done.items() if s in strategies and b in budgets]
    ids = {it.id for it in items}
    return points_from_rows([r for r in wanted if r["item_id"] in ids])


def points_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[ParetoPoint]:
    """Aggregate stored rows into one point per (strategy, budget), sorted by name then budget."""
    groups: dict[tuple[str, int], list[ItemOutcome]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], int(r["budget"])), []).append(ItemOutcome.from_dict(r))
    points = []
    for (s, b), outs in sorted(groups.items()):
        summ = summarize_outcomes(outs)
        ci = clopper_pearson(sum(o.correct for o in outs), len(outs))
        points.append(
            ParetoPoint(
                s,
                b,
                summ["accuracy"],
                summ["tokens_per_item"],
                summ["generated_tokens"],
                summ["n"],
                summ["answered"],
                ci.low,
                ci.high,
            )
        )
    return points


def paired_comparisons(
    rows: Sequence[Mapping[str, Any]], baseline: str, *, level: float = 0.95
) -> list[dict[str, Any]]:
    """Each strategy against ``baseline`` at the same budget, on the items both finished.

    Per (strategy, budget): accuracy difference with the exact McNemar p-value and a paired
    bootstrap interval, and the difference in generated tokens per item with its paired
    bootstrap interval (:mod:`entrolab.calibration.comparison`). p-values are uncorrected.
    """
    from entrolab.calibration import mcnemar_exact, paired_mean_difference

    table: dict[tuple[str, int], dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        table.setdefault((r["strategy"], int(r["budget"])), {})[r["item_id"]] = r
    out = []
    for (s, b), by_item in sorted(table.items()):
        base = table.get((baseline, b))
        if s == baseline or base is None:
            continue
        common = sorted(by_item.keys() & base.keys())
        if len(common) < 2:
            continue
        acc = mcnemar_exact(
            [float(by_item[i]["correct"]) for i in common],
            [float(base[i]["correct"]) for i in common],
            level=level,
        )
        tok = paired_mean_difference(
            [by_item[i]["generated_tokens"] for i in common],
            [base[i]["generated_tokens"] for i in common],
            level=level,
            metric="tokens_per_item",
        )
        out.append(
            {
                "strategy": s,
                "budget": b,
                "vs": baseline,
                "n": len(common),
                "accuracy": acc.to_dict(),
                "tokens_per_item": tok.to_dict(),
            }
        )
    return out


def load_points(run_dir: str | Path) -> list[ParetoPoint]:
    """Points of a stored run (no model needed)."""
    from entrolab.evaluation.rundir import RunDir

    rows = RunDir(run_dir).rows()
    if not rows:
        raise EntrolabError(f"{run_dir} has no finished results; run `entrolab pareto` first")
    return points_from_rows(rows)


def pareto_figure(points: Sequence[ParetoPoint], *, title: str = ""):
    """Accuracy (y, with 95% exact intervals) against generated tokens per item (x, log scale):
    one curve per strategy, each point labelled with its budget. Strategies get distinct
    colours, markers and line styles and are nudged sideways by a few points, so coinciding
    curves and error bars stay visible; a strategy identical to another says so in the legend,
    which sits outside the data."""
    from entrolab.report.figures import (
        legend_right,
        new_figure,
        nudge,
        pad_limits,
        plain_log_ticks,
        same_as_notes,
        series_style,
    )

    if not points:
        raise EntrolabError("no points to plot")
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    names = sorted({p.strategy for p in points})
    curves = {
        name: sorted((p for p in points if p.strategy == name), key=lambda p: p.tokens_per_item)
        for name in names
    }
    notes = same_as_notes(
        {
            "": {
                n: ([p.tokens_per_item for p in c], [p.accuracy for p in c])
                for n, c in curves.items()
            }
        }
    )
    for i, (name, pts) in enumerate(curves.items()):
        style = series_style(i)
        shift = nudge(ax, i, len(names))
        xs, ys = [p.tokens_per_item for p in pts], [p.accuracy for p in pts]
        if all(p.accuracy_low is not None and p.accuracy_high is not None for p in pts):
            err = [
                [p.accuracy - p.accuracy_low for p in pts],  # type: ignore[operator]
                [p.accuracy_high - p.accuracy for p in pts],  # type: ignore[operator]
            ]
        else:
            err = None
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            transform=shift,
            lw=1.5,
            capsize=2,
            elinewidth=0.8,
            label=name + notes.get(name, ""),
            **style,
        )
        for p in pts:
            ax.annotate(
                str(p.budget),
                (p.tokens_per_item, p.accuracy),
                xycoords=shift,
                textcoords="offset points",
                xytext=(4, 3 + 8 * (i % 2)),
                fontsize=7,
                color=style["color"],
            )
    xs_all = [p.tokens_per_item for p in points]
    log = all(x > 0 for x in xs_all)
    if log:
        ax.set_xscale("log")  # ticks at 1, 2, 5 × 10^k as plain numbers; no overlapping minors
        plain_log_ticks(ax.xaxis)
    pad_limits(ax, xs_all, log=log)
    lows = [p.accuracy if p.accuracy_low is None else p.accuracy_low for p in points]
    highs = [p.accuracy if p.accuracy_high is None else p.accuracy_high for p in points]
    ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.02, max(highs) + 0.08))
    ax.set(
        xlabel="generated tokens per item (log scale)",
        ylabel="accuracy (95% exact CI)",
        title=title,
    )
    ax.grid(alpha=0.3)
    legend_right(ax, title="strategy (number = budget)")
    return fig


def pareto_svg(points: Sequence[ParetoPoint], *, title: str = "") -> str:
    """:func:`pareto_figure` as an SVG string."""
    from entrolab.report.figures import to_svg

    return to_svg(pareto_figure(points, title=title))
