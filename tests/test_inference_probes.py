"""Probes: logistic regression against scikit-learn, MLP capacity, exact save/load round trip,
wrong-model loads and degenerate training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from entrolab.errors import EntrolabError
from entrolab.inference.probes import ProbeInfo, fit_probe, load_probe, probe_paths, save_probe

#: one torch thread per test (see the fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n: int, d: int, classes: int, seed: int, sep: float = 1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, sep, size=(classes, d))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(size=(n, d))
    return x, y


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)  # ddof = 0, as the probe does


def test_binary_logistic_matches_sklearn() -> None:
    x, y = _blobs(200, 5, 2, seed=1)
    l2 = 0.05
    probe = fit_probe(x, y, l2=l2)
    # mean CE + (l2/2)‖w‖²  ≡  sklearn's C·ΣCE + ½‖w‖² with C = 1 / (N · l2)
    ref = LogisticRegression(C=1 / (200 * l2), tol=1e-12, max_iter=10_000).fit(_standardise(x), y)
    w = probe.net.weight.detach().numpy()[0]
    np.testing.assert_allclose(w, ref.coef_[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probe.net.bias.item(), ref.intercept_[0], rtol=1e-5, atol=1e-7)
    p = probe.predict_proba(x).numpy()
    np.testing.assert_allclose(p, ref.predict_proba(_standardise(x))[:, 1], rtol=1e-6, atol=1e-9)
    assert probe.predict(x).tolist() == ref.predict(_standardise(x)).tolist()


def test_multinomial_logistic_matches_sklearn() -> None:
    x, y = _blobs(240, 4, 3, seed=2)
    l2 = 0.02
    probe = fit_probe(x, y, l2=l2, num_classes=3)
    ref = LogisticRegression(C=1 / (240 * l2), tol=1e-12, max_iter=10_000).fit(_standardise(x), y)
    np.testing.assert_allclose(
        probe.predict_proba(x).numpy(), ref.predict_proba(_standardise(x)), rtol=1e-5, atol=1e-8
    )


def test_balanced_class_weight_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 3))
    y = (x[:, 0] + 0.8 * rng.normal(size=150) > 1.0).astype(int)  # ~20% positives
    probe = fit_probe(x, y, l2=0.1, class_weight="balanced")
    ref = LogisticRegression(C=1 / (150 * 0.1), class_weight="balanced", tol=1e-12, max_iter=10_000)
    ref.fit(_standardise(x), y)
    np.testing.assert_allclose(
        probe.predict_proba(x).numpy(), ref.predict_proba(_standardise(x))[:, 1], rtol=1e-5
    )


def test_mlp_learns_xor_that_logistic_cannot() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, size=(400, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    mlp = fit_probe(x, y, kind="mlp", hidden=32, epochs=400, lr=0.03, l2=1e-4, seed=0)
    lin = fit_probe(x, y)
    acc_mlp = (mlp.predict(x).numpy() == y).mean()
    acc_lin = (lin.predict(x).numpy() == y).mean()
    assert acc_mlp >= 0.95
    assert acc_lin <= 0.7  # a linear boundary gets at most ~2/3 of XOR right


@settings(max_examples=20, deadline=None)
@given(
    scale=st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3),
    shift=st.lists(st.floats(-50.0, 50.0), min_size=3, max_size=3),
)
def test_standardisation_makes_fit_invariant_to_affine_feature_maps(scale, shift) -> None:
    # Standardising per feature removes any positive scale and shift, so the fitted probe's
    # predictions on correspondingly transformed inputs are identical.
    x, y = _blobs(80, 3, 2, seed=5)
    p0 = fit_probe(x, y, l2=0.1).predict_proba(x)
    x2 = x * np.array(scale) + np.array(shift)
    p1 = fit_probe(x2, y, l2=0.1).predict_proba(x2)
    torch.testing.assert_close(p0, p1, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind,classes", [("logistic", 2), ("mlp", 2), ("logistic", 3)])
def test_save_load_round_trip_is_exact(tmp_path, kind, classes) -> None:
    x, y = _blobs(60, 6, classes, seed=6)
    info = ProbeInfo(
        model="m",
        layer=3,
        feature="hidden",
        labels=tuple(f"c{i}" for i in range(classes)),
        extra={"tau": 0.25},
    )
    probe = fit_probe(x, y, kind=kind, epochs=20, info=info)
    json_path = save_probe(probe, tmp_path / "probe")
    assert json_path.name == "probe.json" and (tmp_path / "probe.safetensors").is_file()
    loaded = load_probe(tmp_path / "probe.safetensors", model="m", feature_size=6, layer=3)
    assert torch.equal(loaded.logits(x), probe.logits(x))  # bit-exact
    for k, v in probe.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert loaded.info == probe.info and loaded.info.feature_size == 6
    assert (loaded.kind, loaded.num_classes, loaded.hidden) == (kind, classes, probe.hidden)


def test_wrong_model_or_size_or_layer_gives_clear_errors(tmp_path) -> None:
    x, y = _blobs(40, 4, 2, seed=7)
    save_probe(fit_probe(x, y, info=ProbeInfo(model="smollm", layer=20)), tmp_path / "p")
    with pytest.raises(EntrolabError, match=r"model 'smollm' \(not 'tiny'\).*Fit a new probe"):
        load_probe(tmp_path / "p", model="tiny")
    with pytest.raises(EntrolabError, match=r"feature size 4 \(not 576\)"):
        load_probe(tmp_path / "p", model="smollm", feature_size=576)
    with pytest.raises(EntrolabError, match=r"layer 20 \(not 5\)"):
        load_probe(tmp_path / "p", layer=5)
    probe = load_probe(tmp_path / "p")
    with pytest.raises(EntrolabError, match=r"shape \[N, 4\], got \(2, 5\)"):
        probe.predict_proba(np.zeros((2, 5)))
    with pytest.raises(EntrolabError, match="not found"):
        load_probe(tmp_path / "missing")
    _, j = probe_paths(tmp_path / "p")
    j.write_text(json.dumps({"hello": 1}))
    with pytest.raises(EntrolabError, match="not an entrolab probe"):
        load_probe(tmp_path / "p")


def test_degenerate_training_data_is_rejected() -> None:
    x, _ = _blobs(10, 3, 2, seed=8)
    with pytest.raises(EntrolabError, match="all 10 labels are 1"):
        fit_probe(x, np.ones(10))
    with pytest.raises(EntrolabError, match="non-empty"):
        fit_probe(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(EntrolabError, match="one label per feature row"):
        fit_probe(x, np.zeros(9))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(EntrolabError, match="NaN or inf"):
        fit_probe(bad, np.arange(10) % 2)
    with pytest.raises(EntrolabError, match="integer class ids"):
        fit_probe(x, np.linspace(0, 1, 10))
    with pytest.raises(EntrolabError, match=r"labels must lie in 0\.\.1"):
        fit_probe(x, np.arange(10) % 3, num_classes=2)
    with pytest.raises(EntrolabError, match="unknown probe kind"):
        fit_probe(x, np.arange(10) % 2, kind="forest")  # type: ignore[arg-type]


def test_constant_feature_does_not_break_the_fit() -> None:
    # A feature with zero variance is left unscaled (std → 1) instead of dividing by zero.
    x, y = _blobs(50, 2, 2, seed=9)
    x = np.concatenate([x, np.full((50, 1), 3.0)], 1)
    probe = fit_probe(x, y)
    assert probe.std[2].item() == 1.0
    assert torch.isfinite(probe.predict_proba(x)).all()
    assert abs(probe.net.weight[0, 2].item()) < 1e-9  # carries no signal: zero weight
