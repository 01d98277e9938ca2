"""Multi-sample evaluation under paraphrase on the embedded model (spec B17, Stochastic CHAOS).

Run:  .venv/bin/python bench/chaos.py [--n 20] [--paraphrases 3] [--samples 8] [--out DIR]

Built-in arithmetic (level 2) items; for each item a greedy answer to the original prompt and
``samples`` samples at T = 0.7 (top-p 0.95) for each of ``paraphrases`` rule-based prompts
(entrolab.studies.chaos.arithmetic_paraphrases). Per item one JSON line is appended to
OUT/results.jsonl (a killed run resumes); then the metrics of entrolab.studies.chaos with 95%
bootstrap intervals over items, and the items where greedy and multi-sample evaluation
disagree. The sample confidence for the tail risk is the mean chosen-token probability of the
reply (exp of the mean log-probability).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--paraphrases", type=int, default=3)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-chaos")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.backends import HFBackend
    from entrolab.config import GenerationConfig
    from entrolab.studies.chaos import arithmetic_paraphrases, chaos_metrics
    from entrolab.tasks import answer_key, load_task

    task = load_task("arithmetic", level=2)
    items = task.items(args.n, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = {}
    if path.exists():
        rows = {json.loads(line)["id"]: json.loads(line) for line in path.read_text().splitlines()}
    backend = HFBackend.load()
    greedy_cfg = GenerationConfig(
        num_samples=1, temperature=0.0, max_new_tokens=args.max_new_tokens
    )
    sample_cfg = GenerationConfig(num_samples=args.samples, temperature=args.temperature, top_p=0.95,
                                  max_new_tokens=args.max_new_tokens, seed=args.seed)  # fmt: skip
    for idx, item in enumerate(items):
        if item.id in rows:
            continue
        prompts = arithmetic_paraphrases(item.prompt, args.paraphrases)
        greedy = backend.generate([item.prompt], greedy_cfg)[0]
        traces = list(backend.generate(prompts, sample_cfg))
        correct, keys, conf = [], [], []
        for p in range(len(prompts)):
            group = traces[p * args.samples : (p + 1) * args.samples]
            grades = [task.grade(item, t.text) for t in group]
            correct.append([bool(g.correct) for g in grades])
            keys.append([answer_key(g.parsed) if g.parsed is not None else None for g in grades])
            conf.append([math.exp(float(t.logprob.mean())) if len(t) else 0.0 for t in group])
        row = {"id": item.id, "index": idx, "answer": answer_key(item.answer), "prompts": prompts,
               "greedy_correct": bool(task.grade(item, greedy.text).correct),
               "correct": correct, "keys": keys, "confidence": conf}  # fmt: skip
        rows[item.id] = row
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"item {idx + 1}/{len(items)}", flush=True)
    done = [rows[it.id] for it in items]
    m = chaos_metrics(
        [r["greedy_correct"] for r in done],
        [r["correct"] for r in done],
        sample_answers=[r["keys"] for r in done],
        reference=[r["answer"] for r in done],
        sample_confidence=[r["confidence"] for r in done],
    )
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    print(
        f"{len(done)} items × {args.paraphrases} prompts × {args.samples} samples, T={args.temperature}"
    )
    for key, value in m.items():
        if isinstance(value, dict):
            print(f"{key}: {value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
