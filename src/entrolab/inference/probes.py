"""Small probes on model features: logistic regression and a one-hidden-layer MLP, in torch.

A :class:`Probe` maps features ``x`` [N, D] (hidden states of one layer, entropy features, …) to
class probabilities. Binary probes (``num_classes = 2``) have one output logit and
:meth:`Probe.predict_proba` returns P(y = 1) [N]; multi-class probes return [N, C]. Features are
standardised with the training mean and standard deviation, stored with the probe.

Fitting (:func:`fit_probe`) is full-batch and deterministic for a seed, in float64:

* ``"logistic"`` minimises ``mean_i CE(y_i, W x_i + b) + (l2 / 2) ‖W‖²`` with L-BFGS (the
  intercept is not penalised). This is scikit-learn's ``LogisticRegression(C=1 / (N · l2))`` on
  the standardised features (binary: one logit; multi-class: the multinomial softmax).
* ``"mlp"``: Linear(D, hidden) → ReLU → Linear(hidden, out), same loss, trained with Adam.

Probes save as two files (:func:`save_probe`): ``<stem>.safetensors`` (weights, float64) and
``<stem>.json`` (architecture, label names, and the model name, feature size and layer they were
trained on). :func:`load_probe` checks those against the model it is meant for, so a probe is
never silently applied to another model's hidden states.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text

__all__ = ["Probe", "ProbeInfo", "fit_probe", "load_probe", "probe_paths", "save_probe"]

ProbeKind = Literal["logistic", "mlp"]
_FORMAT = 1


@dataclass(frozen=True)
class ProbeInfo:
    """What a probe was trained on (checked when it is loaded for use).

    Attributes:
        model: name of the model whose features it reads ("" = not tied to a model).
        feature_size: D, the feature dimension (the hidden size for hidden-state probes).
        layer: decoder layer the hidden states come from (None for non-hidden features).
        feature: what the features are (``"hidden"``, ``"entropy"``, ``"hidden+entropy"``, …).
        labels: one name per class, index = class id.
        extra: JSON-serialisable details (thresholds, cues, training data sizes, …).
    """

    model: str = ""
    feature_size: int = 0
    layer: int | None = None
    feature: str = "hidden"
    labels: tuple[str, ...] = ("0", "1")
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "feature_size": self.feature_size,
            "layer": self.layer,
            "feature": self.feature,
            "labels": list(self.labels),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeInfo:
        return cls(
            str(d.get("model", "")),
            int(d.get("feature_size", 0)),
            None if d.get("layer") is None else int(d["layer"]),
            str(d.get("feature", "hidden")),
            tuple(str(x) for x in d.get("labels", ("0", "1"))),
            dict(d.get("extra") or {}),
        )


def _net(kind: str, d: int, out: int, hidden: int) -> torch.nn.Module:
    if kind == "logistic":
        return torch.nn.Linear(d, out, dtype=torch.float64)
    if kind == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(d, hidden, dtype=torch.float64),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, out, dtype=torch.float64),
        )
    raise EntrolabError(f"unknown probe kind {kind!r}; use 'logistic' or 'mlp'")


class Probe:
    """A fitted probe: standardisation + a small network. Use :func:`fit_probe` to make one.

    Attributes:
        kind: ``"logistic"`` or ``"mlp"``. num_classes: C (>= 2). hidden: MLP width (0 for
        logistic). mean, std: float64 [D] standardisation. net: the torch module (float64).
        info: :class:`ProbeInfo`.
    """

    def __init__(
        self,
        kind: ProbeKind,
        num_classes: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        net: torch.nn.Module,
        info: ProbeInfo,
        hidden: int = 0,
    ) -> None:
        self.kind, self.num_classes, self.hidden = kind, int(num_classes), int(hidden)
        self.mean, self.std = mean.double(), std.double()
        self.net = net.eval()
        self.info = info

    @property
    def feature_size(self) -> int:
        return int(self.mean.numel())

    def _features(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x).detach().to(torch.float64)
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2 or x.shape[1] != self.feature_size:
            raise EntrolabError(
                f"probe expects features of shape [N, {self.feature_size}], got "
                f"{tuple(x.shape)}; it was trained on {self.info.feature!r} features of "
                f"model {self.info.model!r}"
            )
        if not torch.isfinite(x).all():
            raise EntrolabError("probe features contain NaN or inf; check the model's outputs")
        return (x - self.mean) / self.std

    @torch.no_grad()
    def logits(self, x: Any) -> torch.Tensor:
        """Raw outputs: [N] (binary: the log-odds of class 1) or [N, C]."""
        out = self.net(self._features(x))
        return out[:, 0] if self.num_classes == 2 else out

    def predict_proba(self, x: Any) -> torch.Tensor:
        """Binary: P(y = 1) float64 [N]; multi-class: softmax probabilities [N, C]."""
        z = self.logits(x)
        return torch.sigmoid(z) if self.num_classes == 2 else torch.softmax(z, -1)

    def predict(self, x: Any) -> torch.Tensor:
        """The most likely class per row, int64 [N] (binary: P(y = 1) > 0.5)."""
        z = self.logits(x)
        return (z > 0).long() if self.num_classes == 2 else z.argmax(-1)

    def check_compatible(
        self, *, model: str | None = None, feature_size: int | None = None, layer: int | None = None
    ) -> None:
        """Raise :class:`EntrolabError` if the probe was trained for another model, feature size
        or layer (arguments left None are not checked; an untied probe, ``info.model == ""``,
        matches any model name)."""
        i = self.info
        problems = []
        if model is not None and i.model and model != i.model:
            problems.append(f"model {i.model!r} (not {model!r})")
        if feature_size is not None and feature_size != self.feature_size:
            problems.append(f"feature size {self.feature_size} (not {feature_size})")
        if layer is not None and i.layer is not None and layer != i.layer:
            problems.append(f"layer {i.layer} (not {layer})")
        if problems:
            raise EntrolabError(
                f"this probe was trained for {', '.join(problems)}; its features would be "
                "meaningless here. Fit a new probe for this model (e.g. fit_lynx / "
                "fit_diffadapt) or load the probe made for it"
            )

    def with_extra(self, **extra: Any) -> Probe:
        """A probe sharing these weights whose ``info.extra`` also holds ``extra`` (e.g. the
        settings a strategy needs, saved with the weights)."""
        i = self.info
        info = ProbeInfo(
            i.model, i.feature_size, i.layer, i.feature, i.labels, {**i.extra, **extra}
        )
        return Probe(self.kind, self.num_classes, self.mean, self.std, self.net, info, self.hidden)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All tensors (float64, contiguous): ``net.*``, ``mean``, ``std``."""
        out = {f"net.{k}": v.detach().contiguous() for k, v in self.net.state_dict().items()}
        out["mean"], out["std"] = self.mean.contiguous(), self.std.contiguous()
        return out


