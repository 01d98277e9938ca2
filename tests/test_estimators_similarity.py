"""Similarity matrices and graph estimators: hand cases, independent references, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.estimators import ESTIMATORS
from entrolab.estimators.similarity import (
    cosine_matrix,
    degmat,
    eccentricity,
    eigval_laplacian,
    embedding_clusters,
    jaccard_matrix,
    lcs_length,
    normalized_laplacian,
    rouge_l_matrix,
    rouge_tokens,
)


def lcs_dp(a, b) -> int:
    """Textbook O(|a||b|) dynamic programme (independent of the bit-parallel version)."""
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            t[i][j] = t[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(t[i - 1][j], t[i][j - 1])
    return t[-1][-1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), max_size=70), st.lists(st.sampled_from("abcd"), max_size=70)
)
def test_bit_parallel_lcs_matches_the_dynamic_programme(a, b):
    assert lcs_length(a, b) == lcs_dp(a, b)


def test_rouge_l_by_hand():
    # "the cat sat" vs "the cat sat down": LCS 3, P = 3/4, R = 3/3 → F = 2·0.75·1/1.75 = 6/7
    m = rouge_l_matrix(["the cat sat", "The cat, sat down!", ""], stem=False)
    assert m[0, 1] == pytest.approx(6 / 7, rel=1e-12) and m[1, 0] == m[0, 1]
    assert m[0, 2] == 0.0 and m[2, 2] == 0.0 and m[0, 0] == 1.0
    assert rouge_tokens("Running quickly, 12 dogs", stem=False) == [
        "running",
        "quickly",
        "12",
        "dogs",
    ]


TEXTS = [
    "To add 7 and 8, you simply add them together: 7 + 8 = 15.",
    "The answer is 15 because adding numbers gives sums.",
    "Multiplying the values gives 56; the answers were running late.",
    "15",
    "",
    "running runs ran runner",
]


def test_rouge_l_matches_the_rouge_score_package():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    m = rouge_l_matrix(TEXTS)
    for i, a in enumerate(TEXTS):
        for j, b in enumerate(TEXTS):
            if i != j:
                assert m[i, j] == pytest.approx(scorer.score(a, b)["rougeL"].fmeasure, abs=1e-12)


def test_jaccard_by_hand():
    m = jaccard_matrix(["a b c", "B C d", "", ""])
    # {a,b,c} vs {b,c,d}: |∩| = 2, |∪| = 4 → 0.5; empty vs empty → 0 off the diagonal
    assert m[0, 1] == 0.5 and m[2, 3] == 0.0 and m[0, 2] == 0.0
    np.testing.assert_array_equal(np.diag(m), 1.0)


def test_graph_estimators_on_a_2x2_matrix_by_hand():
    a = 0.5
    w = np.array([[1.0, a], [a, 1.0]])
    # d = 1.5 each; L = I − W/1.5 has eigenvalues 0 and 1 − (1 − a)/(1 + a) = 2a/(1 + a) = 2/3
    np.testing.assert_allclose(
        np.linalg.eigvalsh(normalized_laplacian(w)), [0.0, 2 / 3], atol=1e-12
    )
    # EigV = (1 − 0) + (1 − 2/3) = 4/3 = 2/(1 + a)
    assert eigval_laplacian(w) == pytest.approx(4 / 3, rel=1e-12)
    # DegMat = 1 − ΣW/G² = 1 − 3/4 = 0.25
    assert degmat(w) == pytest.approx(0.25, rel=1e-12)
    # both eigenvalues < 0.9: V is a full orthogonal 2×2; centred rows are ±(0, 1/√2) → ‖c‖ = 1
    assert eccentricity(w) == pytest.approx(1.0, rel=1e-12)
    # with thres 0.5 only the λ = 0 vector (1, 1)/√2 is kept: centred → 0
    assert eccentricity(w, thres=0.5) == pytest.approx(0.0, abs=1e-12)


def test_graph_estimators_on_perfect_clusters():
    # two clusters {0, 1}, {2, 3}: blocks of ones. L eigenvalues 0, 0, 1, 1.
    w = np.kron(np.eye(2), np.ones((2, 2)))
    assert eigval_laplacian(w) == pytest.approx(2.0, abs=1e-12)  # = number of clusters
    assert degmat(w) == pytest.approx(0.5)  # 1 − 8/16
    # kept eigenvectors span the cluster indicators; each sample is 1/2 from the centre → √4·½
    assert eccentricity(w) == pytest.approx(1.0, abs=1e-12)
    one = np.ones((4, 4))
    assert eigval_laplacian(one) == pytest.approx(1.0, abs=1e-12)
    assert degmat(one) == 0.0 and eccentricity(one) == pytest.approx(0.0, abs=1e-12)


def _reference(w: np.ndarray, thres: float = 0.9) -> tuple[float, float]:
    """EigV and Ecc from the generalised problem W v = μ D v (λ = 1 − μ, u = D^{1/2} v)."""
    ws = (w + w.T) / 2
    d = np.diag(ws.sum(1))
    mu, v = scipy.linalg.eigh(ws, d)
    lam = 1 - mu
    eig = float(np.clip(1 - lam, 0, None).sum())
    u = np.sqrt(d) @ v
    u = u / np.linalg.norm(u, axis=0)
    keep = u[:, lam < thres]
    return eig, float(np.linalg.norm(keep - keep.mean(0)))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_graph_estimators_match_a_generalised_eigenproblem_reference(g, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (g, g))
    w = (a + a.T) / 2
    np.fill_diagonal(w, 1.0)
    eig, ecc = _reference(w)
    assert eigval_laplacian(w) == pytest.approx(eig, abs=1e-9)
    assert eccentricity(w) == pytest.approx(ecc, abs=1e-7)
    assert degmat(w) == pytest.approx(1 - w.sum() / g**2, abs=1e-12)
    # invariant to reordering the samples
    p = rng.permutation(g)
    assert eigval_laplacian(w[np.ix_(p, p)]) == pytest.approx(eigval_laplacian(w), abs=1e-9)
    assert eccentricity(w[np.ix_(p, p)]) == pytest.approx(eccentricity(w), abs=1e-7)


def test_cosine_similarity_and_embedding_clusters():
    e = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 2.0], [-1.0, 0.0]])
    m = cosine_matrix(e)
    assert m[0, 3] == 0.0  # cosine −1 clipped to 0
    assert m[0, 2] == pytest.approx(0.0, abs=1e-15) and m[1, 1] == 1.0
    # 0 and 1 have cosine 0.99/‖(0.99, 0.141)‖ = 0.990 ≥ 0.9 → same cluster
    assert embedding_clusters(e, 0.9) == [0, 0, 1, 2]
    assert embedding_clusters(e, 0.995) == [0, 1, 2, 3]
    with pytest.raises(EntrolabError, match="zero norm"):
        cosine_matrix(np.zeros((2, 3)))


def test_registered_similarity_estimators_on_statistics():
    w1 = np.array([[1.0, 0.5], [0.5, 1.0]])
    w2 = np.ones((2, 2))
    stats = {
        "sample_jaccard": [w1, w2],
        "sample_embedding_sim": [w2, w1],
        "sample_rougeL": [w1, w2],
    }
    np.testing.assert_allclose(ESTIMATORS.get("eigval_laplacian")(stats), [4 / 3, 1.0])
    np.testing.assert_allclose(ESTIMATORS.get("eigval_laplacian_embedding")(stats), [1.0, 4 / 3])
    np.testing.assert_allclose(ESTIMATORS.get("degmat")(stats), [0.25, 0.0])
    np.testing.assert_allclose(ESTIMATORS.get("eccentricity")(stats), [1.0, 0.0], atol=1e-12)
    # lexical similarity: −mean of the pairwise (upper-triangle) ROUGE-L values
    np.testing.assert_allclose(ESTIMATORS.get("lexical_similarity")(stats), [-0.5, -1.0])
    with pytest.raises(EntrolabError, match="at least 2"):
        ESTIMATORS.get("lexical_similarity")({"sample_rougeL": [np.ones((1, 1))]})


def test_bad_similarity_matrices_are_rejected():
    with pytest.raises(EntrolabError, match="square"):
        eigval_laplacian(np.ones((2, 3)))
    with pytest.raises(EntrolabError, match="non-negative"):
        eigval_laplacian(np.array([[1.0, -0.5], [-0.5, 1.0]]))
    with pytest.raises(EntrolabError, match="zero total similarity"):
        eigval_laplacian(np.zeros((2, 2)))
    assert math.isfinite(eigval_laplacian(np.array([[1.0]])))
