"""RL with entropy control on the proxy task, and one GRPO step against TRL's GRPOTrainer.

Proxy mode (default): vanilla GRPO vs Clip-Cov vs KL-Cov vs forking tokens (top-20%) vs the
bottom-80% control, 3 seeds each, from ``recipes/proxy_grpo.yaml`` (a tiny model after SFT,
100 RL steps): entropy and held-out pass@1 / pass@8 curves and the fit of R = −a·e^H + b,
written to the "proxy" section of docs/rl_results.md with figures in docs/figures/. Runs live
in runs/bench-rl/ and resume if interrupted (run the same command again).

    .venv/bin/python bench/rl.py                                  # the full comparison
    .venv/bin/python bench/rl.py --steps 6 --seeds 1 --arms GRPO,KL-Cov \\
        --runs /tmp/rl-smoke --out-md /tmp/rl-smoke/results.md      # smoke test

TRL mode: one GRPO step of the same configuration (8 prompts × 4 completions × ≤ 64 new tokens,
full fine-tuning, fp32, PPO-clip 0.2, token-mean, no KL, group-normalised advantages,
arithmetic level 1) through entrolab's trainer and through TRL's GRPOTrainer on the embedded
model, each in its own process: step time and peak RSS. Needs ``pip install trl`` (the TRL side
is skipped with a message otherwise). Compare under the same allocator (see
specs/measured_facts.md: tcmalloc changes both sides a lot).

    .venv/bin/python bench/rl.py --compare-trl [--steps 2]

Reasoning-length proxy (13 arms incl. STEER, SIREN, Clip_B/Clip_V, AEPO, ARES, TEA-RL and the
target-band controller; bench/rl_reasoning.py) and the Policy Cliff measurement
(bench/rl_cliff.py), reachable from here too:

    .venv/bin/python bench/rl.py reasoning [--steps 80 --seeds 3 --arms …]
    .venv/bin/python bench/rl.py cliff [--steps 40 --betas 0,0.001,0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "proxy_grpo.yaml"
# Clip-Cov / KL-Cov select a fraction ρ of the batch's response tokens. The paper's ρ (2e-4 /
# 2e-3) is tuned for thousands of tokens per response, of which a small share are decisions; a
# proxy reply has 4 tokens of which one (the first number) is the decision, and an optimizer
# step sees ~130 tokens, so ρ = 2e-3 touches 1 token per step. In a one-seed pilot ρ = 0.02 left
# the entropy curve indistinguishable from GRPO's; ρ = 0.1 (~13 tokens per optimizer step, about
# 40% of the decision tokens) is used here. Report ρ with the results.
ARMS: dict[str, list[str]] = {
    "GRPO": [],
    "Clip-Cov": ["algorithm.loss=clip_cov", "algorithm.loss_params.clip_cov_ratio=0.1"],
    "KL-Cov": ["algorithm.loss=kl_cov", "algorithm.loss_params.kl_cov_ratio=0.1"],
    "forking top-20%": ["algorithm.loss=forking_tokens"],
    "bottom-80%": ["algorithm.loss=forking_tokens_bottom"],
}


_MACHINE: str | None = None


def machine() -> str:
    """Machine line, with the load average of the first call (the start of the benchmark)."""
    global _MACHINE
    import torch

    _MACHINE = _MACHINE or (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at start"
    )
    return _MACHINE


def replace_section(path: Path, name: str, body: str) -> None:
    """Rewrite the ``<!-- name:begin -->…<!-- name:end -->`` section of ``path`` (or add it)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.is_file() else "# RL with entropy control: results\n\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ------------------------------------------------------------------------------ proxy mode
def run_arm(arm: str, seed: int, args) -> tuple[list[dict], float]:
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    overrides = [
        f"seed={seed}",
        f"steps={args.steps}",
        f"eval.every={args.eval_every}",
        "progress=false",
        *ARMS[arm],
    ]
    run_dir = Path(args.runs) / re.sub(r"[^A-Za-z0-9]+", "-", arm).strip("-") / f"seed{seed}"
    t0 = time.perf_counter()
    Trainer(load_config(RECIPE, overrides), run_dir).train()
    from entrolab.rl.checkpoint import read_metrics

    return read_metrics(run_dir), time.perf_counter() - t0