def _check_training_data(x: Any, y: Any, num_classes: int | None) -> tuple[torch.Tensor, ...]:
    x = torch.as_tensor(x).detach().to(torch.float64)
    y = torch.as_tensor(y).detach()
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise EntrolabError(
            f"probe features must be a non-empty [N, D] array, got shape {tuple(x.shape)}; "
            "collect some examples first (were any cues found?)"
        )
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise EntrolabError(f"need one label per feature row: {x.shape[0]} rows, {tuple(y.shape)}")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise EntrolabError("probe labels must be integer class ids (0, 1, …)")
        y = y.round()
    y = y.long()
    if not torch.isfinite(x).all():
        raise EntrolabError("probe features contain NaN or inf; drop or fix those rows")
    c = int(num_classes) if num_classes is not None else max(2, int(y.max()) + 1)
    if c < 2 or int(y.min()) < 0 or int(y.max()) >= c:
        raise EntrolabError(f"labels must lie in 0..{c - 1}, got {int(y.min())}..{int(y.max())}")
    present = torch.unique(y)
    if present.numel() < 2:
        raise EntrolabError(
            f"all {y.numel()} labels are {int(present[0])}: a probe needs examples of at least "
            "two classes (e.g. both ready and not-ready exits); collect more or harder/easier items"
        )
    return x, y, torch.tensor(c)


