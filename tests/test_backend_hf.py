"""HF backend on a tiny random model: reproducibility, compaction, stops, and generation == scoring."""

import pytest
import torch

from entrolab.backends import HFBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.signals import token_entropy, varentropy

PROMPTS = ["hello there", "a much longer prompt, so the batch needs left padding", "x"]


def test_same_seed_same_tokens_and_other_seed_other_tokens(tiny_backend):
    cfg = GenerationConfig(num_samples=2, max_new_tokens=12, temperature=1.0, seed=3)
    a = tiny_backend.generate(PROMPTS, cfg)
    b = tiny_backend.generate(PROMPTS, cfg)
    c = tiny_backend.generate(PROMPTS, GenerationConfig(num_samples=2, max_new_tokens=12, seed=4))
    assert [t.token_ids.tolist() for t in a] == [t.token_ids.tolist() for t in b]
    assert [t.token_ids.tolist() for t in a] != [t.token_ids.tolist() for t in c]
    assert [(t.prompt_index, t.sample_index) for t in a] == [
        (i, s) for i in range(3) for s in range(2)
    ]


def test_a_sample_does_not_depend_on_its_batch(tiny_backend):
    cfg = GenerationConfig(num_samples=2, max_new_tokens=10, seed=1)
    together = tiny_backend.generate(PROMPTS, cfg)
    alone = tiny_backend.generate(PROMPTS, GenerationConfig(**{**cfg.to_dict(), "batch_size": 1}))
    assert [t.token_ids.tolist() for t in together] == [t.token_ids.tolist() for t in alone]


def test_greedy_tokens_equal_transformers_generate(tiny_backend):
    traces = tiny_backend.generate(PROMPTS, GenerationConfig(temperature=0, max_new_tokens=15))
    model, tok = tiny_backend.model, tiny_backend.tokenizer
    for prompt, trace in zip(PROMPTS, traces, strict=True):
        ids = torch.tensor([tiny_backend.prompt_ids(prompt)])
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=15,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :]
        assert trace.token_ids.tolist() == ref.tolist()


def test_generated_statistics_equal_teacher_forced_scoring(tiny_backend):
    cfg = GenerationConfig(num_samples=2, max_new_tokens=20, seed=5, topk_logprobs=7)
    gen = tiny_backend.generate(PROMPTS, cfg)
    scored = tiny_backend.score(
        [t.prompt for t in gen], [t.token_ids for t in gen], k=7, position_chunk=6
    )
    for g, s in zip(gen, scored, strict=True):
        assert torch.equal(g.token_ids, s.token_ids) and g.tokens == s.tokens
        for name in ("logprob", "entropy", "varentropy", "self_certainty"):
            assert torch.allclose(getattr(g, name), getattr(s, name), atol=2e-5, rtol=0), name
        assert torch.equal(g.topk_ids, s.topk_ids) and torch.equal(g.rank, s.rank)
        assert s.finish_reason == "scored"


def test_scored_statistics_equal_a_plain_forward_pass(tiny_backend):
    model = tiny_backend.model
    prompt, completion = "what is 2+2?", "it is 4, I think"
    trace = tiny_backend.score([prompt], [completion], k=5)[0]
    p_ids = tiny_backend.prompt_ids(prompt)
    c_ids = tiny_backend.tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + c_ids])).logits[0, len(p_ids) - 1 : -1]
    logp = logits.log_softmax(-1)
    assert trace.token_ids.tolist() == c_ids
    assert torch.allclose(trace.logprob, logp[torch.arange(len(c_ids)), c_ids], atol=1e-5)
    assert torch.allclose(trace.entropy, token_entropy(logits), atol=1e-5)
    assert torch.allclose(trace.varentropy, varentropy(logits), atol=1e-5)
    assert torch.equal(trace.topk_ids, logits.topk(5).indices)
    assert trace.text == completion and "".join(trace.tokens) == completion


