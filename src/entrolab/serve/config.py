"""``ServeConfig``: the settings of ``entrolab serve`` (CLI flags follow it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from entrolab.errors import EntrolabError

__all__ = ["ServeConfig"]


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the OpenAI-compatible server.

    Attributes:
        model_id: the model name clients must send (``/v1/models`` lists it).
        host, port: where to listen (loopback by default; bind 0.0.0.0 deliberately).
        api_key: when set, requests need ``Authorization: Bearer <api_key>``.
        max_tokens_limit: the largest ``max_tokens`` accepted (more → 400).
        default_max_tokens: ``max_tokens`` when a request gives none (at most
            ``max_tokens_limit``: larger values are lowered to it).
        max_n: the largest ``n`` accepted.
        max_queue: requests waiting or decoding at once (more → 429).
        batching: ``continuous`` (requests join the running decode between steps and stream
            token by token; backends with the ``continuous_batching`` capability), ``micro``
            (requests arriving within ``batch_window_s`` share one decode run to its end) or
            ``auto`` (continuous where the backend can).
        batch_window_s: how long the batcher gathers requests into one decode (micro), or how
            long an idle engine waits for requests arriving together (continuous; seconds).
        max_batch_rows: rows (prompts × n) per decode: a micro-batch closes early at this
            many; continuous batching decodes at most this many at once.
        signal_topk: top-k logprobs kept per token for the signals (DeepConf uses 20); the
            response returns only what the request asks for.
        estimator: sequence-level estimator for ``entrolab.uncertainty``/``confidence``.
        calibrator: an ``entrolab eval`` run directory to fit the confidence calibrator on.
        thresholds: (θ₁, θ₂) of the PCC-style route (answer ≥ θ₁ > retrieve ≥ θ₂ > escalate).
    """

    model_id: str = "entrolab"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_tokens_limit: int = 1024
    default_max_tokens: int = 128
    max_n: int = 64
    max_queue: int = 256
    batching: str = "auto"
    batch_window_s: float = 0.01
    max_batch_rows: int = 64
    signal_topk: int = 20
    estimator: str = "perplexity"
    calibrator: Path | None = None
    thresholds: tuple[float, float] = (0.7, 0.4)

    def __post_init__(self) -> None:
        if self.max_tokens_limit >= 1 and self.default_max_tokens > self.max_tokens_limit:
            object.__setattr__(self, "default_max_tokens", self.max_tokens_limit)
        checks = [
            (bool(self.model_id.strip()), "model_id must not be empty"),
            (0 <= self.port < 65536, "port must be in 0..65535 (0: a free port)"),
            (self.max_tokens_limit >= 1, "max_tokens_limit must be >= 1"),
            (
                1 <= self.default_max_tokens <= self.max_tokens_limit,
                "default_max_tokens must be in 1..max_tokens_limit",
            ),
            (self.max_n >= 1, "max_n must be >= 1"),
            (self.max_queue >= 1, "max_queue must be >= 1"),
            (
                math.isfinite(self.batch_window_s) and self.batch_window_s >= 0,
                "batch_window_s must be >= 0",
            ),
            (self.max_batch_rows >= 1, "max_batch_rows must be >= 1"),
            (
                self.batching in ("auto", "micro", "continuous"),
                f"batching must be auto, micro or continuous, got {self.batching!r}",
            ),
            (1 <= self.signal_topk <= 20, "signal_topk must be in 1..20"),
        ]
        for ok, message in checks:
            if not ok:
                raise EntrolabError(f"invalid serve settings: {message}")
