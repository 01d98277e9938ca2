"""Learned exits: LYNX (a hidden-state probe at reasoning cues + split conformal calibration) and
ConCISE-style answer-confidence early stopping.

**LYNX** (Akgül et al. 2025, arXiv:2512.05325). At each cue (a token completing "\\n", "Step",
"wait", …) a probe g(h) ∈ [0, 1] on the cue token's hidden state estimates whether an answer
forced right there would be correct. Split conformal calibration on held-out not-ready cues
(y = 0) picks τ̂ so that exiting when g > τ̂ exits prematurely with probability ≤ δ:

    τ̂ = the ⌈(n₀ + 1)(1 − δ)⌉-th smallest calibration score of not-ready cues,
        τ̂ = +inf (never exit) when that rank exceeds n₀ (fewer than ⌈1/δ⌉ − 1 not-ready cues).

If calibration and test scores are exchangeable, P(g_test > τ̂ | y = 0) ≤ δ marginally
(≥ δ − 1/(n₀ + 1) for continuous scores). ``scope="cue"`` is the paper's per-cue rule; cues of
one trace are not independent, so ``scope="item"`` instead calibrates one score per item, the
largest g over its not-ready cues: then P(an item exits at a not-ready cue) ≤ δ exactly under
item exchangeability (stricter, fewer exits).

SmolLM2 rarely says "wait", so the default cues are line breaks (step boundaries); the paper's
cues are in :data:`LYNX_PAPER_CUES`. The forced answer is ``answer_prefix`` ("\\nAnswer:") plus a
few greedy tokens, during both supervision collection and use.

**ConCISE-style** (Qiao et al. 2025, arXiv:2505.04881; the paper's detector is not released, this
is the spec's inference-only analogue): after each step (cue) append "So the answer is", greedily
decode a few tokens and stop when the probability of the answer's tokens exceeds a threshold.

Both strategies run **online** by default: a :class:`~entrolab.inference.exits_data.CueMonitor`
step hook decides at each cue during generation and the backend stops the row (one token past the
cue, counted). ``mode="replay"`` generates whole traces first and truncates at the first
qualifying cue, counting only the tokens up to the cue (what an online run would generate, not
what was computed); it is for backends without ``step_hook`` and for cross-checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import STRATEGIES, ItemOutcome, ProgressFn, item_seeds
from entrolab.inference.exits_data import (
    COT_INSTRUCTIONS,
    CueMonitor,
    ExitData,
    LayerWatch,
    collect_exit_data,
    cot_prompt,
    cue_positions,
    greedy_continue,
    hidden_at,
    resolve_layer,
    span_logprob,
)
from entrolab.inference.probes import Probe, ProbeInfo, fit_probe, load_probe, save_probe

__all__ = [
    "LYNX_PAPER_CUES",
    "ConciseStrategy",
    "ConformalExit",
    "LynxExit",
    "LynxStrategy",
    "conformal_exit_threshold",
    "fit_lynx",
    "fit_lynx_on",
    "load_lynx",
    "premature_exit_rates",
    "save_lynx",
]

_LYNX = "Akgül et al. 2025, LYNX: learned dynamic exits, arXiv:2512.05325"
_CONCISE = "Qiao et al. 2025, ConCISE, EMNLP 2025, arXiv:2505.04881"
#: Cues of the LYNX paper (reasoning models say these); SmolLM2 needs line breaks instead.
LYNX_PAPER_CUES = ("wait", "Wait", "hmm", "Hmm", "\n\n")
DEFAULT_CUES = ("\n",)
Scope = Literal["cue", "item"]


# ----------------------------------------------------------------------------- conformal layer
@dataclass(frozen=True)
class ConformalExit:
    """A calibrated exit rule: exit when ``score > threshold``.

    Attributes:
        threshold: τ̂ (``inf``: never exit). delta: target premature-exit rate.
        scope: ``"cue"`` (per not-ready cue) or ``"item"`` (per item, max over its not-ready cues).
        n: calibration scores used (not-ready cues, or items). rank: k = ⌈(n + 1)(1 − δ)⌉.
        note: why τ̂ is +inf, when it is.
    """

    threshold: float
    delta: float
    scope: Scope
    n: int
    rank: int
    note: str = ""

    @property
    def never_exits(self) -> bool:
        return math.isinf(self.threshold) and self.threshold > 0

    def exits(self, scores: Any) -> torch.Tensor:
        """Bool mask: which scores exit (``score > threshold``)."""
        return torch.as_tensor(scores, dtype=torch.float64) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        t = self.threshold
        return {
            "threshold": t if math.isfinite(t) else ("inf" if t > 0 else "-inf"),
            "delta": self.delta,
            "scope": self.scope,
            "n": self.n,
            "rank": self.rank,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalExit:
        return cls(
            float(d["threshold"]),
            float(d["delta"]),
            d["scope"],
            int(d["n"]),
            int(d["rank"]),
            str(d.get("note", "")),
        )


def _groupwise_max_not_ready(
    scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    out = []
    for g in torch.unique(groups).tolist():
        sel = (groups == g) & (labels == 0)
        out.append(scores[sel].max() if sel.any() else torch.tensor(-math.inf, dtype=torch.float64))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def conformal_exit_threshold(
    scores: Any,
    labels: Any,
    delta: float,
    *,
    scope: Scope = "cue",
    groups: Any = None,
) -> ConformalExit:
    """Split-conformal exit threshold from calibration cues.

    Args:
        scores: [M] probe scores g of the calibration cues (higher = readier).
        labels: [M] 1 = ready (forced answer correct), 0 = not ready.
        delta: target premature-exit rate in (0, 1).
        scope: ``"cue"``: S = scores of not-ready cues (n = n₀); ``"item"``: S = per item (from
            ``groups``), the max score over its not-ready cues (−inf if none), n = items.
        groups: [M] item index of each cue (``scope="item"`` only).

    Returns: τ̂ = the k-th smallest of S, k = ⌈(n + 1)(1 − δ)⌉; +inf when k > n.

    Raises:
        EntrolabError: empty input, NaN scores, δ outside (0, 1), or (cue scope) no not-ready
            calibration cue, so the premature-exit rate cannot be calibrated.
    """
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).long()
    if not 0 < delta < 1:
        raise EntrolabError(f"delta must be in (0, 1), got {delta}")
    if s.numel() == 0 or s.shape != y.shape:
        raise EntrolabError(
            f"need one label per calibration score and at least one cue, got {s.numel()} scores "
            f"and {y.numel()} labels; were any cues found in the calibration traces?"
        )
    if torch.isnan(s).any():
        raise EntrolabError("calibration scores contain NaN; check the probe's inputs")
    if scope == "cue":
        pool = s[y == 0]
        if pool.numel() == 0:
            raise EntrolabError(
                f"all {s.numel()} calibration cues are ready (label 1): there is no not-ready cue "
                "to calibrate the premature-exit rate on; use harder items or more of them"
            )
    elif scope == "item":
        if groups is None:
            raise EntrolabError("scope='item' needs `groups` (the item index of each cue)")
        g = torch.as_tensor(groups).reshape(-1)
        if g.shape != s.shape:
            raise EntrolabError(f"groups has {g.numel()} entries for {s.numel()} scores")
        pool = _groupwise_max_not_ready(s, y, g)
    else:
        raise EntrolabError(f"scope must be 'cue' or 'item', got {scope!r}")
    n = int(pool.numel())
    # ⌈(n + 1)(1 − δ)⌉ with a guard against float error ((99 + 1)·0.9 = 90.00000000000001).
    k = math.ceil((n + 1) * (1 - delta) - 1e-9)
    if k > n:
        need = math.ceil(1 / delta - 1 - 1e-9)
        return ConformalExit(
            math.inf, delta, scope, n, k,
            f"only {n} calibration {'cues' if scope == 'cue' else 'items'}; δ = {delta} needs at "
            f"least {need}, so the rule never exits",
        )  # fmt: skip
    return ConformalExit(float(torch.sort(pool).values[k - 1]), delta, scope, n, k)


def premature_exit_rates(
    scores: Any, labels: Any, groups: Any, threshold: float
) -> dict[str, float]:
    """Held-out exit statistics of ``score > threshold``; cues of a group in time order.

    Returns ``cue_rate`` (fraction of not-ready cues that would exit: what ``scope="cue"``
    bounds), ``item_rate`` (fraction of items whose FIRST exiting cue is not ready: a premature
    exit, what ``scope="item"`` bounds), ``exit_rate`` (fraction of items that exit at all).
    """
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(labels).reshape(-1).long()
    g = torch.as_tensor(groups).reshape(-1)
    if s.numel() == 0 or not (s.shape == y.shape == g.shape):
        raise EntrolabError("need equally long, non-empty scores, labels and groups")
    fire = s > threshold
    n0 = int((y == 0).sum())
    items = torch.unique(g).tolist()
    premature = exited = 0
    for it in items:
        idx = (g == it).nonzero().flatten()
        hit = idx[fire[idx]]
        if hit.numel():
            exited += 1
            premature += int(y[hit[0]] == 0)
    return {
        "cue_rate": float((fire & (y == 0)).sum()) / n0 if n0 else 0.0,
        "item_rate": premature / len(items),
        "exit_rate": exited / len(items),
    }


# ------------------------------------------------------------------------------ the artefact
@dataclass
class LynxExit:
    """Everything a LYNX exit needs: the probe, τ̂ and how cues/forced answers are made."""

    probe: Probe
    threshold: ConformalExit
    cues: tuple[str, ...] = DEFAULT_CUES
    answer_prefix: str = "\nAnswer:"
    answer_tokens: int = 6
    instructions: str = COT_INSTRUCTIONS
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        if self.probe.info.layer is None:
            raise EntrolabError("the LYNX probe does not record its layer; refit it with fit_lynx")
        return self.probe.info.layer

    def check_backend(self, backend: Any) -> None:
        """Raise if the probe was trained for another model (name, hidden size)."""
        self.probe.check_compatible(
            model=backend.name, feature_size=int(backend.model.config.hidden_size)
        )

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """g(h) = P(ready | hidden state) for hidden [n, H] → float64 [n]."""
        return self.probe.predict_proba(hidden)


def save_lynx(exit_: LynxExit, path: str | Path) -> Path:
    """Save as ``<stem>.safetensors`` + ``<stem>.json`` (the probe files, LYNX settings inside)."""
    settings = {
        "threshold": exit_.threshold.to_dict(),
        "cues": list(exit_.cues),
        "answer_prefix": exit_.answer_prefix,
        "answer_tokens": exit_.answer_tokens,
        "instructions": exit_.instructions,
        "stats": exit_.stats,
    }
    return save_probe(exit_.probe.with_extra(lynx=settings), path)


def load_lynx(path: str | Path, backend: Any = None) -> LynxExit:
    """Load a LYNX exit saved by :func:`save_lynx`; with ``backend``, check it matches."""
    probe = load_probe(path)
    cfg = probe.info.extra.get("lynx")
    if not isinstance(cfg, dict):
        raise EntrolabError(
            f"{str(path)!r} is a probe but not a LYNX exit (no 'lynx' settings); make one with fit_lynx"
        )
    out = LynxExit(
        probe,
        ConformalExit.from_dict(cfg["threshold"]),
        tuple(cfg["cues"]),
        cfg["answer_prefix"],
        int(cfg["answer_tokens"]),
        cfg["instructions"],
        dict(cfg.get("stats") or {}),
    )
    if backend is not None:
        out.check_backend(backend)
    return out


def _split_items(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0 < fraction < 1:
        raise EntrolabError(f"calibration_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise EntrolabError(
            f"need at least 2 items to split into training and calibration, got {n}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_cal = min(n - 1, max(1, round(n * fraction)))
    return sorted(perm[n_cal:]), sorted(perm[:n_cal])


def fit_lynx_on(
    data: ExitData,
    *,
    model: str,
    delta: float = 0.1,
    scope: Scope = "cue",
    calibration_fraction: float = 0.5,
    probe_kind: Literal["logistic", "mlp"] = "logistic",
    l2: float = 1.0,
    seed: int = 0,
) -> LynxExit:
    """Train the probe on one part of the items and calibrate τ̂ on the rest (split by item).

    ``l2`` defaults to 1.0 (strong, for a few hundred cues of a 576-wide hidden state; 0.01 fitted
    noise on SmolLM2 arithmetic cues, held-out AUROC 0.54 vs 0.55–0.57 for 1–100)."""
    n_items = len(data.item_ids)
    train, cal = _split_items(n_items, calibration_fraction, seed)
    tr = torch.isin(data.item, torch.tensor(train))
    info = ProbeInfo(model=model, layer=data.layer, feature="hidden", labels=("not_ready", "ready"))
    probe = fit_probe(
        data.features[tr],
        data.labels[tr],
        kind=probe_kind,
        l2=l2,
        class_weight="balanced",
        seed=seed,
        info=info,
    )
    ca = ~tr
    thr = conformal_exit_threshold(
        probe.predict_proba(data.features[ca]),
        data.labels[ca],
        delta,
        scope=scope,
        groups=data.item[ca],
    )
    meta = data.meta
    return LynxExit(
        probe,
        thr,
        tuple(meta.get("cues", DEFAULT_CUES)),
        meta.get("answer_prefix", "\nAnswer:"),
        int(meta.get("answer_tokens", 6)),
        meta.get("instructions", COT_INSTRUCTIONS),
        {
            "train_items": len(train),
            "calibration_items": len(cal),
            "train_cues": int(tr.sum()),
            "calibration_cues": int(ca.sum()),
            "ready_fraction": float(data.labels.double().mean()),
        },
    )


def fit_lynx(
    backend: Any,
    task: Any,
    items: Sequence[Any],
    *,
    cues: Sequence[str] = DEFAULT_CUES,
    layer: int | None = None,
    config: GenerationConfig | None = None,
    answer_prefix: str = "\nAnswer:",
    answer_tokens: int = 6,
    max_cues: int = 16,
    seed: int = 0,
    **fit: Any,
) -> LynxExit:
    """Collect forced-exit supervision from ``backend`` on ``items``
    (:func:`~entrolab.inference.exits_data.collect_exit_data`), then :func:`fit_lynx_on`
    (``fit``: its keywords ``delta``, ``scope``, ``calibration_fraction``, ``probe_kind``,
    ``l2``)."""
    data = collect_exit_data(
        backend, task, items, cues=cues, layer=layer, config=config, answer_prefix=answer_prefix,
        answer_tokens=answer_tokens, max_cues=max_cues, seed=seed,
    )  # fmt: skip
    return fit_lynx_on(data, model=backend.name, seed=seed, **fit)


# ------------------------------------------------------------------------------ strategies
def _config(config: GenerationConfig | Mapping[str, Any] | None) -> GenerationConfig:
    """The strategy's generation settings: greedy, 128 tokens, unless ``config`` says otherwise
    (a mapping overrides only the keys it names)."""
    if isinstance(config, GenerationConfig):
        return config
    base = GenerationConfig(max_new_tokens=128, temperature=0.0).to_dict()
    return GenerationConfig.from_dict({**base, **dict(config or {})})


def _exp(lp: float | None) -> float:
    return 0.0 if lp is None else math.exp(lp)


class _CueExitStrategy:
    """Shared run loop: one CoT trace per item, a decision at each cue, a forced answer."""

    name = "cue-exit"
    needs_hidden = False

    def __init__(
        self,
        *,
        cues: Sequence[str],
        config: GenerationConfig | Mapping[str, Any] | None,
        mode: Literal["online", "replay"],
        instructions: str,
        answer_prefix: str,
        answer_tokens: int,
        min_position: int,
        force_on_length: bool,
    ) -> None:
        if mode not in ("online", "replay"):
            raise EntrolabError(f"mode must be 'online' or 'replay', got {mode!r}")
        cue_positions([], cues)
        base = _config(config)
        self.config = GenerationConfig.from_dict({**base.to_dict(), "num_samples": 1})
        self.cues, self.mode, self.instructions = tuple(cues), mode, instructions
        self.answer_prefix, self.answer_tokens = answer_prefix, int(answer_tokens)
        self.min_position, self.force_on_length = int(min_position), bool(force_on_length)

    # subclasses ---------------------------------------------------------------------------
    def _layer(self, backend: Any) -> int:
        return resolve_layer(backend.model, None)

    def _decide(
        self, ctx: dict[str, Any], rows: list[int], prefixes: list[list[int]], hidden: torch.Tensor
    ) -> list[tuple[bool, dict[str, Any]]]:
        raise NotImplementedError

    def _exit_answer(
        self, ctx: dict[str, Any], exits: dict[int, dict[str, Any]], prefixes: dict[int, list[int]]
    ) -> dict[int, tuple[str, int]]:
        """(reply text, extra generated tokens) for every exited row."""
        return self._force(ctx, prefixes)

    # shared -------------------------------------------------------------------------------
    def _force(
        self, ctx: dict[str, Any], prefixes: Mapping[int, list[int]]
    ) -> dict[int, tuple[str, int]]:
        if not prefixes:
            return {}
        backend = ctx["backend"]
        pre = backend.tokenizer(self.answer_prefix, add_special_tokens=False)["input_ids"]
        rows = sorted(prefixes)
        conts = greedy_continue(
            backend, [ctx["prompt_ids"][r] + prefixes[r] + pre for r in rows], self.answer_tokens
        )
        return {r: (self.answer_prefix + c.text, len(c)) for r, c in zip(rows, conts, strict=True)}

    def run(
        self,
        backend: Any,
        task: Any,
        items: Sequence[Any],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        if not items:
            raise EntrolabError("no items to run the strategy on")
        from entrolab.tasks import answer_key

        self._prepare(backend)
        cfg = self.config
        prompts = [cot_prompt(task, it, self.instructions) for it in items]
        seeds = item_seeds(seed, items)
        ids = [
            backend.prompt_ids(p, chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
            for p in prompts
        ]
        ctx = {"backend": backend, "task": task, "items": items, "prompt_ids": ids}
        layer = self._layer(backend)
        progress = (lambda done, total, _tok: on_progress(done, total)) if on_progress else None

        def decide(rows, prefixes, hidden):
            return self._decide(ctx, rows, prefixes, hidden)

        if self.mode == "online":
            with LayerWatch(backend.model, layer, watch_inputs=True) as watch:
                monitor = CueMonitor(
                    watch, backend.tokenizer, self.cues, decide, min_position=self.min_position
                )
                batch = backend.generate(
                    prompts, cfg, seeds=seeds, step_hook=monitor, on_progress=progress
                )
            events, exits = monitor.events, monitor.exits
            spent = {r: len(t) for r, t in enumerate(batch)}
        else:
            batch = backend.generate(prompts, cfg, seeds=seeds, on_progress=progress)
            events, exits = self._replay(ctx, batch, layer, decide)
            spent = {
                r: (exits[r]["position"] + 1 if r in exits else len(t)) for r, t in enumerate(batch)
            }
        prefixes = {r: batch[r].token_ids[: e["position"] + 1].tolist() for r, e in exits.items()}
        answers = self._exit_answer(ctx, exits, prefixes)
        unanswered = {
            r: t.token_ids.tolist()
            for r, t in enumerate(batch)
            if r not in exits
            and self.force_on_length
            and t.finish_reason == "length"
            and task.extract(items[r], t.text) is None
        }
        forced_end = self._force(ctx, unanswered)
        out = []
        for r, (item, trace) in enumerate(zip(items, batch, strict=True)):
            text, extra = answers.get(r) or forced_end.get(r) or (trace.text, 0)
            probe_tokens = sum(int(e.get("probe_tokens", 0)) for e in events.get(r, []))
            parsed = task.extract(item, text)
            exit_info = exits.get(r)
            out.append(
                ItemOutcome(
                    item_id=item.id,
                    answer=None if parsed is None else answer_key(parsed),
                    correct=bool(parsed is not None and task.grade(item, text).correct),
                    generated_tokens=int(spent[r] + extra + probe_tokens),
                    prompt_tokens=int(trace.meta.get("prompt_tokens", len(ids[r]))),
                    num_traces=1,
                    meta={
                        "mode": self.mode,
                        "exited": exit_info is not None,
                        "exit_position": None if exit_info is None else exit_info["position"],
                        "cues_seen": len(events.get(r, [])),
                        "trace_tokens": len(trace),
                        "answer_tokens": extra,
                        "probe_tokens": probe_tokens,
                        "forced_at_end": r in forced_end,
                        "finish_reason": trace.finish_reason,
                        "decisions": [
                            {k: v for k, v in e.items() if k != "text"} for e in events.get(r, [])
                        ],
                    },
                )
            )
        if on_progress is not None:
            on_progress(len(items), len(items))
        return out

    def _prepare(self, backend: Any) -> None:
        if self.mode == "online" and "step_hook" not in _params(backend.generate):
            raise EntrolabError("this backend's generate() has no step_hook; use mode='replay'")

    def _replay(
        self, ctx, batch, layer, decide
    ) -> tuple[dict[int, list[dict[str, Any]]], dict[int, dict[str, Any]]]:
        """Decide at every cue of the finished traces; keep decisions up to the first stop.

        A cue at a trace's last token is skipped, as online (nothing is left to save there)."""
        cue_lists = {
            r: [
                p for p in cue_positions(t.tokens, self.cues) if self.min_position <= p < len(t) - 1
            ]
            for r, t in enumerate(batch)
        }
        rows = [r for r in cue_lists if cue_lists[r]]
        events: dict[int, list[dict[str, Any]]] = {}
        exits: dict[int, dict[str, Any]] = {}
        if not rows:
            return events, exits
        if self.needs_hidden:
            seqs = [ctx["prompt_ids"][r] + batch[r].token_ids.tolist() for r in rows]
            pos = [[len(ctx["prompt_ids"][r]) + p for p in cue_lists[r]] for r in rows]
            hidden = torch.cat(hidden_at(ctx["backend"], seqs, pos, layer))
        else:
            hidden = torch.zeros(sum(len(cue_lists[r]) for r in rows), 0)
        flat = [(r, p) for r in rows for p in cue_lists[r]]
        decisions = decide(
            [r for r, _ in flat], [batch[r].token_ids[: p + 1].tolist() for r, p in flat], hidden
        )
        for (r, p), (halt, info) in zip(flat, decisions, strict=True):
            if r in exits:
                continue
            info = {"position": p, **info}
            events.setdefault(r, []).append(info)
            if halt:
                exits[r] = info
        return events, exits


