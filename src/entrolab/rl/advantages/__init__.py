"""Group advantage estimators for outcome rewards, registered in :data:`ADVANTAGE_ESTIMATORS`
(kind ``"advantages"``): ``adv_fn(rewards [N, G], **params) -> [N, G]`` float32 sequence-level
advantages (N prompts × G completions each); broadcast them over each completion's tokens.

Pure tensor code (torch only). Rewards must be finite; every group needs G ≥ 2 completions.

Where implementations differ (our default first):

* GRPO std: **unbiased** (Bessel, ``torch.std``) in verl, TRL and OpenRLHF; ``unbiased=False``
  gives the population std. ε: **1e-6** (verl) vs 1e-4 (TRL ``+ 1e-4``). Scope: **"group"**
  (per prompt) vs TRL's ``scale_rewards="batch"`` (one std over all N·G rewards).
* Dr.GRPO: ``R − mean_G R`` (verl ``norm_adv_by_std_in_grpo=False``, TRL ``scale_rewards="none"``).
* RiskPO (:mod:`entrolab.rl.advantages.riskpo`): bundled mixed Value-at-Risk; replaces the
  group baseline, so it is a base estimator, not a shaper.
* RLOO: ``R_i − mean_{j≠i} R_j`` = ``G/(G−1)·(R_i − mean R)`` (verl ``rloo``, TRL RLOOTrainer);
  TRL optionally standardises the result over the batch (``normalize=True`` here).

Confidence-based *shapers* that run after a base estimator (``grpo+ucas``) live in
:mod:`entrolab.rl.advantages.shaping` (:data:`~entrolab.rl.advantages.shaping.ADVANTAGE_SHAPERS`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from entrolab.errors import EntrolabError
from entrolab.registry import Registry
from entrolab.rl.advantages.riskpo import riskpo

__all__ = ["ADVANTAGE_ESTIMATORS", "dr_grpo", "grpo", "riskpo", "rloo"]

#: name → ``adv_fn(rewards [N, G], **params) -> [N, G]`` float32.
ADVANTAGE_ESTIMATORS: Registry[Callable[..., torch.Tensor]] = Registry("advantages")


def _check(rewards: torch.Tensor, name: str) -> torch.Tensor:
    """float64 copy of ``rewards`` [N, G] (validated)."""
    if not isinstance(rewards, torch.Tensor):
        raise EntrolabError(f"{name}: rewards must be a torch.Tensor of shape [N, G]")
    if rewards.dim() != 2:
        raise EntrolabError(
            f"{name}: rewards must have shape [N, G] (prompts × completions per prompt), got "
            f"{tuple(rewards.shape)}; reshape a flat [N·G] vector with .view(-1, G)"
        )
    if rewards.shape[1] < 2:
        raise EntrolabError(
            f"{name}: needs G ≥ 2 completions per prompt for a group baseline, got G = "
            f"{rewards.shape[1]}; sample more completions per prompt"
        )
    r = rewards.detach().to(torch.float64)
    if not bool(torch.isfinite(r).all()):
        raise EntrolabError(
            f"{name}: rewards contain NaN/inf; give unscorable completions a finite reward (or "
            "drop their group) before computing advantages"
        )
    return r


def grpo(
    rewards: torch.Tensor,
    *,
    eps: float = 1e-6,
    unbiased: bool = True,
    scale: str = "group",
) -> torch.Tensor:
    """GRPO advantage ``(R − mean_G R) / (std + ε)`` (Shao et al. 2024).

    Args:
        rewards: ``[N, G]`` outcome rewards.
        eps: ε added to the std (verl 1e-6, TRL 1e-4).
        unbiased: Bessel-corrected std (÷(G−1), verl/TRL) or population std (÷G).
        scale: ``"group"`` (std per prompt), ``"batch"`` (one std over all rewards, TRL
            ``scale_rewards="batch"``) or ``"none"`` (= Dr.GRPO).
    Returns:
        ``[N, G]`` float32; each row sums to 0 (a zero-variance group gets all zeros).
    """
    r = _check(rewards, "grpo")
    if scale not in ("group", "batch", "none"):
        raise EntrolabError(f"grpo: scale must be 'group', 'batch' or 'none', got {scale!r}")
    if eps < 0:
        raise EntrolabError(f"grpo: eps must be ≥ 0, got {eps}")
    centred = r - r.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.float()
    correction = 1 if unbiased else 0
    if scale == "group":
        std = r.std(dim=1, keepdim=True, correction=correction)
    else:
        std = r.reshape(-1).std(correction=correction).expand_as(r)
    denom = std + eps  # 0 only for a zero-variance group with eps = 0, where centred = 0 too
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, centred / safe, torch.zeros_like(centred)).float()


def dr_grpo(rewards: torch.Tensor) -> torch.Tensor:
    """Dr.GRPO advantage ``R − mean_G R`` (no std; Liu et al. 2025). ``[N, G]`` → ``[N, G]``."""
    r = _check(rewards, "dr_grpo")
    return (r - r.mean(dim=1, keepdim=True)).float()


def rloo(rewards: torch.Tensor, *, normalize: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """RLOO advantage ``R_i − (Σ_j R_j − R_i)/(G − 1)`` (leave-one-out baseline).

    Args:
        rewards: ``[N, G]``. normalize: standardise over the whole batch afterwards (TRL
            RLOOTrainer ``normalize_advantages``: ``(A − mean)/(std + eps)``, unbiased std).
        eps: ε of that standardisation.
    Returns:
        ``[N, G]`` float32; rows sum to 0.
    """
    r = _check(rewards, "rloo")
    g = r.shape[1]
    adv = r - (r.sum(dim=1, keepdim=True) - r) / (g - 1)
    if normalize:
        flat = adv.reshape(-1)
        adv = (adv - flat.mean()) / (flat.std() + eps)
    return adv.float()


for _name, _fn, _summary, _paper, _defaults in [
    (
        "grpo",
        grpo,
        "(R − group mean) / (group std + ε), sequence-level",
        "Shao et al. 2024, DeepSeekMath (GRPO), arXiv:2402.03300",
        {"eps": 1e-6, "unbiased": True, "scale": "group"},
    ),
    (
        "dr_grpo",
        dr_grpo,
        "R − group mean (no std normalisation)",
        "Liu et al. 2025, Understanding R1-Zero-Like Training (Dr.GRPO), arXiv:2503.20783",
        {},
    ),
    (
        "rloo",
        rloo,
        "R − mean of the other G−1 rewards (leave-one-out baseline)",
        "Ahmadian et al. 2024, Back to Basics (RLOO), arXiv:2402.14740",
        {"normalize": False, "eps": 1e-4},
    ),
    (
        "riskpo",
        riskpo,
        "mixed range-VaR/CVaR of bundled paper scores, credited back per response",
        "Ren et al. 2025, RiskPO: Risk-based Policy Optimization, arXiv:2510.00911",
        {
            "quantile_down": 0.2,
            "quantile_up": 0.9,
            "bundle_size": 5,
            "w_mix": 1.5,
            "credit": "std",
            "norm_by_std": True,
            "eps": 1e-6,
            "q_track": None,
            "quantile_source": "batch",
        },
    ),
]:
    ADVANTAGE_ESTIMATORS.register(_name, summary=_summary, paper=_paper, defaults=_defaults)(_fn)
