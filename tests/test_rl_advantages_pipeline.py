"""The advantage pipeline in the trainer: spec/params parsing, the shapers' inputs computed from
a tiny model against direct computations, RiskPO tracking state, and a trainer run with every
shaper composed."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.rl.advantages import grpo
from entrolab.rl.config import load_config
from entrolab.rl.rollout import Rollout
from entrolab.rl.shaping import (
    AdvantagePipeline,
    semantic_entropy_per_group,
    shaping_inputs,
    step_ids_from_pieces,
)
from entrolab.rl.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pipeline_params_and_errors() -> None:
    p = AdvantagePipeline("grpo+ucas", {"eps": 1e-4, "ucas": {"lam": 0.1}})
    assert p.base == "grpo" and p.shapers == ["ucas"]
    assert p.base_params == {"eps": 1e-4} and p.shaper_params == {"ucas": {"lam": 0.1}}
    assert p.requires == {"self_certainty", "token_logits"}
    with pytest.raises(EntrolabError, match="advantage_params.ucas"):
        AdvantagePipeline("grpo+ucas", {"ucas": {"lamda": 0.1}})
    with pytest.raises(EntrolabError, match="does not use"):
        AdvantagePipeline("grpo", {"ucas": {"lam": 0.1}})
    with pytest.raises(EntrolabError, match="advantage_params"):
        AdvantagePipeline("grpo", {"epsilon": 0.1})
    # no shapers: the base estimator broadcast over tokens, exactly
    rewards = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    adv, metrics = AdvantagePipeline("grpo")(rewards, mask)
    torch.testing.assert_close(adv, grpo(rewards).reshape(-1, 1).expand(3, 2) * mask)
    assert metrics == {}


def test_riskpo_tracking_state_feeds_the_next_step() -> None:
    p = AdvantagePipeline("riskpo", {"quantile_source": "track", "bundle_size": 2, "lr_q": 0.5})
    r1 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    p.sequence_advantages(r1)  # no tracked values yet → batch quantiles; tracker initialised
    q = p.tracker.get(0.2, 0.9)
    # paper scores (1, 0, 2): quantile 0.2 = 0.4, 0.9 = 1.8
    assert q == pytest.approx((0.4, 1.8))
    state = p.state_dict()
    p2 = AdvantagePipeline("riskpo", {"quantile_source": "track", "bundle_size": 2})
    p2.load_state_dict(state)
    assert p2.tracker.get(0.2, 0.9) == pytest.approx(q)


def test_step_ids_and_semantic_entropy() -> None:
    assert step_ids_from_pieces(["1+2", "=3", "\n", "3+4", "=7\n", "ok"]) == [0, 0, 0, 1, 1, 2]
    # groups of 4: {7, 7, 7, 7} → 0; {1, 2, 2, None} → −(¼ln¼·2 + ½ln½) = 1.0397
    se = semantic_entropy_per_group(["7", "7", "7", "7", "1", "2", "2", None], 4)
    torch.testing.assert_close(
        se, torch.tensor([0.0, -(0.5 * math.log(0.25) + 0.5 * math.log(0.5))])
    )


def test_shaping_inputs_match_direct_computation() -> None:
    torch.manual_seed(0)
    model, _ = tiny_model(hidden_size=16, num_layers=1, num_heads=2)
    prompts = [[5, 6, 7], [8, 9]]
    resp = torch.tensor([[11, 12, 13], [14, 15, 0], [16, 0, 0], [17, 18, 19]])
    mask = resp != 0
    rollout = Rollout(
        [prompts[0], prompts[0], prompts[1], prompts[1]],
        resp,
        mask,
        ["a", "b", "c", "d"],
        torch.tensor([0, 0, 1, 1]),
        2,
    )
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.7
    need = {"self_certainty", "token_logits", "prompt_logprobs", "old_logprobs", "entropy"}
    inp = shaping_inputs(
        need,
        model=model,
        rollout=rollout,
        rewards=rewards,
        pad_id=0,
        temperature=tau,
        micro_batch_size=3,
    )
    with torch.no_grad():
        for r in range(4):
            n = int(mask[r].sum())
            ids = torch.tensor([rollout.prompt_ids[r] + resp[r, :n].tolist()])
            z = model(input_ids=ids).logits[0, -n - 1 : -1].float()  # raw logits of the response
            zt = z / tau
            sc = torch.logsumexp(zt, -1) - zt.mean(-1)
            torch.testing.assert_close(inp.self_certainty[r, :n], sc, rtol=1e-4, atol=1e-4)
            chosen = z.gather(-1, resp[r, :n, None]).squeeze(-1)
            torch.testing.assert_close(inp.token_logits[r, :n], chosen, rtol=1e-4, atol=1e-4)
            lp = torch.log_softmax(zt, -1).gather(-1, resp[r, :n, None]).squeeze(-1)
            torch.testing.assert_close(inp.old_logprobs[r, :n], lp, rtol=1e-4, atol=1e-4)
            assert bool((inp.self_certainty[r, n:] == 0).all())
        for i, p in enumerate(prompts):
            z = model(input_ids=torch.tensor([p])).logits[0, :-1].float() / tau
            lp = torch.log_softmax(z, -1).gather(-1, torch.tensor(p[1:])[:, None]).squeeze(-1)
            m = inp.prompt_mask[i]
            assert int(m.sum()) == len(p) - 1
            torch.testing.assert_close(inp.prompt_logprobs[i][m], lp, rtol=1e-4, atol=1e-4)


def test_trainer_runs_every_shaper(tmp_path) -> None:
    cfg = load_config(
        None,
        [
            "model.name=tiny",
            "task.spec=proxy",
            "task.train_items=32",
            "task.eval_items=0",
            "rollout.prompts_per_step=2",
            "rollout.group_size=3",
            "rollout.max_new_tokens=6",
            "rollout.chat_template=false",
            "algorithm.advantage=grpo+seed_grpo+progrpo+empg+ucas",
            "algorithm.advantage_params={se: count, step_delimiter: '1'}",
            "algorithm.micro_batch_size=4",
            "optim.lr=1e-3",
            "monitor.probe_prompts=0",
            "progress=false",
            "tensorboard=false",
            "steps=1",
        ],
    )

    def reward(items, texts):
        return [(sum(map(ord, t)) % 7) / 6 for t in texts]

    rec = Trainer(cfg, tmp_path, reward_fn=reward).train()[0]
    for key in (
        "shaper/ucas/certainty_mean",
        "shaper/seed_grpo/se_mean",
        "shaper/progrpo/prompt_conf_mean",
        "shaper/empg/steps_mean",
    ):
        assert math.isfinite(rec[key]), key
    assert 0 < rec["shaper/progrpo/prompt_conf_mean"] <= 1
    assert rec["shaper/empg/steps_mean"] >= 1
    assert math.isfinite(rec["loss/loss"])
