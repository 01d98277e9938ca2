"""Learned estimators: fitted heads on the model's hidden states (FineCE, SDM) and the
conformal set size over answer options (C-IP's uncertainty).

The fitted artefacts live in :mod:`entrolab.inference` (``fince.py``, ``sdm.py``), a layer above
this one, so an estimator here takes the fitted object as a parameter — any object with
``layer`` (int), ``check_backend(backend)`` and ``confidence(hidden [n, H]) -> float [n]`` —
e.g. ``run_estimators(backend, items, ["fince"], params={"fince": {"scorer":
load_fince(path)}})``. Without one the estimator says how to make one.

``sayself``: the confidence a model states *in its own greedy reply* ("Confidence: 7/10", the
format SaySelf teaches; :func:`entrolab.inference.sayself.fit_sayself`) — no extra generation.
Give it a task whose instructions ask for the statement; replies that state none get the run's
``unparsed_confidence``. Opt-in: it runs by name only (``--estimators sayself``).

Statistic ``greedy_hidden`` (needs the backend's ``hidden_states`` capability): a reader of the
hidden states of the greedy answer's last token (prompt as generated + answer tokens), read once
per layer on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from entrolab.backends.base import require
from entrolab.errors import EntrolabError
from entrolab.estimators.base import register
from entrolab.estimators.reflexive import parse_stated_confidence
from entrolab.estimators.stats import StatContext, statistic

__all__ = [
    "GreedyHidden",
    "fince_uncertainty",
    "parse_stated_confidence",
    "sayself_uncertainty",
    "sdm_uncertainty",
]

_FINCE = "Han et al. 2025, FineCE, arXiv:2508.12040"
_SAYSELF = "Xu et al. 2024, SaySelf, arXiv:2405.20974"
_SDM = "Schmaltz 2025, Similarity-Distance-Magnitude universal verification, arXiv:2502.20167"


class GreedyHidden:
    """Hidden states at the last token of each greedy answer (prompt ids + answer ids), read
    through ``backend.hidden_states`` once per layer: :meth:`last` → float32 [N, H]."""

    def __init__(self, backend: Any, seqs: list[list[int]]) -> None:
        self.backend, self.seqs = backend, seqs
        self._cache: dict[int, Any] = {}

    def last(self, layer: int) -> Any:
        import torch

        if layer not in self._cache:
            pos = [[len(s) - 1] for s in self.seqs]
            self._cache[layer] = torch.cat(self.backend.hidden_states(self.seqs, pos, layer))
        return self._cache[layer]


@statistic(
    "greedy_hidden",
    deps={"greedy"},
    summary="reader of the greedy answers' last-token hidden states (per layer, on demand)",
    backend_methods=("hidden_states",),
)
def _greedy_hidden(ctx: StatContext, stats: Mapping[str, Any]) -> GreedyHidden:
    require(ctx.backend, "hidden_states", "learned hidden-state estimators (fince, sdm)")
    kw = ctx.score_kwargs()
    seqs = []
    for t in stats["greedy"]:
        p = ctx.backend.prompt_ids(t.prompt, **kw)
        seqs.append(p + t.token_ids.tolist())
    return GreedyHidden(ctx.backend, seqs)


def _scored(stats: Mapping[str, Any], scorer: Any, name: str, how: str) -> np.ndarray:
    if scorer is None:
        raise EntrolabError(
            f"estimator {name!r} needs a fitted scorer: {how}, then pass it as "
            f"params={{'{name}': {{'scorer': OBJECT}}}}"
        )
    reader = stats["greedy_hidden"]
    scorer.check_backend(reader.backend)
    c = np.asarray(scorer.confidence(reader.last(int(scorer.layer))), dtype=np.float64)
    return 1.0 - c


@register(
    "fince",
    level="sequence",
    needs={"greedy_hidden"},
    requires={"hidden_states"},
    summary="FineCE: 1 − probe-predicted fraction of correct continuations at the answer's end",
    paper=_FINCE,
    defaults={"scorer": None},
    fitted={"scorer"},
)
def fince_uncertainty(stats: Mapping[str, Any], scorer: Any = None) -> np.ndarray:
    """u = 1 − ĉ, ĉ the FineCE probe's confidence at the last token of the greedy answer
    (``scorer``: :func:`entrolab.inference.fince.load_fince`)."""
    return _scored(stats, scorer, "fince", "`entrolab fit fince --out P`, load_fince(P)")


@register(
    "sdm",
    level="sequence",
    needs={"greedy_hidden"},
    requires={"hidden_states"},
    summary="SDM verifier: 1 − index-conditional lower estimate of P(answer correct) (0 when OOD)",
    paper=_SDM,
    defaults={"scorer": None},
    fitted={"scorer"},
)
def sdm_uncertainty(stats: Mapping[str, Any], scorer: Any = None) -> np.ndarray:
    """u = 1 − p̂_lower(correct | x) of an SDM verifier on the greedy answer's last-token hidden
    state (``scorer``: :func:`entrolab.inference.sdm.load_sdm`); OOD answers get u = 1."""
    return _scored(stats, scorer, "sdm", "`entrolab fit sdm --out P`, load_sdm(P)")


@statistic(
    "stated_confidence",
    deps={"greedy"},
    summary="confidence stated in each greedy reply itself ('Confidence: k/10'; unparsed → fallback)",
)
def _stated_confidence(ctx: StatContext, stats: Mapping[str, Any]) -> dict[str, Any]:
    values = [parse_stated_confidence(t.text) for t in stats["greedy"]]
    parsed = np.array([v is not None for v in values], dtype=bool)
    fallback = ctx.config.unparsed_confidence
    ctx.meta.setdefault("unparsed", {})["sayself"] = int((~parsed).sum())
    conf = np.array([fallback if v is None else v for v in values], dtype=np.float64)
    return {"confidence": conf, "parsed": parsed}


@register(
    "sayself",
    level="sequence",
    needs={"stated_confidence"},
    summary="u = 1 − confidence stated inside the greedy reply (SaySelf format; needs a task "
    "whose instructions ask for it)",
    paper=_SAYSELF,
    opt_in=True,
)
def sayself_uncertainty(stats: Mapping[str, Any]) -> np.ndarray:
    """u = 1 − c, c the confidence the greedy reply states (``stated_confidence`` statistic)."""
    return 1.0 - np.asarray(stats["stated_confidence"]["confidence"], dtype=np.float64)
