"""Online early stopping: the window rule on scripted confidences (hand-computed), its replay,
the backend step hook (MockBackend scripted logits; tiny HFBackend batched vs unbatched) and the
transformers StoppingCriteria; DeepConf-low/-high thresholds."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.backends import HFBackend, MockBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.stopping import (
    ConfidenceStopHook,
    DeepConfStoppingCriteria,
    WindowStopRule,
    first_stop_index,
    fit_threshold,
)
from entrolab.inference.voting import token_confidences
from entrolab.signals import TokenStatistics


def _feed(rule: WindowStopRule, row: int, confs) -> int:
    """Feed one row step by step; the step at which it stops (−1 = never)."""
    for t, c in enumerate(confs):
        if bool(rule.update(torch.tensor([row]), torch.tensor([c]))[0]):
            return t
    return -1


def test_window_rule_stops_at_first_full_window_below_threshold():
    # window 3, threshold 3.5:
    # A: t0, t1 are low but the window is not full yet; t2: (0.125 + 0.125 + 9)/3 = 3.083 → stop
    # B: t2 5; t3 (5+5+1)/3 = 3.667; t4 (5+1+5)/3 = 3.667; t5 (1+5+1)/3 = 2.333 → stop at 5
    # C: every full window is exactly 3.5: not *below* the threshold → never stops
    rule = WindowStopRule(threshold=3.5, window=3)
    assert _feed(rule, 0, [0.125, 0.125, 9.0, 5.0]) == 2
    assert _feed(rule, 7, [5.0, 5.0, 5.0, 1.0, 5.0, 1.0, 1.0]) == 5
    assert _feed(rule, 3, [3.5] * 6) == -1
    # rows are independent and interleaved updates see only their own history
    rule = WindowStopRule(3.5, 3)
    a, b = [0.125, 0.125, 9.0], [5.0, 5.0, 5.0]
    rows = torch.tensor([0, 1])
    out = [rule.update(rows, torch.tensor([x, y])).tolist() for x, y in zip(a, b, strict=True)]
    assert out == [[False, False], [False, False], [True, False]]
    rule.reset(torch.tensor([0]))
    assert _feed(rule, 0, [9.0, 9.0]) == -1  # history forgotten: the window is not full


def test_window_rule_per_row_thresholds():
    rule = WindowStopRule(0.0, 2)
    rows, thr = torch.tensor([0, 1]), torch.tensor([2.0, 4.0])
    rule.update(rows, torch.tensor([3.0, 3.0]), thr)
    # both windows are (3 + 3)/2 = 3: below 4 (row 1) but not below 2 (row 0)
    assert rule.update(rows, torch.tensor([3.0, 3.0]), thr).tolist() == [False, True]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(0, 64).map(lambda x: x / 8), min_size=0, max_size=20),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 6),
    st.integers(0, 48).map(lambda x: x / 8),
)
def test_replay_matches_the_online_rule_and_brute_force(rows, window, threshold):
    t_max = max(len(r) for r in rows)
    conf = torch.zeros(len(rows), t_max, dtype=torch.float64)
    mask = torch.zeros(len(rows), t_max, dtype=torch.bool)
    for i, r in enumerate(rows):
        conf[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
        mask[i, : len(r)] = True
    got = first_stop_index(conf, mask, threshold, window).tolist()
    for i, r in enumerate(rows):
        brute = next(
            (
                t
                for t in range(window - 1, len(r))
                if sum(r[t - window + 1 : t + 1]) / window < threshold
            ),
            -1,
        )
        assert got[i] == brute == _feed(WindowStopRule(threshold, window), 0, r)


def _stats(confs) -> TokenStatistics:
    """Statistics whose 20 top-k logprobs are all −c, so the DeepConf confidence is c."""
    c = torch.tensor(confs, dtype=torch.float32)
    r = c.numel()
    z = torch.zeros(r)
    return TokenStatistics(
        z, z, z, z, torch.zeros(r, dtype=torch.int64), torch.zeros(r, 20, dtype=torch.int64),
        (-c).unsqueeze(1).expand(r, 20).clone(),
    )  # fmt: skip


def test_step_hook_on_scripted_statistics_with_per_prompt_thresholds():
    # 2 prompts × 2 samples: rows 0, 1 → prompt 0 (threshold 3), rows 2, 3 → prompt 1 (threshold 5)
    hook = ConfidenceStopHook([3.0, 5.0], window=2, k=20, num_samples=2)
    rows = torch.tensor([0, 1, 2, 3])
    assert hook(rows, 0, _stats([4.0, 2.0, 4.0, 6.0])).tolist() == [False] * 4  # not full
    # windows: row0 (4+4)/2 = 4 ≥ 3; row1 (2+2)/2 = 2 < 3; row2 (4+4)/2 = 4 < 5; row3 6 ≥ 5
    assert hook(rows, 1, _stats([4.0, 2.0, 4.0, 6.0])).tolist() == [False, True, True, False]
    assert hook.stopped == {1: 1, 2: 1}
    # a new call: rows at step 0 start fresh
    assert hook(torch.tensor([1]), 0, _stats([0.5])).tolist() == [False]
    assert hook.stopped == {2: 1}
    with pytest.raises(EntrolabError, match="thresholds were given"):
        hook(torch.tensor([4]), 0, _stats([1.0]))
    with pytest.raises(EntrolabError, match="topk_logprobs=30"):
        ConfidenceStopHook(1.0, 2, k=30)(torch.tensor([0]), 0, _stats([1.0]))


# ---------------------------------------------------------------- MockBackend (scripted logits)
_V = 20
_U = torch.zeros(_V)  # uniform: C = log 20 = 2.995732
_P = torch.cat([torch.tensor([10.0]), torch.zeros(_V - 1)])  # C = log(e^10 + 19) − 10/20 = 9.500862


def test_mock_backend_trace_stops_exactly_at_first_window_below_threshold():
    script = torch.stack([_P, _P, _U, _P, _U, _U, _P, _P])
    backend = MockBackend(script)
    config = GenerationConfig(temperature=0, max_new_tokens=8, topk_logprobs=20)
    # window 3: t2 (2P + U)/3 = 7.332, t3 (P + U + P)/3 = 7.332, t4 (U + P + U)/3 = 5.164 < 6
    out = backend.generate("q", config, step_hook=ConfidenceStopHook(6.0, window=3))
    assert out[0].finish_reason == "stopped" and len(out[0]) == 5
    conf, _ = token_confidences(list(out))
    assert conf[0].tolist() == pytest.approx(
        [9.500862, 9.500862, 2.995732, 9.500862, 2.995732], abs=1e-6
    )
    # a threshold just under 5.164 lets it run to the length cap
    out = backend.generate("q", config, step_hook=ConfidenceStopHook(5.1, window=3))
    assert out[0].finish_reason == "length" and len(out[0]) == 8


# --------------------------------------------------------------------- tiny HFBackend batching
SEEDS = [11, 12, 13]


@pytest.fixture(scope="module")
def free_and_threshold(tiny_backend: HFBackend):
    prompts = ["ab", "cde", "12+3"]
    config = GenerationConfig(num_samples=2, max_new_tokens=12, temperature=1.0)
    free = list(tiny_backend.generate(prompts, config, seeds=SEEDS))
    conf, mask = token_confidences(free)
    # median of the traces' lowest 4-token window: about half of them must stop
    lowest = [
        min(conf[i, t : t + 4].mean().item() for t in range(int(mask[i].sum()) - 3))
        for i in range(len(free))
    ]
    return prompts, config, free, float(np.median(lowest))


def test_hook_stops_where_replay_says_and_keeps_the_draws(tiny_backend, free_and_threshold):
    prompts, config, free, threshold = free_and_threshold
    stopped = list(
        tiny_backend.generate(
            prompts, config, seeds=SEEDS, step_hook=ConfidenceStopHook(threshold, 4)
        )
    )
    conf, mask = token_confidences(free)
    idx = first_stop_index(conf, mask, threshold, 4).tolist()
    n_stop = 0
    for f, s, i in zip(free, stopped, idx, strict=True):
        if i >= 0 and not (f.finish_reason == "eos" and i == len(f) - 1):
            n_stop += 1
            assert (s.finish_reason, len(s)) == ("stopped", i + 1)
            assert s.token_ids.tolist() == f.token_ids[: i + 1].tolist()
        else:
            assert s.token_ids.tolist() == f.token_ids.tolist()
            assert s.finish_reason == f.finish_reason
    assert 0 < n_stop < len(free)


def test_batched_generation_with_stopping_equals_unbatched(tiny_backend, free_and_threshold):
    prompts, config, _, threshold = free_and_threshold
    batched = list(
        tiny_backend.generate(
            prompts, config, seeds=SEEDS, step_hook=ConfidenceStopHook(threshold, 4)
        )
    )
    # every trace alone: batch of one row, its own prompt, sample s drawn via sample_offset
    one = GenerationConfig(**{**config.to_dict(), "num_samples": 1, "batch_size": 1})
    alone = [
        tiny_backend.generate(
            [p], one, seeds=[SEEDS[i]], step_hook=ConfidenceStopHook(threshold, 4), sample_offset=s
        )[0]
        for i, p in enumerate(prompts)
        for s in range(config.num_samples)
    ]
    assert [t.finish_reason for t in batched] == [t.finish_reason for t in alone]
    assert [t.token_ids.tolist() for t in batched] == [t.token_ids.tolist() for t in alone]
    assert [t.sample_index for t in batched] == [t.sample_index for t in alone]
    survivors = [t for t in batched if t.finish_reason != "stopped"]
    assert 0 < len(survivors) < len(batched)


# ------------------------------------------------------------------ transformers StoppingCriteria
def test_hf_stopping_criteria_stops_rows_where_replay_says(tiny_backend: HFBackend):
    model, tok = tiny_backend.model, tiny_backend.tokenizer
    tok.padding_side = "left"
    enc = tok(["ab", "hello", "12+3", "xyz"], return_tensors="pt", padding=True)
    kw = dict(
        **enc,
        do_sample=True,
        top_k=0,
        max_new_tokens=14,
        pad_token_id=tok.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    torch.manual_seed(0)
    free = model.generate(**kw)
    raw = torch.stack(free.logits, 1)  # [B, T, V] raw logits of every step
    eos = model.generation_config.eos_token_id
    assert not (free.sequences[:, enc["input_ids"].shape[1] :] == eos).any()  # all run to the cap
    lp = torch.topk(torch.log_softmax(raw.float(), -1), 20, -1).values
    from entrolab.inference.voting import token_confidence

    conf = token_confidence(lp, 20)  # [B, T]
    lowest = conf.unfold(1, 4, 1).mean(-1).amin(-1)
    threshold = float(lowest.min() + lowest.max()) / 2  # some rows stop, some do not
    idx = first_stop_index(conf, None, threshold, 4).tolist()
    crit = DeepConfStoppingCriteria(threshold, window=4)
    torch.manual_seed(0)
    out = model.generate(**kw, logits_processor=[crit.processor], stopping_criteria=[crit])
    n_prompt = enc["input_ids"].shape[1]
    gen = out.sequences[:, n_prompt:]
    assert crit.stopped == {r: i for r, i in enumerate(idx) if i >= 0}
    assert 0 < len(crit.stopped) < len(idx)
    for r, i in enumerate(idx):
        if i >= 0:  # the same draws up to the stop, padding afterwards
            assert (
                gen[r, : i + 1].tolist() == free.sequences[r, n_prompt : n_prompt + i + 1].tolist()
            )
            assert (gen[r, i + 1 :] == tok.pad_token_id).all()
        else:
            assert gen[r].tolist() == free.sequences[r, n_prompt:].tolist()
    # a second generate call starts from a clean state
    torch.manual_seed(0)
    model.generate(**kw, logits_processor=[crit.processor], stopping_criteria=[crit])
    assert crit.stopped == {r: i for r, i in enumerate(idx) if i >= 0}


def test_hf_stopping_criteria_needs_the_step_logits():
    crit = DeepConfStoppingCriteria(1.0, window=2)
    with pytest.raises(EntrolabError, match="logits_processor=\\[criteria.processor\\]"):
        crit(torch.zeros(2, 3, dtype=torch.long), None)
    # with processed scores (output_scores=True) it falls back to them
    scores = (torch.zeros(2, 30),)
    assert crit(torch.zeros(2, 3, dtype=torch.long), scores).tolist() == [False, False]
    # uniform over 30 tokens: C = log 30 = 3.401 per step; window (2 steps) mean 3.401 ≥ 1
    assert crit(torch.zeros(2, 4, dtype=torch.long), scores).tolist() == [False, False]


# ------------------------------------------------------------------------------- thresholds
def test_deepconf_low_and_high_thresholds_match_numpy_percentiles():
    lowest = [12.5, 13.0, 15.25, 14.0, 16.5, 13.75, 18.0, 15.0]
    assert fit_threshold(lowest, "low") == pytest.approx(np.percentile(lowest, 90), abs=1e-12)
    assert fit_threshold(lowest, "high") == pytest.approx(np.percentile(lowest, 10), abs=1e-12)
    # sorted: 12.5 13 13.75 14 15 15.25 16.5 18; 90th: pos 6.3 → 16.5 + 0.3·1.5 = 16.95
    assert fit_threshold(lowest, "low") == pytest.approx(16.95, abs=1e-12)
    assert fit_threshold(torch.tensor(lowest), percentile=50) == pytest.approx(14.5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_threshold([], "low"), "no warm-up confidences"),
        (lambda: fit_threshold([1.0], "medium"), "'low' or 'high'"),
        (lambda: WindowStopRule(1.0, 0), "positive int"),
        (lambda: WindowStopRule(math.nan, 3), "NaN"),
        (
            lambda: WindowStopRule(1.0, 2).update(torch.tensor([0]), torch.tensor([math.inf])),
            "NaN/inf",
        ),
        (lambda: ConfidenceStopHook([], 2), "empty list"),
        (lambda: first_stop_index(torch.zeros(2, 2, 2), None, 1.0, 1), r"\[T\] or \[N, T\]"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(EntrolabError, match=match):
        call()
