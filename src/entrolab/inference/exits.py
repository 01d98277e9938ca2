"""Learned exits: LYNX (a hidden-state probe at reasoning cues + split conformal calibration) and
ConCISE-style answer-confidence early stopping.

**LYNX** (Akgül et al. 2025, arXiv:2512.05325). At each cue (a token completing "\\n", "Step",
"wait", …) a probe g(h) ∈ [0, 1] on the cue token's hidden state estimates whether an answer
forced right there would be correct. Split conformal calibration on held-out not-ready cues
(:mod:`entrolab.inference.conformal_exit`) picks τ̂ so that exiting when g > τ̂ exits
prematurely with probability ≤ δ (per cue, or per item with ``scope="item"``).

SmolLM2 rarely says "wait", so the default cues are line breaks (step boundaries); the paper's
cues are in :data:`LYNX_PAPER_CUES`. The forced answer is ``answer_prefix`` ("\\nAnswer:") plus a
few greedy tokens, during both supervision collection and use.

**ConCISE-style** (Qiao et al. 2025, arXiv:2505.04881; the paper's detector is not released, this
is the spec's inference-only analogue): after each step (cue) append "So the answer is", greedily
decode a few tokens and stop when the probability of the answer's tokens exceeds a threshold.

Both strategies share the run loop of :class:`~entrolab.inference.cue_exit.CueExitStrategy`:
**online** by default (a step hook decides at each cue during generation), or ``mode="replay"``
(whole traces first, truncated at the first qualifying cue).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import STRATEGIES
from entrolab.inference.conformal_exit import (
    ConformalExit,
    Scope,
    conformal_exit_threshold,
    premature_exit_rates,
)
from entrolab.inference.cue_exit import CueExitStrategy
from entrolab.inference.cues import COT_INSTRUCTIONS, span_logprob
from entrolab.inference.exits_data import ExitData, collect_exit_data
from entrolab.inference.hidden import greedy_continue
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

    def check_backend(self, backend: Backend) -> None:
        """Raise if the probe was trained for another model (name, hidden size)."""
        self.probe.check_compatible(model=backend.name, feature_size=int(backend.hidden_size))

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


def load_lynx(path: str | Path, backend: Backend = None) -> LynxExit:
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
    backend: Backend,
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
    on_progress: Callable[[str, int, int], None] | None = None,
    **fit: Any,
) -> LynxExit:
    """Collect forced-exit supervision from ``backend`` on ``items``
    (:func:`~entrolab.inference.exits_data.collect_exit_data`; ``on_progress(stage, done,
    total)`` follows it), then :func:`fit_lynx_on` (``fit``: its keywords ``delta``, ``scope``,
    ``calibration_fraction``, ``probe_kind``, ``l2``)."""
    data = collect_exit_data(
        backend, task, items, cues=cues, layer=layer, config=config, answer_prefix=answer_prefix,
        answer_tokens=answer_tokens, max_cues=max_cues, seed=seed, on_progress=on_progress,
    )  # fmt: skip
    return fit_lynx_on(data, model=backend.name, seed=seed, **fit)


# ------------------------------------------------------------------------------ strategies
def _exp(lp: float | None) -> float:
    return 0.0 if lp is None else math.exp(lp)


class LynxStrategy(CueExitStrategy):
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
                "the 'lynx' strategy needs a fitted exit: run `entrolab fit lynx --out lynx_exit` "
                "and pass `--param exit=lynx_exit` (Python: save_lynx(fit_lynx(backend, task, "
                "items), 'lynx_exit'), then exit='lynx_exit')"
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

    def _prepare(self, backend: Backend) -> None:
        super()._prepare(backend)
        self.exit.check_backend(backend)

    def _layer(self, backend: Backend) -> int:
        return self.exit.layer

    def _decide(self, ctx, rows, prefixes, hidden):
        g = self.exit.scores(hidden)
        fire = self.exit.threshold.exits(g)
        return [(bool(f), {"score": float(s)}) for f, s in zip(fire, g, strict=True)]


class ConciseStrategy(CueExitStrategy):
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
        pre = backend.encode(self.probe_prefix)
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
