"""Plain sampling filters (temperature, top-k, top-p, min-p) and seeded per-row sampling.

Pure functions on logits [R, V] (R rows, V vocabulary), out of place, no Python loop over rows
except in :func:`sample_rows`, where each row draws from its own generator so that a sample does
not depend on what else is in the batch. Filters follow transformers' order and semantics
(temperature → top-k → top-p → min-p); removed tokens get -inf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

from entrolab.config import GenerationConfig


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature (temperature > 0); returns a new tensor."""
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties at the k-th value kept); others → -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose mass reaches ``p``.

    Same rule as transformers' ``TopPLogitsWarper``: sort ascending, drop tokens whose
    cumulative probability is <= 1 - p, always keep at least ``min_keep`` tokens.
    """
    if p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -min_keep:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float, min_keep: int = 1) -> torch.Tensor:
    """Drop tokens with p < min_p · p_max (Nguyen et al. 2024, arXiv:2407.01082)."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    remove = probs < threshold
    keep_top = torch.topk(probs, min_keep, dim=-1).indices
    remove = remove.scatter(-1, keep_top, False)
    return logits.masked_fill(remove, float("-inf"))


#: a sampler's warper: logits [R, V] (already divided by the temperature) → logits [R, V]
Warper = Callable[[torch.Tensor], torch.Tensor]


def resolve_warper(config: GenerationConfig) -> Warper | None:
    """The warper of ``config.sampler`` built with ``config.sampler_params`` (None if unset).

    Unknown names or parameters raise :class:`~entrolab.errors.EntrolabError` listing the known
    ones, before any generation starts.
    """
    if config.sampler is None:
        return None
    from entrolab.decoding import make_warper

    return make_warper(config.sampler, config.sampler_params)


def process_logits(
    logits: torch.Tensor, config: GenerationConfig, warper: Warper | None = None
) -> torch.Tensor:
    """The distribution sampled from: all of ``config``'s filters applied to raw logits [R, V].

    Order: temperature → ``warper`` (the configured sampler, see :func:`resolve_warper`) →
    top-k → top-p → min-p. Greedy decoding returns ``logits`` unchanged.
    """
    if config.greedy:
        return logits
    out = apply_temperature(logits, config.temperature)
    if warper is not None:
        out = warper(out)
    out = apply_top_k(out, config.top_k)
    out = apply_top_p(out, config.top_p)
    return apply_min_p(out, config.min_p)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for one (prompt, sample) row, stable across runs and platforms."""
    digest = hashlib.blake2b(f"{seed}:{prompt_index}:{sample_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def seed_function(seed: int, seeds: Sequence[int] | None = None) -> Callable[[int, int], int]:
    """(prompt index, sample index) → row seed: from ``seed`` and the prompt index, or, when
    per-prompt ``seeds`` are given, from ``seeds[i]`` alone (as if the prompt were generated
    on its own with that seed)."""
    if seeds is None:
        return lambda i, s: row_seed(seed, i, s)
    base = [int(x) for x in seeds]
    return lambda i, s: row_seed(base[i], 0, s)


def sample_rows(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Draw one token per row of processed logits [R, V] with row r's own generator.

    Uses the exponential race (argmax of p / E with E ~ Exp(1)), which samples exactly from
    softmax(logits); -inf logits are never chosen. Returns int64 [R].
    """
    noise = torch.empty_like(logits, dtype=torch.float32)
    for r, gen in enumerate(generators):
        noise[r].exponential_(generator=gen)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.argmax(probs / noise, dim=-1)
