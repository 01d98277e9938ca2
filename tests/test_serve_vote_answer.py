"""The answer `entrolab serve` votes on with DeepConf: the final answer of each reply, read by the
extractor the tasks grade with (`entrolab.tasks.extract_answer`), never an operand of the
question the reply restates ("7*8" → "The answer is 7*8 = 56." votes 56, not 7)."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from entrolab.backends.mock import MockBackend
from entrolab.config import GenerationConfig
from entrolab.serve import ServeConfig
from entrolab.serve.app import create_app
from entrolab.serve.extension import deepconf
from entrolab.tasks import ArithmeticTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPLY = ["The answer is ", "7*8", " = ", "56", ".", "<eos>"]


def _scripted() -> MockBackend:
    """Every sample replies "The answer is 7*8 = 56." then EOS: step t puts logit 30 on token t
    and −30 elsewhere, so p(token t) = 1 − 5·e^−60 ≈ 1 at temperature 1."""
    table = torch.full((len(REPLY), len(REPLY)), -30.0)
    for t in range(len(REPLY)):
        table[t, t] = 30.0
    return MockBackend(table, vocab=REPLY, eos_id=len(REPLY) - 1)


def test_deepconf_votes_the_final_answer_not_the_restated_operand() -> None:
    cfg = GenerationConfig(num_samples=4, max_new_tokens=8, topk_logprobs=6)
    traces, vote = deepconf(_scripted(), "7*8", cfg, 3, warmup=2, variant="low", window=2)
    assert [t.text for t in traces] == ["The answer is 7*8 = 56."] * 4
    # 4 identical replies, none stopped: all 4 vote "56" (before the fix: "7", the number
    # right after "The answer is")
    assert vote["answer"] == "56" and vote["num_votes"] == 4 and vote["share"] == 1.0
    # the same reading as the arithmetic task's grading of that reply
    item = ArithmeticTask().make_item(0, 0)
    assert ArithmeticTask().extract(item, traces[0].text) == "56"


def test_served_completion_with_echo_votes_the_generated_final_answer() -> None:
    body = {
        "model": "m",
        "prompt": "7*8",
        "n": 4,
        "max_tokens": 8,
        "seed": 3,
        "echo": True,  # the returned text starts with the prompt; the vote reads the reply only
        "entrolab": {"deepconf": {"warmup": 2, "window": 2, "variant": "low"}},
    }
    app = create_app(_scripted(), ServeConfig(model_id="m", batch_window_s=0.0))
    with TestClient(app) as client:
        r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["entrolab"]["vote"]["answer"] == "56"
    assert [c["text"] for c in out["choices"]] == ["7*8The answer is 7*8 = 56."] * 4
    assert [c["entrolab"]["answer"] for c in out["choices"]] == ["56"] * 4