def _params(fn: Any) -> Mapping[str, Any]:
    import inspect

    return inspect.signature(fn).parameters


class LynxStrategy(_CueExitStrategy):
    """LYNX: exit at the first cue whose probe score exceeds the conformal τ̂, then force the
    answer. ``exit``: a :class:`LynxExit` or the path it was saved to (:func:`save_lynx`)."""

    name = "lynx"
    needs_hidden = True

    def __init__(
        self,
        exit: LynxExit | str | Path | None = None,
        config: GenerationConfig | Mapping[str, Any] | None = None,
        mode: Literal["online", "replay"] = "online",
        min_position: int = 0,
        force_on_length: bool = True,
    ) -> None:
        if exit is None:
            raise EntrolabError(
                "the 'lynx' strategy needs a fitted exit: run entrolab.inference.exits.fit_lynx("
                "backend, task, items) and save_lynx(exit, 'lynx_exit'), then pass exit='lynx_exit'"
            )
        self.exit = exit if isinstance(exit, LynxExit) else load_lynx(exit)
        e = self.exit
        super().__init__(
            cues=e.cues,
            config=config,
            mode=mode,
            instructions=e.instructions,
            answer_prefix=e.answer_prefix,
            answer_tokens=e.answer_tokens,
            min_position=min_position,
            force_on_length=force_on_length,
        )

    def _prepare(self, backend: Any) -> None:
        super()._prepare(backend)
        self.exit.check_backend(backend)

    def _layer(self, backend: Any) -> int:
        return self.exit.layer

    def _decide(self, ctx, rows, prefixes, hidden):
        g = self.exit.scores(hidden)
        fire = self.exit.threshold.exits(g)
        return [(bool(f), {"score": float(s)}) for f, s in zip(fire, g, strict=True)]


