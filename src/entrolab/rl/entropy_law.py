"""The entropy mechanism of RL (Cui et al. 2025, arXiv:2505.22617) as pure maths.

Three pieces, all pure tensor/numpy functions:

1. :func:`covariance_proxy` — the token covariance proxy of the official code,
   ``c_{i,t} = (A_{i,t} − mean_M A)·(ℓ_{i,t} − mean_M ℓ)`` over the valid tokens of a batch (a
   centred cross-product, not a per-state covariance over the vocabulary); its mean is the
   batch covariance between advantage and log-prob, whose sign predicts the entropy trend.
2. :func:`predicted_entropy_change` — the exact first-order entropy change of a softmax policy
   for a logit step Δz: ``dH = −Cov_{a∼π}(log π(a), Δz(a))`` per state; with
   :func:`realised_entropy_change` and :func:`softmax_pg_logit_step` (vanilla / natural PG steps).
3. :func:`fit_entropy_law` / :class:`OnlineEntropyLawFit` — least-squares fit of the empirical
   law ``R = −a·exp(H) + b`` with its predicted ceiling ``b − a`` (performance at H = 0) and R².
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from entrolab.errors import EntrolabError
from entrolab.signals import token_entropy

__all__ = [
    "EntropyLawFit",
    "OnlineEntropyLawFit",
    "covariance_proxy",
    "fit_entropy_law",
    "predicted_entropy_change",
    "realised_entropy_change",
    "softmax_pg_logit_step",
]


def _mask_like(values: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
    if tuple(mask.shape) != tuple(values.shape):
        raise EntrolabError(
            f"mask has shape {tuple(mask.shape)} but {name} has {tuple(values.shape)}; "
            "they must match (mask: True = response token)"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise EntrolabError(f"mask must be bool (True = response token), got {mask.dtype}")
        mask = mask != 0
    return mask


def covariance_proxy(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    mean_logprob: torch.Tensor | float | None = None,
    mean_advantage: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Centred cross-product ``c = (A − Ā)(ℓ − ℓ̄)`` per token (Entropy Mechanism, official code).

    Args:
        logprobs: ``[B, T]`` log-probs ℓ of the sampled tokens (detached here).
        advantages: ``[B, T]`` per-token advantages A.
        mask: ``[B, T]`` bool, True on response tokens.
        mean_logprob, mean_advantage: the centring means ℓ̄, Ā. Default: the masked means of
            the given tensors (the official code's micro-batch scope); pass whole-batch means for
            a batch-scope proxy.
    Returns:
        ``[B, T]`` float, 0 at masked positions. ``mean`` over the masked tokens is the (biased)
        covariance between A and ℓ over the batch; ``−mean`` > 0 predicts rising entropy.
    """
    if tuple(advantages.shape) != tuple(logprobs.shape):
        raise EntrolabError(
            f"advantages have shape {tuple(advantages.shape)} but logprobs have "
            f"{tuple(logprobs.shape)}; they must match"
        )
    m = _mask_like(logprobs, mask, "logprobs")
    lp = torch.where(m, logprobs.detach(), torch.zeros((), dtype=logprobs.dtype))
    adv = torch.where(m, advantages.detach(), torch.zeros((), dtype=advantages.dtype))
    for name, t in (("logprobs", lp), ("advantages", adv)):
        if not bool(torch.isfinite(t).all()):
            raise EntrolabError(f"{name} contain NaN/inf at response positions; fix them upstream")
    n = max(int(m.sum()), 1)
    mean_a = adv.sum() / n if mean_advantage is None else mean_advantage
    mean_l = lp.sum() / n if mean_logprob is None else mean_logprob
    c = (adv - mean_a) * (lp - mean_l)
    return torch.where(m, c, torch.zeros((), dtype=c.dtype))


def _check_logits(z: torch.Tensor, name: str) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() < 1 or not z.is_floating_point():
        raise EntrolabError(f"{name} must be a float tensor of shape [..., V]")
    if not bool(torch.isfinite(z).all()):
        raise EntrolabError(f"{name} contain NaN/inf; entropy changes need finite logits")


def _rows(z: torch.Tensor) -> torch.Tensor:
    return z.detach().reshape(-1, z.shape[-1]).to(torch.float64)


