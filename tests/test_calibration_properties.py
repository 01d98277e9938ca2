"""Property tests (hypothesis) for calibration and ranking metrics and calibrators."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from entrolab.calibration import (
    PRESETS,
    IsotonicCalibrator,
    aurc,
    auroc,
    brier,
    ece,
    nll,
    prediction_rejection_area,
    prr,
    reliability_bins,
)

SETTINGS = settings(max_examples=60, deadline=None)
# presets whose per-bin confidence is the bins' mean and whose bins are fixed intervals
MEAN_PRESETS = [None, "torchmetrics", "netcal", "netcal_ace", "polygraph"]
NORMS = ["l1", "l2", "max"]

# confidences with exact 0, exact 1, bin edges and generic values
edge_values = st.sampled_from([0.0, 1.0, 0.05, 0.1, 0.2, 0.5, 1 / 15, 14 / 15, 0.95])
conf = st.one_of(edge_values, st.floats(0.0, 1.0, allow_nan=False))
pairs = st.lists(st.tuples(conf, st.booleans()), min_size=1, max_size=60)


def _arrays(p):
    c = np.array([a for a, _ in p], dtype=np.float64)
    y = np.array([b for _, b in p], dtype=np.float64)
    return c, y


@SETTINGS
@given(ys=st.lists(st.booleans(), min_size=1, max_size=60))
def test_perfect_confidences_have_zero_error(ys) -> None:
    # c = correct (exactly 0 and 1): every bin holding items is pure and its mean is its accuracy
    y = np.array(ys, dtype=np.float64)
    for preset in MEAN_PRESETS:
        for norm in NORMS:
            assert ece(y, y, preset=preset, norm=norm) == 0.0
    assert brier(y, y) == 0.0
    assert nll(y, y) == pytest.approx(-np.log1p(-np.finfo(float).eps), abs=1e-15)


@SETTINGS
@given(c=conf, ys=st.lists(st.booleans(), min_size=1, max_size=60))
def test_constant_confidence_error_is_accuracy_gap(c, ys) -> None:
    y = np.array(ys, dtype=np.float64)
    conf_ = np.full(y.size, c)
    gap = abs(y.mean() - c)
    for preset in MEAN_PRESETS:
        for norm in NORMS:
            assert ece(conf_, y, preset=preset, norm=norm) == pytest.approx(gap, abs=1e-12)
    assert brier(conf_, y) == pytest.approx(np.mean((c - y) ** 2), abs=1e-12)


@SETTINGS
@given(p=pairs, seed=st.integers(0, 2**32 - 1))
def test_permutation_invariance_and_range(p, seed) -> None:
    c, y = _arrays(p)
    perm = np.random.default_rng(seed).permutation(c.size)
    for preset in [None, *PRESETS]:
        if preset == "ccrag_ace" and (c.size < 10 or np.unique(c).size < c.size):
            continue  # equal-count ranks split tied confidences by position
        if preset == "ccrag" and np.all(c == 1.0):
            continue  # every item dropped (tested separately)
        for norm in NORMS:
            a = ece(c, y, preset=preset, norm=norm)
            b = ece(c[perm], y[perm], preset=preset, norm=norm)
            assert a == pytest.approx(b, abs=1e-12)
            assert 0.0 <= a <= 1.0
    bins = reliability_bins(c, y)
    assert int(bins.count.sum()) == c.size and bins.n_dropped == 0


@SETTINGS
@given(p=pairs)
def test_extremes_are_binned_not_lost(p) -> None:
    # exact 0 and 1 land in a bin for every preset except CC_RAG (which drops 1.0)
    c, y = _arrays(p)
    for preset in ["torchmetrics", "netcal", "polygraph"]:
        assert int(reliability_bins(c, y, preset=preset).count.sum()) == c.size
    dropped = reliability_bins(c, y, preset="ccrag").n_dropped
    assert dropped == int(np.sum(c == 1.0))


# rounded so that 1 − u keeps the order of u exactly (no subnormal-size differences)
scores = st.lists(
    st.tuples(
        st.one_of(st.integers(-3, 3).map(float), st.floats(-5, 5).map(lambda x: round(x, 6))),
        st.booleans(),
    ),
    min_size=2,
    max_size=50,
)


@SETTINGS
@given(p=scores)
def test_auroc_symmetries(p) -> None:
    u, y = _arrays(p)
    assume(0 < y.sum() < y.size)
    a = auroc(u, y)
    assert auroc(-u, y) == pytest.approx(1 - a, abs=1e-12)
    assert auroc(u, 1 - y) == pytest.approx(1 - a, abs=1e-12)
    assert auroc(1 - u, y) == pytest.approx(auroc(-u, y), abs=1e-12)
    assert 0.0 <= a <= 1.0


quality = st.lists(
    st.tuples(st.floats(-5, 5), st.one_of(st.integers(0, 2).map(float), st.floats(-2, 2))),
    min_size=2,
    max_size=50,
)


@SETTINGS
@given(p=quality)
def test_prr_oracle_one_and_reversed_oracle_nonpositive(p) -> None:
    u, q = _arrays(p)
    assume(not np.isclose(q.min(), q.max()))
    assert prr(-q, q) == pytest.approx(1.0, abs=1e-9)
    assert prr(q, q) <= 1e-9
    assert prr(q, q, random_baseline="analytic") <= 1e-9
    for ties in ("arbitrary", "stable", "average"):
        v = prediction_rejection_area(u, q, ties=ties)
        assert (
            prediction_rejection_area(-q, q) + 1e-12 >= v >= prediction_rejection_area(q, q) - 1e-12
        )
    # AURC = 1 − PR area for the same tie order (risk = 1 − q̃)
    assert aurc(u, q) == pytest.approx(
        1 - prediction_rejection_area(u, q, ties="stable"), abs=1e-12
    )


@SETTINGS
@given(p=scores)
def test_isotonic_output_is_monotone_and_bounded(p) -> None:
    s, y = _arrays(p)
    cal = IsotonicCalibrator().fit(s, y)
    grid = np.linspace(-6, 6, 101)
    out = cal.transform(grid)
    assert np.all(np.diff(out) >= -1e-15) and out.min() >= 0 and out.max() <= 1
    # in-sample, isotonic regression preserves the mean of the labels
    assert cal.transform(s).mean() == pytest.approx(y.mean(), abs=1e-12)
