"""The SaySelf stage-2 set-up of bench/learned_sayself.py (bench/_sayself_stage2.py): the RL run
trains on the stage-1 fit items with the stage-1 prompt, grades the answer before the stated
confidence, and adds the SaySelf Brier reward 1 − 2(y − c)² to correctness. No model is loaded."""

import sys
from pathlib import Path

import torch

from entrolab.inference.sayself import INSTRUCTIONS, _prompt
from entrolab.rl.reward_terms import apply_reward_terms
from entrolab.rl.rewards import make_task, score_replies
from entrolab.tasks import AnswerBeforeConfidence, load_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _sayself_stage2 import stage2_config  # bench/, put on the path above


def _config(tmp_path):
    return stage2_config(tmp_path / "model", level=2, fit_n=12, steps=3)


def test_prompt_and_items_are_stage_ones(tmp_path):
    cfg = _config(tmp_path)
    assert cfg.model.name == str((tmp_path / "model").resolve()) and cfg.model.lora.enabled
    assert cfg.task.eval_items == 0  # no held-out item enters the trainer
    task = make_task(cfg.task.spec, cfg.task.settings)
    pool = task.items(cfg.task.train_items, seed=cfg.task.seed)
    # stage 1 (bench/learned_sayself.py): the first fit_n items of seed 0 at the same level,
    # prompted by sayself._prompt (question + " " + INSTRUCTIONS)
    stage1_task = load_task("arithmetic", level=2, instructions=INSTRUCTIONS)
    fit = stage1_task.items(12, seed=0)
    assert [it.prompt for it in pool] == [_prompt(stage1_task, it) for it in fit]
    assert [it.id for it in pool] == [it.id for it in fit]
    assert all("-s0-" in it.id for it in pool)  # the held-out items are seed 1's
    # the recipe's own wording differs ("k from 0 to 10", no Reason line): overridden
    assert INSTRUCTIONS in pool[0].prompt and "k from 0 to 10" not in pool[0].prompt


def test_reward_is_correctness_plus_sayself_brier(tmp_path):
    cfg = _config(tmp_path)
    assert (cfg.reward.correct, cfg.reward.wrong, cfg.reward.format_reward) == (1.0, 0.0, 0.0)
    assert cfg.reward.terms == {"confidence_reward": {"kind": "brier", "form": "sayself",
                                                      "weight": 1.0}}  # fmt: skip
    task = AnswerBeforeConfidence(make_task(cfg.task.spec, cfg.task.settings))
    item = task.items(1, seed=0)[0]  # "What is 5 + 7?" → 12
    assert item.answer == "12"
    replies = [
        "12\nConfidence: 3/10\nReason: All 8 of my attempts agree.",  # uncut: "10" read
        "5 + 7 = 13\nConfidence: 9/10\nReason: I also considered 12 (1 of 8).",  # uncut: "8"
        "The answer is \\boxed{12}.",  # no confidence stated
    ]
    scored = score_replies(task, [item] * 3, replies, cfg.reward)
    assert scored.correct.tolist() == [True, False, True]
    total, _ = apply_reward_terms(cfg.reward.terms, scored.rewards, texts=replies,
                                  correct=scored.correct)  # fmt: skip
    # 1 + (1 − 2(1 − 0.3)²) = 1 + 1 − 0.98 = 1.02; 0 + (1 − 2(0 − 0.9)²) = 1 − 1.62 = −0.62;
    # unstated: 1 + the brier/sayself minimum −1 = 0
    assert torch.allclose(total.double(), torch.tensor([1.02, -0.62, 0.0], dtype=torch.float64),
                          atol=1e-6)  # fmt: skip
    # without the cut the first reply's answer would be read from "Confidence: 3/10"
    plain = make_task(cfg.task.spec, cfg.task.settings)
    assert not plain.grade(item, replies[0]).correct


def test_answer_before_confidence_grades_the_answer_part_only():
    task = load_task("arithmetic")
    item = task.items(1, seed=0)[0]  # "What is 5 + 7? …", answer 12
    reply = f"{item.answer}\nConfidence: 7/10\nReason: all chains agree."
    assert task.extract(item, reply) == "7/10"  # uncut: the stated confidence is the last number
    wrapped = AnswerBeforeConfidence(task)
    assert wrapped.extract(item, reply) == item.answer and wrapped.grade(item, reply).correct
    assert AnswerBeforeConfidence(wrapped).task is task  # wrapping twice changes nothing
    assert wrapped.items(1, seed=0) == [item]  # everything else is the task's
