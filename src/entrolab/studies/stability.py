"""How stable are an estimator's confidence and the model's correctness across paraphrases?

Pure numpy. Inputs are per (item, paraphrase): ``u`` [N, P] an estimator's uncertainty
(higher = less trustworthy) and ``correct`` [N, P] 0/1 correctness of the greedy answer, with
paraphrase 0 the original prompt. Per estimator (:func:`estimator_stability`):

* ``auroc_by_paraphrase``: AUROC of −u for correctness on each paraphrase (ties ½; NaN where
  one paraphrase's answers are all right or all wrong);
* ``auroc_mean``: their mean over paraphrases; ``auroc_spread``: max − min over paraphrases;
* ``rank_agreement``: mean over paraphrase pairs (p < q) of the Spearman correlation of
  u[:, p] and u[:, q] over items (1 = the wording never changes which items look risky);
* ``within_item_spread``: u turned into mid-ranks over all N·P values scaled to (0, 1)
  (``(rank − ½) / (N P)``), then each item's standard deviation over paraphrases (ddof 0),
  averaged over items (0 = the wording never moves an item's confidence; unit-free, so
  estimators with different units compare);
* ``decision_flip_rate``: share of items whose "confident" flag (``u ≤`` the median of all N·P
  values) is not the same on every paraphrase.

For correctness (:func:`correctness_stability`): accuracy per paraphrase and the share of items
whose greedy answer is right on some paraphrases and wrong on others (``flip_rate``).

Every summary comes with a 95% bootstrap interval over items (the independent unit: an item
keeps all its paraphrases in a resample): ``{"mean", "low", "high"}``. Items with a non-finite
u on any paraphrase are left out of that estimator's figures (``n`` says how many remain).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import rankdata

from entrolab.calibration import bootstrap_interval
from entrolab.errors import EntrolabError

__all__ = [
    "auroc_or_nan",
    "correctness_stability",
    "decision_flip_rate",
    "estimator_stability",
    "rank_agreement",
    "within_item_spread",
]


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise EntrolabError(
            f"{name} must be [N items, P paraphrases] with P ≥ 2 (paraphrase 0 = original), "
            f"got shape {a.shape}"
        )
    return a


def auroc_or_nan(u: np.ndarray, correct: np.ndarray) -> np.ndarray | float:
    """AUROC of −u for ``correct`` along the last axis (Mann–Whitney with mid-ranks).

    u, correct: [..., N]. Returns [...] (a float for 1-D input); NaN where one class is absent.
    """
    y = np.asarray(correct).astype(bool)
    n1 = y.sum(-1).astype(np.float64)
    n0 = y.shape[-1] - n1
    ranks = rankdata(-np.asarray(u, dtype=np.float64), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((ranks * y).sum(-1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    out = np.where((n1 > 0) & (n0 > 0), out, np.nan)
    return float(out) if out.ndim == 0 else out


def rank_agreement(u: np.ndarray) -> np.ndarray | float:
    """Mean over paraphrase pairs p < q of the Spearman ρ of u[..., :, p] and u[..., :, q]
    over items. u: [..., N, P] → [...] (NaN when every pair has a constant column)."""
    r = rankdata(np.asarray(u, dtype=np.float64), axis=-2)
    r = r - r.mean(axis=-2, keepdims=True)
    p = r.shape[-1]
    rhos = []
    for i in range(p):
        for j in range(i + 1, p):
            num = (r[..., i] * r[..., j]).sum(-1)
            den = np.sqrt((r[..., i] ** 2).sum(-1) * (r[..., j] ** 2).sum(-1))
            with np.errstate(invalid="ignore", divide="ignore"):
                rhos.append(np.where(den > 0, num / den, np.nan))
    stacked = np.stack(rhos, axis=-1)
    ok = np.isfinite(stacked)
    out = np.where(ok.any(-1), np.where(ok, stacked, 0.0).sum(-1) / np.maximum(ok.sum(-1), 1),
                   np.nan)  # fmt: skip
    return float(out) if out.ndim == 0 else out


def within_item_spread(u: np.ndarray) -> np.ndarray | float:
    """Mean over items of the std over paraphrases of u's scaled mid-ranks
    ``(rank − ½) / (N P)`` (ranks over all N·P values). u: [..., N, P] → [...]."""
    u = np.asarray(u, dtype=np.float64)
    flat = u.reshape(*u.shape[:-2], -1)
    r = (rankdata(flat, axis=-1) - 0.5) / flat.shape[-1]
    out = r.reshape(u.shape).std(axis=-1).mean(axis=-1)
    return float(out) if out.ndim == 0 else out


def decision_flip_rate(u: np.ndarray) -> np.ndarray | float:
    """Share of items whose flag ``u ≤ median(all N·P values)`` differs between paraphrases.
    u: [..., N, P] → [...]."""
    u = np.asarray(u, dtype=np.float64)
    med = np.median(u.reshape(*u.shape[:-2], -1), axis=-1)[..., None, None]
    flag = u <= med
    out = (flag.any(axis=-1) & ~flag.all(axis=-1)).mean(axis=-1)
    return float(out) if out.ndim == 0 else out


def _interval(stat: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, seed: int) -> dict:
    """Bootstrap over items: ``stat`` maps item indices [B, N] to [B] values."""
    iv = bootstrap_interval(
        lambda idx: stat(idx.astype(np.int64)), np.arange(n, dtype=np.float64),
        n_boot=n_boot, seed=seed, vectorized=True,
    )  # fmt: skip
    return {"mean": iv.estimate, "low": iv.low, "high": iv.high}


def estimator_stability(
    u: Any, correct: Any, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Stability of one estimator across paraphrases (see the module docstring).

    Args:
        u: [N, P] uncertainty per item and paraphrase; correct: [N, P] 0/1 greedy correctness.
        n_boot, seed: bootstrap replicates and seed (95% percentile intervals over items).
    Returns:
        ``{"n", "auroc_by_paraphrase", "auroc_mean", "auroc_spread", "rank_agreement",
        "within_item_spread", "decision_flip_rate"}``; interval entries are
        ``{"mean", "low", "high"}`` (NaN ends where too few resamples are defined).
    """
    uu, yy = _matrix(u, "u"), _matrix(correct, "correct")
    if uu.shape != yy.shape:
        raise EntrolabError(f"u is {uu.shape} but correct is {yy.shape}; pass matching [N, P]")
    keep = np.isfinite(uu).all(axis=1)
    uu, yy = uu[keep], yy[keep]
    n = uu.shape[0]
    if n < 3:
        return {"n": int(n), "reason": "fewer than 3 items with a finite u on every paraphrase"}

    def aurocs(idx: np.ndarray) -> np.ndarray:  # [B, N] → [B, P]
        ub, yb = uu[idx], yy[idx]  # [B, N, P]
        return auroc_or_nan(np.moveaxis(ub, -1, -2), np.moveaxis(yb, -1, -2))

    def mean_auroc(idx: np.ndarray) -> np.ndarray:
        return aurocs(idx).mean(-1)  # NaN when any paraphrase's AUROC is undefined

    def spread(idx: np.ndarray) -> np.ndarray:
        a = aurocs(idx)
        return a.max(-1) - a.min(-1)

    by_p = aurocs(np.arange(n)[None, :])[0]
    return {
        "n": int(n),
        "auroc_by_paraphrase": [None if math.isnan(a) else float(a) for a in by_p],
        "auroc_mean": _interval(mean_auroc, n, n_boot, seed),
        "auroc_spread": _interval(spread, n, n_boot, seed),
        "rank_agreement": _interval(lambda i: rank_agreement(uu[i]), n, n_boot, seed),
        "within_item_spread": _interval(lambda i: within_item_spread(uu[i]), n, n_boot, seed),
        "decision_flip_rate": _interval(lambda i: decision_flip_rate(uu[i]), n, n_boot, seed),
    }


def correctness_stability(correct: Any, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Greedy correctness across paraphrases: ``{"n", "accuracy_by_paraphrase",
    "accuracy_mean", "flip_rate", "flipped_items"}`` (intervals over items)."""
    y = _matrix(correct, "correct")
    n = y.shape[0]
    if n < 2:
        raise EntrolabError("need at least 2 items for intervals over items")
    flips = y.min(axis=1) != y.max(axis=1)
    return {
        "n": int(n),
        "accuracy_by_paraphrase": y.mean(axis=0).tolist(),
        "accuracy_mean": _interval(lambda i: y[i].mean(axis=(-2, -1)), n, n_boot, seed),
        "flip_rate": _interval(lambda i: flips[i].mean(axis=-1), n, n_boot, seed),
        "flipped_items": np.flatnonzero(flips).tolist(),
    }
