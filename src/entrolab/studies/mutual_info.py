"""Mutual information with consistency checks (Abdelaleem, Martini & Nemenman 2025,
arXiv:2506.00330; subsampling after Holmes & Nemenman 2019, Phys. Rev. E 100, 022404).

A neural critic ``f(x, y) = g(x)ᵀ h(y)`` (separable: two MLP embeddings of dimension
``embed_dim``) is trained on a variational lower bound of I(X; Y) in nats; scores are the
[N, N] matrix ``S_ij = f(x_i, y_j)`` of a batch (diagonal = paired samples):

* InfoNCE (van den Oord et al. 2018): ``mean_i (S_ii − logsumexp_j S_ij) + log N`` (≤ log N);
* DV / MINE (Belghazi et al. 2018): ``mean_i S_ii − log mean_{i≠j} exp S_ij``;
* SMILE (Song & Ermon 2020): DV with the off-diagonal scores clipped to [−τ, τ] (τ = 5).

The protocol's checks, all implemented here:

1. max-test early stopping: the estimate is the held-out bound at the epoch where it peaks,
   not the training bound (:func:`critic_mi`);
2. subsampling–extrapolation: estimates on the full set and on k = 2, 3, … disjoint parts of
   ``N / k`` items, a weighted fit ``Î(n) = I∞ + a / n``, I∞ with an error bar from the spread
   of the part estimates, and flags when the estimates are not consistent with that law or the
   extrapolation is large (:func:`mi_protocol`);
3. embedding-dimension sweep: the estimate should plateau in ``embed_dim``
   (:func:`embedding_sweep`).

The paper gives no numeric thresholds for the flags ([U] in the spec); the ones used here are
stated in :class:`MIProtocol`. Everything is in nats; randomness comes from explicit seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import chi2, norm

from entrolab.errors import EntrolabError

Bound = Literal["infonce", "dv", "smile"]
BOUNDS = ("infonce", "dv", "smile")

__all__ = [
    "BOUNDS",
    "CriticFit",
    "MIProtocol",
    "critic_mi",
    "dv_bound",
    "embedding_sweep",
    "extrapolate",
    "gaussian_mi_data",
    "infonce_bound",
    "js_bound",
    "mi_bound",
    "mi_protocol",
    "smile_bound",
]


# ---- bounds on a score matrix -----------------------------------------------------------------


def _offdiag(scores: torch.Tensor) -> torch.Tensor:
    n = scores.shape[0]
    return scores[~torch.eye(n, dtype=torch.bool, device=scores.device)]


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE: ``mean_i (S_ii − logsumexp_j S_ij) + log N`` (nats; at most log N). S: [N, N]."""
    n = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(n)


def dv_bound(scores: torch.Tensor) -> torch.Tensor:
    """Donsker–Varadhan: ``mean_i S_ii − (logsumexp_{i≠j} S_ij − log(N(N−1)))`` (nats)."""
    n = scores.shape[0]
    off = _offdiag(scores)
    return scores.diagonal().mean() - (torch.logsumexp(off, 0) - math.log(n * (n - 1)))


def js_bound(scores: torch.Tensor) -> torch.Tensor:
    """f-GAN Jensen–Shannon objective ``E_P[−softplus(−S_ii)] − E_Q[softplus(S_ij)]`` (not an MI
    value; SMILE trains on its gradient)."""
    fn = torch.nn.functional.softplus
    return -fn(-scores.diagonal()).mean() - fn(_offdiag(scores)).mean()


