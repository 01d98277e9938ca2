"""Set-level estimators from the G samples of each prompt: agreement, semantic entropy, number of
semantic sets, Monte-Carlo sequence entropy.

Meanings ("semantic clusters") come from ``answer_clusters``: extracted-answer equivalence by
default (exact for math, no NLI model), or greedy embedding clustering for free text
(``EstimatorConfig.clustering``). Sequence log-likelihoods log p(s) = Σ_t ℓ_t are summed over the
sample's tokens, final EOS included, from the model's raw logits (the sampled distribution at
temperature 1 without top-p; LM-Polygraph uses the processed scores).

Semantic entropy variants (Kuhn et al. 2023; Farquhar et al. 2024; spec B13):

- ``semantic_entropy_discrete``: P(c) = |c|/G, SE = −Σ_c P(c) log P(c) (black-box).
- ``semantic_entropy``: the official ``sum_normalized`` Rao estimator: with length-normalised
  log p(s) (mean token log-prob, the reference code's default), log P(c) = logsumexp_{s∈c} log p(s)
  − logsumexp_{all s} log p(s), SE = −Σ_c P(c) log P(c). Bounded by log(#clusters).
- ``semantic_entropy_polygraph``: LM-Polygraph's SemanticEntropy, u = −(1/G) Σ_j log P(c(s_j))
  with unnormalised log P(c) = logsumexp of the members' summed log p(s) (can be negative
  log-probabilities of "classes" with mass > 1; kept for comparisons with that library).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.estimators.base import register
from entrolab.estimators.similarity import embedding_clusters
from entrolab.estimators.stats import EstimatorConfig, StatContext, sample_groups, statistic

__all__ = [
    "cluster_probabilities",
    "discrete_semantic_entropy",
    "mc_sequence_entropy",
    "polygraph_semantic_entropy",
    "semantic_entropy_rao",
]

_KUHN = "Kuhn, Gal & Farquhar 2023, Semantic Uncertainty, arXiv:2302.09664"
_FARQUHAR = "Farquhar et al. 2024, Detecting hallucinations using semantic entropy, Nature 630"
_LIN = "Lin, Trivedi & Sun 2023, Generating with Confidence, arXiv:2305.19187"
_XIONG = "Xiong et al. 2024, Can LLMs Express Their Uncertainty?, arXiv:2306.13063"
_POLYGRAPH = "Fadeeva et al. 2023, LM-Polygraph, arXiv:2311.07383"


# ------------------------------------------------------------------- pure functions


def logsumexp(x: np.ndarray) -> float:
    """log Σ exp(x) of a non-empty float vector, computed stably."""
    return float(np.logaddexp.reduce(np.asarray(x, dtype=np.float64)))


def _ids(cluster_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(list(cluster_ids))
    if ids.ndim != 1 or ids.size == 0:
        raise EntrolabError("cluster ids must be a non-empty 1-D sequence (one per sample)")
    return ids


def cluster_probabilities(cluster_ids: Sequence[int]) -> np.ndarray:
    """Cluster frequencies |c|/G, in order of first appearance; [G] ids → [C], sums to 1."""
    counts = Counter(_ids(cluster_ids).tolist())
    total = sum(counts.values())
    return np.array([n / total for n in counts.values()], dtype=np.float64)


def discrete_semantic_entropy(cluster_ids: Sequence[int]) -> float:
    """−Σ_c (|c|/G) log(|c|/G) in nats; 0 for one cluster, log G for G singletons."""
    p = cluster_probabilities(cluster_ids)
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0 turns −0.0 into 0.0


def semantic_entropy_rao(
    cluster_ids: Sequence[int], loglik: Sequence[float], lengths: Sequence[int] | None = None
) -> float:
    """Likelihood-weighted semantic entropy (Farquhar et al. ``sum_normalized``, Rao estimator).

    Args:
        cluster_ids: [G] cluster of each sample.
        loglik: [G] log p(s) of each sample (nats, summed over its tokens).
        lengths: [G] token counts; when given, log p(s) is length-normalised (÷ length; samples
            of length 0 keep log p = 0). None uses the summed log-likelihoods.
    Returns: SE = −Σ_c P(c) log P(c), P(c) ∝ Σ_{s∈c} p(s) normalised over clusters (nats).
    """
    ids = _ids(cluster_ids)
    ll = np.asarray(loglik, dtype=np.float64)
    if ll.shape != ids.shape or not np.isfinite(ll).all():
        raise EntrolabError("loglik must be finite, one value per sample (same length as ids)")
    if lengths is not None:
        n = np.asarray(lengths, dtype=np.float64)
        ll = np.where(n > 0, ll / np.maximum(n, 1.0), 0.0)
    log_total = logsumexp(ll)
    log_pc = np.array([logsumexp(ll[ids == c]) for c in dict.fromkeys(ids.tolist())]) - log_total
    return float(-(np.exp(log_pc) * log_pc).sum()) + 0.0


def polygraph_semantic_entropy(
    cluster_ids: Sequence[int],
    loglik: Sequence[float],
    texts: Sequence[str] | None = None,
) -> float:
    """LM-Polygraph SemanticEntropy: −(1/G) Σ_j logsumexp_{s∈c(j)} log p(s) (unnormalised).

    With ``texts`` (``use_unique_responses``), duplicate texts count once inside a class sum.
    """
    ids = _ids(cluster_ids)
    ll = np.asarray(loglik, dtype=np.float64)
    class_lp = {}
    for c in dict.fromkeys(ids.tolist()):
        members = np.flatnonzero(ids == c)
        if texts is not None:
            first: dict[str, int] = {}
            for m in members:
                first.setdefault(texts[m], int(m))
            members = np.array(sorted(first.values()))
        class_lp[c] = logsumexp(ll[members])
    return float(-np.mean([class_lp[c] for c in ids.tolist()]))


def mc_sequence_entropy(loglik: Sequence[float], lengths: Sequence[int] | None = None) -> float:
    """Monte-Carlo sequence entropy −(1/G) Σ_s log p(s); with ``lengths``, the normalised variant
    −mean_s log p(s)/|s| over samples with at least one token (LM-Polygraph)."""
    ll = np.asarray(loglik, dtype=np.float64)
    if lengths is None:
        return float(-ll.mean())
    n = np.asarray(lengths, dtype=np.float64)
    keep = n > 0
    if not keep.any():
        return 0.0
    return float(-(ll[keep] / n[keep]).mean())


# ----------------------------------------------------------------------- statistics


@statistic("sample_loglik", deps={"samples"}, summary="log p(s) of each sample [N, G] (nats)")
def _sample_loglik(ctx: StatContext, stats: Mapping[str, Any]) -> np.ndarray:
    return np.array(
        [[float(t.logprob.double().sum()) for t in g] for g in sample_groups(stats, ctx.n)],
        dtype=np.float64,
    )


@statistic("sample_lengths", deps={"samples"}, summary="token count of each sample [N, G]")
def _sample_lengths(ctx: StatContext, stats: Mapping[str, Any]) -> np.ndarray:
    return np.array([[len(t) for t in g] for g in sample_groups(stats, ctx.n)], dtype=np.int64)


def _cluster_deps(config: EstimatorConfig) -> frozenset[str]:
    return frozenset({"sample_answers"} if config.clustering == "answer" else {"sample_embeddings"})


@statistic("answer_clusters", deps=_cluster_deps, summary="meaning cluster of each sample [N][G]")
def _answer_clusters(ctx: StatContext, stats: Mapping[str, Any]) -> list[list[int]]:
    if ctx.config.clustering == "answer":
        return [list(ctx.cluster_fn(list(a))) for a in stats["sample_answers"]]
    thr = ctx.config.embedding_threshold
    return [embedding_clusters(e, thr) for e in stats["sample_embeddings"]]


def _consistency_deps(config: EstimatorConfig) -> frozenset[str]:
    if config.clustering == "answer":
        return frozenset({"greedy_answers", "sample_answers"})
    return frozenset({"greedy_embeddings", "sample_embeddings"})


@statistic(
    "greedy_sample_agreement",
    deps=_consistency_deps,
    summary="fraction of the samples that mean the same as the greedy answer [N]",
)
def _greedy_consistency(ctx: StatContext, stats: Mapping[str, Any]) -> np.ndarray:
    out = []
    if ctx.config.clustering == "answer":
        for greedy, samples in zip(stats["greedy_answers"], stats["sample_answers"], strict=True):
            ids = ctx.cluster_fn([greedy, *samples])
            out.append(np.mean([c == ids[0] for c in ids[1:]]))
    else:
        thr = ctx.config.embedding_threshold
        for g, s in zip(stats["greedy_embeddings"], stats["sample_embeddings"], strict=True):
            cos = s @ g / (np.linalg.norm(s, axis=-1) * np.linalg.norm(g))
            out.append(np.mean(cos >= thr))
    return np.array(out, dtype=np.float64)


# ----------------------------------------------------------------------- estimators


def _per_prompt(values: Any) -> np.ndarray:
    return np.array(list(values), dtype=np.float64)


@register(
    "answer_agreement",
    level="set",
    needs={"answer_clusters"},
    aliases=("label_prob",),
    summary="u = 1 − frequency of the largest meaning cluster among the G samples",
    paper=_POLYGRAPH,
)
def answer_agreement(stats: Mapping[str, Any]) -> np.ndarray:
    return _per_prompt(1.0 - cluster_probabilities(c).max() for c in stats["answer_clusters"])


@register(
    "greedy_consistency",
    level="set",
    needs={"greedy_sample_agreement"},
    summary="u = 1 − fraction of the G samples equivalent to the greedy answer",
    paper=_XIONG,
)
def greedy_consistency(stats: Mapping[str, Any]) -> np.ndarray:
    return 1.0 - np.asarray(stats["greedy_sample_agreement"], dtype=np.float64)


@register(
    "semantic_entropy_discrete",
    level="set",
    needs={"answer_clusters"},
    summary="entropy of the meaning clusters, −Σ_c P(c) log P(c), P(c) = share of samples (nats)",
    paper=_FARQUHAR,
)
def semantic_entropy_discrete(stats: Mapping[str, Any]) -> np.ndarray:
    return _per_prompt(discrete_semantic_entropy(c) for c in stats["answer_clusters"])


@register(
    "semantic_entropy",
    level="set",
    needs={"answer_clusters", "sample_loglik", "sample_lengths"},
    summary="semantic entropy over clusters weighted by (length-normalised) p(s) (nats)",
    paper=_FARQUHAR,
    defaults={"length_normalize": True},
)
def semantic_entropy(stats: Mapping[str, Any], length_normalize: bool) -> np.ndarray:
    rows = zip(
        stats["answer_clusters"], stats["sample_loglik"], stats["sample_lengths"], strict=True
    )
    return _per_prompt(
        semantic_entropy_rao(c, ll, n if length_normalize else None) for c, ll, n in rows
    )


@register(
    "semantic_entropy_polygraph",
    level="set",
    needs={"answer_clusters", "sample_loglik", "sample_texts"},
    summary="LM-Polygraph SemanticEntropy: −mean_j log Σ_{s∈c(j)} p(s) (unnormalised, nats)",
    paper=_KUHN,
    defaults={"use_unique_responses": False},
)
def semantic_entropy_polygraph(stats: Mapping[str, Any], use_unique_responses: bool) -> np.ndarray:
    rows = zip(stats["answer_clusters"], stats["sample_loglik"], stats["sample_texts"], strict=True)
    return _per_prompt(
        polygraph_semantic_entropy(c, ll, texts if use_unique_responses else None)
        for c, ll, texts in rows
    )


@register(
    "num_semantic_sets",
    level="set",
    needs={"answer_clusters"},
    aliases=("num_sem_sets",),
    summary="number of distinct meaning clusters among the G samples (1 … G)",
    paper=_LIN,
)
def num_semantic_sets(stats: Mapping[str, Any]) -> np.ndarray:
    return _per_prompt(len(set(c)) for c in stats["answer_clusters"])


@register(
    "mc_sequence_entropy",
    level="set",
    needs={"sample_loglik"},
    aliases=("monte_carlo_sequence_entropy",),
    summary="Monte-Carlo sequence entropy −mean_s log p(s) over the G samples (nats)",
    paper=_KUHN,
)
def mc_sequence_entropy_estimator(stats: Mapping[str, Any]) -> np.ndarray:
    return _per_prompt(mc_sequence_entropy(ll) for ll in stats["sample_loglik"])


@register(
    "mc_sequence_entropy_normalized",
    level="set",
    needs={"sample_loglik", "sample_lengths"},
    aliases=("monte_carlo_normalized_sequence_entropy",),
    summary="length-normalised Monte-Carlo sequence entropy −mean_s log p(s)/len(s) (nats/token)",
    paper=_KUHN,
)
def mc_sequence_entropy_normalized(stats: Mapping[str, Any]) -> np.ndarray:
    rows = zip(stats["sample_loglik"], stats["sample_lengths"], strict=True)
    return _per_prompt(mc_sequence_entropy(ll, n) for ll, n in rows)
