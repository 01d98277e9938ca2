"""Shifted test streams on a real image set that ships with a package: sklearn's 8×8 digits.

* :func:`load_digits` reads ``sklearn/datasets/data/digits.csv.gz`` from the installed
  scikit-learn wheel (no network; scikit-learn is not imported), scaled to [0, 1].
* :data:`CORRUPTIONS` — six procedural corruptions tuned for 8×8 images, five severities each
  (spec other_methods.md §1.4): Gaussian noise σ 0.1–0.5, shot noise (Poisson, λ 60 → 3),
  impulse (salt-and-pepper 3–20 %), Gaussian blur σ 0.4–1.2, horizontal motion blur 2–5 px,
  contrast ×0.6 → ×0.12. Each is a pure numpy function of (images [N, 8, 8], severity, rng).
* :func:`make_stream` — a closed-set or open-set stream: the test split repeated ``repeats``
  times, each copy with a fresh corruption draw, shuffled. Open set: the model is trained on
  classes 0–5 and classes 6–9 arrive as unknowns (label −1) with the same corruption.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from entrolab.errors import EntrolabError

__all__ = [
    "CORRUPTIONS",
    "KNOWN_CLASSES",
    "Digits",
    "Stream",
    "corrupt",
    "load_digits",
    "make_stream",
]

#: Open-set protocol: the source model sees classes 0–5; 6–9 are unknowns in the stream.
KNOWN_CLASSES = 6

_SEVERITY = {
    "gauss_noise": (0.1, 0.2, 0.3, 0.4, 0.5),
    "shot_noise": (60.0, 25.0, 12.0, 6.0, 3.0),
    "impulse_noise": (0.03, 0.06, 0.09, 0.14, 0.20),
    "gauss_blur": (0.4, 0.6, 0.8, 1.0, 1.2),
    "motion_blur": (2, 3, 3, 4, 5),
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.12),
}


def _gauss_noise(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + rng.normal(0.0, s, x.shape), 0.0, 1.0)


def _shot_noise(x: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.poisson(x * lam) / lam, 0.0, 1.0)


def _impulse_noise(x: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    u = rng.random(x.shape)
    out[u < frac / 2] = 0.0
    out[(u >= frac / 2) & (u < frac)] = 1.0
    return out


def _gauss_blur(x: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(ndimage.gaussian_filter(x, sigma=(0, s, s), mode="constant"), 0.0, 1.0)


def _motion_blur(x: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
    kernel = np.ones((1, 1, int(k))) / int(k)
    return np.clip(ndimage.convolve(x, kernel, mode="constant"), 0.0, 1.0)


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - mean) * c + mean, 0.0, 1.0)


_FNS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gauss_noise": _gauss_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "gauss_blur": _gauss_blur,
    "motion_blur": _motion_blur,
    "contrast": _contrast,
}
#: corruption name → its five severity parameters (index 0 = severity 1).
CORRUPTIONS = {k: tuple(v) for k, v in _SEVERITY.items()}


def corrupt(images: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` (1–5, or 0 = none) to images [N, H, W] in [0, 1].

    Returns a new float64 array [N, H, W] in [0, 1]; ``rng`` draws the noise."""
    if name not in _FNS:
        raise EntrolabError(f"unknown corruption {name!r}; known: {', '.join(sorted(_FNS))}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
        raise EntrolabError(f"severity must be an int in 0..5, got {severity!r}")
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise EntrolabError(f"images must be [N, H, W], got shape {x.shape}")
    if severity == 0:
        return x.copy()
    return _FNS[name](x, _SEVERITY[name][severity - 1], rng)


@dataclass(frozen=True)
class Digits:
    """The digits split: images [N, 8, 8] float64 in [0, 1], labels [N] int64 (0–9)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _digits_path() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise EntrolabError(
            "the digits images ship with scikit-learn; install it: pip install 'entrolab[tta]'"
        )
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():
        raise EntrolabError(f"scikit-learn is installed but {path} is missing; reinstall it")
    return path


def load_digits(n_train: int = 1200, seed: int = 0) -> Digits:
    """sklearn's 1,797 digits, scaled to [0, 1], split (seeded shuffle) into n_train / rest."""
    raw = np.loadtxt(_digits_path(), delimiter=",")
    x, y = raw[:, :-1].reshape(-1, 8, 8) / 16.0, raw[:, -1].astype(np.int64)
    if not 0 < n_train < len(y):
        raise EntrolabError(f"n_train must be in 1..{len(y) - 1}, got {n_train}")
    order = np.random.default_rng(seed).permutation(len(y))
    tr, te = order[:n_train], order[n_train:]
    return Digits(x[tr], y[tr], x[te], y[te])


@dataclass(frozen=True)
class Stream:
    """A test stream in arrival order.

    Attributes:
        x: float32 [N, 1, 8, 8] images. y: int64 [N] labels (−1 = unknown class).
        known: bool [N] (False = open-set unknown). corruption, severity, repeats: as built.
    """

    x: np.ndarray
    y: np.ndarray
    known: np.ndarray
    corruption: str
    severity: int
    repeats: int


def make_stream(
    data: Digits,
    corruption: str,
    severity: int,
    *,
    repeats: int = 1,
    open_set: bool = False,
    seed: int = 0,
) -> Stream:
    """The test split, corrupted ``repeats`` times (fresh draws per copy), shuffled.

    ``open_set=True``: classes ≥ :data:`KNOWN_CLASSES` get label −1 and ``known`` False."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise EntrolabError(f"repeats must be a positive int, got {repeats!r}")
    rng = np.random.default_rng(seed)
    xs = [corrupt(data.test_x, corruption, severity, rng) for _ in range(repeats)]
    x = np.concatenate(xs)
    y = np.tile(data.test_y, repeats)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    known = y < KNOWN_CLASSES if open_set else np.ones_like(y, dtype=bool)
    y = np.where(known, y, -1)
    return Stream(
        x[:, None].astype(np.float32), y.astype(np.int64), known, corruption, severity, repeats
    )
