"""SPEAR self-imitation (rl/spear.py, Explorer replay): schedules and buffer by hand, splicing with
advantage recalibration, the buffer saved with checkpoints and an exact resume."""

from __future__ import annotations

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.checkpoint import read_metrics
from entrolab.rl.config import load_config
from entrolab.rl.explore import ExploreConfig, Explorer
from entrolab.rl.rewards import ScoredReplies
from entrolab.rl.rollout import Rollout
from entrolab.rl.spear import BufferEntry, ReplayBuffer, intrinsic_weight, sil_weight
from entrolab.rl.trainer import Trainer
from entrolab.tasks.base import TaskItem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_schedules_by_hand() -> None:
    assert sil_weight(5, 2.0, 10) == 1.0 and sil_weight(20, 2.0, 10) == 2.0
    assert sil_weight(1, 0.5, 0) == 0.5
    assert intrinsic_weight(5, 0.2, 10) == pytest.approx(0.1)
    assert intrinsic_weight(15, 0.2, 10) == 0.0 and intrinsic_weight(99, 0.2, 0) == 0.2


def _e(reward, step=1, n=2):
    return BufferEntry([1, 2], list(range(3, 3 + n)), f"r{reward}", reward, step)


def test_buffer_keeps_the_best_success_recalibrates_and_evicts(tmp_path) -> None:
    buf = ReplayBuffer(capacity=2)
    assert not buf.offer("a", _e(0.0))  # failures are never stored
    assert buf.offer("a", _e(0.5)) and not buf.offer("a", _e(0.4)) and buf.offer("a", _e(0.9))
    assert buf.recall("a", baseline=0.3).reward == 0.9  # advantage 0.9 − 0.3 > 0: replayed
    assert buf.recall("a", baseline=0.9) is None and "a" not in buf.entries  # stale: dropped
    buf.offer("x", _e(1.0))
    buf.offer("y", _e(1.0, n=4))
    buf.offer("z", _e(1.0))  # capacity 2: the least recently refreshed ("x") goes
    assert list(buf.entries) == ["y", "z"]
    buf.save(tmp_path)
    again = ReplayBuffer.load(tmp_path)
    assert again.capacity == 2 and again.entries == buf.entries
    assert ReplayBuffer.load(tmp_path / "none").entries == {}
    with pytest.raises(EntrolabError):
        ReplayBuffer(0)


class _Task:
    def grade(self, item, text):
        from entrolab.tasks.base import Grade

        return Grade(text == "good", text, "correct" if text == "good" else "wrong", 1.0)

    def extract(self, item, text):
        return text


class _Backend:
    pad_id = 0


def test_replay_splices_over_the_worst_sample_and_scales_its_advantage() -> None:
    ex = Explorer(ExploreConfig(replay=True, sil_max=0.5, sil_warmup=4), group_size=2)
    ex._step, ex._replayed, ex._pad = 2, [], 0
    ex.buffer.offer("q0", BufferEntry([7, 7], [5, 6, 9], "good", 1.0, 1))
    items = [TaskItem("q0", "p", "a"), TaskItem("q0", "p", "a"), TaskItem("q1", "p", "a"),
             TaskItem("q1", "p", "a")]  # fmt: skip
    ro = Rollout([[7, 7]] * 4, torch.tensor([[1, 2], [3, 0], [4, 0], [8, 8]]),
                 torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]], dtype=torch.bool),
                 ["bad", "bad2", "x", "good"], torch.tensor([0, 0, 1, 1]), 2)  # fmt: skip
    scored = ScoredReplies(torch.tensor([0.2, 0.0, 0.0, 1.0]), 0.25, 1.0,
                           torch.tensor([False, False, False, True]))  # fmt: skip
    metrics: dict = {}
    ro2, sc2 = ex._replay(_Task(), items, ro, scored, metrics)
    # group q0: baseline mean(0.2, 0) = 0.1 < 1.0 -> the buffered response replaces row 1
    assert ex._replayed == [1]
    assert ro2.response_ids[1].tolist() == [5, 6, 9] and ro2.texts[1] == "good"
    assert sc2.rewards.tolist() == pytest.approx([0.2, 1.0, 0.0, 1.0])
    assert sc2.correct.tolist() == [False, True, False, True] and sc2.accuracy == 0.5
    # group q1 had no entry; its best fresh sample (row 3) is now buffered; q0 keeps 1.0
    assert ex.buffer.entries["q1"].response_ids == [8, 8] and ex.buffer.entries["q0"].reward == 1.0
    assert metrics["spear/replayed_frac"] == 0.5
    # the replayed row's advantage is scaled by λ = 0.5 · min(1, 2/4) = 0.25
    adv = torch.ones(4, 3)
    out, _, m = ex.shape(adv, ro2, step=2)
    assert out[1].tolist() == [0.25] * 3 and out[0].tolist() == [1.0] * 3
    assert m["spear/sil_weight"] == 0.25


BASE = [
    "model.name=tiny", "task.spec=arithmetic", "task.train_items=2", "task.eval_items=0",
    "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=4",
    "rollout.chat_template=false", "monitor.probe_prompts=0", "progress=false",
    "tensorboard=false", "optim.lr=1e-3", "explore.replay=true", "checkpoint_every=1",
]  # fmt: skip


def first_char_reward(items, texts):
    """Dense scripted reward (first character's code mod 7, scaled) so groups differ."""
    return [(ord(t[0]) % 7) / 6 if t else 0.0 for t in texts]


def test_buffer_is_checkpointed_and_resume_is_exact(tmp_path) -> None:
    full = Trainer(load_config(None, [*BASE, "steps=3"]), tmp_path / "full",
                   reward_fn=first_char_reward)  # fmt: skip
    full.train()
    assert (tmp_path / "full" / "checkpoints" / "step_00000003" / "spear_buffer.json").is_file()
    half = Trainer(load_config(None, [*BASE, "steps=2"]), tmp_path / "half",
                   reward_fn=first_char_reward)  # fmt: skip
    half.train()
    resumed = Trainer(load_config(None, [*BASE, "steps=3"]), tmp_path / "half",
                      reward_fn=first_char_reward)  # fmt: skip
    assert resumed.explorer.buffer.entries == half.explorer.buffer.entries
    resumed.train()
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "half")) == strip(read_metrics(tmp_path / "full"))
    assert resumed.explorer.buffer.entries == full.explorer.buffer.entries
    recs = read_metrics(tmp_path / "full")
    assert max(r["spear/replayed_frac"] for r in recs) > 0  # replay happened in this run
