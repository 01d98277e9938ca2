"""Mult-VAE^PR and Mult-DAE vs popularity and the simulator's oracle, 3 seeds.

Claim under test (Liang et al. 2018; spec other_methods.md §2): Mult-VAE beats popularity and
stays under the oracle NDCG of the simulator that generated the data. Data: the offline
simulator (U = 2000, I = 1000, 200 + 200 held-out users; seed = simulator, split and training
seed) and, when the recbole wheel is installed, MovieLens-100k (ratings ≥ 4, 100 + 100
held-out users; seed = split and training seed).

    OMP_NUM_THREADS=1 .venv/bin/python bench/beyond_multvae.py --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _beyond_common import Rows, fmt, seed_interval

from entrolab.beyond.multvae import evaluate, train_mult
from entrolab.beyond.recsim import (
    load_movielens100k,
    ndcg_at_k,
    popularity_scores,
    recall_at_k,
    simulate_clicks,
    strong_split,
)
from entrolab.errors import EntrolabError

METRICS = ("ndcg@100", "recall@20", "recall@50")


def _metrics(scores, sp) -> dict[str, float]:
    return {
        "ndcg@100": float(ndcg_at_k(scores, sp.test_in, sp.test_target, 100).mean()),
        "recall@20": float(recall_at_k(scores, sp.test_in, sp.test_target, 20).mean()),
        "recall@50": float(recall_at_k(scores, sp.test_in, sp.test_target, 50).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--runs", default="runs/beyond_multvae")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = Rows(Path(args.runs) / "rows.jsonl")
    t0 = time.time()
    try:
        ml = load_movielens100k()
    except EntrolabError as e:
        print(f"MovieLens-100k skipped: {e}")
        ml = None
    for data in ("simulator", "ml-100k"):
        if data == "ml-100k" and ml is None:
            continue
        for seed in range(args.seeds):
            if rows.get({"data": data, "seed": seed}):
                continue
            if data == "simulator":
                clicks, pi = simulate_clicks(2000, 1000, seed=seed)
                sp = strong_split(clicks, 200, seed=seed)
            else:
                clicks, pi = ml, None
                sp = strong_split(clicks, 100, seed=seed)
            row = {
                "data": data,
                "seed": seed,
                "users": int(clicks.shape[0]),
                "items": int(sp.items.size),
                "pop": _metrics(popularity_scores(sp.train, len(sp.test_in)), sp),
            }
            if pi is not None:
                row["oracle"] = _metrics(pi[sp.test_users][:, sp.items], sp)
            for kind in ("vae", "dae"):
                res = train_mult(sp, kind, epochs=args.epochs, total_anneal_steps=1000, seed=seed)
                ev = evaluate(res.model, sp.test_in, sp.test_target)
                row[kind] = {k: float(v.mean()) for k, v in ev.items()}
                row[kind]["best_epoch"] = res.best_epoch
            rows.add(row)
            print(row, flush=True)
    print(f"wall {time.time() - t0:.0f} s (1 thread, shared machine)")
    print(summary(rows))


def summary(rows: Rows) -> str:
    out = []
    for data in ("simulator", "ml-100k"):
        r = [x for x in rows.rows if x["data"] == data]
        if not r:
            continue
        out += [
            f"\n**{data}** ({r[0]['users']} users, {r[0]['items']} items; n = {len(r)} seeds, mean [95% t-interval])\n",
            "| model | NDCG@100 | Recall@20 | Recall@50 |",
            "|---|---|---|---|",
        ]
        for m in ("pop", "dae", "vae", "oracle"):
            if m in r[0]:
                out.append(
                    f"| {m} | "
                    + " | ".join(fmt(seed_interval(x[m][k] for x in r)) for k in METRICS)
                    + " |"
                )
        out.append(
            f"\nvae − pop NDCG@100: {fmt(seed_interval(x['vae']['ndcg@100'] - x['pop']['ndcg@100'] for x in r))}"
        )
        out.append(
            f"\nvae − dae NDCG@100: {fmt(seed_interval(x['vae']['ndcg@100'] - x['dae']['ndcg@100'] for x in r))}"
        )
        if "oracle" in r[0]:
            out.append(
                f"\noracle − vae NDCG@100: {fmt(seed_interval(x['oracle']['ndcg@100'] - x['vae']['ndcg@100'] for x in r))}"
            )
    return "\n".join(out)


if __name__ == "__main__":
    main()
