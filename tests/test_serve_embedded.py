"""`entrolab serve` over the real embedded model (SmolLM2-135M-Instruct), where real
distributions matter: DeepConf online through OpenAIBackend equals the in-process run, the top-k
entropy bounds bracket the full-vocabulary entropy of every token, and an answer through the
official `openai` client carries a confidence and a route."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from entrolab.backends import OpenAIBackend
from entrolab.config import GenerationConfig
from entrolab.inference import make_strategy
from entrolab.serve import ServeConfig, running
from entrolab.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def url(smollm):
    with running(smollm, ServeConfig(model_id="smollm", port=0)) as base:
        yield base


def test_deepconf_online_on_a_server_equals_the_in_process_run(url, smollm):
    # the server cannot stop a trace mid-decode; OpenAIBackend replays the stop rule on the
    # finished traces, so kept tokens, stops, threshold and vote equal the in-process run's
    remote = OpenAIBackend(url, tokenizer=smollm.tokenizer, token_ids=True)
    task = load_task("arithmetic")
    items = task.items(1, seed=0)
    # a fixed threshold (nats) between the traces' lowest-window confidences (4.03 … 5.77 for
    # this item and seed) so that some traces stop and some do not
    strategy = make_strategy(
        "deepconf-online", budget=5, warmup=3, window=4, threshold=4.5, tau=None, max_new_tokens=16
    )
    here = strategy.run(smollm, task, items, seed=1)
    there = strategy.run(remote, task, items, seed=1)
    for a, b in zip(here, there, strict=True):
        assert (a.item_id, a.answer, a.correct) == (b.item_id, b.answer, b.correct)
        assert a.generated_tokens == b.generated_tokens and a.num_traces == b.num_traces
        assert a.meta["stopped"] == b.meta["stopped"]
        assert a.meta["lowest_window"] == pytest.approx(b.meta["lowest_window"], abs=1e-4)
        assert a.meta["threshold"] == pytest.approx(b.meta["threshold"], abs=1e-4)
    assert sum(o.meta["stopped"] for o in there) > 0  # the rule did stop traces


def test_topk_bounds_bracket_the_full_entropy_of_every_token(url, smollm):
    remote = OpenAIBackend(url, tokenizer=smollm.tokenizer, token_ids=True)
    cfg = GenerationConfig(num_samples=1, max_new_tokens=16, topk_logprobs=20, temperature=1.0)
    prompts = ["Name a colour.", "What is 7 times 8?"]
    got = remote.generate(prompts, cfg, seeds=[1, 2])
    ref = smollm.generate(prompts, cfg, seeds=[1, 2])
    n = 0
    for g, h in zip(got, ref, strict=True):
        assert g.token_ids.tolist() == h.token_ids.tolist()
        lo, hi = np.array(g.meta["entropy_lower"]), np.array(g.meta["entropy_upper"])
        full = h.entropy.double().numpy()
        assert (lo <= full + 1e-4).all() and (full <= hi + 1e-4).all()
        n += len(full)
    assert n > 20


def test_openai_client_gets_a_confident_answer_with_a_route(url):
    client = openai.OpenAI(base_url=url, api_key="unused")
    r = client.chat.completions.create(
        model="smollm",
        messages=[{"role": "user", "content": "What is the capital of France? One word."}],
        max_tokens=8,
        temperature=0,
        n=1,
    )
    ext = r.choices[0].model_extra["entrolab"]
    assert "Paris" in r.choices[0].message.content
    assert ext["confidence_kind"] == "exp(-u)" and 0.5 < ext["confidence"] <= 1.0
    assert ext["route"] in ("answer", "retrieve") and ext["entropy_kind"] == "full"