def time_recipe(args) -> float:
    """Wall time of the recipe as shipped (SFT without the cache + all RL steps), one process."""
    cmd = [
        sys.executable,
        "-c",
        "import sys, time, tempfile; from entrolab.rl.config import load_config; "
        "from entrolab.rl.trainer import Trainer; t = time.perf_counter(); "
        f"Trainer(load_config({str(RECIPE)!r}, ['sft.cache=false', 'progress=false', "
        f"'steps={args.steps}']), tempfile.mkdtemp()).train(); print(time.perf_counter() - t)",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def _final(recs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in recs if isinstance(r.get(key), int | float)]
    return float(vals[-1]) if vals else None


def _first(recs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in recs if isinstance(r.get(key), int | float)]
    return float(vals[0]) if vals else None


def _ms(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def proxy_mode(args) -> None:
    from entrolab.rl.plots import plot_comparison

    arms = [a.strip() for a in args.arms.split(",")] if args.arms else list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    print(machine(), flush=True)
    runs: dict[str, list[list[dict]]] = {}
    walls: dict[str, list[float]] = {}
    for arm in arms:
        for seed in range(args.seeds):
            recs, wall = run_arm(arm, seed, args)
            runs.setdefault(arm, []).append(recs)
            walls.setdefault(arm, []).append(wall)
            print(
                f"{arm:>16} seed {seed}: H {_final(recs, 'dyn/entropy'):.3f}  pass@1 "
                f"{_final(recs, 'eval/pass@1')}  pass@8 {_final(recs, 'eval/pass@8')}  "
                f"({wall:.0f} s)",
                flush=True,
            )
    recipe_s = time_recipe(args) if args.time_recipe else None
    md = Path(args.out_md)
    fig_dir = Path(args.fig_dir) if args.fig_dir else md.parent / "figures"
    curves = plot_comparison(runs, fig_dir / "rl_proxy_curves", formats=("svg", "png"))
    law = plot_laws(runs, fig_dir / "rl_proxy_law")
    replace_section(md, "proxy", proxy_markdown(args, runs, walls, recipe_s, curves, law, md))
    print(f"wrote {md}")


def plot_laws(runs: dict[str, list[list[dict]]], stem: Path) -> list[Path]:
    """Per arm: (H, R) of every step of every seed, and the law fitted on all of them."""
    from matplotlib.figure import Figure

    from entrolab.errors import EntrolabError
    from entrolab.rl.entropy_law import fit_entropy_law

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (arm, seeds) in enumerate(runs.items()):
        pts = [
            (r["dyn/entropy"], r["train/reward"])
            for recs in seeds
            for r in recs
            if isinstance(r.get("dyn/entropy"), float) and isinstance(r.get("train/reward"), float)
        ]
        h, rew = np.array(pts).T
        ax.scatter(h, rew, s=5, alpha=0.35, color=f"C{i}")
        try:
            fit = fit_entropy_law(h, rew)
        except EntrolabError:
            continue
        grid = np.linspace(0, h.max() * 1.05, 100)
        ax.plot(grid, fit.predict(grid), color=f"C{i}", label=f"{arm}: ceiling {fit.ceiling:.2f}")
    ax.set(xlabel="mean token entropy H (nats)", ylabel="train reward R", title="R = −a·e^H + b")
    ax.legend(fontsize=8)
    paths = [stem.with_suffix(".svg"), stem.with_suffix(".png")]
    for p in paths:
        fig.savefig(p, dpi=120)
    return paths


def proxy_markdown(args, runs, walls, recipe_s, curves, law, md: Path) -> str:
    rel = lambda p: os.path.relpath(p, md.parent)  # noqa: E731
    cmd = " ".join(["bench/rl.py", *sys.argv[1:]])
    lines = [
        "## Proxy task: entropy control methods (`bench/rl.py`)",
        "",
        f"Command: `.venv/bin/python {cmd}` — {machine()}; recipe `recipes/proxy_grpo.yaml`, "
        f"{args.steps} RL steps, {args.seeds} seed(s) per arm, held-out evaluation every "
        f"{args.eval_every} steps (128 items × 8 samples).",
        "",
    ]
    if recipe_s is not None:
        lines += [
            f"Recipe wall time (SFT without cache + {args.steps} steps, one process): "
            f"**{recipe_s:.0f} s** (budget 300 s).",
            "",
        ]
    lines += [
        "| arm | entropy step 1 → last | pass@1 start → last | pass@8 start → last | answer entropy "
        "last | law a / b / ceiling (R²) | sign(−cov) = sign(ΔH) | touched | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    finals = {}
    for arm, seeds in runs.items():
        h1 = [_first(r, "dyn/entropy") for r in seeds]
        hl = [_final(r, "dyn/entropy") for r in seeds]
        finals[arm] = np.mean([x for x in hl if x is not None])
        law_s = "/".join(
            _ms([_final(r, k) for r in seeds]) for k in ("law/a", "law/b", "law/ceiling")
        )
        lines.append(
            f"| {arm} | {_ms(h1)} → {_ms(hl)} "
            f"| {_ms([_first(r, 'eval/pass@1') for r in seeds])} → {_ms([_final(r, 'eval/pass@1') for r in seeds])} "
            f"| {_ms([_first(r, 'eval/pass@8') for r in seeds])} → {_ms([_final(r, 'eval/pass@8') for r in seeds])} "
            f"| {_ms([_final(r, 'eval/answer_entropy') for r in seeds])} "
            f"| {law_s} ({_ms([_final(r, 'law/r2') for r in seeds])}) "
            f"| {_ms([_final(r, 'dyn/sign_agree') for r in seeds])} "
            f"| {_ms([float(np.mean([x['loss/touched_frac'] for x in r if 'loss/touched_frac' in x] or [0])) for r in seeds])} "
            f"| {np.mean(walls[arm]):.0f} |"
        )
    lines += ["", f"![curves]({rel(curves[0])})", "", f"![law]({rel(law[0])})", ""]
    if "GRPO" in finals:
        base = finals["GRPO"]
        first = np.mean([_first(r, "dyn/entropy") for r in runs["GRPO"]])
        seen = [
            f"Vanilla GRPO: mean token entropy {first:.3f} → {base:.3f} nats "
            f"({'collapsed to' if base < 0.5 * first else 'kept'} {base / first:.0%} of its start)."
        ]
        for arm in ("KL-Cov", "Clip-Cov"):
            if arm in finals:
                ratio = finals[arm] / base
                verdict = "holds" if ratio >= 1.5 else "does not hold"
                seen.append(
                    f"{arm}: final entropy {ratio:.2f}× GRPO's — entropy {verdict} "
                    "(criterion of the spec's CPU check: ≥ 1.5×)."
                )
        lines += ["What was seen (generated from the numbers above):", ""]
        lines += [f"- {s}" for s in seen]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- TRL mode
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side_entrolab(args) -> dict:
    import torch

    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    torch.set_num_threads(args.threads)
    cfg = load_config(
        ROOT / "recipes" / "smollm_grpo.yaml",
        [
            f"model.name={args.model}" if args.model else "model.name=null",
            "task.settings.level=1",  # the TRL side uses the same task
            "rollout.prompts_per_step=8",
            "rollout.group_size=4",
            "rollout.max_new_tokens=64",
            "algorithm.mini_batches=1",
            "algorithm.micro_batch_size=2",  # peak RSS ~3.4 GB (4: ~3.9 GB), same speed
            "task.eval_items=0",
            "monitor.probe_prompts=0",
            "progress=false",
            "tensorboard=false",
            f"threads={args.threads}",
        ],
    )
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="entrolab-bench-"))
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        rec = trainer.train_step()
        times.append(time.perf_counter() - t0)
        print(f"entrolab step {rec['step']}: {times[-1]:.1f} s", flush=True)
    return {"step_s": times, "peak_rss_mb": _peak_rss_mb()}


def side_trl(args) -> dict:
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError as e:
        return {"skipped": f"TRL side not run: {e} (pip install trl)"}
    import torch

    from entrolab.models import load_model
    from entrolab.tasks import load_task

    torch.set_num_threads(args.threads)
    task = load_task("arithmetic", level=1)
    items = task.items(8 * args.steps, seed=0)
    by_prompt = {it.prompt: it for it in items}
    if args.model == "tiny":  # smoke test of this code path
        from entrolab.models import tiny_model

        model, tokenizer = tiny_model(seed=0)
    else:
        loaded = load_model(args.model)
        model, tokenizer = loaded.model, loaded.tokenizer

    def reward(prompts, completions, **_):
        out = []
        for p, c in zip(prompts, completions, strict=True):
            text = p[-1]["content"] if isinstance(p, list) else p
            reply = c[-1]["content"] if isinstance(c, list) else c
            out.append(1.0 if task.grade(by_prompt[text], reply).correct else 0.0)
        return out

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)
            print(f"TRL step {len(times)}: {times[-1]:.1f} s", flush=True)

    config = trl.GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=32,  # 8 prompts × 4 completions
        num_generations=4,
        max_completion_length=64,
        learning_rate=2e-6,
        max_steps=args.steps,
        temperature=1.0,
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",  # token-mean over the batch, like entrolab's token-mean
        scale_rewards="group",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": it.prompt}]} for it in items]
    )
    trainer = trl.GRPOTrainer(
        model=model.train(),
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    return {"step_s": times, "peak_rss_mb": _peak_rss_mb(), "trl": trl.__version__}


def compare_trl(args) -> None:
    machine()  # record the load average before the runs
    results = {}
    for side in ("entrolab", "trl"):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        cmd = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--side-out",
            out,
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
        ] + (["--model", args.model] if args.model else [])
        print(f"running the {side} side…", flush=True)
        proc = subprocess.run(cmd, cwd=ROOT)
        results[side] = (
            json.loads(Path(out).read_text())
            if proc.returncode == 0
            else {"skipped": f"{side} side failed (exit {proc.returncode})"}
        )
    lines = [
        "## One GRPO step: entrolab vs TRL GRPOTrainer (`bench/rl.py --compare-trl`)",
        "",
        f"{machine()}; model {args.model or 'embedded SmolLM2-135M-Instruct'}, 8 prompts × 4 "
        f"completions × ≤ 64 new tokens, fp32, full fine-tuning, {args.threads} threads, "
        f"allocator: {'tcmalloc' if 'tcmalloc' in os.environ.get('LD_PRELOAD', '') else 'glibc'}. "
        "TRL runs with its GRPOConfig defaults otherwise (gradient checkpointing on, "
        "loss_type dapo); entrolab's step includes its entropy monitor (no probe set).",
        "",
        "| side | step times (s) | peak RSS (MB) |",
        "|---|---|---|",
    ]
    for side, r in results.items():
        if "skipped" in r:
            lines.append(f"| {side} | {r['skipped']} | – |")
        else:
            lines.append(
                f"| {side} | {', '.join(f'{t:.1f}' for t in r['step_s'])} | {r['peak_rss_mb']:.0f} |"
            )
    ok = all("skipped" not in r for r in results.values())
    if ok:
        ratio = results["entrolab"]["step_s"][-1] / results["trl"]["step_s"][-1]
        lines += [
            "",
            f"Last step time ratio entrolab / TRL: **{ratio:.2f}×** (goal ≤ 0.8×); "
            f"entrolab peak RSS {results['entrolab']['peak_rss_mb'] / 1024:.2f} GB (goal ≤ 4 GB).",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out_md:
        replace_section(Path(args.out_md), "trl", text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("reasoning", "cliff"):
        mode = sys.argv.pop(1)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import importlib

        importlib.import_module("rl_reasoning" if mode == "reasoning" else "rl_cliff").main()
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=None, help="RL steps (proxy 100, TRL mode 2)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--arms",
        default=None,
        help="comma-separated subset of: " + ", ".join(ARMS).replace("%", "%%"),
    )
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench-rl"))
    ap.add_argument("--out-md", default=str(ROOT / "docs" / "rl_results.md"))
    ap.add_argument("--fig-dir", default=None, help="[default: <out-md folder>/figures]")
    ap.add_argument(
        "--no-time-recipe",
        dest="time_recipe",
        action="store_false",
        help="skip timing the shipped recipe end to end (SFT + steps)",
    )
    ap.add_argument("--compare-trl", action="store_true")
    ap.add_argument("--model", default=None, help="TRL mode: model [default: embedded]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", choices=["entrolab", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--side-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        args.steps = args.steps or 2
        result = side_entrolab(args) if args.side == "entrolab" else side_trl(args)
        Path(args.side_out).write_text(json.dumps(result))
        return
    if args.compare_trl:
        args.steps = args.steps or 2
        compare_trl(args)
        return
    args.steps = args.steps or 100
    proxy_mode(args)


if __name__ == "__main__":
    main()
