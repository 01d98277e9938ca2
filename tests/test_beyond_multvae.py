"""Mult-VAE / Mult-DAE: loss vs hand computation, KL vs torch.distributions, metrics vs the
reference notebook's functions (transcribed below), split invariants and a small end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.beyond.multvae import (
    evaluate,
    gaussian_kl,
    linear_anneal,
    multvae_loss,
    train_mult,
)
from entrolab.beyond.recsim import (
    ndcg_at_k,
    popularity_scores,
    recall_at_k,
    simulate_clicks,
    strong_split,
)
from entrolab.errors import EntrolabError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_loss_hand_computed():
    # softmax(0, ln 3) = (1/4, 3/4); click on item 1 → NLL = −ln(3/4) = 0.287682
    # μ = 1, log σ² = 0: KL = ½(−0 + 1 + 1 − 1) = ½; β = 0.2 → loss = 0.287682 + 0.1
    logits = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)
    clicks = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    mu, logvar = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    loss, info = multvae_loss(logits, clicks, mu, logvar, 0.2)
    assert loss.item() == pytest.approx(-math.log(0.75) + 0.1, abs=1e-12)
    assert info["kl"] == pytest.approx(0.5)
    with pytest.raises(EntrolabError, match="differ"):
        multvae_loss(logits, clicks[:, :1])


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), ref, atol=1e-5)


def test_anneal():
    assert linear_anneal(0, 0.2, 1000) == 0.0 and linear_anneal(100, 0.2, 1000) == 0.1
    assert linear_anneal(10_000, 0.2, 1000) == 0.2


def _ndcg_reference(x_pred, heldout, k=100):
    """Transcribed from dawenl/vae_cf VAE_ML20M_WWW2018.ipynb (np.argpartition for bn)."""
    batch_users = x_pred.shape[0]
    idx_topk_part = np.argpartition(-x_pred, k, axis=1)
    topk_part = x_pred[np.arange(batch_users)[:, np.newaxis], idx_topk_part[:, :k]]
    idx_part = np.argsort(-topk_part, axis=1)
    idx_topk = idx_topk_part[np.arange(batch_users)[:, np.newaxis], idx_part]
    tp = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (heldout[np.arange(batch_users)[:, np.newaxis], idx_topk] * tp).sum(axis=1)
    idcg = np.array([(tp[: min(n, k)]).sum() for n in (heldout > 0).sum(axis=1)])
    return dcg / idcg


def _recall_reference(x_pred, heldout, k=100):
    batch_users = x_pred.shape[0]
    idx = np.argpartition(-x_pred, k, axis=1)
    x_pred_binary = np.zeros_like(x_pred, dtype=bool)
    x_pred_binary[np.arange(batch_users)[:, np.newaxis], idx[:, :k]] = True
    x_true_binary = heldout > 0
    tmp = (np.logical_and(x_true_binary, x_pred_binary).sum(axis=1)).astype(np.float32)
    return tmp / np.minimum(k, x_true_binary.sum(axis=1))


def test_metrics_match_reference_notebook():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 300))
    fold_in = rng.random((40, 300)) < 0.05
    target = (rng.random((40, 300)) < 0.08) & ~fold_in
    pred = np.where(fold_in, -np.inf, scores)  # the notebook sets fold-in items to −inf
    for k in (20, 50, 100):
        np.testing.assert_allclose(
            recall_at_k(scores, fold_in, target, k), _recall_reference(pred, target, k), rtol=1e-6
        )
    np.testing.assert_allclose(
        ndcg_at_k(scores, fold_in, target, 100), _ndcg_reference(pred, target.astype(float), 100)
    )


def test_metrics_hand_case():
    # items ranked 3 > 2 > 1 > 0 (item 3 is fold-in → excluded): ranking 2, 1, 0; target {1}
    s = np.array([[0.0, 1.0, 2.0, 3.0]])
    fin, tgt = np.array([[0, 0, 0, 1]], bool), np.array([[0, 1, 0, 0]], bool)
    # hit at rank 2: DCG = 1/log2(3), IDCG = 1 → 0.6309; recall@1 = 0, recall@2 = 1
    assert ndcg_at_k(s, fin, tgt, 3)[0] == pytest.approx(1 / math.log2(3))
    assert recall_at_k(s, fin, tgt, 1)[0] == 0.0 and recall_at_k(s, fin, tgt, 2)[0] == 1.0
    with pytest.raises(EntrolabError, match="must all be"):
        ndcg_at_k(s, fin[:, :2], tgt, 3)


def test_split_invariants():
    clicks, _ = simulate_clicks(300, 120, seed=1)
    sp = strong_split(clicks, 40, seed=0)
    users = {*sp.val_users.tolist(), *sp.test_users.tolist()}
    assert len(users) == 80 and sp.train.shape == (
        len(clicks[clicks.sum(1) >= 5]) - 80,
        sp.items.size,
    )
    orig = clicks[sp.test_users][:, sp.items]
    assert (
        np.array_equal(sp.test_in | sp.test_target, orig)
        and not (sp.test_in & sp.test_target).any()
    )
    frac = sp.test_target.sum() / orig.sum()
    assert 0.15 < frac < 0.25


@pytest.mark.slow
def test_small_run_beats_popularity_and_stays_under_oracle():
    clicks, pi = simulate_clicks(700, 200, seed=0)
    sp = strong_split(clicks, 100, seed=0)
    res = train_mult(sp, "vae", epochs=10, total_anneal_steps=50, seed=0)
    vae = evaluate(res.model, sp.test_in, sp.test_target)["ndcg@100"].mean()
    pop = ndcg_at_k(popularity_scores(sp.train, 100), sp.test_in, sp.test_target, 100).mean()
    oracle = ndcg_at_k(pi[sp.test_users][:, sp.items], sp.test_in, sp.test_target, 100).mean()
    assert pop + 0.05 < vae < oracle
