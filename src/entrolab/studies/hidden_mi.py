"""MI(hidden state; correctness) per layer: how much a layer's state says about whether the
model's answer will be right (spec B22 "toolkit use": a ceiling on what a probe can read).

For binary correctness Y, ``I(X; Y) ≤ H(Y) ≤ log 2`` nats. Per layer, :func:`layer_mi`
standardises the hidden states, projects them on their top ``pca_dim`` principal directions
(unsupervised, so it cannot create dependence; it caps the critic's input size for a few hundred
items), and estimates I with the separable neural critic of
:func:`entrolab.studies.mutual_info.critic_mi` (InfoNCE bound, max-test early stopping) over
``splits`` random train/test splits. The estimate is the mean of the splits' held-out bounds; the
95% interval is the percentile interval of the pooled bootstrap over held-out items (each
split's fitted critic re-read on resampled test items, :func:`heldout_bootstrap`), so it covers
both the test-sample noise and the split-to-split spread (not the refit noise within a split).

Ground truth for tests: :func:`binary_gaussian_mi` is the exact MI of ``X | Y ~ N(±δ/2, 1)``
along one direction (any number of independent noise dimensions added), by quadrature.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import integrate
from scipy.stats import norm

from entrolab.errors import EntrolabError
from entrolab.studies.mutual_info import _mlp, mi_bound

__all__ = ["binary_gaussian_data", "binary_gaussian_mi", "heldout_bootstrap", "layer_mi"]


def binary_gaussian_mi(delta: float, prior: float = 0.5) -> float:
    """Exact I(X; Y) in nats for ``P(Y=1) = prior`` and ``X | Y=y ~ N(±δ/2, 1)`` (1 = +).

    ``I = H(Y) − E_x[H(Y | x)]`` with ``p(x) = π φ(x − δ/2) + (1 − π) φ(x + δ/2)``, integrated
    numerically (absolute error < 1e-9).
    """
    if not 0.0 < prior < 1.0 or delta < 0:
        raise EntrolabError("need 0 < prior < 1 and delta ≥ 0")
    pi = prior
    h_y = -(pi * math.log(pi) + (1 - pi) * math.log(1 - pi))

    def integrand(x: float) -> float:
        a, b = pi * norm.pdf(x - delta / 2), (1 - pi) * norm.pdf(x + delta / 2)
        px = a + b
        if px <= 0:
            return 0.0
        q = a / px
        h = -(q * math.log(q) if q > 0 else 0.0) - ((1 - q) * math.log(1 - q) if q < 1 else 0.0)
        return px * h

    h_cond, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-11)
    return h_y - h_cond


def binary_gaussian_data(
    n: int, dim: int, delta: float, *, prior: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """n pairs: Y ~ Bernoulli(prior), X ∈ R^dim with the signal ±δ/2 along a random unit
    direction and standard normal noise elsewhere (MI = :func:`binary_gaussian_mi`)."""
    if n < 2 or dim < 1:
        raise EntrolabError("need n ≥ 2 and dim ≥ 1")
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(np.float64)
    z = rng.standard_normal((n, dim))
    z[:, 0] += np.where(y == 1, delta / 2, -delta / 2)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return z @ q.T, y


def _pca(x: np.ndarray, dim: int) -> np.ndarray:
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    if dim >= x.shape[1]:
        return x
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:dim].T
    return proj / np.maximum(proj.std(0), 1e-8)


def heldout_bootstrap(
    g: torch.nn.Module, h: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, n_boot: int,
    seed: int,
) -> np.ndarray:  # fmt: skip
    """InfoNCE bound of a fitted critic on ``n_boot`` resamples (with replacement) of held-out
    rows ``x`` [n, Dx], ``y`` [n, Dy]; returns [n_boot] nats."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        gx, hy = g(x), h(y)
        out = []
        for _ in range(n_boot):
            idx = torch.as_tensor(rng.integers(0, x.shape[0], x.shape[0]))
            out.append(float(mi_bound(gx[idx] @ hy[idx].T, "infonce")))
    return np.array(out)


def _fit(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor, *,
         embed_dim: int, hidden: int, epochs: int, lr: float, batch_size: int, seed: int):  # fmt: skip
    """critic_mi's training loop, keeping the critic at the best held-out epoch."""
    import copy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g, h = _mlp(x.shape[1], hidden, embed_dim), _mlp(y.shape[1], hidden, embed_dim)
        opt = torch.optim.Adam(list(g.parameters()) + list(h.parameters()), lr=lr)
        bs = max(2, min(batch_size, train.numel()))
        best, state = -math.inf, None
        for _ in range(epochs):
            order = train[torch.randperm(train.numel())]
            for start in range(0, order.numel() - bs + 1, bs):
                idx = order[start : start + bs]
                loss = -mi_bound(g(x[idx]) @ h(y[idx]).T, "infonce")
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                val = float(mi_bound(g(x[test]) @ h(y[test]).T, "infonce"))
            if val > best:
                best, state = val, (copy.deepcopy(g.state_dict()), copy.deepcopy(h.state_dict()))
    assert state is not None
    g.load_state_dict(state[0])
    h.load_state_dict(state[1])
    return best, g, h


def layer_mi(
    x: Any,
    y: Any,
    *,
    pca_dim: int = 16,
    splits: int = 5,
    test_fraction: float = 0.3,
    embed_dim: int = 8,
    hidden: int = 64,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 64,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Estimate I(X; Y) in nats for hidden states ``x`` [N, D] and labels ``y`` [N] (0/1).

    Returns ``{"estimate", "low", "high", "by_split", "h_y", "n", "pca_dim"}`` (``h_y``: the
    label entropy, an upper bound on I). See the module docstring for the method.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if xs.ndim != 2 or xs.shape[0] != ys.shape[0]:
        raise EntrolabError(f"x must be [N, D] and y [N]; got {xs.shape} and {ys.shape}")
    if not np.isfinite(xs).all():
        raise EntrolabError("hidden states hold NaN or inf")
    if not set(np.unique(ys)) <= {0.0, 1.0}:
        raise EntrolabError("y must be 0/1 correctness labels")
    n = xs.shape[0]
    n_test = round(n * test_fraction)
    if n_test < 8 or n - n_test < 8:
        raise EntrolabError(f"{n} items are too few for train/test splits of ≥ 8; add items")
    p = ys.mean()
    h_y = 0.0 if p in (0.0, 1.0) else float(-(p * math.log(p) + (1 - p) * math.log(1 - p)))
    xt = torch.as_tensor(_pca(xs, pca_dim), dtype=torch.float32)
    yt = torch.as_tensor(ys[:, None], dtype=torch.float32)
    ests, boots = [], []
    for s in range(splits):
        perm = torch.as_tensor(np.random.default_rng(seed + s).permutation(n))
        test, train = perm[:n_test], perm[n_test:]
        best, g, h = _fit(
            xt, yt, train, test, embed_dim=embed_dim, hidden=hidden, epochs=epochs, lr=lr,
            batch_size=batch_size, seed=seed + s,
        )  # fmt: skip
        ests.append(best)
        boots.append(heldout_bootstrap(g, h, xt[test], yt[test], n_boot=n_boot, seed=seed + s))
    pooled = np.concatenate(boots)
    alpha = (1 - level) / 2
    return {
        "estimate": float(np.mean(ests)),
        "low": float(np.quantile(pooled, alpha)),
        "high": float(np.quantile(pooled, 1 - alpha)),
        "by_split": ests,
        "h_y": h_y,
        "n": int(n),
        "pca_dim": int(min(pca_dim, xs.shape[1])),
    }
