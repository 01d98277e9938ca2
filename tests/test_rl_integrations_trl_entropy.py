"""TRL plug-in with the entropy-shaping losses (STEER, Clip_B, SIREN without top-p, AEPO with
first-order weights, TEA-RL): a 2-step GRPOTrainer run per loss whose loss and gradient, in every
micro-batch, equal entrolab's loss called directly on an independent plain-logits forward."""

from __future__ import annotations

import pytest

pytest.importorskip("trl", reason="trl not installed: pip install trl (tested with 1.16.0)")

import torch
from datasets import Dataset

from entrolab.models import tiny_model
from entrolab.rl.losses import POLICY_LOSSES
from entrolab.rl.types import PolicyLossInput
from test_rl_integrations_trl import (
    PROMPTS,
    _args,
    _assert_grads_close,
    _Probe,
    _reference_logps_entropy,
    digit_verifier,
)

CASES = [
    ("steer", {}),
    ("clip_b", {"mu": 1.0}),
    ("siren", {"top_p": 1.0, "entropy_coef": 0.5, "entropy_anchor": 0.5}),
    ("aepo_arbitrary", {"target_entropy": 9.0, "weight_form": "first_order"}),
    ("tea_rl", {}),
]


def _reference(name: str, params: dict):  # type: ignore[no-untyped-def]
    def ref(trainer, model, inputs):  # type: ignore[no-untyped-def]
        logp, ent = _reference_logps_entropy(model, inputs, trainer.args.temperature)
        mask = inputs["completion_mask"].bool()
        old = inputs.get("old_per_token_logps", logp.detach())
        old = torch.where((old - logp.detach()).abs() < 1e-5, logp.detach(), old)
        inp = PolicyLossInput(
            logprobs=logp, old_logprobs=old,
            advantages=inputs["advantages"][:, None].expand_as(logp), response_mask=mask,
            entropy=ent, global_tokens=int(inputs["num_items_in_batch"]),
            global_sequences=logp.shape[0], max_response_length=8,
        )  # fmt: skip
        return POLICY_LOSSES.get(name)(inp, aggregation="token-mean", **params).loss

    return ref


@pytest.mark.parametrize(("name", "params"), CASES)
def test_entropy_losses_through_trl_equal_direct_call(tmp_path, name: str, params: dict) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=0)
    _Probe.reference = staticmethod(_reference(name, params))
    trainer = _Probe(
        model=model.train(), reward_funcs=digit_verifier, args=_args(tmp_path),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        loss=name, loss_params=params,
    )  # fmt: skip
    trainer.train()
    assert len(trainer.records) == 2
    for rec in trainer.records:
        assert torch.isfinite(rec["loss"])
        torch.testing.assert_close(rec["loss"], rec["ref"], rtol=1e-5, atol=1e-6)
        _assert_grads_close(rec["grads"], rec["ref_grads"], rel=1e-4)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert "entrolab/touched_frac" in logs[0]
