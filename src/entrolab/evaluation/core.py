"""``evaluate``: generate, estimate, grade and score a model on a task, resumably.

Items are processed in chunks; after each chunk its finished rows are appended to the run
directory's ``results.jsonl`` (see :mod:`.rundir`), so a killed run resumes where it stopped. Item
results do not depend on chunking: every item's samples are seeded from (seed, item id).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.calibration import Interval, accuracy_interval
from entrolab.errors import EntrolabError
from entrolab.evaluation.rundir import RunDir
from entrolab.evaluation.scoring import (
    EstimatorScore,
    cross_fitted_confidence,
    finite_or_none,
    score_all,
)
from entrolab.evaluation.table import RankingTable

#: on_progress(items_done, items_total, stage)
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an eval run (stored in the run directory; a resume must match them, except
    ``chunk``: see :data:`RESULT_KEYS`).

    Attributes:
        model: embedded name, HF id or local directory (None = the embedded default).
        task: task spec (``arithmetic``, ``rg:<dataset>``, ``jsonl:<path>``).
        task_settings: keyword settings for the task (e.g. ``{"level": 2}``).
        n: number of items.
        samples: G samples per item for the set-level estimators.
        estimators: estimator names, or None for every one that applies.
        temperature: sampling temperature of the G samples.
        max_new_tokens: token budget per reply.
        seed: base seed (items are seeded from it and their ids).
        chunk: items per chunk (the unit of checkpointing).
        dtype: model dtype.
        estimator_params: per-estimator parameter overrides, e.g.
            ``{"deepconf_lowest": {"window": 32}}`` (``--param NAME.KEY=VALUE``).
    """

    model: str | None = None
    task: str = "arithmetic"
    task_settings: dict[str, Any] = field(default_factory=dict)
    n: int = 40
    samples: int = 5
    estimators: tuple[str, ...] | None = None
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    chunk: int = 8
    dtype: str = "float32"
    estimator_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise EntrolabError("n must be >= 1 (the number of items to evaluate)")
        if self.chunk < 1:
            raise EntrolabError("chunk must be >= 1")
        if self.estimators is not None:
            object.__setattr__(self, "estimators", tuple(self.estimators))
            if not self.estimators:
                raise EntrolabError("estimators is empty; omit it to run every one that applies")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["estimators"] = list(self.estimators) if self.estimators is not None else None
        out.pop("chunk")  # checkpoint granularity does not change results
        if not out["estimator_params"]:
            out.pop("estimator_params")  # runs from before the option resume unchanged
        return out


#: The stored settings a resumed run must match: they determine the results (every
#: :class:`EvalConfig` field but ``chunk``, the estimators actually run, the item count). The rest
#: of ``config.json`` is for reports (``estimators_skipped`` with its reasons, which change as
#: estimators are added) and may differ or be missing in a run written by older code.
RESULT_KEYS: frozenset[str] = frozenset(
    {f.name for f in fields(EvalConfig) if f.name != "chunk"} | {"estimators_run", "items"}
)


