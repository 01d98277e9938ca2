"""ARES / AEPO, adaptive entropy policy optimisation (Chen et al. 2025, arXiv:2510.08457; code
shawn0728/ARES): count the high-window-entropy (HWE) moments of each response and shape its
advantage by a *hierarchical entropy reward* that depends on the problem's difficulty — fewer
HWE moments on easy problems, more on hard ones — with a per-difficulty KL coefficient.

Per response (no gradient; H = current token entropy, nats):

1. window entropy ``W_t = mean(H_t … H_{t+w−1})`` for windows inside the response;
2. threshold ``τ`` = the median over responses of each response's ``percentile`` quantile of W
   (official: per-sample 98th percentile of the window means, median over the batch, then an EMA
   over steps — here per scope, no EMA); ``n_hwe`` = number of windows with ``W_t ≥ τ``
   (official: only windows after reasoning trigger words such as "wait"; here every position);
3. difficulty from the group's pass rate p (``sequence_info``): easy p ≥ 2/3, medium p ≥ 1/3,
   hard below; per-bucket target ``n*`` = mean n_hwe of the bucket in scope (coefficient 1);
4. entropy score ``s`` = the official ``examples/reward_function/aepo.py`` ``compute_score``
   (Huber penalty / sigmoid bonus with margin, κ, temperature per bucket; cap = α·scale):
   correct-easy is penalised above ``n* + margin``, correct-medium outside ``n* ± margin``,
   correct-hard rewarded near/above the target, wrong answers get a saturating bonus;
5. advantage ``A' = A + coef·(s − mean of s over the response's group members in scope)`` —
   the official adds s to the *reward* before GRPO's group normalisation; a loss sees
   advantages, so the group-centred score is added instead (same sign and baseline; exact
   group means when the whole group is in scope, e.g. ``mini_batches=1``);
6. PPO-clip on A' plus ``β_d · agg(k3 KL(π‖π_ref))`` with β per difficulty (fixed here; the
   official adapts it by dual ascent per bucket) when ``inp.ref_logprobs`` is given.

Needs ``inp.sequence_info`` (``group``, ``correct``, ``pass_rate``), which entrolab's trainer
passes; the TRL plug-in derives them from TRL's rewards (reward > 0 = correct); verl's actor
update receives no group ids or rewards, so ``register()`` refuses ``ares`` with the reason.

Defaults (official first): window 8 (spec CPU check; the official trigger window is 4),
percentile 0.98, α = 0.5 (``alpha_entropy_init_*``), coef 1, β (easy, medium, hard) =
(0.002, 0.001, 0.0005) (the commented initial values of ``TokenLevelAdaptiveKLController``),
PPO-clip 0.2/0.28, dual clip 3.
"""

from __future__ import annotations

import math

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    Checked,
    _masked,
    aggregate,
    check_clip,
    check_input,
    check_scope,
    clip_metrics,
    entropy_input,
    finish,
    kl_penalty,
    masked_mean_f,
    ppo_token_loss,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["ares", "ares_entropy_score", "difficulty_buckets", "prepare_ares", "window_entropy"]

_MARGIN = (0.15, 0.25, 0.35)  # easy, medium, hard
_KAPPA = (2.0, 3.0, 4.0)
_TEMP = (2.0, 2.5, 3.0)
_CAP = (1.0, 1.0, 1.2)


