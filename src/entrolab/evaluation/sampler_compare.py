"""``compare_samplers``: accuracy and answer diversity of samplers across temperatures, resumably.

For every (sampler, temperature) *cell* each task item is answered ``samples`` times; per cell
the summary has pass@1 (mean over items of the fraction of correct samples, with its standard
error over items), pass@k (k = ``samples``: share of items with at least one correct sample),
answer diversity (distinct answers per item and the entropy of the item's answer distribution in
nats, answers grouped by :func:`~entrolab.tasks.answers.answer_key`, an unparseable reply counting
as one more answer), the mean kept-set size and entropy after the sampler (H(q), nats), the
model's own mean entropy (raw logits) and the mean length.

Samples are seeded from (seed, item id) with the same seeds in every cell, so cells differ only by
their sampler and temperature (common random numbers). Rows are appended per chunk of items to
the run directory (:class:`~entrolab.evaluation.rundir.RunDir`): run again to resume. entropix
without thresholds gets them fitted per temperature on ``warmup`` separate items (quantiles of the
per-token entropy/varentropy of plain samples at that temperature, i.e. of what the warper sees),
stored in ``thresholds.json`` so a resumed run reuses them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from entrolab.errors import EntrolabError
from entrolab.evaluation.rundir import RunDir
from entrolab.evaluation.sampler_summary import paired_vs, summarize_cell
from entrolab.fileio import atomic_write_text

__all__ = [
    "DEFAULT_SAMPLERS",
    "DEFAULT_TEMPERATURES",
    "CompareConfig",
    "CompareResults",
    "compare_samplers",
    "fit_thresholds_on_warmup",
    "load_compare_results",
    "resolve_sampler",
    "summarize_cell",
]

DEFAULT_SAMPLERS = (
    "plain",
    "top_h:alpha=0.4",
    "min_p:min_p=0.1",
    "top_p:top_p=0.9",
    "typical:mass=0.9",
    "eta:epsilon=0.0003",
)
DEFAULT_TEMPERATURES = (0.7, 1.0, 1.5, 2.0)
THRESHOLDS = "thresholds.json"

#: on_progress(done, total, stage) — done/total count (cell, item) pairs
ProgressFn = Callable[[int, int, str], None]


def needs_warmup(name: str, params: dict[str, Any]) -> bool:
    """entropix with quantile thresholds that are not given yet."""
    keys = {"h_low", "h_mid", "h_high", "v_low", "v_high"}
    return (
        name == "entropix"
        and params.get("thresholds", "quantile") == "quantile"
        and not (keys & set(params))
    )


def resolve_sampler(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``spec`` → (canonical label, name, params), checking the name and parameters now."""
    from entrolab.decoding import format_sampler_spec, make_warper, parse_sampler_spec

    name, params = parse_sampler_spec(spec)
    check = {**params, "thresholds": "fixed"} if needs_warmup(name, params) else params
    make_warper(name, check)  # raises on unknown parameters or bad values
    return format_sampler_spec(name, params), name, params


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a compare-samplers run (stored in the run directory; a resume must match).

    Attributes:
        model: embedded name, HF id or local directory (None = the embedded default).
        task, task_settings: the task spec and its settings (see :func:`entrolab.tasks.load_task`).
        n: items; samples: samples per item and cell (the k of pass@k).
        samplers: sampler specs ``NAME[:key=value,...]`` (``plain`` = no truncation).
        temperatures: base temperatures (> 0), applied before each sampler.
        max_new_tokens, seed, batch_size, dtype: generation settings.
        warmup: items used to fit entropix's quantile thresholds (per temperature).
        chunk: items per checkpoint (not stored: it does not change results).
    """

    model: str | None = None
    task: str = "arithmetic"
    task_settings: dict[str, Any] = field(default_factory=dict)
    n: int = 40
    samples: int = 4
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    max_new_tokens: int = 64
    seed: int = 0
    warmup: int = 8
    batch_size: int = 64
    dtype: str = "float32"
    chunk: int = 8

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "samplers", tuple(resolve_sampler(s)[0] for s in self.samplers))
        set_(self, "temperatures", tuple(float(t) for t in self.temperatures))
        for what, ok in [
            ("n must be >= 1", self.n >= 1),
            ("samples must be >= 1", self.samples >= 1),
            ("give at least one sampler", len(self.samplers) >= 1),
            ("sampler specs must be distinct", len(set(self.samplers)) == len(self.samplers)),
            ("give at least one temperature", len(self.temperatures) >= 1),
            (
                "temperatures must be finite and > 0 (greedy decoding has no sampler to compare)",
                all(math.isfinite(t) and t > 0 for t in self.temperatures),
            ),
            (
                "temperatures must be distinct",
                len(set(self.temperatures)) == len(self.temperatures),
            ),
            ("max_new_tokens must be >= 1", self.max_new_tokens >= 1),
            ("warmup must be >= 1", self.warmup >= 1),
            ("chunk must be >= 1", self.chunk >= 1),
        ]:
            if not ok:
                raise EntrolabError(f"invalid compare-samplers settings: {what}")

    def cells(self) -> list[tuple[str, float]]:
        """(sampler label, temperature) pairs, sampler-major."""
        return [(s, t) for s in self.samplers for t in self.temperatures]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samplers"], out["temperatures"] = list(self.samplers), list(self.temperatures)
        out.pop("chunk")
        return out


def cell_key(sampler: str, temperature: float) -> str:
    return f"{sampler}@T={temperature:g}"


def fit_thresholds_on_warmup(
    backend: Any,
    prompts: Sequence[str],
    temperature: float,
    *,
    samples: int = 1,
    max_new_tokens: int = 64,
    seed: int = 0,
    quantiles: dict[str, float] | None = None,
) -> dict[str, float]:
    """entropix thresholds (nats) from plain samples of ``prompts`` at ``temperature``: quantiles
    of the per-token entropy/varentropy of the tempered distribution (what the warper sees)."""
    from entrolab.config import GenerationConfig
    from entrolab.decoding import fit_entropix_thresholds

    cfg = GenerationConfig(
        num_samples=samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        topk_logprobs=0,
        signals_from="processed",
    )
    traces = backend.generate(list(prompts), cfg)
    th = fit_entropix_thresholds(
        [t.entropy for t in traces], [t.varentropy for t in traces], quantiles
    )
    return th.to_dict()


@dataclass
class CompareResults:
    """A finished (or re-loaded) run: ``config`` (as stored), item ``rows``, ``run_dir``."""

    config: dict[str, Any]
    rows: list[dict[str, Any]]
    run_dir: Path | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """One summary per cell with finished items, in the config's sampler/temperature order.

        Besides :func:`summarize_cell`'s keys, every cell of a sampler other than the first
        (the baseline) gets its paired comparison with the baseline at the same temperature,
        on the items both finished: ``vs``, ``delta_pass1`` (pass@1 difference),
        ``delta_low``/``delta_high`` (95% paired-bootstrap interval over items) and
        ``delta_p`` (bootstrap p-value; uncorrected for the number of cells).
        """
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(self.rows, key=lambda r: r["index"]):
            by_cell.setdefault(r["cell"], []).append(r)
        samplers, temps = self.config["samplers"], self.config["temperatures"]
        out = []
        for s in samplers:
            for t in temps:
                key = cell_key(s, t)
                if key not in by_cell:
                    continue
                summary = summarize_cell(by_cell[key])
                base = by_cell.get(cell_key(samplers[0], t))
                if s != samplers[0] and base:
                    summary.update(paired_vs(by_cell[key], base, samplers[0]))
                out.append(summary)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The summary (config, fitted thresholds, the table): what ``summary.json`` holds."""
        return {"config": self.config, "thresholds": self.thresholds, "table": self.table()}

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write ``summary.json``, ``report.html`` and ``accuracy.svg`` into ``directory``."""
        from entrolab.evaluation.sampler_report import accuracy_svg, render_compare_html

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": atomic_write_text(d / "summary.json", self.to_json()),
            "svg": atomic_write_text(d / "accuracy.svg", accuracy_svg(self.table())),
            "html": atomic_write_text(d / "report.html", render_compare_html(self)),
        }
        return paths


def _row(task, cell: str, sampler: str, temperature: float, index: int, item, traces, secs):
    from entrolab.tasks import answer_key

    grades = [task.grade(item, t.text) for t in traces]
    return {
        "cell": cell,
        "sampler": sampler,
        "temperature": temperature,
        "index": index,
        "id": item.id,
        "prompt": item.prompt,
        "answer": item.answer,
        "responses": [t.text for t in traces],
        "parsed": [g.parsed for g in grades],
        "keys": [answer_key(g.parsed) if g.parsed is not None else None for g in grades],
        "correct": [bool(g.correct) for g in grades],
        "kept": [t.meta.get("kept_mean") for t in traces],
        "retained_mass": [t.meta.get("retained_mass_mean") for t in traces],
        "entropy_after": [t.meta.get("entropy_after_mean") for t in traces],
        "entropy": [float(t.entropy.mean()) if len(t) else None for t in traces],
        "tokens": [len(t) for t in traces],
        "seconds": secs,
    }


def compare_samplers(
    model: Any = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
    **settings: Any,
) -> CompareResults:
    """Run (or resume) a sampler comparison; see the module docstring.

    Args:
        model: a backend (anything with ``generate``) or a model name/path (None = embedded).
        out: run directory (None keeps everything in memory).
        overwrite: discard a run in ``out`` with other settings.
        on_progress: ``(pairs_done, pairs_total, stage)``.
        **settings: :class:`CompareConfig` fields.
    """
    from entrolab.config import GenerationConfig
    from entrolab.estimators.stats import item_seed
    from entrolab.tasks import load_task

    backend = model if hasattr(model, "generate") else None
    cfg = CompareConfig(model=getattr(backend, "name", None) if backend else model, **settings)
    task = load_task(cfg.task, **cfg.task_settings)
    items = task.items(cfg.n, seed=cfg.seed)
    run = RunDir(out).open(cfg.to_dict(), overwrite=overwrite) if out is not None else None
    rows = run.rows() if run is not None else []
    done = {(r["cell"], r["index"]) for r in rows}
    total = len(cfg.cells()) * len(items)

    def report(stage: str) -> None:
        if on_progress is not None:
            on_progress(len(done), total, stage)

    if backend is None:
        report("loading model")
        from entrolab.evaluation.core import load_backend

        backend = load_backend(cfg.model, cfg.dtype)
    th_path = Path(out) / THRESHOLDS if out is not None else None
    thresholds = json.loads(th_path.read_text()) if th_path and th_path.exists() else {}
    for sampler, temp in cfg.cells():
        key = cell_key(sampler, temp)
        todo = [i for i in range(len(items)) if (key, i) not in done]
        if not todo:
            continue
        from entrolab.decoding import parse_sampler_spec

        name, params = parse_sampler_spec(sampler)
        if needs_warmup(name, params):
            t_key = f"T={temp:g}"
            if t_key not in thresholds:
                report(f"fitting entropix thresholds at T={temp:g}")
                warm = task.items(cfg.warmup, seed=cfg.seed + 1_000_003)
                thresholds[t_key] = fit_thresholds_on_warmup(
                    backend,
                    [w.prompt for w in warm],
                    temp,
                    max_new_tokens=cfg.max_new_tokens,
                    seed=cfg.seed,
                )
                if th_path is not None:
                    atomic_write_text(th_path, json.dumps(thresholds, indent=2, sort_keys=True))
            params = {**params, **thresholds[t_key]}
        gen = GenerationConfig(
            num_samples=cfg.samples,
            max_new_tokens=cfg.max_new_tokens,
            temperature=temp,
            seed=cfg.seed,
            topk_logprobs=0,
            batch_size=cfg.batch_size,
            sampler=name,
            sampler_params=params,
        )
        for start in range(0, len(todo), cfg.chunk):
            idx = todo[start : start + cfg.chunk]
            report(key)
            t0 = time.perf_counter()
            seeds = [item_seed(cfg.seed, items[i].id) for i in idx]
            traces = backend.generate([items[i].prompt for i in idx], gen, seeds=seeds)
            groups = traces.by_prompt()
            secs = (time.perf_counter() - t0) / len(idx)
            new = [
                _row(task, key, sampler, temp, i, items[i], groups[j], secs)
                for j, i in enumerate(idx)
            ]
            if run is not None:
                run.append(new)
            rows += new
            done.update((key, i) for i in idx)
    report("done")
    return CompareResults(cfg.to_dict(), rows, run.path if run is not None else None, thresholds)


def load_compare_results(run_dir: str | Path) -> CompareResults:
    """Re-load a run directory (no model needed)."""
    run = RunDir(run_dir)
    th_path = Path(run_dir) / THRESHOLDS
    thresholds = json.loads(th_path.read_text()) if th_path.exists() else {}
    rows = run.rows()
    if not rows:
        raise EntrolabError(f"{run_dir} has no finished items yet; run compare-samplers first")
    return CompareResults(run.config(), rows, run.path, thresholds)
