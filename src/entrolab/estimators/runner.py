"""``run_estimators``: one generation pass (greedy + G samples) and one scoring pass feed every
selected estimator; results per prompt, batch-invariant per item (see :mod:`.stats` seeding)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from entrolab.backends.base import Backend
from entrolab.errors import EntrolabError
from entrolab.estimators.base import ESTIMATORS, Estimator, get_estimators
from entrolab.estimators.stats import (
    EstimatorConfig,
    ProgressFn,
    StatContext,
    compute_statistics,
    item_keys,
    item_seed,
    prompts_of,
    requirements,
)
from entrolab.tasks.answers import cluster_answers, extract_answer
from entrolab.types import TraceBatch

__all__ = ["EstimatorResults", "applicable_estimators", "run_estimators"]

GradeFn = Callable[[Any, str], Any]


def _default_extract(item: Any, text: str) -> str | None:
    """The answer in a reply with no task to say its kind: boxed, tag, marker, last number,
    else the last line (``entrolab.tasks.extract_answer(text, "auto")``)."""
    return extract_answer(text, "auto")


@dataclass
class EstimatorResults:
    """What :func:`run_estimators` returns.

    Attributes:
        names: estimators that ran, in the order given.
        uncertainty: name → u float64 [N] (higher = less trustworthy).
        prompts: N prompts; items: the N items as given.
        statistics: every computed statistic (``greedy``, ``samples``, ``answer_clusters`` …).
        timings: seconds per statistic, and per estimator under ``"estimator:<name>"``.
        meta: run settings, per-item seeds, ``unparsed`` reply counts, skipped estimators.
        correct: float [N] 1/0 correctness of the greedy answers when a ``grade_fn`` was given.
    """

    names: list[str]
    uncertainty: dict[str, np.ndarray]
    prompts: list[str]
    items: list[Any]
    statistics: dict[str, Any]
    timings: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)
    correct: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def greedy(self) -> TraceBatch | None:
        return self.statistics.get("greedy")

    @property
    def greedy_texts(self) -> list[str] | None:
        g = self.greedy
        return None if g is None else [t.text for t in g]

    @property
    def samples(self) -> TraceBatch | None:
        return self.statistics.get("samples")

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-serialisable dict per item: index, prompt, seed, greedy text, correctness
        and the u of every estimator (what an eval run appends to its JSONL file)."""
        texts = self.greedy_texts
        out = []
        for i, prompt in enumerate(self.prompts):
            row: dict[str, Any] = {
                "index": i,
                "prompt": prompt,
                "seed": self.meta["item_seeds"][i],
                "greedy_text": None if texts is None else texts[i],
                "correct": None if self.correct is None else bool(self.correct[i]),
                "u": {n: float(self.uncertainty[n][i]) for n in self.names},
            }
            out.append(row)
        return out


def _missing(est: Estimator, config: EstimatorConfig, backend: Backend, embed: bool) -> str | None:
    """Why ``est`` cannot run here, or None."""
    if est.level == "set" and config.samples < 2:
        return f"set-level estimator needs samples >= 2 (got {config.samples})"
    caps = getattr(backend, "capabilities", None)  # the Backend protocol's declared capabilities
    for cap in sorted(est.requires):
        if caps is not None and not getattr(caps, cap, False):
            label = getattr(backend, "name", "") or type(backend).__name__
            return f"needs {cap.replace('_', '-')}, which backend {label!r} does not offer"
    methods, packages = requirements(est.needs, config)
    for m in sorted(methods):
        if not callable(getattr(backend, m, None)):
            return f"the backend has no {m}() method"
        if m == "score" and caps is not None and not getattr(caps, "scoring", True):
            return "the backend declares no teacher-forced scoring (score)"
    for p in sorted(packages):
        if not embed and importlib.util.find_spec(p) is None:
            return f"package {p!r} is not installed (pip install {p.replace('_', '-')})"
    return None


def applicable_estimators(
    backend: Backend, config: EstimatorConfig | None = None, *, embed_fn: Any = None
) -> tuple[list[str], dict[str, str]]:
    """(names of the estimators that can run with ``backend`` and ``config``, {name: reason}
    for the others)."""
    config = config or EstimatorConfig()
    ok, skipped = [], {}
    for entry in ESTIMATORS:
        reason = _missing(entry.obj, config, backend, embed_fn is not None)
        if reason is None and entry.obj.fitted:  # a fitted artefact: run by name with params
            reason = f"needs fitted {', '.join(sorted(entry.obj.fitted))}; run it by name"
        if reason is None and entry.obj.opt_in:
            reason = "opt-in: run it by name"
        if reason is None:
            ok.append(entry.name)
        else:
            skipped[entry.name] = reason
    return ok, skipped


