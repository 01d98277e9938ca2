"""ECE family, Brier and NLL against torchmetrics, netcal, scikit-learn and transcriptions of
LM-Polygraph's and CC_RAG's code (written here from their published algorithms)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from netcal.metrics import ACE as NetcalACE
from netcal.metrics import ECE as NetcalECE
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import binary_calibration_error

from entrolab.calibration import (
    METRICS,
    PRESETS,
    ace,
    adaptive_ece,
    brier,
    ece,
    mce,
    nll,
    reliability_bins,
    rmsce,
)
from entrolab.calibration.binning import uniform_edges
from entrolab.errors import EntrolabError, UnknownNameError

RTOL = 1e-12
# netcal clips confidences to [eps, 1 - eps] (eps = 2.2e-16) before binning, which moves its
# number by at most ~1e-16 when some confidence is exactly 0 or 1.
NETCAL_ATOL = 1e-14


def _data(kind: str, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Confidences and 0/1 labels: random, with exact 0/1, or sitting on bin edges."""
    rng = np.random.default_rng(seed)
    c = rng.random(n)
    if kind == "extremes":
        c[: n // 4] = 0.0
        c[n // 4 : n // 2] = 1.0
    elif kind == "edges":
        grid = np.concatenate(
            [
                np.linspace(0, 1, 11),  # netcal / CC_RAG edges
                np.linspace(0, 1, 16),  # numpy's rounding of 15-bin edges
                uniform_edges(15, "torch"),  # torchmetrics' edges
                np.linspace(0, 1, 21),  # LM-Polygraph edges
                np.arange(16) / 15,
            ]
        )
        c = rng.choice(grid, size=n)
    y = (rng.random(n) < np.clip(c * 0.8 + 0.1, 0, 1)).astype(np.int64)
    return c, y


KINDS = ["random", "extremes", "edges"]


# ---------------------------------------------------------------- independent references
def polygraph_ece(conf: np.ndarray, target: np.ndarray, n_bins: int = 20) -> float:
    """LM-Polygraph ue_metrics/ece.py: first bin [0, 1/n], then (lo, hi]; count weights."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total, n = 0.0, len(conf)
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        inb = (conf > lo) & (conf <= hi) if i > 0 else (conf >= lo) & (conf <= hi)
        if not np.any(inb):
            continue
        total += (np.sum(inb) / n) * abs(np.mean(target[inb]) - np.mean(conf[inb]))
    return total


def ccrag_metrics(probs: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> dict:
    """CC_RAG src/evaluate_results.py: [a, b) bins, centres, empty bins acc 0; ACE by ranks."""
    bins = np.linspace(0, 1, num_bins + 1)
    centers, accs, counts = [], [], []
    for a, b in itertools.pairwise(bins):
        idx = [i for i, p in enumerate(probs) if a <= p < b]
        counts.append(len(idx))
        accs.append(sum(labels[i] for i in idx) / len(idx) if idx else 0)
        centers.append((a + b) / 2)
    accs, counts, centers = np.array(accs), np.array(counts), np.array(centers)
    out = {
        "ece": np.sum(counts * np.abs(accs - centers)) / np.sum(counts),
        "mce": max(abs(accs - centers)),
        "rmsce": np.sqrt(np.mean(np.square(accs - centers))),
    }
    order = np.argsort(probs)
    sp, sl = np.array(probs)[order], np.array(labels)[order]
    size, total = len(probs) // 10, 0.0
    for r in range(10):
        end = (r + 1) * size if r < 9 else len(probs)
        total += abs(np.mean(sl[r * size : end]) - np.mean(sp[r * size : end]))
    out["ace"] = total / 10
    return out


# ---------------------------------------------------------------- library references
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_torchmetrics_preset_matches_binary_calibration_error(kind: str, norm: str) -> None:
    c, y = _data(kind)
    ref = binary_calibration_error(
        torch.tensor(c, dtype=torch.float64), torch.tensor(y), n_bins=15, norm=norm
    )
    assert ece(c, y, preset="torchmetrics", norm=norm) == pytest.approx(float(ref), rel=RTOL)
    # also through torch input and another bin count
    ref7 = binary_calibration_error(
        torch.tensor(c, dtype=torch.float64), torch.tensor(y), n_bins=7, norm=norm
    )
    got7 = ece(torch.tensor(c), torch.tensor(y).bool(), preset="torchmetrics", n_bins=7, norm=norm)
    assert got7 == pytest.approx(float(ref7), rel=RTOL)


def test_torchmetrics_exact_one_gets_its_own_bin() -> None:
    # c = [1.0, 0.95, 0.95], y = [0, 1, 1]. torchmetrics: 1.0 alone in the extra bin
    # (|0 − 1| · 1/3) and 0.95 in [14/15, 1) with acc 1 (|1 − 0.95| · 2/3):
    # ECE = 1/3 + 0.1/3 = 0.3666…; closing the last bin instead pools all three:
    # acc 2/3, conf (1 + 1.9)/3 = 0.9666… → |0.6667 − 0.9667| = 0.3.
    c, y = [1.0, 0.95, 0.95], [0, 1, 1]
    assert ece(c, y, preset="torchmetrics") == pytest.approx(1 / 3 + 0.1 / 3, rel=RTOL)
    assert ece(c, y, preset="torchmetrics", boundary="closed") == pytest.approx(0.3, rel=RTOL)
    ref = binary_calibration_error(torch.tensor(c, dtype=torch.float64), torch.tensor(y))
    assert float(ref) == pytest.approx(1 / 3 + 0.1 / 3, rel=RTOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_bins", [10, 7])
def test_netcal_presets_match_netcal(kind: str, n_bins: int) -> None:
    c, y = _data(kind, seed=1)
    got_ece = ece(c, y, preset="netcal", n_bins=n_bins)
    got_ace = ace(c, y, n_bins=n_bins)
    assert got_ece == pytest.approx(NetcalECE(bins=n_bins).measure(c, y), rel=RTOL, abs=NETCAL_ATOL)
    assert got_ace == pytest.approx(NetcalACE(bins=n_bins).measure(c, y), rel=RTOL, abs=NETCAL_ATOL)


def test_netcal_quantile_binning_matches_equal_intervals_false() -> None:
    c, y = _data("random", n=500, seed=2)  # continuous: netcal rejects zero-width bins
    ref = NetcalECE(bins=10, equal_intervals=False).measure(c, y)
    assert ece(c, y, preset="netcal", binning="quantile") == pytest.approx(ref, rel=RTOL)
    ref_ace = NetcalACE(bins=10, equal_intervals=False).measure(c, y)
    assert ace(c, y, binning="quantile") == pytest.approx(ref_ace, rel=RTOL)


@pytest.mark.parametrize("kind", KINDS)
def test_polygraph_preset_matches_transcription(kind: str) -> None:
    c, y = _data(kind, seed=3)
    assert ece(c, y, preset="polygraph") == pytest.approx(polygraph_ece(c, y), rel=RTOL)


def test_polygraph_edges_by_hand() -> None:
    # c = [0.0, 0.05, 0.1, 0.1000001]: bins [0, .05] gets {0, .05}; (.05, .1] gets {.1};
    # (.1, .15] gets {.1000001}. y = [0, 1, 1, 0]:
    # |0.5 − 0.025|·2/4 + |1 − 0.1|·1/4 + |0 − 0.1000001|·1/4 = 0.2375 + 0.225 + 0.025000025
    c, y = [0.0, 0.05, 0.1, 0.1000001], [0, 1, 1, 0]
    expected = 0.475 / 2 + 0.9 / 4 + 0.1000001 / 4
    assert ece(c, y, preset="polygraph") == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("kind", KINDS)
def test_ccrag_presets_match_transcription(kind: str) -> None:
    c, y = _data(kind, n=403, seed=4)
    ref = ccrag_metrics(c, y)
    assert ece(c, y, preset="ccrag") == pytest.approx(ref["ece"], rel=RTOL)
    assert mce(c, y, preset="ccrag") == pytest.approx(ref["mce"], rel=RTOL)
    assert rmsce(c, y, preset="ccrag") == pytest.approx(ref["rmsce"], rel=RTOL)
    assert adaptive_ece(c, y) == pytest.approx(ref["ace"], rel=RTOL)
    assert ece(c, y, preset="ccrag_ace") == pytest.approx(ref["ace"], rel=RTOL)


def test_ccrag_drops_exact_one_and_uses_centres() -> None:
    # c = [1.0, 0.93, 0.12], y = [0, 1, 0]: 1.0 is in no bin (N becomes 2);
    # 0.93 → [0.9, 1.0) centre 0.95, acc 1 → |1 − 0.95| = 0.05;
    # 0.12 → [0.1, 0.2) centre 0.15, acc 0 → 0.15. ECE = (0.05 + 0.15) / 2 = 0.1.
    assert ece([1.0, 0.93, 0.12], [0, 1, 0], preset="ccrag") == pytest.approx(0.1, rel=RTOL)
    bins = reliability_bins([1.0, 0.93, 0.12], [0, 1, 0], preset="ccrag")
    assert bins.n_dropped == 1 and int(bins.count.sum()) == 2
    with pytest.raises(EntrolabError, match="no item fell into any bin"):
        ece([1.0, 1.0], [1, 0], preset="ccrag")


# ---------------------------------------------------------------- hand-computed defaults
def test_default_ece_by_hand() -> None:
    # 15 bins [a, b), last closed. c = [0.1, 0.15, 0.9, 1.0], y = [0, 1, 1, 1]:
    # bin [0.0667, 0.1333) holds 0.1 → |0 − 0.1| = 0.1 (weight 1/4);
    # bin [0.1333, 0.2) holds 0.15 → |1 − 0.15| = 0.85 (1/4);
    # bin [0.8667, 0.9333) holds 0.9 → 0.1 (1/4); last bin [0.9333, 1] holds 1.0 → 0 (1/4).
    # ECE = (0.1 + 0.85 + 0.1 + 0) / 4 = 0.2625; MCE = 0.85; RMSCE = sqrt((.01+.7225+.01)/4).
    c, y = [0.1, 0.15, 0.9, 1.0], [0, 1, 1, 1]
    assert ece(c, y) == pytest.approx(0.2625, rel=RTOL)
    assert mce(c, y) == pytest.approx(0.85, rel=RTOL)
    assert rmsce(c, y) == pytest.approx(np.sqrt(0.7425 / 4), rel=RTOL)
    # netcal ACE: 4 non-empty bins, unweighted → same 0.2625 here; 2 bins of 10 → differs:
    # [0.1, 0.2) holds {0.1, 0.15}: acc 0.5, conf 0.125 → 0.375; [0.9, 1] holds {0.9, 1.0}:
    # acc 1, conf 0.95 → 0.05. ACE = (0.375 + 0.05) / 2 = 0.2125.
    assert ace(c, y) == pytest.approx(0.2125, rel=RTOL)


def test_reliability_bins_fields() -> None:
    c = [0.05, 0.15, 0.18, 0.95, 1.0]
    y = [0, 1, 0, 1, 1]
    b = reliability_bins(c, y, n_bins=10)
    assert b.count.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    np.testing.assert_allclose(b.lower, np.linspace(0, 0.9, 10), rtol=RTOL)
    np.testing.assert_allclose(b.upper, np.linspace(0.1, 1.0, 10), rtol=RTOL)
    assert b.accuracy[1] == 0.5 and b.mean_confidence[1] == pytest.approx(0.165, rel=RTOL)
    assert np.isnan(b.accuracy[2])  # empty bins are NaN, documented
    ne = b.nonempty()
    assert ne.count.tolist() == [1, 2, 2]
    np.testing.assert_allclose(ne.gap, [-0.05, 0.5 - 0.165, 1 - 0.975], rtol=RTOL)
    d = b.to_dict()
    assert d["accuracy"][2] is None and d["count"][9] == 2
    tm = reliability_bins(c, y, preset="torchmetrics")
    assert tm.count.size == 16 and tm.lower[-1] == tm.upper[-1] == 1.0 and tm.count[-1] == 1


# ---------------------------------------------------------------- Brier / NLL
@pytest.mark.parametrize("kind", KINDS)
def test_brier_and_nll_match_sklearn(kind: str) -> None:
    c, y = _data(kind, seed=5)
    assert brier(c, y) == pytest.approx(brier_score_loss(y, c), rel=RTOL)
    assert nll(c, y) == pytest.approx(log_loss(y, c, labels=[0, 1]), rel=1e-12)


def test_nll_by_hand() -> None:
    # −(log 0.8 + log(1 − 0.3)) / 2; a confident mistake costs −log(1 − (1 − eps)) ≈ −log eps
    # (1 − eps is rounded in float64, hence log1p of the clipped value).
    assert nll([0.8, 0.3], [1, 0]) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2, rel=RTOL)
    assert nll([1.0], [0], eps=1e-6) == pytest.approx(-np.log1p(-(1 - 1e-6)), rel=RTOL)
    assert nll([1.0], [0], eps=1e-6) == pytest.approx(-np.log(1e-6), rel=1e-9)
    assert brier([1.0, 0.0, 0.5], [1, 1, 0]) == pytest.approx((0 + 1 + 0.25) / 3, rel=RTOL)


# ---------------------------------------------------------------- bad input
def test_nan_raises_with_count_and_omit_drops() -> None:
    c = np.array([0.2, np.nan, 0.7, np.nan, 0.9])
    y = np.array([0, 1, 1, 0, 1])
    with pytest.raises(EntrolabError, match=r"2 NaN.*index 1, 3.*nan_policy='omit'"):
        ece(c, y)
    keep = ~np.isnan(c)
    assert ece(c, y, nan_policy="omit") == ece(c[keep], y[keep])
    assert brier(c, y, nan_policy="omit") == brier(c[keep], y[keep])
    with pytest.raises(EntrolabError, match="NaN"):
        nll([0.5, 0.5], [1, np.nan])


@pytest.mark.parametrize(
    ("c", "y", "match"),
    [
        ([], [], "empty"),
        ([0.5, 0.6], [1], "one value per item"),
        ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
        ([-0.1, 0.5], [1, 0], r"\[0, 1\]"),
        ([0.5, np.inf], [1, 0], r"\[0, 1\]"),
        ([0.5, 0.6], [1, 2], "0/1"),
        ([[0.5, 0.6]], [[1, 0]], "1-D"),
    ],
)
def test_bad_inputs(c, y, match) -> None:
    for fn in (ece, brier, nll):
        with pytest.raises(EntrolabError, match=match):
            fn(c, y)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="Known presets: torchmetrics, netcal"):
        ece([0.5], [1], preset="sklearn")
    with pytest.raises(EntrolabError, match="unknown norm"):
        ece([0.5], [1], norm="l3")
    with pytest.raises(EntrolabError, match="unknown binning"):
        ece([0.5], [1], binning="log")
    with pytest.raises(UnknownNameError, match="Known metrics: .*auroc.*prr"):
        METRICS.get("ecee")
    with pytest.raises(EntrolabError, match="at least n_bins=10"):
        adaptive_ece([0.1, 0.2], [0, 1])


def test_metrics_registry_contents() -> None:
    need = {"ece", "ace", "mce", "rmsce", "brier", "nll", "auroc", "auprc", "aurc", "prr"}
    assert need <= set(METRICS.names())
    assert METRICS.get("ece") is ece
    assert set(PRESETS) == {
        "torchmetrics",
        "netcal",
        "netcal_ace",
        "polygraph",
        "ccrag",
        "ccrag_ace",
    }
    assert ece([0.3, 0.8], [0, 1], preset="netcal_ece") == ece([0.3, 0.8], [0, 1], preset="netcal")
