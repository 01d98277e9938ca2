"""REINFORCE / on-policy policy gradient (no clipping).

Two forms of the same on-policy gradient ``−A·∇ℓ``:

* ``form="logprob"`` (default; verl ``gpg`` loss, textbook REINFORCE): ``L = −A·ℓ``.
* ``form="ratio"``: the unclipped importance-weighted surrogate ``L = −A·exp(ℓ − ℓ_old)``;
  its gradient is ``−A·r·∇ℓ``, equal to the ``logprob`` form when on-policy (r = 1), and its value
  is ``−A`` there. Use it for several updates per batch without clipping.
"""

from __future__ import annotations

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.losses.core import aggregate, check_input, finish, log_ratio
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = ["reinforce"]

_ZERO = torch.zeros(())


def reinforce(
    inp: PolicyLossInput,
    *,
    aggregation: str = "token-mean",
    form: str = "logprob",
    log_ratio_clamp: float | None = 20.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
) -> PolicyLossOutput:
    """REINFORCE loss ``−A·ℓ`` (or ``−A·r``), aggregated over response tokens.

    Args:
        inp: micro-batch input (``[B, T]`` tensors; ``old_logprobs`` only used by ``ratio``
            and the KL metrics).
        aggregation: a ``LOSS_AGGREGATIONS`` mode.
        form: ``"logprob"`` or ``"ratio"`` (see the module docstring).
        log_ratio_clamp: clamp of ``ℓ − ℓ_old`` before exp in the ``ratio`` form.
        kl_coef, kl_type: optional KL(π_θ ‖ π_ref) penalty.
    Returns:
        :class:`PolicyLossOutput`; ``touched_frac`` = 0 (no token is clipped or selected).
    """
    if form not in ("logprob", "ratio"):
        raise EntrolabError(f"reinforce: form must be 'logprob' or 'ratio', got {form!r}")
    c = check_input(inp, "reinforce", aggregation)
    if form == "logprob":
        tok = -c.advantages * c.logprobs
    else:
        tok = -c.advantages * torch.exp(log_ratio(c, log_ratio_clamp))
    tok = torch.where(c.mask, tok, _ZERO.to(tok.dtype))
    pg = aggregate(tok, c.mask, inp, aggregation)
    metrics = {"touched_frac": 0.0, "effective_tokens": float(c.n_tokens)}
    return finish(pg, c, inp, aggregation, kl_coef=kl_coef, kl_type=kl_type, metrics=metrics)
