"""Shared kernel of the policy losses: input checks, the PPO-clip token loss, the optional KL
to a reference policy, aggregation and the common metrics.

Sign convention (as verl): every loss is the *negative* objective, to be minimised.
All masks and token weights are computed without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.aggregation import LOSS_AGGREGATIONS
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = [
    "KL_TYPES",
    "Checked",
    "check_input",
    "checked_ppo",
    "finish",
    "frac",
    "kl_penalty",
    "ppo_token_loss",
    "renormalized_aggregate",
]

KL_TYPES = ("k1", "k2", "k3")
SCOPES = ("micro_batch", "batch")
_ZERO = torch.zeros(())


@dataclass
class Checked:
    """Validated micro-batch tensors (masked positions set to 0, float32 or float64)."""

    logprobs: torch.Tensor  # [B, T], keeps grad
    old_logprobs: torch.Tensor  # [B, T], detached
    advantages: torch.Tensor  # [B, T], detached
    mask: torch.Tensor  # [B, T] bool
    n_tokens: int  # Σ mask in this micro-batch


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x at response positions, 0 elsewhere (grad-safe: no NaN from padding reaches autograd)."""
    return torch.where(mask, _float(x), _ZERO.to(_float(x).dtype))


def _check_tensor(
    x: object, name: str, shape: tuple[int, ...], mask: torch.Tensor | None, loss: str
) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise EntrolabError(f"{loss}: inp.{name} must be a torch.Tensor of shape [B, T]")
    if tuple(x.shape) != shape:
        raise EntrolabError(
            f"{loss}: inp.{name} has shape {tuple(x.shape)} but inp.logprobs has {shape}; "
            "all per-token inputs must be [B, T] aligned with response_mask"
        )
    if not x.is_floating_point():
        raise EntrolabError(f"{loss}: inp.{name} must be a float tensor, got {x.dtype}")
    if mask is not None:
        bad = mask & ~torch.isfinite(x.detach())
        if bool(bad.any()):
            first = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise EntrolabError(
                f"{loss}: inp.{name} has {int(bad.sum())} NaN/inf values at response positions "
                f"(first at {first}); fix them upstream or mask those tokens out"
            )
    return x


def check_input(inp: PolicyLossInput, loss: str, aggregation: str) -> Checked:
    """Validate ``inp`` and the aggregation name; return masked, detached-where-needed tensors."""
    if not isinstance(inp, PolicyLossInput):
        raise EntrolabError(
            f"{loss}: expected an entrolab.rl.types.PolicyLossInput, got {type(inp).__name__}"
        )
    if aggregation not in LOSS_AGGREGATIONS:
        LOSS_AGGREGATIONS.entry(aggregation)  # raises UnknownNameError listing the known modes
    lp = inp.logprobs
    if not isinstance(lp, torch.Tensor) or lp.dim() != 2:
        raise EntrolabError(
            f"{loss}: inp.logprobs must be a [B, T] tensor (sequences × response tokens), got "
            f"{tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__}"
        )
    shape = tuple(lp.shape)
    m = inp.response_mask
    if not isinstance(m, torch.Tensor) or tuple(m.shape) != shape:
        raise EntrolabError(
            f"{loss}: inp.response_mask must be a [B, T] tensor matching inp.logprobs {shape}"
        )
    if m.dtype != torch.bool:
        if m.is_floating_point() or m.is_complex():
            raise EntrolabError(f"{loss}: response_mask must be bool (True = response token)")
        m = m != 0
    _check_tensor(lp, "logprobs", shape, m, loss)
    for name in ("old_logprobs", "advantages"):
        _check_tensor(getattr(inp, name), name, shape, m, loss)
    for name in ("ref_logprobs", "entropy"):
        if getattr(inp, name) is not None:
            _check_tensor(getattr(inp, name), name, shape, m, loss)
    return Checked(
        logprobs=_masked(lp, m),
        old_logprobs=_masked(inp.old_logprobs.detach(), m),
        advantages=_masked(inp.advantages.detach(), m),
        mask=m,
        n_tokens=int(m.sum()),
    )


def entropy_input(inp: PolicyLossInput, loss: str) -> torch.Tensor:
    """``inp.entropy`` detached ([B, T] token entropy of the current policy in nats), or a clear
    error naming ``loss`` and how to provide it (verl: ``actor.calculate_entropy=True``)."""
    if inp.entropy is None:
        raise EntrolabError(
            f"{loss}: needs inp.entropy ([B, T] token entropy of the current policy in nats, "
            "from the temperature-scaled logits; no gradient needed). verl: set "
            "actor.calculate_entropy=True"
        )
    return inp.entropy.detach()


