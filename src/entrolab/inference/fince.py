"""FineCE: fine-grained confidence at any prefix of a reasoning trace, with Backward Confidence
Integration (Han et al. 2025, arXiv:2508.12040).

A probe on the hidden state of a prefix's last token predicts the fraction of correct
continuations from that prefix (Monte-Carlo labels from
:func:`~entrolab.inference.fince_data.collect_prefix_labels`). The paper fine-tunes the LLM
(LoRA) to emit the confidence; here the probe is the spec's CPU form (B6.5): a logistic probe on
frozen hidden states fitted to the *soft* labels. A soft label k/N is fitted exactly as k copies
of the row labelled 1 and N − k labelled 0 (the binary cross-entropy of the soft label, summed),
so :func:`~entrolab.inference.probes.fit_probe` is reused unchanged.

**BCI** (:func:`backward_integrate`): the paper refines the confidence of a prefix with the
estimates made on later text; its exact form is not public (spec B6, [U]), so this is the spec's
documented placeholder ĉᴮᶜᴵ_t = λ·ĉ_t + (1 − λ)·mean(ĉ_{t+1}, …, ĉ_{t+K}) over the next K
estimation points that exist (at the last point ĉᴮᶜᴵ = ĉ). It needs lookahead: offline only.

Uses: the ``fince`` estimator (confidence at the end of a trace,
:mod:`entrolab.estimators.learned`) through :meth:`FineceProbe.confidence`, and the ``fince``
strategy (online: a step hook scores every step end during generation and stops a trace when the
confidence reaches ``threshold``, then forces the answer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import STRATEGIES
from entrolab.inference.cue_exit import CueExitStrategy
from entrolab.inference.cues import COT_INSTRUCTIONS
from entrolab.inference.fince_data import PrefixLabels, collect_prefix_labels
from entrolab.inference.probes import Probe, ProbeInfo, fit_probe, load_probe, save_probe

__all__ = [
    "FineceProbe",
    "FineceStrategy",
    "backward_integrate",
    "expand_soft_labels",
    "fit_fince",
    "fit_fince_on",
    "load_fince",
    "save_fince",
]

_PAPER = "Han et al. 2025, FineCE: fine-grained confidence estimation, arXiv:2508.12040"


# ------------------------------------------------------------------------------ pure maths
def backward_integrate(conf: Any, lam: float = 0.5, k: int = 2) -> np.ndarray:
    """Backward Confidence Integration (spec placeholder form) along one trace.

    Args:
        conf: float [T], confidences at the T estimation points of one trace, in order.
        lam: weight λ ∈ [0, 1] of the point's own estimate (1: no smoothing).
        k: K >= 1, how many later points are averaged (fewer near the end).

    Returns: float64 [T], ĉᴮᶜᴵ_t = λ ĉ_t + (1 − λ) mean_{j=1..min(K, T−1−t)} ĉ_{t+j}; the last
    point keeps its own value.
    """
    c = np.asarray(conf, dtype=np.float64)
    if c.ndim != 1 or not np.all(np.isfinite(c)):
        raise EntrolabError("BCI needs a finite 1-D vector of confidences (one per point)")
    if not 0 <= lam <= 1 or k < 1:
        raise EntrolabError(f"BCI needs lam in [0, 1] and k >= 1, got lam={lam}, k={k}")
    out = c.copy()
    for t in range(len(c) - 1):
        out[t] = lam * c[t] + (1 - lam) * c[t + 1 : t + 1 + k].mean()
    return out


def expand_soft_labels(
    features: Any, successes: Any, trials: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows for a hard-label probe fit whose loss equals the soft-label loss: row i appears
    ``successes[i]`` times labelled 1 and ``trials[i] − successes[i]`` times labelled 0.
    Returns (features [Σ trials, H], labels int64 [Σ trials])."""
    x = torch.as_tensor(features)
    k, n = torch.as_tensor(successes).long(), torch.as_tensor(trials).long()
    if k.shape != n.shape or k.shape[0] != x.shape[0] or bool(((k < 0) | (k > n)).any()):
        raise EntrolabError("need 0 <= successes <= trials, one pair per feature row")
    idx = torch.repeat_interleave(torch.arange(len(n)), n)
    ones = torch.cat([torch.arange(int(t)) < int(s) for s, t in zip(k, n, strict=True)])
    return x[idx], ones.long()


# ------------------------------------------------------------------------------ the artefact
@dataclass
class FineceProbe:
    """A fitted FineCE probe and its settings (saved together by :func:`save_fince`)."""

    probe: Probe
    bci_lam: float = 0.5
    bci_k: int = 2

    @property
    def layer(self) -> int:
        if self.probe.info.layer is None:
            raise EntrolabError("the FineCE probe does not record its layer; refit it")
        return self.probe.info.layer

    @property
    def model(self) -> str:
        return self.probe.info.model

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.probe.info.extra.get("fince", {}))

    def check_backend(self, backend: Backend) -> None:
        """Raise if the probe was trained on another model (name, hidden size)."""
        self.probe.check_compatible(model=backend.name, feature_size=int(backend.hidden_size))

    def confidence(self, hidden: Any) -> np.ndarray:
        """Predicted fraction of correct continuations, float64 [n], for hidden [n, H]."""
        return self.probe.predict_proba(hidden).numpy()


