"""Policy losses: pure functions ``loss_fn(inp: PolicyLossInput, *, aggregation="token-mean",
**params) -> PolicyLossOutput``, one file per family, registered in :data:`POLICY_LOSSES`
(kind ``"losses"``).

Losses that select or weight tokens from batch statistics (``clip_cov``, ``kl_cov``,
``forking_tokens*``, ``steer``, ``siren``, ``clip_b``, ``clip_v``, ``aepo_arbitrary``, ``tea_rl``,
``ares``) take
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
from entrolab.rl.losses.aepo import aepo_arbitrary, prepare_aepo
from entrolab.rl.losses.ares import ares, prepare_ares
from entrolab.rl.losses.core import kl_penalty
from entrolab.rl.losses.cov import clip_cov, kl_cov, prepare_clip_cov, prepare_kl_cov
from entrolab.rl.losses.discriminator import clip_b, clip_v, prepare_clip_b, prepare_clip_v
from entrolab.rl.losses.entropy_bonus import entropy_bonus
from entrolab.rl.losses.explore import aepo_agentic, echo_clip
from entrolab.rl.losses.forking import forking_tokens, prepare_forking
from entrolab.rl.losses.ppo import dapo, ppo_clip
from entrolab.rl.losses.reinforce import reinforce
from entrolab.rl.losses.siren import prepare_siren, siren
from entrolab.rl.losses.steer import prepare_steer, steer
from entrolab.rl.losses.tea_rl import prepare_tea_rl, tea_rl
from entrolab.rl.types import PolicyLossInput, PolicyLossOutput

__all__ = [
    "POLICY_LOSSES",
    "aepo_agentic",
    "aepo_arbitrary",
    "ares",
    "clip_b",
    "clip_cov",
    "clip_v",
    "dapo",
    "echo_clip",
    "entropy_bonus",
    "forking_tokens",
    "kl_cov",
    "kl_penalty",
    "ppo_clip",
    "prepare_selection",
    "reinforce",
    "siren",
    "steer",
    "tea_rl",
]

#: name → ``loss_fn(inp, *, aggregation="token-mean", **params) -> PolicyLossOutput``.
POLICY_LOSSES: Registry[Callable[..., PolicyLossOutput]] = Registry("losses")

_PPO = "Schulman et al. 2017, PPO, arXiv:1707.06347; dual clip: Ye et al. 2020, arXiv:1912.09729"
_DAPO = "Yu et al. 2025, DAPO, arXiv:2503.14476"
_ENTROPY_MECH = "Cui et al. 2025, The Entropy Mechanism of RL for Reasoning LMs, arXiv:2505.22617"
_FORKING = "Wang et al. 2025, Beyond the 80/20 Rule, arXiv:2506.01939"
_STEER = "Hao et al. 2025, Rethinking Entropy Interventions in RLVR (STEER), arXiv:2510.10150"
_SIREN = "Rethinking Entropy Regularization in Large Reasoning Models (SIREN), arXiv:2509.25133"
_RFT_DYN = (
    "Wang et al. 2026, On the Entropy Dynamics in Reinforcement Fine-Tuning, arXiv:2602.03392"
)
_AEPO = "Wang et al. 2025, Arbitrary Entropy Policy Optimization (AEPO), arXiv:2510.08141"
_ARES = "Chen et al. 2025, ARES: adaptive entropy policy optimization, arXiv:2510.08457"
_LIGHT_IF = "Wang et al. 2025, Light-IF (Entropy-SFT + TEA-RL), arXiv:2508.03178"
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
#: PPO-clip with TRL's/Trinity's plain settings: ε 0.2/0.2, no dual clip, no clamp of log r.
_NO_CLIP_EXTRAS = {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None, "log_ratio_clamp": None}
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
    (
        "steer",
        steer,
        "dual-clip PPO × entropy-change weights from |Ω| = |A/π_old·p(1−p)(log p + H)| (STEER)",
        _STEER,
        {
            "aggregation": "token-mean",
            "mapping": "linear",
            "weight_min": 0.8,
            "weight_max": 1.2,
            "selection_scope": "micro_batch",
            **_CLIP,
            "clip_high": 0.28,
            "dual_clip": 10.0,
            **_KL,
        },
    ),
    (
        "siren",
        siren,
        "PPO-clip + β·(top-p entropy of each response's peak-entropy tokens − anchor)² (SIREN)",
        _SIREN,
        {
            "aggregation": "seq-mean-token-sum-norm",
            "entropy_coef": 0.005,
            "entropy_anchor": None,
            "quantile": 0.8,
            "top_p": 0.8,
            "top_k": 10000,
            "entropy_aggregation": "seq-mean-token-mean",
            "selection_scope": "micro_batch",
            "clip_low": 0.28,
            "clip_high": 0.28,
            "dual_clip": 3.0,
            "log_ratio_clamp": None,
            **_KL,
        },
    ),
    (
        "clip_b",
        clip_b,
        "PPO-clip without the A<0 tokens whose S = p(H + log p) is < E[S] − μ·σ_S (Clip_B)",
        _RFT_DYN + "; Trinity-RFT ClipBAdvantageFn",
        {
            "aggregation": "token-mean",
            "mu": 2.5,
            "selection_scope": "micro_batch",
            **_NO_CLIP_EXTRAS,
            **_KL,
        },
    ),
    (
        "clip_v",
        clip_v,
        "PPO-clip without the A≤0 tokens whose D = E_π[S] − S is > μ·σ_D, capped (Clip_V)",
        _RFT_DYN + "; Trinity-RFT ClipVAdvantageFn",
        {
            "aggregation": "token-mean",
            "mu": 2.0,
            "max_frac": 1e-4,
            "selection_scope": "micro_batch",
            **_NO_CLIP_EXTRAS,
            **_KL,
        },
    ),
    (
        "aepo_arbitrary",
        aepo_arbitrary,
        "PPO-clip + REINFORCE on good samples reweighted to temperature T_high/T_low "
        "by H vs target H* (AEPO)",
        _AEPO,
        {
            "aggregation": "token-mean",
            "target_entropy": 0.5,
            "temp_high": 1.2,
            "temp_low": 0.8,
            "reinforce_coef": 0.1,
            "adv_threshold": 0.05,
            "weight_form": "auto",
            "weight_clip": 5.0,
            "selection_scope": "micro_batch",
            **_CLIP,
            "clip_high": 0.28,
            **_KL,
        },
    ),
    (
        "ares",
        ares,
        "PPO-clip on advantages shaped by a difficulty-aware high-window-entropy reward, "
        "per-difficulty KL (ARES)",
        _ARES,
        {
            "aggregation": "token-mean",
            "window": 8,
            "percentile": 0.98,
            "alpha": 0.5,
            "entropy_reward_coef": 1.0,
            "kl_coefs": (0.002, 0.001, 0.0005),
            "selection_scope": "micro_batch",
            **_CLIP,
            "clip_high": 0.28,
            **_KL,
        },
    ),
    (
        "tea_rl",
        tea_rl,
        "PPO-clip × clamp((H/H̄)^γ) token weights (Light-IF TEA-RL, spec form)",
        _LIGHT_IF,
        {
            "aggregation": "token-mean",
            "gamma": 1.0,
            "weight_min": 0.5,
            "weight_max": 2.0,
            "selection_scope": "micro_batch",
            **_CLIP,
            "clip_high": 0.28,
            **_KL,
        },
    ),
    (
        "echo_clip",
        echo_clip,
        "PPO-clip with a per-sequence ε from tail confidence (ECHO adaptive clipping)",
        "Zhao et al. 2026, ECHO, arXiv:2602.02150",
        {"aggregation": "token-mean", "clip": 0.2, "log_ratio_clamp": 20.0, **_KL},
    ),
    (
        "aepo_agentic",
        aepo_agentic,
        "PPO-clip; clipped high-entropy tokens keep a stop-gradient (1±ε)·r/sg(r)·A gradient",
        "Dong et al. 2025, Agentic Entropy-Balanced Policy Optimization, arXiv:2510.14545",
        {
            "aggregation": "token-mean",
            "entropy_quantile": 0.8,
            "clip_low": 0.2,
            "clip_high": 0.28,
            "sg_clip": True,
            "log_ratio_clamp": 20.0,
            **_KL,
        },
    ),
]:
    POLICY_LOSSES.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_fn)

_PREPARE: dict[str, tuple[Callable[..., dict[str, torch.Tensor]], dict[str, Any]]] = {
    "clip_cov": (prepare_clip_cov, {}),
    "kl_cov": (prepare_kl_cov, {}),
    "forking_tokens": (prepare_forking, {}),
    "forking_tokens_trl": (prepare_forking, {"method": "quantile"}),
    "forking_tokens_bottom": (prepare_forking, {"select": "bottom"}),
    "steer": (prepare_steer, {}),
    "siren": (prepare_siren, {}),
    "clip_b": (prepare_clip_b, {}),
    "clip_v": (prepare_clip_v, {}),
    "aepo_arbitrary": (prepare_aepo, {}),
    "tea_rl": (prepare_tea_rl, {}),
    "ares": (prepare_ares, {}),
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
