"""Per-cell summary of a compare-samplers run, with intervals (see :mod:`.sampler_compare`).

pass@1 = mean over items of the share of correct samples, with its 95% percentile bootstrap
interval over items (and the standard error); pass@k = share of items with a correct sample,
with its exact Clopper–Pearson interval; :func:`paired_vs` compares a cell's pass@1 with the
baseline sampler's at the same temperature on the same items (paired bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from entrolab.calibration import bootstrap_interval, clopper_pearson, paired_mean_difference
from entrolab.errors import EntrolabError
from entrolab.estimators.sampling import discrete_semantic_entropy
from entrolab.evaluation.scoring import finite_or_none

__all__ = ["NO_ANSWER", "paired_vs", "summarize_cell"]

NO_ANSWER = "<none>"  # the answer key of an unparseable reply


def summarize_cell(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of one cell from its item rows (see the module docstring for definitions)."""
    if not rows:
        raise EntrolabError("a cell has no finished items yet")
    correct = [np.asarray(r["correct"], dtype=np.float64) for r in rows]
    per_item = np.array([c.mean() for c in correct])
    answers = [[k if k is not None else NO_ANSWER for k in r["keys"]] for r in rows]

    def mean_of(key: str) -> float | None:
        values = [x for r in rows for x in r[key] if x is not None]
        return float(np.mean(values)) if values else None

    n = len(rows)
    pass1 = bootstrap_interval(_row_means, per_item, n_boot=2000, seed=0, vectorized=True)
    solved = [c.max() for c in correct]
    passk = clopper_pearson(int(sum(solved)), n)
    return {
        "sampler": rows[0]["sampler"],
        "temperature": rows[0]["temperature"],
        "n": n,
        "samples": len(rows[0]["correct"]),
        "pass1": float(per_item.mean()),
        "pass1_se": float(per_item.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
        "pass1_low": finite_or_none(pass1.low),
        "pass1_high": finite_or_none(pass1.high),
        "passk": float(np.mean(solved)),
        "passk_low": passk.low,
        "passk_high": passk.high,
        "distinct": float(np.mean([len(set(a)) for a in answers])),
        "answer_entropy": float(np.mean([discrete_semantic_entropy(a) for a in answers])),
        "unparseable": float(np.mean([k is None for r in rows for k in r["keys"]])),
        "kept": mean_of("kept"),
        "retained_mass": mean_of("retained_mass"),
        "entropy_after": mean_of("entropy_after"),
        "entropy": mean_of("entropy"),
        "tokens": mean_of("tokens"),
        "seconds": float(sum(r["seconds"] for r in rows)),
    }


def _row_means(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1)


def paired_vs(rows: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], name: str):
    """pass@1 of ``rows`` minus the baseline's on the items both finished (paired bootstrap)."""
    rate = {r["index"]: float(np.mean(r["correct"])) for r in rows}
    base_rate = {r["index"]: float(np.mean(r["correct"])) for r in base}
    common = sorted(rate.keys() & base_rate.keys())
    if not common:
        return {}
    test = paired_mean_difference(
        [rate[i] for i in common], [base_rate[i] for i in common], metric="pass1"
    )
    return {
        "vs": name,
        "delta_pass1": test.difference,
        "delta_low": test.low,
        "delta_high": test.high,
        "delta_p": test.p_value,
    }