def test_processed_provenance_uses_the_sampled_distribution(tiny_backend):
    cfg = GenerationConfig(max_new_tokens=8, temperature=0.5, signals_from="processed", seed=2)
    trace = tiny_backend.generate(["hi"], cfg)[0]
    assert trace.provenance.logits == "processed"
    raw = tiny_backend.generate(
        ["hi"], GenerationConfig(**{**cfg.to_dict(), "signals_from": "raw"})
    )[0]
    assert torch.equal(trace.token_ids, raw.token_ids)  # same samples, different statistics
    with torch.no_grad():
        ids = tiny_backend.prompt_ids("hi") + trace.token_ids.tolist()
        logits = tiny_backend.model(torch.tensor([ids])).logits[0, -len(trace) - 1 : -1]
    assert torch.allclose(trace.entropy, token_entropy(logits / 0.5), atol=2e-5)
    assert torch.allclose(raw.entropy, token_entropy(logits), atol=2e-5)


def test_eos_ends_a_row_early_and_the_rest_of_the_batch_continues(tiny_backend):
    greedy = GenerationConfig(temperature=0, max_new_tokens=12)
    ref = tiny_backend.generate(PROMPTS, greedy)
    eos = int(ref[0].token_ids[3])  # pretend the 4th token of prompt 0 is EOS
    backend = HFBackend(tiny_backend.model, tiny_backend.tokenizer, "tiny")
    backend.eos_ids = torch.tensor([eos])
    out = backend.generate(PROMPTS, greedy)
    for r, t in zip(ref, out, strict=True):
        ids = r.token_ids.tolist()
        cut = ids.index(eos) + 1 if eos in ids else len(ids)
        assert t.token_ids.tolist() == ids[:cut]
        assert t.finish_reason == ("eos" if eos in ids else "length")
        assert torch.allclose(t.entropy, r.entropy[:cut], atol=1e-5)


def test_stop_strings_cut_the_text(tiny_backend):
    greedy = GenerationConfig(temperature=0, max_new_tokens=20)
    full = tiny_backend.generate(["stop test"], greedy)[0]
    stop = full.text[5:7]
    assert stop and stop in full.text
    out = tiny_backend.generate(
        ["stop test"], GenerationConfig(temperature=0, max_new_tokens=20, stop=(stop,))
    )[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[: full.text.find(stop)]
    assert len(out) < len(full)


def test_progress_reports_every_row_once_done(tiny_backend):
    calls = []
    cfg = GenerationConfig(num_samples=3, max_new_tokens=5, batch_size=2)
    tiny_backend.generate(["a", "b"], cfg, on_progress=lambda d, n, t: calls.append((d, n, t)))
    assert calls[-1] == (6, 6, 30)
    assert all(n == 6 for _, n, _ in calls) and [d for d, _, _ in calls] == sorted(
        d for d, _, _ in calls
    )


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda b: b.generate(["  "]), "prompt is empty"),
        (lambda b: b.generate([]), "no prompts given"),
        (
            lambda b: b.generate(["a"], GenerationConfig(topk_logprobs=10_000)),
            "exceeds the vocabulary size 259",
        ),
        (lambda b: b.score(["a", "b"], ["c"]), "got 2 prompts but 1 completions"),
        (lambda b: b.score(["a"], [""]), "a completion is empty"),
        (lambda b: b.score(["a"], ["b"], k=300), "k=300 exceeds the vocabulary size"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_backend, call, phrase):
    with pytest.raises(EntrolabError) as info:
        call(tiny_backend)
    assert phrase in str(info.value)


def test_token_pieces_concatenate_to_the_text_for_multibyte_characters(tiny_backend):
    ids = tiny_backend.tokenizer("héllo → ∑", add_special_tokens=False)["input_ids"]
    pieces = tiny_backend.token_pieces(ids)
    assert len(pieces) == len(ids) and "".join(pieces) == "héllo → ∑"


def test_per_prompt_seeds_equal_generating_each_prompt_alone(tiny_backend):
    cfg = GenerationConfig(num_samples=2, max_new_tokens=8, seed=0)
    together = tiny_backend.generate(PROMPTS, cfg, seeds=[11, 22, 33])
    for i, seed in enumerate([11, 22, 33]):
        alone = tiny_backend.generate(
            [PROMPTS[i]], GenerationConfig(**{**cfg.to_dict(), "seed": seed})
        )
        assert [t.token_ids.tolist() for t in together[2 * i : 2 * i + 2]] == [
            t.token_ids.tolist() for t in alone
        ]
    with pytest.raises(EntrolabError, match="got 1 seeds for 3 prompts"):
        tiny_backend.generate(PROMPTS, cfg, seeds=[1])
