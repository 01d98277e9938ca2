"""Entropic Activation Steering (EAST): push a model's residual stream along an entropy direction.

Rahn, D'Oro, Bellemare 2024, "Controlling Large Language Model Agents with Entropic Activation
Steering", arXiv:2406.00244. No official code; what follows is the paper's description, with the
details it leaves open fixed and documented here.

Recipe:

1. :func:`collect_hidden_states` — for N prompts, the output of decoder block ``layer`` (the
   residual stream after that block) at the last prompt token, [N, H]; with ``return_logits``
   the same pass also gives the next-token logits [N, V].
2. An entropy per prompt, [N]: the paper uses the entropy of the agent's *action* distribution;
   for a language model :func:`next_token_entropy` gives the entropy of the next-token
   distribution, or, with ``option_ids``, of the distribution renormalised over a set of answer
   tokens (e.g. the letters of a multiple-choice question — the closest analogue of actions).
3. :func:`build_steering_vector` — u = Σ_i H_i (h_i − h̄) / Σ_i H_i, the entropy-weighted mean of
   the mean-centred states (``center=True``, the default; ``center=False`` weights raw states).
   Centring removes the component common to all prompts, so u points from the average state
   towards the states of uncertain prompts (u = entropy-weighted mean − plain mean).
4. :func:`steer` — a context manager whose forward hook adds ``strength · u`` to that block's
   output; positive strength should raise entropy, negative lower it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from entrolab.decoding.loop import pad_batch
from entrolab.errors import EntrolabError
from entrolab.signals import token_entropy

__all__ = [
    "build_steering_vector",
    "collect_hidden_states",
    "decoder_layers",
    "next_token_entropy",
    "option_entropy",
    "steer",
]

PAPER = "Rahn, D'Oro, Bellemare 2024, Entropic Activation Steering (EAST), arXiv:2406.00244"
Positions = Literal["all", "generated"]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (the ``ModuleList`` of ``num_hidden_layers`` modules).

    Works for Llama/Mistral/Qwen-style (``model.model.layers``), GPT-2 (``transformer.h``),
    GPT-NeoX and other layouts, by finding the first ``ModuleList`` of the configured length.
    """
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n:
            return module
    raise EntrolabError(
        f"could not find the decoder blocks of {type(model).__name__} (no ModuleList of "
        f"config.num_hidden_layers={n} modules); pass a transformers causal LM"
    )


def _layer(model, layer: int) -> torch.nn.Module:
    blocks = decoder_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(blocks):
        raise EntrolabError(
            f"layer must be an int in [0, {len(blocks) - 1}] (the model has {len(blocks)} decoder "
            f"blocks; EAST's default is the middle one, {len(blocks) // 2}), got {layer!r}"
        )
    return blocks[layer]


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _prompt_rows(prompt_ids) -> list[list[int]]:
    if (
        isinstance(prompt_ids, (str, bytes))
        or not isinstance(prompt_ids, Sequence)
        or not prompt_ids
    ):
        raise EntrolabError(
            "prompt_ids must be a non-empty list of token-id lists (format and tokenize the prompts "
            "first, e.g. with tokenizer.apply_chat_template(..., tokenize=True))"
        )
    rows = []
    for i, p in enumerate(prompt_ids):
        if isinstance(p, str) or not isinstance(p, Sequence) or len(p) == 0:
            raise EntrolabError(
                f"prompt_ids[{i}] must be a non-empty list of token ids, got {p!r:.60}"
            )
        rows.append([int(t) for t in p])
    return rows


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise EntrolabError(
            "the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token"
        )
    return int(pad)


@torch.inference_mode()
def _last_token_pass(model, tokenizer, prompt_ids, batch_size: int, block=None):
    """One forward pass per batch of left-padded prompts; (states at ``block`` or None, logits)."""
    rows, pad = _prompt_rows(prompt_ids), _pad_id(tokenizer)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EntrolabError(f"batch_size must be a positive int, got {batch_size!r}")
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(_hidden(output)[:, -1].float().cpu())

    logits = []
    handle = block.register_forward_hook(hook) if block is not None else None
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            ids, attn = pad_batch(chunk, pad)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                position_ids=pos.to(model.device), use_cache=False, logits_to_keep=1,
            )  # fmt: skip
            logits.append(out.logits[:, -1].float().cpu())
    finally:
        if handle is not None:
            handle.remove()
    return (torch.cat(captured) if block is not None else None), torch.cat(logits)


