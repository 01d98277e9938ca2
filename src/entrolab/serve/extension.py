"""The ``entrolab`` object added to every choice: token entropies, a sequence confidence, its
calibrated probability of being correct, and a PCC-style route; plus DeepConf over n samples.

- ``uncertainty``: u of the chosen sequence-level estimator (``entrolab.estimators``, run by
  :func:`~entrolab.estimators.run_estimators` on the choice's own trace as the ``greedy``
  statistic, so no extra model pass).
- ``confidence``: the calibrated P(correct) when the server was started with
  ``--calibrator RUN_DIR`` (an isotonic map of −u fitted on that ``entrolab eval`` run's items,
  ``confidence_kind="calibrated"``); without one, ``exp(−u)`` for ``perplexity`` (geometric-mean
  token probability) and ``msp`` (sequence probability), ``confidence_kind="exp(-u)"``; else None.
- ``consistency``: with n ≥ 2, the fraction of the other choices whose extracted answer
  (:func:`entrolab.tasks.extract_answer` → :func:`~entrolab.tasks.answer_key`) equals this one's.
- ``route``: :func:`entrolab.estimators.pcc_route` of κ = confidence · consistency (consistency
  1 when n = 1): ``answer`` (κ ≥ θ₁), ``retrieve`` (θ₂ ≤ κ < θ₁) or ``escalate``.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.types import Trace, TraceBatch

__all__ = ["PURE_STATISTICS", "Annotator", "deepconf", "deepconf_work"]

#: Statistics an estimator may depend on to run from the returned trace alone (no extra pass).
PURE_STATISTICS = frozenset({"greedy", "greedy_tokens", "greedy_texts", "greedy_answers"})
_EXP_CONFIDENCE = {"perplexity", "msp"}


class _NoModel:
    """Stands in for the backend inside ``run_estimators``: every statistic is precomputed."""

    name = "served-traces"

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise EntrolabError("the serving estimator asked for another generation pass")


class Annotator:
    """Builds the ``entrolab`` object of each choice.

    Args:
        backend: the served backend (checked for the estimator's capability needs).
        estimator: a sequence-level estimator computable from one trace (see
            :data:`PURE_STATISTICS`).
        calibrator_dir: an ``entrolab eval`` run directory whose results include ``estimator``.
        thresholds: (θ₁, θ₂) of the route, 0 ≤ θ₂ ≤ θ₁ ≤ 1.
    """

    def __init__(
        self,
        backend: Any,
        estimator: str = "perplexity",
        calibrator_dir: str | Path | None = None,
        thresholds: tuple[float, float] = (0.7, 0.4),
    ) -> None:
        from entrolab.estimators import ESTIMATORS, EstimatorConfig, resolve

        est = ESTIMATORS.get(estimator)
        extra = set(resolve(est.needs, EstimatorConfig())) - PURE_STATISTICS
        if est.level != "sequence" or extra:
            ok = [
                e.name
                for e in ESTIMATORS
                if e.obj.level == "sequence"
                and set(resolve(e.obj.needs, EstimatorConfig())) <= PURE_STATISTICS
            ]
            raise EntrolabError(
                f"estimator {est.name!r} needs more than the answer's own trace "
                f"({', '.join(sorted(extra)) or 'a set of samples'}); the server can use: "
                f"{', '.join(ok)}"
            )
        caps = getattr(backend, "capabilities", None)
        missing = [c for c in sorted(est.requires) if caps is not None and not getattr(caps, c)]
        if missing:
            raise EntrolabError(
                f"estimator {est.name!r} needs {', '.join(missing)}, which backend "
                f"{getattr(backend, 'name', '')!r} does not offer; pick another --estimator"
            )
        from entrolab.estimators import pcc_route

        pcc_route(0.5, 1.0, thresholds)  # validates the thresholds
        self.estimator, self.thresholds = est.name, (float(thresholds[0]), float(thresholds[1]))
        self.calibrator, self.calibration = None, None
        if calibrator_dir is not None:
            self.calibrator, self.calibration = fit_calibrator(calibrator_dir, est.name)

    def annotate(
        self,
        traces: list[Trace],
        *,
        answer_kind: str = "auto",
        thresholds: tuple[float, float] | None = None,
    ) -> list[dict[str, Any]]:
        """One ``entrolab`` object per trace (the n choices of one prompt)."""
        from entrolab.estimators import pcc_route, run_estimators

        thresholds = thresholds or self.thresholds
        if not traces:
            return []
        res = run_estimators(
            _NoModel(),
            ["served request"] * len(traces),
            [self.estimator],
            precomputed={"greedy": TraceBatch(tuple(traces))},
        )
        u = res.uncertainty[self.estimator]
        if self.calibrator is not None:
            conf: list[float | None] = self.calibrator.transform(-u).tolist()
            kind: str | None = "calibrated"
        elif self.estimator in _EXP_CONFIDENCE:
            conf, kind = np.exp(-u).tolist(), "exp(-u)"
        else:
            conf, kind = [None] * len(traces), None
        keys = answer_keys([t.text for t in traces], answer_kind)
        out = []
        for j, trace in enumerate(traces):
            others = [k for i, k in enumerate(keys) if i != j]
            cons = (
                None
                if not others
                else (sum(k == keys[j] for k in others) / len(others) if keys[j] else 0.0)
            )
            c = conf[j]
            route = None if c is None else pcc_route(c, 1.0 if cons is None else cons, thresholds)
            out.append(
                {
                    **token_fields(trace),
                    "estimator": self.estimator,
                    "uncertainty": float(u[j]),
                    "confidence": c,
                    "confidence_kind": kind,
                    "answer": keys[j],
                    "consistency": cons,
                    "route": route,
                    "thresholds": list(thresholds),
                    "finish_reason": trace.finish_reason,
                    "seed": trace.meta.get("row_seed", trace.meta.get("request_seed")),
                }
            )
        return out


def token_fields(trace: Trace) -> dict[str, Any]:
    """Per-token entropies (nats) and where they came from."""
    out: dict[str, Any] = {
        "token_entropy": [_finite(x) for x in trace.entropy.tolist()],
        "entropy_kind": "full" if trace.provenance.vocab == "full" else "renormalized_topk",
        "provenance": {"logits": trace.provenance.logits, "vocab": trace.provenance.vocab},
    }
    for key in ("entropy_lower", "entropy_upper"):
        if trace.meta.get(key) is not None:
            out[key] = trace.meta[key]
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def answer_keys(texts: list[str], kind: str = "auto") -> list[str | None]:
    """Extracted answer keys of ``texts`` (None where no answer parses)."""
    from entrolab.tasks import answer_key, extract_answer

    out: list[str | None] = []
    for text in texts:
        ans = extract_answer(text, kind)
        out.append(None if ans is None or not ans.strip() else answer_key(ans))
    return out


def fit_calibrator(run_dir: str | Path, estimator: str) -> tuple[Any, dict[str, Any]]:
    """An isotonic map −u → P(correct) fitted on every item of an ``entrolab eval`` run.

    Returns (the fitted calibrator, a description: run directory, model, task, n, accuracy).
    Raises :class:`EntrolabError` when the run lacks the estimator or both outcomes.
    """
    from entrolab.calibration import CALIBRATORS
    from entrolab.evaluation import load_results

    results = load_results(run_dir)
    if estimator not in results.estimator_names:
        raise EntrolabError(
            f"the eval run {run_dir} has no results for estimator {estimator!r} (it has "
            f"{', '.join(results.estimator_names)}); pass --estimator with one of them"
        )
    u, y = results.uncertainty(estimator), results.correct
    ok = np.isfinite(u)
    if ok.sum() < 2 or len(set(y[ok].tolist())) < 2:
        raise EntrolabError(
            f"the eval run {run_dir} needs correct and wrong answers with finite {estimator} "
            "values to fit a calibrator; run `entrolab eval` on more items"
        )
    cal = CALIBRATORS.get("isotonic")().fit(-u[ok], y[ok])
    info = {
        "run_dir": str(run_dir),
        "model": results.config.get("model"),
        "task": results.config.get("task"),
        "n": int(ok.sum()),
        "accuracy": float(y[ok].mean()),
        "calibrator": "isotonic",
    }
    return cal, info


def deepconf(
    backend: Any,
    prompt: Any,
    config: Any,
    seed: int,
    *,
    warmup: int,
    variant: str,
    window: int,
    answer_kind: str = "auto",
) -> tuple[list[Trace], dict[str, Any]]:
    """DeepConf online over ``config.num_samples`` samples of one prompt; (traces, vote info).

    Warm-up samples fit s = :func:`~entrolab.inference.fit_threshold` of their lowest-window
    confidences; the rest run under :class:`~entrolab.inference.ConfidenceStopHook` (inside the
    decode loop when the backend has step hooks, else replayed on the finished traces by
    :func:`~entrolab.backends.decode.replay_step_hook`: the same stops, no compute saved). Vote: :func:`~entrolab.inference.weighted_vote` of the samples not stopped whose
    lowest-window confidence is ≥ s, weighted by it (DeepConf's released rule).
    """
    from dataclasses import replace

    from entrolab.backends.base import has
    from entrolab.backends.decode import replay_step_hook
    from entrolab.inference.stopping import ConfidenceStopHook, fit_threshold
    from entrolab.inference.voting import trace_scores, weighted_vote

    n, k = config.num_samples, config.topk_logprobs
    warmup = min(warmup, n)
    warm = list(backend.generate([prompt], replace(config, num_samples=warmup), seeds=[seed]))
    warm_scores = trace_scores(warm, "lowest_window", k=k, window=window).tolist()
    s = fit_threshold(warm_scores, variant)  # type: ignore[arg-type]
    rest: list[Trace] = []
    replayed = not has(backend, "step_hooks")
    if n > warmup:
        cfg = replace(config, num_samples=n - warmup)
        hook = ConfidenceStopHook(s, window, k)
        kw = {"seeds": [seed], "sample_offset": warmup}
        if "step_hook" in inspect.signature(backend.generate).parameters:
            rest = list(backend.generate([prompt], cfg, step_hook=hook, **kw))
        else:  # a backend that takes no hook: the same stops, replayed on finished traces
            rest = replay_step_hook(
                list(backend.generate([prompt], cfg, **kw)), hook, n - warmup, warmup
            )
    traces = warm + rest
    scores = warm_scores + (
        trace_scores(rest, "lowest_window", k=k, window=window).tolist() if rest else []
    )
    keys = answer_keys([t.text for t in traces], answer_kind)
    votes = [
        key if sc >= s and t.finish_reason != "stopped" else None
        for t, key, sc in zip(traces, keys, scores, strict=True)
    ]
    vote = weighted_vote(votes, [max(x, 0.0) for x in scores])
    info = {
        **vote.to_dict(),
        "threshold": s,
        "warmup": warmup,
        "variant": variant,
        "window": window,
        "stopped": sum(t.finish_reason == "stopped" for t in traces),
        "stop_replayed": replayed,
        "lowest_window": scores,
        "generated_tokens": sum(len(t) for t in traces),
    }
    return traces, info


def deepconf_work(prompt: Any, config: Any, seed: int, options: Any, fill: Any = None) -> dict:
    """The ``run`` and ``post`` of a batcher job running :func:`deepconf` for one request
    (``options``: the request's ``entrolab`` object; ``fill(traces)``: work on the traces to do
    on the worker thread, or None)."""
    dc = options.deepconf

    def run(backend: Any) -> tuple[list[Trace], dict]:
        return deepconf(backend, prompt, config, seed, warmup=dc.warmup, variant=dc.variant,
                        window=dc.window, answer_kind=options.answer_kind)  # fmt: skip

    def post(result: tuple[list[Trace], dict]) -> Any:
        if fill is not None:
            fill(result[0])
        return result

    return {"run": run, "post": post}