def fit_probe(
    features: Any,
    labels: Any,
    *,
    kind: ProbeKind = "logistic",
    num_classes: int | None = None,
    l2: float = 1e-2,
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 1e-2,
    class_weight: Literal["balanced"] | None = None,
    seed: int = 0,
    info: ProbeInfo | None = None,
) -> Probe:
    """Fit a probe on features [N, D] and integer labels [N] (full batch, float64).

    Args:
        kind: ``"logistic"`` (L-BFGS, convex, exact optimum) or ``"mlp"`` (Adam, ``epochs``
            steps of learning rate ``lr``, ``hidden`` units).
        num_classes: C; default ``max(labels) + 1`` (at least 2).
        l2: weight penalty (l2 / 2)·‖W‖² added to the mean loss (biases are not penalised).
        class_weight: ``"balanced"`` weights class c by N / (C · N_c) (sklearn's convention).
        seed: initialisation seed (MLP; logistic starts from zeros).
        info: metadata stored with the probe (``feature_size`` is filled in from D).

    Raises:
        EntrolabError: empty data, NaN/inf features, fewer than two distinct labels, bad shapes.
    """
    x, y, c_t = _check_training_data(features, labels, num_classes)
    c = int(c_t)
    if not (math.isfinite(l2) and l2 >= 0):
        raise EntrolabError(f"l2 must be a finite number >= 0, got {l2}")
    n, d = x.shape
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant feature → unscaled
    xs = (x - mean) / std
    counts = torch.bincount(y, minlength=c).double()
    if class_weight == "balanced":
        w_class = torch.where(counts > 0, n / (c * counts.clamp(min=1)), torch.zeros_like(counts))
    elif class_weight is None:
        w_class = torch.ones(c, dtype=torch.float64)
    else:
        raise EntrolabError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    w_row = w_class[y]
    out = 1 if c == 2 else c
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _net(kind, d, out, hidden)
    if kind == "logistic":
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]

    def loss_fn() -> torch.Tensor:
        z = net(xs)
        if c == 2:
            per = torch.nn.functional.binary_cross_entropy_with_logits(
                z[:, 0], y.double(), reduction="none"
            )
        else:
            per = torch.nn.functional.cross_entropy(z, y, reduction="none")
        return (w_row * per).sum() / n + 0.5 * l2 * sum((w * w).sum() for w in weights)

    with torch.enable_grad():
        if kind == "logistic":
            opt = torch.optim.LBFGS(
                net.parameters(),
                lr=1.0,
                max_iter=1000,
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
                history_size=50,
                line_search_fn="strong_wolfe",
            )

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = loss_fn()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            adam = torch.optim.Adam(net.parameters(), lr=lr)
            for _ in range(epochs):
                adam.zero_grad()
                loss_fn().backward()
                adam.step()
    base = info or ProbeInfo(labels=tuple(str(i) for i in range(c)))
    if len(base.labels) != c:
        raise EntrolabError(f"info.labels names {len(base.labels)} classes but there are {c}")
    info = ProbeInfo(base.model, d, base.layer, base.feature, base.labels, dict(base.extra))
    return Probe(kind, c, mean, std, net, info, hidden if kind == "mlp" else 0)


# ---------------------------------------------------------------------------------- save / load
def probe_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) paths for ``path`` with or without a .safetensors/.json suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_probe(probe: Probe, path: str | Path) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; returns the JSON path."""
    from safetensors.torch import save_file

    w_path, j_path = probe_paths(path)
    w_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(probe.state_dict(), str(w_path), metadata={"format": "entrolab-probe"})
    meta = {
        "format": _FORMAT,
        "kind": probe.kind,
        "num_classes": probe.num_classes,
        "hidden": probe.hidden,
        "info": probe.info.to_dict(),
        "weights": w_path.name,
    }
    return atomic_write_text(j_path, json.dumps(meta, indent=2, allow_nan=False))


def load_probe(
    path: str | Path,
    *,
    model: str | None = None,
    feature_size: int | None = None,
    layer: int | None = None,
) -> Probe:
    """Load a probe saved by :func:`save_probe`, checking it fits the intended model.

    Raises:
        EntrolabError: missing files, a file that is not an entrolab probe, or a probe trained
            for another model / feature size / layer (see :meth:`Probe.check_compatible`).
    """
    from safetensors.torch import load_file

    w_path, j_path = probe_paths(path)
    for p in (j_path, w_path):
        if not p.is_file():
            raise EntrolabError(
                f"probe file {str(p)!r} not found; a probe is saved as <stem>.json + "
                "<stem>.safetensors by save_probe (or the fit command)"
            )
    try:
        meta = json.loads(j_path.read_text(encoding="utf-8"))
        kind, c, hidden = meta["kind"], int(meta["num_classes"]), int(meta["hidden"])
        info = ProbeInfo.from_dict(meta["info"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise EntrolabError(f"{str(j_path)!r} is not an entrolab probe file ({e})") from None
    if int(meta.get("format", 0)) > _FORMAT:
        raise EntrolabError(f"probe format {meta['format']} is newer than this entrolab; upgrade")
    tensors = load_file(str(w_path))
    mean, std = tensors.pop("mean"), tensors.pop("std")
    net = _net(kind, int(mean.numel()), 1 if c == 2 else c, hidden)
    try:
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
    except RuntimeError as e:
        raise EntrolabError(f"probe weights in {str(w_path)!r} do not match its JSON: {e}") from e
    probe = Probe(kind, c, mean, std, net, info, hidden)
    probe.check_compatible(model=model, feature_size=feature_size, layer=layer)
    return probe


def label_index(probe: Probe, names: Sequence[str]) -> list[int]:
    """Class ids of label ``names`` in ``probe.info.labels`` (unknown names raise)."""
    out = []
    for name in names:
        if name not in probe.info.labels:
            raise EntrolabError(f"label {name!r} is not one of the probe's {probe.info.labels}")
        out.append(probe.info.labels.index(name))
    return out
