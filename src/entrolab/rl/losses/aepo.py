"""Arbitrary-Entropy Policy Optimization (AEPO; Wang et al. 2025, arXiv:2510.08141; code
597358816/AEPO): replace the entropy bonus by a REINFORCE term on samples drawn at a temperature
chosen by whether the policy's entropy is below or above a target H*::

    ∇J = ∇J_GRPO + α · E_{o∼π^T}[∇log π_θ(o|q) · R⁺(q, o)],   T = T_high if H < H* else T_low

Sampling at T_high > 1 and reinforcing the good samples raises entropy; T_low < 1 lowers it, so
entropy settles near H* without biasing the objective the way a bonus does.

The official trainer (``ray_trainer.py``, ``alg == "AEPO"``) re-generates a quarter of the
prompts at temperature T, keeps samples with GRPO advantage > 0.05, sets their advantage to 1
and splices N of them (``reinforce_sample_num``; N/2 above the target) over the batch; α is
implicit. This loss keeps everything inside one policy loss (no extra generation, so it works in
TRL and verl): the REINFORCE term is estimated on the step's own samples, reweighted per token
from π_old to π^T (importance weight ``w = π^T(y)/π_old(y)``, no gradient, clamped to
``[0, weight_clip]``), on the tokens of sequences with ``A > adv_threshold`` with advantage 1::

    L = L_ppo + α_T · agg(−w · 1[A > adv_threshold] · ℓ)

``log π^T(y) = (ℓ_old + lse(z))/T − lse(z/T)`` from the logits when ``inp.logits`` is given
(``weight_form="exact"``); without logits (TRL, verl) the first-order form in 1/T − 1 is used:
``log w ≈ (1/T − 1)(ℓ_old + H)`` (since ``d/dβ log Σ π^β = −H`` at β = 1). H is the mean token
entropy of the scope (the micro-batch, or the whole batch in batch scope); the official code uses
the previous step's logged entropy. ``α_T`` = ``reinforce_coef`` below the target and half of
it above (N vs N/2 in the official code).

Defaults (ours first): H* 0.5 (README's best 0.75; the CPU check uses 0.3), T_high 1.2,
T_low 0.8, advantage threshold 0.05 (all as the official code); α = 0.1 [ours: N/batch in the
official recipe ≈ 60/4096]; base loss PPO-clip 0.2/0.28, dual clip 3 (EasyR1-style [U]).
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    Checked,
    aggregate,
    check_scope,
    checked_ppo,
    clip_metrics,
    entropy_input,
    finish,
    frac,
    masked_mean_f,
    mean_entropy_selection,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["aepo_arbitrary", "prepare_aepo", "tempered_log_weight"]

_FORMS = ("auto", "exact", "first_order")


def tempered_log_weight(
    old_logprobs: torch.Tensor,
    temperature: float,
    *,
    logits: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log π^T(y) − log π(y)`` per token ``[B, T]`` (no gradient).

    With ``logits`` ``[B, T, V]`` (of π, as sampled): exact, ``(ℓ + lse z)/T − lse(z/T) − ℓ``.
    Otherwise from ``entropy`` (nats): ``(1/T − 1)·(ℓ + H)``, exact to first order in 1/T − 1.
    """
    with torch.no_grad():
        lp = old_logprobs.detach()
        if logits is not None:
            z = logits.detach().to(lp.dtype)
            lse = torch.logsumexp(z, -1)
            return (lp + lse) / temperature - torch.logsumexp(z / temperature, -1) - lp
        if entropy is None:
            raise EntrolabError("tempered_log_weight needs the logits or the token entropy")
        return (1.0 / temperature - 1.0) * (lp + entropy.detach().to(lp.dtype))


def prepare_aepo(inp: PolicyLossInput, **_: object) -> dict[str, torch.Tensor]:
    """Whole-batch mean token entropy for ``aepo_arbitrary(selection_scope="batch")``."""
    return mean_entropy_selection(inp, "aepo_arbitrary")


