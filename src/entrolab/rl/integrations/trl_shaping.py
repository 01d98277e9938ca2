"""Confidence shapers (``advantage="grpo+ucas"``) inside :class:`EntrolabGRPOTrainer`.

TRL hands the trainer one generation batch per process: ``prompt_ids``/``prompt_mask``
(left-padded), ``completion_ids``/``completion_mask`` ``[B, T]`` and, after
``_calculate_rewards``, the rewards of all processes. The shapers' inputs (self-certainty, raw
token logits, prompt log-probs, semantic entropy of the answers, step ids) are computed here
with one extra no-grad forward of the current policy over the batch, exactly as the built-in
trainer does (:func:`entrolab.rl.shaping.rollout_advantages`); the result is per-token advantages
``[B, T]``, which :func:`~entrolab.rl.integrations.trl_inputs.trl_policy_loss_input` accepts.

Limits (each raises :class:`~entrolab.errors.EntrolabError` naming the fix): shapers need an
entrolab ``loss=`` (TRL's own loss broadcasts ``[B]`` advantages only) and a single process
(a group's completions may sit on several processes, and UCAS/EMPG normalise over the batch).
Answers for SEED-GRPO's clusters are extracted with :func:`entrolab.tasks.extract_answer`
(``"auto"``); pass ``answer_fn`` for another rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.rollout import Rollout
from entrolab.rl.shaping import AdvantagePipeline, rollout_advantages

__all__ = ["rollout_from_trl", "trl_shaped_advantages"]


def rollout_from_trl(output: dict[str, Any], group_size: int, texts: list[str]) -> Rollout:
    """A :class:`Rollout` view of TRL's generation batch (CPU tensors, prompt padding removed)."""
    p_ids, p_mask = output["prompt_ids"].cpu(), output["prompt_mask"].cpu().bool()
    c_ids, c_mask = output["completion_ids"].cpu(), output["completion_mask"].cpu().bool()
    b = c_ids.shape[0]
    if b % group_size:
        raise EntrolabError(
            f"TRL batch of {b} completions does not split into groups of {group_size}"
        )
    return Rollout(
        [p_ids[i][p_mask[i]].tolist() for i in range(b)],
        c_ids,
        c_mask,
        texts,
        torch.arange(b) // group_size,
        group_size,
    )


class _Answers:
    """The minimal task interface :func:`rollout_advantages` needs (answer extraction)."""

    def __init__(self, answer_fn: Callable[[str], str | None] | None) -> None:
        self.answer_fn = answer_fn

    def extract(self, item: Any, text: str) -> str | None:
        if self.answer_fn is not None:
            return self.answer_fn(text)
        from entrolab.tasks import extract_answer

        return extract_answer(text, "auto")


def trl_shaped_advantages(
    trainer,
    pipeline: AdvantagePipeline,
    output: dict[str, Any],
    rewards: torch.Tensor,
    group_size: int,
    *,
    answer_fn: Callable[[str], str | None] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token advantages ``[B, T]`` (on the completions' device) and shaper metrics for the
    generation batch ``output`` of ``trainer`` (an :class:`EntrolabGRPOTrainer`)."""
    if trainer.accelerator.num_processes != 1:
        raise EntrolabError(
            "advantage shapers in TRL run in a single process (groups and batch normalisations "
            "span processes); use the built-in trainer (entrolab train) or one process"
        )
    if getattr(trainer, "_el_loss_fn", None) is None:
        raise EntrolabError(
            "advantage shapers give per-token advantages, which TRL's own loss cannot take; "
            "pass an entrolab loss, e.g. loss='ppo_clip'"
        )
    tok = trainer.processing_class
    texts = tok.batch_decode(output["completion_ids"], skip_special_tokens=True)
    rollout = rollout_from_trl(output, group_size, texts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        adv, metrics = rollout_advantages(
            pipeline,
            model=trainer.model,
            rollout=rollout,
            rewards=rewards.detach().float().cpu().view(-1, group_size),
            task=_Answers(answer_fn),
            items=[None] * len(rollout),
            tokenizer=tok,
            pad_id=int(pad),
            temperature=float(trainer.temperature),
            micro_batch_size=int(trainer.args.per_device_train_batch_size),
        )
    finally:
        trainer.model.train(was_training)
    return adv.to(output["completion_ids"].device), metrics
