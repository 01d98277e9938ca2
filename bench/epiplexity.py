"""Epiplexity of three streams by prequential coding (spec B21; Finzi et al. 2026).

Run:  .venv/bin/python bench/epiplexity.py [--batches 500] [--seeds 3] [--out runs/bench-epiplexity]

A tiny 2-layer causal transformer is trained online on (a) "a+b=c" lines with correct sums,
(b) the same lines with a random c and (c) uniform random characters of the same alphabet;
per stream and seed it reports epiplexity S_T and time-bounded entropy H_T (nats; see
entrolab.studies.epiplexity), then the mean over seeds with a 95% t-interval (spread over
seeds) and the paired per-seed differences S(a) − S(b) and S(b) − S(c). The claim checked:
S(a) ≫ S(b) > S(c) ≈ 0 and H largest for (c). Each (stream, seed) is appended to
OUT/results.jsonl as it finishes, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

STREAMS = {"a": "sums", "b": "random_sums", "c": "digits"}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds."""
    v = np.asarray(values, dtype=np.float64)
    half = scipy.stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, default=500, help="training batches per stream")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--max-operand", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-epiplexity")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.studies.epiplexity import make_stream, prequential_epiplexity

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[(r["stream"], r["seed"])] = r
    chars = args.batches * args.batch * (args.context + 1)
    for seed in range(args.seeds):
        for label, kind in STREAMS.items():
            if (label, seed) in done:
                continue
            t0 = time.perf_counter()
            kw = {"max_operand": args.max_operand}
            res = prequential_epiplexity(
                make_stream(kind, chars, seed=seed, **kw),
                held_out=make_stream(
                    kind, 8 * args.batch * (args.context + 1), seed=10_000 + seed, **kw
                ),
                context=args.context,
                batch=args.batch,
                seed=seed,
            )
            row = {"stream": label, "kind": kind, "seed": seed, "seconds": time.perf_counter() - t0}
            row.update({k: v for k, v in res.to_dict().items() if k != "losses"})
            done[(label, seed)] = row
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{label} ({kind}) seed {seed}: S={row['epiplexity']:.0f} H={row['time_bounded_entropy']:.0f} nats "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    seeds = range(args.seeds)
    lines = [
        f"n = {args.seeds} seeds, {args.batches} batches × {args.batch} rows × {args.context} tokens "
        f"per stream; mean [95% t-interval over seeds], nats",
        "",
        "| stream | S_T (epiplexity) | H_T (time-bounded entropy) | final loss (nats/token) |",
        "|---|---|---|---|",
    ]
    for label, kind in STREAMS.items():
        s = t_interval([done[(label, k)]["epiplexity"] for k in seeds])
        h = t_interval([done[(label, k)]["time_bounded_entropy"] for k in seeds])
        f = t_interval([done[(label, k)]["final_loss"] for k in seeds])
        lines.append(
            f"| ({label}) {kind} | {s[0]:.0f} [{s[1]:.0f}, {s[2]:.0f}] | {h[0]:.0f} [{h[1]:.0f}, {h[2]:.0f}] "
            f"| {f[0]:.3f} [{f[1]:.3f}, {f[2]:.3f}] |"
        )
    for x, y in (("a", "b"), ("b", "c")):
        d = t_interval([done[(x, k)]["epiplexity"] - done[(y, k)]["epiplexity"] for k in seeds])
        lines.append(f"\nS({x}) − S({y}), paired by seed: {d[0]:.0f} [{d[1]:.0f}, {d[2]:.0f}]")
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
