"""One conformance set for every backend of the Backend protocol (backends/base.py).

In `.venv` it runs on MockBackend (scripted logits) and HFBackend (tiny random model); the
OpenAIBackend against a live `entrolab serve` and the VLLMBackend have their own suites
(tests/test_serve_live.py, tests/test_backend_vllm.py) that reuse :func:`check_contract`.
"""

from __future__ import annotations

import pytest
import torch

from entrolab.backends import MockBackend
from entrolab.backends.base import Backend, Capabilities, has, require
from entrolab.backends.decode import replay_step_hook
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.stopping import ConfidenceStopHook

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = ["a", "b", "c", "\n", "<eos>"]


def _mock() -> MockBackend:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(12, len(VOCAB), generator=g) * 2
    table[:, 4] = -4.0  # EOS is rare, so replies run a while
    return MockBackend(table, vocab=VOCAB, eos_id=4)


@pytest.fixture(params=["mock", "hf"])
def backend(request, tiny_backend):
    return _mock() if request.param == "mock" else tiny_backend


def check_contract(backend, prompts: list[str]) -> None:
    """The protocol's common contract (see the backends/base.py docstring)."""
    assert isinstance(backend, Backend)
    caps = backend.capabilities
    assert isinstance(caps, Capabilities)
    cfg = GenerationConfig(num_samples=3, max_new_tokens=6, temperature=1.0, topk_logprobs=2)
    a = backend.generate(prompts, cfg)
    # ordered by prompt then sample; one trace per (prompt, sample)
    assert [(t.prompt_index, t.sample_index) for t in a] == [
        (i, s) for i in range(len(prompts)) for s in range(3)
    ]
    for t in a:
        assert 1 <= len(t) <= 6
        assert t.finish_reason in ("eos", "length", "stop")
        assert (t.finish_reason == "length") == (len(t) == 6 and t.finish_reason != "eos")
        assert t.provenance.vocab == ("full" if caps.full_logits else "topk")
        assert t.topk_logprobs.shape == (len(t), 2)
        assert bool((t.logprob <= 1e-6).all()) and bool((t.entropy >= -1e-6).all())
    # the same seed gives the same samples; another seed other samples
    b = backend.generate(prompts, cfg)
    assert [t.token_ids.tolist() for t in a] == [t.token_ids.tolist() for t in b]
    c = backend.generate(prompts, GenerationConfig(**{**cfg.to_dict(), "seed": 1}))
    assert [t.token_ids.tolist() for t in a] != [t.token_ids.tolist() for t in c]
    # greedy: every sample identical, each token the most likely one
    g = backend.generate(prompts[:1], GenerationConfig(num_samples=2, temperature=0.0,
                                                       max_new_tokens=5, topk_logprobs=1))  # fmt: skip
    assert g[0].token_ids.tolist() == g[1].token_ids.tolist()
    assert torch.equal(g[0].topk_ids[:, 0], g[0].token_ids)
    # teacher-forced scoring of the greedy reply gives back its log-probs
    if caps.scoring:
        s = backend.score(prompts[:1], [g[0].token_ids.tolist()], k=1)
        assert s[0].finish_reason == "scored"
        torch.testing.assert_close(s[0].logprob, g[0].logprob, rtol=1e-4, atol=1e-4)
    # bad input names the problem
    with pytest.raises(EntrolabError):
        backend.generate([], cfg)


def test_contract(backend) -> None:
    check_contract(backend, ["Say abc.", "What is 2 + 2?"])


def test_stop_strings_cut_the_text_and_set_the_finish_reason(backend) -> None:
    # sample freely (seeded), then stop at a piece that occurs mid-reply: the same sample ends
    # at that token
    cfg = GenerationConfig(temperature=1.0, max_new_tokens=10, topk_logprobs=1, seed=3)
    free = backend.generate(["Go."], cfg)[0]

    # the first token (after the first) whose piece first occurs in the text at that token
    def first_seen_at(i: int) -> bool:
        text, piece = "".join(free.tokens[: i + 1]), free.tokens[i]
        return bool(piece) and text.find(piece) == len(text) - len(piece)

    at = next(i for i in range(1, len(free) - 1) if first_seen_at(i))
    stop = free.tokens[at]
    cut = backend.generate(["Go."], GenerationConfig(**{**cfg.to_dict(), "stop": (stop,)}))[0]
    assert cut.finish_reason == "stop"
    assert cut.token_ids.tolist() == free.token_ids[: at + 1].tolist()  # the stop token kept
    assert cut.text == "".join(free.tokens[:at])  # the text cut before the stop string


def test_require_names_the_backend_and_the_fix(tiny_backend) -> None:
    mock = _mock()
    assert has(tiny_backend, "hidden_states") and not has(mock, "hidden_states")
    with pytest.raises(
        EntrolabError, match=r"LYNX exits needs hidden states.*'mock' \(MockBackend\).*HFBackend"
    ):
        require(mock, "hidden_states", "LYNX exits")
    with pytest.raises(EntrolabError, match="unknown capability"):
        has(mock, "telepathy")


def test_token_id_prompts_equal_their_text_prompts(tiny_backend) -> None:
    cfg = GenerationConfig(num_samples=2, max_new_tokens=5, temperature=1.0)
    ids = tiny_backend.prompt_ids("Hello there", chat_template=cfg.chat_template)
    by_text = tiny_backend.generate(["Hello there"], cfg)
    by_ids = tiny_backend.generate([ids], cfg)
    assert [t.token_ids.tolist() for t in by_text] == [t.token_ids.tolist() for t in by_ids]
    with pytest.raises(EntrolabError, match="outside the vocabulary"):
        tiny_backend.generate([[10**9]], cfg)


def test_replayed_step_hook_equals_the_online_rule(tiny_backend) -> None:
    """A backend without step hooks gets the same stopped traces by replay (DeepConf's rule)."""
    cfg = GenerationConfig(num_samples=4, max_new_tokens=16, temperature=1.0, topk_logprobs=5)
    prompts = ["One", "Two"]
    free = list(tiny_backend.generate(prompts, cfg))
    # a threshold inside the range of window confidences, so some rows stop and some do not
    conf = torch.cat([-t.topk_logprobs.mean(-1) for t in free])
    threshold = float(conf.quantile(0.5))
    online = tiny_backend.generate(
        prompts, cfg, step_hook=ConfidenceStopHook(threshold, 3, 5, num_samples=4)
    )
    replayed = replay_step_hook(free, ConfidenceStopHook(threshold, 3, 5, num_samples=4), 4)
    assert [t.finish_reason for t in online] == [t.finish_reason for t in replayed]
    assert any(t.finish_reason == "stopped" for t in online)
    for o, r in zip(online, replayed, strict=True):
        assert o.token_ids.tolist() == r.token_ids.tolist() and o.text == r.text
        torch.testing.assert_close(o.logprob, r.logprob)
