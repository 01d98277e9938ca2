"""TRL plug-in with the losses that need more than log-probs and entropy: ARES (per-sequence
group, correctness and group pass rate, derived from TRL's rewards) and Clip_V (the full logits,
from one extra no-grad forward with ``pass_logits=True``). Each runs 2 GRPOTrainer steps whose
loss and gradient, in every micro-batch, equal entrolab's loss called directly on an independent
plain-logits forward; and the per-sequence mapping is checked by hand."""

from __future__ import annotations

import pytest

pytest.importorskip("trl", reason="trl not installed: pip install trl (tested with 1.16.0)")

import torch
from datasets import Dataset

from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.rl.integrations.trl_inputs import SEQ_PREFIX, trl_sequence_info
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


def test_sequence_info_hand_computed() -> None:
    # G = 4, two prompts: rewards (0.5, 0, 0, 1 | 0, 0, 0, 0); this process holds rows 2..5.
    # correct = reward > 0 → (1, 0, 0, 1 | 0, 0, 0, 0); pass rates 2/4 = 0.5 and 0
    info = trl_sequence_info(torch.tensor([0.5, 0, 0, 1, 0, 0, 0, 0]), 4, 2, 4)
    assert info["group"].tolist() == [0, 0, 1, 1]
    assert info["correct"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert info["pass_rate"].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert info["row"].tolist() == [0, 1, 2, 3]
    with pytest.raises(EntrolabError, match="dividing"):
        trl_sequence_info(torch.zeros(6), 4, 0, 4)
    with pytest.raises(EntrolabError, match="outside"):
        trl_sequence_info(torch.zeros(8), 4, 6, 4)


class _SeqProbe(_Probe):
    """Also checks, before TRL shuffles the batch, the per-sequence tensors against the rewards."""

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        out = super()._generate_and_score_completions(inputs)
        if self._el_loss_name != "ares":
            assert SEQ_PREFIX + "correct" not in out  # only losses that need them get them
            return out
        r = self._el_rewards.nansum(dim=1)  # one reward function, weight 1
        g = self.num_generations
        correct = (r > 0).double()
        assert out[SEQ_PREFIX + "correct"].tolist() == correct.tolist()
        want_rate = correct.view(-1, g).mean(1).repeat_interleave(g)
        assert out[SEQ_PREFIX + "pass_rate"].tolist() == want_rate.tolist()
        assert out[SEQ_PREFIX + "group"].tolist() == [i // g for i in range(len(r))]
        return out


def _reference(name: str, params: dict, logits: bool = False):  # type: ignore[no-untyped-def]
    def ref(trainer, model, inputs):  # type: ignore[no-untyped-def]
        logp, ent = _reference_logps_entropy(model, inputs, trainer.args.temperature)
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        am = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        t = inputs["completion_ids"].shape[1]
        with torch.no_grad():
            z = model(input_ids=ids, attention_mask=am).logits[:, -t - 1 : -1].float()
        old = inputs.get("old_per_token_logps", logp.detach())
        old = torch.where((old - logp.detach()).abs() < 1e-5, logp.detach(), old)
        seq = {k[len(SEQ_PREFIX) :]: v for k, v in inputs.items() if k.startswith(SEQ_PREFIX)}
        inp = PolicyLossInput(
            logprobs=logp, old_logprobs=old,
            advantages=inputs["advantages"][:, None].expand_as(logp),
            response_mask=inputs["completion_mask"].bool(), entropy=ent,
            global_tokens=int(inputs["num_items_in_batch"]), global_sequences=logp.shape[0],
            max_response_length=8, logits=z / trainer.args.temperature if logits else None,
            sequence_info=seq or None,
        )  # fmt: skip
        return POLICY_LOSSES.get(name)(inp, aggregation="token-mean", **params).loss

    return ref


@pytest.mark.parametrize(
    ("name", "params", "pass_logits"),
    [
        ("ares", {"window": 2, "percentile": 0.5}, False),
        ("clip_v", {"mu": 0.5, "max_frac": 1.0}, True),
    ],
)
def test_ares_and_clip_v_through_trl_equal_direct_call(tmp_path, name, params, pass_logits) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=0)
    _SeqProbe.reference = staticmethod(_reference(name, params, logits=pass_logits))
    trainer = _SeqProbe(
        model=model.train(), reward_funcs=digit_verifier, args=_args(tmp_path),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        loss=name, loss_params=params, pass_logits=pass_logits,
    )  # fmt: skip
    trainer.train()
    assert len(trainer.records) == 2
    for rec in trainer.records:
        assert torch.isfinite(rec["loss"])
        torch.testing.assert_close(rec["loss"], rec["ref"], rtol=1e-5, atol=1e-6)
        _assert_grads_close(rec["grads"], rec["ref_grads"], rel=1e-4)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    key = "entrolab/hwe_mean" if name == "ares" else "entrolab/frac_clipped"
    assert key in logs[0]


def test_clip_v_without_logits_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=0)
    with pytest.raises(EntrolabError, match="pass_logits=True"):
        _Probe(
            model=model, reward_funcs=digit_verifier, args=_args(tmp_path),
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
            loss="clip_v",
        )  # fmt: skip
