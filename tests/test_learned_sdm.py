"""SDM verification: the activation by hand (softmax at q = e − 2, d = 1), q and d against the
reference code's loops (transcribed here), OOD rejection, save/load, the estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.estimators import run_estimators
from entrolab.inference.hidden import hidden_at
from entrolab.inference.sdm import (
    distance_quantiles,
    dkw_error,
    fit_sdm,
    load_sdm,
    output_cdf_quantiles,
    save_sdm,
    similarity_q,
    soft_sdm_max,
)
from entrolab.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ activation
def test_sdm_activation_by_hand() -> None:
    z = np.array([[0.0, 1.0], [2.0, -1.0]])
    # q = e − 2, d = 1: base 2 + q = e, the softmax
    e = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(soft_sdm_max(z, math.e - 2, 1.0), e, rtol=1e-12)
    # z = [0, 1], q = 2 (base 4), d = 1: [4⁰, 4¹] / 5 = [0.2, 0.8]
    np.testing.assert_allclose(soft_sdm_max(z[:1], 2.0, 1.0), [[0.2, 0.8]])
    # d = 0.5: 4^0.5 = 2 → [1/3, 2/3]; q = 0 (base 2), d = 1: [1/3, 2/3] as well
    np.testing.assert_allclose(soft_sdm_max(z[:1], 2.0, 0.5), [[1 / 3, 2 / 3]])
    np.testing.assert_allclose(soft_sdm_max(z[:1], 0.0, 1.0), [[1 / 3, 2 / 3]])
    # d = 0: uniform whatever the logits
    np.testing.assert_allclose(soft_sdm_max(z, 5.0, 0.0), [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(EntrolabError, match="q >= 0"):
        soft_sdm_max(z, -1.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 5), st.integers(0, 10_000))
def test_sdm_activation_is_softmax_at_base_e_and_keeps_the_argmax(n, c, seed) -> None:
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3, size=(n, c))
    s = torch.softmax(torch.tensor(z), -1).numpy()
    np.testing.assert_allclose(soft_sdm_max(z, math.e - 2, 1.0), s, rtol=1e-10)
    q, d = rng.integers(0, 20, size=n).astype(float), rng.uniform(0.01, 1, size=n)
    assert np.array_equal(soft_sdm_max(z, q, d).argmax(1), z.argmax(1))


# --------------------------------------------------------------------- reference transcriptions
def _ref_q(top_idx, train_labels, train_pred, eval_pred, is_training_support):
    # transcribed from ReexpressAI/sdm research_code/code/sdm_model.py (set_summary_stats...)
    out = []
    for i in range(top_idx.shape[0]):
        matched_true = train_labels[top_idx[i]]
        matched_pred = train_pred[top_idx[i]]
        q = 0
        for m in range(top_idx.shape[1]):
            if (not is_training_support) or (is_training_support and m > 0):
                if matched_true[m] == matched_pred[m] and matched_pred[m] == eval_pred[i]:
                    q += 1
                else:
                    break
        out.append(q)
    return np.array(out, dtype=float)


def _ref_cdf_index(cdf, val, reverse, val_in_0to1=False):
    # transcribed from the reference's getCDFIndex
    if len(cdf) == 0:
        return 0.0
    if val_in_0to1 and val >= cdf[-1]:
        return 1.0
    index = np.searchsorted(cdf, val, side="left")
    return 1 - index / len(cdf) if reverse else index / len(cdf)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_q_d_and_output_quantiles_match_the_reference_loops(seed, training) -> None:
    rng = np.random.default_rng(seed)
    n_train, n, k = 30, 12, 6
    labels, pred = rng.integers(0, 2, n_train), rng.integers(0, 2, n_train)
    idx = np.stack([rng.permutation(n_train)[:k] for _ in range(n)])
    eval_pred = rng.integers(0, 2, n)
    np.testing.assert_array_equal(
        similarity_q(idx, labels, pred, eval_pred, skip_first=training),
        _ref_q(idx, labels, pred, eval_pred, training),
    )
    cdfs = [np.sort(rng.uniform(0, 3, rng.integers(0, 8))) for _ in range(2)]
    d0 = rng.uniform(0, 3, n)
    ref_d = [min(_ref_cdf_index(c, v, True) for c in cdfs) for v in d0]
    np.testing.assert_allclose(distance_quantiles(d0, cdfs), ref_d)
    p = rng.uniform(0, 1, (n, 2))
    ref_u = [[_ref_cdf_index(cdfs[j], p[i, j], False, True) for j in range(2)] for i in range(n)]
    np.testing.assert_allclose(output_cdf_quantiles(p, cdfs), ref_u)


def test_dkw_error_by_hand() -> None:
    # n = 50, α = 0.05: √(ln(40) / 100) = √0.036889 = 0.19206
    np.testing.assert_allclose(dkw_error([50, 0]), [math.sqrt(math.log(40) / 100), 1.0])


# ------------------------------------------------------------------------------ the verifier
def _blobs(rng, n):
    # correct answers around +3, wrong around −3 in the first coordinate, 8-d features
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8))
    x[:, 0] += 3.0 * (2.0 * y - 1.0)
    return torch.tensor(x), torch.tensor(y)


def test_fit_rejects_ood_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 200)
    xc, yc = _blobs(rng, 200)
    v = fit_sdm(x, y, (xc, yc), model="m", layer=3, max_q=20)
    xt, yt = _blobs(rng, 100)
    far = torch.tensor(rng.normal(size=(20, 8)) + 25.0)  # far from every training point
    r_in, r_far = v.details(xt), v.details(far)
    assert r_in["ood"].mean() < 0.5
    # far points: d₀ beyond every calibration distance → d = 0 → SDM output uniform
    np.testing.assert_allclose(r_far["d"], 0.0)
    np.testing.assert_allclose(r_far["sdm"], 0.5)
    assert r_far["ood"].all() and np.all(v.confidence(far) == 0.0)
    # the lower estimate never exceeds the rescaled output of the predicted class
    rows = np.arange(len(xt))
    assert np.all(r_in["lower"] <= r_in["rescaled"][rows, r_in["pred"]] + 1e-12)
    # in-distribution, non-rejected points are mostly right
    keep = ~r_in["ood"]
    assert (r_in["pred"][keep] == yt.numpy()[keep]).mean() > 0.7
    save_sdm(v, tmp_path / "v")
    back = load_sdm(tmp_path / "v")
    for key, val in v.details(xt).items():
        np.testing.assert_allclose(back.details(xt)[key], val, rtol=1e-6, atol=1e-6)
    with pytest.raises(EntrolabError, match="layer 3 \\(not 4\\)"):
        back.probe.check_compatible(layer=4)


def test_bad_input_is_clear() -> None:
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 20)
    with pytest.raises(EntrolabError, match="calibration set is empty"):
        fit_sdm(x, y, (x[:0], y[:0]))
    with pytest.raises(EntrolabError, match="at least two classes"):
        fit_sdm(x, torch.zeros_like(y), (x, y))


def test_sdm_estimator_on_the_greedy_answers(tiny_backend) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(6, seed=0)
    res = run_estimators(tiny_backend, items, ["msp"], max_new_tokens=5)
    seqs = [tiny_backend.prompt_ids(t.prompt) + t.token_ids.tolist() for t in res.greedy]
    h = torch.cat(hidden_at(tiny_backend, seqs, [[len(s) - 1] for s in seqs], 1))
    lab = torch.arange(6) % 2  # arbitrary two-class labels: the mechanics, not the accuracy
    v = fit_sdm(h, lab, (h, lab), model="tiny", layer=1, max_q=5)
    got = run_estimators(tiny_backend, items, ["sdm"], max_new_tokens=5,
                         params={"sdm": {"scorer": v}})  # fmt: skip
    np.testing.assert_allclose(got.uncertainty["sdm"], 1 - v.confidence(h), rtol=1e-6)