class ConciseStrategy(_CueExitStrategy):
    """ConCISE-style: after each step (cue) append ``probe_prefix`` ("So the answer is"),
    greedily decode ``probe_tokens`` tokens and stop when the probability of the answer's tokens
    exceeds ``threshold``; the probe's answer is the reply. Every probe's tokens are counted."""

    name = "concise"

    def __init__(
        self,
        threshold: float = 0.9,
        cues: Sequence[str] = DEFAULT_CUES,
        probe_prefix: str = "So the answer is",
        probe_tokens: int = 6,
        config: GenerationConfig | Mapping[str, Any] | None = None,
        mode: Literal["online", "replay"] = "online",
        instructions: str = COT_INSTRUCTIONS,
        min_position: int = 0,
        force_on_length: bool = True,
    ) -> None:
        if not 0 <= threshold <= 1:
            raise EntrolabError(f"threshold must be a probability in [0, 1], got {threshold}")
        self.threshold, self.probe_prefix = float(threshold), probe_prefix
        super().__init__(
            cues=cues,
            config=config,
            mode=mode,
            instructions=instructions,
            answer_prefix=probe_prefix,
            answer_tokens=probe_tokens,
            min_position=min_position,
            force_on_length=force_on_length,
        )

    def _decide(self, ctx, rows, prefixes, hidden):
        backend, task, items = ctx["backend"], ctx["task"], ctx["items"]
        pre = backend.tokenizer(self.probe_prefix, add_special_tokens=False)["input_ids"]
        conts = greedy_continue(
            backend,
            [ctx["prompt_ids"][r] + p + pre for r, p in zip(rows, prefixes, strict=True)],
            self.answer_tokens,
        )
        out = []
        for r, c in zip(rows, conts, strict=True):
            text = self.probe_prefix + c.text
            parsed = task.extract(items[r], text)
            conf = _exp(span_logprob(c.pieces, c.logprobs, parsed)) if parsed else 0.0
            info = {"confidence": conf, "answer": parsed, "probe_tokens": len(c), "text": text}
            out.append((conf > self.threshold, info))
        return out

    def _exit_answer(self, ctx, exits, prefixes):
        return {r: (e["text"], 0) for r, e in exits.items()}  # probe tokens already counted


STRATEGIES.register(
    "lynx",
    summary="LYNX learned exit: hidden-state probe at reasoning cues, split-conformal τ̂ (premature exits ≤ δ)",
    paper=_LYNX,
    defaults={"mode": "online", "min_position": 0, "force_on_length": True},
)(LynxStrategy)
STRATEGIES.register(
    "concise",
    summary="ConCISE-style early stop: after each step, stop when P(answer | 'So the answer is') > threshold",
    paper=_CONCISE,
    defaults={
        "threshold": 0.9,
        "cues": DEFAULT_CUES,
        "probe_prefix": "So the answer is",
        "probe_tokens": 6,
        "mode": "online",
    },
)(ConciseStrategy)
