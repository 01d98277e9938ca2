"""Clip-Cov and KL-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs",
arXiv:2505.22617): restrict the update on the few tokens whose log-prob/advantage covariance
``c_{i,t} = (A − Ā)(ℓ − ℓ̄)`` (see :func:`entrolab.rl.entropy_law.covariance_proxy`; ℓ is the
*current* log-prob, detached) is largest, since those drain entropy.

* **Clip-Cov** — ordinary PPO-clip loss (no dual clip). Tokens PPO already clipped, and padding,
  are excluded; among the candidates with ``lb < c < ub`` choose ``k = max(1, ⌊ρ·N⌋)``
  uniformly at random and multiply their loss by 0 (detaching them). Aggregated as given
  (token-mean in the paper); the zeroed tokens stay in the denominator.
* **KL-Cov** — the *unclipped* loss ``−r·A`` (no PPO clip at all); the top ``k = max(1, ⌊ρ·N⌋)``
  tokens by c get ``+ β·|ℓ − ℓ_old|`` (gradient flows through the penalty).

Defaults, and where the paper's recipe and verl's port differ (our default first):

======================  ========================  ==========================================
parameter               paper recipe / code       verl (``policy_loss.*``)
======================  ========================  ==========================================
clip_cov_ratio ρ        2e-4                      2e-4
clip_cov_lb / ub        1 / 5                     1 / 5
clip_low / clip_high    **0.2 / 0.2** here;       0.2 / 0.2 (``actor.clip_ratio``)
                        the recipe sets 1 / 1
kl_cov_ratio ρ          **2e-3** (7B; "k_percent  2e-4 (a fraction; the 32B setting)
                        0.2" in percent), 2e-4
                        for 32B
ppo_kl_coef β           **1**                     0.1 in actor.yaml/PolicyLossConfig, but the
                                                  loss function falls back to 1
======================  ========================  ==========================================

Selection scope: ``"micro_batch"`` (default; the official code and verl: means, k and the top-k
over the micro-batch on one rank) or ``"batch"``: the means, k and the threshold come from
:func:`prepare_clip_cov` / :func:`prepare_kl_cov` run once on the whole optimisation batch and
passed in ``inp.selection``, so the selected set does not depend on the micro-batch size.
Clip-Cov's random choice is drawn with ``generator``/``seed`` (micro-batch scope: a random
permutation, exactly k tokens); in batch scope it keeps the k candidates of smallest
pseudo-random key ``hash(seed, t, ℓ_old, A)`` (exactly k unless two tokens share all of t, ℓ_old
and A bitwise, e.g. duplicate completions, which are then selected together).
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.entropy_law import covariance_proxy
from entrolab.rl.losses.core import (
    Checked,
    aggregate,
    check_input,
    check_scope,
    checked_ppo,
    clip_metrics,
    finish,
    frac,
    log_ratio,
    ppo_token_loss,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["clip_cov", "kl_cov", "prepare_clip_cov", "prepare_kl_cov", "token_keys"]

_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B
_NO_LIMIT = float(2**33)  # above every 32-bit key: "select all candidates"


def _check_ratio(rho: float, name: str, loss: str) -> float:
    ok = isinstance(rho, (int, float)) and not isinstance(rho, bool) and 0 < rho <= 1
    if not ok:
        raise EntrolabError(f"{loss}: {name} must be a fraction in (0, 1], got {rho!r}")
    return float(rho)


def _k(rho: float, n: int) -> int:
    """``max(1, ⌊ρ·n⌋)`` as in the official code (0 when there are no tokens)."""
    return max(1, int(rho * n)) if n > 0 else 0


def _mix(x: torch.Tensor) -> torch.Tensor:
    """32-bit integer mixer on int64 tensors holding values in [0, 2^32)."""
    x = (((x >> 16) ^ x) * _MUL) & _M32
    x = (((x >> 16) ^ x) * _MUL) & _M32
    return (x >> 16) ^ x


def token_keys(old_logprobs: torch.Tensor, advantages: torch.Tensor, seed: int) -> torch.Tensor:
    """Pseudo-random int64 keys in [0, 2^32) per token, from (seed, position t, ℓ_old, A) bits.

    Depends only on the token's own values, never on which micro-batch holds it. ``[B, T]``.
    """
    bits_old = old_logprobs.detach().float().contiguous().view(torch.int32).long() & _M32
    bits_adv = advantages.detach().float().contiguous().view(torch.int32).long() & _M32
    t = torch.arange(old_logprobs.shape[-1], device=old_logprobs.device).expand_as(bits_old)
    h = _mix(torch.full_like(bits_old, (int(seed) ^ 0x9E3779B9) & _M32))
    h = _mix(h ^ t)
    h = _mix(h ^ bits_old)
    return _mix(h ^ bits_adv)


def _selection(inp: PolicyLossInput, keys: tuple[str, ...], loss: str) -> dict[str, torch.Tensor]:
    sel = inp.selection
    missing = [k for k in keys if sel is None or k not in sel]
    if missing:
        raise EntrolabError(
            f"{loss}: selection_scope='batch' needs inp.selection with {missing}: compute it "
            f"once with entrolab.rl.losses.prepare_selection({loss!r}, whole_batch_input, "
            "**loss_params) and pass it to every micro-batch (or use selection_scope='micro_batch')"
        )
    assert sel is not None
    return sel


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None:
        return generator
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def _clip_cov_candidates(
    c: Checked,
    flags: dict[str, torch.Tensor],
    lb: float,
    ub: float,
    mean_adv: torch.Tensor | None = None,
    mean_lp: torch.Tensor | None = None,
) -> torch.Tensor:
    cov = covariance_proxy(
        c.logprobs, c.advantages, c.mask, mean_logprob=mean_lp, mean_advantage=mean_adv
    )
    clipped = flags["low"] | flags["high"]
    return c.mask & ~clipped & (cov > lb) & (cov < ub)


def clip_cov(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    selection_scope: str = "micro_batch",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    log_ratio_clamp: float | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """Clip-Cov loss: PPO-clip with a random ρ-fraction of high-covariance tokens detached.

    Args:
        inp: micro-batch input (``[B, T]``); ``inp.selection`` in batch scope.
        aggregation: a ``LOSS_AGGREGATIONS`` mode (paper: token-mean).
        clip_cov_ratio: ρ; ``k = max(1, ⌊ρ·N⌋)`` tokens are zeroed (N = response tokens in scope).
        clip_cov_lb, clip_cov_ub: open interval of c for candidates.
        clip_low, clip_high: PPO clip ε_lo, ε_hi (no dual clip in this loss).
        selection_scope: ``"micro_batch"`` or ``"batch"`` (see module docstring).
        seed, generator: randomness of the choice (micro-batch: ``generator`` or a new one from
            ``seed``; both None → torch's global RNG, like verl). Batch scope uses the seed stored
            by :func:`prepare_clip_cov`.
        log_ratio_clamp: clamp of ``ℓ − ℓ_old`` before exp (verl's clip_cov: none).
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; ``touched_frac`` = zeroed fraction (verl's ``pg_clipfrac`` for
        this loss), ``clip_frac*`` = PPO's own clipping, ``cov_candidates_frac``.
    """
    rho = _check_ratio(clip_cov_ratio, "clip_cov_ratio", "clip_cov")
    check_scope(selection_scope, "clip_cov")
    c, tok, flags = checked_ppo(
        inp,
        "clip_cov",
        aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=None,
        log_ratio_clamp=log_ratio_clamp,
    )
    if selection_scope == "batch":
        s = _selection(inp, ("mean_advantage", "mean_logprob", "key_threshold", "seed"), "clip_cov")
        cand = _clip_cov_candidates(
            c, flags, clip_cov_lb, clip_cov_ub, s["mean_advantage"], s["mean_logprob"]
        )
        keys = token_keys(c.old_logprobs, c.advantages, int(s["seed"]))
        chosen = cand & (keys.to(torch.float64) <= s["key_threshold"])
    else:
        cand = _clip_cov_candidates(c, flags, clip_cov_lb, clip_cov_ub)
        idx = torch.nonzero(cand)
        k = min(_k(rho, c.n_tokens), idx.shape[0])
        perm = torch.randperm(idx.shape[0], generator=_generator(seed, generator))
        idx = idx[perm[:k].to(idx.device)]
        chosen = torch.zeros_like(cand)
        chosen[idx[:, 0], idx[:, 1]] = True
    tok = torch.where(chosen, torch.zeros((), dtype=tok.dtype), tok)
    pg = aggregate(tok, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    metrics["touched_frac"] = frac(chosen, c.mask)
    metrics["touched_tokens"] = float(chosen.sum())
    metrics["cov_candidates_frac"] = frac(cand, c.mask)
    metrics["effective_tokens"] = float(c.n_tokens - int(chosen.sum()))
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)


def prepare_clip_cov(
    inp: PolicyLossInput,
    *,
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    seed: int | None = None,
    log_ratio_clamp: float | None = None,
    **_: object,
) -> dict[str, torch.Tensor]:
    """Whole-batch statistics for ``clip_cov(selection_scope="batch")``.

    Returns ``mean_advantage``, ``mean_logprob`` (centring means over the batch's response
    tokens), ``key_threshold`` (keep candidates with key ≤ it: the k-th smallest candidate key,
    or above all keys when there are ≤ k candidates), ``seed`` and ``k``.
    """
    rho = _check_ratio(clip_cov_ratio, "clip_cov_ratio", "clip_cov")
    with torch.no_grad():
        c = check_input(inp, "clip_cov", "token-mean")
        _, flags = ppo_token_loss(
            c, clip_low=clip_low, clip_high=clip_high, dual_clip=None,
            log_ratio_clamp=log_ratio_clamp,
        )  # fmt: skip
        n = max(c.n_tokens, 1)
        mean_a, mean_l = c.advantages.sum() / n, c.logprobs.detach().sum() / n
        cand = _clip_cov_candidates(c, flags, clip_cov_lb, clip_cov_ub, mean_a, mean_l)
        s = 0 if seed is None else int(seed)
        keys = token_keys(c.old_logprobs, c.advantages, s)[cand].to(torch.float64)
        k = _k(rho, c.n_tokens)
        thr = _NO_LIMIT if keys.numel() <= k else float(torch.kthvalue(keys, k).values)
    return {
        "mean_advantage": mean_a.detach(),
        "mean_logprob": mean_l.detach(),
        "key_threshold": torch.tensor(thr, dtype=torch.float64),
        "seed": torch.tensor(s, dtype=torch.int64),
        "k": torch.tensor(k, dtype=torch.int64),
    }


def _top_cov(cov: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest ``cov`` among masked tokens (ties: earlier position first)."""
    keyed = torch.where(mask, cov, torch.full_like(cov, -torch.inf)).reshape(-1)
    order = torch.argsort(keyed, descending=True, stable=True)[:k]
    out = torch.zeros(keyed.shape, dtype=torch.bool, device=cov.device)
    out[order] = True
    return out.reshape(cov.shape) & mask


def kl_cov(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    kl_cov_ratio: float = 2e-3,
    ppo_kl_coef: float = 1.0,
    selection_scope: str = "micro_batch",
    log_ratio_clamp: float | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """KL-Cov loss: unclipped ``−r·A`` plus ``β·|ℓ − ℓ_old|`` on the top-ρ covariance tokens.

    Args:
        inp: micro-batch input (``[B, T]``); ``inp.selection`` in batch scope.
        aggregation: a ``LOSS_AGGREGATIONS`` mode (paper: token-mean).
        kl_cov_ratio: ρ as a fraction; ``k = max(1, ⌊ρ·N⌋)`` tokens are penalised.
        ppo_kl_coef: β of the penalty (paper 1).
        selection_scope: ``"micro_batch"`` or ``"batch"``.
        log_ratio_clamp: clamp of ``ℓ − ℓ_old`` before exp (verl's kl_cov: none).
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty (separate from β).
    Returns:
        :class:`PolicyLossOutput`; ``touched_frac`` = penalised fraction; ``abs_log_ratio`` is
        verl's ``ppo_kl`` for this loss.
    """
    rho = _check_ratio(kl_cov_ratio, "kl_cov_ratio", "kl_cov")
    check_scope(selection_scope, "kl_cov")
    c = check_input(inp, "kl_cov", aggregation)
    logr = log_ratio(c, log_ratio_clamp)
    base = -c.advantages * torch.exp(logr)
    if selection_scope == "batch":
        s = _selection(inp, ("mean_advantage", "mean_logprob", "cov_threshold"), "kl_cov")
        cov = covariance_proxy(
            c.logprobs,
            c.advantages,
            c.mask,
            mean_logprob=s["mean_logprob"],
            mean_advantage=s["mean_advantage"],
        )
        chosen = c.mask & (cov >= s["cov_threshold"])
    else:
        cov = covariance_proxy(c.logprobs, c.advantages, c.mask)
        chosen = _top_cov(cov, c.mask, _k(rho, c.n_tokens))
    tok = torch.where(chosen, base + ppo_kl_coef * (c.logprobs - c.old_logprobs).abs(), base)
    tok = torch.where(c.mask, tok, torch.zeros((), dtype=tok.dtype))
    pg = aggregate(tok, c.mask, inp, aggregation)
    metrics = {
        "touched_frac": frac(chosen, c.mask),
        "touched_tokens": float(chosen.sum()),
        "effective_tokens": float(c.n_tokens),
        "cov_mean": float(cov.sum()) / max(c.n_tokens, 1),
    }
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)


def prepare_kl_cov(
    inp: PolicyLossInput, *, kl_cov_ratio: float = 2e-3, **_: object
) -> dict[str, torch.Tensor]:
    """Whole-batch statistics for ``kl_cov(selection_scope="batch")``: ``mean_advantage``,
    ``mean_logprob``, ``cov_threshold`` (the k-th largest c over the batch) and ``k``."""
    rho = _check_ratio(kl_cov_ratio, "kl_cov_ratio", "kl_cov")
    with torch.no_grad():
        c = check_input(inp, "kl_cov", "token-mean")
        n = max(c.n_tokens, 1)
        mean_a, mean_l = c.advantages.sum() / n, c.logprobs.detach().sum() / n
        cov = covariance_proxy(
            c.logprobs, c.advantages, c.mask, mean_logprob=mean_l, mean_advantage=mean_a
        )
        k = _k(rho, c.n_tokens)
        vals = cov[c.mask]
        thr = float(torch.topk(vals, k).values[-1]) if k > 0 else float("inf")
    return {
        "mean_advantage": mean_a.detach(),
        "mean_logprob": mean_l.detach(),
        "cov_threshold": torch.tensor(thr, dtype=cov.dtype),
        "k": torch.tensor(k, dtype=torch.int64),
    }
