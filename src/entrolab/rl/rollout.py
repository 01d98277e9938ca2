"""Rollouts: sample G completions per prompt, and teacher-forced log-probs/entropy of responses.

Shapes: ``R`` rows (= N prompts × G samples, prompt-major: row ``i·G + g``), ``T`` response
positions (right-padded), ``V`` vocabulary. Sampling goes through
:meth:`entrolab.backends.HFBackend.generate` with one seed per prompt, so a prompt's samples do not
depend on what it is batched with. Log-probs and entropies come from a separate teacher-forced
forward of the policy, laid out like generation (left-padded prompt, then the response), with the
LM head applied only at the response positions and the logits divided by the sampling
temperature (full vocabulary, float32): ``log π(y_t | prompt, y_<t)`` and
``H_t = −Σ_v π(v | ·) log π(v | ·)`` in nats.

The policy updates built on these (:class:`~entrolab.rl.update.LossSetup`, micro-batch
accumulation, metric combination) live in :mod:`entrolab.rl.update`; ``LossSetup``,
``combine_micro_metrics`` and ``mean_metrics`` are still importable from here.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from entrolab.backends.base import Backend
from entrolab.backends.decode import pad_batch
from entrolab.backends.sampling import row_seed
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError

if TYPE_CHECKING:  # pragma: no cover - resolved lazily by __getattr__ below
    from entrolab.rl.update import LossSetup, combine_micro_metrics, mean_metrics

__all__ = [
    "ForwardOutput",
    "LossSetup",
    "Rollout",
    "combine_micro_metrics",
    "mean_metrics",
    "policy_forward",
    "prompt_seeds",
    "response_logprobs",
    "sample_rollout",
]

#: names that moved to :mod:`entrolab.rl.update`, resolved on first access (that module imports
#: this one, so a top-level import here would be circular).
_MOVED = {"LossSetup", "combine_micro_metrics", "mean_metrics"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("entrolab.rl.update"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Rollout:
    """One batch of sampled responses, R = N·G rows, prompt-major.

    Attributes:
        prompt_ids: R lists of prompt token ids (as the model saw them, chat formatting included).
        response_ids: int64 [R, T], right-padded with the pad id.
        response_mask: bool [R, T], True on response tokens (a final EOS included).
        texts: R decoded responses (what the verifier grades).
        prompt_index: int64 [R], index of each row's prompt in the step's prompt list.
        group_size: G.
        context_mask: optional bool [R, T], True on every real token of the response layout,
            including tokens the policy did not generate (tool outputs of multi-turn rollouts):
            they are attended to but, being outside ``response_mask``, get no loss. None: the
            same as ``response_mask``.
    """

    prompt_ids: list[list[int]]
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    prompt_index: torch.Tensor
    group_size: int
    context_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        """Response tokens in the batch (the global token count)."""
        return int(self.response_mask.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the trainer stores its probe set this way)."""
        return {
            "prompt_ids": self.prompt_ids,
            "response_ids": self.response_ids.tolist(),
            "response_mask": self.response_mask.tolist(),
            "texts": self.texts,
            "prompt_index": self.prompt_index.tolist(),
            "group_size": self.group_size,
            **({} if self.context_mask is None else {"context_mask": self.context_mask.tolist()}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rollout:
        """Inverse of :meth:`to_dict`."""
        return cls(
            [list(p) for p in d["prompt_ids"]],
            torch.tensor(d["response_ids"], dtype=torch.int64),
            torch.tensor(d["response_mask"], dtype=torch.bool),
            list(d["texts"]),
            torch.tensor(d["prompt_index"], dtype=torch.int64),
            int(d["group_size"]),
            None
            if d.get("context_mask") is None
            else torch.tensor(d["context_mask"], dtype=torch.bool),
        )

    def select(self, rows: torch.Tensor | Sequence[int]) -> Rollout:
        """The sub-batch of ``rows`` (trimmed to its longest response)."""
        idx = torch.as_tensor(rows, dtype=torch.int64)
        mask = self.response_mask[idx]
        ctx = None if self.context_mask is None else self.context_mask[idx]
        real = mask if ctx is None else ctx
        width = max(int(real.sum(-1).max()) if len(idx) else 0, 1)
        return Rollout(
            [self.prompt_ids[i] for i in idx.tolist()],
            self.response_ids[idx, :width],
            mask[:, :width],
            [self.texts[i] for i in idx.tolist()],
            self.prompt_index[idx],
            self.group_size,
            None if ctx is None else ctx[:, :width],
        )


def prompt_seeds(seed: int, step: int, n: int, stream: str = "train") -> list[int]:
    """One 63-bit sampling seed per prompt of a step, stable across runs, platforms and resumes.

    ``stream`` separates independent uses (training rollouts, evaluation, the probe set)."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{step}".encode(), digest_size=8).digest()
    base = int.from_bytes(digest, "little") >> 1
    return [row_seed(base, step, i) for i in range(n)]


def sample_rollout(
    backend: Backend,
    prompts: Sequence[str],
    config: GenerationConfig,
    seeds: Sequence[int],
    on_progress=None,
) -> Rollout:
    """Sample ``config.num_samples`` (G) completions for each prompt.

    Args:
        backend: an :class:`~entrolab.backends.HFBackend` wrapping the current policy.
        prompts: N prompts. seeds: N per-prompt seeds (see :func:`prompt_seeds`).
    Returns:
        a :class:`Rollout` with R = N·G rows; empty responses (no token at all) cannot occur
        (generation emits at least one token).
    """
    if len(prompts) != len(seeds):
        raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    traces = backend.generate(list(prompts), config, seeds=list(seeds), on_progress=on_progress)
    ids = [
        backend.prompt_ids(
            p, chat_template=config.chat_template, system_prompt=config.system_prompt
        )
        for p in prompts
    ]
    rows = sorted(traces, key=lambda t: (t.prompt_index, t.sample_index))
    response, mask = pad_batch([t.token_ids.tolist() for t in rows], int(backend.pad_id), "right")
    mask = mask.to(torch.bool)
    return Rollout(
        prompt_ids=[ids[t.prompt_index] for t in rows],
        response_ids=response,
        response_mask=mask,
        texts=[t.text for t in rows],
        prompt_index=torch.tensor([t.prompt_index for t in rows], dtype=torch.int64),
        group_size=config.num_samples,
    )


@dataclass
class ForwardOutput:
    """Per-token outputs of a teacher-forced forward over a (sub-)batch.

    Attributes:
        logprobs: float32 [B, T], log π(y_t | ·) at temperature τ (grad if computed with grad).
        entropy: float32 [B, T] in nats, or None (detached unless requested with grad).
        logits: float32 [B, T, V] temperature-scaled logits, or None.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    logits: torch.Tensor | None = None


def _layout(batch: Rollout, pad_id: int) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, position_ids for [left-padded prompt | right-padded response]."""
    prompt_ids, prompt_mask = pad_batch(batch.prompt_ids, pad_id, side="left")
    input_ids = torch.cat([prompt_ids, batch.response_ids], 1)
    real = batch.response_mask if batch.context_mask is None else batch.context_mask
    attention = torch.cat([prompt_mask, real.to(torch.int64)], 1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention, positions


def policy_forward(
    model,
    batch: Rollout,
    *,
    pad_id: int,
    temperature: float = 1.0,
    entropy: bool = True,
    entropy_grad: bool = False,
    keep_logits: bool = False,
) -> ForwardOutput:
    """Teacher-forced log-probs (and entropy) of ``batch``'s responses under ``model``.

    Gradient flows to ``logprobs`` when grad mode is on; ``entropy`` is detached unless
    ``entropy_grad``. Scope: per token; padding positions hold 0.

    Args:
        model: a causal LM whose forward accepts ``logits_to_keep``.
        batch: the rows to score (B = len(batch)).
        pad_id: token id used for padding.
        temperature: τ; logits are divided by it before the softmax (as when sampling).
    """
    input_ids, attention, positions = _layout(batch, pad_id)
    t = batch.response_ids.shape[1]
    device = next(model.parameters()).device
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        use_cache=False,
        logits_to_keep=t + 1,
    )
    # logits at position p predict token p + 1: the last t + 1 positions minus the final one.
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    if not bool(torch.isfinite(logits.detach()).all()):
        raise EntrolabError(
            "the policy produced NaN/inf logits; lower the learning rate or enable grad clipping"
        )
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = batch.response_ids.to(device)
    mask = batch.response_mask.to(device)
    logprobs = logp_all.gather(-1, targets[..., None]).squeeze(-1) * mask
    ent = None
    if entropy:
        src = logp_all if entropy_grad else logp_all.detach()
        ent = -(src.exp() * src).sum(-1) * mask
    return ForwardOutput(logprobs, ent, logits if keep_logits else None)


@torch.no_grad()
def response_logprobs(
    model,
    batch: Rollout,
    *,
    pad_id: int,
    temperature: float = 1.0,
    micro_batch_size: int = 8,
    entropy: bool = True,
) -> ForwardOutput:
    """:func:`policy_forward` without grad over all rows, ``micro_batch_size`` rows at a time.

    Returns tensors [R, T] aligned with ``batch.response_ids`` (used for old / reference
    log-probs and for the probe set's entropies).
    """
    n, t = batch.response_ids.shape
    logprobs = torch.zeros(n, t)
    ent = torch.zeros(n, t) if entropy else None
    for start in range(0, n, micro_batch_size):
        rows = torch.arange(start, min(start + micro_batch_size, n))
        sub = batch.select(rows)
        fo = policy_forward(model, sub, pad_id=pad_id, temperature=temperature, entropy=entropy)
        w = sub.response_ids.shape[1]
        logprobs[rows, :w] = fo.logprobs.float().cpu()
        if ent is not None and fo.entropy is not None:
            ent[rows, :w] = fo.entropy.float().cpu()
    return ForwardOutput(logprobs, ent)