def window_entropy(
    entropy: torch.Tensor, mask: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, valid)`` ``[B, T]``: mean entropy of tokens ``t … t+w−1`` and whether that window
    lies inside the response (``t + w ≤ L_b``)."""
    b, t = entropy.shape
    h = torch.where(mask, entropy.detach().double(), 0.0)
    c = torch.cat([torch.zeros(b, 1, dtype=h.dtype), h.cumsum(-1)], dim=-1)  # [B, T+1]
    pos = torch.arange(t)
    end = (pos + window).clamp(max=t)
    w = (c[:, end] - c[:, pos]) / window
    lengths = mask.sum(-1, keepdim=True)
    valid = mask & (pos[None] + window <= lengths)
    return torch.where(valid, w, 0.0), valid


def difficulty_buckets(pass_rate: torch.Tensor) -> torch.Tensor:
    """0 easy (p ≥ 2/3), 1 medium (p ≥ 1/3), 2 hard, per sequence (int64)."""
    p = pass_rate.double()
    return torch.where(p >= 2 / 3, 0, torch.where(p >= 1 / 3, 1, 2)).long()


def _huber(x: float, kappa: float) -> float:
    x = max(x, 0.0)
    return 0.5 * x * x / kappa if x <= kappa else x - 0.5 * kappa


def _sig(x: float, temp: float) -> float:
    return 1.0 / (1.0 + math.exp(-x / max(temp, 1e-6)))


def ares_entropy_score(n: float, target: float, correct: bool, bucket: int, alpha: float) -> float:
    """The official hierarchical entropy reward of one response (see the module docstring)."""
    delta = n - target
    margin = max(1.0, _MARGIN[bucket] * max(target, 1.0))
    kappa, temp, cap = _KAPPA[bucket], _TEMP[bucket], alpha * _CAP[bucket]
    if bucket in (0, 1):
        if correct:
            dev = max(delta - margin, 0.0) if bucket == 0 else max(abs(delta) - margin, 0.0)
            return -min(cap, _huber(dev, kappa) / (margin + kappa) * cap)
        return _sig(max(delta - margin, 0.0), temp) * cap * (0.6 if bucket == 0 else 0.8)
    if correct:
        if delta >= -margin:
            return _sig(delta + margin, temp) * cap
        return -min(cap, 0.5 * _huber(-delta - margin, kappa) / (margin + kappa) * cap)
    return _sig(max(delta - margin, 0.0), temp) * cap


def _info(inp: PolicyLossInput) -> dict[str, torch.Tensor]:
    info = inp.sequence_info
    if info is None or not {"group", "correct", "pass_rate"} <= set(info):
        raise EntrolabError(
            "ares: needs inp.sequence_info with the group id, correctness and group pass rate of "
            "each sequence (entrolab's trainer and the TRL plug-in pass them; verl does not: use steer, "
            "clip_b or tea_rl there)"
        )
    return info


def _scores(c: Checked, inp: PolicyLossInput, window: int, percentile: float, alpha: float,
            tau: float | None = None, targets: torch.Tensor | None = None):  # fmt: skip
    """Per sequence: n_hwe, bucket, entropy score; plus τ and the bucket targets used."""
    info = _info(inp)
    w, valid = window_entropy(entropy_input(inp, "ares"), c.mask, window)
    if tau is None:
        q = [
            torch.quantile(w[i][valid[i]], percentile) for i in range(w.shape[0]) if valid[i].any()
        ]
        tau = float(torch.stack(q).median()) if q else math.inf
    n_hwe = ((w >= tau) & valid).sum(-1).double()
    bucket = difficulty_buckets(info["pass_rate"])
    if targets is None:
        targets = torch.tensor(
            [float(n_hwe[bucket == d].mean()) if bool((bucket == d).any()) else 0.0
             for d in range(3)], dtype=torch.float64,
        )  # fmt: skip
    score = torch.tensor(
        [ares_entropy_score(float(n_hwe[i]), float(targets[bucket[i]]), bool(info["correct"][i] > 0),
                            int(bucket[i]), alpha) for i in range(len(n_hwe))],
        dtype=torch.float64,
    )  # fmt: skip
    return n_hwe, bucket, score, tau, targets


def _centred(score: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    out = score.clone()
    for g in group.unique():
        sel = group == g
        out[sel] = score[sel] - score[sel].mean()
    return out


def prepare_ares(
    inp: PolicyLossInput, *, window: int = 8, percentile: float = 0.98, alpha: float = 0.5,
    **_: object,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Whole-batch τ, bucket targets and the group-centred score of every row (by ``row``)."""
    with torch.no_grad():
        c = check_input(inp, "ares", "token-mean")
        _, _, score, tau, targets = _scores(c, inp, window, percentile, alpha)
        centred = _centred(score, _info(inp)["group"])
    return {"tau": torch.tensor(tau, dtype=torch.float64), "targets": targets, "centred": centred}


