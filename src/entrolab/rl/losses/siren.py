"""SIREN: selective entropy regularisation ("Rethinking Entropy Regularization in Large Reasoning
Models", arXiv:2509.25133; code Linn3a/siren). A naive entropy bonus explodes because it acts on
the whole vocabulary at every position; SIREN regularises only (a) the top-p nucleus of each
distribution and (b) the peak-entropy positions of each response, and replaces the bonus with a
squared deviation from an anchor.

* Top-p entropy (:func:`top_p_entropy`, gradient flows): from the top-k logits, keep the prefix
  whose cumulative probability is still **below** p (the official ``efficient_top_p_sampling``
  cuts at ``searchsorted(cumsum, p)``, so the token that crosses p is excluded and a position
  whose top token alone has probability ≥ p gets entropy 0), renormalise on it and take
  ``H^p = −Σ p̃ log(p̃ + 1e-12)``.
* Peak mask (no gradient): per **sequence**, ``H^p > nanquantile_t(H^p, q)`` over its response
  tokens (linear interpolation, q = 0.8: about the top 20% of each response).
* Anchor ``H_anc``: the masked entropy of the first step, then a constant.
* ``L = L_pg + β·(H̄^p_masked − H_anc)²``, H̄ aggregated with ``entropy_aggregation``
  (seq-mean-token-mean in the official code).

Defaults (ours = exp_scripts/siren.sh; code defaults where they differ):

==================  ================================  =====================================
parameter           recipe                             code default
==================  ================================  =====================================
entropy_coef β      0.005                              ``actor.entropy_coeff``
quantile q          0.8 (``mask_ratio``)               0.8
top_p / top_k       0.8 / 10000                        0.8 / 10000 (function default 0.95 / 15000)
clip                0.28 / 0.28 (``clip_ratio``)       verl's; dual clip c = 3; no log-r clamp
aggregation         seq-mean-token-sum-norm (old verl: Σ / (B·T), entrolab's form with C = T)
==================  ================================  =====================================

Departures: the official code's ``mask_ratio_upper`` is accepted by ``mask_by_quantile`` but
never used (no upper cut), so there is none here; a response whose entropies are all equal gets
no peak token (the official SMTM would divide 0 by 0). ``top_p=1`` uses ``inp.entropy`` (full
vocabulary, with gradient) and needs no logits, so SIREN-without-top-p runs in TRL and verl.

Anchor and scope: ``entropy_anchor=None`` (the first step) makes the regulariser
``(H̄ − sg(H̄))²`` = 0 with zero gradient, as the official first step (anchor = the same batch's
entropy); the metric ``siren_entropy`` is the value to use as anchor from then on — the trainer
does this (see :data:`ANCHOR`). ``selection_scope="micro_batch"`` is the official form (each
micro-batch's own H̄, its share of the loss); ``"batch"`` uses ``prepare_siren``'s whole-batch H̄ so
that the gradient ``2β(H̄_batch − H_anc)·∇H̄_batch`` is exact whatever the micro-batch size.
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    Checked,
    aggregate,
    check_input,
    check_scope,
    checked_ppo,
    clip_metrics,
    finish,
    frac,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["ANCHOR", "peak_entropy_mask", "prepare_siren", "siren", "top_p_entropy"]

#: (loss parameter, metric) pair: a trainer sets ``entropy_anchor`` from the first step's metric.
ANCHOR = ("entropy_anchor", "siren_entropy")


def top_p_entropy(logits: torch.Tensor, top_p: float = 0.8, top_k: int = 10000) -> torch.Tensor:
    """Entropy of the renormalised nucleus per position (nats), ``[..., V]`` → ``[...]``; keeps
    the gradient. Nucleus: among the ``min(top_k, V)`` largest logits, the prefix whose inclusive
    cumulative probability is < ``top_p`` (see the module docstring; an empty nucleus gives 0)."""
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    probs = torch.softmax(x, dim=-1)
    k = min(int(top_k), x.shape[-1])
    top_idx = torch.topk(x.detach(), k=k, dim=-1).indices
    cum = torch.cumsum(torch.gather(probs.detach(), -1, top_idx), dim=-1)
    cutoff = torch.searchsorted(cum, torch.full_like(cum[..., :1], top_p))  # [..., 1]
    keep_sorted = torch.arange(k, device=x.device) < cutoff
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top_idx, keep_sorted)
    pd = probs * keep.to(probs.dtype)
    pd = pd / (pd.sum(-1, keepdim=True) + 1e-12)
    return -(pd * torch.log(pd + 1e-12)).sum(-1)


def peak_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, q: float = 0.8) -> torch.Tensor:
    """Bool ``[B, T]``: ``entropy > nanquantile(entropy_i, q)`` per sequence over ``mask``."""
    h = entropy.detach().float().masked_fill(~mask, float("nan"))
    thr = torch.nanquantile(h, q, dim=-1, keepdim=True)
    return mask & (entropy.detach() > thr.to(entropy.dtype))


def _entropy(c: Checked, inp: PolicyLossInput, top_p: float, top_k: int) -> torch.Tensor:
    if top_p < 1:
        if inp.logits is None:
            raise EntrolabError(
                f"siren: top_p={top_p} needs inp.logits ([B, T, V], temperature-scaled, with "
                "gradient): set algorithm.pass_logits=true; TRL and verl pass no logits, so "
                "use top_p=1.0 there (peak mask and anchor on the full-vocabulary entropy)"
            )
        if tuple(inp.logits.shape[:2]) != tuple(c.mask.shape):
            raise EntrolabError(f"siren: inp.logits must be [B, T, V] aligned with {c.mask.shape}")
        return top_p_entropy(inp.logits, top_p, top_k)
    from entrolab.rl.losses.entropy_bonus import entropy_for_grad

    return entropy_for_grad(inp, "siren")


def _check(q: float, top_p: float, top_k: int) -> None:
    if not 0 < q < 1:
        raise EntrolabError(f"siren: quantile q must be in (0, 1), got {q!r}")
    if not 0 < top_p <= 1:
        raise EntrolabError(f"siren: top_p must be in (0, 1], got {top_p!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise EntrolabError(f"siren: top_k must be an int >= 1, got {top_k!r}")


def prepare_siren(
    inp: PolicyLossInput,
    *,
    quantile: float = 0.8,
    top_p: float = 0.8,
    top_k: int = 10000,
    entropy_aggregation: str = "seq-mean-token-mean",
    **_: object,
) -> dict[str, torch.Tensor]:
    """Whole-batch masked entropy ``H̄`` (no grad) for ``siren(selection_scope="batch")``."""
    _check(quantile, top_p, top_k)
    with torch.no_grad():
        c = check_input(inp, "siren", entropy_aggregation)
        h = torch.where(c.mask, _entropy(c, inp, top_p, top_k).to(c.logprobs.dtype), 0.0)
        peak = peak_entropy_mask(h, c.mask, quantile)
        hbar = aggregate(h, peak, inp, entropy_aggregation, global_tokens=int(peak.sum()))
    return {
        "masked_entropy": hbar.detach().to(torch.float64),
        "n_peak": torch.tensor(int(peak.sum()), dtype=torch.int64),
    }


def siren(
    inp: PolicyLossInput,
    *,
    aggregation: str = "seq-mean-token-sum-norm",
    entropy_coef: float = 0.005,
    entropy_anchor: float | None = None,
    quantile: float = 0.8,
    top_p: float = 0.8,
    top_k: int = 10000,
    entropy_aggregation: str = "seq-mean-token-mean",
    selection_scope: str = "micro_batch",
    clip_low: float = 0.28,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """SIREN loss: PPO-clip plus ``β·(H̄^p_peak − H_anc)²``.

    Args:
        inp: micro-batch input; ``logits`` ``[B, T, V]`` with gradient for ``top_p < 1``, else
            ``entropy`` with gradient; ``selection`` from :func:`prepare_siren` in batch scope.
        aggregation: mode of the policy term (recipe: seq-mean-token-sum-norm).
        entropy_coef: β. entropy_anchor: H_anc (None: this step's value, i.e. no regularisation).
        quantile: q of the per-sequence peak mask. top_p, top_k: the nucleus.
        entropy_aggregation: mode of H̄ over the peak tokens (official: seq-mean-token-mean).
        selection_scope: ``"micro_batch"`` (official) or ``"batch"`` (exact whole-batch H̄).
        clip_low, clip_high, dual_clip, log_ratio_clamp: the PPO-clip policy term.
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; metrics add ``siren_entropy`` (H̄ of the scope, the anchor
        candidate), ``siren_reg`` (the squared deviation), ``touched_frac`` (peak fraction).
    """
    _check(quantile, top_p, top_k)
    check_scope(selection_scope, "siren")
    c, tok, flags = checked_ppo(
        inp, "siren", aggregation, clip_low=clip_low, clip_high=clip_high,
        dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp,
    )  # fmt: skip
    h = _entropy(c, inp, top_p, top_k)
    h = torch.where(c.mask, h.to(c.logprobs.dtype), torch.zeros((), dtype=c.logprobs.dtype))
    peak = peak_entropy_mask(h, c.mask, quantile)
    pg = aggregate(tok, c.mask, inp, aggregation)
    if selection_scope == "batch":
        if inp.selection is None or not {"masked_entropy", "n_peak"} <= set(inp.selection):
            raise EntrolabError(
                "siren: selection_scope='batch' needs inp.selection from "
                "entrolab.rl.losses.prepare_selection('siren', whole_batch_input, **loss_params) "
                "(or use selection_scope='micro_batch')"
            )
        # this micro-batch's share of the batch H̄ (same global counts as the batch's aggregate)
        n_peak = max(int(inp.selection["n_peak"]), int(peak.sum()))
        share = aggregate(h, peak, inp, entropy_aggregation, global_tokens=n_peak)
        hbar_all = inp.selection["masked_entropy"].to(h.dtype)
        anchor = hbar_all.detach() if entropy_anchor is None else _const(entropy_anchor, h)
        dev = (hbar_all - anchor.to(h.dtype)).detach()
        # value: β·dev² spread over micro-batches by their share; gradient: 2β·dev·∇share
        reg = dev * dev * _share_weight(inp, c) + 2 * dev * (share - share.detach())
        value = float(dev * dev)
        hbar_metric = float(hbar_all)
    else:
        hbar = aggregate(h, peak, _local(inp), entropy_aggregation)
        anchor = hbar.detach() if entropy_anchor is None else _const(entropy_anchor, h)
        reg = (hbar - anchor.to(h.dtype)) ** 2 * _share_weight(inp, c)
        value = float(((hbar - anchor.to(h.dtype)) ** 2).detach())
        hbar_metric = float(hbar.detach())
    metrics = clip_metrics(flags, c.mask)
    metrics["siren_entropy"] = hbar_metric
    metrics["siren_reg"] = value
    metrics["touched_frac"] = frac(peak, c.mask) if entropy_coef != 0 else 0.0
    metrics["effective_tokens"] = float(c.n_tokens)
    return finish(
        pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics,
        extra=entropy_coef * reg,
    )  # fmt: skip


def _const(x: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(float(x), dtype=like.dtype, device=like.device)


def _local(inp: PolicyLossInput) -> PolicyLossInput:
    """``inp`` without global counts: the micro-batch's own aggregate (the official H̄)."""
    from dataclasses import replace

    return replace(inp, global_tokens=None, global_sequences=None)


def _share_weight(inp: PolicyLossInput, c: Checked) -> float:
    """This micro-batch's share of the batch (sequences), 1 without global counts: the official
    loss divides each micro-batch's loss by the number of gradient-accumulation steps."""
    if inp.global_sequences is None:
        return 1.0
    return c.mask.shape[0] / max(int(inp.global_sequences), 1)


siren.__entrolab_anchor__ = ANCHOR  # type: ignore[attr-defined]
