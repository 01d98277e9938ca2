"""EAST: the steering vector against hand-computed and numpy references, the hook's exact effect
and its clean removal on a tiny model, and the entropy ordering on the embedded model."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.decoding.steering import (
    build_steering_vector,
    collect_hidden_states,
    decoder_layers,
    next_token_entropy,
    option_entropy,
    steer,
)
from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.signals import token_entropy
from entrolab.tasks import load_task

# ---------------------------------------------------------------------------- steering vector
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_build_steering_vector_hand_computed():
    h = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    w = torch.tensor([1.0, 1.0, 2.0])
    # centred: mean = [3, 2] → h̃ = [[−2, −2], [0, 0], [2, 2]];
    # Σ w h̃ = [−2, −2] + 0 + 2·[2, 2] = [2, 2]; / Σ w = 4 → [0.5, 0.5]
    assert build_steering_vector(h, w).tolist() == [0.5, 0.5]
    # raw: ([1, 0] + [3, 2] + 2·[5, 4]) / 4 = [14, 10] / 4 = [3.5, 2.5]
    assert build_steering_vector(h, w, center=False).tolist() == [3.5, 2.5]


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 12),
    dim=st.integers(1, 9),
    scale=st.floats(0.01, 100.0),
)
@settings(max_examples=40, deadline=None)
def test_build_steering_vector_properties(seed, n, dim, scale):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, dim)) * 5 + 3
    w = rng.uniform(0.0, 4.0, size=n)
    w[0] += 0.1  # positive sum
    u = build_steering_vector(torch.from_numpy(h), torch.from_numpy(w))
    # reference: entropy-weighted mean minus plain mean
    ref = (w[:, None] * h).sum(0) / w.sum() - h.mean(0)
    np.testing.assert_allclose(u.numpy(), ref, rtol=1e-5, atol=1e-5)
    # the entropy scale cancels (nats or bits give the same direction)
    u2 = build_steering_vector(torch.from_numpy(h), torch.from_numpy(w * scale))
    np.testing.assert_allclose(u2.numpy(), u.numpy(), rtol=1e-5, atol=1e-5)
    # equal entropies: no direction
    flat = build_steering_vector(torch.from_numpy(h), torch.full((n,), 0.7, dtype=torch.float64))
    assert float(flat.abs().max()) < 1e-4 * max(1.0, float(np.abs(h).max()))


@pytest.mark.parametrize(
    ("hidden", "weights", "match"),
    [
        (torch.zeros(3), torch.ones(3), r"\[N, H\]"),
        (torch.zeros(3, 2), torch.ones(4), "shape"),
        (torch.zeros(3, 2), torch.tensor([1.0, -1.0, 1.0]), "≥ 0"),
        (torch.zeros(3, 2), torch.zeros(3), "positive sum"),
        (torch.zeros(1, 2), torch.ones(1), "at least 2"),
        (torch.tensor([[math.nan, 0.0], [0.0, 0.0]]), torch.ones(2), "finite"),
    ],
)
def test_build_steering_vector_errors(hidden, weights, match):
    with pytest.raises(EntrolabError, match=match):
        build_steering_vector(hidden, weights)


def test_option_entropy_hand_computed():
    # options {1, 3}: equal logits → log 2; logits (log 3, 0) → p = (3/4, 1/4),
    # H = −(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623 nats. The other columns are ignored.
    z = torch.tensor([[9.0, 2.0, -5.0, 2.0], [0.0, math.log(3.0), 7.0, 0.0]])
    expect = [math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    torch.testing.assert_close(option_entropy(z, [1, 3]), torch.tensor(expect))
    with pytest.raises(EntrolabError, match="at least 2 distinct"):
        option_entropy(z, [1, 1])
    with pytest.raises(EntrolabError, match="outside the vocabulary"):
        option_entropy(z, [1, 4])


# ------------------------------------------------------------------------ hooks on a tiny model
@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model(num_layers=3, seed=1)
    prompts = ["hello", "a longer prompt here", "xyz 123"]
    return model, tok, [tok(p)["input_ids"] for p in prompts]


def _block_outputs(model, layer, ids):
    """Output of decoder block ``layer`` for one unpadded prompt, via output_hidden_states."""
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0], out.logits[0]  # [0] = embeddings


def test_collect_hidden_states_matches_output_hidden_states(tiny):
    model, tok, ids = tiny
    h, z = collect_hidden_states(model, tok, ids, 1, batch_size=2, return_logits=True)
    assert h.shape == (3, model.config.hidden_size)
    for i, s in enumerate(ids):  # batched and left-padded == one prompt at a time
        ref_h, ref_z = _block_outputs(model, 1, s)
        torch.testing.assert_close(h[i], ref_h[-1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(z[i], ref_z[-1], rtol=1e-5, atol=1e-5)
    ent = next_token_entropy(model, tok, ids)
    torch.testing.assert_close(ent, token_entropy(z), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_steer_adds_exactly_strength_times_vector(tiny, positions):
    model, _, ids = tiny
    layer, strength = 1, -2.5
    u = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    plain, plain_logits = _block_outputs(model, layer, ids[1])
    seen = []
    with steer(model, u, layer, strength, positions=positions):
        # registered after the steering hook, so it sees the steered output
        handle = decoder_layers(model)[layer].register_forward_hook(
            lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o)[0].clone())
        )
        try:
            steered_hidden, steered_logits = _block_outputs(model, layer, ids[1])
        finally:
            handle.remove()
    diff = seen[0] - plain
    expect = (strength * u).expand_as(diff).clone()
    if positions == "generated":  # only the last position of the pass
        expect[:-1] = 0.0
    torch.testing.assert_close(diff, expect, rtol=0, atol=1e-5)
    # output_hidden_states reports the steered state too (the steering hook runs first)
    torch.testing.assert_close(steered_hidden, seen[0])
    changed = (steered_logits - plain_logits).abs().amax(-1) > 1e-4
    assert bool(changed[-1])
    if positions == "generated":
        assert not bool(changed[:-1].any())


def test_steer_leaves_no_trace(tiny):
    model, _, ids = tiny
    params = {k: v.clone() for k, v in model.state_dict().items()}
    block = decoder_layers(model)[2]
    hooks_before = len(block._forward_hooks)
    _, before = _block_outputs(model, 2, ids[0])
    u = torch.ones(model.config.hidden_size)
    with steer(model, u, 2, 3.0):
        assert len(block._forward_hooks) == hooks_before + 1
        _, during = _block_outputs(model, 2, ids[0])
    with pytest.raises(RuntimeError, match="boom"), steer(model, u, 2, 3.0):
        raise RuntimeError("boom")
    _, after = _block_outputs(model, 2, ids[0])
    assert not torch.allclose(during, before)
    assert torch.equal(after, before)
    assert len(block._forward_hooks) == hooks_before
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    with steer(model, u, 2, 0.0):  # strength 0 is a no-op
        _, zero = _block_outputs(model, 2, ids[0])
    torch.testing.assert_close(zero, before, rtol=0, atol=1e-6)


def test_steer_with_generate_generated_positions(tiny):
    """With model.generate (KV cache), 'generated' steers the last prompt token and each new
    token: the first step's logits equal a full pass steered only at the last position."""
    model, tok, ids = tiny
    u = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    with steer(model, u, 0, 4.0, positions="generated"):
        out = model.generate(
            torch.tensor([ids[1]]),
            max_new_tokens=3,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
        )
        _, full = _block_outputs(model, 0, ids[1])
    torch.testing.assert_close(out.logits[0][0], full[-1], rtol=1e-5, atol=1e-5)
    _, plain = _block_outputs(model, 0, ids[1])
    assert not torch.allclose(out.logits[0][0], plain[-1], atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": 3}, r"layer must be an int in \[0, 2\]"),
        ({"vector": torch.zeros(7)}, "hidden size"),
        ({"vector": torch.full((64,), math.nan)}, "NaN"),
        ({"strength": math.inf}, "finite"),
        ({"positions": "prompt"}, "positions"),
    ],
)
def test_steer_errors(tiny, kwargs, match):
    model, _, _ = tiny
    before = [len(b._forward_hooks) for b in decoder_layers(model)]
    args = {"vector": torch.zeros(64), "layer": 1, "strength": 1.0, **kwargs}
    with pytest.raises(EntrolabError, match=match), steer(model, **args):
        pass
    assert [len(b._forward_hooks) for b in decoder_layers(model)] == before


