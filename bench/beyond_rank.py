"""ResponseGraphUCB vs uniform sampling on random Bernoulli games (Rowland et al. 2019's claim:
adaptive sampling orients the response graph — hence recovers the α-Rank ranking — with fewer
interactions than spending the same confidence uniformly).

Per game (2 players × 3 strategies, payoff means U[0.05, 0.95], every edge gap ≥ 0.05) and
seed: run ResponseGraphUCB (Clopper–Pearson, δ = 0.1) until every edge is resolved (N games),
and the same certificate with uniform (round-robin) sampling (N_u games): the paper's
comparison. For context, an oracle view of uniform sampling that needs no certificate: its
success rate (every edge oriented as the truth, so α-Rank at α → ∞ equals the truth's) with
the same N, and the smallest budget (grid ×1.25) with success ≥ 0.9 over 200 replicate draws.
Rows: runs/beyond_rank/rows.jsonl (resumable).

    .venv/bin/python bench/beyond_rank.py --games 10 --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _beyond_common import Rows, fmt, seed_interval

from entrolab.beyond.alpharank import alpharank
from entrolab.beyond.rgucb import (
    BernoulliGame,
    edge_orientation,
    response_graph_edges,
    response_graph_ucb,
)

REPS = 200


def make_game(g: int, min_gap: float = 0.05) -> BernoulliGame:
    rng = np.random.default_rng(1000 + g)
    while True:
        means = [rng.uniform(0.05, 0.95, (3, 3)) for _ in range(2)]
        gaps = [abs(means[k][a] - means[k][b]) for a, b, k in response_graph_edges((3, 3))]
        if min(gaps) >= min_gap:
            return BernoulliGame(means)


def uniform_success(game: BernoulliGame, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """(fraction of replicates with every edge right, fraction with the α-Rank top right)."""
    edges = response_graph_edges(game.strategies)
    truth = {e: edge_orientation(game.means, e) for e in edges}
    top = alpharank(game.means, alpha=np.inf, eps=1e-3).ranking()[0]
    ok_edges = ok_top = 0
    for _ in range(REPS):
        est = [rng.binomial(n, m) / n for m in game.means]
        ok_edges += all(edge_orientation(est, e) == truth[e] for e in edges)
        ok_top += alpharank(est, alpha=np.inf, eps=1e-3).ranking()[0] == top
    return ok_edges / REPS, ok_top / REPS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", default="runs/beyond_rank")
    args = ap.parse_args()
    rows = Rows(Path(args.runs) / "rows.jsonl")
    t0 = time.time()
    for g in range(args.games):
        game = make_game(g)
        p = int(np.prod(game.strategies))
        top = alpharank(game.means, alpha=np.inf, eps=1e-3).ranking()[0]
        for seed in range(args.seeds):
            key = {"game": g, "seed": seed}
            if rows.get(key):
                continue
            res = response_graph_ucb(
                game, delta=0.1, ci="clopper-pearson", budget=200_000, seed=seed
            )
            uni = response_graph_ucb(
                game,
                delta=0.1,
                ci="clopper-pearson",
                exploration="round-robin",
                budget=400_000,
                seed=seed,
            )
            rng = np.random.default_rng(seed)
            same_n = uniform_success(game, max(1, res.interactions // p), rng)
            n, needed = 4, None
            while n * p <= 4 * res.interactions:
                if uniform_success(game, n, rng)[0] >= 0.9:
                    needed = n * p
                    break
                n = int(np.ceil(n * 1.25))
            est_top = alpharank(res.means, alpha=np.inf, eps=1e-3).ranking()[0]
            row = {
                **key,
                "rgucb_games": res.interactions,
                "rgucb_errors": res.errors(game.means),
                "rgucb_top_right": est_top == top,
                "uniform_certified_games": uni.interactions,
                "uniform_certified_errors": uni.errors(game.means),
                "uniform_same_budget_edges_ok": same_n[0],
                "uniform_same_budget_top_ok": same_n[1],
                "uniform_needed": needed,
            }
            rows.add(row)
            print(row, flush=True)
    print(f"wall {time.time() - t0:.0f} s")
    print(summary(rows))


def summary(rows: Rows) -> str:
    r = rows.rows
    games = sorted({x["game"] for x in r})

    def per_game(f):
        return [float(np.mean([f(x) for x in r if x["game"] == g])) for g in games]

    ratio = per_game(lambda x: (x["uniform_needed"] or 4 * x["rgucb_games"]) / x["rgucb_games"])
    lines = [
        f"n = {len(games)} games × {len(r) // max(len(games), 1)} seeds; "
        "mean over games [95% t-interval over games]",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| ResponseGraphUCB games to resolve every edge | {fmt(seed_interval(per_game(lambda x: x['rgucb_games'])), 0)} |",
        f"| uniform (round-robin) games for the same certificate | {fmt(seed_interval(per_game(lambda x: x['uniform_certified_games'])), 0)} |",
        f"| uniform-certified ÷ ResponseGraphUCB games | {fmt(seed_interval(per_game(lambda x: x['uniform_certified_games'] / x['rgucb_games'])), 2)} |",
        f"| ResponseGraphUCB runs with every edge right | {sum(x['rgucb_errors'] == 0 for x in r)}/{len(r)} |",
        f"| ResponseGraphUCB α-Rank top profile right | {sum(x['rgucb_top_right'] for x in r)}/{len(r)} |",
        f"| uniform, same budget: P(every edge right) | {fmt(seed_interval(per_game(lambda x: x['uniform_same_budget_edges_ok'])))} |",
        f"| uniform, same budget: P(α-Rank top right) | {fmt(seed_interval(per_game(lambda x: x['uniform_same_budget_top_ok'])))} |",
        f"| uniform budget for P(every edge right) ≥ 0.9, ÷ RG-UCB's | {fmt(seed_interval(ratio), 2)} |",
        f"| runs where uniform needed > 4× (capped at 4) | {sum(x['uniform_needed'] is None for x in r)}/{len(r)} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
