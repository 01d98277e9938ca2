"""Typed input and output of every policy loss (the shared RL interface).

Pure data: imports only torch. Shapes use ``B`` (sequences in the micro-batch), ``T`` (response
positions, right-padded) and ``V`` (vocabulary). All per-token tensors are aligned: position
``t`` of row ``b`` is the ``t``-th response token of sequence ``b``; ``response_mask`` marks the
real (non-padding) ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class PolicyLossInput:
    """Everything a policy loss may need for one micro-batch.

    Attributes:
        logprobs: ``[B, T]`` float32, ``log π_θ(y_t | ·)`` of the sampled tokens, with grad.
        old_logprobs: ``[B, T]`` the behaviour policy's log-probs (no grad).
        advantages: ``[B, T]`` per-token advantages (a sequence advantage broadcast over its
            tokens).
        response_mask: ``[B, T]`` bool, True on response tokens.
        ref_logprobs: ``[B, T]`` reference-policy log-probs for the optional KL term.
        entropy: ``[B, T]`` token entropy of ``π_θ`` in nats (grad only if a loss needs it).
        logits: ``[B, T, V]`` optional, for losses that need the whole distribution.
        global_tokens: response tokens in the whole optimisation batch (all micro-batches).
        global_sequences: sequences in the whole optimisation batch.
        max_response_length: the constant ``C`` of ``seq-mean-token-sum-norm``.
        selection: batch-scope selection statistics from
            :func:`entrolab.rl.losses.prepare_selection` (e.g. an entropy threshold).
        sequence_info: optional ``[B]`` per-sequence tensors from the trainer: ``group``
            (int64 prompt id), ``correct`` (0/1 float), ``pass_rate`` (the group's accuracy),
            ``row`` (int64 position in the optimisation batch); used by losses that shape by
            difficulty (ARES).
    """

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    response_mask: Tensor
    ref_logprobs: Tensor | None = None
    entropy: Tensor | None = None
    logits: Tensor | None = None
    global_tokens: int | None = None
    global_sequences: int | None = None
    max_response_length: int | None = None
    selection: dict[str, Tensor] | None = None
    sequence_info: dict[str, Tensor] | None = None


@dataclass
class PolicyLossOutput:
    """What a policy loss returns.

    Attributes:
        loss: scalar to ``.backward()``; with global counts given, the sum over micro-batches of
            their losses equals the full-batch loss.
        metrics: plain floats, e.g. ``clip_frac_low``, ``clip_frac_high``, ``touched_frac``
            (fraction of response tokens the method selected/changed), ``approx_kl``,
            ``entropy``.
    """

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
