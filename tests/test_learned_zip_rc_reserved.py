"""ZIP-RC's reserved-token head: the joint read from a slice of the model's own logits, as the
official scoring code reads it (transcribed below from rohinmanvi/ZIP-RC
src/score_with_ziprc_joint_head.py and src/train_ziprc_head_only.py @63281ba); the fitted rows
minimise the official head-only loss; reserved ids are never sampled; fit → save → load → run on
a tiny model given unused rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.backends import HFBackend
from entrolab.backends.sampling import sample_rows
from entrolab.config import GenerationConfig
from entrolab.decoding import make_warper
from entrolab.errors import EntrolabError
from entrolab.inference import make_strategy
from entrolab.inference.base import Sampling
from entrolab.inference.zip_rc import fit_zip_rc, load_zip_rc, save_zip_rc
from entrolab.inference.zip_rc_reserved import (
    MASK_SAMPLER,
    add_reserved_rows,
    final_states,
    fit_reserved_rows,
    mask_reserved,
    reserved_joint,
    unused_rows,
)
from entrolab.models import tiny_model
from entrolab.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- reference (transcribed)
def ref_expected_values(h, weight, bias, distribution_token_id, num_length_bins, reward_values):
    """From expected_values_last_k: the per-position expected reward over the slice (one
    sequence, every position, no chunking)."""
    num_reward_states = int(reward_values.numel())
    num_bins = num_length_bins * num_reward_states
    weight_bins = weight[distribution_token_id : distribution_token_id + num_bins]
    bias_bins = (
        None if bias is None else bias[distribution_token_id : distribution_token_id + num_bins]
    )
    chunk_logits = F.linear(h, weight_bins, bias_bins).to(dtype=torch.float32)
    probs = F.softmax(chunk_logits, dim=-1)
    probs = probs.view(-1, num_reward_states, num_length_bins)
    p_reward = probs.sum(dim=-1)
    return torch.matmul(p_reward, reward_values)


def ref_head_only_loss(h_flat, lm_weight, distribution_token_id, num_bins, labels_tensor):
    """From compute_loss: the joint-distribution cross-entropy over the reserved slice."""
    weight_bins = lm_weight[distribution_token_id : distribution_token_id + num_bins]
    logits_bins = F.linear(h_flat, weight_bins, None)
    return F.cross_entropy(logits_bins, labels_tensor, reduction="mean")


# ---------------------------------------------------------------------------------- tests
def test_reserved_joint_by_hand() -> None:
    # slice [0, ln 3] at ids 2, 3 of a 5-wide vocabulary, R = 2, L = 1: softmax → [1/4, 3/4]
    logits = torch.tensor([9.0, 9.0, 0.0, float(np.log(3.0)), 9.0])
    np.testing.assert_allclose(reserved_joint(logits, 2, 2, 1), [[0.25], [0.75]])
    # reward-major layout: id start + b·L + ℓ → the largest logit (index 5) is (b=1, ℓ=2)
    j = reserved_joint(torch.arange(6.0), 0, 2, 3)
    assert j.shape == (2, 3) and np.unravel_index(j.argmax(), j.shape) == (1, 2)
    with pytest.raises(EntrolabError, match="does not fit"):
        reserved_joint(torch.zeros(5), 2, 2, 2)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(2, 3))
def test_expected_reward_matches_official_slice(seed, n_len, n_r) -> None:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(7, 16, generator=g)
    weight = torch.randn(40, 16, generator=g)
    d = int(torch.randint(0, 40 - n_len * n_r + 1, (1,), generator=g))
    rv = torch.linspace(0, 1, n_r)
    ref = ref_expected_values(h, weight, None, d, n_len, rv)
    ours = reserved_joint(h @ weight.T, d, n_r, n_len).sum(-1) @ rv.double().numpy()
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_fitted_rows_minimise_the_official_loss() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g)
    y = torch.randint(0, 6, (60,), generator=g)
    w = fit_reserved_rows(x, y, 6, l2=1e-3).double().requires_grad_(True)
    lm = torch.cat([torch.randn(3, 8, dtype=torch.float64, generator=g), w])  # rows 3..8
    loss = ref_head_only_loss(x.double(), lm, 3, 6, y) + 0.5 * 1e-3 * (w * w).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert float(grad.abs().max()) < 1e-5  # stationary point of a convex objective


def test_mask_sampler_never_picks_reserved_ids() -> None:
    logits = torch.zeros(3, 10)
    logits[:, 4:7] = 50.0  # the reserved ids would win every draw
    out = mask_reserved(logits, 4, 3)
    assert torch.isinf(out[:, 4:7]).all() and logits[0, 4] == 50.0  # input untouched
    w = make_warper(MASK_SAMPLER, {"start": 4, "count": 3})
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    for _ in range(20):
        picked = sample_rows(w(logits), gens)
        assert not ((picked >= 4) & (picked < 7)).any()


def test_reserved_head_fit_save_load_and_run(tmp_path) -> None:
    model, tok = tiny_model(seed=2)
    plain = HFBackend(*tiny_model(seed=2), name="tiny-plain")
    assert unused_rows(plain)[1] == 0
    task = load_task("arithmetic", level=1)
    items = task.items(3, seed=0)
    kw = dict(samples=2, stride=4, sampling=Sampling(max_new_tokens=8), length_edges=(4, 8))
    with pytest.raises(EntrolabError, match="0 unused vocabulary rows"):
        fit_zip_rc(plain, task, items, head="reserved", **kw)
    start = add_reserved_rows(model, 6)
    backend = HFBackend(model, tok, name="tiny-reserved")
    assert unused_rows(backend) == (start, 6)
    head = fit_zip_rc(backend, task, items, head="reserved", **kw)
    assert head.reserved_start == start and head.reserved_weight.shape == (6, 64)
    # the joint read from the model's own logits = the head applied to the final states
    seqs = [backend.prompt_ids(it.prompt) for it in items]
    states = torch.cat(final_states(backend, seqs, [[len(s) - 1] for s in seqs]))
    np.testing.assert_allclose(head.read(backend, seqs), head.joint(states), rtol=1e-4, atol=1e-6)
    save_zip_rc(head, tmp_path / "res")
    again = load_zip_rc(tmp_path / "res", backend)
    np.testing.assert_allclose(again.joint(states), head.joint(states), rtol=1e-6)
    # generation with the head's mask never emits a reserved id
    cfg = GenerationConfig(
        num_samples=4, max_new_tokens=12, temperature=1.0, **head.prepare(backend)
    )
    for t in backend.generate([it.prompt for it in items], cfg):
        assert not ((t.token_ids >= start) & (t.token_ids < start + 6)).any()
    outs = make_strategy("zip-rc", head=again, budget=3, prune_at=3, max_new_tokens=8,
                         temperature=1.0).run(backend, task, items)  # fmt: skip
    assert len(outs) == 3 and all(1 <= o.meta["n0"] <= 3 for o in outs)
    with pytest.raises(EntrolabError, match="fitted for model 'tiny-reserved'"):
        load_zip_rc(tmp_path / "res", plain)
