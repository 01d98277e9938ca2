"""Clip_B and Clip_V (Wang et al. 2026, "On the Entropy Dynamics in Reinforcement Fine-Tuning of
LLMs", arXiv:2602.03392): drop the negative-advantage tokens whose update would shrink entropy
most, judged by the discriminator ``S = p·(H + log p)`` of the sampled token.

For a logit step ``δz = ε·e_k`` the entropy changes by ``ΔH = −ε·S_k + O(ε²)``
(:func:`discriminator_s`); a policy-gradient step on token k moves entropy by about
``−ηA·(S_k − E_{j∼π}[S_j])``, so penalising (A < 0) a token with S far *below* the batch, or far
below its vocabulary baseline, lowers entropy. Both rules only ever drop A < 0 tokens, under no
gradient, by removing them from the response mask: dropped tokens also leave the token-mean
denominator (the official code zeroes ``response_mask``).

* **Clip_B** (Trinity-RFT ``ClipBAdvantageFn``): with the masked mean ``E[S]`` and population
  std ``σ_S`` over the valid tokens in scope, drop A < 0 tokens with ``S − E[S] < −μ·σ_S``
  (A ≥ 0 tokens are all kept; σ_S < 1e-12 keeps everything).
* **Clip_V** (Trinity-RFT ``ClipVAdvantageFn``): ``D = N − S`` with the per-position vocabulary
  baseline ``N = E_{j∼π}[S_j] = Σ_j p_j²(H + log p_j)`` (:func:`vocab_baseline_s`, needs the
  logits); with σ_D the population std of D, drop tokens with A ≤ 0 and ``D > μ·σ_D``. As the
  official code, zero-advantage tokens follow the negative rule (they carry no policy gradient,
  but leave the denominator). When more than ``max_frac`` of the tokens would be dropped and more
  than ``max(1, ⌊max_frac·N⌋)`` of them have A < 0, only that many A < 0 tokens with the largest
  D are dropped (plus the zero-advantage ones).

Defaults (ours first):

=============  ======================================  ======================================
parameter      paper / README                          official code
=============  ======================================  ======================================
Clip_B μ       2.5                                     2.5 (``__init__`` and ``default_args``)
Clip_V μ       **2.0** here                            2.0 in ``__init__`` but 8.5 in
                                                       ``default_args()`` (what a YAML without
                                                       ``mu`` gets)
max_frac       1e-4                                    1e-4
base loss      PPO-clip 0.2/0.2, no dual clip [U: the  Trinity's configured policy loss
               example's policy-loss settings were
               not read]
=============  ======================================  ======================================

S and H come from the *current* policy (the official code recomputes them before the update).
Scope: ``"micro_batch"`` (statistics over the micro-batch) or ``"batch"`` (the official scope:
:func:`prepare_clip_b` / :func:`prepare_clip_v` over the whole optimisation batch).
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    Checked,
    check_input,
    check_scope,
    checked_ppo,
    clip_metrics,
    entropy_input,
    finish,
    frac,
    masked_mean_f,
    renormalized_aggregate,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = [
    "clip_b",
    "clip_v",
    "discriminator_s",
    "prepare_clip_b",
    "prepare_clip_v",
    "vocab_baseline_s",
]

_NEG_INF = float("-inf")


def discriminator_s(logprobs: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """``S = p·(H + log p)`` per token ``[B, T]`` (p = exp ℓ of the sampled token, H in nats).

    ``∂H/∂z_k = −S_k``: raising the logit of a token with S > 0 lowers the entropy.
    """
    return torch.exp(logprobs) * (entropy + logprobs)


def vocab_baseline_s(logits: torch.Tensor) -> torch.Tensor:
    """``E_{j∼π}[S_j] = Σ_j p_j²·(H + log p_j)`` per position ``[B, T]`` from logits ``[B, T, V]``
    (the logits as sampled, i.e. divided by the temperature). float32 or float64, no gradient."""
    with torch.no_grad():
        x = logits.detach()
        x = x if x.dtype in (torch.float32, torch.float64) else x.float()
        logp = torch.log_softmax(x, dim=-1)
        p = logp.exp()
        h = -(p * logp).sum(-1, keepdim=True)
        return (p * p * (h + logp)).sum(-1)


def _signal(c: Checked, inp: PolicyLossInput, loss: str) -> torch.Tensor:
    """Clip_B: S; Clip_V: D = N − S (0 off-mask, float64)."""
    lp = c.logprobs.detach().double()
    h = torch.where(c.mask, entropy_input(inp, loss).double(), 0.0)
    s = discriminator_s(lp, h)
    if loss == "clip_v":
        if inp.logits is None:
            raise EntrolabError(
                "clip_v: needs inp.logits ([B, T, V], temperature-scaled) for the vocabulary "
                "baseline E_π[S]; set algorithm.pass_logits=true (TRL: pass_logits=True; verl "
                "passes no logits: use clip_b there)"
            )
        s = vocab_baseline_s(inp.logits).double() - s
    return torch.where(c.mask, s, 0.0)


def _stats(
    c: Checked, x: torch.Tensor, loss: str, mu: float, max_frac: float
) -> dict[str, torch.Tensor]:
    """Mean, population std and (Clip_V) the cap threshold over the tokens of ``c``."""
    m = c.mask
    n = max(c.n_tokens, 1)
    mean = x.sum() / n
    std = torch.sqrt((torch.where(m, x - mean, 0.0) ** 2).sum() / n)
    out = {"mean": mean, "std": std, "cap_threshold": torch.tensor(_NEG_INF, dtype=torch.float64)}
    if loss == "clip_v" and float(std) >= 1e-12:
        adv = c.advantages
        keep_neg = x <= mu * std
        n_drop = int((m & (adv <= 0) & ~keep_neg).sum())
        if n_drop / n > max_frac:
            cap = max(int(max_frac * n), 1)
            cand = x[m & (adv < 0) & ~keep_neg]
            if cand.numel() > cap:
                out["cap_threshold"] = torch.topk(cand, cap).values[-1].to(torch.float64)
    return out


def _keep(c: Checked, x: torch.Tensor, s: dict[str, torch.Tensor], loss: str, mu: float):
    """Bool [B, T]: response tokens kept (dropped ones are removed from the mask)."""
    m, adv = c.mask, c.advantages
    std = s["std"].to(x.dtype)
    if float(std) < 1e-12:
        return m.clone()
    if loss == "clip_b":
        drop = (adv < 0) & (x - s["mean"].to(x.dtype) < -(mu * std))
    else:
        over = x > mu * std
        thr = float(s["cap_threshold"])
        drop = (adv <= 0) & over
        if thr > _NEG_INF:  # cap binds: only the top-D negative tokens (and zero-A ones)
            drop = ((adv == 0) & over) | ((adv < 0) & over & (x >= thr))
    return m & ~drop


def _prepare(loss: str, inp: PolicyLossInput, mu: float, max_frac: float) -> dict:
    with torch.no_grad():
        c = check_input(inp, loss, "token-mean")
        x = _signal(c, inp, loss)
        s = _stats(c, x, loss, mu, max_frac)
        s["n_kept"] = torch.tensor(int(_keep(c, x, s, loss, mu).sum()), dtype=torch.int64)
    return s


def prepare_clip_b(inp: PolicyLossInput, *, mu: float = 2.5, **_: object) -> dict:
    """Whole-batch ``mean``/``std`` of S and ``n_kept`` for ``clip_b(selection_scope="batch")``."""
    return _prepare("clip_b", inp, mu, 1.0)


def prepare_clip_v(
    inp: PolicyLossInput, *, mu: float = 2.0, max_frac: float = 1e-4, **_: object
) -> dict:
    """Whole-batch ``mean``/``std`` of D, the cap threshold and ``n_kept`` for
    ``clip_v(selection_scope="batch")``."""
    return _prepare("clip_v", inp, mu, max_frac)


def _run(
    loss: str,
    inp: PolicyLossInput,
    aggregation: str,
    mu: float,
    max_frac: float,
    selection_scope: str,
    clip: dict,
    kl_coef: float,
    kl_type: str,
) -> PolicyLossOutput:
    if not mu > 0:
        raise EntrolabError(f"{loss}: mu must be > 0, got {mu!r}")
    if not 0 < max_frac <= 1:
        raise EntrolabError(f"{loss}: max_frac must be in (0, 1], got {max_frac!r}")
    check_scope(selection_scope, loss)
    c, tok, flags = checked_ppo(inp, loss, aggregation, **clip)
    x = _signal(c, inp, loss)
    n_global = None
    if selection_scope == "batch":
        s = inp.selection
        if s is None or not {"mean", "std", "cap_threshold", "n_kept"} <= set(s):
            raise EntrolabError(
                f"{loss}: selection_scope='batch' needs inp.selection from "
                f"entrolab.rl.losses.prepare_selection({loss!r}, whole_batch_input, "
                "**loss_params), passed to every micro-batch (or use selection_scope='micro_batch')"
            )
        n_global = int(s["n_kept"])
    else:
        s = _stats(c, x, loss, mu, max_frac)
    kept = _keep(c, x, s, loss, mu)
    tok = torch.where(kept, tok, torch.zeros((), dtype=tok.dtype))
    pg = renormalized_aggregate(tok, kept, c, inp, aggregation, n_global)
    metrics = clip_metrics(flags, c.mask)
    dropped = c.mask & ~kept
    adv = c.advantages
    metrics["frac_clipped"] = frac(dropped, c.mask)
    metrics["frac_clipped_pos"] = frac(dropped & (adv > 0), c.mask & (adv > 0))
    metrics["frac_clipped_neg"] = frac(dropped & (adv < 0), c.mask & (adv < 0))
    metrics["touched_frac"] = metrics["frac_clipped"]
    metrics["effective_tokens"] = float(kept.sum())
    key = "S" if loss == "clip_b" else "D"
    metrics[f"{key}_mean"] = masked_mean_f(x, c.mask)
    metrics[f"{key}_std"] = float(s["std"])
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)


def clip_b(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    mu: float = 2.5,
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    log_ratio_clamp: float | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """Clip_B: PPO-clip with A < 0 tokens of unusually low S removed from the mask.

    Args:
        inp: micro-batch input; needs ``entropy`` ``[B, T]``; ``selection`` in batch scope.
        aggregation: a ``LOSS_AGGREGATIONS`` mode; dropped tokens leave its denominator.
        mu: drop A < 0 tokens with ``S − E[S] < −μ·σ_S``.
        selection_scope: scope of E[S], σ_S and the kept count (official: the whole batch).
        clip_low, clip_high, dual_clip, log_ratio_clamp: the PPO-clip base loss.
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``frac_clipped`` (+ ``_pos``/``_neg``),
        ``S_mean``, ``S_std``.
    """
    clip = dict(clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip,
                log_ratio_clamp=log_ratio_clamp)  # fmt: skip
    return _run("clip_b", inp, aggregation, mu, 1.0, selection_scope, clip, kl_coef, kl_type)


def clip_v(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    mu: float = 2.0,
    max_frac: float = 1e-4,
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    log_ratio_clamp: float | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """Clip_V: PPO-clip with A ≤ 0 tokens of large ``D = E_π[S] − S`` removed from the mask.

    Args:
        inp: micro-batch input; needs ``entropy`` and ``logits`` ``[B, T, V]``.
        mu: drop tokens with ``D > μ·σ_D``. max_frac: cap on the dropped fraction (see module).
        Others as :func:`clip_b`.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``frac_clipped`` (+ ``_pos``/``_neg``),
        ``D_mean``, ``D_std``.
    """
    clip = dict(clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip,
                log_ratio_clamp=log_ratio_clamp)  # fmt: skip
    return _run("clip_v", inp, aggregation, mu, max_frac, selection_scope, clip, kl_coef, kl_type)