def smile_bound(scores: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
    """SMILE (Song & Ermon 2020): the *value* is DV with the off-diagonal scores clipped to
    ``[−clip, clip]`` (nats); the *gradient* is the JS objective's (:func:`js_bound`), which keeps
    the critic from drifting (a clipped DV alone is not shift-invariant and diverges)."""
    n = scores.shape[0]
    off = _offdiag(scores).clamp(-clip, clip)
    dv = scores.diagonal().mean() - (torch.logsumexp(off, 0) - math.log(n * (n - 1)))
    js = js_bound(scores)
    return js + (dv - js).detach()


def mi_bound(scores: torch.Tensor, bound: Bound) -> torch.Tensor:
    """The named bound of a [N, N] score matrix (N ≥ 2)."""
    if bound not in BOUNDS:
        raise EntrolabError(f"unknown bound {bound!r}; choose one of {', '.join(BOUNDS)}")
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise EntrolabError(
            f"scores must be a square [N, N] matrix with N ≥ 2, got {tuple(scores.shape)}"
        )
    return {"infonce": infonce_bound, "dv": dv_bound, "smile": smile_bound}[bound](scores)


# ---- critic training with max-test early stopping ---------------------------------------------


def _mlp(d_in: int, hidden: int, d_out: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, d_out),
    )


@dataclass(frozen=True)
class CriticFit:
    """One critic trained on a train split and read on a held-out split.

    Attributes:
        estimate: held-out bound (nats) at the epoch where it peaked (max-test stopping).
        best_epoch: that epoch (0-based).
        test_curve, train_curve: held-out / last-batch training bound per epoch (nats).
        n_train, n_test: items in each split.
    """

    estimate: float
    best_epoch: int
    test_curve: list[float] = field(repr=False)
    train_curve: list[float] = field(repr=False)
    n_train: int = 0
    n_test: int = 0