def test_collect_errors(tiny):
    model, tok, ids = tiny
    with pytest.raises(EntrolabError, match="non-empty list"):
        collect_hidden_states(model, tok, "hello", 0)
    with pytest.raises(EntrolabError, match=r"prompt_ids\[1\]"):
        collect_hidden_states(model, tok, [ids[0], []], 0)
    with pytest.raises(EntrolabError, match="layer"):
        collect_hidden_states(model, tok, ids, -1)


# ----------------------------------------------------------------------- embedded model (SmolLM2)
def _mcq_prompts(tok, n_per_level: int, seed: int) -> list[list[int]]:
    """Arithmetic multiple choice (A–E, raw text, answer letter next): the "action" prompts."""
    rng = random.Random(seed)
    out = []
    for level in (1, 3, 4):
        for item in load_task("arithmetic", level=level).items(n=n_per_level, seed=seed):
            ans = int(item.answer)
            options = [ans + d for d in rng.sample([1, -1, 2, -2, 10, -10, 3], 4)] + [ans]
            rng.shuffle(options)
            body = "\n".join(f"{letter}) {o}" for letter, o in zip("ABCDE", options, strict=True))
            out.append(
                tok(f"Question: What is {item.meta['expression']}?\n{body}\nAnswer:")["input_ids"]
            )
    return out


@pytest.mark.model
def test_east_raises_and_lowers_entropy_on_held_out_prompts(smollm):
    model, tok = smollm.model, smollm.tokenizer
    layer = len(decoder_layers(model)) // 2  # 15 of 30
    letters = [tok(" " + c)["input_ids"][0] for c in "ABCDE"]
    train, held_out = _mcq_prompts(tok, 12, seed=0), _mcq_prompts(tok, 4, seed=1)  # 36 / 12
    hidden, logits = collect_hidden_states(model, tok, train, layer, return_logits=True)
    u = build_steering_vector(hidden, option_entropy(logits, letters))

    def entropies(vector, strength):
        with steer(model, vector, layer, strength):
            _, z = collect_hidden_states(model, tok, held_out, layer, return_logits=True)
        return option_entropy(z, letters).mean().item(), token_entropy(z).mean().item()

    beta = 40.0  # ‖β·u‖ ≈ 8, about the spread of the centred states at this layer
    neg, zero, pos = (entropies(u, s) for s in (-beta, 0.0, beta))
    assert neg[0] < zero[0] < pos[0]  # answer-letter entropy (the "action" distribution)
    assert neg[1] < zero[1] < pos[1]  # full next-token entropy
