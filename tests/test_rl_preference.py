"""DPO and VPO on self-generated pairs: hand-computed losses, the VPO value term's gradient
direction, pair building, and preference steps of the trainer (offline and online)."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.preference import PreferenceConfig, build_pairs, dpo_loss, vpo_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dpo_hand_computed() -> None:
    # pair 1: policy-minus-ref log ratios +1 (chosen) and −1 (rejected), β = 0.5 → h = 1
    # pair 2: ratios 0 and 2 → h = 0.5·(0 − 2) = −1
    pol_w, pol_l = torch.tensor([-2.0, -3.0]), torch.tensor([-5.0, -2.0])
    ref_w, ref_l = torch.tensor([-3.0, -3.0]), torch.tensor([-4.0, -4.0])
    loss, h = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta=0.5)
    torch.testing.assert_close(h, torch.tensor([1.0, -1.0]))
    # −log σ(1) = log(1 + e^−1) = 0.31326; −log σ(−1) = log(1 + e) = 1.31326
    torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-1)), math.log1p(math.e)]))


def test_vpo_value_term_and_gradient_direction() -> None:
    pol_w = torch.tensor([-2.0, -3.0], requires_grad=True)
    pol_l = torch.tensor([-5.0, -2.0])
    ref_w, ref_l = torch.tensor([-3.0, -3.0]), torch.tensor([-4.0, -4.0])
    # calibration samples = chosen: mean(pol_w − ref_w) = (1 + 0)/2 = 0.5; α = 0.2, β = 0.5
    total, dpo, value = vpo_loss(
        pol_w, pol_l, ref_w, ref_l, pol_w, ref_w, beta=0.5, alpha=0.2, sign=-1.0
    )
    assert float(value.detach()) == pytest.approx(-0.2 * 0.5 * 0.5)  # sign −1 (offline): −0.05
    assert float(total.detach()) == pytest.approx(float(dpo.detach()) - 0.05)
    # offline (sign −1): the value term's gradient on the chosen log-probs is −α·β/P < 0, so
    # gradient descent raises them; online (+1) lowers them
    (g_off,) = torch.autograd.grad(value, pol_w)
    torch.testing.assert_close(g_off, torch.full((2,), -0.2 * 0.5 / 2))
    _, _, v_on = vpo_loss(pol_w, pol_l, ref_w, ref_l, pol_w, ref_w, beta=0.5, alpha=0.2, sign=1.0)
    (g_on,) = torch.autograd.grad(v_on, pol_w)
    torch.testing.assert_close(g_on, -g_off)


def test_build_pairs() -> None:
    correct = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0, 0], dtype=torch.bool)  # G = 3, N = 3
    pairs = build_pairs(correct, 3, per_prompt=2, seed=0)
    # prompt 0: correct {0}, wrong {1, 2} → 1 pair; prompt 1: all correct → none;
    # prompt 2: all wrong → none
    assert len(pairs) == 1 and pairs[0][0] == 0 and pairs[0][1] in (1, 2)
    both = build_pairs(torch.tensor([1, 1, 0, 0], dtype=torch.bool), 4, per_prompt=5)
    assert len(both) == 2 and {c for c, _ in both} == {0, 1} and {r for _, r in both} == {2, 3}
    with pytest.raises(EntrolabError, match="beta"):
        PreferenceConfig(beta=0.0)


@pytest.mark.parametrize(("method", "mode"), [("dpo", "offline"), ("vpo", "online")])
def test_preference_trainer_steps(tmp_path, method: str, mode: str) -> None:
    from entrolab.rl.config import load_config
    from entrolab.rl.preference_trainer import PreferenceTrainer, make_trainer

    cfg = load_config(
        None,
        [
            "model.name=tiny",
            "task.spec=proxy",
            "task.train_items=32",
            "task.eval_items=2",
            "rollout.prompts_per_step=4",
            "rollout.group_size=4",
            "rollout.max_new_tokens=6",
            "rollout.chat_template=false",
            f"preference.method={method}",
            f"preference.mode={mode}",
            "preference.pairs_per_prompt=2",
            "optim.lr=1e-2",
            "eval.samples=2",
            "monitor.probe_prompts=0",
            "progress=false",
            "tensorboard=false",
            "steps=2",
        ],
    )

    # the tiny random model rarely solves the proxy task: make half of each group "correct"
    class HalfTask:
        def __init__(self, task):
            self._task = task

        def __getattr__(self, name):
            return getattr(self._task, name)

        def grade_many(self, items, replies):
            from entrolab.tasks import Grade

            ok = [len(r) % 2 == 0 for r in replies]
            return [
                Grade(c, r, "correct" if c else "wrong") for c, r in zip(ok, replies, strict=True)
            ]

    tr = make_trainer(cfg, tmp_path)
    assert isinstance(tr, PreferenceTrainer)
    tr.task = HalfTask(tr.task)
    before = {n: p.detach().clone() for n, p in tr.policy.named_parameters()}
    recs = tr.train()
    with_pairs = [r for r in recs if r["pref/pairs"] > 0]
    assert with_pairs, "no step had a (correct, incorrect) pair"
    for r in with_pairs:
        assert math.isfinite(r["pref/loss"]) and r["opt/grad_norm"] > 0
        if method == "dpo":
            assert r["pref/vpo_term"] == 0.0
    first = with_pairs[0]
    # the first update starts from the reference: log ratios 0, DPO loss log 2
    if recs[0]["pref/pairs"] > 0:
        assert recs[0]["pref/dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert first["pref/chosen_logratio"] == pytest.approx(0.0, abs=1e-5)
    changed = [n for n, p in tr.policy.named_parameters() if not torch.equal(p, before[n])]
    assert changed
