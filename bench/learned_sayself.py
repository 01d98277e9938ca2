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

Stage 2 (``--stage2-steps N``, 0 = skip): RL with correctness + the SaySelf Brier reward
1 − 2(y − c)² from the merged stage-1 model (LoRA, the landed trainer configured from
``recipes/smollm_confidence.yaml`` with the stage-1 prompt, on the fit items only; see
``bench/_sayself_stage2.py``), checkpointed every step in runs/bench-sayself/stage2/ (a rerun
resumes), merged into runs/bench-sayself/stage2-model, then scored on the same held-out items
with the same protocol (stage2.jsonl): a third row and paired stage2 − base, stage2 − stage1.
``--stage1-model DIR`` reuses a model saved by ``entrolab fit sayself --out DIR`` (its
``sayself.json`` must match ``--fit-n`` and seed 0) instead of fitting stage 1 here;
``--model DIR`` sets the base model (a tiny one for a smoke run).

    OMP_NUM_THREADS=1 .venv/bin/python bench/learned_sayself.py --fit-n 64 --eval-n 150
    OMP_NUM_THREADS=2 .venv/bin/python bench/learned_sayself.py --eval-n 150 --threads 2 \\
        --stage1-model runs/sayself --stage2-steps 16

Replies go to runs/bench-sayself/{before,after,stage2}.jsonl and the merged model to
runs/bench-sayself/model (a rerun resumes); the table is printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _sayself_stage2 import run_stage2, stage2_config  # bench/ (the script's dir)

from entrolab.tasks.stated import answer_part


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
    cut = [answer_part(r["text"]) for r in rows]
    return {
        "y": np.array([float(task.grade(it, c).correct) for it, c in zip(items, cut, strict=True)]),
        "c": np.array([0.5 if v is None else v for v in stated]),
        "parsed": np.array([v is not None for v in stated]),
        "msp": np.exp(np.array([r["mean_logprob"] for r in rows])),
    }


def _stage1(args, task, fit_items, prompts, budget):
    """(base replies, stage-1 backend, stage-1 fit summary): the base model's replies, then the
    stage-1 model: ``--stage1-model``, or the one saved in the run dir, or fitted here."""
    from entrolab.backends import HFBackend
    from entrolab.inference.sayself import INSTRUCTIONS, fit_sayself

    source = str((args.stage1_model or args.out / "model").resolve())
    mark = args.out / "stage1_source.txt"  # the after/stage-2 caches belong to one stage-1 model
    if mark.is_file() and mark.read_text() != source:
        raise SystemExit(
            f"{args.out} holds results of stage 1 = {mark.read_text()}; use another --out"
        )
    mark.write_text(source)
    backend = HFBackend.load(args.model)
    before = _replies(backend, prompts, args.out / "before.jsonl", budget)
    if args.stage1_model is not None:
        summary = json.loads((args.stage1_model / "sayself.json").read_text())
        if summary.get("instructions") != INSTRUCTIONS or summary.get("stage") != 1:
            raise SystemExit(f"{args.stage1_model} is not a stage-1 model with today's prompt")
        if summary.get("items") != args.fit_n or summary.get("seed") != 0:
            raise SystemExit(
                f"{args.stage1_model} was fitted on {summary.get('items')} items of seed "
                f"{summary.get('seed')}: pass --fit-n {summary.get('items')} (seed 0 only)"
            )
        return before, HFBackend.load(str(args.stage1_model)), summary
    model_dir = args.out / "model"
    if (model_dir / "model.safetensors").is_file():
        return (
            before,
            HFBackend.load(str(model_dir)),
            json.loads((args.out / "fit.json").read_text()),
        )
    fit = fit_sayself(backend, task, fit_items, samples=args.samples,
                      max_new_tokens=args.max_new_tokens, steps=args.steps, lr=args.lr,
                      on_progress=lambda s, d, t: print(f"  fit: {s}", flush=True))  # fmt: skip
    backend.model.save_pretrained(model_dir)
    backend.tokenizer.save_pretrained(model_dir)
    summary = fit.to_dict()
    (args.out / "fit.json").write_text(json.dumps(summary, indent=2))
    return before, backend, summary


def _stage2(args, prompts, budget) -> tuple[list[dict], dict]:
    """Stage-2 replies and run summary: train (or resume), merge, save, answer the held-out
    items; a saved stage-2 model of another step count is trained on and its replies redone."""
    from entrolab.backends import HFBackend

    stage1 = args.stage1_model or args.out / "model"
    out = args.out / "stage2-model"
    saved = out / "stage2.json"
    summary = json.loads(saved.read_text()) if saved.is_file() else None
    want = {"steps": args.stage2_steps, "prompts_per_step": args.stage2_prompts_per_step,
            "group_size": args.stage2_group_size, "lr": args.stage2_lr,
            "max_new_tokens": args.stage2_max_new_tokens or budget}  # fmt: skip
    if summary is None or any(summary.get(k) != v for k, v in want.items()):
        (args.out / "stage2.jsonl").unlink(missing_ok=True)  # the trainer refuses new settings
        cfg = stage2_config(stage1, level=args.level, fit_n=args.fit_n, threads=args.threads,
                            **want)  # fmt: skip
        summary = run_stage2(cfg, args.out / "stage2", out, log=lambda m: print(f"  stage 2: {m}"))
    backend = HFBackend.load(str(out))
    return _replies(backend, prompts, args.out / "stage2.jsonl", budget), summary