def predicted_entropy_change(
    logits: torch.Tensor, delta_logits: torch.Tensor, *, chunk_rows: int = 256
) -> torch.Tensor:
    """First-order entropy change of ``softmax(z)`` for the logit step ``z → z + Δz``.

    ``dH = −Cov_{a∼π}(log π(a), Δz(a)) = −(Σ_a π log π Δz − (Σ_a π log π)(Σ_a π Δz))``,
    the directional derivative of the entropy (nats) along Δz; the realised change differs by
    O(‖Δz‖²). Computed in float64, ``chunk_rows`` rows at a time (result independent of it).

    Args:
        logits: ``[..., V]`` logits z of the current policy at each state.
        delta_logits: ``[..., V]`` logit step Δz (e.g. ``z_new − z_old`` on a probe set, or
            :func:`softmax_pg_logit_step`).
    Returns:
        ``[...]`` float64 predicted change per state (nats).
    """
    _check_logits(logits, "logits")
    _check_logits(delta_logits, "delta_logits")
    if tuple(delta_logits.shape) != tuple(logits.shape):
        raise EntrolabError(
            f"delta_logits have shape {tuple(delta_logits.shape)} but logits have "
            f"{tuple(logits.shape)}; they must match"
        )
    z, dz = _rows(logits), _rows(delta_logits)
    out = torch.empty(z.shape[0], dtype=torch.float64)
    for s in range(0, z.shape[0], max(int(chunk_rows), 1)):
        logp = torch.log_softmax(z[s : s + chunk_rows], dim=-1)
        p = logp.exp()
        d = dz[s : s + chunk_rows]
        e_logp_dz = (p * logp * d).sum(-1)
        out[s : s + chunk_rows] = -(e_logp_dz - (p * logp).sum(-1) * (p * d).sum(-1))
    return out.reshape(logits.shape[:-1])


def realised_entropy_change(
    logits: torch.Tensor, new_logits: torch.Tensor, *, chunk_rows: int = 256
) -> torch.Tensor:
    """``H(softmax(z_new)) − H(softmax(z))`` per state, float64, nats; shapes ``[..., V]`` → ``[...]``."""
    _check_logits(logits, "logits")
    _check_logits(new_logits, "new_logits")
    if tuple(new_logits.shape) != tuple(logits.shape):
        raise EntrolabError(
            f"new_logits have shape {tuple(new_logits.shape)} but logits have "
            f"{tuple(logits.shape)}; they must match"
        )
    z, zn = _rows(logits), _rows(new_logits)  # float64 rows
    chunk = max(int(chunk_rows), 1)
    out = token_entropy(zn, chunk_rows=chunk) - token_entropy(z, chunk_rows=chunk)
    return out.reshape(logits.shape[:-1])


def softmax_pg_logit_step(
    logits: torch.Tensor, action_advantages: torch.Tensor, lr: float, *, natural: bool = False
) -> torch.Tensor:
    """Exact logit step of one policy-gradient ascent step on ``J = E_{a∼π}[A(a)]`` per state
    for a tabular softmax policy.

    Vanilla PG: ``Δz(a) = η·∂J/∂z(a) = η·π(a)·(A(a) − E_π A)``, which is the paper's
    ``η·π(a)·A(a)`` when A is a true advantage (E_π A = 0). Natural PG: ``Δz(a) = η·(A(a) − E_π A)``
    (a per-state constant shift of the logits leaves π unchanged). ``predicted_entropy_change``
    of the step gives ``−η·Cov(log π, π·A)`` resp. ``−η·Cov(log π, A)``, the paper's result.

    Args:
        logits: ``[..., V]`` logits per state. action_advantages: ``[..., V]`` A(s, a) for every
            action. lr: step size η (> 0 ascends J).
    Returns:
        ``[..., V]`` float64 logit step Δz.
    """
    _check_logits(logits, "logits")
    _check_logits(action_advantages, "action_advantages")
    if tuple(action_advantages.shape) != tuple(logits.shape):
        raise EntrolabError("action_advantages must have the same shape [..., V] as logits")
    adv = action_advantages.detach().to(torch.float64)
    p = torch.softmax(logits.detach().to(torch.float64), dim=-1)
    centred = adv - (p * adv).sum(-1, keepdim=True)
    return lr * centred if natural else lr * p * centred