@dataclass
class EvalResults:
    """A finished (or re-loaded) eval run.

    Attributes:
        config: the run's settings (as stored).
        rows: one dict per item, ordered by index (prompt, answer, response, grade, u, trace).
        scores: one :class:`EstimatorScore` per estimator, best AUROC first.
        run_dir: where the run lives (None for an in-memory run).
    """

    config: dict[str, Any]
    rows: list[dict[str, Any]]
    scores: list[EstimatorScore]
    run_dir: Path | None = None
    _cache: dict[tuple, dict[str, dict[str, Any]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def correct(self) -> np.ndarray:
        return np.array([float(r["correct"]) for r in self.rows])

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def estimator_names(self) -> list[str]:
        return [s.name for s in self.scores]

    @property
    def best(self) -> str | None:
        """The best-ranked estimator that could be scored (None if none could)."""
        return next((s.name for s in self.scores if s.auroc is not None), None)

    def uncertainty(self, name: str) -> np.ndarray:
        """u [N] of one estimator (NaN where it was not finite)."""
        return np.array([_nan(r["u"].get(name)) for r in self.rows])

    def accuracy_interval(self, level: float = 0.95) -> Interval:
        """Accuracy with its exact (Clopper–Pearson) interval over the run's items."""
        return accuracy_interval(self.correct, level)

    def table(
        self, ci: float | None = 0.95, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
    ) -> RankingTable:
        """The ranking table: one dict per estimator, best AUROC first (a list that prints as a
        table; ``.rows`` is the plain list of dicts).

        Keys: name, auroc, prr, aurc, ece, brier, n, n_distinct. With ``ci`` (a coverage such
        as 0.95) also, per metric, ``<metric>_low`` / ``<metric>_high`` (bootstrap over items,
        see :mod:`entrolab.evaluation.uncertainty`), ``tier`` (rank of the tier the estimator
        shares: equal tiers = AUROCs not distinguishable by a DeLong test at ``alpha``),
        ``tier_leader``, ``p_vs_leader`` and ``auroc_vs_chance`` (``"above"``, ``"below"`` or
        ``"not significant"``: whether the AUROC interval excludes 0.5). Computed once per
        setting and cached.
        """
        rows = [s.to_dict() for s in self.scores]
        if ci is None:
            return RankingTable(rows)
        key = (ci, n_boot, alpha, seed)
        if key not in self._cache:
            self._cache[key] = self._interval_columns(ci, n_boot, alpha, seed)
        extra = self._cache[key]
        return RankingTable({**r, **extra.get(r["name"], {})} for r in rows)

    def _interval_columns(
        self, level: float, n_boot: int, alpha: float, seed: int
    ) -> dict[str, dict[str, Any]]:
        from entrolab.evaluation.uncertainty import estimator_intervals, ranking_tiers

        y = self.correct
        ranked = [s.name for s in self.scores if s.auroc is not None]
        u = {s.name: self.uncertainty(s.name) for s in self.scores}
        tiers = ranking_tiers(u, y, ranked, alpha=alpha)
        out: dict[str, dict[str, Any]] = {}
        for s in self.scores:
            conf = self.calibrated(s.name) if s.auroc is not None else np.full(y.size, np.nan)
            ivs = estimator_intervals(u[s.name], conf, y, level=level, n_boot=n_boot, seed=seed)
            cols: dict[str, Any] = {"ci_level": level}
            for metric, iv in ivs.items():
                cols[f"{metric}_low"] = None if iv is None else finite_or_none(iv.low)
                cols[f"{metric}_high"] = None if iv is None else finite_or_none(iv.high)
            t = tiers.get(s.name)
            cols["tier"] = None if t is None else t["tier"]
            cols["tier_leader"] = None if t is None else t["leader"]
            cols["p_vs_leader"] = None if t is None else t["p_vs_leader"]
            auc = ivs["auroc"]
            cols["auroc_vs_chance"] = (
                None
                if auc is None
                else "above"
                if auc.low > 0.5
                else "below"
                if auc.high < 0.5
                else "not significant"
            )
            out[s.name] = cols
        return out

    def to_json(self) -> str:
        """The run's summary (:meth:`to_dict`) as a JSON string (what ``summary.json`` holds)."""
        import json

        return json.dumps(self.to_dict(), indent=2)

    def to_dict(self) -> dict[str, Any]:
        """The run's summary: config, accuracy with its interval, the ranking table, selective
        prediction figures (JSON-serialisable)."""
        acc = self.accuracy_interval()
        return {
            "config": self.config,
            "accuracy": self.accuracy,
            "accuracy_interval": acc.to_dict(),
            "n": len(self.rows),
            "unparseable": sum(r["reason"] == "unparseable" for r in self.rows),
            "table": self.table().rows,
            "selective": self.selective(),
        }

    def plot(self, top: int = 4) -> dict[str, str]:
        """Reliability diagrams and risk–coverage curves of the ``top`` estimators, as SVG."""
        from entrolab.evaluation.figures import reliability_svg, risk_coverage_svg

        names = [s.name for s in self.scores if s.auroc is not None][:top]
        y = self.correct
        calibrated = {n: self.calibrated(n) for n in names}
        return {
            "reliability": reliability_svg(calibrated, y),
            "risk_coverage": risk_coverage_svg({n: self.uncertainty(n) for n in names}, y),
        }

    def selective(
        self, alpha: float = 0.2, delta: float = 0.1, name: str | None = None, seed: int = 0
    ) -> dict[str, Any] | None:
        """Split-conformal selective prediction: answer only when the estimator is confident.

        A random half of the items calibrates an answer/abstain threshold on ``−u`` of estimator
        ``name`` (default: the best-ranked) with Learn then Test
        (:func:`entrolab.calibration.fit_selective_risk`), so that the error rate among
        answered items is ≤ ``alpha`` with probability ≥ 1 − ``delta``; the other half reports
        the coverage and risk it actually gets. The candidate thresholds are the calibration
        scores themselves, so the guarantee is approximate (see that function). Returns None
        when no estimator could be scored.
        """
        from entrolab.calibration import fit_selective_risk

        name = name or self.best
        if name is None:
            return None
        u, y = self.uncertainty(name), self.correct
        keep = np.flatnonzero(np.isfinite(u))
        perm = keep[np.random.default_rng(seed).permutation(keep.size)]
        cal, test = perm[: keep.size // 2], perm[keep.size // 2 :]
        if cal.size == 0 or test.size == 0:
            return None
        fit = fit_selective_risk(-u[cal], y[cal], alpha=alpha, delta=delta, grid="calibration")
        accept = fit.predict(-u[test])
        return {
            "estimator": name,
            "alpha": alpha,
            "delta": delta,
            "u_threshold": None if fit.abstains_all else -fit.threshold,
            "calibration_coverage": fit.coverage,
            "test_coverage": float(accept.mean()),
            "test_risk": float(1 - y[test][accept].mean()) if accept.any() else None,
            "n_calibration": int(cal.size),
            "n_test": int(test.size),
        }

    def calibrated(self, name: str) -> np.ndarray:
        """Cross-fitted isotonic confidences of one estimator (what its ECE was computed on)."""
        u, y = self.uncertainty(name), self.correct
        ok = np.isfinite(u)
        out = np.full(u.shape, np.nan)
        out[ok] = cross_fitted_confidence(u[ok], y[ok])
        return out


def _nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def load_backend(model: str | None, dtype: str = "float32"):
    from entrolab.backends import HFBackend

    return HFBackend.load(model, dtype=dtype)  # type: ignore[arg-type]


def evaluate(
    model: Any = None,
    task: str = "arithmetic",
    *,
    n: int = 40,
    samples: int = 5,
    estimators: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    out: str | Path | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
    fitted: Mapping[str, Mapping[str, Any]] | None = None,
    **settings: Any,
) -> EvalResults:
    """Evaluate how well each confidence estimator predicts the model's correctness on a task.

    Args:
        model: an embedded name, HF id or local directory (None = embedded default), or a
            backend object (``HFBackend``) to reuse.
        task: task spec (see :func:`entrolab.tasks.load_task`).
        n, samples, estimators: items, samples per item, estimator names (None = all that apply).
        exclude: estimator names to leave out of "all that apply" (e.g. the slow reflexive
            ones); recorded in the run's ``estimators_run``.
        out: run directory (results are appended there and a killed run resumes); None keeps
            everything in memory.
        overwrite: discard an existing run in ``out`` with other settings.
        on_progress: ``(items_done, items_total, stage)`` callback.
        fitted: loaded artefacts of fitted estimators, ``{name: {key: object}}``, merged over
            ``estimator_params`` when running (which keep what is stored: their paths; see
            :func:`entrolab.inference.fitted.resolve_fitted`). With ``estimators=None`` the
            fitted estimators given here run beside all that apply.
        **settings: other :class:`EvalConfig` fields (``task_settings``, ``temperature``,
            ``max_new_tokens``, ``seed``, ``chunk``, ``dtype``).
    """
    from entrolab.estimators import EstimatorConfig, applicable_estimators, run_estimators
    from entrolab.tasks import load_task

    backend = model if hasattr(model, "generate") else None
    name = getattr(backend, "name", None) if backend is not None else model
    cfg = EvalConfig(
        model=name,
        task=task,
        n=n,
        samples=samples,
        estimators=tuple(estimators) if estimators is not None else None,
        **settings,
    )
    task_obj = load_task(cfg.task, **cfg.task_settings)
    items = task_obj.items(cfg.n, seed=cfg.seed)
    if not items:
        raise EntrolabError(f"task {cfg.task!r} produced no items")
    if backend is None:
        if on_progress is not None:
            on_progress(0, len(items), "loading model")
        backend = load_backend(cfg.model, cfg.dtype)
    est_cfg = EstimatorConfig(
        samples=cfg.samples,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    applicable, skipped = applicable_estimators(backend, est_cfg)
    names = list(cfg.estimators) if cfg.estimators is not None else applicable
    names += [n for n in fitted or {} if n not in names]
    if exclude:
        from entrolab.estimators import ESTIMATORS

        drop = {ESTIMATORS.entry(e).name for e in exclude}  # unknown names fail, listing known
        names = [n for n in names if n not in drop]
        if not names:
            raise EntrolabError("--exclude left no estimator to run; exclude fewer")
    stored = {
        **cfg.to_dict(),
        "estimators_run": names,
        "estimators_skipped": {k: v for k, v in skipped.items() if k not in names},
        "items": len(items),
    }
    run = (
        RunDir(out).open(stored, overwrite=overwrite, compare=RESULT_KEYS)
        if out is not None
        else None
    )
    rows = run.rows() if run is not None else []
    done = {r["index"] for r in rows}
    todo = [i for i in range(len(items)) if i not in done]
    for start in range(0, len(todo), cfg.chunk):
        idx = todo[start : start + cfg.chunk]
        if on_progress is not None:
            on_progress(len(done), len(items), "generating")
        t0 = time.perf_counter()
        res = run_estimators(
            backend,
            [items[i] for i in idx],
            names,
            config=est_cfg,
            extract_fn=task_obj.extract,
            params=_merged(cfg.estimator_params, fitted) or None,
        )
        new = _rows(task_obj, [items[i] for i in idx], idx, res, time.perf_counter() - t0)
        if run is not None:
            run.append(new)
        rows += new
        done.update(idx)
    if on_progress is not None:
        on_progress(len(done), len(items), "scoring")
    return results_from_rows(stored, rows, run.path if run is not None else None)


def _merged(
    params: Mapping[str, Mapping[str, Any]], fitted: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """``params`` with the loaded artefacts of ``fitted`` in place of their stored paths."""
    out = {k: dict(v) for k, v in params.items()}
    for name, values in (fitted or {}).items():
        out.setdefault(name, {}).update(values)
    return out


def _rows(task, items, indices, res, seconds: float) -> list[dict[str, Any]]:
    texts = res.greedy_texts or [""] * len(items)
    greedy = res.greedy
    samples = res.samples
    groups: dict[int, list[str]] = {}
    confidence: dict[int, list[float]] = {}  # exp(mean chosen-token log-prob) per sample
    if samples is not None:
        for t in samples:
            groups.setdefault(t.prompt_index, []).append(t.text)
            confidence.setdefault(t.prompt_index, []).append(
                math.exp(float(t.logprob.mean())) if len(t) else 0.0
            )
    out = []
    for j, (i, item, text) in enumerate(zip(indices, items, texts, strict=True)):
        grade = task.grade(item, text)
        out.append(
            {
                "index": i,
                "id": item.id,
                "prompt": item.prompt,
                "answer": item.answer,
                "response": text,
                "parsed": grade.parsed,
                "correct": bool(grade.correct),
                "reason": grade.reason,
                "u": {name: finite_or_none(float(res.uncertainty[name][j])) for name in res.names},
                "samples": groups.get(j, []),
                "sample_confidence": confidence.get(j, []),
                "trace": greedy[j].to_dict() if greedy is not None else None,
                "seconds": seconds / len(items),
            }
        )
    return out


def results_from_rows(
    config: dict[str, Any], rows: list[dict[str, Any]], run_dir: Path | None = None
) -> EvalResults:
    """Score stored rows (the report step; also used by ``entrolab eval --report``)."""
    rows = sorted(rows, key=lambda r: r["index"])
    if not rows:
        raise EntrolabError("the run has no finished items yet; run `entrolab eval` first")
    names = config.get("estimators_run") or sorted({k for r in rows for k in r["u"]})
    y = np.array([float(r["correct"]) for r in rows])
    u = {name: np.array([_nan(r["u"].get(name)) for r in rows]) for name in names}
    return EvalResults(config, rows, score_all(u, y), run_dir)


def load_results(run_dir: str | Path) -> EvalResults:
    """Re-load a run directory's results (no model needed)."""
    run = RunDir(run_dir)
    return results_from_rows(run.config(), run.rows(), run.path)
