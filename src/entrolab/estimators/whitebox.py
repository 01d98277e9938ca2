"""White-box, sequence-level estimators from the greedy answer's per-token statistics.

Definitions follow LM-Polygraph (spec Part A2); ``ℓ_t = log p(y_t | y_<t, x)`` in nats over the
L tokens of the greedy answer, the final EOS included (as LM-Polygraph's greedy statistics). All
reductions are per sequence; an empty answer (L = 0) scores 0.

| name | u |
|---|---|
| msp | −Σ_t ℓ_t |
| perplexity | −(1/L) Σ_t ℓ_t (mean NLL, not exponentiated) |
| mean_token_entropy / max_token_entropy | mean / max of H_t |
| self_certainty | −mean_t KL(U ‖ p_t) |
| deepconf_* | −DeepConf trace confidence of C_t = −mean of the top-K logprobs |
| hwe_rate | fraction of tokens whose forward window entropy exceeds ``threshold`` nats |
| max_window_entropy | max_t of the forward window-mean entropy |
| pmi | −(1/L) Σ_t [ℓ_t − log p(y_t | y_<t, ∅)] |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from entrolab.errors import EntrolabError
from entrolab.estimators.base import register
from entrolab.estimators.stats import StatContext, statistic
from entrolab.signals import (
    group_confidence,
    masked_max,
    masked_mean,
    masked_sum,
    topk_confidence,
    window_entropy,
)
from entrolab.signals.windows import DEEPCONF_DEFAULT_WINDOW
from entrolab.types import Trace, TraceBatch

__all__ = ["TokenTable", "pmi_uncertainty", "token_table"]

_POLYGRAPH = "Fadeeva et al. 2023, LM-Polygraph, arXiv:2311.07383"
_DEEPCONF = "Fu et al. 2025, Deep Think with Confidence, arXiv:2508.15260"
_SELF_CERTAINTY = (
    "Kang et al. 2025, Scalable Best-of-N Selection via Self-Certainty, arXiv:2502.18581"
)
_ARES = "Chen et al. 2025, ARES, arXiv:2510.08457"
_PMI = "van der Poel et al. 2022, Mutual Information Alleviates Hallucinations, arXiv:2210.13210"


@dataclass(frozen=True)
class TokenTable:
    """Right-padded per-token statistics of N traces, float64 [N, T_max], mask bool [N, T_max].

    ``topk_conf`` is the DeepConf token confidence (nats); ``self_certainty`` is None when the
    traces carry none (top-k-only provenance).
    """

    logprob: torch.Tensor
    entropy: torch.Tensor
    topk_conf: torch.Tensor
    mask: torch.Tensor
    self_certainty: torch.Tensor | None = None


def token_table(traces: TraceBatch | list[Trace]) -> TokenTable:
    """Pad a batch of traces into a :class:`TokenTable` (float64)."""
    batch = traces if isinstance(traces, TraceBatch) else TraceBatch(tuple(traces))
    logprob, mask = batch.padded("logprob")
    entropy, _ = batch.padded("entropy")
    conf = torch.zeros(logprob.shape, dtype=torch.float64)
    for i, t in enumerate(batch):
        if len(t) and t.k == 0:
            raise EntrolabError("DeepConf needs top-k logprobs; generate with topk_logprobs >= 1")
        if len(t):
            conf[i, : len(t)] = topk_confidence(t.topk_logprobs.double())
    sc = None
    if all(t.self_certainty is not None for t in batch):
        sc = batch.padded("self_certainty")[0].double()
    return TokenTable(logprob.double(), entropy.double(), conf, mask, sc)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).numpy()


@statistic("greedy_tokens", deps={"greedy"}, summary="padded per-token stats of the greedy answers")
def _greedy_tokens(ctx: StatContext, stats: Mapping[str, Any]) -> TokenTable:
    return token_table(stats["greedy"])


@statistic(
    "unconditional_scores",
    deps={"greedy"},
    backend_methods=("score",),
    summary="greedy tokens teacher-forced after the neutral prompt (N traces; None if empty)",
)
def _unconditional_scores(ctx: StatContext, stats: Mapping[str, Any]) -> list[Trace | None]:
    greedy = list(stats["greedy"])
    rows = [i for i, t in enumerate(greedy) if len(t)]
    out: list[Trace | None] = [None] * len(greedy)
    if rows:
        scored = ctx.backend.score(
            [ctx.config.neutral_prompt] * len(rows),
            [greedy[i].token_ids for i in rows],
            k=1,
            **ctx.score_kwargs(),
        )
        for i, t in zip(rows, scored, strict=True):
            out[i] = t
    return out


def _unconditional_logprob(greedy: TraceBatch, uncond: list[Trace | None]) -> torch.Tensor:
    """log p(y_t | y_<t, ∅) of the greedy tokens, right-padded float64 [N, T_max] (0 at padding)."""
    lm = torch.zeros(len(greedy), max((len(t) for t in greedy), default=0), dtype=torch.float64)
    for i, (g, u) in enumerate(zip(greedy, uncond, strict=True)):
        if u is None:
            continue
        if len(u) != len(g):
            raise EntrolabError(
                f"unconditional scores of prompt {i} have {len(u)} tokens but its greedy answer "
                f"has {len(g)}; score the greedy token ids, not their re-tokenised text"
            )
        lm[i, : len(u)] = u.logprob.double()
    return lm


def pmi_uncertainty(
    logprob: torch.Tensor, lm_logprob: torch.Tensor, mask: torch.Tensor, *, skip_first: bool
) -> np.ndarray:
    """u = −(1/L) Σ_t [ℓ_t − ℓ^∅_t]; [N, T] each → [N]. ``skip_first`` drops the unconditional
    term at t = 0 (LM-Polygraph, whose unconditional pass has no context to predict y_0 from)."""
    lm = lm_logprob.clone()
    if skip_first and lm.shape[-1]:
        lm[:, 0] = 0.0
    return _np(-masked_mean(logprob - lm, mask))


@register(
    "msp",
    level="sequence",
    needs={"greedy_tokens"},
    aliases=("maximum_sequence_probability",),
    summary="maximum sequence probability: u = −Σ_t log p(y_t) (nats)",
    paper=_POLYGRAPH,
)
def msp(stats: Mapping[str, Any]) -> np.ndarray:
    tt: TokenTable = stats["greedy_tokens"]
    return _np(-masked_sum(tt.logprob, tt.mask))


@register(
    "perplexity",
    level="sequence",
    needs={"greedy_tokens"},
    summary="mean token NLL: u = −(1/L) Σ_t log p(y_t) (nats; not exponentiated)",
    paper=_POLYGRAPH,
)
def perplexity(stats: Mapping[str, Any]) -> np.ndarray:
    tt: TokenTable = stats["greedy_tokens"]
    return _np(-masked_mean(tt.logprob, tt.mask))


@register(
    "mean_token_entropy",
    level="sequence",
    needs={"greedy_tokens"},
    summary="mean over the answer's tokens of the next-token entropy (nats)",
    paper=_POLYGRAPH,
)
def mean_token_entropy(stats: Mapping[str, Any]) -> np.ndarray:
    tt: TokenTable = stats["greedy_tokens"]
    return _np(masked_mean(tt.entropy, tt.mask))


@register(
    "max_token_entropy",
    level="sequence",
    needs={"greedy_tokens"},
    summary="maximum over the answer's tokens of the next-token entropy (nats)",
    paper=_POLYGRAPH,
)
def max_token_entropy(stats: Mapping[str, Any]) -> np.ndarray:
    tt: TokenTable = stats["greedy_tokens"]
    return _np(masked_max(tt.entropy, tt.mask))


@register(
    "self_certainty",
    level="sequence",
    needs={"greedy_tokens"},
    requires=("full_logits",),
    summary="u = −mean over tokens of KL(uniform ‖ p_t) (nats)",
    paper=_SELF_CERTAINTY,
)
def self_certainty(stats: Mapping[str, Any]) -> np.ndarray:
    tt: TokenTable = stats["greedy_tokens"]
    if tt.self_certainty is None:
        raise EntrolabError(
            "self_certainty needs full-vocabulary traces; this backend gave top-k logprobs only"
        )
    return _np(-masked_mean(tt.self_certainty, tt.mask))


def _deepconf(mode: str, summary: str, name: str) -> None:
    def fn(stats: Mapping[str, Any], window: int, bottom_q: float) -> np.ndarray:
        tt: TokenTable = stats["greedy_tokens"]
        return _np(
            -group_confidence(tt.topk_conf, tt.mask, window=window, mode=mode, bottom_q=bottom_q)
        )  # type: ignore[arg-type]

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"u = −DeepConf {mode} group confidence of the greedy answer (nats)."
    register(
        name,
        level="sequence",
        needs={"greedy_tokens"},
        summary=summary,
        paper=_DEEPCONF,
        # DeepConf's 2048-token window scaled to the 64-token default reply budget by the one
        # rule of signals.windows.deepconf_window (budget // 8); pass window=2048 for the paper's value
        defaults={"window": DEEPCONF_DEFAULT_WINDOW, "bottom_q": 0.1},
    )(fn)


_deepconf(
    "mean", "u = −mean DeepConf token confidence C_t = −mean top-K logprob (nats)", "deepconf_mean"
)
_deepconf(
    "lowest",
    "u = −lowest sliding-window mean of DeepConf token confidence (nats)",
    "deepconf_lowest",
)
_deepconf(
    "bottom",
    "u = −mean of the bottom-10% window means of DeepConf confidence (nats)",
    "deepconf_bottom10",
)
_deepconf(
    "tail", "u = −mean DeepConf confidence of the last `window` tokens (nats)", "deepconf_tail"
)


@register(
    "hwe_rate",
    level="sequence",
    needs={"greedy_tokens"},
    summary="fraction of tokens whose forward window-mean entropy exceeds `threshold` nats",
    paper=_ARES,
    defaults={"window": 8, "threshold": 1.0},
)
def hwe_rate(stats: Mapping[str, Any], window: int, threshold: float) -> np.ndarray:
    """ARES selects HWE tokens by a quantile of H̄_{t:w}; a per-sequence quantile selects a fixed
    share of every answer and a batch quantile makes u depend on the other prompts, so this uses
    an absolute threshold (nats) instead."""
    tt: TokenTable = stats["greedy_tokens"]
    high = (window_entropy(tt.entropy, tt.mask, window) > threshold) & tt.mask
    return _np(masked_mean(high.double(), tt.mask))


@register(
    "max_window_entropy",
    level="sequence",
    needs={"greedy_tokens"},
    summary="maximum over the answer of the forward window-mean token entropy (nats)",
    paper=_ARES,
    defaults={"window": 8},
)
def max_window_entropy(stats: Mapping[str, Any], window: int) -> np.ndarray:
    tt: TokenTable = stats["greedy_tokens"]
    return _np(masked_max(window_entropy(tt.entropy, tt.mask, window), tt.mask))


@register(
    "pmi",
    level="sequence",
    needs={"greedy_tokens", "greedy", "unconditional_scores"},
    aliases=("mean_pointwise_mutual_information",),
    summary="u = −mean over tokens of log p(y_t given x) − log p(y_t given ∅), ∅ = neutral prompt (nats)",
    paper=_PMI,
    defaults={"skip_first": False},
)
def pmi(stats: Mapping[str, Any], skip_first: bool) -> np.ndarray:
    """Mean pointwise mutual information between prompt and answer, negated: an answer the
    prompt makes no more likely than a content-free prompt does is suspect. The unconditional
    pass scores the same greedy tokens after ``EstimatorConfig.neutral_prompt`` (same chat
    template), so the first token has a context and is kept (``skip_first=True`` drops it as
    LM-Polygraph's MeanPointwiseMutualInformation does)."""
    tt: TokenTable = stats["greedy_tokens"]
    lm = _unconditional_logprob(stats["greedy"], stats["unconditional_scores"])
    return pmi_uncertainty(tt.logprob, lm, tt.mask, skip_first=skip_first)
