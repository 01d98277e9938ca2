"""Continuous batching in the one decode loop: rows joining a running decode get the tokens they
get alone (greedy and seeded sampling; tiny model and the embedded model), merged KV caches give
the logits of the separate caches, cancelled and finished rows leave without touching others."""

from __future__ import annotations

import pytest
import torch

from entrolab.config import GenerationConfig
from entrolab.decoding.loop import DecodeEngine, merge_states, prefill

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _feed(model, state, tokens):
    """Feed one token per row (as the engine does) and return the next logits [R, V]."""
    from entrolab.decoding.loop import _forward

    state.attention = torch.cat([state.attention, torch.ones(len(tokens), 1, dtype=torch.int64)], 1)
    logits = _forward(model, state, torch.tensor(tokens)[:, None], state.next_pos[:, None])
    state.next_pos = state.next_pos + 1
    return logits


@torch.inference_mode()
def test_a_merged_cache_gives_each_row_its_own_logits(tiny_backend):
    model, pad = tiny_backend.model, tiny_backend.pad_id
    a_prompts, b_prompts = [[5, 6, 7, 8, 9], [10, 11]], [[20, 21, 22, 23, 24, 25, 26, 27, 28]]
    # reference: each batch alone, a fed 3 tokens, b fed 1 token
    ra, _ = prefill(model, a_prompts, pad_id=pad, capacity=8)
    for t in (40, 41, 42):
        ref_a = _feed(model, ra, [t, t])
    rb, _ = prefill(model, b_prompts, pad_id=pad, capacity=8)
    ref_b = _feed(model, rb, [50])
    # the same, then merged (b has fewer filled slots: 9 + 1 = 10 vs a's 5 + 3 = 8, so a is
    # the one left-padded), then one more token each
    sa, _ = prefill(model, a_prompts, pad_id=pad, capacity=8)
    for t in (40, 41, 42):
        _feed(model, sa, [t, t])
    sb, _ = prefill(model, b_prompts, pad_id=pad, capacity=8)
    _feed(model, sb, [50])
    merged = merge_states(sa, sb)
    # a's rows: 2 masked slots on the left (fill 10 vs 8); b's row unchanged
    assert merged.attention.shape == (3, 10) and merged.attention[:2, :2].sum() == 0
    assert merged.next_pos.tolist() == [8, 5, 10] and merged.prompt_width == -1
    got = _feed(model, merged, [60, 61, 62])
    want_a = _feed(model, ra, [60, 61])
    want_b = _feed(model, rb, [62])
    torch.testing.assert_close(got[:2], want_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2:], want_b, rtol=1e-5, atol=1e-5)
    assert ref_a.shape[0] == 2 and ref_b.shape[0] == 1


def _joined_vs_alone(backend, requests, join_after: int):
    """Run request 0 alone in an engine for ``join_after`` steps, then add the others; return
    (joined traces per request, alone traces per request, the later requests' batch meta)."""
    engine = backend.engine()
    handles = [engine.add([requests[0][0]], requests[0][1], seeds=[requests[0][2]])]
    done: dict[int, list] = {}
    for _ in range(join_after):
        done.update(engine.step())
    handles += [engine.add([p], c, seeds=[s]) for p, c, s in requests[1:]]
    while not engine.idle:
        done.update(engine.step())
    joined = [done[h] for h in handles]
    alone = [list(backend.generate([p], c, seeds=[s])) for p, c, s in requests]
    return joined, alone


def _check_equal(joined, alone):
    for got, want in zip(joined, alone, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.token_ids.tolist() == w.token_ids.tolist()
            assert g.text == w.text and g.finish_reason == w.finish_reason
            assert g.logprob.tolist() == pytest.approx(w.logprob.tolist(), abs=1e-4)


def test_requests_joining_a_running_decode_get_their_solo_tokens_tiny(tiny_backend):
    greedy = GenerationConfig(max_new_tokens=20, temperature=0.0, topk_logprobs=3)
    sampled = GenerationConfig(max_new_tokens=9, temperature=0.9, top_p=0.95, num_samples=3)
    short = GenerationConfig(max_new_tokens=4, temperature=0.7, stop=("a",))
    requests = [
        ("a long running request", greedy, 1),
        ("joins", sampled, 7),
        ("a third prompt, longer than the first one", short, 3),
        ("greedy too", greedy, 0),
    ]
    joined, alone = _joined_vs_alone(tiny_backend, requests, join_after=6)
    _check_equal(joined, alone)
    metas = [t[0].meta["batch"] for t in joined]
    assert metas[0]["running_rows_at_join"] == 0 and metas[0]["engine_step"] == 0
    assert all(m["running_rows_at_join"] == 1 and m["engine_step"] == 6 for m in metas[1:])


def test_requests_joining_a_running_decode_get_their_solo_tokens_embedded(smollm):
    greedy = GenerationConfig(max_new_tokens=10, temperature=0.0)
    sampled = GenerationConfig(max_new_tokens=8, temperature=0.8, num_samples=2)
    requests = [
        ("Name three colours.", greedy, 0),
        ("What is 7 times 8?", sampled, 11),
        ("Write a haiku about the sea, please, in English.", greedy, 0),
    ]
    joined, alone = _joined_vs_alone(smollm, requests, join_after=3)
    _check_equal(joined, alone)


def test_cancelled_and_finished_requests_leave_without_touching_the_others(tiny_backend):
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.8)
    engine = tiny_backend.engine()
    keep = engine.add(["stay"], cfg, seeds=[5])
    drop = engine.add(["go away"], cfg, seeds=[6])
    tick = []
    first = engine.add(["short"], GenerationConfig(max_new_tokens=2), seeds=[1],
                       on_tokens=lambda rows, step, buf: tick.append((rows.tolist(), step)))  # fmt: skip
    out = dict(engine.step())
    engine.cancel(drop)
    while not engine.idle:
        out.update(engine.step())
    assert drop not in out and set(out) == {keep, first}
    assert tick == [([0], 0), ([0], 1)]  # one callback per step with the token's row
    assert out[keep][0].token_ids.tolist() == (
        tiny_backend.generate(["stay"], cfg, seeds=[5])[0].token_ids.tolist()
    )
    assert engine.loop.state.attention.shape[0] == 1  # only the last live row stayed


def test_engine_rejects_bad_input_before_it_joins(tiny_backend):
    from entrolab.errors import EntrolabError

    engine = DecodeEngine(tiny_backend.model, pad_id=0)
    with pytest.raises(EntrolabError, match="at least one token"):
        engine.add([[]], lambda a, s, x: (x.argmax(-1), torch.ones_like(a, dtype=torch.bool)),
                   max_new_tokens=2)  # fmt: skip
    with pytest.raises(EntrolabError, match="max_new_tokens"):
        engine.add([[1]], lambda a, s, x: (x.argmax(-1), a > 0), max_new_tokens=0)
    assert engine.idle and tiny_backend.capabilities.continuous_batching
