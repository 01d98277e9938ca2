"""The samplers registry: transformers' own warpers exactly, properties shared by every warper,
parameter validation, spec parsing and warper_diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation import logits_process as hf

from entrolab.backends.sampling import apply_min_p, apply_top_p
from entrolab.decoding import (
    SAMPLERS,
    EntropixThresholds,
    format_sampler_spec,
    make_warper,
    parse_sampler_spec,
    warper_diagnostics,
)
from entrolab.errors import EntrolabError, UnknownNameError

SETTINGS = settings(max_examples=25, deadline=None)

#: one configuration per registered sampler (entropix needs thresholds: entropix's fixed ones)
CONFIGS = {
    "top_h": {"alpha": 0.4},
    "entropix": {"thresholds": "fixed"},
    "edt": {"theta": 0.7},
    "min_p": {"min_p": 0.1},
    "top_p": {"top_p": 0.9},
    "typical": {"mass": 0.9},
    "epsilon": {"epsilon": 3e-3},
    "eta": {"epsilon": 3e-3},
    "top_k": {"top_k": 7},
    "temperature": {"temperature": 0.7},
    "plain": {},
    "mask_ids": {"start": 10, "count": 5},
}
#: samplers whose kept set is a prefix by probability (typical keeps tokens near the entropy;
#: mask_ids drops fixed ids)
PREFIX = sorted(set(CONFIGS) - {"typical", "mask_ids"})


def logits(seed: int, rows: int = 5, vocab: int = 64, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def test_every_registered_sampler_is_covered_and_documented():
    assert set(SAMPLERS.names()) == set(CONFIGS)
    for entry in SAMPLERS:
        assert entry.summary and "\n" not in entry.summary
        if entry.name not in ("plain", "temperature"):
            assert entry.paper, entry.name


# ------------------------------------------------------------------- transformers, exactly
HF_CASES = [
    ("min_p", {"min_p": 0.07}, lambda: hf.MinPLogitsWarper(0.07)),
    ("top_p", {"top_p": 0.8}, lambda: hf.TopPLogitsWarper(0.8)),
    ("typical", {"mass": 0.7}, lambda: hf.TypicalLogitsWarper(0.7)),
    ("typical", {"typical_p": 0.7}, lambda: hf.TypicalLogitsWarper(0.7)),
    ("epsilon", {"epsilon": 2e-3}, lambda: hf.EpsilonLogitsWarper(2e-3)),
    ("epsilon", {"epsilon_cutoff": 2e-3}, lambda: hf.EpsilonLogitsWarper(2e-3)),
    ("eta", {"epsilon": 4e-3}, lambda: hf.EtaLogitsWarper(4e-3)),
    ("eta", {"eta_cutoff": 4e-3}, lambda: hf.EtaLogitsWarper(4e-3)),
    (
        "top_k",
        {"top_k": 5, "min_tokens_to_keep": 2},
        lambda: hf.TopKLogitsWarper(5, min_tokens_to_keep=2),
    ),
    ("temperature", {"temperature": 1.7}, lambda: hf.TemperatureLogitsWarper(1.7)),
]


@pytest.mark.parametrize("name,params,reference", HF_CASES)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 6.0))
@SETTINGS
def test_registry_names_give_exactly_transformers_results(name, params, reference, seed, scale):
    x = logits(seed, scale=scale)
    assert torch.equal(make_warper(name, params)(x), reference()(None, x.clone()))


@given(seed=st.integers(0, 10_000), p=st.floats(0.05, 0.99), m=st.floats(0.01, 0.9))
@SETTINGS
def test_top_p_and_min_p_agree_with_the_backend_filters(seed, p, m):
    x = logits(seed)
    assert torch.equal(make_warper("top_p", {"top_p": p})(x), apply_top_p(x, p))
    assert torch.equal(make_warper("min_p", {"min_p": m})(x), apply_min_p(x, m))


# ------------------------------------------------------------------ properties of every warper
@pytest.mark.parametrize("name", sorted(CONFIGS))
@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 8.0))
@SETTINGS
def test_warpers_do_not_modify_their_input_and_keep_shape_and_dtype(name, seed, scale):
    x = logits(seed, scale=scale)
    x[1, :3] = float("-inf")
    before = x.clone()
    out = make_warper(name, CONFIGS[name])(x)
    assert torch.equal(x, before)
    assert out.shape == x.shape and out.dtype == x.dtype and out.data_ptr() != x.data_ptr()
    assert torch.isfinite(out).any(-1).all()  # at least one token per row
    assert not torch.isfinite(out[1, :3]).any()  # removed tokens stay removed
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("name", PREFIX)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.05, 8.0))
@SETTINGS
def test_kept_sets_are_prefixes_by_probability(name, seed, scale):
    x = logits(seed, scale=scale)
    keep = torch.isfinite(make_warper(name, CONFIGS[name])(x))
    for r in range(x.shape[0]):
        if (~keep[r]).any():
            assert x[r][keep[r]].min() >= x[r][~keep[r]].max()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batched_3d_and_2d_calls_agree_row_by_row(name):
    x = logits(11, rows=6, vocab=80).reshape(2, 3, 80)
    w = make_warper(name, CONFIGS[name])
    out3 = w(x)
    out2 = w(x.reshape(6, 80))
    assert torch.equal(out3.reshape(6, 80), out2)
    for i in range(6):
        single = w(x.reshape(6, 80)[i : i + 1])[0]
        assert torch.allclose(
            out2[i], single, atol=1e-6, rtol=1e-6, equal_nan=False
        ) or torch.equal(out2[i], single)
        assert torch.equal(torch.isfinite(out2[i]), torch.isfinite(single))


def test_typical_can_drop_the_most_likely_token():
    # why typical is excluded from the prefix property: p = (0.4, 0.15 × 4); H = 1.505 nats;
    # surprisal −ln 0.4 = 0.916 is further from H than −ln 0.15 = 1.897, so with mass 0.5 the
    # four 0.15-tokens (closest to H) fill the set first and the top token is dropped
    x = torch.tensor([[0.4, 0.15, 0.15, 0.15, 0.15]]).log()
    out = make_warper("typical", {"mass": 0.5})(x)
    assert not torch.isfinite(out[0, 0])


# --------------------------------------------------------------------- validation and specs
@pytest.mark.parametrize(
    "name,params,match",
    [
        ("min_p", {"min_p": 1.5}, "min_p"),
        ("top_p", {"top_p": 0.0}, "top_p"),
        ("typical", {"mass": 1.0}, "mass"),
        ("epsilon", {"epsilon": 0.0}, "epsilon"),
        ("eta", {"epsilon": -1e-3}, "epsilon"),
        ("top_k", {"top_k": 0}, "top_k"),
        ("top_k", {"top_k": 2.0}, "top_k"),
        ("temperature", {"temperature": 0.0}, "temperature"),
        ("min_p", {"min_tokens_to_keep": 0}, "min_tokens_to_keep"),
        ("edt", {"base": 1.2}, "base"),
        ("entropix", {"thresholds": "fixed", "top_k": -1}, "top_k"),
        ("top_h", {"beta": 0.3}, "accepts: alpha, mode, top_n"),
    ],
)
def test_bad_parameters_name_the_problem(name, params, match):
    with pytest.raises(EntrolabError, match=match):
        make_warper(name, params)


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'top_h'.*Known samplers: edt"):
        make_warper("toph", {})


def test_spec_parsing_round_trips():
    name, params = parse_sampler_spec("top_h:alpha=0.4,mode=paper, top_n=50")
    assert (name, params) == ("top_h", {"alpha": 0.4, "mode": "paper", "top_n": 50})
    assert parse_sampler_spec(format_sampler_spec(name, params)) == (name, params)
    assert parse_sampler_spec("typical") == ("typical", {})
    assert format_sampler_spec("plain") == "plain"
    assert parse_sampler_spec("entropix:thresholds=fixed,n_candidates=1")[1] == {
        "thresholds": "fixed",
        "n_candidates": 1,
    }
    with pytest.raises(EntrolabError, match="KEY=VALUE"):
        parse_sampler_spec("top_h:alpha")
    with pytest.raises(UnknownNameError):
        parse_sampler_spec("nucleus:p=0.9")


def test_entropix_without_fitted_thresholds_says_how_to_fit_them():
    with pytest.raises(EntrolabError, match="fit_entropix_thresholds"):
        make_warper("entropix", {})
    fixed = make_warper("entropix", {"thresholds": "fixed"})
    assert fixed.params["h_mid"] == pytest.approx(3.0 * math.log(2))
    flat = make_warper("entropix", {**EntropixThresholds.fixed().to_dict(), "n_candidates": 1})
    x = logits(3)
    assert torch.equal(
        flat(x), make_warper("entropix", {"thresholds": "fixed", "n_candidates": 1})(x)
    )


# ------------------------------------------------------------------------------ diagnostics
def test_warper_diagnostics_hand_computed():
    # before p = (0.5, 0.3, 0.2); after keeps the first two → kept 2, retained 0.8,
    # after-distribution (0.625, 0.375): H = 0.625·0.470004 + 0.375·0.980829 = 0.661563 nats
    before = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]).log()
    after = before.clone()
    after[0, 2] = float("-inf")
    d = warper_diagnostics(before, after)
    assert d["kept"].tolist() == [2, 3]
    assert torch.allclose(d["retained_mass"], torch.tensor([0.8, 1.0]), atol=1e-6)
    # row 2 is untouched: H(0.5, 0.3, 0.2) = 0.346574 + 0.361192 + 0.321888 = 1.029653
    assert torch.allclose(d["entropy_after"], torch.tensor([0.661563, 1.029653]), atol=1e-5)
    d3 = warper_diagnostics(before.reshape(1, 2, 3), after.reshape(1, 2, 3))
    assert d3["kept"].shape == (1, 2)
    with pytest.raises(EntrolabError, match="must have the same"):
        warper_diagnostics(before, after[:, :2])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_warper_reports_diagnostics_of_its_last_call(name):
    w = make_warper(name, CONFIGS[name])
    x = logits(5)
    out = w(torch.zeros(5, 2, dtype=torch.long), x)  # the transformers call form
    d = w.diagnostics()
    assert torch.equal(d["kept"], torch.isfinite(out).sum(-1))
    assert ((d["retained_mass"] > 0) & (d["retained_mass"] <= 1)).all()
    assert torch.allclose(
        d["entropy_after"], torch.special.entr(out.softmax(-1)).sum(-1), atol=1e-5
    )


def test_mask_ids_by_hand():
    # ids 1 and 2 of [0, 5, 9, 1] removed; the rest unchanged, the input untouched
    x = torch.tensor([[0.0, 5.0, 9.0, 1.0]])
    out = make_warper("mask_ids", {"start": 1, "count": 2})(x)
    assert out.tolist() == [[0.0, float("-inf"), float("-inf"), 1.0]] and x[0, 2] == 9.0
    with pytest.raises(EntrolabError, match="count must be an integer >= 1"):
        make_warper("mask_ids", {"start": 0, "count": 0})
