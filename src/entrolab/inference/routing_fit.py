"""DiffAdapt router training: difficulty labels from sampled accuracy and entropy, the per-question
training data, and fitting the 3-class probe (Liu, Hu, Chu, Choi, ICLR 2026, arXiv:2510.19669).
The routes, the router and the strategy live in :mod:`entrolab.inference.routing`.

**Labels** (the paper's exact rule is not published; this one follows its U-shape finding that
mean trace entropy is high on easy questions, lowest on medium ones and high again on hard
ones). From k samples per question, accuracy p̂ and mean token entropy H̄ (nats, the mean over
the k traces of each trace's mean token entropy):

    p̂ ≥ easy_min_accuracy                         → easy
    p̂ ≤ hard_max_accuracy                         → hard
    otherwise (the middle band), with entropy_quantile = q (None: skip this step)
        H̄ > the q-quantile of H̄ over the middle band → easy if p̂ ≥ 0.5 else hard
    otherwise                                    → normal

i.e. the middle-accuracy questions at the bottom of the entropy U stay ``normal`` and the
high-entropy ones (the top 1 − q of the band) join the extreme on their side of p̂ = 0.5. The
quantile is taken within the band so ``normal`` keeps about q of it even when the U-shape does
not hold (on SmolLM2 arithmetic it did not: mean entropy 1.50 / 1.89 / 1.58 / 1.31 nats for
accuracy buckets [0, .25) / [.25, .5) / [.5, .75) / [.75, 1], 36 questions, k = 4).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import item_seeds
from entrolab.inference.hidden import resolve_layer
from entrolab.inference.probes import ProbeInfo, fit_probe
from entrolab.inference.routing import (
    CLASSES,
    DiffAdaptRouter,
    Feature,
    RoutingConfig,
    prompt_features,
)

__all__ = [
    "SAMPLE_CONFIG",
    "DifficultyData",
    "collect_difficulty_data",
    "difficulty_labels",
    "fit_diffadapt",
    "fit_router",
    "u_shape_table",
]


#: How :func:`collect_difficulty_data` samples replies unless told otherwise (``num_samples`` is
#: replaced by ``k``).
SAMPLE_CONFIG = GenerationConfig(max_new_tokens=64, temperature=0.7, top_p=0.95)


# ------------------------------------------------------------------------------------ labels
def difficulty_labels(
    accuracy: Sequence[float],
    mean_entropy: Sequence[float],
    *,
    easy_min_accuracy: float = 0.75,
    hard_max_accuracy: float = 0.25,
    entropy_quantile: float | None = 0.5,
) -> list[str]:
    """Label each question easy / normal / hard by the rule in the module docstring.

    Args:
        accuracy: [N] fraction of a question's k samples that were correct, in [0, 1].
        mean_entropy: [N] mean token entropy of its samples (nats).
        entropy_quantile: q in [0, 1] for the entropy split of the middle band (None: off).

    Returns: N labels, each ``"easy"``, ``"normal"`` or ``"hard"``.
    """
    acc = torch.as_tensor(accuracy, dtype=torch.float64).reshape(-1)
    ent = torch.as_tensor(mean_entropy, dtype=torch.float64).reshape(-1)
    if acc.numel() == 0 or acc.shape != ent.shape:
        raise EntrolabError(
            f"need one accuracy and one mean entropy per question, got {acc.numel()} and "
            f"{ent.numel()}"
        )
    if not (torch.isfinite(acc).all() and torch.isfinite(ent).all()):
        raise EntrolabError("accuracies and entropies must be finite")
    if ((acc < 0) | (acc > 1)).any():
        raise EntrolabError("accuracies must lie in [0, 1]")
    if not 0 <= hard_max_accuracy < easy_min_accuracy <= 1:
        raise EntrolabError(
            "need 0 <= hard_max_accuracy < easy_min_accuracy <= 1, got "
            f"{hard_max_accuracy} and {easy_min_accuracy}"
        )
    middle = (acc > hard_max_accuracy) & (acc < easy_min_accuracy)
    cut = None
    if entropy_quantile is not None:
        if not 0 <= entropy_quantile <= 1:
            raise EntrolabError(f"entropy_quantile must be in [0, 1], got {entropy_quantile}")
        if middle.any():  # linear interpolation, numpy's default
            cut = float(torch.quantile(ent[middle], entropy_quantile))
    out = []
    for a, h in zip(acc.tolist(), ent.tolist(), strict=True):
        if a >= easy_min_accuracy:
            out.append("easy")
        elif a <= hard_max_accuracy:
            out.append("hard")
        elif cut is not None and h > cut:
            out.append("easy" if a >= 0.5 else "hard")
        else:
            out.append("normal")
    return out


def u_shape_table(
    accuracy: Sequence[float],
    mean_entropy: Sequence[float],
    edges: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> list[dict[str, float]]:
    """Mean entropy per accuracy bucket [e_j, e_{j+1}) (the last bucket includes 1.0): rows of
    ``{"low", "high", "n", "accuracy", "entropy"}``, for checking the U-shape on a model/task.
    Empty buckets have ``n = 0`` and NaN means."""
    acc = torch.as_tensor(accuracy, dtype=torch.float64).reshape(-1)
    ent = torch.as_tensor(mean_entropy, dtype=torch.float64).reshape(-1)
    if acc.shape != ent.shape or len(edges) < 2:
        raise EntrolabError("need equally long accuracy/entropy lists and at least two edges")
    rows = []
    for j, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = j == len(edges) - 2
        sel = (acc >= lo) & ((acc <= hi) if last else (acc < hi))
        n = int(sel.sum())
        nan = float("nan")
        rows.append(
            {
                "low": float(lo),
                "high": float(hi),
                "n": n,
                "accuracy": float(acc[sel].mean()) if n else nan,
                "entropy": float(ent[sel].mean()) if n else nan,
            }
        )
    return rows


# ------------------------------------------------------------------------- data and fitting
@dataclass(frozen=True)
class DifficultyData:
    """Per-question training data for the router (N questions).

    Attributes:
        features: float32 [N, D] (:func:`prompt_features`). accuracy: float64 [N], fraction of
        the k samples graded correct. mean_entropy: float64 [N], mean over the k traces of each
        trace's mean token entropy (nats). item_ids: N ids. feature, layer: how features were
        made. k: samples per question. generated_tokens: total tokens sampled to label them.
    """

    features: torch.Tensor
    accuracy: torch.Tensor
    mean_entropy: torch.Tensor
    item_ids: tuple[str, ...]
    feature: str
    layer: int | None
    k: int
    generated_tokens: int = 0


def collect_difficulty_data(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    k: int = 8,
    config: GenerationConfig | None = None,
    feature: Feature = "hidden",
    layer: int | None = None,
    seed: int = 0,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> DifficultyData:
    """Sample ``k`` replies per question (the task's own prompt, ``config``: T = 0.7, top-p
    0.95, 64 tokens by default) and measure accuracy and mean entropy; compute its features.

    ``on_progress(stage, done, total)``: ``"sampling replies"`` (rows), then
    ``"question features"`` (questions)."""
    if not items:
        raise EntrolabError("no items to collect difficulty data from")
    if k < 1:
        raise EntrolabError(f"k (samples per question) must be >= 1, got {k}")
    base = config or SAMPLE_CONFIG
    cfg = GenerationConfig.from_dict({**base.to_dict(), "num_samples": k})
    prompts = [it.prompt for it in items]
    kw = {}
    if on_progress is not None:
        kw["on_progress"] = lambda d, t, _tok: on_progress("sampling replies", d, t)
    batch = backend.generate(prompts, cfg, seeds=item_seeds(seed, items), **kw)
    acc = torch.zeros(len(items), dtype=torch.float64)
    ent = torch.zeros(len(items), dtype=torch.float64)
    for i, traces in batch.by_prompt().items():
        acc[i] = sum(task.grade(items[i], t.text).correct for t in traces) / len(traces)
        means = [float(t.entropy.double().mean()) for t in traces if len(t)]
        ent[i] = sum(means) / len(means) if means else 0.0
    used_layer = (
        resolve_layer(backend, layer, "DiffAdapt routing features") if "hidden" in feature else None
    )
    if on_progress is not None:
        on_progress("question features", 0, len(prompts))
    feats = prompt_features(backend, prompts, feature=feature, layer=used_layer)
    if on_progress is not None:
        on_progress("question features", len(prompts), len(prompts))
    return DifficultyData(
        feats, acc, ent, tuple(it.id for it in items), feature, used_layer, k,
        sum(len(t) for t in batch),
    )  # fmt: skip


def fit_router(
    data: DifficultyData,
    *,
    model: str,
    routes: RoutingConfig | None = None,
    easy_min_accuracy: float = 0.75,
    hard_max_accuracy: float = 0.25,
    entropy_quantile: float | None = 0.5,
    probe_kind: Literal["logistic", "mlp"] = "logistic",
    l2: float = 1e-2,
    seed: int = 0,
) -> DiffAdaptRouter:
    """Label the questions (:func:`difficulty_labels`) and fit a 3-class probe on their
    features (class-balanced). Raises if fewer than two classes occur."""
    rule = {
        "easy_min_accuracy": easy_min_accuracy,
        "hard_max_accuracy": hard_max_accuracy,
        "entropy_quantile": entropy_quantile,
    }
    names = difficulty_labels(data.accuracy, data.mean_entropy, **rule)
    y = torch.tensor([CLASSES.index(n) for n in names])
    counts = {c: names.count(c) for c in CLASSES}
    info = ProbeInfo(
        model=model,
        layer=data.layer,
        feature=data.feature,
        labels=CLASSES,
        extra={"label_rule": rule, "label_counts": counts, "k": data.k},
    )
    probe = fit_probe(
        data.features, y, kind=probe_kind, num_classes=3, l2=l2, class_weight="balanced",
        seed=seed, info=info,
    )  # fmt: skip
    return DiffAdaptRouter(probe, routes or RoutingConfig())


def fit_diffadapt(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    k: int = 8,
    feature: Feature = "hidden",
    layer: int | None = None,
    routes: RoutingConfig | None = None,
    config: GenerationConfig | None = None,
    seed: int = 0,
    on_progress: Callable[[str, int, int], None] | None = None,
    **label_rule: Any,
) -> DiffAdaptRouter:
    """:func:`collect_difficulty_data` (``config``, ``on_progress``: its sampling settings and
    progress callback) then :func:`fit_router` (``label_rule``: its keywords)."""
    data = collect_difficulty_data(
        backend, task, items, k=k, config=config, feature=feature, layer=layer, seed=seed,
        on_progress=on_progress,
    )  # fmt: skip
    return fit_router(data, model=backend.name, routes=routes, seed=seed, **label_rule)
