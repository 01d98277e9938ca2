"""Generation hooks: per-step stopping rules, sample offsets and sampler diagnostics."""

import math

import pytest
import torch

from entrolab.backends import HFBackend, MockBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.signals import truncation_statistics


def _stop_when_entropy_below(threshold: float, calls: list | None = None):
    def hook(rows, step, stats):
        if calls is not None:
            calls.append((rows.tolist(), step))
        return stats.entropy < threshold

    return hook


def test_stopped_rows_end_at_the_first_step_the_hook_fires(tiny_backend: HFBackend):
    config = GenerationConfig(num_samples=3, max_new_tokens=12, temperature=1.0, seed=5)
    free = tiny_backend.generate(["ab", "cde"], config)
    # The threshold sits between the entropies actually seen, so some rows stop and some not.
    ent = torch.cat([t.entropy for t in free])
    threshold = float(ent.quantile(0.2))
    stopped = tiny_backend.generate(
        ["ab", "cde"], config, step_hook=_stop_when_entropy_below(threshold)
    )
    n_stopped = 0
    for f, s in zip(free, stopped, strict=True):
        below = (f.entropy < threshold).nonzero().flatten().tolist()
        eos_len = len(f) if f.finish_reason == "eos" else math.inf
        if below and below[0] + 1 < eos_len:
            # same draws up to the stop, and the stop keeps the token that triggered it
            assert s.finish_reason == "stopped"
            assert len(s) == below[0] + 1
            assert s.token_ids.tolist() == f.token_ids[: below[0] + 1].tolist()
            n_stopped += 1
        else:
            assert s.token_ids.tolist() == f.token_ids.tolist()
            assert s.finish_reason == f.finish_reason
    assert 0 < n_stopped < len(free)


def test_stopping_is_the_same_batched_and_one_row_at_a_time(tiny_backend: HFBackend):
    hook = _stop_when_entropy_below(5.45)
    config = GenerationConfig(num_samples=4, max_new_tokens=10, temperature=1.2, seed=1)
    together = tiny_backend.generate(["xy", "hello"], config, step_hook=hook)
    apart = tiny_backend.generate(
        ["xy", "hello"], GenerationConfig(**{**config.to_dict(), "batch_size": 1}), step_hook=hook
    )
    assert [t.token_ids.tolist() for t in together] == [t.token_ids.tolist() for t in apart]
    assert [t.finish_reason for t in together] == [t.finish_reason for t in apart]


def test_the_hook_sees_call_global_rows_of_active_sequences_only(tiny_backend: HFBackend):
    calls: list = []
    config = GenerationConfig(num_samples=2, max_new_tokens=3, temperature=1.0, batch_size=3)
    # rows are prompt * 2 + sample: 0, 1 | 2, 3 — split over two batches of 3 and 1 rows
    tiny_backend.generate(["a", "b"], config, step_hook=_stop_when_entropy_below(-1.0, calls))
    assert calls[:3] == [([0, 1, 2], 0), ([0, 1, 2], 1), ([0, 1, 2], 2)]
    assert calls[3:] == [([3], 0), ([3], 1), ([3], 2)]


def test_a_hook_returning_the_wrong_shape_is_a_clear_error(tiny_backend: HFBackend):
    with pytest.raises(EntrolabError, match="one flag per active row"):
        tiny_backend.generate(
            ["a"], GenerationConfig(max_new_tokens=2), step_hook=lambda r, s, st: True
        )


def test_sample_offset_continues_the_same_sample_sequence(tiny_backend: HFBackend):
    config = GenerationConfig(num_samples=5, max_new_tokens=6, temperature=1.0, seed=3)
    all_five = tiny_backend.generate(["q1", "q2"], config)
    later = tiny_backend.generate(
        ["q1", "q2"], GenerationConfig(**{**config.to_dict(), "num_samples": 2}), sample_offset=3
    )
    expected = [t for t in all_five if t.sample_index >= 3]
    assert [t.sample_index for t in later] == [3, 4, 3, 4]
    assert [t.token_ids.tolist() for t in later] == [t.token_ids.tolist() for t in expected]


def test_sampler_diagnostics_count_what_top_k_kept(tiny_backend: HFBackend):
    config = GenerationConfig(num_samples=2, max_new_tokens=5, temperature=0.8, top_k=7)
    for t in tiny_backend.generate(["abc"], config):
        assert t.meta["kept_mean"] == pytest.approx(7.0)
        assert 0 < t.meta["retained_mass_mean"] < 1
        assert 0 < t.meta["entropy_after_mean"] < math.log(7) + 1e-6
    plain = tiny_backend.generate(["abc"], GenerationConfig(max_new_tokens=3, temperature=1.0))[0]
    assert plain.meta["kept_mean"] == tiny_backend.vocab_size
    assert plain.meta["retained_mass_mean"] == pytest.approx(1.0, abs=1e-6)
    greedy = tiny_backend.generate(["abc"], GenerationConfig(max_new_tokens=3, temperature=0))[0]
    assert "kept_mean" not in greedy.meta


def test_truncation_statistics_by_hand():
    # before: logits log([0.5, 0.25, 0.25]); after keeps the first two tokens.
    before = torch.tensor([[0.5, 0.25, 0.25]]).log()
    after = before.clone()
    after[0, 2] = float("-inf")
    st = truncation_statistics(before, after)
    assert st.kept.tolist() == [2]
    assert st.retained_mass.item() == pytest.approx(0.75, abs=1e-7)  # 0.5 + 0.25
    # renormalised kept set is [2/3, 1/3]: H = -(2/3 ln 2/3 + 1/3 ln 1/3) = 0.636514168...
    assert st.entropy_after.item() == pytest.approx(0.6365141683, abs=1e-6)
    with pytest.raises(EntrolabError, match="removed every token"):
        truncation_statistics(before, torch.full_like(before, float("-inf")))


def test_mock_backend_applies_the_same_hook_rule():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mock = MockBackend(logits)
    # entropy of step 1 (uniform over 3) is ln 3 = 1.0986 > 1.0; the hook stops there
    hook = lambda rows, step, st: st.entropy > 1.0  # noqa: E731
    config = GenerationConfig(temperature=0, max_new_tokens=4, topk_logprobs=2)
    traces = mock.generate(["p"], config, step_hook=hook)
    assert len(traces[0]) == 2 and traces[0].finish_reason == "stopped"


def test_generation_config_rejects_bad_sampler_settings():
    with pytest.raises(EntrolabError, match="sampler_params"):
        GenerationConfig(sampler="top_h", sampler_params=[("alpha", 0.4)])  # type: ignore[arg-type]
    with pytest.raises(EntrolabError, match="sampler must be"):
        GenerationConfig(sampler="")
    cfg = GenerationConfig(sampler="top_h", sampler_params={"alpha": 0.4})
    assert GenerationConfig.from_dict(cfg.to_dict()) == cfg
