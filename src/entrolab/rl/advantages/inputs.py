"""What an advantage shaper sees: the base advantages plus the rollout's per-token confidence
tensors (:class:`ShapingInputs`), and what it returns (:class:`ShapedAdvantages`).

Pure data and validation (torch only). Shapes: ``N`` prompts, ``G`` completions per prompt,
``R = N·G`` rows (prompt-major: row ``i·G + g``), ``T`` response positions (right-padded),
``P`` prompt positions. Every tensor here comes from the behaviour ("old") policy's no-grad
pass over the rollout, so shapers never carry gradient (the papers detach all of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from entrolab.errors import EntrolabError

__all__ = ["INPUT_NAMES", "ShapedAdvantages", "ShapingInputs", "check_token_advantages"]

#: optional per-rollout inputs a shaper may declare in its ``requires``.
INPUT_NAMES = (
    "old_logprobs",
    "entropy",
    "self_certainty",
    "token_logits",
    "prompt_logprobs",
    "semantic_entropy",
    "step_ids",
)


@dataclass(frozen=True)
class ShapingInputs:
    """The rollout seen by a shaper (all detached, float32 unless stated).

    Attributes:
        rewards: ``[N, G]`` outcome rewards.
        response_mask: ``[R, T]`` bool, True on response tokens.
        old_logprobs: ``[R, T]`` log π_old(y_t | ·) at the sampling temperature (nats).
        entropy: ``[R, T]`` token entropy of π_old at the sampling temperature (nats).
        self_certainty: ``[R, T]`` ``logsumexp(z/τ) − mean_v(z/τ)`` of the temperature-scaled
            logits (UCAS ``self_certainty_from_logits``; = KL(U‖p) + log V).
        token_logits: ``[R, T]`` raw logit ``z_t(y_t)`` of the sampled token (before the
            temperature, as UCAS's ``actual_token_logits``).
        prompt_logprobs: ``[N, P]`` log π_old(q_p | q_<p) of each prompt token after the first.
        prompt_mask: ``[N, P]`` bool, True where ``prompt_logprobs`` is a real token.
        semantic_entropy: ``[N]`` semantic entropy of each group's answers (nats).
        step_ids: ``[R, T]`` int64 index of the reasoning step (segment) of each token,
            0, 1, … within a row; −1 on padding.
        group_size: G.
    """

    rewards: Tensor
    response_mask: Tensor
    old_logprobs: Tensor | None = None
    entropy: Tensor | None = None
    self_certainty: Tensor | None = None
    token_logits: Tensor | None = None
    prompt_logprobs: Tensor | None = None
    prompt_mask: Tensor | None = None
    semantic_entropy: Tensor | None = None
    step_ids: Tensor | None = None

    @property
    def group_size(self) -> int:
        return int(self.rewards.shape[1])

    def need(self, name: str, shaper: str) -> Tensor:
        """The input ``name``, or a clear error naming the shaper that needs it."""
        value = getattr(self, name)
        if value is None:
            raise EntrolabError(
                f"advantage shaper {shaper!r} needs the rollout's {name!r}; compute it with "
                "entrolab.rl.shaping.shaping_inputs (the trainer does this for you) or pass it "
                "in ShapingInputs"
            )
        return value


@dataclass
class ShapedAdvantages:
    """A shaper's output.

    Attributes:
        advantages: ``[R, T]`` float32 per-token advantages, 0 on padding.
        metrics: plain floats to log (prefixed with the shaper's name by the pipeline).
        state: the shaper's new state (e.g. tracked quantiles), or None if stateless.
    """

    advantages: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] | None = None


def check_token_advantages(adv: Tensor, inputs: ShapingInputs, name: str) -> Tensor:
    """float64 copy of ``adv`` ``[R, T]`` validated against ``inputs``; raises naming ``name``."""
    mask = inputs.response_mask
    if not isinstance(adv, Tensor) or adv.shape != mask.shape:
        raise EntrolabError(
            f"{name}: advantages must be a tensor of the response mask's shape "
            f"{tuple(mask.shape)} ([R, T]), got "
            f"{tuple(adv.shape) if isinstance(adv, Tensor) else type(adv).__name__}"
        )
    r, g = inputs.rewards.shape
    if r * g != mask.shape[0]:
        raise EntrolabError(
            f"{name}: rewards [N, G] = {tuple(inputs.rewards.shape)} do not match the "
            f"{mask.shape[0]} rows of the rollout (need N·G rows, prompt-major)"
        )
    a = adv.detach().to(torch.float64)
    if not bool(torch.isfinite(a).all()):
        raise EntrolabError(f"{name}: advantages contain NaN/inf")
    return a * mask


def check_per_token(x: Tensor, inputs: ShapingInputs, what: str, name: str) -> Tensor:
    """float64 ``[R, T]`` copy of a per-token input, zero on padding; NaN/inf on real tokens
    raise."""
    mask = inputs.response_mask
    if x.shape != mask.shape:
        raise EntrolabError(
            f"{name}: {what} must have the response mask's shape {tuple(mask.shape)}, "
            f"got {tuple(x.shape)}"
        )
    v = x.detach().to(torch.float64)
    if not bool(torch.isfinite(v[mask]).all()):
        raise EntrolabError(f"{name}: {what} has NaN/inf on response tokens")
    return torch.where(mask, v, torch.zeros_like(v))


def group_view(x: Tensor, group_size: int) -> Tensor:
    """``[R, ...]`` → ``[N, G, ...]`` (prompt-major rows)."""
    return x.view(-1, group_size, *x.shape[1:])
