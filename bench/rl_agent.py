"""Agentic AEPO with multi-turn tool rollouts on a tiny model that calls a calculator (issue 12).

The tiny proxy-sized byte-level Llama cannot compute ``a * b + c`` with 1-2-digit operands, but it
can learn to copy. SFT on tool-calling demonstrations teaches it the protocol: half of the
demonstrations call the calculator twice (the higher-precedence pair first, then the rest with the
first result copied in) and answer with the second result; the other half answer at once with a
guess (wrong). The SFT model therefore calls the tool in about half of its episodes, and RL with
the verifier reward can raise that rate. Arms, all multi-turn (``explore.mode: agent``), k = 8
episodes per prompt:

- ``aepo``: agentic AEPO — entropy pre-monitoring budget split, consecutive-branch penalty 0.5,
  stop-gradient clipping of high-entropy tokens (loss ``aepo_agentic``);
- ``aepo-nopen``: the same without the consecutive-branch penalty (penalty 0);
- ``aepo-beta10``: AEPO with β = 10 in the budget split (β = 1 leaves it at k/2 when the
  entropies are below ~0.25 nats);
- ``aepo-plainclip``: AEPO's rollout with the plain PPO clip (``sg_clip: false``), the control
  of the stop-gradient clip;
- ``grpo``: plain multi-turn GRPO (k root episodes, PPO clip);
- ``empg``: the same with EMPG's advantage shaping, one agent step per model turn
  (``step_delimiter: "<turn>"``, :func:`entrolab.rl.agent.turn_step_ids`).

Per arm and seed (runs in ``<out>/<arm>-s<seed>``, resumable): tool-call rate and accuracy of k = 4
plain episodes on 64 held-out items at the start and the end, the training-time branch metrics
(budget split, branches after a high-entropy tool step, concentration on one root episode), and
the share of clipped high-entropy tokens that keep a gradient. Mean ± 95% t-interval over seeds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/rl_agent.py --steps 30 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION = ""  # text after each prompt: none, the protocol is taught by SFT (short transcripts)
ARMS: dict[str, list[str]] = {
    "aepo": ["algorithm.loss=aepo_agentic", "explore.agent_penalty=0.5"],
    "aepo-nopen": ["algorithm.loss=aepo_agentic", "explore.agent_penalty=0.0"],
    "aepo-beta10": [  # a budget split that moves at small entropy gaps (β = 10)
        "algorithm.loss=aepo_agentic",
        "explore.agent_penalty=0.5",
        "explore.agent_beta=10",
    ],
    "aepo-plainclip": [  # AEPO's rollout with the plain PPO clip (no stop-gradient clip)
        "algorithm.loss=aepo_agentic",
        "explore.agent_penalty=0.5",
        "algorithm.loss_params.sg_clip=false",
    ],
    "grpo": ["algorithm.loss=ppo_clip", "explore.agent_aepo=false"],
    "empg": [
        "algorithm.loss=ppo_clip",
        "explore.agent_aepo=false",
        "algorithm.advantage=grpo+empg",
        "algorithm.advantage_params.step_delimiter=<turn>",
    ],
}
BASE = [
    "model.name=tiny",
    "task.spec=arithmetic",
    "rollout.prompts_per_step=8",
    "rollout.group_size=8",
    "rollout.max_new_tokens=64",
    "rollout.temperature=1.0",
    "rollout.chat_template=false",
    "algorithm.advantage=grpo",
    "algorithm.mini_batches=2",
    "algorithm.micro_batch_size=32",
    "optim.lr=2e-4",
    "eval.every=0",
    "eval.at_start=false",
    "monitor.probe_prompts=0",
    "explore.mode=agent",
    "explore.agent_max_turns=3",
    f"explore.agent_instruction={INSTRUCTION}",
    "checkpoint_every=10",
    "tensorboard=false",
    "progress=false",
]


def make_task():
    from entrolab.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask(4, num_terms=3, min_digits=1, max_digits=2, operators=("*", "+"),
                          template="{expression}=", instructions="")  # fmt: skip


def demo(item, rng: random.Random, p_tool: float) -> str:
    """One demonstration transcript (model turns and tool messages) for ``item``."""
    a, b, c = item.meta["operands"]
    o1, o2 = item.meta["operators"]
    value = int(item.answer)
    if rng.random() >= p_tool:
        guess = value + rng.choice([-1, 1]) * rng.randint(1, 30)
        return f"Answer: {guess}"
    if o2 == "*" and o1 == "+":  # a + b * c: the product first
        first, p = f"{b}*{c}", b * c
        second = f"{a}+{p}"
    else:
        first, p = f"{a}{o1}{b}", (a * b if o1 == "*" else a + b)
        second = f"{p}{o2}{c}"
    return (
        f"<tool>{first}</tool><result>{p}</result><tool>{second}</tool><result>{value}</result>"
        f"Answer: {value}"
    )


def sft(out: Path, seed: int, p_tool: float, steps: int):
    """The tiny model after SFT on tool demonstrations (cached in ``out/sft-s<seed>``)."""
    import torch
    from safetensors.torch import load_file, save_file

    from entrolab.models import tiny_model
    from entrolab.rl.checkpoint import load_trainable, trainable_state
    from entrolab.rl.proxy import train_sft

    model, tok = tiny_model(hidden_size=96, num_layers=3, num_heads=4, seed=seed)
    path = out / f"sft-s{seed}" / "model.safetensors"
    if path.is_file():
        load_trainable(model, load_file(str(path)))
        return model.eval(), tok
    task = make_task()
    rng = random.Random(f"tool-demo|{seed}")
    items = task.items(6000, seed=50_000 + seed)
    pairs = [(it.prompt + INSTRUCTION, demo(it, rng, p_tool)) for it in items]
    losses = train_sft(model, tok, pairs, steps=steps, batch_size=32, lr=3e-3, seed=seed,
                       checkpoint_dir=path.parent / "partial")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(path))  # tied embeddings saved once
    (path.parent / "sft.json").write_text(json.dumps({"final_loss": float(np.mean(losses[-50:]))}))
    torch.manual_seed(seed)
    return model.eval(), tok


def tool_eval(backend, task, n_items: int, k: int, seed: int) -> dict[str, float]:
    """Plain episodes (no budget split): tool-call rate and accuracy over n_items × k."""
    from entrolab.config import GenerationConfig
    from entrolab.rl.agent import agent_rollout

    items = task.items(n_items, seed=90_000)
    cfg = GenerationConfig(num_samples=k, max_new_tokens=64, temperature=1.0,
                           chat_template=False)  # fmt: skip
    ro, m = agent_rollout(backend, [it.prompt for it in items], cfg,
                          [seed * 1000 + i for i in range(n_items)], max_turns=3, aepo=False,
                          instruction=INSTRUCTION)  # fmt: skip
    rows = [items[i] for i in ro.prompt_index.tolist()]
    correct = [task.grade(it, t).correct for it, t in zip(rows, ro.texts, strict=True)]
    return {"tool_call_frac": m["agent/tool_call_frac"], "tool_error_frac":
            m["agent/tool_error_frac"], "accuracy": float(np.mean(correct))}  # fmt: skip


def run(arm: str, seed: int, steps: int, out: Path, p_tool: float, sft_steps: int) -> dict:
    import torch

    from entrolab.backends import HFBackend
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    torch.set_num_threads(1)
    run_dir = out / f"{arm}-s{seed}"
    done = run_dir / "agent_eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    task = make_task()
    model, tok = sft(out, seed, p_tool, sft_steps)
    start = tool_eval(HFBackend(model, tok), task, 64, 4, seed)
    cfg = load_config(None, [*BASE, *ARMS[arm], f"seed={seed}", f"steps={steps}"])
    tr = Trainer(cfg, run_dir, model=model, tokenizer=tok, task=task)
    recs = tr.train()
    end = tool_eval(HFBackend(tr.policy, tok), task, 64, 4, seed)
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    def mean(key: str) -> float:
        vals = [r[key] for r in recs if key in r]
        return float(np.mean(vals)) if vals else float("nan")

    row = {
        "tool calls start": start["tool_call_frac"],
        "tool calls end": end["tool_call_frac"],
        "accuracy start": start["accuracy"],
        "accuracy end": end["accuracy"],
        "tool errors end": end["tool_error_frac"],
        "train tool calls (first 5)": float(np.mean([r["agent/tool_call_frac"] for r in recs[:5]])),
        "train tool calls (last 5)": float(np.mean([r["agent/tool_call_frac"] for r in recs[-5:]])),
        "root frac": mean("agent/root_frac"),
        "branch frac": mean("agent/branch_frac"),
        "branch after high-H step": mean("agent/branch_after_high_frac"),
        "branch concentration": mean("agent/branch_concentration"),
        "hi-clip grad frac": mean("loss/hi_clip_grad_frac"),
        "H_roll last 5": float(
            np.mean([r["dyn/entropy"] for r in recs[-5:] if "dyn/entropy" in r])
        ),
    }
    done.write_text(json.dumps(row))
    return row


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from rl_explore import paired_lines, t_interval

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--p-tool", type=float, default=0.5)
    ap.add_argument("--sft-steps", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-rl-agent")
    ap.add_argument("--only-seed", type=int, default=None, help="run one seed (parallel runs)")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    table: dict[str, list[dict]] = {}
    t0 = time.time()
    for arm in [x.strip() for x in a.arms.split(",") if x.strip()]:
        for seed in range(a.seeds) if a.only_seed is None else [a.only_seed]:
            table.setdefault(arm, []).append(run(arm, seed, a.steps, a.out, a.p_tool, a.sft_steps))
            print(f"[{time.time() - t0:6.0f}s] {arm} seed {seed}: {table[arm][-1]}", flush=True)
    cols = list(next(iter(table.values()))[0])
    lines = [
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/rl_agent.py --steps {a.steps} "
        f"--seeds {a.seeds} --p-tool {a.p_tool} --sft-steps {a.sft_steps}` (n = {a.seeds} seeds; "
        "mean ± 95% t-interval half-width over seeds; tool/accuracy evals: 64 held-out items × 4 "
        "plain episodes).",
        "",
        "| arm | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for arm, rows in table.items():
        cells = []
        for c in cols:
            m, h, n = t_interval([r[c] for r in rows])
            cells.append("n/a" if n == 0 else f"{m:.3f}" if n < 2 else f"{m:.3f} ± {h:.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if "grpo" in table and len(table) > 1:
        keys = ["tool calls end", "accuracy end", "H_roll last 5"]
        lines += ["", *paired_lines(table, "grpo", keys)]
    text = "\n".join(lines) + "\n"
    print(text)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.md").write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
