"""Loss aggregation modes: hand-computed values, verl/TRL transcriptions, split invariance."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab import rl
from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.rl.aggregation import LOSS_AGGREGATIONS, aggregate_loss

MODES = [
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "token-sum-norm",
]

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
MASK = torch.tensor([[True, True, False], [True, True, True]])


@pytest.mark.parametrize(
    ("mode", "kwargs", "expected"),
    [
        # masked sum = 1 + 2 + 4 + 5 + 6 = 18 over 5 tokens
        ("token-mean", {}, 18 / 5),
        ("token-mean", {"global_tokens": 10}, 18 / 10),
        # row means (1+2)/2 = 1.5 and (4+5+6)/3 = 5; mean over 2 rows = 3.25
        ("seq-mean-token-mean", {}, (1.5 + 5.0) / 2),
        ("seq-mean-token-mean", {"global_sequences": 4}, (1.5 + 5.0) / 4),
        # row sums 3 and 15; mean over rows = 9
        ("seq-mean-token-sum", {}, 9.0),
        ("seq-mean-token-sum", {"global_sequences": 3}, 18 / 3),
        # Dr.GRPO: 18 / (S · C); C defaults to the padded width T = 3
        ("seq-mean-token-sum-norm", {}, 18 / (2 * 3)),
        ("seq-mean-token-sum-norm", {"max_response_length": 4}, 18 / (2 * 4)),
        ("seq-mean-token-sum-norm", {"max_response_length": 4, "global_sequences": 6}, 18 / 24),
        # verl's coded form: 18 / C
        ("token-sum-norm", {"max_response_length": 4}, 18 / 4),
        ("token-sum-norm", {}, 18 / 3),
    ],
)
def test_hand_computed_values(mode: str, kwargs: dict, expected: float) -> None:
    out = aggregate_loss(LOSS, MASK, mode, **kwargs)
    assert out.item() == pytest.approx(expected, rel=1e-12)


def test_masked_positions_ignored_even_if_nan_and_get_zero_grad() -> None:
    loss = LOSS.clone()
    loss[0, 2] = float("nan")
    loss.requires_grad_(True)
    for mode in MODES:
        out = aggregate_loss(loss, MASK, mode, max_response_length=3)
        out.backward()
        assert math.isfinite(out.item())
        assert loss.grad is not None
        assert loss.grad[0, 2].item() == 0.0
        assert torch.isfinite(loss.grad).all()
        loss.grad = None


def test_token_mean_gradient_is_one_over_count() -> None:
    loss = LOSS.clone().requires_grad_(True)
    aggregate_loss(loss, MASK, "token-mean").backward()
    expected = MASK.double() / 5  # each of the 5 response tokens weighs 1/5
    torch.testing.assert_close(loss.grad, expected, rtol=0, atol=1e-15)


def test_empty_mask_gives_zero_not_nan() -> None:
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for mode in MODES:
        assert aggregate_loss(LOSS, mask, mode).item() == 0.0


# --- transcriptions of the reference formulas --------------------------------------------


def _verl_agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """verl ``agg_loss`` (core_algos.py, per-call form), transcribed by hand."""
    m = loss_mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * m).sum() / m.sum()
    if mode == "seq-mean-token-sum":
        return torch.sum(loss_mat * m, dim=-1).mean()
    if mode == "seq-mean-token-mean":
        return (torch.sum(loss_mat * m, dim=-1) / torch.sum(m, dim=-1)).mean()
    if mode == "seq-mean-token-sum-norm":  # verl: Σ / max_response_length (no 1/B)
        return torch.sum(loss_mat * m) / loss_mask.shape[-1]
    raise AssertionError(mode)


def _trl_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, max_len: int):
    """TRL GRPOTrainer normalisations (single process), transcribed by hand."""
    m = mask.to(per_token_loss.dtype)
    if loss_type == "grpo":
        return ((per_token_loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type in ("dapo", "bnpo"):
        return (per_token_loss * m).sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * m).sum() / (per_token_loss.size(0) * max_len)
    raise AssertionError(loss_type)


def _random_batch(seed: int, b: int = 5, t: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(b, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    return loss, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_verl_transcription(seed: int) -> None:
    loss, mask = _random_batch(seed)
    for ours, theirs in [
        ("token-mean", "token-mean"),
        ("seq-mean-token-mean", "seq-mean-token-mean"),
        ("seq-mean-token-sum", "seq-mean-token-sum"),
        ("token-sum-norm", "seq-mean-token-sum-norm"),
    ]:
        torch.testing.assert_close(
            aggregate_loss(loss, mask, ours), _verl_agg_loss(loss, mask, theirs), rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_trl_transcription(seed: int) -> None:
    loss, mask = _random_batch(seed)
    torch.testing.assert_close(
        aggregate_loss(loss, mask, "seq-mean-token-mean"), _trl_loss(loss, mask, "grpo", 7)
    )
    torch.testing.assert_close(
        aggregate_loss(loss, mask, "token-mean"), _trl_loss(loss, mask, "dapo", 7)
    )
    torch.testing.assert_close(
        aggregate_loss(loss, mask, "seq-mean-token-sum-norm", max_response_length=9),
        _trl_loss(loss, mask, "dr_grpo", 9),
    )


# --- micro-batch split invariance ---------------------------------------------------------


@st.composite
def _split_case(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    b = draw(st.integers(1, 6))
    t = draw(st.integers(1, 5))
    values = draw(
        st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=b * t, max_size=b * t)
    )
    lengths = draw(st.lists(st.integers(0, t), min_size=b, max_size=b))
    perm = draw(st.permutations(list(range(b))))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(b - 1, 1)), max_size=3))) - {b})
    loss = torch.tensor(values, dtype=torch.float64).reshape(b, t)[list(perm)]
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return loss, mask, [c for c in cuts if 0 < c < b]


@settings(max_examples=60, deadline=None)
@given(_split_case())
def test_micro_batches_sum_to_full_batch_loss_and_gradient(case) -> None:
    loss, mask, cuts = case
    counts = {
        "global_tokens": int(mask.sum()),
        "global_sequences": loss.shape[0],
        "max_response_length": loss.shape[1],
    }
    bounds = [0, *cuts, loss.shape[0]]
    for mode in MODES:
        full_in = loss.clone().requires_grad_(True)
        full = aggregate_loss(full_in, mask, mode, **counts)
        full.backward()
        micro_in = loss.clone().requires_grad_(True)
        total = torch.zeros((), dtype=torch.float64)
        for lo, hi in itertools.pairwise(bounds):
            # each micro-batch is trimmed to its own longest response, as a trainer pads it
            width = max(int(mask[lo:hi].sum(-1).max()), 1)
            total = total + aggregate_loss(
                micro_in[lo:hi, :width], mask[lo:hi, :width], mode, **counts
            )
        total.backward()
        torch.testing.assert_close(total, full.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(micro_in.grad, full_in.grad, rtol=1e-12, atol=1e-12)


# --- registry and errors ------------------------------------------------------------------


def test_registry_lists_all_modes_with_metadata() -> None:
    assert rl.loss_aggregations is LOSS_AGGREGATIONS
    assert set(MODES) == set(LOSS_AGGREGATIONS.names())
    for entry in LOSS_AGGREGATIONS:
        assert entry.summary and entry.paper


def test_unknown_mode_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="token-mean"):
        aggregate_loss(LOSS, MASK, "tokenmean")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"global_tokens": 3}, "smaller than this micro-batch"),
        ({"global_tokens": -1}, "non-negative int"),
    ],
)
def test_bad_global_counts_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(EntrolabError, match=match):
        aggregate_loss(LOSS, MASK, "token-mean", **kwargs)


def test_bad_shapes_raise() -> None:
    with pytest.raises(EntrolabError, match="must match"):
        aggregate_loss(LOSS, MASK[:, :2], "token-mean")
    with pytest.raises(EntrolabError, match=r"\[B, T\]"):
        aggregate_loss(LOSS[0], MASK[0], "token-mean")
    with pytest.raises(EntrolabError, match="bool"):
        aggregate_loss(LOSS, MASK.double(), "token-mean")
    with pytest.raises(EntrolabError, match="max_response_length"):
        aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm", max_response_length=0)
