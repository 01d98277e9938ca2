"""Reasoning-length proxy task: item generation, the grader on crafted replies, SFT pairs, phase
masks on the byte tokenizer, the discriminator statistics, Entropy-SFT, and a trainer step that
logs per-phase entropy."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.rl.dynamics import discriminator_stats, phase_entropy, phase_masks
from entrolab.rl.proxy import train_sft
from entrolab.rl.proxy_reasoning import ProxyReasoningTask, chain_reply, parse_chain
from entrolab.rl.rewards import make_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _item(task, numbers, target):  # type: ignore[no-untyped-def]
    from entrolab.tasks import TaskItem

    subs = task.subsets(numbers, target)
    return TaskItem(id="x", prompt="", answer="", meta={"numbers": numbers, "target": target,
                                                        "solutions": [list(s) for s in subs]})  # fmt: skip


def test_items_have_several_paths_and_replies_are_15_to_40_tokens() -> None:
    task = make_task("proxy_reasoning", {"list_size": 7, "terms": 3})
    assert isinstance(task, ProxyReasoningTask)
    items = task.items(50, seed=0)
    assert len({it.prompt for it in items}) == 50
    for it in items:
        assert len(it.meta["solutions"]) >= 3  # min_paths
        for sol in it.meta["solutions"]:
            reply = chain_reply(sol)
            assert 15 <= len(reply) + 1 <= 40  # byte tokens incl. EOS
            assert task.grade(it, reply).correct
    assert make_task("proxy_reasoning", {"terms": 4}).items(1, seed=0)[0].meta["solutions"]
    with pytest.raises(EntrolabError, match="terms"):
        make_task("proxy_reasoning", {"terms": 7})


def test_grader_on_crafted_replies() -> None:
    task = ProxyReasoningTask()
    it = _item(task, [6, 2, 5, 7, 8, 9, 3], 20)  # 3+8+9, 5+6+9, 5+7+8
    g = task.grade
    assert g(it, "3+8=11 11+9=20 => 3+8+9").correct
    assert g(it, " 9+8=17 17+3=20 => 9+8+3 ").correct  # any order, whitespace around
    assert task.extract(it, "9+8=17 17+3=20 => 9+8+3") == "3+8+9"
    assert not g(it, "3+8=12 12+9=21 => 3+8+9").correct  # wrong running sum
    assert not g(it, "3+8=11 11+9=20 => 3+9+8").correct  # answer not the chain's order
    assert not g(it, "3+8=11 12+8=20 => 3+8+8").correct  # chain does not continue the sum
    assert not g(it, "4+7=11 11+9=20 => 4+7+9").correct  # 4 is not in the list
    assert not g(it, "5+5=10 10+... => 5+5").correct
    assert g(it, "3+8+9").reason == "unparseable"
    assert parse_chain("2+3=5 5+4=9 => 2+3+4") == ([(2, 3, 5), (5, 4, 9)], [2, 3, 4])
    assert parse_chain("2+3=5 => ") is None and parse_chain(None) is None


def test_sft_examples_are_valid_except_the_noise() -> None:
    task = ProxyReasoningTask()
    pairs = task.sft_examples(400, seed=0, noise=0.2)
    items = {it.prompt: it for it in task.items(400, seed=10_000)}
    ok = [task.grade(items[p], r).correct for p, r in pairs]
    # noise replaces 20% of targets by a random subset (right arithmetic, usually wrong sum)
    assert 0.7 < sum(ok) / len(ok) < 0.9
    assert all(parse_chain(r) is not None for _, r in pairs)


def test_phase_masks_on_byte_tokens() -> None:
    _, tok = tiny_model(seed=0)
    reply = "3+8=11 11+9=20 => 3+8+9"
    ids = tok(reply, add_special_tokens=False)["input_ids"]
    delim = tok("=>", add_special_tokens=False)["input_ids"]
    t = torch.tensor([[*ids, 0, 0]])
    m = torch.tensor([[True] * len(ids) + [False, False]])
    reasoning, answer = phase_masks(t, m, delim)
    cut = reply.index("=>")  # byte tokenizer: token index = character index
    assert int(reasoning.sum()) == cut and bool(reasoning[0, :cut].all())
    assert int(answer.sum()) == len(reply) - cut - 2  # " 3+8+9" after the delimiter
    # entropy 1 on reasoning, 0.25 on answer → means per phase, share = 15/24
    h = torch.where(reasoning, 1.0, 0.25)
    out = phase_entropy(h, t, m, delim)
    assert out["dyn/entropy_reasoning"] == 1.0 and out["dyn/entropy_answer"] == 0.25
    assert out["dyn/reasoning_frac"] == pytest.approx(cut / len(ids))


def test_discriminator_stats_hand_computed() -> None:
    # S = p(H + log p): p = 0.5, H = 1 → 0.5·(1 − 0.6931) = 0.15343; p = 0.1, H = 1 → 0.1·(1 −
    # 2.3026) = −0.13026; mean 0.011588, population std 0.141842; A < 0 token has S < 0 → 1.0
    lp = torch.log(torch.tensor([[0.5, 0.1, 0.3]]))
    h = torch.ones(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    m = torch.tensor([[True, True, False]])
    out = discriminator_stats(lp, h, adv, m)
    s = [0.5 * (1 + math.log(0.5)), 0.1 * (1 + math.log(0.1))]
    assert out["dyn/S_mean"] == pytest.approx(sum(s) / 2)
    assert out["dyn/S_std"] == pytest.approx(abs(s[0] - s[1]) / 2)
    assert out["dyn/S_neg_frac_negA"] == 1.0


def test_entropy_sft_trains_and_differs_from_ce() -> None:
    task = ProxyReasoningTask()
    pairs = task.sft_examples(32, seed=0, noise=0.0)
    res = {}
    for loss in ("ce", "entropy_sft"):
        model, tok = tiny_model(seed=0)
        res[loss] = train_sft(model, tok, pairs, steps=3, batch_size=8, lr=1e-3, loss=loss)
        assert all(math.isfinite(x) for x in res[loss])
    assert res["ce"][0] != res["entropy_sft"][0]
    with pytest.raises(EntrolabError, match="entropy_sft"):
        train_sft(*tiny_model(seed=0), pairs, steps=1, batch_size=2, lr=1e-3, loss="focal")


def test_trainer_step_logs_phase_entropy_and_discriminator(tmp_path) -> None:
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer
    from test_rl_trainer import BASE, digit_reward

    base = [b for b in BASE if not b.startswith(("task.spec", "rollout.max_new_tokens"))]
    cfg = load_config(None, [*base, "task.spec=proxy_reasoning", "rollout.max_new_tokens=24",
                             "steps=1"])  # fmt: skip
    (rec,) = Trainer(cfg, tmp_path, reward_fn=digit_reward).train()
    for key in ("dyn/S_mean", "dyn/S_std", "dyn/S_neg_frac_negA", "dyn/reasoning_frac"):
        assert math.isfinite(rec[key])
    assert rec["dyn/entropy_reasoning"] is None or rec["dyn/entropy_reasoning"] > 0
