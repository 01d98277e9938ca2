"""Confidence shapers through the TRL plug-in: the per-token advantages of a GRPO+UCAS run equal
UCAS applied to an independent forward of the batch (plain logits), and the guard rails."""

from __future__ import annotations

import pytest

pytest.importorskip("trl", reason="trl not installed: pip install trl (tested with 1.16.0)")

import torch
from datasets import Dataset
from trl import GRPOConfig

from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.rl.advantages import grpo
from entrolab.rl.advantages.inputs import ShapingInputs
from entrolab.rl.advantages.ucas import ucas
from entrolab.rl.integrations.trl import EntrolabGRPOTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["1+1=", "2+3=", "4+4=", "5+2="]


def digit_verifier(prompts, completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def _args(tmp_path) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
        max_completion_length=8, max_steps=1, learning_rate=1e-3, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, seed=0, temperature=0.9,
        disable_tqdm=True, bf16=False,
    )  # fmt: skip


class _Capture(EntrolabGRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.batches.append(
            {k: out[k].clone() for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                         "completion_mask", "advantages")}
            | {"rewards": self._el_rewards.clone()}
        )  # fmt: skip
        return out


def test_grpo_ucas_advantages_in_trl_match_an_independent_forward(tmp_path) -> None:
    model, tok = tiny_model(seed=0)
    tr = _Capture(
        model=model, reward_funcs=digit_verifier, args=_args(tmp_path),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        loss="ppo_clip", advantage="grpo+ucas", advantage_params={"ucas": {"lam": 0.1}},
    )  # fmt: skip
    # the advantages are computed from the weights before the first update: keep a copy
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    tr.train()
    b = tr.batches[0]
    ref_model, _ = tiny_model(seed=0)
    ref_model.load_state_dict(snapshot)
    ref_model.eval()
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], dim=1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], dim=1)
    t = b["completion_ids"].shape[1]
    with torch.no_grad():
        z = ref_model(input_ids=ids, attention_mask=am).logits[:, -t - 1 : -1].float()
    zt = z / 0.9
    mask = b["completion_mask"].bool()
    sc = (torch.logsumexp(zt, -1) - zt.mean(-1)) * mask
    chosen = z.gather(-1, b["completion_ids"][..., None])[..., 0] * mask
    rewards = b["rewards"][:, 0].view(-1, 4)
    base = grpo(rewards).reshape(-1, 1).expand_as(mask) * mask
    expected = ucas(
        base, ShapingInputs(rewards, mask, self_certainty=sc, token_logits=chosen), lam=0.1
    ).advantages
    assert b["advantages"].shape == mask.shape
    torch.testing.assert_close(b["advantages"], expected, rtol=1e-4, atol=1e-5)
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert "entrolab/shaper/ucas/certainty_mean" in logs[0]


def test_trl_shapers_need_an_entrolab_loss(tmp_path) -> None:
    model, tok = tiny_model(seed=0)
    tr = EntrolabGRPOTrainer(
        model=model, reward_funcs=digit_verifier, args=_args(tmp_path),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        advantage="grpo+ucas",
    )  # fmt: skip
    with pytest.raises(EntrolabError, match="entrolab loss"):
        tr.train()
    with pytest.raises(EntrolabError, match="Known advantage_shapers"):
        EntrolabGRPOTrainer(
            model=model, reward_funcs=digit_verifier, args=_args(tmp_path),
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
            advantage="grpo+ucass", loss="ppo_clip",
        )  # fmt: skip
