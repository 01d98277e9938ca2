"""Forking-token training (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv:2506.01939): apply the
policy gradient only to the top-ρ fraction of response tokens by entropy (the "forks").

Base loss: DAPO's PPO-clip (ε_lo = 0.2, ε_hi = 0.28, dual clip c = 3 = verl's default; the
official 80/20 recipe ``run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh`` sets
``clip_ratio_c=10``: pass ``dual_clip=10`` to match it), multiplied by the (integer, gradient-free)
selection mask ``m``. ``forking_tokens_trl`` uses TRL's clip instead (ε 0.2/0.2, no dual clip, no
clamp of log r). Two normalisations, both supported:

* ``renormalize=True`` (default; the official code): the loss is aggregated over ``M ⊙ m``, i.e.
  token-mean over the *selected* tokens only (seq-mean-token-mean: over each sequence's selected
  tokens). In ``"batch"`` scope the denominator is the batch's selected count; in
  ``"micro_batch"`` scope it is the micro-batch's, scaled by its share of the batch's response
  tokens when ``inp.global_tokens`` is given.
* ``renormalize=False`` (TRL ``top_entropy_quantile``): ``per_token_loss *= m`` with the
  normaliser unchanged (all response tokens), so at ρ = 0.2 the step is ≈ 0.2× the official one.

Selection (from ``inp.entropy``, the current policy's token entropy in nats, no gradient needed):
``method="topk"`` (official ``get_global_entropy_top_mask``: exactly ``⌈ρN⌉`` tokens in
micro-batch scope, ties broken by position) or ``method="quantile"`` (TRL: keep H ≥ the
linear-interpolation (1 − ρ) quantile). ``select="bottom"`` trains on the complement (the paper's
bottom-80% control when ρ = 0.2). In ``"batch"`` scope the threshold comes from
:func:`prepare_forking` on the whole batch and tokens with H ≥ it are kept (exactly ⌈ρN⌉ unless
entropies tie at the threshold).
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import (
    aggregate,
    check_fraction,
    check_input,
    check_scope,
    checked_ppo,
    clip_metrics,
    entropy_input,
    finish,
    frac,
    renormalized_aggregate,
)
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput
from entrolab.signals import forking_token_mask

__all__ = ["forking_tokens", "prepare_forking", "top_entropy_count"]

_METHODS = ("topk", "quantile")


def top_entropy_count(n: int, rho: float) -> int:
    """⌈ρ·n⌉ as the official code computes it: ``max(1, int(n·ρ + 0.9999))`` (0 if n = 0)."""
    return min(max(1, int(n * rho + 0.9999)), n) if n > 0 else 0


def _check(rho: float, select: str, method: str) -> float:
    r = check_fraction(rho, "rho", "forking_tokens")
    if select not in ("top", "bottom"):
        raise EntrolabError(f"forking_tokens: select must be 'top' or 'bottom', got {select!r}")
    if method not in _METHODS:
        raise EntrolabError(f"forking_tokens: method must be one of {_METHODS}, got {method!r}")
    return r


def prepare_forking(
    inp: PolicyLossInput,
    *,
    rho: float = 0.2,
    select: str = "top",
    method: str = "topk",
    **_: object,
) -> dict[str, torch.Tensor]:
    """Whole-batch statistics for ``forking_tokens(selection_scope="batch")``.

    Returns ``entropy_threshold`` (top tokens: H ≥ it; "topk": the ⌈ρN⌉-th largest entropy,
    "quantile": the (1 − ρ) quantile) and ``n_selected`` (tokens the loss will train on in the
    whole batch, after ``select``), used as the renormalised token-mean denominator.
    """
    rho = _check(rho, select, method)
    with torch.no_grad():
        c = check_input(inp, "forking_tokens", "token-mean")
        h = entropy_input(inp, "forking_tokens")[c.mask].to(torch.float64)
        if h.numel() == 0:
            thr = float("inf")
        elif method == "topk":
            thr = float(torch.topk(h, top_entropy_count(h.numel(), rho)).values[-1])
        else:
            thr = float(torch.quantile(h, 1.0 - rho))
        n_top = int((h >= thr).sum())
        n_sel = n_top if select == "top" else h.numel() - n_top
    return {
        "entropy_threshold": torch.tensor(thr, dtype=torch.float64),
        "n_selected": torch.tensor(n_sel, dtype=torch.int64),
    }


def forking_tokens(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    rho: float = 0.2,
    select: str = "top",
    renormalize: bool = True,
    method: str = "topk",
    selection_scope: str = "micro_batch",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """PPO-clip loss restricted to the top-ρ entropy tokens (or their complement).

    Args:
        inp: micro-batch input; needs ``entropy`` ``[B, T]``; ``selection`` in batch scope.
        aggregation: a ``LOSS_AGGREGATIONS`` mode (official: token-mean).
        rho: fraction of high-entropy tokens ("forks"), in (0, 1].
        select: ``"top"`` (train on forks) or ``"bottom"`` (train on the rest: the control).
        renormalize: True = official (normalise over selected tokens), False = TRL.
        method: ``"topk"`` (official) or ``"quantile"`` (TRL).
        selection_scope: ``"micro_batch"`` (official and TRL) or ``"batch"``.
        clip_low, clip_high, dual_clip, log_ratio_clamp: as :func:`ppo_clip`.
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty (over all response tokens).
    Returns:
        :class:`PolicyLossOutput`; ``touched_frac`` = selected fraction, ``effective_tokens`` =
        selected tokens, ``selected_entropy`` = their mean entropy.
    """
    rho = _check(rho, select, method)
    check_scope(selection_scope, "forking_tokens")
    c, tok, flags = checked_ppo(
        inp,
        "forking_tokens",
        aggregation,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    h = entropy_input(inp, "forking_tokens")
    n_sel_global: int | None = None
    if selection_scope == "batch":
        sel = inp.selection
        if sel is None or "entropy_threshold" not in sel or "n_selected" not in sel:
            raise EntrolabError(
                "forking_tokens: selection_scope='batch' needs inp.selection from "
                "entrolab.rl.losses.prepare_selection('forking_tokens', whole_batch_input, "
                "**loss_params), passed to every micro-batch (or use selection_scope='micro_batch')"
            )
        top = c.mask & (h.to(torch.float64) >= sel["entropy_threshold"])
        n_sel_global = int(sel["n_selected"])
    else:
        top = forking_token_mask(h, c.mask, rho=rho, scope="batch", method=method)
    chosen = top if select == "top" else c.mask & ~top
    tok = torch.where(chosen, tok, torch.zeros((), dtype=tok.dtype))
    n_chosen = int(chosen.sum())
    if not renormalize:
        pg = aggregate(tok, c.mask, inp, aggregation)
    else:
        pg = renormalized_aggregate(tok, chosen, c, inp, aggregation, n_sel_global)
    metrics = clip_metrics(flags, c.mask)
    metrics["touched_frac"] = frac(chosen, c.mask)
    metrics["effective_tokens"] = float(n_chosen)
    metrics["selected_entropy"] = (
        float(torch.where(chosen, h.float(), 0.0).sum()) / n_chosen if n_chosen else 0.0
    )
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)
