"""Sampling filters against transformers' own warpers, and the per-row sampler's distribution."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from entrolab.backends.sampling import (
    apply_min_p,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    process_logits,
    row_seed,
    sample_rows,
)
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError


def logits(seed: int, rows: int = 6, vocab: int = 50) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@given(seed=st.integers(0, 10_000), k=st.integers(1, 60))
@settings(max_examples=40, deadline=None)
def test_top_k_matches_transformers(seed, k):
    x = logits(seed)
    assert torch.equal(apply_top_k(x, k), TopKLogitsWarper(top_k=k)(None, x.clone()))


@given(seed=st.integers(0, 10_000), p=st.floats(0.05, 0.99))
@settings(max_examples=40, deadline=None)
def test_top_p_matches_transformers(seed, p):
    x = logits(seed)
    assert torch.equal(apply_top_p(x, p), TopPLogitsWarper(top_p=p)(None, x.clone()))


@given(seed=st.integers(0, 10_000), m=st.floats(0.01, 0.9))
@settings(max_examples=40, deadline=None)
def test_min_p_matches_transformers(seed, m):
    x = logits(seed)
    assert torch.equal(apply_min_p(x, m), MinPLogitsWarper(min_p=m)(None, x.clone()))


def test_temperature_matches_transformers_and_filters_do_not_mutate_input():
    x = logits(1)
    before = x.clone()
    assert torch.allclose(apply_temperature(x, 0.7), TemperatureLogitsWarper(0.7)(None, x.clone()))
    cfg = GenerationConfig(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05)
    out = process_logits(x, cfg)
    assert torch.equal(x, before)
    # the chain equals transformers' warpers applied in generate()'s order
    ref = x.clone()
    for w in (
        TemperatureLogitsWarper(0.7),
        TopKLogitsWarper(20),
        TopPLogitsWarper(0.9),
        MinPLogitsWarper(0.05),
    ):
        ref = w(None, ref)
    assert torch.equal(out, ref)


def test_sample_rows_draws_from_the_softmax_distribution():
    # p = softmax(log [0.1, 0.2, 0.3, 0.4, 0]) ; the -inf token must never be drawn
    p = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    x = torch.log(p).expand(20_000, 5).clone()
    gens = [torch.Generator().manual_seed(row_seed(0, i, 0)) for i in range(20_000)]
    counts = torch.bincount(sample_rows(x, gens), minlength=5).double()
    n = counts.sum()
    assert counts[4] == 0
    for j in range(4):  # within 5 binomial standard deviations of n * p_j
        sd = math.sqrt(n * p[j] * (1 - p[j]))
        assert abs(counts[j] - n * p[j]) < 5 * sd


def test_row_seeds_are_stable_and_distinct():
    assert row_seed(0, 0, 0) == row_seed(0, 0, 0)
    seeds = {row_seed(s, i, j) for s in range(3) for i in range(5) for j in range(5)}
    assert len(seeds) == 75 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize(
    ("kw", "phrase"),
    [
        ({"temperature": -1}, "temperature must be a finite number >= 0"),
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"min_p": 1.0}, "min_p must be in [0, 1)"),
        ({"stop": ("",)}, "stop strings must be non-empty"),
        ({"signals_from": "cooked"}, "signals_from must be 'raw' or 'processed'"),
    ],
)
def test_bad_generation_config_is_rejected(kw, phrase):
    with pytest.raises(EntrolabError) as info:
        GenerationConfig(**kw)
    assert phrase in str(info.value)


def test_generation_config_dict_round_trip_and_unknown_keys():
    cfg = GenerationConfig(stop=("\n\n",), temperature=0.5)
    assert GenerationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(EntrolabError, match="unknown generation settings \\['temprature'\\]"):
        GenerationConfig.from_dict({"temprature": 1})
