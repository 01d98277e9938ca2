"""Mock backend: scripted logits produce exactly predictable traces."""

import math

import pytest
import torch

from entrolab.backends import MockBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError


def test_greedy_follows_the_script_and_stops_at_eos():
    # step 0: p = [1/4, 3/4, 0] (logits 0, ln 3, -inf) -> greedy picks 1
    # step 1: uniform over 3 tokens, argmax ties -> token 0; step 2: EOS (token 2) certain
    script = torch.tensor(
        [[0.0, math.log(3), -math.inf], [0.0, 0.0, 0.0], [-50.0, -50.0, 0.0], [0.0, 9.0, 0.0]]
    )
    backend = MockBackend(script, vocab=["a", "b", "<eos>"], eos_id=2)
    t = backend.generate("q", GenerationConfig(temperature=0, topk_logprobs=2))[0]
    assert t.token_ids.tolist() == [1, 0, 2] and t.finish_reason == "eos"
    assert t.text == "ba" and t.tokens == ("b", "a", "<eos>")
    # H0 = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351; H1 = ln 3 = 1.0986123
    assert t.entropy[0].item() == pytest.approx(0.5623351446, abs=1e-6)
    assert t.entropy[1].item() == pytest.approx(math.log(3), abs=1e-6)
    assert t.logprob[0].item() == pytest.approx(math.log(0.75), abs=1e-6)
    assert t.topk_ids[0].tolist() == [1, 0]


def test_sampling_is_seeded_per_row_and_callable_scripts_see_the_prefix():
    seen = []

    def script(i, step, prefix):
        seen.append((i, step, tuple(prefix)))
        return torch.zeros(4)

    backend = MockBackend(script, vocab=list("abcd"))
    cfg = GenerationConfig(num_samples=3, max_new_tokens=6, seed=11, topk_logprobs=4)
    a = backend.generate(["p", "q"], cfg)
    b = backend.generate(["p", "q"], cfg)
    assert [t.text for t in a] == [t.text for t in b]
    assert len({t.text for t in a}) > 1  # uniform sampling over 4 tokens: samples differ
    assert all(len(t) == 6 for t in a) and all(t.finish_reason == "length" for t in a)
    assert seen[1] == (0, 1, (a[0].token_ids[0].item(),))


def test_bad_scripts_are_rejected():
    with pytest.raises(EntrolabError, match="must be \\[T, V\\]"):
        MockBackend(torch.zeros(3))
    with pytest.raises(EntrolabError, match="needs `vocab`"):
        MockBackend(lambda i, s, p: torch.zeros(2))
    with pytest.raises(EntrolabError, match="vocab has 2 strings but logits have V=3"):
        MockBackend(torch.zeros(2, 3), vocab=["a", "b"])
    with pytest.raises(EntrolabError, match="NaN"):
        MockBackend(torch.tensor([[0.0, math.nan]])).generate(
            "q", GenerationConfig(topk_logprobs=1)
        )