def _as_matrix(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise EntrolabError(f"{name} must be [N] or [N, D], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise EntrolabError(f"{name} holds NaN or inf values; drop or impute them first")
    return t


def critic_mi(
    x: Any,
    y: Any,
    *,
    bound: Bound = "infonce",
    embed_dim: int = 16,
    hidden: int = 64,
    epochs: int = 40,
    batch_size: int = 128,
    lr: float = 3e-3,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> CriticFit:
    """Train a separable critic on ``bound`` and return the max-test estimate of I(X; Y).

    Args:
        x: [N, Dx] (or [N]); y: [N, Dy] (or [N]); row i of x pairs with row i of y.
        bound: ``"infonce"`` | ``"dv"`` | ``"smile"`` (trained on and read out with the same).
        embed_dim: critic embedding dimension (the separable critic's rank).
        hidden: MLP width. epochs, batch_size, lr: Adam training settings.
        test_fraction: share of items held out to read the estimate (≥ 2 items each side).
        seed: permutation, initialisation and batch order (torch RNG forked, global untouched).
    """
    xt, yt = _as_matrix(x, "x"), _as_matrix(y, "y")
    if xt.shape[0] != yt.shape[0]:
        raise EntrolabError(f"x has {xt.shape[0]} rows but y has {yt.shape[0]}; pass paired rows")
    n = xt.shape[0]
    n_test = round(n * test_fraction)
    if n_test < 2 or n - n_test < 2:
        raise EntrolabError(f"{n} items cannot be split into train/test of ≥ 2 each; add items")
    mi_bound(torch.zeros(2, 2), bound)  # validates the name
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        perm = torch.randperm(n)
        test, train = perm[:n_test], perm[n_test:]
        g, h = _mlp(xt.shape[1], hidden, embed_dim), _mlp(yt.shape[1], hidden, embed_dim)
        params = list(g.parameters()) + list(h.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        bs = max(2, min(batch_size, train.numel()))
        test_curve, train_curve = [], []
        for _ in range(epochs):
            order = train[torch.randperm(train.numel())]
            last = math.nan
            for start in range(0, order.numel() - bs + 1, bs):
                idx = order[start : start + bs]
                loss = -mi_bound(g(xt[idx]) @ h(yt[idx]).T, bound)
                opt.zero_grad()
                loss.backward()
                opt.step()
                last = -loss.item()
            with torch.no_grad():
                test_curve.append(float(mi_bound(g(xt[test]) @ h(yt[test]).T, bound)))
            train_curve.append(last)
    best = int(np.nanargmax(test_curve))
    return CriticFit(test_curve[best], best, test_curve, train_curve, n - n_test, n_test)


# ---- subsampling–extrapolation protocol -------------------------------------------------------


@dataclass(frozen=True)
class MIProtocol:
    """Subsampling–extrapolation estimate of I(X; Y) with an error bar and consistency flags.

    Attributes:
        i_inf: extrapolated MI ``I∞`` (nats) from ``Î(n) = I∞ + a / n``.
        se: its standard error; low, high: ``I∞ ± z · se`` at ``level``.
        slope: the fitted ``a`` (nats · items).
        by_split: k → estimates on the k disjoint parts of ``N // k`` items.
        chi2_p: p-value of the fit's χ² (k − 2 degrees of freedom; None with 2 splits).
        flags: reasons not to trust the estimate (empty = consistent):
            ``"nonlinear"`` (χ² p < 0.01: the split means do not follow a / n),
            ``"large_extrapolation"`` (|a / N| > 0.25 · max(|I∞|, 0.1 nat): the full-data
            estimate is still far from the asymptote, i.e. too few samples),
            ``"wide_interval"`` (se > 0.2 · max(|I∞|, 0.1 nat)),
            ``"saturated"`` (InfoNCE within 0.1 nat of its log-N ceiling on some split).
        n: items; level: coverage of the interval.
    """

    i_inf: float
    se: float
    low: float
    high: float
    slope: float
    by_split: dict[int, list[float]]
    chi2_p: float | None
    flags: list[str]
    n: int
    level: float

    @property
    def consistent(self) -> bool:
        return not self.flags

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["by_split"] = {str(k): v for k, v in self.by_split.items()}
        out["consistent"] = self.consistent
        return out


def mi_protocol(
    x: Any,
    y: Any,
    *,
    splits: Sequence[int] = (1, 2, 3, 4),
    level: float = 0.95,
    seed: int = 0,
    **critic: Any,
) -> MIProtocol:
    """Estimate I(X; Y) on the full data and on k disjoint parts, extrapolate, and check.

    For every k in ``splits`` the items are cut into k disjoint parts of ``n_k = N // k`` and a
    fresh critic (:func:`critic_mi`, keywords ``critic``; default bound InfoNCE) estimates each
    part; :func:`extrapolate` fits ``Î(n) = I∞ + a / n`` by weighted least squares and flags
    inconsistencies. Splits with one part cannot give a spread, so ``splits`` needs a k ≥ 2.
    """
    if not 0.0 < level < 1.0:
        raise EntrolabError(f"level must be in (0, 1), got {level!r}")
    ks = sorted({int(k) for k in splits})
    if len(ks) < 2 or ks[0] < 1 or max(ks) < 2:
        raise EntrolabError(f"splits must hold ≥ 2 distinct k ≥ 1 with one k ≥ 2, got {splits!r}")
    xt, yt = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = xt.shape[0]
    if yt.shape[0] != n:
        raise EntrolabError(f"x has {n} rows but y has {yt.shape[0]}; pass paired rows")
    perm = np.random.default_rng(seed).permutation(n)
    by_split: dict[int, list[float]] = {}
    for k in ks:
        size = n // k
        by_split[k] = [
            critic_mi(xt[perm[j * size : (j + 1) * size]], yt[perm[j * size : (j + 1) * size]],
                      seed=seed + 1000 * k + j, **critic).estimate
            for j in range(k)
        ]  # fmt: skip
    ceiling = None
    if critic.get("bound", "infonce") == "infonce":
        tf = critic.get("test_fraction", 0.3)
        ceiling = {k: math.log(max(2, round(n // k * tf))) for k in ks}
    return extrapolate(by_split, n, level=level, ceilings=ceiling)


def extrapolate(
    by_split: dict[int, list[float]],
    n: int,
    *,
    level: float = 0.95,
    ceilings: dict[int, float] | None = None,
) -> MIProtocol:
    """Fit ``m_k = I∞ + a · k / n`` to the split means and flag inconsistencies (pure numpy).

    Args:
        by_split: k → the estimates on the k disjoint parts (k = 1 may hold one estimate; at
            least one k ≥ 2 with ≥ 2 estimates is needed for a spread).
        n: items in the full data.
        level: coverage of the interval on I∞.
        ceilings: optional k → the bound's ceiling on a part (InfoNCE: log of the held-out
            batch); estimates within 0.1 nat of it raise ``"saturated"``.

    The variance of a part mean is ``s_k² / k``; a k with one part borrows the spread of the
    smallest multi-part k scaled as ``1 / n_k``: ``v_k = s_j² · j / k²`` (a part of ``n / k``
    items has variance ``s_j² · (n/j) / (n/k)``, and the mean of k parts divides it by k).
    """
    ks = sorted(by_split)
    multi = [k for k in ks if len(by_split[k]) >= 2]
    if len(ks) < 2 or not multi:
        raise EntrolabError("need estimates for ≥ 2 values of k, one of them with ≥ 2 parts")
    inv_n = np.array([k / n for k in ks])
    means = np.array([float(np.mean(by_split[k])) for k in ks])
    j = min(multi)
    s2_j = float(np.var(by_split[j], ddof=1))
    var = np.array(
        [np.var(by_split[k], ddof=1) / k if k in multi else s2_j * j / (k * k) for k in ks]
    )
    w = 1.0 / np.maximum(var, 1e-8)
    design = np.stack([np.ones_like(inv_n), inv_n], axis=1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    i_inf, slope = (float(c) for c in cov @ design.T @ (w * means))
    se = float(math.sqrt(cov[0, 0]))
    resid = means - design @ np.array([i_inf, slope])
    dof = len(ks) - 2
    chi2_p = float(chi2.sf(float(np.sum(w * resid**2)), dof)) if dof > 0 else None
    scale = max(abs(i_inf), 0.1)
    flags = []
    if chi2_p is not None and chi2_p < 0.01:
        flags.append("nonlinear")
    if abs(slope / n) > 0.25 * scale:
        flags.append("large_extrapolation")
    if se > 0.2 * scale:
        flags.append("wide_interval")
    if ceilings and any(max(by_split[k]) > ceilings[k] - 0.1 for k in ks if k in ceilings):
        flags.append("saturated")
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    return MIProtocol(
        i_inf, se, i_inf - half, i_inf + half, slope, dict(by_split), chi2_p, flags, n, level
    )


def embedding_sweep(
    x: Any, y: Any, dims: Sequence[int] = (1, 2, 4, 8, 16), *, seed: int = 0, **critic: Any
) -> dict[int, float]:
    """Max-test estimate per critic embedding dimension (it should plateau once the dimension
    reaches the dependence's latent dimension)."""
    return {int(d): critic_mi(x, y, embed_dim=int(d), seed=seed, **critic).estimate for d in dims}


# ---- synthetic data with known MI -------------------------------------------------------------


def gaussian_mi_data(
    n: int, dim: int, latent_dim: int, mi_nats: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (X, Y) in R^dim with exactly ``mi_nats`` of mutual information in ``latent_dim``
    latent dimensions.

    Latents ``z_x, z_y ∈ R^{K_Z}`` are standard normal with per-dimension correlation ρ,
    ``ρ² = 1 − exp(−2 I / K_Z)`` so that ``I(z_x; z_y) = −(K_Z/2) log(1 − ρ²) = I``; X is a
    random rotation of ``[z_x, independent noise]`` (likewise Y), an invertible map of the latents
    and of noise independent of everything, so ``I(X; Y) = I`` exactly.

    Returns:
        x, y: float64 [n, dim].
    """
    if not (1 <= latent_dim <= dim) or n < 2 or mi_nats < 0:
        raise EntrolabError("need n ≥ 2, 1 ≤ latent_dim ≤ dim and mi_nats ≥ 0")
    rng = np.random.default_rng(seed)
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi_nats / latent_dim))
    zx = rng.standard_normal((n, latent_dim))
    zy = rho * zx + math.sqrt(1.0 - rho**2) * rng.standard_normal((n, latent_dim))

    def embed(z: np.ndarray) -> np.ndarray:
        full = np.concatenate([z, rng.standard_normal((n, dim - latent_dim))], axis=1)
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        return full @ q.T

    return embed(zx), embed(zy)
