"""The real embedded SmolLM2-135M-Instruct: reproducibility and generation == scoring (≤ 1e-4)."""

import pytest
import torch

from entrolab.config import GenerationConfig

pytestmark = pytest.mark.model

PROMPTS = ["What is 7 + 5?", "Name a colour."]


def test_same_seed_same_tokens_on_the_real_model(smollm):
    cfg = GenerationConfig(num_samples=2, max_new_tokens=16, temperature=1.0, seed=42)
    a, b = smollm.generate(PROMPTS, cfg), smollm.generate(PROMPTS, cfg)
    assert [t.token_ids.tolist() for t in a] == [t.token_ids.tolist() for t in b]
    assert len({tuple(t.token_ids.tolist()) for t in a}) > 1


def test_greedy_generation_matches_transformers_and_its_entropy_matches_scoring(smollm):
    cfg = GenerationConfig(temperature=0, max_new_tokens=24)
    gen = smollm.generate(PROMPTS, cfg)
    for prompt, t in zip(PROMPTS, gen, strict=True):
        ids = torch.tensor([smollm.prompt_ids(prompt)])
        with torch.no_grad():
            ref = smollm.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24
            )[0, ids.shape[1] :]
        assert t.token_ids.tolist() == ref.tolist()
    scored = smollm.score(PROMPTS, [t.token_ids for t in gen])
    for g, s in zip(gen, scored, strict=True):
        assert (g.entropy - s.entropy).abs().max().item() <= 1e-4
        assert (g.logprob - s.logprob).abs().max().item() <= 1e-4
        assert (g.varentropy - s.varentropy).abs().max().item() <= 1e-3
        assert torch.equal(g.topk_ids[:, :5], s.topk_ids[:, :5])


def test_the_model_answers_simple_arithmetic_with_sensible_confidence(smollm):
    t = smollm.generate(
        ["What is 2 + 2? Answer with a number."], GenerationConfig(temperature=0, max_new_tokens=20)
    )[0]
    assert "4" in t.text
    # a correct, short answer from an instruct model: mean entropy well below log V = 10.8 nats
    assert t.entropy.mean().item() < 2.0 and t.logprob.mean().item() > -1.5
