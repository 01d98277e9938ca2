"""Differential entropy of continuous outputs (nats): closed forms, mixture bounds, estimators.

Numpy/scipy, float64. Used by REALM-style value of information (:mod:`entrolab.beyond.realm`) and
anywhere a model emits continuous actions or regressions.

* :func:`gaussian_entropy` — h(N(μ, Σ)) = ½ log det(2πe Σ), batched over leading dims;
* :func:`mixture_entropy_bounds` — Σ_c w_c h_c ≤ h(mixture) ≤ Σ_c w_c h_c + H(w);
* :func:`mixture_entropy_mc` — Monte-Carlo −E log p(x) for a Gaussian mixture;
* :func:`sample_entropy` — from samples: 1-D spacing estimators (Vasicek, van Es, Ebrahimi,
  Correa via ``scipy.stats.differential_entropy``) or the d-dimensional Kozachenko–Leonenko
  k-nearest-neighbour estimator.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy import special, stats
from scipy.spatial import cKDTree

from entrolab.errors import EntrolabError

__all__ = [
    "gaussian_entropy",
    "knn_entropy",
    "mixture_entropy_bounds",
    "mixture_entropy_mc",
    "sample_entropy",
]

_SPACING = ("vasicek", "van es", "ebrahimi", "correa", "auto")


def _as_cov(cov: Any) -> np.ndarray:
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise EntrolabError(f"cov must be [..., d, d] (square), got shape {c.shape}")
    if not np.isfinite(c).all():
        raise EntrolabError("cov contains NaN/inf")
    if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-10, atol=1e-12):
        raise EntrolabError(
            "cov must be symmetric; pass (S + S.T) / 2 if it is only numerically off"
        )
    return c


def gaussian_entropy(cov: Any) -> np.ndarray | float:
    """h(N(μ, Σ)) = ½ log det(2πe Σ) = (d/2)(1 + log 2π) + ½ log det Σ, in nats.

    Args:
        cov: [..., d, d] symmetric positive-definite covariance(s).
    Returns:
        [...] entropies (a float for one [d, d] matrix).
    Raises:
        EntrolabError if a covariance is not positive definite (entropy would be −inf / NaN).
    """
    c = _as_cov(cov)
    d = c.shape[-1]
    sign, logdet = np.linalg.slogdet(c)
    if np.any(sign <= 0):
        raise EntrolabError(
            "cov is not positive definite (det <= 0): a degenerate Gaussian has entropy −inf; "
            "add a small diagonal jitter (e.g. 1e-9 * I)"
        )
    h = 0.5 * d * (1.0 + math.log(2.0 * math.pi)) + 0.5 * logdet
    return float(h) if np.ndim(h) == 0 else h


def _mixture_args(weights: Any, means: Any, covs: Any) -> tuple[np.ndarray, ...]:
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    c = _as_cov(covs)
    if w.ndim != 1 or mu.ndim != 2 or c.ndim != 3:
        raise EntrolabError(
            f"want weights [C], means [C, d], covs [C, d, d]; got {w.shape}, {mu.shape}, {c.shape}"
        )
    if not (w.shape[0] == mu.shape[0] == c.shape[0] and mu.shape[1] == c.shape[1]):
        raise EntrolabError(
            f"mismatched shapes: weights {w.shape}, means {mu.shape}, covs {c.shape}"
        )
    if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-9):
        raise EntrolabError(f"weights must be >= 0 and sum to 1, got sum {w.sum()!r}")
    return w, mu, c


def mixture_entropy_bounds(weights: Any, means: Any, covs: Any) -> tuple[float, float]:
    """Bounds on the entropy of a Gaussian mixture Σ_c w_c N(μ_c, Σ_c), in nats.

    lower = Σ_c w_c h_c (= h(X | C) ≤ h(X)); upper = lower + H(w) (h(X) ≤ h(X | C) + H(C)).
    The upper bound is reached as the components separate; the lower as they coincide.
    Shapes: weights [C], means [C, d], covs [C, d, d]."""
    w, _, c = _mixture_args(weights, means, covs)
    cond = float(np.sum(w * np.asarray(gaussian_entropy(c))))
    hw = float(-np.sum(w[w > 0] * np.log(w[w > 0])))
    return cond, cond + hw


def mixture_entropy_mc(
    weights: Any, means: Any, covs: Any, *, n: int = 20000, seed: int = 0
) -> tuple[float, float]:
    """Monte-Carlo entropy −(1/n) Σ log p(x_i), x_i ~ mixture; returns (estimate, std error)."""
    w, mu, c = _mixture_args(weights, means, covs)
    rng = np.random.default_rng(seed)
    comp = rng.choice(w.shape[0], size=int(n), p=w)
    chol = np.linalg.cholesky(c)
    z = rng.standard_normal((int(n), mu.shape[1]))
    x = mu[comp] + np.einsum("nij,nj->ni", chol[comp], z)
    logp = special.logsumexp(
        np.stack(
            [
                np.log(w[k]) + stats.multivariate_normal(mu[k], c[k]).logpdf(x)
                for k in range(w.shape[0])
                if w[k] > 0
            ]
        ),
        axis=0,
    )
    return float(-logp.mean()), float(logp.std(ddof=1) / math.sqrt(n))


def knn_entropy(samples: Any, k: int = 3) -> float:
    """Kozachenko–Leonenko estimator h ≈ ψ(N) − ψ(k) + log V_d + (d/N) Σ_i log ε_i (nats).

    ε_i = distance from sample i to its k-th nearest neighbour, V_d = π^{d/2} / Γ(d/2 + 1).
    samples [N, d] (or [N] for d = 1), N > k; duplicate points make ε = 0 and raise."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] <= k:
        raise EntrolabError(f"knn_entropy needs samples [N, d] with N > k={k}, got {x.shape}")
    n, d = x.shape
    dist, _ = cKDTree(x).query(x, k=k + 1)
    eps = dist[:, -1]
    if np.any(eps <= 0):
        raise EntrolabError(
            "knn_entropy: duplicate samples give a zero neighbour distance; add tiny jitter "
            "or use a spacing estimator per dimension"
        )
    log_vd = 0.5 * d * math.log(math.pi) - special.gammaln(0.5 * d + 1.0)
    return float(special.digamma(n) - special.digamma(k) + log_vd + d * np.mean(np.log(eps)))


def sample_entropy(
    samples: Any,
    method: Literal["ebrahimi", "vasicek", "van es", "correa", "auto", "knn"] = "ebrahimi",
    *,
    axis: int = 0,
    k: int = 3,
) -> np.ndarray | float:
    """Differential entropy estimated from samples (nats).

    Spacing methods (``"ebrahimi"`` — REALM's choice —, ``"vasicek"``, ``"van es"``,
    ``"correa"``, ``"auto"``) are 1-D: they estimate one marginal per slice along the other axes
    (``scipy.stats.differential_entropy`` along ``axis``). ``"knn"``: samples [N, d] → one joint
    estimate (:func:`knn_entropy`)."""
    x = np.asarray(samples, dtype=np.float64)
    if not np.isfinite(x).all():
        raise EntrolabError("samples contain NaN/inf")
    if method == "knn":
        return knn_entropy(x, k=k)
    if method not in _SPACING:
        raise EntrolabError(f"unknown method {method!r}; choose one of {(*_SPACING, 'knn')}")
    if x.shape[axis] < 3:
        raise EntrolabError(f"need at least 3 samples along axis {axis}, got {x.shape[axis]}")
    h = stats.differential_entropy(x, axis=axis, method=method)
    return float(h) if np.ndim(h) == 0 else np.asarray(h)
