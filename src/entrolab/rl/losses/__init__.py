"""Policy losses: pure functions ``loss_fn(inp: PolicyLossInput, *, aggregation="token-mean",
**params) -> PolicyLossOutput``, one file per family, registered in :data:`POLICY_LOSSES`
(kind ``"losses"``).

Losses that select tokens (``clip_cov``, ``kl_cov``, ``forking_tokens*``) take
``selection_scope="micro_batch"|"batch"``. For ``"batch"``, call :func:`prepare_selection` once
on the whole optimisation batch (no grad) and pass its result as ``inp.selection`` to every
micro-batch: the selected set then does not depend on the micro-batch size.

Imports only torch, ``entrolab.errors``/``registry``/``signals`` and the pure ``entrolab.rl``
modules (types, aggregation, entropy_law).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from entrolab.registry import Registry
from entrolab.rl.losses.core import kl_penalty
from entrolab.rl.losses.cov import clip_cov, kl_cov, prepare_clip_cov, prepare_kl_cov
from entrolab.rl.losses.entropy_bonus import entropy_bonus
from entrolab.rl.losses.forking import forking_tokens, prepare_forking
from entrolab.rl.losses.ppo import dapo, ppo_clip
from entrolab.rl.losses.reinforce import reinforce
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = [
    "POLICY_LOSSES",
    "clip_cov",
    "dapo",
    "entropy_bonus",
    "forking_tokens",
    "kl_cov",
    "kl_penalty",
    "ppo_clip",
    "prepare_selection",
    "reinforce",
]

#: name → ``loss_fn(inp, *, aggregation="token-mean", **params) -> PolicyLossOutput``.
POLICY_LOSSES: Registry[Callable[..., PolicyLossOutput]] = Registry("losses")

_PPO = "Schulman et al. 2017, PPO, arXiv:1707.06347; dual clip: Ye et al. 2020, arXiv:1912.09729"
_DAPO = "Yu et al. 2025, DAPO, arXiv:2503.14476"
_ENTROPY_MECH = "Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs, arXiv:2505.22617"
_FORKING = "Wang et al. 2025, Beyond the 80/20 Rule, arXiv:2506.01939"
_KL = {"kl_coef": 0.0, "kl_type": "k3"}
_CLIP = {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0, "log_ratio_clamp": 20.0}
_FORK = {
    "rho": 0.2,
    "select": "top",
    "renormalize": True,
    "method": "topk",
    "selection_scope": "micro_batch",
    "clip_low": 0.2,
    "clip_high": 0.28,
    "dual_clip": 3.0,
}
#: TRL's GRPOTrainer with ``top_entropy_quantile=ρ``: quantile threshold, normaliser unchanged,
#: ``epsilon=0.2`` and ``epsilon_high=None`` (= epsilon), no dual clip, no clamp of log r.
_TRL_FORK = {
    "renormalize": False,
    "method": "quantile",
    "clip_high": 0.2,
    "dual_clip": None,
    "log_ratio_clamp": None,
}


def _variant(fn: Callable[..., PolicyLossOutput], name: str, **fixed: Any) -> Callable[..., Any]:
    """``fn`` with some defaults changed (still overridable), named for the registry."""

    @functools.wraps(fn)
    def wrapper(inp: PolicyLossInput, **params: Any) -> PolicyLossOutput:
        return fn(inp, **{**fixed, **params})

    wrapper.__name__ = name
    wrapper.__doc__ = f"{fn.__name__}(inp, {', '.join(f'{k}={v!r}' for k, v in fixed.items())}, …)"
    wrapper.__wrapped_defaults__ = dict(fixed)  # type: ignore[attr-defined]
    return wrapper


for _name, _fn, _summary, _paper, _defaults in [
    (
        "ppo_clip",
        ppo_clip,
        "PPO-clip surrogate, asymmetric bounds, optional dual clip (verl/TRL defaults 0.2/0.2)",
        _PPO,
        {"aggregation": "token-mean", **_CLIP, **_KL},
    ),
    (
        "dapo",
        dapo,
        "PPO-clip with DAPO clip-higher ε_lo=0.2, ε_hi=0.28, token-mean",
        _DAPO,
        {"aggregation": "token-mean", **_CLIP, "clip_high": 0.28, **_KL},
    ),
    (
        "reinforce",
        reinforce,
        "on-policy REINFORCE −A·ℓ (form='ratio': unclipped −A·r)",
        "Williams 1992, REINFORCE, Machine Learning 8:229–256",
        {"aggregation": "token-mean", "form": "logprob", **_KL},
    ),
    (
        "entropy_bonus",
        entropy_bonus,
        "PPO-clip minus β·agg(token entropy); β > 0 raises entropy (naive baseline)",
        "Mnih et al. 2016, A3C, arXiv:1602.01783 (entropy regularisation)",
        {"aggregation": "token-mean", "entropy_coef": 1e-3, **_CLIP, **_KL},
    ),
    (
        "clip_cov",
        clip_cov,
        "PPO-clip with k=max(1,⌊ρN⌋) random high-covariance tokens detached (Clip-Cov)",
        _ENTROPY_MECH,
        {
            "aggregation": "token-mean",
            "clip_cov_ratio": 2e-4,
            "clip_cov_lb": 1.0,
            "clip_cov_ub": 5.0,
            "clip_low": 0.2,
            "clip_high": 0.2,
            "selection_scope": "micro_batch",
            "seed": None,
            **_KL,
        },
    ),
    (
        "kl_cov",
        kl_cov,
        "unclipped −r·A plus β·|log r| on the top-ρ covariance tokens (KL-Cov)",
        _ENTROPY_MECH,
        {
            "aggregation": "token-mean",
            "kl_cov_ratio": 2e-3,
            "ppo_kl_coef": 1.0,
            "selection_scope": "micro_batch",
            **_KL,
        },
    ),
    (
        "forking_tokens",
        forking_tokens,
        "DAPO loss on the top-ρ entropy tokens only, renormalised over them (official 80/20)",
        _FORKING,
        {"aggregation": "token-mean", **_FORK, **_KL},
    ),
    (
        "forking_tokens_trl",
        _variant(forking_tokens, "forking_tokens_trl", **_TRL_FORK),
        "top-ρ entropy tokens, TRL form: quantile threshold, normaliser unchanged, TRL's clip "
        "(ε 0.2/0.2, no dual clip, no log-ratio clamp)",
        _FORKING + "; TRL top_entropy_quantile",
        {"aggregation": "token-mean", **_FORK, **_TRL_FORK, **_KL},
    ),
    (
        "forking_tokens_bottom",
        _variant(forking_tokens, "forking_tokens_bottom", select="bottom"),
        "control arm: train on the complement of the top-ρ entropy tokens (bottom 80%)",
        _FORKING,
        {"aggregation": "token-mean", **_FORK, "select": "bottom", **_KL},
    ),
]:
    POLICY_LOSSES.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_fn)

_PREPARE: dict[str, tuple[Callable[..., dict[str, torch.Tensor]], dict[str, Any]]] = {
    "clip_cov": (prepare_clip_cov, {}),
    "kl_cov": (prepare_kl_cov, {}),
    "forking_tokens": (prepare_forking, {}),
    "forking_tokens_trl": (prepare_forking, {"method": "quantile"}),
    "forking_tokens_bottom": (prepare_forking, {"select": "bottom"}),
}


def prepare_selection(loss_name: str, inp: PolicyLossInput, **params: Any) -> dict[str, Tensor]:
    """Batch-scope selection statistics for ``loss_name``, computed on the whole batch.

    Args:
        loss_name: a :data:`POLICY_LOSSES` name (unknown names raise listing the known ones).
        inp: the whole optimisation batch as one :class:`PolicyLossInput` (current log-probs
            and, for forking tokens, current entropies; computed under no_grad).
        **params: the same keyword arguments the loss will get; unrelated ones are ignored.
    Returns:
        A dict of small tensors to pass as ``inp.selection`` to every micro-batch; ``{}`` for
        losses that select no tokens.
    """
    name = POLICY_LOSSES.entry(loss_name).name
    if name not in _PREPARE:
        return {}
    fn, fixed = _PREPARE[name]
    return fn(inp, **{**fixed, **params})