def collect_hidden_states(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    layer: int,
    *,
    batch_size: int = 16,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Residual-stream state after decoder block ``layer`` at each prompt's last token.

    Prompts are left-padded into batches of ``batch_size`` (the last column is every row's last
    real token); results do not depend on the batching beyond float rounding.

    Args:
        model, tokenizer: a Hugging Face causal LM and its tokenizer (for the pad id).
        prompt_ids: N token-id lists, already formatted (chat template applied if wanted).
        layer: 0-based decoder block index; its *output* is recorded.
        return_logits: also return the next-token logits of the same pass.
    Returns:
        float32 [N, H] (and float32 [N, V] raw logits when ``return_logits``), on the CPU.
    """
    hidden, logits = _last_token_pass(
        model, tokenizer, prompt_ids, batch_size, _layer(model, layer)
    )
    return (hidden, logits) if return_logits else hidden


def option_entropy(logits: torch.Tensor, option_ids: Sequence[int]) -> torch.Tensor:
    """Entropy (nats) of softmax over only the ``option_ids`` columns of ``logits`` [N, V] → [N].

    The distribution over a fixed set of answer tokens (e.g. " A"…" E"), renormalised; in
    [0, log K] for K options. Scope: per row.
    """
    ids = [int(i) for i in option_ids]
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise EntrolabError(f"option_ids must hold at least 2 distinct token ids, got {ids!r}")
    if not all(0 <= i < logits.shape[-1] for i in ids):
        raise EntrolabError(f"option_ids {ids} fall outside the vocabulary [0, {logits.shape[-1]})")
    return token_entropy(logits[..., ids])


def next_token_entropy(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    option_ids: Sequence[int] | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Entropy (nats) of the next-token distribution after each prompt, float32 [N].

    Full vocabulary by default; with ``option_ids``, of the distribution renormalised over those
    tokens (:func:`option_entropy`). Runs under any active :func:`steer` context, so it also
    measures steered entropies.
    """
    _, z = _last_token_pass(model, tokenizer, prompt_ids, batch_size)
    return option_entropy(z, option_ids) if option_ids is not None else token_entropy(z)


def build_steering_vector(
    hidden: torch.Tensor, entropies: torch.Tensor, *, center: bool = True
) -> torch.Tensor:
    """EAST direction u = Σ_i H_i h̃_i / Σ_i H_i, with h̃_i = h_i − mean_j h_j when ``center``.

    Args:
        hidden: [N, H] states (from :func:`collect_hidden_states`), N ≥ 2 when centring.
        entropies: [N] non-negative weights (entropies in nats, or bits: the scale cancels).
        center: subtract the mean state first (default; see the module doc). With centring, u
            is 0 when all entropies are equal — there is no direction to follow.
    Returns:
        float32 [H] (computed in float64). Scope: reduction over the N prompts.
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or not hidden.is_floating_point():
        raise EntrolabError(
            f"hidden must be a float tensor [N, H], got {getattr(hidden, 'shape', type(hidden).__name__)}"
        )
    w = torch.as_tensor(entropies).detach().to(torch.float64).cpu()
    if w.shape != hidden.shape[:1]:
        raise EntrolabError(
            f"entropies must have shape [N]={hidden.shape[0]}, got {tuple(w.shape)}"
        )
    if center and hidden.shape[0] < 2:
        raise EntrolabError("centring needs at least 2 prompts; give more prompts or center=False")
    h = hidden.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(h).all()) or not bool(torch.isfinite(w).all()):
        raise EntrolabError("hidden states and entropies must be finite (check the model's dtype)")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise EntrolabError(
            "entropies must be ≥ 0 with a positive sum (every prompt had a deterministic "
            "next token); use prompts where the model is sometimes uncertain"
        )
    if center:
        h = h - h.mean(dim=0, keepdim=True)
    return ((w[:, None] * h).sum(dim=0) / w.sum()).float()


@contextlib.contextmanager
def steer(
    model,
    vector: torch.Tensor,
    layer: int,
    strength: float,
    *,
    positions: Positions = "all",
) -> Iterator[torch.utils.hooks.RemovableHandle]:
    """Add ``strength · vector`` to the output of decoder block ``layer`` inside the ``with``.

    A forward hook returns a new tensor (out of place); the weights are never touched, and the
    hook is removed on exit, also when the body raises, so the model behaves exactly as before.

    Args:
        model: a Hugging Face causal LM.
        vector: [H] direction (from :func:`build_steering_vector`), cast to the model's dtype.
        layer: 0-based decoder block; use the one the vector was built at.
        strength: β; 0 is a no-op, > 0 should raise entropy, < 0 lower it.
        positions: ``"all"`` — every position of every forward pass; ``"generated"`` — only the
            last position of each forward pass: with KV-cached decoding (``model.generate``)
            these are the last prompt token and each generated token, i.e. the positions that
            predict new tokens, while the prompt's other states stay unsteered.
    Yields:
        the hook's handle (removed automatically).
    """
    block = _layer(model, layer)
    h_size = getattr(model.config, "hidden_size", None)
    if not isinstance(vector, torch.Tensor) or vector.dim() != 1 or not vector.is_floating_point():
        raise EntrolabError(
            f"vector must be a float tensor [H], got {getattr(vector, 'shape', type(vector).__name__)}"
        )
    if h_size is not None and vector.shape[0] != h_size:
        raise EntrolabError(
            f"vector has {vector.shape[0]} entries but the model's hidden size is {h_size}; "
            "build it from this model's hidden states"
        )
    if not bool(torch.isfinite(vector).all()):
        raise EntrolabError("vector contains NaN/inf; rebuild it from finite hidden states")
    if (
        isinstance(strength, bool)
        or not isinstance(strength, (int, float))
        or not math.isfinite(strength)
    ):
        raise EntrolabError(f"strength must be a finite number, got {strength!r}")
    if positions not in ("all", "generated"):
        raise EntrolabError(f"positions must be 'all' or 'generated', got {positions!r}")
    delta = (float(strength) * vector.detach().to(torch.float32)).clone()

    def hook(module, args, output):
        hs = _hidden(output)
        d = delta.to(device=hs.device, dtype=hs.dtype)
        if positions == "all":
            new = hs + d
        else:
            new = torch.cat([hs[..., :-1, :], hs[..., -1:, :] + d], dim=-2)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    # prepend: run before hooks registered earlier (e.g. transformers' output_hidden_states
    # recorder), so everything downstream, hidden_states included, sees the steered state.
    handle = block.register_forward_hook(hook, prepend=True)
    try:
        yield handle
    finally:
        handle.remove()
