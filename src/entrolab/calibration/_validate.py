"""Input conversion and validation shared by the calibration package.

Every public function accepts 1-D numpy arrays, torch tensors or Python sequences and converts
them to float64 numpy internally (torch is never imported here: a tensor is recognised by its
module and converted with ``.detach().cpu().numpy()``). Bad input raises
:class:`~entrolab.errors.EntrolabError` naming the problem and the fix.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from entrolab.errors import EntrolabError

NanPolicy = Literal["raise", "omit"]


def as_1d(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 1-D numpy array (a copy when conversion is needed)."""
    if type(x).__module__.split(".")[0] == "torch":
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EntrolabError(
            f"{name} must be a 1-D array of numbers (list, numpy array or torch tensor); "
            f"could not convert a {type(x).__name__}: {exc}"
        ) from None
    if arr.ndim == 0:
        raise EntrolabError(f"{name} must be a 1-D array, got a scalar; wrap it in a list")
    if arr.ndim != 1:
        raise EntrolabError(
            f"{name} must be 1-D (one value per item), got shape {arr.shape}; "
            "flatten it or select one column"
        )
    return arr


def _fmt_idx(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:5])
    return shown + (", …" if idx.size > 5 else "")


def prepare(
    arrays: dict[str, Any], *, nan_policy: NanPolicy = "raise", min_size: int = 1
) -> list[np.ndarray]:
    """Convert named inputs to float64 1-D arrays of equal, non-zero length.

    Args:
        arrays: name → input, in the order the caller wants them back.
        nan_policy: ``"raise"``: any NaN raises, naming how many and where; ``"omit"``: items
            with a NaN in any input are dropped from all of them (at least ``min_size`` must
            remain).
        min_size: the least number of items required after dropping.

    Returns:
        the converted arrays, in the order of ``arrays``.
    """
    if nan_policy not in ("raise", "omit"):
        raise EntrolabError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    names = list(arrays)
    out = [as_1d(arrays[n], n) for n in names]
    lengths = {n: a.size for n, a in zip(names, out, strict=True)}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{n} has {k}" for n, k in lengths.items())
        raise EntrolabError(f"inputs must have one value per item, but {desc}; pass equal lengths")
    if out[0].size == 0:
        raise EntrolabError(f"{names[0]} is empty; pass at least {max(min_size, 1)} item(s)")
    bad = np.zeros(out[0].size, dtype=bool)
    for n, a in zip(names, out, strict=True):
        nan = np.isnan(a)
        if nan.any() and nan_policy == "raise":
            idx = np.flatnonzero(nan)
            raise EntrolabError(
                f"{n} contains {idx.size} NaN value(s) of {a.size} (at index {_fmt_idx(idx)}); "
                f"drop them with `keep = ~np.isnan({n})` and index every input with it, "
                "or pass nan_policy='omit'"
            )
        bad |= nan
    if bad.any():
        out = [a[~bad] for a in out]
    if out[0].size < min_size:
        raise EntrolabError(
            f"only {out[0].size} item(s) left after dropping {int(bad.sum())} with NaN; "
            f"need at least {min_size}"
        )
    return out


def check_unit_interval(c: np.ndarray, name: str) -> None:
    """Raise unless every value of ``c`` lies in [0, 1] (confidences, probabilities)."""
    outside = (c < 0.0) | (c > 1.0) | ~np.isfinite(c)
    if outside.any():
        idx = np.flatnonzero(outside)
        raise EntrolabError(
            f"{name} must lie in [0, 1], but {idx.size} value(s) do not (e.g. {c[idx[0]]!r} at "
            f"index {_fmt_idx(idx)}); calibration metrics take confidences, not uncertainties: "
            "map scores to [0, 1] with a fitted calibrator (entrolab.calibration.CALIBRATORS)"
        )


def check_binary(y: np.ndarray, name: str) -> None:
    """Raise unless every value of ``y`` is 0 or 1 (correctness labels)."""
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise EntrolabError(
            f"{name} must be 0/1 or bool (1 = correct), but {idx.size} value(s) are not "
            f"(e.g. {y[idx[0]]!r} at index {_fmt_idx(idx)}); threshold graded quality first, "
            "or use a ranking metric that takes real-valued quality (prr, aurc)"
        )


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise if ``x`` holds ±inf."""
    inf = np.isinf(x)
    if inf.any():
        idx = np.flatnonzero(inf)
        raise EntrolabError(
            f"{name} contains {idx.size} infinite value(s) (at index {_fmt_idx(idx)}); "
            "replace or drop them"
        )


def check_choice(value: Any, name: str, choices: tuple[Any, ...]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise EntrolabError(
            f"unknown {name} {value!r}; choose one of {', '.join(repr(c) for c in choices)}"
        )


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EntrolabError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)