def fit_fince_on(
    data: PrefixLabels,
    *,
    model: str,
    items: Sequence[int] | None = None,
    l2: float = 1.0,
    bci_lam: float = 0.5,
    bci_k: int = 2,
    seed: int = 0,
) -> FineceProbe:
    """Fit the probe on the rows of ``items`` (indices into ``data.item_ids``; None = all).

    ``l2`` defaults to 1.0, as LYNX's cue probe (a few hundred prefixes of a 576-wide state)."""
    rows = torch.ones(len(data), dtype=torch.bool)
    if items is not None:
        rows = torch.isin(data.item, torch.as_tensor(list(items), dtype=torch.int64))
    if not bool(rows.any()):
        raise EntrolabError("no FineCE rows to fit on; collect labels on more items")
    x, y = expand_soft_labels(data.features[rows], data.successes[rows], data.trials[rows])
    extra = {"fince": {**data.meta, "bci_lam": bci_lam, "bci_k": bci_k,
                       "train_rows": int(rows.sum()), "train_items": len(set(data.item[rows].tolist()))}}  # fmt: skip
    info = ProbeInfo(model=model, layer=data.layer, feature="hidden", labels=("wrong", "correct"),
                     extra=extra)  # fmt: skip
    probe = fit_probe(x, y, kind="logistic", l2=l2, seed=seed, info=info)
    return FineceProbe(probe, float(bci_lam), int(bci_k))


def fit_fince(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    seed: int = 0,
    l2: float = 1.0,
    bci_lam: float = 0.5,
    bci_k: int = 2,
    on_progress: Callable[[str, int, int], None] | None = None,
    **collect: Any,
) -> FineceProbe:
    """:func:`~entrolab.inference.fince_data.collect_prefix_labels` (``collect``: its keywords,
    e.g. ``rule``, ``num_continuations``, ``path`` for a resumable label file), then
    :func:`fit_fince_on` on every item."""
    data = collect_prefix_labels(
        backend, task, items, seed=seed, on_progress=on_progress, **collect
    )
    return fit_fince_on(data, model=backend.name, l2=l2, bci_lam=bci_lam, bci_k=bci_k, seed=seed)


def save_fince(fince: FineceProbe, path: str | Path) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json``; returns the JSON path."""
    extra = {**fince.settings, "bci_lam": fince.bci_lam, "bci_k": fince.bci_k}
    return save_probe(fince.probe.with_extra(fince=extra), path)


def load_fince(
    path: str | Path, backend: Backend | None = None, *, layer: int | None = None
) -> FineceProbe:
    """Load a FineCE probe; with ``backend`` (and ``layer``) check it was made for them."""
    probe = load_probe(path, layer=layer)
    cfg = probe.info.extra.get("fince")
    if not isinstance(cfg, dict):
        raise EntrolabError(
            f"{str(path)!r} is a probe but not a FineCE probe (no 'fince' settings); make one "
            "with `entrolab fit fince`"
        )
    out = FineceProbe(probe, float(cfg.get("bci_lam", 0.5)), int(cfg.get("bci_k", 2)))
    if backend is not None:
        out.check_backend(backend)
    return out


# ------------------------------------------------------------------------------ the strategy
class FineceStrategy(CueExitStrategy):
    """Stop a CoT trace at the first step end whose FineCE confidence is >= ``threshold`` and
    force the answer there (online by default: a step hook scores each step end as it is
    generated). ``probe``: a :class:`FineceProbe` or the path it was saved to."""

    name = "fince"
    needs_hidden = True

    def __init__(
        self,
        probe: FineceProbe | str | Path | None = None,
        threshold: float = 0.8,
        config: GenerationConfig | Mapping[str, Any] | None = None,
        mode: Literal["online", "replay"] = "online",
        min_position: int = 0,
        force_on_length: bool = True,
    ) -> None:
        if probe is None:
            raise EntrolabError(
                "the 'fince' strategy needs a fitted probe: run `entrolab fit fince --out P` "
                "and pass `--param probe=P`"
            )
        if not 0 <= threshold <= 1:
            raise EntrolabError(f"threshold must be a probability in [0, 1], got {threshold}")
        self.fince = probe if isinstance(probe, FineceProbe) else load_fince(probe)
        self.threshold = float(threshold)
        s = self.fince.settings
        super().__init__(
            cues=tuple(s.get("cues", ("\n",))), config=config, mode=mode,
            instructions=s.get("instructions", COT_INSTRUCTIONS),
            answer_prefix=s.get("answer_prefix", "\nAnswer:"), answer_tokens=6,
            min_position=min_position, force_on_length=force_on_length,
        )  # fmt: skip

    def _prepare(self, backend: Backend) -> None:
        super()._prepare(backend)
        self.fince.check_backend(backend)

    def _layer(self, backend: Backend) -> int:
        return self.fince.layer

    def _decide(self, ctx, rows, prefixes, hidden):
        c = self.fince.confidence(hidden)
        return [(bool(v >= self.threshold), {"confidence": float(v)}) for v in c]


STRATEGIES.register(
    "fince",
    summary="FineCE: stop a CoT trace at the first step end whose prefix confidence (hidden-state probe) >= threshold",
    paper=_PAPER,
    defaults={"threshold": 0.8, "mode": "online", "min_position": 0, "force_on_length": True},
)(FineceStrategy)