def _weights(c: Checked, inp: PolicyLossInput, temp: float, form: str, clip: float):
    use_logits = form == "exact" or (form == "auto" and inp.logits is not None)
    if use_logits and inp.logits is None:
        raise EntrolabError(
            "aepo_arbitrary: weight_form='exact' needs inp.logits ([B, T, V]); set "
            "algorithm.pass_logits=true or weight_form='first_order'"
        )
    logw = tempered_log_weight(
        c.old_logprobs,
        temp,
        logits=inp.logits if use_logits else None,
        entropy=None
        if use_logits
        else torch.where(c.mask, entropy_input(inp, "aepo_arbitrary"), 0.0),
    )
    w = torch.exp(torch.where(c.mask, logw, 0.0)).clamp(0.0, clip)
    return torch.where(c.mask, w, 0.0), "exact" if use_logits else "first_order"


def aepo_arbitrary(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    target_entropy: float = 0.5,
    temp_high: float = 1.2,
    temp_low: float = 0.8,
    reinforce_coef: float = 0.1,
    adv_threshold: float = 0.05,
    weight_form: str = "auto",
    weight_clip: float = 5.0,
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """AEPO loss: PPO-clip plus a temperature-reweighted REINFORCE term steering entropy to H*.

    Args:
        inp: micro-batch input; needs ``entropy``; ``logits`` for the exact weights.
        aggregation: mode of both terms.
        target_entropy: H* (nats, mean token entropy). temp_high / temp_low: T below / above H*.
        reinforce_coef: α below the target (α/2 above). adv_threshold: sequences with A above it
            are the REINFORCE samples (advantage 1). weight_form: ``"auto"`` (exact if logits),
            ``"exact"``, ``"first_order"``. weight_clip: upper clamp of the importance weight.
        selection_scope: scope of the entropy compared with H* (``"batch"``: :func:`prepare_aepo`).
        clip_low, clip_high, dual_clip, log_ratio_clamp: the PPO-clip GRPO term.
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``aepo_entropy`` (H compared with H*),
        ``aepo_temperature``, ``aepo_coef``, ``reinforce_frac`` (tokens in the REINFORCE term),
        ``is_weight_mean`` (over them), ``reinforce_term``.
    """
    if weight_form not in _FORMS:
        raise EntrolabError(f"aepo_arbitrary: weight_form must be one of {_FORMS}")
    if not (temp_high > 0 and temp_low > 0 and weight_clip > 0 and target_entropy >= 0):
        raise EntrolabError(
            "aepo_arbitrary: temperatures and weight_clip must be > 0, target_entropy >= 0"
        )
    check_scope(selection_scope, "aepo_arbitrary")
    c, tok, flags = checked_ppo(
        inp, "aepo_arbitrary", aggregation, clip_low=clip_low, clip_high=clip_high,
        dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp,
    )  # fmt: skip
    if selection_scope == "batch":
        if inp.selection is None or "mean_entropy" not in inp.selection:
            raise EntrolabError(
                "aepo_arbitrary: selection_scope='batch' needs inp.selection from "
                "entrolab.rl.losses.prepare_selection('aepo_arbitrary', whole_batch_input)"
            )
        h = float(inp.selection["mean_entropy"])
    else:
        h = masked_mean_f(entropy_input(inp, "aepo_arbitrary").double(), c.mask)
    below = h < target_entropy
    temp = temp_high if below else temp_low
    coef = reinforce_coef if below else reinforce_coef / 2
    w, form = _weights(c, inp, temp, weight_form, weight_clip)
    pos = c.mask & (c.advantages > adv_threshold)
    rf_tok = torch.where(pos, -(w.to(c.logprobs.dtype) * c.logprobs), 0.0)
    pg = aggregate(tok, c.mask, inp, aggregation)
    rf = aggregate(rf_tok, c.mask, inp, aggregation)
    metrics = clip_metrics(flags, c.mask)
    metrics.update(
        aepo_entropy=h,
        aepo_temperature=temp,
        aepo_coef=coef,
        aepo_exact_weights=1.0 if form == "exact" else 0.0,
        reinforce_frac=frac(pos, c.mask),
        is_weight_mean=masked_mean_f(w, pos),
        reinforce_term=float(rf.detach()),
        touched_frac=frac(pos, c.mask) if coef != 0 else 0.0,
        effective_tokens=float(c.n_tokens),
    )
    return finish(
        pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics,
        extra=coef * rf,
    )  # fmt: skip