def ares(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    window: int = 8,
    percentile: float = 0.98,
    alpha: float = 0.5,
    entropy_reward_coef: float = 1.0,
    kl_coefs: tuple[float, float, float] = (0.002, 0.001, 0.0005),
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """ARES loss: PPO-clip on difficulty-shaped advantages plus a per-difficulty KL.

    Args:
        inp: micro-batch input; needs ``entropy`` and ``sequence_info``; ``ref_logprobs`` for
            the per-difficulty KL term.
        window, percentile, alpha, entropy_reward_coef: HWE window, threshold quantile, the
            entropy reward's cap α and its weight in the advantage.
        kl_coefs: β per difficulty (easy, medium, hard) of the KL to the reference.
        selection_scope: scope of τ, the targets and the group centring (``"batch"``:
            :func:`prepare_ares`).
        Others as :func:`ppo_clip` (``kl_coef`` is a further uniform KL term).
    Returns:
        :class:`PolicyLossOutput`; metrics add ``hwe_mean``, ``hwe_tau``, ``entropy_score_mean``,
        ``frac_easy``/``frac_hard``, ``ares_kl``.
    """
    if not (isinstance(window, int) and window >= 1 and 0 < percentile <= 1):
        raise EntrolabError("ares: window must be an int >= 1 and percentile in (0, 1]")
    if len(kl_coefs) != 3:
        raise EntrolabError("ares: kl_coefs must give (easy, medium, hard)")
    check_scope(selection_scope, "ares")
    check_clip(clip_low, clip_high, dual_clip, "ares")
    c = check_input(inp, "ares", aggregation)
    if selection_scope == "batch":
        sel = inp.selection
        if sel is None or not {"tau", "targets", "centred"} <= set(sel):
            raise EntrolabError(
                "ares: selection_scope='batch' needs inp.selection from "
                "entrolab.rl.losses.prepare_selection('ares', whole_batch_input, **loss_params)"
            )
        n_hwe, bucket, score, tau, _ = _scores(
            c, inp, window, percentile, alpha, float(sel["tau"]), sel["targets"]
        )
        rows = inp.sequence_info.get("row") if inp.sequence_info else None
        if rows is None:
            raise EntrolabError("ares: batch scope needs sequence_info['row']")
        centred = sel["centred"][rows]
    else:
        n_hwe, bucket, score, tau, _ = _scores(c, inp, window, percentile, alpha)
        centred = _centred(score, _info(inp)["group"])
    shaped = c.advantages + entropy_reward_coef * centred.to(c.advantages.dtype)[:, None]
    c.advantages = torch.where(c.mask, shaped, 0.0)
    tok, flags = ppo_token_loss(
        c, clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )  # fmt: skip
    pg = aggregate(tok, c.mask, inp, aggregation)
    extra = None
    kl_val = 0.0
    if inp.ref_logprobs is not None and any(k != 0 for k in kl_coefs):
        beta = torch.tensor(kl_coefs, dtype=c.logprobs.dtype)[bucket][:, None]
        kl = kl_penalty(c.logprobs, _masked(inp.ref_logprobs, c.mask), "k3")
        kl = torch.where(c.mask, beta * kl, 0.0)
        extra = aggregate(kl, c.mask, inp, aggregation)
        kl_val = float(extra.detach())
    metrics = clip_metrics(flags, c.mask)
    metrics.update(
        hwe_mean=float(n_hwe.mean()) if n_hwe.numel() else 0.0,
        hwe_tau=float(tau),
        entropy_score_mean=float(score.mean()) if score.numel() else 0.0,
        frac_easy=float((bucket == 0).double().mean()) if bucket.numel() else 0.0,
        frac_hard=float((bucket == 2).double().mean()) if bucket.numel() else 0.0,
        ares_kl=kl_val,
        touched_frac=1.0 if entropy_reward_coef != 0 else 0.0,
        effective_tokens=float(c.n_tokens),
        shaped_adv_mean=masked_mean_f(c.advantages, c.mask),
    )
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics,
                  extra=extra)  # fmt: skip