@dataclass(frozen=True)
class EntropyLawFit:
    """Least-squares fit of ``R = −a·exp(H) + b``.

    Attributes:
        a, b: coefficients (the paper expects ``a > 0``: reward rises as entropy is spent).
        r2: coefficient of determination of the fit (1 when the points lie on the curve).
        n: number of (H, R) points used.
    """

    a: float
    b: float
    r2: float
    n: int

    @property
    def ceiling(self) -> float:
        """Predicted performance when entropy is exhausted (H = 0): ``b − a``."""
        return self.b - self.a

    def predict(self, entropy: float | np.ndarray) -> float | np.ndarray:
        """``−a·exp(H) + b`` for a scalar or array of mean entropies (nats)."""
        return -self.a * np.exp(entropy) + self.b


def _fit_from_moments(
    n: int, mean_x: float, mean_y: float, sxx: float, sxy: float, syy: float
) -> EntropyLawFit:
    if n < 2:
        raise EntrolabError(f"fitting R = −a·exp(H) + b needs ≥ 2 (H, R) points, got {n}")
    if not sxx > 1e-12 * max(mean_x * mean_x, 1e-300) * n:
        raise EntrolabError(
            "all entropies are (numerically) equal, so a is not identifiable; fit over steps "
            "where the mean entropy varies"
        )
    slope = sxy / sxx
    a = -slope
    b = mean_y - slope * mean_x
    ss_res = max(syy - slope * sxy, 0.0)
    r2 = (1.0 - ss_res / syy) if syy > 0 else 1.0
    return EntropyLawFit(a=float(a), b=float(b), r2=float(r2), n=int(n))


def _as_1d(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    arr = arr.reshape(-1)
    if not np.isfinite(arr).all():
        raise EntrolabError(f"{name} contain NaN/inf; drop those steps before fitting")
    return arr


def fit_entropy_law(entropy: object, reward: object) -> EntropyLawFit:
    """Fit ``R = −a·exp(H) + b`` by ordinary least squares of R on x = exp(H).

    Args:
        entropy: ``[n]`` mean response-token entropy per step (nats).
        reward: ``[n]`` mean reward (or accuracy) per step.
    Returns:
        :class:`EntropyLawFit` with ``a``, ``b``, ``r2`` and ``ceiling = b − a``.
    """
    h = _as_1d(entropy, "entropy")
    r = _as_1d(reward, "reward")
    if h.shape != r.shape:
        raise EntrolabError(f"entropy has {h.size} points but reward has {r.size}; pair them")
    x = np.exp(h)
    mx, my = float(x.mean()) if x.size else 0.0, float(r.mean()) if r.size else 0.0
    dx, dy = x - mx, r - my
    return _fit_from_moments(int(x.size), mx, my, float(dx @ dx), float(dx @ dy), float(dy @ dy))


class OnlineEntropyLawFit:
    """Running fit of ``R = −a·exp(H) + b`` (Welford co-moments; O(1) memory per update).

    ``update(H, R)`` once per step; ``fit()`` equals :func:`fit_entropy_law` on all points so far.
    ``state_dict()``/``load_state_dict()`` make it checkpointable.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean_x = 0.0
        self.mean_y = 0.0
        self.sxx = 0.0
        self.sxy = 0.0
        self.syy = 0.0

    def update(self, entropy: float, reward: float) -> None:
        """Add one (mean entropy in nats, reward) point."""
        h, r = float(entropy), float(reward)
        if not (math.isfinite(h) and math.isfinite(r)):
            raise EntrolabError(f"entropy and reward must be finite, got ({h}, {r})")
        x = math.exp(h)
        self.n += 1
        dx, dy = x - self.mean_x, r - self.mean_y
        self.mean_x += dx / self.n
        self.mean_y += dy / self.n
        self.sxx += dx * (x - self.mean_x)
        self.sxy += dx * (r - self.mean_y)
        self.syy += dy * (r - self.mean_y)

    def fit(self) -> EntropyLawFit:
        """The current fit; raises :class:`EntrolabError` until two distinct entropies are seen."""
        return _fit_from_moments(self.n, self.mean_x, self.mean_y, self.sxx, self.sxy, self.syy)

    def state_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.n = int(state["n"])
        for k in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
            setattr(self, k, float(state[k]))
