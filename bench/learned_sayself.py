"""SaySelf stage 1 on the embedded model: verbal confidence before vs after LoRA SFT on the model's
own self-consistency targets, on held-out items (resumable).

Fit: arithmetic level LEVEL, items of seed 0 (``--fit-n``), ``--samples`` chains each at T = 1,
targets and LoRA SFT as :func:`entrolab.inference.sayself.fit_sayself`. Held-out: ``--eval-n``
items of seed 1 (same level; items whose expression also occurs among the fit items are dropped
and counted). Before and after, one greedy reply per held-out item to the SaySelf prompt; the
stated confidence is parsed (:func:`parse_stated_confidence`, the k/10 scale the prompt asks
for: "Confidence: 3" → 0.3; unparsed → 0.5, the parse rate is
reported); correctness is graded on the reply cut before "Confidence" (the same cut for both
models, so a stated "9/10" is never read as the answer). Figures with 95% bootstrap intervals
over items (1000 replicates): AUROC and ECE (torchmetrics preset, 15 bins) of the stated
confidence, Brier; beside exp(mean token log-prob) of the same reply (white-box); paired
bootstrap of after − before (the two models answer the same items, graded separately).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_sayself.py --fit-n 64 --eval-n 150

Replies go to runs/bench-sayself/{before,after}.jsonl and the merged model to
runs/bench-sayself/model (a rerun resumes); the table is printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

_CUT = re.compile(r"confidence", re.I)


def _fmt(iv) -> str:
    return f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def _replies(backend, prompts: list[str], path: Path, max_new_tokens: int) -> list[dict]:
    """Greedy replies (text, mean token log-prob), cached in ``path`` (JSONL, one per prompt)."""
    from entrolab.config import GenerationConfig

    done = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    cfg = GenerationConfig(num_samples=1, temperature=0.0, max_new_tokens=max_new_tokens)
    with path.open("a") as f:
        for start in range(len(done), len(prompts), 16):
            for t in backend.generate(prompts[start : start + 16], cfg):
                row = {"text": t.text, "mean_logprob": float(t.logprob.double().mean())}
                f.write(json.dumps(row) + "\n")
                done.append(row)
            f.flush()
            print(f"  {path.stem}: {len(done)}/{len(prompts)}", flush=True)
    return done[: len(prompts)]


def _scores(task, items, rows) -> dict[str, np.ndarray]:
    from entrolab.estimators.learned import parse_stated_confidence

    stated = [parse_stated_confidence(r["text"]) for r in rows]
    cut = [_CUT.split(r["text"], maxsplit=1)[0] for r in rows]
    return {
        "y": np.array([float(task.grade(it, c).correct) for it, c in zip(items, cut, strict=True)]),
        "c": np.array([0.5 if v is None else v for v in stated]),
        "parsed": np.array([v is not None for v in stated]),
        "msp": np.exp(np.array([r["mean_logprob"] for r in rows])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-n", type=int, default=64)
    ap.add_argument("--eval-n", type=int, default=150)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sayself"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    from entrolab.backends import HFBackend
    from entrolab.calibration import metric_interval, paired_bootstrap
    from entrolab.inference.sayself import INSTRUCTIONS, fit_sayself
    from entrolab.tasks import load_task

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    task = load_task("arithmetic", level=args.level, instructions=INSTRUCTIONS)
    fit_items = task.items(args.fit_n, seed=0)
    seen = {it.meta["expression"] for it in fit_items}
    pool = task.items(args.eval_n, seed=1)
    items = [it for it in pool if it.meta["expression"] not in seen]
    prompts = [it.prompt for it in items]
    budget = args.max_new_tokens + 32  # room for the confidence and reason lines
    model_dir = args.out / "model"
    if (model_dir / "model.safetensors").is_file():
        backend = HFBackend.load()
        before = _replies(backend, prompts, args.out / "before.jsonl", budget)
        backend = HFBackend.load(str(model_dir))
        summary = json.loads((args.out / "fit.json").read_text())
    else:
        backend = HFBackend.load()
        before = _replies(backend, prompts, args.out / "before.jsonl", budget)
        fit = fit_sayself(backend, task, fit_items, samples=args.samples,
                          max_new_tokens=args.max_new_tokens, steps=args.steps, lr=args.lr,
                          on_progress=lambda s, d, t: print(f"  fit: {s}", flush=True))  # fmt: skip
        backend.model.save_pretrained(model_dir)
        backend.tokenizer.save_pretrained(model_dir)
        summary = fit.to_dict()
        (args.out / "fit.json").write_text(json.dumps(summary, indent=2))
    after = _replies(backend, prompts, args.out / "after.jsonl", budget)
    b, a = _scores(task, items, before), _scores(task, items, after)
    print(
        f"\nfit: level {args.level}, {args.fit_n} items × {args.samples} chains → "
        f"{summary['examples']} SFT examples (mean target confidence "
        f"{summary['mean_target_confidence']:.3f}), {summary['steps']} steps, loss "
        f"{summary['first_loss']:.3f} → {summary['last_loss']:.3f}; held-out: {len(items)} items "
        f"({len(pool) - len(items)} dropped as seen); {time.perf_counter() - t0:.0f} s "
        "(machine shared)\n"
    )
    print("| model | accuracy | parsed | stated conf. (mean) | AUROC stated | ECE stated | "
          "Brier stated | AUROC exp(mean log-prob) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, s in (("base (before)", b), ("SaySelf stage 1 (after)", a)):
        acc = metric_interval("accuracy", s["c"], s["y"])
        auroc = metric_interval("auroc", 1 - s["c"], s["y"])
        ece = metric_interval("ece", s["c"], s["y"])
        brier = metric_interval("brier", s["c"], s["y"])
        msp = metric_interval("auroc", 1 - s["msp"], s["y"])
        print(f"| {name} | {_fmt(acc)} | {s['parsed'].mean():.3f} | {s['c'].mean():.3f} | "
              f"{_fmt(auroc)} | {_fmt(ece)} | {_fmt(brier)} | {_fmt(msp)} |")  # fmt: skip
    print("\n| after − before | Δ | 95% interval | p |")
    print("|---|---|---|---|")
    for metric, xa, xb in (("auroc", 1 - a["c"], 1 - b["c"]), ("ece", a["c"], b["c"]),
                           ("brier", a["c"], b["c"])):  # fmt: skip
        t = paired_bootstrap(metric, xa, xb, a["y"], correct_b=b["y"], stratify=False)
        sig = "" if t.low > 0 or t.high < 0 else " (not significant)"
        print(
            f"| {metric} | {t.difference:+.3f} | [{t.low:+.3f}, {t.high:+.3f}] | {t.p_value:.3f}{sig} |"
        )
    for name, s in (("before", b), ("after", a)):
        m = s["parsed"]
        if 0 < s["y"][m].sum() < m.sum():
            iv = metric_interval("auroc", 1 - s["c"][m], s["y"][m])
            print(f"\nparsed-only AUROC {name}: {_fmt(iv)} (n = {int(m.sum())})")
        vals, counts = np.unique(np.round(s["c"][m], 2), return_counts=True)
        print(f"{name} stated values: {dict(zip(vals.tolist(), counts.tolist(), strict=True))}")


if __name__ == "__main__":
    main()
