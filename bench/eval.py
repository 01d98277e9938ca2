"""entrolab vs LM-Polygraph on the same model, prompts and estimators, in one run.

Run:  .venv/bin/python bench/eval.py [--n 20] [--samples 10] [--max-new-tokens 32]

Needs LM-Polygraph in its own environment (its pins conflict with entrolab's):
    python3 -m venv .venv-polygraph && .venv-polygraph/bin/pip install torch==2.13.0 lm-polygraph==0.7.0
Both sides load the embedded SmolLM2 from entrolab's safetensors cache, answer the same
chat-formatted arithmetic prompts greedily, draw the same number of samples (LM-Polygraph's
default 10; its sampler also applies top-k 50) and compute MSP, perplexity, mean token entropy,
lexical similarity (ROUGE-L) and Monte-Carlo sequence entropy. Semantic entropy is not compared:
LM-Polygraph's needs an NLI model from the hub, which cannot be fetched here. Times exclude model
loading. Sampled estimators differ by sampling noise, so only the greedy-output estimators are
compared value by value.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

COMMON = ["msp", "perplexity", "mean_token_entropy", "lexical_similarity", "mc_sequence_entropy"]
IDENTICAL = ["msp", "perplexity", "mean_token_entropy"]  # same greedy text, same definition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1, help="LM-Polygraph dataset batch size")
    ap.add_argument("--polygraph-python", default=".venv-polygraph/bin/python")
    args = ap.parse_args()
    if not Path(args.polygraph_python).exists():
        sys.exit(f"{args.polygraph_python} not found; see this script's docstring to install it")
    torch.set_num_threads(args.threads)
    print(f"load avg {os.getloadavg()[0]:.2f}; {args.n} prompts, {args.samples} samples")

    from entrolab.backends import HFBackend
    from entrolab.estimators import run_estimators
    from entrolab.models import converted_dir
    from entrolab.tasks import load_task

    items = load_task("arithmetic").items(args.n)
    backend = HFBackend.load()
    tok = backend.tokenizer
    prompts = [tok.decode(backend.prompt_ids(it.prompt)) for it in items]
    run_estimators(backend, items[:1], ["msp"], max_new_tokens=4)  # warm-up
    t0 = time.perf_counter()
    ours = run_estimators(
        backend,
        items,
        COMMON,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        config=None,
    )
    ours_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(
            json.dumps(
                {
                    "model": str(converted_dir()),
                    "prompts": prompts,
                    "max_new_tokens": args.max_new_tokens,
                    "batch_size": args.batch_size,
                    "threads": args.threads,
                    "seed": 0,
                }
            )
        )
        subprocess.run(
            [args.polygraph_python, "bench/_polygraph_side.py", str(job), str(out)], check=True
        )
        theirs = json.loads(out.read_text())

    same_text = [
        a.strip() == b.strip()
        for a, b in zip(ours.greedy_texts, theirs["greedy_texts"], strict=True)
    ]
    print(
        f"\nentrolab {ours_s:.1f} s, LM-Polygraph {theirs['seconds']:.1f} s: "
        f"entrolab is {theirs['seconds'] / ours_s:.2f}x faster"
    )
    print(f"greedy texts identical on {sum(same_text)}/{len(same_text)} prompts")
    last = [float(-t.logprob[-1]) for t in ours.greedy]
    print(
        f"item 0: msp entrolab {ours.uncertainty['msp'][0]:.4f}, LM-Polygraph "
        f"{theirs['values']['msp'][0]:.4f}, NLL of entrolab's last greedy token {last[0]:.4f}"
    )
    print("\n| estimator | max abs difference (items with identical greedy text) |")
    print("|---|---|")
    for name in COMMON:
        a = np.asarray(ours.uncertainty[name])
        b = np.asarray(theirs["values"][name])
        if name in IDENTICAL:
            mask = np.array(same_text)
            diff = np.abs(a[mask] - b[mask]).max() if mask.any() else float("nan")
            print(f"| {name} | {diff:.2e} |")
        else:
            print(f"| {name} | sampled: mean {a.mean():.3f} (entrolab) vs {b.mean():.3f} |")


if __name__ == "__main__":
    main()
