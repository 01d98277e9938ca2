"""TRL tensors → entrolab's :class:`~entrolab.rl.types.PolicyLossInput`, and the counts that make
micro-batch losses sum to the loss of a whole TRL optimizer step. Imports neither TRL nor
transformers, so it is testable without them; :mod:`entrolab.rl.integrations.trl` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.types import PolicyLossInput

TESTED_TRL_VERSIONS = ("1.16.0",)

#: TRL ``loss_type`` → the entrolab aggregation with the same normaliser (default aggregation).
TRL_AGGREGATION = {
    "dapo": "token-mean", "bnpo": "token-mean", "cispo": "token-mean", "vespo": "token-mean",
    "grpo": "seq-mean-token-mean", "sapo": "seq-mean-token-mean",
    "dr_grpo": "seq-mean-token-sum-norm", "luspo": "seq-mean-token-sum",
}  # fmt: skip
_MM_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
    "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)  # fmt: skip


def trl_global_counts(
    num_items_in_batch: int | torch.Tensor,
    local_sequences: int,
    local_tokens: int,
    *,
    num_processes: int = 1,
    gradient_accumulation_steps: int = 1,
    steps_per_generation: int = 1,
    training: bool = True,
) -> tuple[int, int, float]:
    """Response tokens and sequences of one optimizer step, and the DDP loss scale.

    Args:
        num_items_in_batch: TRL's count of loss tokens in the generation batch of all processes.
        local_sequences, local_tokens: rows and response tokens of this micro-batch.
        num_processes: P. gradient_accumulation_steps, steps_per_generation: TRL's settings
            (an optimizer step uses ``GA`` of the ``steps_per_generation`` slices of a
            generation batch). training: False in evaluation (no split, no accumulation).
    Returns:
        ``(global_tokens, global_sequences, scale)``: tokens = ``n·GA/steps_per_generation``
        (exact when they are equal, TRL's default; otherwise TRL's own average-based estimate,
        raised to at least ``local_tokens``), sequences = ``B·GA·P``, scale = ``P``.
    """
    n = int(num_items_in_batch)
    ga, spg = (gradient_accumulation_steps, steps_per_generation) if training else (1, 1)
    if min(num_processes, ga, spg) < 1 or n < 0:
        raise EntrolabError(
            f"invalid TRL batch counts (processes={num_processes}, GA={ga}, "
            f"steps_per_generation={spg}, num_items_in_batch={n}); all must be positive"
        )
    tokens = max(round(n * ga / spg), int(local_tokens))
    return tokens, int(local_sequences) * ga * num_processes, float(num_processes)


#: prefix of the per-sequence tensors the trainer adds to TRL's batch dict (split with it)
SEQ_PREFIX = "entrolab_seq_"


def trl_sequence_info(
    rewards: torch.Tensor, group_size: int, start: int, count: int
) -> dict[str, torch.Tensor]:
    """Per-sequence ``group``/``correct``/``pass_rate``/``row`` of this process's rows.

    Args:
        rewards: ``[N·G]`` summed rewards of the whole generation batch (all processes, in TRL's
            gathered order: the G completions of a prompt are consecutive).
        group_size: G. start, count: this process's rows ``start … start+count−1``.
    Returns:
        ``[count]`` tensors: ``group`` (int64 global prompt index), ``correct`` (1.0 when the
        reward is > 0 — TRL has no verdicts; entrolab's trainer uses the same rule for custom
        rewards), ``pass_rate`` (the group's share of correct completions), ``row`` (int64 index
        within this process's generation batch, for batch-scope statistics).
    """
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise EntrolabError(
            f"rewards must be [N·G] with G = {group_size} dividing its length, got "
            f"{tuple(rewards.shape)}"
        )
    if start < 0 or count < 0 or start + count > rewards.numel():
        raise EntrolabError(f"rows {start}..{start + count} outside the {rewards.numel()} rewards")
    correct = (rewards.detach() > 0).double()
    rate = correct.view(-1, group_size).mean(1).repeat_interleave(group_size)
    idx = torch.arange(start, start + count)
    return {
        "group": torch.div(idx, group_size, rounding_mode="floor"),
        "correct": correct[idx].cpu(),
        "pass_rate": rate[idx].cpu(),
        "row": torch.arange(count),
    }


def trl_policy_loss_input(
    inputs: Mapping[str, Any],
    per_token_logps: torch.Tensor,
    entropies: torch.Tensor | None,
    *,
    use_ref: bool = False,
    global_tokens: int | None = None,
    global_sequences: int | None = None,
    max_response_length: int | None = None,
    selection: dict[str, torch.Tensor] | None = None,
    logits: torch.Tensor | None = None,
) -> PolicyLossInput:
    """Map one TRL micro-batch to a :class:`PolicyLossInput`.

    Args:
        inputs: TRL's batch dict: ``completion_mask`` ``[B, T]`` (0/1), ``advantages`` ``[B]``
            (broadcast over the tokens) or ``[B, T]``, optional ``tool_mask`` (multiplied into
            the mask), ``old_per_token_logps`` (absent on-policy: the detached current log-probs
            are used, as TRL does) and ``ref_per_token_logps``.
        per_token_logps: ``[B, T]`` log π_θ of the completion tokens (with grad).
        entropies: ``[B, T]`` token entropy in nats, or None.
        use_ref: pass ``ref_per_token_logps`` (TRL computes them only when ``beta != 0``).
        global_tokens, global_sequences, max_response_length, selection, logits: as in
            :class:`PolicyLossInput`.

    Per-sequence tensors stored under ``SEQ_PREFIX + name`` in ``inputs`` (TRL splits and
    shuffles them with the batch) become ``sequence_info[name]``.
    """
    mask = inputs["completion_mask"]
    if "tool_mask" in inputs and inputs["tool_mask"] is not None:
        mask = mask * inputs["tool_mask"]
    shape = tuple(per_token_logps.shape)
    if tuple(mask.shape) != shape:
        raise EntrolabError(
            f"TRL completion_mask has shape {tuple(mask.shape)} but the log-probs have {shape}"
        )
    adv = inputs["advantages"]
    adv = (adv.unsqueeze(1) if adv.dim() == 1 else adv).to(per_token_logps.dtype)
    if adv.shape[0] != shape[0] or adv.shape[1] not in (1, shape[1]):
        raise EntrolabError(
            f"TRL advantages have shape {tuple(inputs['advantages'].shape)}; expected [B] or "
            f"[B, T] with [B, T] = {shape}"
        )
    old = inputs.get("old_per_token_logps")
    ref = inputs.get("ref_per_token_logps") if use_ref else None
    if use_ref and ref is None:
        raise EntrolabError("beta != 0 but TRL passed no ref_per_token_logps in the batch")
    return PolicyLossInput(
        logprobs=per_token_logps,
        old_logprobs=per_token_logps.detach() if old is None else old.detach(),
        advantages=adv.expand(shape),
        response_mask=mask.bool(),
        ref_logprobs=None if ref is None else ref.detach(),
        entropy=entropies,
        global_tokens=global_tokens,
        global_sequences=global_sequences,
        max_response_length=max_response_length,
        selection=selection,
        logits=logits,
        sequence_info={
            k[len(SEQ_PREFIX) :]: v for k, v in inputs.items() if k.startswith(SEQ_PREFIX)
        }
        or None,
    )
