"""Screenshot gallery: run the smallest real run of every command that draws a figure or writes a
report, render each output to a small PNG in docs/gallery/, and write docs/gallery/README.md
with the command behind every image.

    .venv/bin/python bench/gallery.py                 # runs (resumable) + screenshots + index
    .venv/bin/python bench/gallery.py --only eval,rl  # some sections only

Runs live in runs/gallery/ (re-running the command reuses finished runs and re-renders every
report with the current code). HTML pages and SVG figures are rendered in headless Chromium
(Debian's /usr/bin/chromium driven by the Python ``playwright`` package, no download); PNG
figures are copied. Every image is reduced to a 256-colour PNG so that each stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTROLAB = str(Path(sys.executable).with_name("entrolab"))
CHROMIUM = Path("/usr/bin/chromium")
PROMPT = "A farmer has 17 sheep and buys 25 more. How many sheep does he have now?"
MAX_BYTES = 150_000


def _sections(runs: Path) -> dict[str, list[list[str]]]:
    """Section → the commands (argv without the program) that produce its outputs."""
    rl = [
        [
            "train", "-r", "recipes/proxy_grpo.yaml", "--out", f"{runs}/rl/{arm}-s{seed}",
            "--no-plot", "steps=12", "eval.every=4", "calibration.every=4",
            "checkpoint_every=12", f"seed={seed}", *extra,
        ]
        for arm, extra in (("grpo", []), ("klcov", ["algorithm.loss=kl_cov"]))
        for seed in (0, 1, 2)
    ]  # fmt: skip
    return {
        "analyze": [
            ["analyze", PROMPT, "--samples", "2", "--temperature", "0.7", "--max-new-tokens", "48",
             "--html", f"{runs}/analyze/report.html", "--json", f"{runs}/analyze/traces.json"],
        ],
        "eval": [
            ["eval", "--n", "16", "--samples", "3", "--temperature", "0.7", "--max-new-tokens",
             "48", "--estimators",
             "mean_token_entropy,perplexity,deepconf_bottom10,answer_agreement,msp",
             "--out", f"{runs}/eval"],
            ["eval", "--report", f"{runs}/eval"],
        ],
        "compare-samplers": [
            ["compare-samplers", "--sampler", "top_p", "--sampler", "min_p", "--temperature",
             "0.7", "--temperature", "1.2", "--n", "6", "--samples", "3", "--max-new-tokens",
             "48", "--out", f"{runs}/compare"],
            ["compare-samplers", "--report", f"{runs}/compare"],
        ],
        "pareto": [
            ["pareto", "--strategies", "majority,deepconf-online", "--budgets", "2,4", "--n", "6",
             "--out", f"{runs}/pareto"],
            ["pareto", "--report", f"{runs}/pareto"],
        ],
        "rl": [*rl, ["plot", f"{runs}/rl/grpo-s0"]],
        "leash": [
            ["leash", f"{runs}/rl/grpo-s0@start", f"{runs}/rl/grpo-s0", "--k", "16", "--items",
             "32", "--out", f"{runs}/leash"],
        ],
        "tta": [
            ["tta", "--method", "source", "--method", "norm", "--method", "tent", "--method",
             "woc", "--stream", "short", "--out", f"{runs}/tta"],
        ],
    }  # fmt: skip


#: section → (image name, source relative to the runs dir, what to look at)
IMAGES: dict[str, list[tuple[str, str, str]]] = {
    "analyze": [
        ("analyze_report.png", "analyze/report.html",
         "token heatmap (hover a token for its top-k), entropy per position with the "
         "window mean and forking tokens, per-sample summary with units"),
    ],
    "eval": [
        ("eval_report.png", "eval/report.html",
         "accuracy with its exact interval, the estimator table with 95% intervals and ties, "
         "reliability diagrams (bars = accuracy, dots = mean confidence, dashed diagonal, items "
         "per bin on top), risk–coverage curves with coinciding estimators named"),
    ],
    "compare-samplers": [
        ("compare_report.png", "compare/report.html",
         "pass@1 with 95% bootstrap error bars (nudged apart), pass@k, kept-set size, the table"),
        ("compare_accuracy.png", "compare/accuracy.svg", "the figure alone (accuracy.svg)"),
    ],
    "pareto": [
        ("pareto_report.png", "pareto/report.html",
         "accuracy (95% exact CI) vs tokens per item, budgets as labels, paired comparisons"),
        ("pareto_plot.png", "pareto/pareto.svg", "the figure alone (pareto.svg)"),
    ],
    "rl": [
        ("rl_dynamics.png", "rl/grpo-s0/plots/dynamics.png",
         "entropy, reward vs accuracy (identical series are named), covariance vs ΔH, law fit"),
        ("rl_deciles.png", "rl/grpo-s0/plots/deciles.png", "entropy change per step-0 decile"),
        ("rl_calibration.png", "rl/grpo-s0/plots/calibration.png",
         "held-out ECE, AUROC, Brier, confident-wrong share and accuracy over training"),
        ("rl_comparison.png", "rl/comparison.png",
         "GRPO vs KL-Cov: mean over 3 seeds with a 95% t-interval band"),
    ],
    "leash": [
        ("leash_pass_at_k.png", "leash/pass_at_k.png",
         "pass@k of the step-0 policy vs the trained one (the gallery's GRPO run, seed 0)"),
    ],
    "tta": [
        ("tta_accuracy.png", "tta/accuracy.png", "accuracy over a corrupted stream per method"),
    ],
}  # fmt: skip


def _run(argv: Sequence[str], log: list[str], runs: Path) -> float:
    """Run ``entrolab argv`` from the repo root (one torch thread); returns the wall time and
    logs the command with the runs folder written as ``runs/gallery``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    text = "entrolab " + shlex.join(argv).replace(str(runs), "runs/gallery")
    print(f"$ entrolab {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    subprocess.run([ENTROLAB, *argv], cwd=ROOT, env=env, check=True)
    seconds = time.perf_counter() - start
    log.append(text)
    return seconds


def _finished(argv: Sequence[str], section: Sequence[Sequence[str]]) -> bool:
    """A generating command whose run finished (its folder holds ``summary.json`` or, for
    pareto, ``points.json``) and whose section re-renders the report afterwards (``--report``):
    reused as it is, whichever entrolab version made it. Unfinished runs resume."""
    if "--out" not in argv or not any("--report" in other for other in section):
        return False
    folder = Path(argv[argv.index("--out") + 1])
    return any((folder / name).is_file() for name in ("summary.json", "points.json"))


def _comparison(runs: Path) -> Path:
    """GRPO vs KL-Cov over seeds (the figure the RL benches draw), from the gallery runs."""
    from entrolab.rl.checkpoint import read_metrics
    from entrolab.rl.plots import plot_comparison

    arms = {
        label: [read_metrics(runs / "rl" / f"{arm}-s{s}") for s in (0, 1, 2)]
        for label, arm in (("GRPO", "grpo"), ("KL-Cov", "klcov"))
    }
    (png,) = plot_comparison(arms, runs / "rl" / "comparison", formats=("png",))
    return png


def _shrink(src: Path, dst: Path, max_width: int = 1300, max_height: int = 2200) -> int:
    """Copy ``src`` to ``dst`` as a 256-colour PNG, at most ``max_width`` wide and cut at
    ``max_height``; returns the file size in bytes."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    if img.height > max_height:
        img = img.crop((0, 0, img.width, max_height))
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        dst, optimize=True
    )
    return dst.stat().st_size


def _render(sources: list[tuple[Path, Path]]) -> None:
    """Screenshot HTML pages (full page) and SVG files (the figure only) in headless Chromium."""
    if not CHROMIUM.exists():
        raise SystemExit(
            "the gallery needs Chromium at /usr/bin/chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        for src, shot in sources:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            if src.suffix == ".svg":
                body = src.read_text(encoding="utf-8")
                page.set_content(
                    f"<html><body style='margin:0;background:#fff'>{body}</body></html>"
                )
                page.locator("svg").first.screenshot(path=str(shot))
            else:
                page.goto(src.resolve().as_uri())
                page.wait_for_load_state("load")
                page.screenshot(path=str(shot), full_page=True)
            page.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "gallery")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery")
    parser.add_argument("--only", default="", help="comma-separated sections (default: all)")
    args = parser.parse_args()
    runs, out = args.runs.resolve(), args.out.resolve()
    sections = _sections(runs)
    wanted = [s for s in args.only.split(",") if s] or list(sections)
    unknown = sorted(set(wanted) - set(sections))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {', '.join(sections)}")
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("shots", "analyze"):  # analyze --json/--html need an existing folder
        (runs / sub).mkdir(parents=True, exist_ok=True)
    meta_path = out / "gallery.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for name in wanted:
        commands: list[str] = []
        old = meta.get(name, {}).get("run_seconds", {})
        timed: dict[str, float] = {}  # command → wall seconds (kept from the run that made it)
        for argv in sections[name]:
            if _finished(argv, sections[name]):
                print(f"reusing {argv[argv.index('--out') + 1]} (delete it to run again)")
                commands.append("entrolab " + shlex.join(argv).replace(str(runs), "runs/gallery"))
                if commands[-1] in old:
                    timed[commands[-1]] = old[commands[-1]]
                continue
            timed_s = _run(argv, commands, runs)
            # a resumed run takes seconds: keep the time of the run that did the work
            timed[commands[-1]] = max(round(timed_s, 1), old.get(commands[-1], 0.0))
        if name == "rl":
            _comparison(runs)
            commands.append("# then bench/gallery.py draws rl/comparison.png with "
                            "entrolab.rl.plots.plot_comparison over the six runs")  # fmt: skip
        renders, todo = [], []
        for image, rel, _ in IMAGES[name]:
            src = runs / rel
            if src.suffix in (".html", ".svg"):
                renders.append((src, runs / "shots" / image))
                todo.append((runs / "shots" / image, image))
            else:
                todo.append((src, image))
        _render(renders)
        sizes = {image: _shrink(path, out / image) for path, image in todo}
        meta[name] = {"commands": commands, "run_seconds": timed, "bytes": sizes}
        meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    _write_index(out, meta)
    too_big = {k: v for m in meta.values() for k, v in m["bytes"].items() if v > MAX_BYTES}
    if too_big:
        print(f"warning: images over {MAX_BYTES} bytes: {too_big}")


def _write_index(out: Path, meta: dict) -> None:
    lines = [
        "# Gallery: every figure and report entrolab draws",
        "",
        "Regenerate with `make gallery` (`.venv/bin/python bench/gallery.py`): it runs the",
        "smallest real run of each command on the embedded model (SmolLM2-135M-Instruct) or the",
        "RL proxy model, re-renders each report with the current code and screenshots it in",
        "headless Chromium. Runs live in `runs/gallery/` and are reused when present; wall times",
        "are from a shared 2-core CPU (other jobs running), so they are only rough.",
        "",
    ]
    for name, images in IMAGES.items():
        if name not in meta:
            continue
        m = meta[name]
        times = m.get("run_seconds", {})
        lines += [f"## {name}", "", "Produced by (wall time of each command on the right):", ""]
        lines += ["```"]
        lines += [f"{c}   # {times[c] / 60:.1f} min" if c in times else c for c in m["commands"]]
        lines += ["```", ""]
        for image, rel, what in images:
            lines += [f"**{image}** — `runs/gallery/{rel}`: {what}.", "", f"![{name}]({image})", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
