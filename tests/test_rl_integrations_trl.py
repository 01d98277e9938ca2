"""TRL plug-in: tensor mapping, global counts, and 2-step GRPOTrainer runs on a tiny model whose
losses and gradients are checked against independent references (a plain-logits forward with
entrolab's loss called directly, and TRL's own ``dapo`` loss)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl", reason="trl not installed: pip install trl (tested with 1.16.0)")

import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from trl import GRPOConfig, GRPOTrainer

from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.rl.advantages import rloo
from entrolab.rl.integrations.trl import (
    EntrolabGRPOTrainer,
    StepTimer,
    trl_global_counts,
    trl_policy_loss_input,
)
from entrolab.rl.losses import POLICY_LOSSES
from entrolab.rl.types import PolicyLossInput
from entrolab.signals import token_entropy

PROMPTS = ["1+1=", "2+3=", "4+4=", "5+2="]


# ------------------------------------------------------------------------------ pure helpers
def test_global_counts_hand_computed() -> None:
    # 120 loss tokens in the generation batch, GA=2 of steps_per_generation=4 slices per
    # optimizer step → 120·2/4 = 60 tokens; sequences = B·GA·P = 4·2·1 = 8; scale = P = 1.
    assert trl_global_counts(120, 4, 10, gradient_accumulation_steps=2, steps_per_generation=4) == (
        60,
        8,
        1.0,
    )
    # Two processes: num_items_in_batch already spans both; sequences 4·2·2 = 16; scale 2.
    assert trl_global_counts(
        torch.tensor(120), 4, 10, num_processes=2, gradient_accumulation_steps=2,
        steps_per_generation=2,
    ) == (120, 16, 2.0)  # fmt: skip
    # Evaluation: no split, no accumulation → all 120 tokens, 4·P sequences.
    assert trl_global_counts(
        120, 4, 10, gradient_accumulation_steps=2, steps_per_generation=4, training=False
    ) == (120, 4, 1.0)
    # TRL's average-based estimate 10·1/4 = 2.5 → 2 is below this micro-batch's 7 tokens → 7.
    assert trl_global_counts(10, 2, 7, steps_per_generation=4)[0] == 7
    with pytest.raises(EntrolabError, match="positive"):
        trl_global_counts(10, 2, 7, gradient_accumulation_steps=0)


def test_policy_loss_input_mapping() -> None:
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, -4.0]], requires_grad=True)
    inputs = {
        "completion_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
        "tool_mask": torch.tensor([[1, 0, 1], [1, 1, 0]]),
        "advantages": torch.tensor([0.5, -1.0]),
        "ref_per_token_logps": torch.full((2, 3), -1.5),
    }
    inp = trl_policy_loss_input(inputs, logps, None, global_tokens=9, max_response_length=3)
    # mask = completion ⊙ tool: [[1,0,0],[1,1,0]]
    assert inp.response_mask.tolist() == [[True, False, False], [True, True, False]]
    assert inp.advantages.tolist() == [[0.5] * 3, [-1.0] * 3]
    # On-policy (no old_per_token_logps): old = detached current log-probs, as TRL does.
    assert torch.equal(inp.old_logprobs, logps.detach()) and not inp.old_logprobs.requires_grad
    assert inp.logprobs is logps and inp.ref_logprobs is None  # beta = 0: no reference
    assert (inp.global_tokens, inp.max_response_length) == (9, 3)
    old = torch.zeros(2, 3)
    inp = trl_policy_loss_input({**inputs, "old_per_token_logps": old}, logps, None, use_ref=True)
    assert torch.equal(inp.old_logprobs, old) and torch.equal(
        inp.ref_logprobs, torch.full((2, 3), -1.5)
    )
    with pytest.raises(EntrolabError, match="ref_per_token_logps"):
        trl_policy_loss_input(
            {k: v for k, v in inputs.items() if k[:3] != "ref"}, logps, None, use_ref=True
        )
    with pytest.raises(EntrolabError, match="advantages"):
        trl_policy_loss_input({**inputs, "advantages": torch.zeros(3)}, logps, None)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    ga=st.sampled_from([1, 2, 4]),
    agg=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]),
)
def test_micro_batch_losses_sum_to_full_batch(seed: int, ga: int, agg: str) -> None:
    """The counts TRL's batch gives make the GA micro-batch losses sum to the full-batch loss."""
    g = torch.Generator().manual_seed(seed)
    b, t = 8, 6
    logps = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logps + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    batch = {"completion_mask": mask, "advantages": torch.randn(b, generator=g, dtype=torch.float64),
             "old_per_token_logps": old}  # fmt: skip
    n_items = int(mask.sum())
    fn = POLICY_LOSSES.get("ppo_clip")
    tok, seqs, _ = trl_global_counts(n_items, b, n_items)  # the whole batch in one step
    full = fn(trl_policy_loss_input(batch, logps, None, global_tokens=tok, global_sequences=seqs,
                                    max_response_length=t), aggregation=agg).loss  # fmt: skip
    total = torch.zeros((), dtype=torch.float64)
    for rows in torch.arange(b).chunk(ga):
        part = {k: v[rows] for k, v in batch.items()}
        tok, seqs, scale = trl_global_counts(
            n_items, len(rows), int(part["completion_mask"].sum()),
            gradient_accumulation_steps=ga, steps_per_generation=ga,
        )  # fmt: skip
        inp = trl_policy_loss_input(part, logps[rows], None, global_tokens=tok,
                                    global_sequences=seqs, max_response_length=t)  # fmt: skip
        total = total + scale * fn(inp, aggregation=agg).loss
    torch.testing.assert_close(total, full, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ trainer runs
def digit_verifier(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """Reward = fraction of completion characters that are digits (a graded verifier)."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def _args(tmp_path, **kw) -> GRPOConfig:  # type: ignore[no-untyped-def]
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
        max_completion_length=8, max_steps=2, learning_rate=3e-3, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, seed=0, temperature=0.9,
        disable_tqdm=True, num_iterations=2, bf16=False,  # TRL 1.16 defaults to bf16 autocast
    )  # fmt: skip
    return GRPOConfig(**{**base, **kw})


def _reference_logps_entropy(model, inputs, temperature: float):  # type: ignore[no-untyped-def]
    """Independent forward: full logits from the model's plain forward, / T, log-softmax."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    am = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    t = inputs["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=am).logits[:, -t - 1 : -1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, inputs["completion_ids"][..., None])[..., 0]
    return logp, token_entropy(logits)


def _grads(loss: torch.Tensor, model) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """All parameter gradients of ``loss``, flattened into one vector."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    return torch.cat([g.reshape(-1) for g in grads])


def _assert_grads_close(g: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    """Relative error of the whole gradient vector (TRL's fused LM head sums in another order)."""
    err = float(torch.linalg.vector_norm(g - ref)) / float(torch.linalg.vector_norm(ref))
    assert err < rel, f"gradient relative error {err:.2e}"


class _Probe(EntrolabGRPOTrainer):
    """Records, per micro-batch, the loss TRL optimises and an independently computed one."""

    reference = None  # callable(trainer, model, inputs) -> scalar loss

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.records: list[dict[str, object]] = []
        self.adv_checks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        out = super()._generate_and_score_completions(inputs)
        self.adv_checks.append((out["advantages"].clone(), self._el_rewards.clone()))
        return out

    def _compute_loss(self, model, inputs):  # type: ignore[no-untyped-def]
        loss = super()._compute_loss(model, inputs)
        ref = type(self).reference(self, model, inputs)
        self.records.append({
            "loss": loss.detach(), "ref": ref.detach(),
            "grads": _grads(loss, model), "ref_grads": _grads(ref, model),
        })  # fmt: skip
        return loss


def _kl_cov_reference(trainer, model, inputs):  # type: ignore[no-untyped-def]
    """kl_cov on tensors built by hand from the batch (GA = steps_per_generation = 1)."""
    logp, ent = _reference_logps_entropy(model, inputs, trainer.args.temperature)
    mask = inputs["completion_mask"].bool()
    old = inputs.get("old_per_token_logps", logp.detach())
    # β·|ℓ − ℓ_old| has a kink at 0: on-policy, TRL's ℓ − ℓ_old is exactly 0 (same kernel twice,
    # gradient 0) while this plain-logits ℓ differs from it by float noise (gradient ±β). Treat
    # differences below 1e-5 as exactly on-policy.
    old = torch.where((old - logp.detach()).abs() < 1e-5, logp.detach(), old)
    inp = PolicyLossInput(
        logprobs=logp, old_logprobs=old,
        advantages=inputs["advantages"][:, None].expand_as(logp), response_mask=mask,
        entropy=ent, global_tokens=int(inputs["num_items_in_batch"]),
        global_sequences=logp.shape[0], max_response_length=8,
    )  # fmt: skip
    return POLICY_LOSSES.get("kl_cov")(inp, aggregation="token-mean", kl_cov_ratio=0.1).loss


def test_two_step_grpo_run_with_kl_cov_and_rloo(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _Probe.reference = _kl_cov_reference
    timer = StepTimer()
    trainer = _Probe(
        model=model, reward_funcs=digit_verifier, args=_args(tmp_path),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        loss="kl_cov", loss_params={"kl_cov_ratio": 0.1}, advantage="rloo", callbacks=[timer],
    )  # fmt: skip
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and len(trainer.records) == 2 and len(timer.step_seconds) == 2
    for rec in trainer.records:
        assert torch.isfinite(rec["loss"])
        torch.testing.assert_close(rec["loss"], rec["ref"], rtol=1e-5, atol=1e-6)
        _assert_grads_close(rec["grads"], rec["ref_grads"])
    # Step 2 reuses the batch (num_iterations=2): ratios ≠ 1, so the value depends on log-probs.
    assert logs[1]["entrolab/abs_log_ratio"] > 0
    # entrolab's loss ran and its metrics reached TRL's logs (kl_cov penalised 10% of 64 tokens).
    assert logs[0]["entrolab/touched_tokens"] == 6 and "entrolab/cov_mean" in logs[0]
    assert logs[0]["entropy"] == pytest.approx(logs[0]["entrolab/entropy_mean"])
    # Advantages are RLOO of the rewards (one generation batch of 2 prompts × G = 4).
    adv, rewards = trainer.adv_checks[0]
    assert float(rewards.std()) > 0
    torch.testing.assert_close(adv, rloo(rewards[:, 0].view(-1, 4)).reshape(-1))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no parameter changed after two GRPO steps"


def _trl_dapo_reference(trainer, model, inputs):  # type: ignore[no-untyped-def]
    """TRL's own loss (loss_type='dapo', ε = 0.2, k3 KL with beta, no IS bias correction)."""
    metrics = {k: list(v) for k, v in trainer._metrics["train"].items()}
    loss = GRPOTrainer._compute_loss(trainer, model, inputs)
    trainer._metrics["train"].clear()
    trainer._metrics["train"].update(metrics)
    return loss


def test_ppo_clip_equals_trl_native_dapo_loss_with_kl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=1)
    model.save_pretrained(tmp_path / "tiny")  # beta > 0: TRL loads the reference from a path
    model = type(model).from_pretrained(tmp_path / "tiny").train()
    _Probe.reference = _trl_dapo_reference
    trainer = _Probe(
        model=model, reward_funcs=digit_verifier,
        args=_args(tmp_path, beta=0.05, use_bias_correction_kl=False, learning_rate=1e-2,
                   per_device_train_batch_size=4, gradient_accumulation_steps=2),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        loss="ppo_clip", loss_params={"dual_clip": None, "log_ratio_clamp": None},
    )  # fmt: skip
    trainer.train()
    # 2 optimizer steps × GA = 2 micro-batches: TRL's dapo normaliser (tokens of the whole
    # generation batch) must equal entrolab's token-mean over global_tokens in each of them.
    assert len(trainer.records) == 4
    for rec in trainer.records:
        torch.testing.assert_close(rec["loss"], rec["ref"], rtol=1e-5, atol=1e-6)
        _assert_grads_close(rec["grads"], rec["ref_grads"])
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[1]["entrolab/kl_ref"] > 0  # the policy moved away from the reference
    assert logs[1]["kl"] == pytest.approx(logs[1]["entrolab/kl_ref"])


def test_conflicting_trl_settings_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=0)
    ds = Dataset.from_dict({"prompt": PROMPTS})
    common = dict(model=model, reward_funcs=digit_verifier, train_dataset=ds, processing_class=tok)
    for kw, match in [
        ({"top_entropy_quantile": 0.2}, "forking_tokens_trl"),
        ({"epsilon_high": 0.28}, "clip_low/clip_high"),
        ({"entropy_coef": 0.01}, "entropy_bonus"),
    ]:
        with pytest.raises(EntrolabError, match=match):
            EntrolabGRPOTrainer(args=_args(tmp_path, **kw), loss="ppo_clip", **common)
    with pytest.raises(EntrolabError, match="no parameter"):
        EntrolabGRPOTrainer(args=_args(tmp_path), loss="kl_cov", loss_params={"rho": 0.1}, **common)
    with pytest.raises(EntrolabError, match="advantage_params"):
        EntrolabGRPOTrainer(args=_args(tmp_path, scale_rewards="batch"), advantage="grpo", **common)


def test_batch_selection_scope_uses_whole_generation_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, tok = tiny_model(seed=2)
    trainer = EntrolabGRPOTrainer(
        model=model.train(), reward_funcs=digit_verifier,
        args=_args(tmp_path, max_steps=1, num_iterations=1, per_device_train_batch_size=4,
                   gradient_accumulation_steps=2),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        loss="kl_cov", loss_params={"kl_cov_ratio": 0.1}, selection_scope="batch",
    )  # fmt: skip
    trainer.train()
    sel = trainer._el_selection["train"]
    # One generation batch of 2 prompts × 4 completions × 8 tokens = 64 tokens split into two
    # micro-batches of 32: k = max(1, ⌊0.1·64⌋) = 6 over the batch (micro-batch scope: 3 + 3).
    assert int(sel["k"]) == 6
    log = trainer.state.log_history[0]
    # touched_tokens is averaged over the two micro-batches: 6 selected in all → mean 3.
    assert log["entrolab/touched_tokens"] == pytest.approx(3.0)


def test_trainer_from_config_maps_the_schedule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from entrolab.rl.config import config_from_dict

    cfg = config_from_dict({
        "steps": 3, "progress": False,
        "rollout": {"prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "temperature": 0.7},
        "algorithm": {"loss": "clip_cov", "loss_params": {"clip_cov_ratio": 0.01},
                      "advantage": "dr_grpo", "aggregation": "seq-mean-token-mean",
                      "micro_batch_size": 2, "mini_batches": 2, "selection_scope": "micro_batch"},
        "optim": {"lr": 1e-4, "warmup_steps": 1},
    })  # fmt: skip
    from entrolab.rl.integrations.trl import trainer_from_config

    model, tok = tiny_model(seed=0)
    tr = trainer_from_config(
        cfg, model=model, processing_class=tok, train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        reward_funcs=digit_verifier, output_dir=str(tmp_path), use_cpu=True,
    )  # fmt: skip
    a = tr.args
    # 2·4 = 8 rows per RL step, 2 mini-batches of 4 → GA = 4/2 = 2, steps_per_generation = 4,
    # max_steps = 3 RL steps × 2 optimizer steps = 6, warm-up 1 RL step = 2 optimizer steps.
    assert (a.gradient_accumulation_steps, a.steps_per_generation, a.max_steps) == (2, 4, 6)
    assert (a.num_generations, a.max_completion_length, a.temperature) == (4, 8, 0.7)
    assert (a.warmup_steps, a.learning_rate, a.bf16, a.beta) == (2, 1e-4, False, 0.0)
    assert tr._el_loss_name == "clip_cov" and tr._el_aggregation == "seq-mean-token-mean"
    assert tr._el_loss_params == {"clip_cov_ratio": 0.01, "selection_scope": "micro_batch"}
    cfg.algorithm.micro_batch_size = 3
    with pytest.raises(EntrolabError, match="micro_batch_size=3"):
        trainer_from_config(cfg, model=model, processing_class=tok, train_dataset=None,
                            reward_funcs=digit_verifier, output_dir=str(tmp_path))  # fmt: skip
