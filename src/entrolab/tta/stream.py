"""Run a TTA method over a test stream and measure it: accuracy over the stream (on known
classes), open-set separation by max-softmax (AUROC, FPR at 95% TPR, OSCR), selected-sample
fraction.

Open-set metrics (known = positive; score = max-softmax; scope: the whole stream):
:func:`fpr_at_tpr` = the fraction of unknowns scored at or above the threshold that keeps 95%
of the knowns; :func:`oscr` = area under (false-positive rate on unknowns, correct
classification rate on knowns) as the threshold sweeps (Dhamija et al. 2018), 1 = perfect.

Results are plain dataclasses with ``to_dict`` (JSON); :func:`stream_plot` draws accuracy over
the stream (running accuracy per batch) for several methods into one PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entrolab.calibration import auroc
from entrolab.errors import EntrolabError
from entrolab.tta.adapt import EntropyMinTTA
from entrolab.tta.data import Stream

__all__ = ["StreamResult", "fpr_at_tpr", "oscr", "run_stream", "stream_plot"]


def fpr_at_tpr(score_known: np.ndarray, score_unknown: np.ndarray, tpr: float = 0.95) -> float:
    """FPR on unknowns at the largest threshold that accepts ≥ ``tpr`` of the knowns."""
    k, u = np.sort(np.asarray(score_known, float)), np.asarray(score_unknown, float)
    if k.size == 0 or u.size == 0:
        raise EntrolabError("fpr_at_tpr needs known and unknown scores")
    t = k[int(np.floor((1.0 - tpr) * k.size))]  # ≥ tpr of the knowns are ≥ t
    return float((u >= t).mean())


def oscr(score_known: np.ndarray, correct_known: np.ndarray, score_unknown: np.ndarray) -> float:
    """Open-set classification rate: ∫ CCR d FPR over thresholds (ties counted jointly)."""
    sk, ck = np.asarray(score_known, float), np.asarray(correct_known, bool)
    su = np.asarray(score_unknown, float)
    if sk.size == 0 or su.size == 0 or sk.shape != ck.shape:
        raise EntrolabError("oscr needs known scores + correctness of one shape and unknown scores")
    thr = np.unique(np.concatenate([sk, su]))[::-1]
    ccr = np.array([0.0] + [(ck & (sk >= t)).sum() / sk.size for t in thr])
    fpr = np.array([0.0] + [(su >= t).mean() for t in thr])
    return float(np.sum(np.diff(fpr) * (ccr[1:] + ccr[:-1]) / 2))


@dataclass
class StreamResult:
    """Outcome of one method on one stream.

    Attributes:
        method: method name. accuracy: fraction of known-class samples predicted correctly.
        auroc: max-softmax AUROC for known (1) vs unknown (0); None on a closed-set stream.
        fpr95: FPR on unknowns at 95% TPR on knowns; oscr: open-set classification rate
            (both None on a closed-set stream).
        selected_fraction: samples that entered the loss / samples seen (0 for source/norm).
        batch_accuracy: per-batch accuracy on known samples (NaN for a batch with none).
        n: stream length. n_known: known samples.
    """

    method: str
    accuracy: float
    auroc: float | None
    selected_fraction: float
    n: int
    n_known: int
    batch_accuracy: list[float] = field(default_factory=list)
    fpr95: float | None = None
    oscr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_stream(tta: EntropyMinTTA, stream: Stream, batch_size: int = 64) -> StreamResult:
    """Feed ``stream`` to ``tta`` in order, ``batch_size`` samples at a time (last batch partial)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EntrolabError(f"batch_size must be a positive int, got {batch_size!r}")
    x, y, known = torch.from_numpy(stream.x), torch.from_numpy(stream.y), stream.known
    conf, correct, batch_acc, selected = [], [], [], 0
    for i in range(0, len(y), batch_size):
        logits, info = tta.step(x[i : i + batch_size])
        yb, kb = y[i : i + batch_size], torch.from_numpy(known[i : i + batch_size])
        p = torch.softmax(logits.double(), -1)
        ok = (p.argmax(-1) == yb) & kb
        conf.append(p.amax(-1))
        correct.append(ok)
        batch_acc.append(float(ok.sum() / kb.sum()) if bool(kb.any()) else float("nan"))
        selected += info.selected
    c, ok = torch.cat(conf).numpy(), torch.cat(correct).numpy()
    n_known = int(known.sum())
    open_set = 0 < n_known < len(y)
    return StreamResult(
        tta.method,
        float(ok.sum() / max(n_known, 1)),
        auroc(c, known.astype(int)) if open_set else None,
        selected / len(y),
        len(y),
        n_known,
        batch_acc,
        fpr_at_tpr(c[known], c[~known]) if open_set else None,
        oscr(c[known], ok[known], c[~known]) if open_set else None,
    )


def stream_plot(
    results: Sequence[StreamResult], path: str | Path, *, title: str = "", window: int = 10
) -> Path:
    """PNG of per-batch accuracy (moving mean over ``window`` batches, fewer when the stream is
    shorter than 3 windows) for each result; each method gets its own colour and line style,
    and the legend sits to the right of the data. Uses ``matplotlib.figure.Figure`` (no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure

    styles = ("-", "--", "-.", ":")
    colors = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
    fig = Figure(figsize=(8.5, 3.8), layout="constrained")
    ax = fig.subplots()
    shortest = min((len(r.batch_accuracy) for r in results), default=1)
    w = max(1, min(window, shortest // 3))  # a short stream still shows a curve, not one point
    for i, r in enumerate(results):
        a = np.asarray(r.batch_accuracy, dtype=float)
        a = np.where(np.isnan(a), np.nanmean(a), a)
        smooth = np.convolve(a, np.ones(w) / w, mode="valid")
        label = f"{r.method}\n(acc {r.accuracy:.3f}" + (
            f", AUROC {r.auroc:.3f})" if r.auroc is not None else ")"
        )
        ax.plot(
            np.arange(w - 1, len(a)),
            smooth,
            label=label,
            color=colors[i % len(colors)],
            ls=styles[i % len(styles)],
            marker="osD^v"[i % 5] if len(smooth) <= 30 else None,
            ms=4,
            mfc="none",
            lw=1.4,
        )
    ax.set_xlabel("batch index in the stream")
    ax.set_ylabel(f"accuracy on known classes\n({w}-batch moving mean)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
