"""Attention entropy (B20): measurement, position normalisation, the regulariser vs the
reference (Nandan91/entropy-guided-attention-llm, entropy_regularization.py, transcribed below),
and the regulariser as a training loss on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.studies.attention import (
    AttentionEntropyRegularizer,
    attention_entropy,
    attention_maps,
    head_entropy_table,
    lm_loss_with_attention_entropy,
    position_normalized_entropy,
)


def _ref_compute_loss(attentions, reg_threshold_weights, num_heads, num_layers,
                      loss_coeff=1e-5, tolerance_margin_factor=0.20):  # fmt: skip
    context_size = attentions[0].shape[-1]
    max_entropy = torch.log(torch.tensor(float(context_size)))
    tolerance_margin = tolerance_margin_factor * max_entropy
    entropy_reg_loss = 0
    for attn_mat in attentions:
        ent_val = -torch.nansum(attn_mat * torch.log(attn_mat + 1e-9), dim=-1)
        layer_entropy_reg_loss = 0
        for head_idx in range(num_heads):
            head_entropy = ent_val[:, head_idx, :]
            threshold = reg_threshold_weights[head_idx] * max_entropy
            deviation = head_entropy - threshold
            penalty = torch.square(
                torch.where(
                    torch.abs(deviation) > tolerance_margin, deviation, torch.zeros_like(deviation)
                )
            )
            layer_entropy_reg_loss += penalty.sum()
        layer_entropy_reg_loss /= num_heads
        entropy_reg_loss += layer_entropy_reg_loss
    entropy_reg_loss /= num_layers
    return loss_coeff * entropy_reg_loss


@pytest.fixture(scope="module")
def eager_tiny():
    model, tok = tiny_model(seed=0)
    model.set_attn_implementation("eager")
    return model, tok


def test_entropy_and_normalisation_by_hand():
    # causal rows: [1, 0, 0] → 0; [½, ½, 0] → log 2; uniform over 3 → log 3
    a = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    h = attention_entropy(a[None, None])[0, 0]
    torch.testing.assert_close(
        h, torch.tensor([0.0, math.log(2), math.log(3)], dtype=torch.float64)
    )
    hn = position_normalized_entropy(h)
    assert math.isnan(hn[0]) and hn[1:].tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(EntrolabError, match="B, heads, queries, keys"):
        attention_entropy(torch.ones(3, 3))


def test_regulariser_matches_the_reference_on_tiny_model_attentions(eager_tiny):
    model, _ = eager_tiny
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = attention_maps(model, ids)
    assert len(maps) == 2 and maps[0].shape == (2, 4, 12, 12)
    reg = AttentionEntropyRegularizer(4, init_threshold=0.3)
    thresholds = torch.tensor([0.1, 0.3, 0.6, 0.9])
    with torch.no_grad():
        reg.threshold.copy_(thresholds)
    with torch.no_grad():
        ours = reg(maps)
    ref = _ref_compute_loss(maps, thresholds, num_heads=4, num_layers=2)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    table = head_entropy_table(maps)
    assert table["entropy"].shape == (2, 4)
    assert bool(((table["normalized"] >= 0) & (table["normalized"] <= 1 + 1e-6)).all())


def test_regulariser_as_a_training_loss_on_the_tiny_model(eager_tiny):
    model, _ = eager_tiny
    model.train()
    try:
        ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(1))
        reg = AttentionEntropyRegularizer(4, coeff=1.0, init_threshold=0.05)
        loss, parts = lm_loss_with_attention_entropy(model, ids, reg)
        assert parts["attn_entropy_penalty"] > 0 and loss.item() == pytest.approx(
            parts["ce"] + parts["attn_entropy_penalty"], rel=1e-5
        )
        loss.backward()
        q_grad = model.model.layers[0].self_attn.q_proj.weight.grad
        assert q_grad is not None and q_grad.abs().sum() > 0  # the penalty reaches attention
        assert reg.threshold.grad is not None and reg.threshold.grad.abs().sum() > 0
        # one SGD step on the penalty alone lowers it
        opt = torch.optim.SGD(list(model.parameters()) + list(reg.parameters()), lr=1e-3)
        model.zero_grad()
        reg.zero_grad()
        before = reg(attention_maps(model, ids))
        before.backward()
        opt.step()
        with torch.no_grad():
            after = reg(attention_maps(model, ids))
        assert float(after) < float(before.detach())
    finally:
        model.zero_grad()
        model.eval()
