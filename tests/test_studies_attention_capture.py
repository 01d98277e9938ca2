"""Attention entropy captured with hooks (B20) and ``entrolab analyze --attention``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.backends import HFBackend
from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.studies.attention import attention_entropy
from entrolab.studies.attention_capture import (
    AttentionEntropyWatch,
    attention_heatmap_svg,
    attention_summary,
    attention_svg_path,
    sequence_attention_entropy,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_hooks_equal_output_attentions_and_restore_the_implementation():
    model, _ = tiny_model(seed=0)
    before = model.config._attn_implementation
    ids = torch.randint(3, 200, (2, 10), generator=torch.Generator().manual_seed(1))
    with AttentionEntropyWatch(model) as watch, torch.no_grad():
        model(input_ids=ids)
    got = watch.stacked()
    assert model.config._attn_implementation == before  # restored on exit
    model.set_attn_implementation("eager")
    with torch.no_grad():
        maps = model(input_ids=ids, output_attentions=True).attentions
    ref = torch.stack([attention_entropy(a) for a in maps])  # [L, B, H, T]
    torch.testing.assert_close(got["entropy"], ref.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got["first_mass"], torch.stack([a[..., 0] for a in maps]))
    # row 0 of a causal map has one key: entropy 0 and all its mass on the first token
    assert got["entropy"][..., 0].abs().max() < 1e-6
    assert torch.allclose(got["first_mass"][..., 0], torch.ones(()))


def test_watch_without_a_forward_pass_is_an_error():
    model, _ = tiny_model(seed=0)
    with AttentionEntropyWatch(model) as watch:
        pass
    with pytest.raises(EntrolabError, match="no forward pass"):
        watch.stacked()


def test_summary_by_hand():
    # 2 layers × 2 heads × 3 queries
    ent = np.array([[[0.0, 0.6, 1.0], [0.0, 0.0, 0.2]], [[0.0, 0.4, 0.8], [0.0, 0.7, 1.1]]])
    with np.errstate(invalid="ignore"):
        norm = ent / np.log(np.arange(1, 4))  # row 0 → NaN (0/0), as position_normalized_entropy
    first = np.ones_like(ent) * 0.5
    first[0, 1] = [1.0, 1.0, 0.9]
    s = attention_summary({"entropy": ent, "normalized": norm, "first_mass": first}, lowest=2)
    # table: mean over the 3 queries: L0H0 (0+.6+1)/3, L0H1 .2/3, L1H0 1.2/3, L1H1 1.8/3
    assert s["table"] == pytest.approx(np.array([[1.6, 0.2], [1.2, 1.8]]) / 3)
    # normalised means over queries 1, 2: L0H1 (0/log2 + .2/log3)/2 is the lowest
    assert s["lowest_heads"][0]["layer"] == 0 and s["lowest_heads"][0]["head"] == 1
    assert s["lowest_heads"][0]["normalized"] == pytest.approx(0.2 / math.log(3) / 2)
    assert s["lowest_heads"][0]["first_mass"] == pytest.approx(0.95)  # queries 1, 2
    assert s["layers"][1]["lowest_head"] == 0


def test_heatmap_has_labelled_axes_and_unit():
    svg = attention_heatmap_svg(np.arange(6.0).reshape(3, 2), title="t")
    for label in ("layer", "head", "mean attention entropy (nats)"):
        assert label in svg
    with pytest.raises(EntrolabError, match="layers, heads"):
        attention_heatmap_svg(np.arange(3.0), title="t")


def test_svg_goes_next_to_the_first_output(tmp_path):
    assert attention_svg_path([None, tmp_path / "a.json"]) == tmp_path / "a.attention.svg"
    assert attention_svg_path([None, None]).name == "attention_entropy.svg"


def test_sequence_entropy_on_tiny_backend_and_analyze_cli(parrot_dir, tmp_path):
    from typer.testing import CliRunner

    from entrolab.cli.main import app

    backend = HFBackend.load(str(parrot_dir))
    got = sequence_attention_entropy(backend, [5, 9, 11, 4])
    assert got["entropy"].shape == (2, 4, 4)  # 2 layers × 4 heads × 4 tokens
    assert np.isnan(got["normalized"][..., 0]).all()
    # entropy of query i is at most log(i + 1) (i + 1 visible keys)
    assert (got["entropy"] <= np.log(np.arange(1, 5)) + 1e-6).all()
    out = tmp_path / "t.json"
    args = ["analyze", "hi", "--model", str(parrot_dir), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--attention", "--json", str(out)])
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "t.attention.svg").read_text()
    assert "layer" in svg and "nats" in svg
    assert "attention entropy: 2 layers × 4 heads" in result.output
    assert "lowest normalised entropy: L" in result.output


# ---- the regulariser as a training-loss option (tiny model, a few steps) --------------------


def test_regularised_finetuning_lowers_the_penalty_vs_plain_ce_on_the_same_batches():
    from entrolab.studies.attention_training import attention_profile, finetune_lm

    texts = [f"{a}+{b}={a + b};{b}+{a}={a + b};" for a in range(10, 30) for b in (3, 7)]
    held_out = ["41+5=46;5+41=46;", "12+9=21;9+12=21;"]
    after = {}
    for coeff in (0.0, 1e-2):
        model, tok = tiny_model(seed=3)
        hist = finetune_lm(model, tok, texts, coeff=coeff, steps=8, batch_size=4, lr=3e-3)
        assert len(hist["ce"]) == 8 and all(math.isfinite(c) for c in hist["ce"])
        if coeff == 0.0:  # the control arm: no penalty, thresholds untouched
            assert hist["penalty"] == [0.0] * 8 and hist["thresholds"] == [0.5] * 4
        else:
            assert all(p > 0 for p in hist["penalty"]) and hist["thresholds"] != [0.5] * 4
        after[coeff] = attention_profile(model, tok, held_out)
    prof = after[0.0]
    assert prof["normalized"].shape == (2, 2, 4)  # texts × layers × heads
    assert ((prof["normalized"] >= 0) & (prof["normalized"] <= 1 + 1e-6)).all()
    # same init, same batches: the regularised arm ends with a lower penalty on held-out texts
    assert (after[1e-2]["penalty"] < after[0.0]["penalty"]).all()
    model, tok = tiny_model(seed=3)
    with pytest.raises(EntrolabError, match="steps ≥ 1"):
        finetune_lm(model, tok, texts, coeff=0.0, steps=0)
    with pytest.raises(EntrolabError, match="coeff must be ≥ 0"):
        finetune_lm(model, tok, texts, coeff=-1.0, steps=1)