def _grade(grade_fn: GradeFn, items: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
    out = []
    for item, text in zip(items, texts, strict=True):
        g = grade_fn(item, text)
        out.append(float(bool(getattr(g, "correct", g))))
    return np.array(out, dtype=np.float64)


def run_estimators(
    backend: Backend,
    items: Sequence[Any],
    names: Sequence[str] | None = None,
    *,
    samples: int | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    grade_fn: GradeFn | None = None,
    on_progress: ProgressFn | None = None,
    config: EstimatorConfig | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    item_offset: int = 0,
    item_seeds: Sequence[int] | None = None,
    extract_fn: Callable[[Any, str], str | None] | None = None,
    cluster_fn: Callable[[list[str | None]], list[int]] | None = None,
    embed_fn: Callable[[list[str]], Any] | None = None,
    precomputed: Mapping[str, Any] | None = None,
) -> EstimatorResults:
    """Run estimators on N items with one shared statistics pass.

    Args:
        backend: ``generate(prompts, GenerationConfig) -> TraceBatch``; ``score`` is needed by
            pmi, ptrue and pcc.
        items: N prompts (str) or task items (objects with ``.prompt``; ``.id`` keys the seed).
        names: estimator names (aliases allowed); None = every estimator that applies.
        samples, temperature, max_new_tokens, seed: override the same fields of ``config``.
        grade_fn: ``(item, greedy_text) -> bool`` or an object with ``.correct``; fills
            ``results.correct``.
        on_progress: ``(stage, done, total)`` callback.
        params: per-estimator parameter overrides, e.g. ``{"deepconf_lowest": {"window": 32}}``.
        item_offset: global index of ``items[0]`` (seeds of plain-string items depend on it, so
            chunked runs match one uncut run). item_seeds: explicit N per-item seeds instead.
        extract_fn: ``(item, text) -> answer | None``, e.g. a task's ``Task.extract`` (default:
            ``entrolab.tasks.extract_answer(text, "auto")``).
        cluster_fn: answers → cluster ids (default: ``entrolab.tasks.cluster_answers``: equal
            answer keys share a cluster, each unparseable answer is its own).
        embed_fn: texts → unit embeddings [n, D] (default: the bundled all-MiniLM-L6-v2).
        precomputed: statistics already available (e.g. ``{"samples": TraceBatch}``), used as is.
    Raises:
        EntrolabError: no items, unknown estimator (listing the known ones), an estimator that
            cannot run with this backend/config (with the reason), or bad per-item seeds.
    """
    config = config or EstimatorConfig()
    overrides = {
        "samples": samples,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    items = list(items)
    if not items:
        raise EntrolabError("no items to estimate; pass at least one prompt or task item")
    prompts = prompts_of(items)
    embed = embed_fn is not None
    skipped: dict[str, str] | None = None
    if names is None:
        runnable, skipped = applicable_estimators(backend, config, embed_fn=embed_fn)
        selected = get_estimators(runnable)
    else:
        selected = get_estimators(names)
        for est in selected:
            reason = _missing(est, config, backend, embed)
            if reason:
                raise EntrolabError(f"estimator {est.name!r} cannot run: {reason}")
    chosen = {e.name for e in selected}
    overrides_by_name = {ESTIMATORS.entry(n).name: dict(v) for n, v in (params or {}).items()}
    for n in overrides_by_name:
        if n not in chosen:
            raise EntrolabError(f"params given for {n!r}, which is not among the estimators run")
    if item_seeds is None:
        seeds = [item_seed(config.seed, k) for k in item_keys(items, item_offset)]
    else:
        seeds = [int(s) for s in item_seeds]
        if len(seeds) != len(items):
            raise EntrolabError(f"got {len(seeds)} item_seeds for {len(items)} items")
    extract_fn = extract_fn or _default_extract
    cluster_fn = cluster_fn or cluster_answers
    ctx = StatContext(
        backend, prompts, items, config, seeds, extract_fn, cluster_fn, embed_fn, on_progress
    )
    needs: set[str] = set().union(*(e.needs for e in selected)) if selected else set()
    if grade_fn is not None:
        needs.add("greedy")
    stats = compute_statistics(ctx, needs, dict(precomputed or {}))
    uncertainty: dict[str, np.ndarray] = {}
    for est in selected:
        t0 = time.perf_counter()
        u = est(stats, **overrides_by_name.get(est.name, {}))
        if u.shape != (len(items),):
            raise EntrolabError(
                f"estimator {est.name!r} returned {u.shape}, expected ({len(items)},)"
            )
        uncertainty[est.name] = u
        ctx.timings[f"estimator:{est.name}"] = time.perf_counter() - t0
    correct = None
    if grade_fn is not None:
        correct = _grade(grade_fn, items, [t.text for t in stats["greedy"]])
    meta = {
        "config": asdict(config),
        "item_seeds": seeds,
        "counts": dict(ctx.counts),
        "unparsed": dict(ctx.meta.get("unparsed", {})),
    }
    if skipped is not None:
        meta["skipped"] = skipped
    return EstimatorResults(
        [e.name for e in selected],
        uncertainty,
        prompts,
        items,
        stats,
        dict(ctx.timings),
        meta,
        correct,
    )
