"""SDM: Similarity-Distance-Magnitude verification (Schmaltz 2025, arXiv:2502.20167).

A linear head on hidden states predicts a class (here: is this answer correct); the SDM
activation sharpens its softmax where the input resembles well-predicted training data:

    SDM(z)_y = (2 + q)^(z_y · d) / Σ_y' (2 + q)^(z_y' · d)

* **similarity** q: how many *consecutive* nearest training neighbours (L2, scikit-learn's
  ``NearestNeighbors``) are correctly predicted and share the test point's predicted class;
  q = 0 means out of distribution.
* **distance** d = min over classes c of 1 − CDF_c(d₀), d₀ the distance to the nearest training
  neighbour and CDF_c the empirical CDF of d₀ over calibration points of true class c with q > 0
  (``1 − searchsorted(left) / n_c``, as the reference code).
* **magnitude**: the logits z. With q = e − 2 and d = 1 the SDM activation is the softmax.

Calibration (reference ``sdm_model.py``, steps 2 and 5 of its comments): the per-class CDF
quantiles u of the SDM outputs over calibration points of each true class are rescaled by a
bias-free C × C linear map trained on the calibration set through ``SDM(W u)`` with base
2 + soft-q-bin, soft-q-bin = u_ŷ · ln(2 + q). A point is OOD (rejected) when ⌊soft-q-bin⌋ = 0
or the rescaled prediction flips. The **index-conditional lower estimate** p̂_lower(ŷ) re-runs
the rescaled output with u shifted by the DKW band ε = √(ln(2/α')/(2 n)) (n: calibration points
of each class whose soft-q-bin is at most the test point's; the predicted class moved down,
the others up). Simplifications (stated, not hidden): the head is a logistic probe trained with
cross-entropy (the SDM loss's first epoch), the rescaler is fitted full-batch (the reference
uses batch size 1), Alg. 3's high-probability-region threshold and the J repetitions are not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entrolab.backends.base import Backend
from entrolab.errors import EntrolabError
from entrolab.inference.probes import (
    Probe,
    ProbeInfo,
    fit_probe,
    load_probe,
    probe_paths,
    save_probe,
)

__all__ = [
    "SdmVerifier",
    "distance_quantiles",
    "dkw_error",
    "fit_sdm",
    "fit_sdm_on_task",
    "load_sdm",
    "output_cdf_quantiles",
    "save_sdm",
    "similarity_q",
    "soft_sdm_max",
    "verifier_data",
]


# ------------------------------------------------------------------------------ pure maths
def soft_sdm_max(z: Any, q: Any, d: Any = 1.0) -> np.ndarray:
    """SDM activation: z [N, C] logits, q [N] similarity (>= 0), d [N] or scalar distance
    quantile in [0, 1] → probabilities [N, C], float64. q = e − 2, d = 1 gives softmax(z)."""
    z = np.asarray(z, dtype=np.float64)
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), z.shape[:1])
    d = np.broadcast_to(np.asarray(d, dtype=np.float64), z.shape[:1])
    if z.ndim != 2 or np.any(q < 0) or not np.all(np.isfinite(z)):
        raise EntrolabError("soft_sdm_max needs finite logits [N, C] and q >= 0")
    z = z - z.max(axis=1, keepdims=True)
    a = np.log(2.0 + q)[:, None] * z * d[:, None]
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


def similarity_q(
    neighbour_idx: Any, train_labels: Any, train_pred: Any, pred: Any, *, skip_first: bool = False
) -> np.ndarray:
    """q per row: the number of consecutive nearest neighbours (``neighbour_idx`` [N, k],
    nearest first) that are correctly predicted (label == prediction) and predicted as the row's
    ``pred``. ``skip_first``: ignore column 0 (the point itself, when scoring training data)."""
    idx = np.asarray(neighbour_idx)[:, 1:] if skip_first else np.asarray(neighbour_idx)
    lab, tp = np.asarray(train_labels)[idx], np.asarray(train_pred)[idx]
    good = (lab == tp) & (tp == np.asarray(pred)[:, None])
    return np.where(good.all(axis=1), good.shape[1], np.argmin(good, axis=1)).astype(np.float64)


def distance_quantiles(d0: Any, class_cdfs: list[np.ndarray]) -> np.ndarray:
    """d per row: min over classes of 1 − searchsorted(sorted_c, d₀, left) / n_c (0 for a class
    without calibration points, as the reference's ``getCDFIndex``)."""
    d0 = np.asarray(d0, dtype=np.float64)
    cols = []
    for s in class_cdfs:
        cols.append(
            np.zeros_like(d0) if len(s) == 0 else 1 - np.searchsorted(s, d0, "left") / len(s)
        )
    return np.min(np.stack(cols, axis=1), axis=1)


def output_cdf_quantiles(p: Any, class_cdfs: list[np.ndarray]) -> np.ndarray:
    """u [N, C]: u[:, c] = searchsorted(sorted_c, p[:, c], left) / n_c, 1 at or above the largest
    calibration value (saturation guard), 0 for an empty class."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros_like(p)
    for c, s in enumerate(class_cdfs):
        if len(s):
            out[:, c] = np.where(
                p[:, c] >= s[-1], 1.0, np.searchsorted(s, p[:, c], "left") / len(s)
            )
    return out


def dkw_error(n: Any, alpha: float = 0.05) -> np.ndarray:
    """DKW band half-width √(ln(2/α)/(2n)); 1 where n = 0."""
    n = np.asarray(n, dtype=np.float64)
    return np.where(n > 0, np.sqrt(np.log(2 / alpha) / (2 * np.maximum(n, 1))), 1.0)


def _rescaled(w: np.ndarray, u: np.ndarray, pred: np.ndarray, q: np.ndarray):
    qbin = u[np.arange(len(u)), pred] * np.log(2.0 + q)
    return soft_sdm_max(u @ w.T, qbin), qbin


def _fit_rescaler(u: np.ndarray, pred: np.ndarray, q: np.ndarray, y: np.ndarray, steps: int = 300):
    c = u.shape[1]
    w = torch.eye(c, dtype=torch.float64, requires_grad=True)
    ut, yt = torch.as_tensor(u), torch.as_tensor(y, dtype=torch.int64)
    base = torch.as_tensor(2.0 + u[np.arange(len(u)), pred] * np.log(2.0 + q))
    opt = torch.optim.Adam([w], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            logits = (ut @ w.T) * torch.log(base)[:, None]
            torch.nn.functional.cross_entropy(logits, yt).backward()
            opt.step()
    return w.detach().numpy()


# ------------------------------------------------------------------------------ the verifier
@dataclass
class SdmVerifier:
    """A fitted SDM verifier: head, training support, calibration CDFs and rescaler."""

    probe: Probe
    support: np.ndarray  # [n_train, H] standardised training features
    train_labels: np.ndarray
    train_pred: np.ndarray
    d_cdfs: list[np.ndarray]
    out_cdfs: list[np.ndarray]
    qbin_cdfs: list[np.ndarray]
    rescaler: np.ndarray
    max_q: int = 100
    alpha: float = 0.05

    @property
    def layer(self) -> int:
        if self.probe.info.layer is None:
            raise EntrolabError("the SDM head does not record its layer; refit it")
        return self.probe.info.layer

    def check_backend(self, backend: Backend) -> None:
        self.probe.check_compatible(model=backend.name, feature_size=int(backend.hidden_size))

    def _z(self, x: Any) -> np.ndarray:
        s = self.probe.logits(x).numpy()
        return np.stack([np.zeros_like(s), s], axis=1) if s.ndim == 1 else s

    def _neighbours(self, xs: np.ndarray, skip_first: bool) -> tuple[np.ndarray, np.ndarray]:
        try:
            from sklearn.neighbors import NearestNeighbors
        except ImportError:
            raise EntrolabError(
                "SDM needs scikit-learn for its nearest-neighbour index: pip install "
                "'entrolab[learned]' (or scikit-learn)"
            ) from None

        k = min(self.max_q + int(skip_first), len(self.support))
        nn = NearestNeighbors(n_neighbors=k).fit(self.support)
        return nn.kneighbors(xs)

    def details(self, x: Any, *, training: bool = False) -> dict[str, np.ndarray]:
        """Everything SDM computes for features x [N, H]: ``z``, ``pred``, ``q``, ``d``, ``sdm``
        [N, C], ``u`` [N, C], ``qbin``, ``rescaled`` [N, C], ``lower`` [N] (p̂_lower of the
        predicted class), ``ood`` [N] bool."""
        z = self._z(x)
        xs = self.probe._features(x).numpy()
        dist, idx = self._neighbours(xs, training)
        pred = z.argmax(1)
        q = similarity_q(idx, self.train_labels, self.train_pred, pred, skip_first=training)
        d0 = dist[:, 1] if training else dist[:, 0]
        d = distance_quantiles(d0, self.d_cdfs)
        p = soft_sdm_max(z, q, d)
        u = output_cdf_quantiles(p, self.out_cdfs)
        rescaled, qbin = _rescaled(self.rescaler, u, pred, q)
        n_eff = np.stack([np.searchsorted(s, qbin, "left") for s in self.qbin_cdfs], axis=1).astype(
            np.float64
        )
        eps = dkw_error(n_eff, self.alpha)
        rows = np.arange(len(pred))
        u_low = np.clip(u + eps, 0, 1)
        u_low[rows, pred] = np.clip(u[rows, pred] - eps[rows, pred], 0, 1)
        low, _ = _rescaled(self.rescaler, u_low, pred, q)
        ood = (np.floor(qbin) == 0) | (rescaled.argmax(1) != pred) | (q == 0)
        return {"z": z, "pred": pred, "q": q, "d": d, "sdm": p, "u": u, "qbin": qbin,
                "rescaled": rescaled, "lower": low[rows, pred], "ood": ood}  # fmt: skip

    def confidence(self, x: Any) -> np.ndarray:
        """P(class 1 = "correct") for the estimator: p̂_lower(correct) when the head predicts
        correct, 1 − rescaled P(wrong) when it predicts wrong, and 0 for OOD (rejected) points."""
        r = self.details(x)
        c = np.where(r["pred"] == 1, r["lower"], 1.0 - r["rescaled"][:, 0])
        return np.where(r["ood"], 0.0, c)


def fit_sdm(
    features: Any,
    labels: Any,
    calibration: Any,
    *,
    model: str = "",
    layer: int | None = None,
    l2: float = 1.0,
    max_q: int = 100,
    alpha: float = 0.05,
    seed: int = 0,
) -> SdmVerifier:
    """Fit the head on (``features`` [n, H], ``labels`` [n] 0/1), then SDM's calibration on
    ``calibration`` = (features [m, H], labels [m]) — disjoint items.

    Raises:
        EntrolabError: an empty calibration set, or a training set with one class only.
    """
    xc, yc = calibration
    xc, yc = torch.as_tensor(xc), np.asarray(yc, dtype=np.int64)
    if len(yc) == 0:
        raise EntrolabError("the SDM calibration set is empty; hold out some items for it")
    info = ProbeInfo(model=model, layer=layer, feature="hidden", labels=("wrong", "correct"))
    probe = fit_probe(features, labels, kind="logistic", l2=l2, class_weight="balanced",
                      seed=seed, info=info)  # fmt: skip
    y = np.asarray(labels, dtype=np.int64)
    support = probe._features(features).numpy()
    c = probe.num_classes
    v = SdmVerifier(probe, support, y, np.zeros_like(y), [np.zeros(0)] * c, [np.zeros(0)] * c,
                    [np.zeros(0)] * c, np.eye(c), max_q, alpha)  # fmt: skip
    v.train_pred = v._z(features).argmax(1)
    xs = probe._features(xc).numpy()
    dist, idx = v._neighbours(xs, False)
    z = v._z(xc)
    pred = z.argmax(1)
    q = similarity_q(idx, y, v.train_pred, pred)
    v.d_cdfs = [np.sort(dist[(yc == k) & (q > 0), 0]) for k in range(c)]
    p = soft_sdm_max(z, q, distance_quantiles(dist[:, 0], v.d_cdfs))
    v.out_cdfs = [np.sort(p[yc == k, k]) for k in range(c)]
    u = output_cdf_quantiles(p, v.out_cdfs)
    v.rescaler = _fit_rescaler(u, pred, q, yc)
    _, qbin = _rescaled(v.rescaler, u, pred, q)
    v.qbin_cdfs = [np.sort(qbin[yc == k]) for k in range(c)]
    return v


# ------------------------------------------------------------------------------ save / load
def _support_path(path: str | Path) -> Path:
    w, _ = probe_paths(path)
    return w.with_name(w.name.removesuffix(".safetensors") + ".support.safetensors")


def save_sdm(v: SdmVerifier, path: str | Path) -> Path:
    """``<stem>.json`` + ``<stem>.safetensors`` (the head) + ``<stem>.support.safetensors``."""
    from safetensors.numpy import save_file

    tensors = {"support": v.support.astype(np.float32), "train_labels": v.train_labels,
               "train_pred": v.train_pred, "rescaler": v.rescaler}  # fmt: skip
    for name, cdfs in (("d", v.d_cdfs), ("out", v.out_cdfs), ("qbin", v.qbin_cdfs)):
        for k, s in enumerate(cdfs):
            tensors[f"{name}_cdf.{k}"] = np.ascontiguousarray(s, dtype=np.float64)
    sp = _support_path(path)
    sp.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(t) for k, t in tensors.items()}, str(sp))
    extra = {"max_q": v.max_q, "alpha": v.alpha, "support": sp.name}
    return save_probe(v.probe.with_extra(sdm=extra), path)


def load_sdm(path: str | Path, backend: Backend | None = None) -> SdmVerifier:
    """Load an SDM verifier saved by :func:`save_sdm` (checked against ``backend`` if given)."""
    from safetensors.numpy import load_file

    probe = load_probe(path)
    cfg = probe.info.extra.get("sdm")
    sp = _support_path(path)
    if not isinstance(cfg, dict) or not sp.is_file():
        raise EntrolabError(
            f"{str(path)!r} is not an SDM verifier (no 'sdm' settings or no "
            f"{sp.name}); make one with `entrolab fit sdm`"
        )
    t = load_file(str(sp))
    c = probe.num_classes
    v = SdmVerifier(
        probe, t["support"], t["train_labels"], t["train_pred"],
        [t[f"d_cdf.{k}"] for k in range(c)], [t[f"out_cdf.{k}"] for k in range(c)],
        [t[f"qbin_cdf.{k}"] for k in range(c)], t["rescaler"], int(cfg["max_q"]),
        float(cfg["alpha"]),
    )  # fmt: skip
    if backend is not None:
        v.check_backend(backend)
    return v


# ------------------------------------------------------------------------------ data and fit
def verifier_data(
    backend: Backend,
    task: Any,
    items: Any,
    *,
    layer: int | None = None,
    samples: int = 2,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """(features [n·samples, H] at the last token of prompt + sampled answer, labels [n·samples]
    (1 = the task grades the answer correct), item index [n·samples], layer, mean token
    log-probability of each answer [n·samples] (nats; a white-box baseline)) for a verifier."""
    from entrolab.config import GenerationConfig
    from entrolab.inference.base import item_seeds
    from entrolab.inference.hidden import hidden_at, resolve_layer

    layer = resolve_layer(backend, layer, "SDM verification")
    cfg = GenerationConfig(num_samples=samples, max_new_tokens=max_new_tokens,
                           temperature=temperature, topk_logprobs=0)  # fmt: skip
    batch = list(backend.generate([it.prompt for it in items], cfg, seeds=item_seeds(seed, items)))
    seqs = [backend.prompt_ids(t.prompt) + t.token_ids.tolist() for t in batch]
    feats = torch.cat(hidden_at(backend, seqs, [[len(s) - 1] for s in seqs], layer))
    labels = [int(task.grade(items[t.prompt_index], t.text).correct) for t in batch]
    item = [t.prompt_index for t in batch]
    mlp = [float(t.logprob.double().mean()) if len(t) else 0.0 for t in batch]
    return feats, torch.tensor(labels), torch.tensor(item), layer, torch.tensor(mlp)


def fit_sdm_on_task(
    backend: Backend,
    task: Any,
    items: Any,
    *,
    calibration_fraction: float = 0.5,
    layer: int | None = None,
    samples: int = 2,
    max_new_tokens: int = 32,
    seed: int = 0,
    **fit: Any,
) -> SdmVerifier:
    """Sample answers on ``items`` (:func:`verifier_data`), split by item into training and
    calibration, and :func:`fit_sdm` (``fit``: its keywords ``l2``, ``max_q``, ``alpha``)."""
    if not 0 < calibration_fraction < 1 or len(items) < 2:
        raise EntrolabError("need >= 2 items and calibration_fraction in (0, 1)")
    x, y, item, layer, _ = verifier_data(backend, task, items, layer=layer, samples=samples,
                                      max_new_tokens=max_new_tokens, seed=seed)  # fmt: skip
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    n_cal = min(len(items) - 1, max(1, round(len(items) * calibration_fraction)))
    cal = torch.isin(item, perm[:n_cal])
    return fit_sdm(x[~cal], y[~cal], (x[cal], y[cal]), model=backend.name, layer=layer,
                   seed=seed, **fit)  # fmt: skip