def mean_entropy_selection(inp: PolicyLossInput, loss: str) -> dict[str, torch.Tensor]:
    """``{"mean_entropy": H̄}``: the token-mean entropy (nats, float64 scalar) over the whole
    optimisation batch ``inp``, for losses that compare it with a target in batch scope."""
    with torch.no_grad():
        c = check_input(inp, loss, "token-mean")
        h = masked_mean_f(entropy_input(inp, loss).double(), c.mask)
    return {"mean_entropy": torch.tensor(h, dtype=torch.float64)}


def check_scope(scope: str, loss: str) -> None:
    if scope not in SCOPES:
        raise EntrolabError(f"{loss}: selection_scope must be one of {SCOPES}, got {scope!r}")


def check_fraction(x: float, name: str, loss: str, *, allow_one: bool = True) -> float:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1
    if not ok or (not allow_one and x == 1):
        raise EntrolabError(f"{loss}: {name} must be a fraction in (0, 1], got {x!r}")
    return float(x)


def frac(flags: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of response tokens where ``flags`` is True (0 for an empty mask)."""
    n = int(mask.sum())
    return float((flags & mask).sum()) / n if n else 0.0


def masked_mean_f(x: torch.Tensor, mask: torch.Tensor) -> float:
    n = int(mask.sum())
    return float(torch.where(mask, x.detach(), _ZERO.to(x.dtype)).sum()) / n if n else 0.0


def log_ratio(c: Checked, clamp: float | None) -> torch.Tensor:
    """``ℓ − ℓ_old`` per token (clamped to ±clamp like verl's vanilla loss when given)."""
    d = c.logprobs - c.old_logprobs
    return d if clamp is None else d.clamp(-clamp, clamp)


def check_clip(clip_low: float, clip_high: float, dual_clip: float | None, loss: str) -> None:
    if not 0 <= clip_low <= 1:
        raise EntrolabError(f"{loss}: clip_low must be in [0, 1] (ratio ≥ 1 − clip_low ≥ 0)")
    if clip_high < 0:
        raise EntrolabError(f"{loss}: clip_high must be ≥ 0, got {clip_high}")
    if dual_clip is not None and not dual_clip > 1:
        raise EntrolabError(f"{loss}: dual_clip (ratio bound c) must be > 1 or None (off)")


def ppo_token_loss(
    c: Checked,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    log_ratio_clamp: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip token loss ``max(−r·A, −clip(r, 1−ε_lo, 1+ε_hi)·A)`` with optional dual clip.

    Dual clip (Ye et al. 2020; verl ``clip_ratio_c``): for A < 0 the loss is additionally capped
    at ``−c·A``. Returns the ``[B, T]`` token loss (0 off-mask) and bool flags: ``low`` (r below
    1−ε_lo with A < 0), ``high`` (r above 1+ε_hi with A > 0), ``dual`` (dual clip active),
    ``ratio`` (the ratio itself, detached). Clipped tokens get zero gradient.
    """
    logr = log_ratio(c, log_ratio_clamp)
    ratio = torch.exp(logr)
    adv = c.advantages
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(l1, l2)
    r = ratio.detach()
    flags = {
        "low": (r < 1.0 - clip_low) & (adv < 0) & c.mask,
        "high": (r > 1.0 + clip_high) & (adv > 0) & c.mask,
        "ratio": r,
    }
    if dual_clip is not None:
        l3 = -adv * dual_clip
        flags["dual"] = (loss.detach() > l3) & (adv < 0) & c.mask
        loss = torch.where(adv < 0, torch.minimum(loss, l3), loss)
    else:
        flags["dual"] = torch.zeros_like(c.mask)
    return torch.where(c.mask, loss, _ZERO.to(loss.dtype)), flags


def checked_ppo(
    inp: PolicyLossInput,
    loss: str,
    aggregation: str,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    log_ratio_clamp: float | None,
) -> tuple[Checked, torch.Tensor, dict[str, torch.Tensor]]:
    """The start of every PPO-clip-based loss: :func:`check_clip` on the clip parameters,
    :func:`check_input` on ``inp``, then :func:`ppo_token_loss`.

    Returns the checked tensors, the ``[B, T]`` token loss (0 off-mask) and the clip flags.
    Raises :class:`EntrolabError` naming ``loss`` on a bad parameter or input.
    """
    check_clip(clip_low, clip_high, dual_clip, loss)
    c = check_input(inp, loss, aggregation)
    tok, flags = ppo_token_loss(
        c,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    return c, tok, flags


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3"
) -> torch.Tensor:
    """Per-token estimator of KL(π_θ ‖ π_ref) from sampled-token log-probs (Schulman 2020).

    With ``d = ℓ_ref − ℓ``: ``k1 = −d``, ``k2 = d²/2``, ``k3 = exp(d) − d − 1`` (≥ 0, unbiased,
    low variance; verl ``low_var_kl`` without its ±10 clamp, TRL ``beta`` term). Shapes ``[B, T]``;
    gradient flows through ``logprobs``.
    """
    d = ref_logprobs.detach() - logprobs
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(d) - d - 1.0
    raise EntrolabError(f"kl_type must be one of {KL_TYPES}, got {kind!r}")


def aggregate(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    inp: PolicyLossInput,
    aggregation: str,
    *,
    global_tokens: int | None = None,
) -> torch.Tensor:
    """Aggregate with the input's global counts (``global_tokens`` overrides ``inp``'s)."""
    return LOSS_AGGREGATIONS.get(aggregation)(
        token_loss,
        mask,
        global_tokens=inp.global_tokens if global_tokens is None else global_tokens,
        global_sequences=inp.global_sequences,
        max_response_length=inp.max_response_length,
    )


def finish(
    pg_loss: torch.Tensor,
    c: Checked,
    inp: PolicyLossInput,
    aggregation: str,
    *,
    kl_coef: float,
    kl_type: str,
    metrics: dict[str, float],
    extra: torch.Tensor | None = None,
) -> PolicyLossOutput:
    """``loss = pg_loss + extra + kl_coef · agg(KL_k(π_θ ‖ π_ref), response_mask)``; metrics.

    The KL term (verl ``use_kl_loss``, TRL ``beta``) is aggregated over *all* response tokens
    with the same mode and global counts as the policy term, whatever tokens the method selected.
    It needs ``inp.ref_logprobs`` when ``kl_coef != 0``.
    """
    loss = pg_loss if extra is None else pg_loss + extra
    out = dict(metrics)
    out["pg_loss"] = float(pg_loss.detach())
    if inp.ref_logprobs is not None or kl_coef != 0:
        if inp.ref_logprobs is None:
            raise EntrolabError(
                f"kl_coef={kl_coef} needs inp.ref_logprobs (reference-policy log-probs [B, T]); "
                "pass them or set kl_coef=0"
            )
        kl = kl_penalty(c.logprobs, _masked(inp.ref_logprobs, c.mask), kl_type)
        kl = torch.where(c.mask, kl, _ZERO.to(kl.dtype))
        out["kl_ref"] = masked_mean_f(kl, c.mask)
        if kl_coef != 0:
            loss = loss + kl_coef * aggregate(kl, c.mask, inp, aggregation)
    logr = (c.logprobs - c.old_logprobs).detach()
    out["approx_kl"] = masked_mean_f(torch.exp(logr) - logr - 1.0, c.mask)  # k3 of KL(old‖θ)
    out["ppo_kl"] = masked_mean_f(-logr, c.mask)  # verl's ppo_kl: mean(ℓ_old − ℓ)
    out["abs_log_ratio"] = masked_mean_f(logr.abs(), c.mask)
    out["response_tokens"] = float(c.n_tokens)
    if inp.entropy is not None:
        out["entropy"] = masked_mean_f(inp.entropy.float(), c.mask)
    out["loss"] = float(loss.detach())
    return PolicyLossOutput(loss=loss, metrics=out)


def renormalized_aggregate(
    tok: torch.Tensor,
    chosen: torch.Tensor,
    c: Checked,
    inp: PolicyLossInput,
    aggregation: str,
    n_selected_global: int | None,
) -> torch.Tensor:
    """Aggregate ``tok`` over the *selected* tokens only (they leave the denominator otherwise).

    token-mean: Σ tok / (selected tokens of the batch): ``n_selected_global`` when known (batch
    scope), else this micro-batch's selected count scaled by its share of the batch's response
    tokens (``c.n_tokens / inp.global_tokens``), which is exact when the selected fraction is the
    same in every micro-batch. Other modes aggregate over ``chosen`` with the input's counts
    (seq-mean-token-mean: over each sequence's selected tokens).
    """
    n_chosen = int(chosen.sum())
    if aggregation != "token-mean":
        return aggregate(tok, chosen, inp, aggregation)
    if n_selected_global is not None:
        return aggregate(
            tok, chosen, inp, aggregation, global_tokens=max(n_selected_global, n_chosen)
        )
    pg = aggregate(tok, chosen, inp, aggregation, global_tokens=n_chosen)
    if inp.global_tokens is not None and c.n_tokens:
        pg = pg * (c.n_tokens / max(int(inp.global_tokens), 1))
    return pg


def clip_metrics(flags: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, float]:
    """clip_frac_low/high (TRL naming), clip_frac (= verl pg_clipfrac), dual_clip_frac."""
    low, high, dual = frac(flags["low"], mask), frac(flags["high"], mask), frac(flags["dual"], mask)
    return {
        "clip_frac_low": low,
        "clip_frac_high": high,
        "clip_frac": low + high,
        "dual_clip_frac": dual,
        "ratio_mean": masked_mean_f(flags["ratio"], mask),
    }
