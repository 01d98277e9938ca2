"""Confidence shapers (``grpo+ucas`` …) as verl advantage estimators.

What verl passes to an advantage estimator (read in verl b178a3c / 0.8.0.dev,
``verl/trainer/ppo/ray_trainer.py::compute_advantage``, unchanged in the 0.9.1 the plug-in is
tested with): ``token_level_rewards [bs, T]``, ``response_mask [bs, T]``, ``config`` and, when
present, ``index`` (the ``uid`` of each row's prompt) and ``reward_baselines``. No log-probs,
entropies or logits: the old-log-prob pass computes ``old_log_probs`` and ``entropys`` but the
trainer pops ``entropys`` after logging it, and never computes self-certainty or raw logits.

So base estimators need nothing more (``entrolab_riskpo`` works as registered by
:func:`entrolab.rl.integrations.verl.register`), while every shaper needs per-token tensors
that stock verl does not hand over. :func:`make_verl_shaped_advantage` accepts them as keyword
arguments under verl-style names, to be added to ``adv_kwargs`` by a patched
``compute_advantage`` (as UCAS's fork does for its own estimator):

==================== ============================ =====================================
shaper input         keyword                      where it comes from in verl
==================== ============================ =====================================
self_certainty       ``self_certaintys [bs, T]``  actor log-prob pass, UCAS fork
token_logits         ``actual_token_logits``      actor log-prob pass, UCAS fork
old_logprobs         ``old_log_probs [bs, T]``    ``old_log_prob.batch`` (kept)
entropy              ``entropys [bs, T]``         ``old_log_prob.batch`` (not popped)
prompt_logprobs      ``prompt_log_probs [bs, P]`` + ``prompt_mask``; an extra forward
semantic_entropy     ``semantic_entropy [bs]``    per row (equal within a group)
step_ids             ``step_ids [bs, T]``         from the decoded responses
==================== ============================ =====================================

A missing input raises naming the keyword. Rows are grouped by ``index`` (equal group sizes),
shaped in prompt-major order and scattered back to verl's row order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.advantages.inputs import ShapingInputs
from entrolab.rl.shaping import AdvantagePipeline

__all__ = ["VERL_INPUT_KEYS", "make_verl_shaped_advantage"]

#: shaper input → the keyword a patched verl ``compute_advantage`` passes it under.
VERL_INPUT_KEYS = {
    "self_certainty": "self_certaintys",
    "token_logits": "actual_token_logits",
    "old_logprobs": "old_log_probs",
    "entropy": "entropys",
    "prompt_logprobs": "prompt_log_probs",
    "semantic_entropy": "semantic_entropy",
    "step_ids": "step_ids",
}


def make_verl_shaped_advantage(spec: str, params: Mapping[str, Any] | None = None):
    """A verl advantage estimator for ``spec`` (``"grpo+ucas"``) returning
    ``(advantages, returns)`` ``[bs, T]``; see the module doc for the keywords it reads."""
    pipeline = AdvantagePipeline(spec, dict(params or {}))

    def adv_fn(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        config: Any = None,
        index: Iterable[Any] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if index is None:
            raise EntrolabError(f"{spec}: needs verl's uid index to form groups")
        groups: dict[Any, list[int]] = {}
        for i, uid in enumerate(index):
            groups.setdefault(uid, []).append(i)
        sizes = sorted({len(g) for g in groups.values()})
        if len(sizes) != 1:
            raise EntrolabError(f"{spec}: needs groups of equal size, got sizes {sizes}")
        order = torch.tensor([i for g in groups.values() for i in g])  # prompt-major rows
        g = sizes[0]
        device = token_level_rewards.device
        mask = response_mask[order].bool().cpu()
        rewards = token_level_rewards.sum(-1)[order].float().cpu().view(-1, g)
        got: dict[str, Any] = {}
        for name in sorted(pipeline.requires):
            key = VERL_INPUT_KEYS[name]
            if kwargs.get(key) is None:
                raise EntrolabError(
                    f"{spec} needs {key!r} in verl's advantage kwargs; patch "
                    "ray_trainer.compute_advantage to pass it (see entrolab.rl.integrations."
                    "verl_shaping)"
                )
            value = kwargs[key][order].detach().float().cpu()
            if name == "semantic_entropy":
                value = value.view(-1, g)[:, 0]
            elif name == "prompt_logprobs":
                pm = kwargs.get("prompt_mask")
                if pm is None:
                    raise EntrolabError(f"{spec}: 'prompt_log_probs' needs 'prompt_mask' too")
                got["prompt_mask"] = pm[order].bool().cpu().view(-1, g, pm.shape[-1])[:, 0]
                value = value.view(-1, g, value.shape[-1])[:, 0]
            elif name == "step_ids":
                value = kwargs[key][order].long().cpu()
            got[name] = value
        inputs = ShapingInputs(rewards, mask, **got)
        with torch.no_grad():
            shaped, _ = pipeline(rewards, mask, inputs)
        out = torch.empty(response_mask.shape, dtype=torch.float32)
        out[order] = shaped
        out = out.to(device=device, dtype=token_level_rewards.dtype) * response_mask
        return out, out

    adv_fn.__name__ = "entrolab_" + spec.replace("+", "_")
    adv_fn.__doc__ = f"verl adapter of entrolab advantage pipeline {spec!r}"
    return adv_fn
