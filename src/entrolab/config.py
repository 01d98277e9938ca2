"""Dataclass configs: the single source of truth for settings (CLI flags and YAML follow them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from entrolab.errors import EntrolabError


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample completions and what to capture per token.

    Attributes:
        num_samples: G, completions per prompt.
        max_new_tokens: hard cap on completion length (tokens).
        temperature: softmax temperature; 0 means greedy decoding.
        top_p: nucleus sampling mass in (0, 1]; 1 disables it.
        top_k: keep the k most likely tokens; 0 disables it.
        min_p: drop tokens with p < min_p * p_max; 0 disables it.
        stop: strings that end a completion (the text is cut before them).
        stop_ignores_leading_whitespace: look for stop strings only after the completion's
            leading whitespace (e.g. a newline stop that must not fire on a reply that starts
            with a newline).
        seed: base seed; sample ``s`` of prompt ``i`` uses a generator derived from (seed, i, s),
            so a sample does not depend on what else is in the batch.
        topk_logprobs: K, alternatives stored per token (DeepConf uses 20).
        signals_from: compute per-token statistics from the ``raw`` logits (the model's own
            distribution, default) or the ``processed`` ones (after temperature/top-p/…).
        chat_template: wrap each prompt as a user message with the tokenizer's chat template.
        system_prompt: optional system message (chat template only).
        batch_size: rows (prompts × samples) decoded together; larger batches use the CPU's
            matrix units better (see docs/benchmarks.md).
        sampler: a registered sampler (``entrolab list samplers``: ``top_h``, ``entropix``, …)
            applied after temperature and before top-k/top-p/min-p; None for none.
        sampler_params: its keyword arguments (e.g. ``{"alpha": 0.4}``).
    """

    num_samples: int = 1
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    stop_ignores_leading_whitespace: bool = False
    seed: int = 0
    topk_logprobs: int = 20
    signals_from: Literal["raw", "processed"] = "raw"
    chat_template: bool = True
    system_prompt: str | None = None
    batch_size: int = 64
    sampler: str | None = None
    sampler_params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (self.num_samples >= 1, "num_samples must be >= 1"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (
                math.isfinite(self.temperature) and self.temperature >= 0,
                "temperature must be a finite number >= 0 (0 = greedy)",
            ),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.topk_logprobs >= 0, "topk_logprobs must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (
                self.signals_from in ("raw", "processed"),
                "signals_from must be 'raw' or 'processed'",
            ),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty"),
            (
                self.sampler is None or (isinstance(self.sampler, str) and bool(self.sampler)),
                "sampler must be a registered sampler name or None",
            ),
            (
                isinstance(self.sampler_params, dict)
                and all(isinstance(k, str) for k in self.sampler_params),
                "sampler_params must be a dict of keyword arguments",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise EntrolabError(f"invalid GenerationConfig: {message}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop"] = list(self.stop)
        out["sampler_params"] = dict(self.sampler_params)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EntrolabError(
                f"unknown generation settings {unknown}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)
