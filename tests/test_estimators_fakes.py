"""A prompt-scripted fake backend for the estimator tests (generate + score), and its own checks.

``FakeBackend(policy)``: ``policy(prompt, step, prefix_ids) -> logits [V]`` over :data:`VOCAB`.
Generation reuses :class:`~entrolab.backends.MockBackend` (same sampling, seeding and statistics
code as the HF backend); ``score`` teacher-forces completions through the same policy. Every
call is recorded in ``calls`` so tests can count generations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
import torch

from entrolab.backends import MockBackend
from entrolab.config import GenerationConfig
from entrolab.signals import token_statistics
from entrolab.types import Provenance, Trace, TraceBatch

VOCAB = [
    "<eos>",
    *[str(d) for d in range(10)],
    " ",
    "True",
    "False",
    "%",
    "x",
    "Confidence: ",
    "likely",
    "unlikely",
]
EOS = 0
TOK = {s: i for i, s in enumerate(VOCAB)}
Policy = Callable[[str, int, list[int]], torch.Tensor]


def tokenize(text: str) -> list[int]:
    """Greedy longest-match tokenisation over VOCAB (unknown characters → "x")."""
    ids, i = [], 0
    pieces = sorted((p for p in VOCAB if p != "<eos>"), key=len, reverse=True)
    while i < len(text):
        for p in pieces:
            if text.startswith(p, i):
                ids.append(TOK[p])
                i += len(p)
                break
        else:
            ids.append(TOK["x"])
            i += 1
    return ids


def planned(plan: str, peak: float) -> Callable[[int], torch.Tensor]:
    """Logits that put ``peak`` on the next character of ``plan`` (then on EOS), 0 elsewhere."""
    ids = tokenize(plan)

    def at(step: int) -> torch.Tensor:
        z = torch.zeros(len(VOCAB))
        z[ids[step] if step < len(ids) else EOS] = peak
        return z

    return at


class FakeBackend:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.vocab = VOCAB
        self.calls: list[dict] = []

    def generate(
        self, prompts: Sequence[str] | str, config: GenerationConfig | None = None
    ) -> TraceBatch:
        config = config or GenerationConfig()
        config = replace(config, topk_logprobs=min(config.topk_logprobs, len(VOCAB)))
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        self.calls.append(
            {
                "method": "generate",
                "prompts": list(prompts),
                "num_samples": config.num_samples,
                "temperature": config.temperature,
                "seed": config.seed,
                "system_prompt": config.system_prompt,
            }
        )
        mock = MockBackend(
            lambda i, step, prefix: self.policy(prompts[i], step, prefix), vocab=VOCAB, eos_id=EOS
        )
        return mock.generate(prompts, config)

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str | Sequence[int]],
        *,
        k: int = 20,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> TraceBatch:
        self.calls.append(
            {"method": "score", "prompts": list(prompts), "system_prompt": system_prompt}
        )
        k = min(k, len(VOCAB))
        traces = []
        for i, (prompt, comp) in enumerate(zip(prompts, completions, strict=True)):
            ids = tokenize(comp) if isinstance(comp, str) else [int(t) for t in comp]
            logits = torch.stack([self.policy(prompt, t, ids[:t]) for t in range(len(ids))])
            st = token_statistics(logits.float(), torch.tensor(ids), k)
            traces.append(
                Trace(
                    prompt=prompt,
                    text="".join(VOCAB[t] for t in ids if t != EOS),
                    token_ids=ids,
                    tokens=[VOCAB[t] for t in ids],
                    logprob=st.logprob,
                    entropy=st.entropy,
                    varentropy=st.varentropy,
                    self_certainty=st.self_certainty,
                    rank=st.rank,
                    topk_ids=st.topk_ids,
                    topk_logprobs=st.topk_logprobs,
                    provenance=Provenance(),
                    finish_reason="scored",
                    prompt_index=i,
                )
            )
        return TraceBatch(tuple(traces))

    def count(self, method: str, *, sampled: bool | None = None) -> int:
        """Calls of ``method``; ``sampled`` filters generations by temperature > 0."""
        return sum(
            1
            for c in self.calls
            if c["method"] == method
            and (sampled is None or (c.get("temperature", 0) > 0) == sampled)
        )


def test_fake_generation_follows_the_plan_and_scoring_matches_generation():
    policy_at = planned("42", peak=6.0)
    fake = FakeBackend(lambda prompt, step, prefix: policy_at(step))
    gen = fake.generate(["q"], GenerationConfig(temperature=0, max_new_tokens=8, topk_logprobs=3))
    assert gen[0].text == "42" and gen[0].token_ids.tolist() == [TOK["4"], TOK["2"], EOS]
    scored = fake.score(["q"], [gen[0].token_ids], k=3)[0]
    # teacher forcing the generated tokens reproduces the generation's statistics exactly
    assert torch.equal(scored.logprob, gen[0].logprob)
    assert torch.equal(scored.entropy, gen[0].entropy)
    # peak 6 over V = 19 tokens: log p(top) = 6 − log(e^6 + 18) = −0.04366…
    assert scored.logprob[0].item() == pytest.approx(6 - math.log(math.exp(6) + 18), abs=1e-6)
    assert fake.count("generate") == 1 and fake.count("score") == 1


def test_tokenize_prefers_the_longest_piece():
    assert tokenize("True 1") == [TOK["True"], TOK[" "], TOK["1"]]
    assert tokenize("?") == [TOK["x"]]
