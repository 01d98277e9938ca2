"""Preference optimisation on the model's own samples: DPO and VPO (offline and online).

Each step samples G replies per prompt, grades them, and pairs a correct reply (chosen, y_w)
with an incorrect one (rejected, y_l) of the same prompt (up to ``pairs_per_prompt`` pairs;
prompts with no such pair are skipped). Sequence log-probs ``log π(y|x) = Σ_t log π(y_t|·)``
are taken at temperature 1 under the policy (with gradient) and the frozen reference (the
initial policy; adapters disabled for LoRA).

* DPO (Rafailov et al. 2023, arXiv:2305.18290): with ``h = β·[(log π_θ(y_w) − log π_ref(y_w))
  − (log π_θ(y_l) − log π_ref(y_l))]``, ``L_DPO = −mean log σ(h)``.
* VPO (Cen et al. 2024, arXiv:2405.19320): ``L = L_DPO + sign·α·mean_{y∼π_cal} β·(log π_θ(y)
  − log π_ref(y))`` (the value regulariser after the DPO reparametrisation, with the paper's
  calibration ``E_{π_cal}[r] = 0``; our derivation, sign convention [U]). ``sign = −1``:
  offline / pessimistic (raises the likelihood of the calibration samples, conservative);
  ``+1``: online / optimistic (lowers it: exploration). ``π_cal``: the chosen replies
  (``calibration="chosen"``, the spec's offline check), the rejected ones, or all.
* Data: ``offline`` samples come from the frozen initial policy (a fixed data distribution,
  as an offline dataset), ``online`` from the current policy.

Logged per step: ``pref/loss``, ``pref/dpo_loss``, ``pref/vpo_term``, ``pref/pairs``,
``pref/chosen_logratio`` (mean ``log π_θ(y_w) − log π_ref(y_w)``: the chosen log-prob drift
DPO is known for), ``pref/rejected_logratio``, ``pref/margin``, ``pref/reward_acc`` (share
of pairs with h > 0), ``pref/chosen_logprob`` (mean ``log π_θ(y_w)``). The training loop is
:class:`entrolab.rl.preference_trainer.PreferenceTrainer` (``preference.method: dpo|vpo``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from entrolab.errors import EntrolabError

__all__ = ["PreferenceConfig", "build_pairs", "dpo_loss", "vpo_loss"]


@dataclass
class PreferenceConfig:
    """Preference optimisation instead of the RL loss (:mod:`entrolab.rl.preference`).

    Attributes:
        method: ``none`` (RL as configured), ``dpo`` or ``vpo``.
        beta: β of DPO/VPO. alpha: α, weight of VPO's value term.
        mode: ``offline`` (pairs from the frozen initial policy; VPO pessimistic, sign −1) or
            ``online`` (pairs from the current policy; VPO optimistic, sign +1).
        calibration: VPO's π_cal samples: ``chosen``, ``rejected`` or ``all``.
        pairs_per_prompt: at most this many (chosen, rejected) pairs per prompt.
    """

    method: Literal["none", "dpo", "vpo"] = "none"
    beta: float = 0.1
    alpha: float = 0.1
    mode: Literal["offline", "online"] = "offline"
    calibration: Literal["chosen", "rejected", "all"] = "chosen"
    pairs_per_prompt: int = 1

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.alpha < 0 or self.pairs_per_prompt < 1:
            raise EntrolabError(
                "invalid preference config: beta > 0, alpha >= 0, pairs_per_prompt >= 1"
            )


def dpo_loss(
    pol_w: torch.Tensor, pol_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(−log σ(h)) [P]`` and ``h [P]`` for sequence log-probs ``[P]`` of P pairs."""
    h = beta * ((pol_w - ref_w) - (pol_l - ref_l))
    return -F.logsigmoid(h), h


def vpo_loss(
    pol_w: torch.Tensor,
    pol_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    pol_cal: torch.Tensor,
    ref_cal: torch.Tensor,
    *,
    beta: float,
    alpha: float,
    sign: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VPO: (total scalar, DPO mean, value term ``sign·α·β·mean(log π_θ − log π_ref)`` on the
    calibration samples)."""
    per_pair, _ = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta)
    value = sign * alpha * beta * (pol_cal - ref_cal).mean()
    return per_pair.mean() + value, per_pair.mean(), value


def build_pairs(
    correct: torch.Tensor, group_size: int, *, per_prompt: int = 1, seed: int = 0
) -> list[tuple[int, int]]:
    """(chosen row, rejected row) pairs from verdicts ``correct`` bool [N·G] (prompt-major):
    per prompt, up to ``per_prompt`` pairs of a correct and an incorrect reply, drawn at random
    without reuse (seeded)."""
    ok = correct.bool().view(-1, group_size)
    rng = random.Random(seed)
    pairs = []
    for i in range(ok.shape[0]):
        good = [i * group_size + g for g in range(group_size) if ok[i, g]]
        bad = [i * group_size + g for g in range(group_size) if not ok[i, g]]
        rng.shuffle(good)
        rng.shuffle(bad)
        pairs += list(zip(good, bad, strict=False))[:per_prompt]
    return pairs
