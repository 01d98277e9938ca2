"""Helpers shared by the bench/beyond_*.py scripts: seed intervals and resumable JSONL rows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy import stats


def seed_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean over seeds (n ≥ 2), NaNs dropped."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    if v.size == 1:
        return (float(v[0]), math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return (float(v.mean()), float(v.mean() - half), float(v.mean() + half))


def fmt(ci: tuple[float, float, float], digits: int = 3) -> str:
    m, lo, hi = ci
    if math.isnan(lo):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


class Rows:
    """Append-only JSONL of result rows keyed by a tuple, so a killed bench resumes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = (
            [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
            if self.path.exists()
            else []
        )

    def get(self, key: dict) -> dict | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