def _paired(title: str, a: dict, b: dict) -> None:
    """Paired bootstrap of a − b (same items, graded separately) for AUROC, ECE and Brier."""
    from entrolab.calibration import paired_bootstrap

    print(f"\n| {title} | Δ | 95% interval | p |")
    print("|---|---|---|---|")
    for metric, xa, xb in (("auroc", 1 - a["c"], 1 - b["c"]), ("ece", a["c"], b["c"]),
                           ("brier", a["c"], b["c"])):  # fmt: skip
        t = paired_bootstrap(metric, xa, xb, a["y"], correct_b=b["y"], stratify=False)
        sig = "" if t.low > 0 or t.high < 0 else " (not significant)"
        print(
            f"| {metric} | {t.difference:+.3f} | [{t.low:+.3f}, {t.high:+.3f}] | {t.p_value:.3f}{sig} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="base model (default: the embedded one)")
    ap.add_argument("--fit-n", type=int, default=64)
    ap.add_argument("--eval-n", type=int, default=150)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--stage1-model", type=Path, default=None,
                    help="a merged stage-1 model (entrolab fit sayself --out DIR)")  # fmt: skip
    ap.add_argument("--stage2-steps", type=int, default=0, help="RL steps (0 = no stage 2)")
    ap.add_argument("--stage2-prompts-per-step", type=int, default=8)
    ap.add_argument("--stage2-group-size", type=int, default=4)
    ap.add_argument("--stage2-max-new-tokens", type=int, default=None,
                    help="default: --max-new-tokens + 32, the evaluation budget")  # fmt: skip
    ap.add_argument("--stage2-lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sayself"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from entrolab.calibration import metric_interval
    from entrolab.inference.sayself import INSTRUCTIONS
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
    before, backend, summary = _stage1(args, task, fit_items, prompts, budget)
    after = _replies(backend, prompts, args.out / "after.jsonl", budget)
    del backend
    rows = [("base (before)", _scores(task, items, before)),
            ("SaySelf stage 1 (after)", _scores(task, items, after))]  # fmt: skip
    if args.stage2_steps > 0:
        t2 = time.perf_counter()
        replies2, s2 = _stage2(args, prompts, budget)
        rows.append(("SaySelf stage 2 (RL)", _scores(task, items, replies2)))
    print(
        f"\nfit: level {args.level}, {args.fit_n} items × {summary['samples']} chains → "
        f"{summary['examples']} SFT examples (mean target confidence "
        f"{summary['mean_target_confidence']:.3f}), {summary['steps']} steps, loss "
        f"{summary['first_loss']:.3f} → {summary['last_loss']:.3f}; held-out: {len(items)} items "
        f"({len(pool) - len(items)} dropped as seen); {time.perf_counter() - t0:.0f} s "
        "(machine shared)"
    )
    if args.stage2_steps > 0:
        print(
            f"stage 2: {s2['steps']} RL steps × {s2['prompts_per_step']} prompts × "
            f"{s2['group_size']} samples (≤ {s2['max_new_tokens']} tokens, lr {s2['lr']:g}, "
            f"{s2['threads']} threads), mean step {s2['mean_step_s'] or 0:.0f} s; train reward "
            f"{s2['reward']}, accuracy {s2['accuracy']}, stated conf. {s2['stated_confidence']}, "
            f"parsed {s2['confidence_parsed']} (first → last step); this process spent "
            f"{time.perf_counter() - t2:.0f} s on stage 2"
        )
    print("\n| model | accuracy | parsed | stated conf. (mean) | AUROC stated | ECE stated | "
          "Brier stated | AUROC exp(mean log-prob) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, s in rows:
        acc = metric_interval("accuracy", s["c"], s["y"])
        auroc = metric_interval("auroc", 1 - s["c"], s["y"])
        ece = metric_interval("ece", s["c"], s["y"])
        brier = metric_interval("brier", s["c"], s["y"])
        msp = metric_interval("auroc", 1 - s["msp"], s["y"])
        print(f"| {name} | {_fmt(acc)} | {s['parsed'].mean():.3f} | {s['c'].mean():.3f} | "
              f"{_fmt(auroc)} | {_fmt(ece)} | {_fmt(brier)} | {_fmt(msp)} |")  # fmt: skip
    (_, b), (_, a) = rows[:2]
    _paired("after − before", a, b)
    if len(rows) > 2:
        _paired("stage2 − base", rows[2][1], b)
        _paired("stage2 − stage1", rows[2][1], a)
    for (_, s), name in zip(rows, ("before", "after", "stage2"), strict=False):
        m = s["parsed"]
        if 0 < s["y"][m].sum() < m.sum():
            iv = metric_interval("auroc", 1 - s["c"][m], s["y"][m])
            print(f"\nparsed-only AUROC {name}: {_fmt(iv)} (n = {int(m.sum())})")
        vals, counts = np.unique(np.round(s["c"][m], 2), return_counts=True)
        print(f"{name} stated values: {dict(zip(vals.tolist(), counts.tolist(), strict=True))}")


if __name__ == "__main__":
    main()
