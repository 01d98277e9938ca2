"""Mutual-information protocol on Gaussians with known MI (spec B22; Abdelaleem et al. 2025).

Run:  .venv/bin/python bench/mutual_info.py [--n 1024 96] [--bounds infonce smile] [--mi 1.0]

X, Y in R^10 with 1 nat of MI in 2 latent dimensions (entrolab.studies.mutual_info.
gaussian_mi_data). For each N and bound: the subsampling–extrapolation estimate I∞ with its 95%
interval, whether it covers the true MI, and the protocol's flags; then an embedding-dimension
sweep at the largest N. One seed per cell (the interval comes from the split spread).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1024, 96])
    ap.add_argument("--bounds", nargs="+", default=["infonce", "smile"])
    ap.add_argument("--mi", type=float, default=1.0)
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--latent", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.studies.mutual_info import embedding_sweep, gaussian_mi_data, mi_protocol

    print(f"true MI {args.mi} nats, dim {args.dim}, latent dim {args.latent}\n")
    print("| N | bound | I∞ [95% CI] (nats) | covers truth | flags | seconds |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        x, y = gaussian_mi_data(n, args.dim, args.latent, args.mi, seed=0)
        for bound in args.bounds:
            t0 = time.perf_counter()
            p = mi_protocol(x, y, bound=bound)
            cover = "yes" if p.low <= args.mi <= p.high else "no"
            print(
                f"| {n} | {bound} | {p.i_inf:.3f} [{p.low:.3f}, {p.high:.3f}] | {cover} | "
                f"{', '.join(p.flags) or 'none'} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )
    x, y = gaussian_mi_data(max(args.n), args.dim, args.latent, args.mi, seed=0)
    sweep = embedding_sweep(x, y, dims=(1, 2, 4, 8, 16))
    print(
        "\nembedding-dimension sweep (InfoNCE, max-test estimate, nats): "
        + ", ".join(f"d={d}: {v:.3f}" for d, v in sweep.items())
    )


if __name__ == "__main__":
    main()
