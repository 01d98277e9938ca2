"""MI(hidden state; correctness) per layer of the embedded model (spec B22, issue 16 point 9).

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/hidden_mi.py [--n 300] [--level 2]
          [--layers-every 2] [--out runs/bench-hidden-mi] [--figure docs/figures/hidden_mi_layers.svg]

SmolLM2-135M-Instruct answers n built-in arithmetic items greedily (chat template, ≤ 24 new
tokens); each answer is graded (Y = 1 right). One forward pass over prompt + reply gives every
layer's hidden state (index 0 = embeddings, i = output of block i) at two positions: the last
prompt token (before answering: what a probe could read up front) and the last reply token.
For every ``--layers-every``-th layer, entrolab.studies.hidden_mi.layer_mi estimates I(h; Y) in
nats (PCA-16 of the standardised states, separable InfoNCE critic, max-test early stopping,
5 random 70/30 splits; 95% interval = pooled bootstrap over held-out items), next to a
cross-fitted logistic probe on the same PCA-16 features: its AUROC and its variational bound
H(Y) − held-out log-loss (a lower bound on I as well). H(Y) ≤ log 2 is the ceiling.
Stages are saved to OUT (greedy.jsonl, hidden.safetensors, mi.json), so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch


def greedy_stage(backend, task, items, out: Path, max_new_tokens: int) -> list[dict]:
    from entrolab.config import GenerationConfig

    path = out / "greedy.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    done = {r["id"] for r in rows}
    cfg = GenerationConfig(num_samples=1, temperature=0.0, max_new_tokens=max_new_tokens)
    todo = [it for it in items if it.id not in done]
    for start in range(0, len(todo), 16):
        chunk = todo[start : start + 16]
        traces = backend.generate([it.prompt for it in chunk], cfg)
        new = [
            {"id": it.id, "prompt": it.prompt, "reply_ids": t.token_ids.tolist(), "text": t.text,
             "correct": bool(task.grade(it, t.text).correct)}
            for it, t in zip(chunk, traces, strict=True)
        ]  # fmt: skip
        with path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in new))
        rows += new
        print(f"\rgreedy {len(rows)}/{len(items)}", end="", flush=True)
    print()
    by_id = {r["id"]: r for r in rows}
    return [by_id[it.id] for it in items]


def hidden_stage(backend, rows: list[dict], out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file, save_file

    from entrolab.backends.base import torch_model

    path = out / "hidden.safetensors"
    if path.exists():
        data = load_file(str(path))
        if data["correct"].shape[0] == len(rows):
            return data
    model = torch_model(backend, "hidden-state MI")
    prompt_end, reply_end = [], []
    with torch.no_grad():
        for i, r in enumerate(rows):
            p = backend.prompt_ids(r["prompt"])
            ids = torch.tensor([list(p) + list(r["reply_ids"])])
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states  # L+1 × [1, T, H]
            prompt_end.append(torch.stack([h[0, len(p) - 1] for h in hs]).numpy())
            reply_end.append(torch.stack([h[0, -1] for h in hs]).numpy())
            print(f"\rhidden {i + 1}/{len(rows)}", end="", flush=True)
    print()
    data = {
        "prompt_end": np.stack(prompt_end, axis=1).astype(np.float32),  # [L+1, N, H]
        "reply_end": np.stack(reply_end, axis=1).astype(np.float32),
        "correct": np.array([r["correct"] for r in rows], dtype=np.float32),
    }
    save_file(data, str(path))
    return data


def probe_stats(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """5-fold cross-fitted logistic probe on PCA-16: AUROC and H(Y) − held-out log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from entrolab.studies.hidden_mi import _pca

    z = _pca(x.astype(np.float64), 16)
    prob = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(z, y):
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(z[tr], y[tr])
        prob[te] = clf.predict_proba(z[te])[:, 1]
    p = y.mean()
    h_y = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    q = np.clip(prob, 1e-6, 1 - 1e-6)
    logloss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    return {"probe_auroc": float(roc_auc_score(y, prob)), "probe_bound": float(h_y - logloss)}


def figure(results: dict, h_y: float, n: int, path: Path) -> None:
    from entrolab.report.figures import legend_below, new_figure, series_style, to_svg

    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for i, (pos, label) in enumerate(
        [("prompt_end", "last prompt token"), ("reply_end", "last reply token")]
    ):
        layers = sorted(int(k) for k in results[pos])
        est = np.array([results[pos][str(k)]["estimate"] for k in layers])
        lo = np.array([results[pos][str(k)]["low"] for k in layers])
        hi = np.array([results[pos][str(k)]["high"] for k in layers])
        off = (i - 0.5) * 0.3
        ax.errorbar(np.array(layers) + off, est, yerr=[est - lo, hi - est], capsize=2,
                    label=f"{label} (critic, 95% CI)", **series_style(i))  # fmt: skip
    ax.axhline(h_y, color="#999999", ls=":", lw=1)
    ax.text(0, h_y, " H(Y) (ceiling)", va="bottom", fontsize=8, color="#555555")
    ax.axhline(0.0, color="#cccccc", lw=0.8)
    ax.set_xlabel("layer (0 = embeddings, i = output of block i)")
    ax.set_ylabel("I(hidden; correct) (nats)")
    ax.set_title(f"SmolLM2-135M-Instruct, arithmetic, n = {n}")
    legend_below(fig, ncols=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_svg(fig), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--layers-every", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-hidden-mi")
    ap.add_argument("--figure", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from entrolab.backends import HFBackend
    from entrolab.studies.hidden_mi import layer_mi
    from entrolab.tasks import load_task

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task("arithmetic", level=args.level)
    items = task.items(args.n, seed=0)
    backend = HFBackend.load()
    rows = greedy_stage(backend, task, items, out, args.max_new_tokens)
    data = hidden_stage(backend, rows, out)
    y = data["correct"].astype(np.float64)
    n_layers = data["prompt_end"].shape[0]
    layers = sorted(set(range(0, n_layers, args.layers_every)) | {n_layers - 1})
    mi_path = out / "mi.json"
    results = json.loads(mi_path.read_text()) if mi_path.exists() else {}
    for pos in ("prompt_end", "reply_end"):
        for layer in layers:
            if str(layer) in results.get(pos, {}):
                continue
            x = data[pos][layer].astype(np.float64)
            r = {**layer_mi(x, y, seed=0), **probe_stats(x, y)}
            results.setdefault(pos, {})[str(layer)] = r
            mi_path.write_text(json.dumps(results, indent=1))
            print(f"{pos} layer {layer}: {r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
                  flush=True)  # fmt: skip
    p = y.mean()
    h_y = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    print(f"\nn = {len(y)}, accuracy {p:.3f}, H(Y) = {h_y:.3f} nats\n")
    print("| layer | position | I critic [95% CI] (nats) | probe bound (nats) | probe AUROC |")
    print("|---|---|---|---|---|")
    for layer in layers:
        for pos in ("prompt_end", "reply_end"):
            r = results[pos][str(layer)]
            print(f"| {layer} | {pos} | {r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
                  f"{r['probe_bound']:.3f} | {r['probe_auroc']:.3f} |")  # fmt: skip
    if args.figure:
        figure(results, h_y, len(y), Path(args.figure))
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
