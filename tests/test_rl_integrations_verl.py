"""verl plug-in: parameter mapping and adapters (always), and — where verl imports — the
registered losses and estimators called through verl's own lookup, checked against entrolab's
functions and against verl's built-in vanilla / clip_cov / kl_cov / grpo / rloo.

verl lives apart from the main environment (its pins conflict with transformers 5.24): run
``make test-verl`` (``.venv-verl``, see docs/rl_integrations.md)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.integrations import verl as ev
from entrolab.rl.losses import POLICY_LOSSES
from entrolab.rl.types import PolicyLossInput


def _has_verl() -> bool:
    try:
        return importlib.util.find_spec("verl.trainer.ppo.core_algos") is not None
    except ImportError:
        return False


HAS_VERL = _has_verl()
needs_verl = pytest.mark.skipif(
    not HAS_VERL, reason="verl not installed: run `make test-verl` (separate .venv-verl)"
)
AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


# ------------------------------------------------------------------------------ no verl needed
def test_verl_config_keys_map_to_loss_params() -> None:
    cfg = {
        "clip_ratio": 0.3, "clip_ratio_low": 0.1, "clip_ratio_high": None, "clip_ratio_c": 2.5,
        "policy_loss": {"kl_cov_ratio": 0.01, "ppo_kl_coef": 0.1, "clip_cov_ratio": 0.02},
    }  # fmt: skip
    # clip_high falls back to clip_ratio (0.3) as verl does; only keys the loss accepts.
    assert ev.verl_loss_params("ppo_clip", cfg) == {
        "clip_low": 0.1,
        "clip_high": 0.3,
        "dual_clip": 2.5,
    }
    assert ev.verl_loss_params("kl_cov", cfg) == {"kl_cov_ratio": 0.01, "ppo_kl_coef": 0.1}
    assert ev.verl_loss_params("kl_cov", cfg, {"ppo_kl_coef": 1.0})["ppo_kl_coef"] == 1.0
    assert ev.verl_loss_params("clip_cov", None) == {}
    with pytest.raises(EntrolabError, match="no parameter 'rho'"):
        ev.verl_loss_params("kl_cov", cfg, {"rho": 0.2})
    with pytest.raises(EntrolabError, match="micro_batch"):
        ev.make_verl_loss("forking_tokens", {"selection_scope": "batch"})


def test_loss_adapter_hand_computed_with_global_batch_info() -> None:
    # On-policy (r = 1): PPO token loss = −A → [−1, 2, −0.5] on the 3 valid tokens; sum 0.5.
    # token-mean over verl's batch_num_tokens = 8 on dp_size = 2 ranks: 0.5 / 8 · 2 = 0.125.
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -2.0], [0.5, 7.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    cfg = {"global_batch_info": {"dp_size": 2, "batch_num_tokens": 8, "global_batch_size": 4}}
    loss_fn = ev.make_verl_loss("ppo_clip")
    loss, metrics = loss_fn(lp.detach(), lp, adv, mask, "token-mean", cfg)
    assert loss.item() == pytest.approx(0.125, abs=1e-7)
    # seq-mean-token-sum over global_batch_size = 4: row sums (1, −0.5) → 0.5 / 4 · 2 = 0.25.
    assert loss_fn(lp.detach(), lp, adv, mask, "seq-mean-token-sum", cfg)[
        0
    ].item() == pytest.approx(0.25)
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/entrolab/response_tokens"] == 3
    with pytest.raises(EntrolabError, match="rollout_is_weights"):
        loss_fn(lp.detach(), lp, adv, mask, "token-mean", cfg, torch.ones(2, 2))


def test_advantage_adapter_groups_by_uid() -> None:
    # Groups interleaved in the batch: a = rows 0, 2, 4 with rewards (1, 0, 0); b = rows 1, 3, 5
    # with (0.5, 0.5, 2). RLOO: R_i − mean of the other two → a: (1, −0.5, −0.5);
    # b: (0.5 − 1.25, 0.5 − 1.25, 2 − 0.5) = (−0.75, −0.75, 1.5).
    rewards = torch.zeros(6, 3)
    rewards[:, -1] = torch.tensor([1.0, 0.5, 0.0, 0.5, 0.0, 2.0])  # outcome reward on last token
    mask = torch.ones(6, 3)
    mask[2, 2] = 0
    adv, ret = ev.make_verl_advantage("rloo")(rewards, mask, index=["a", "b"] * 3)
    expected = torch.tensor([1.0, -0.75, -0.5, -0.75, -0.5, 1.5])
    torch.testing.assert_close(adv, expected[:, None] * mask)
    assert adv is ret
    with pytest.raises(EntrolabError, match="equal size"):
        ev.make_verl_advantage("grpo")(rewards[:5], mask[:5], index=["a", "b", "a", "b", "a"])
    with pytest.raises(EntrolabError, match="uid"):
        ev.make_verl_advantage("grpo")(rewards, mask)


def test_verl_metric_names_keep_verls_meaning() -> None:
    # clip_cov: verl's pg_clipfrac is the zeroed fraction (touched_frac), not PPO's clip_frac;
    # kl_cov: verl's ppo_kl is mean |log r| and there is no clip fraction; REINFORCE (verl gpg)
    # reports none of verl's names; PPO-based losses: clip_frac / dual_clip_frac / ppo_kl.
    m = {"clip_frac": 0.3, "dual_clip_frac": 0.1, "touched_frac": 0.05, "ppo_kl": -0.2,
         "abs_log_ratio": 0.4}  # fmt: skip
    cc = ev.verl_metrics("clip_cov", m)
    assert cc["actor/pg_clipfrac"] == 0.05 and cc["actor/ppo_kl"] == -0.2
    assert "actor/pg_clipfrac_lower" not in cc and cc["actor/entrolab/clip_frac"] == 0.3
    kc = ev.verl_metrics("kl_cov", m)
    assert kc["actor/ppo_kl"] == 0.4 and "actor/pg_clipfrac" not in kc
    pc = ev.verl_metrics("ppo_clip", m)
    assert (pc["actor/pg_clipfrac"], pc["actor/pg_clipfrac_lower"], pc["actor/ppo_kl"]) == (
        0.3,
        0.1,
        -0.2,
    )
    assert not {"actor/pg_clipfrac", "actor/ppo_kl"} & set(ev.verl_metrics("reinforce", {}))


def test_params_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTROLAB_VERL_PARAMS", '{"forking_tokens": {"rho": 0.3}}')
    assert ev.params_from_env() == {"forking_tokens": {"rho": 0.3}}
    monkeypatch.setenv("ENTROLAB_VERL_PARAMS", "[1, 2]")
    with pytest.raises(EntrolabError, match="map names"):
        ev.params_from_env()
    monkeypatch.setenv("ENTROLAB_VERL_PARAMS", "{oops")
    with pytest.raises(EntrolabError, match="JSON"):
        ev.params_from_env()


@pytest.mark.skipif(HAS_VERL, reason="verl is installed here")
def test_register_without_verl_says_how_to_install() -> None:
    with pytest.raises(EntrolabError, match="make test-verl"):
        ev.register()


@pytest.mark.parametrize(("name", "reason"), [("ares", "group id"), ("clip_v", "full logits")])
def test_ares_and_clip_v_are_refused_with_the_reason(name: str, reason: str) -> None:
    # refused before verl is imported, so this runs in .venv (no verl) too
    with pytest.raises(EntrolabError, match=f"entrolab_{name} cannot run in verl: .*{reason}"):
        ev.register([name], advantages=False)
    assert set(ev.VERL_UNSUPPORTED) == {"ares", "clip_v"}


@needs_verl
def test_register_all_skips_the_unsupported_losses() -> None:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    done = ev.register(advantages=False)
    assert "entrolab_steer" in done and "entrolab_clip_b" in done
    assert not {"entrolab_ares", "entrolab_clip_v"} & set(done)
    assert not {"entrolab_ares", "entrolab_clip_v"} & set(POLICY_LOSS_REGISTRY)


# ------------------------------------------------------------------------------ with verl
def _actor_config(**policy_loss: object):  # type: ignore[no-untyped-def]
    from verl.workers.config import ActorConfig, PolicyLossConfig

    return ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1,
        policy_loss=PolicyLossConfig(**policy_loss),
    )  # fmt: skip


def _batch(seed: int, b: int = 6, t: int = 7):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    lp = (old + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).contiguous()
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    return old, lp, adv, mask


def _set_info(cfg, mask: torch.Tensor, dp: int) -> None:  # type: ignore[no-untyped-def]
    cfg.global_batch_info.update(
        dp_size=dp, batch_num_tokens=int(mask.sum()) * dp, global_batch_size=mask.shape[0] * dp,
        loss_scale_factor=mask.shape[1] + 3,
    )  # fmt: skip


@needs_verl
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name", ["ppo_clip", "dapo", "reinforce", "kl_cov", "clip_cov"])
def test_registered_loss_through_verl_lookup_equals_entrolab(name: str, agg: str) -> None:
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    ev.register([name], advantages=False, params={"clip_cov": {"clip_cov_lb": 0.0}})
    cfg = _actor_config(kl_cov_ratio=0.2, clip_cov_ratio=0.2)
    old, lp, adv, mask = _batch(1)
    _set_info(cfg, mask, dp=2)
    torch.manual_seed(3)  # clip_cov's random choice (global RNG, as verl)
    loss, _ = get_policy_loss_fn(ev.PREFIX + name)(old, lp, adv, mask, agg, cfg)
    (grad,) = torch.autograd.grad(loss, lp)
    params = ev.verl_loss_params(name, cfg, {"clip_cov_lb": 0.0} if name == "clip_cov" else {})
    inp = PolicyLossInput(
        logprobs=lp, old_logprobs=old, advantages=adv, response_mask=mask,
        global_tokens=cfg.global_batch_info["batch_num_tokens"],
        global_sequences=cfg.global_batch_info["global_batch_size"],
        max_response_length=cfg.global_batch_info["loss_scale_factor"],
    )  # fmt: skip
    torch.manual_seed(3)
    ref = 2 * POLICY_LOSSES.get(name)(inp, aggregation=agg, **params).loss
    (ref_grad,) = torch.autograd.grad(ref, lp)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


@needs_verl
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize(
    ("ours", "verls", "kw"),
    [
        ("ppo_clip", "vanilla", {}),
        ("kl_cov", "kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 1.0}),
        ("clip_cov", "clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0}),
    ],
)
def test_matches_verl_builtin_loss(ours: str, verls: str, kw: dict, agg: str) -> None:
    """Independent reference: verl's own implementation with the same config."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    ev.register([ours], advantages=False)
    for seed in range(3):
        cfg = _actor_config(**kw)
        _set_info(cfg, _batch(seed)[3], dp=2)
        old, lp, adv, mask = _batch(seed)
        out = {}
        for key in (ev.PREFIX + ours, verls):
            torch.manual_seed(seed)
            loss, metrics = get_policy_loss_fn(key)(old, lp, adv, mask.float(), agg, cfg)
            out[key] = (loss, torch.autograd.grad(loss, lp)[0], metrics)
        (a, ga, ma), (b, gb, mb) = out.values()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)  # verl: +1e-8 in seq lengths
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)
        # Same metrics under verl's names: vanilla's clip fractions and ppo_kl; clip_cov reports
        # its zeroed fraction as pg_clipfrac; kl_cov reports mean |log r| as ppo_kl.
        same = {
            "ppo_clip": [("actor/pg_clipfrac", "actor/pg_clipfrac"), ("actor/ppo_kl", "actor/ppo_kl"),
                         ("actor/pg_clipfrac_lower", "actor/pg_clipfrac_lower")],
            "clip_cov": [("actor/entrolab/touched_frac", "actor/pg_clipfrac"),
                         ("actor/pg_clipfrac", "actor/pg_clipfrac"), ("actor/ppo_kl", "actor/ppo_kl")],
            "kl_cov": [("actor/entrolab/abs_log_ratio", "actor/ppo_kl"),
                       ("actor/ppo_kl", "actor/ppo_kl")],
        }[ours]  # fmt: skip
        for k_ours, k_verl in same:
            assert ma[k_ours] == pytest.approx(mb[k_verl], rel=1e-6, abs=1e-12)


@needs_verl
@pytest.mark.parametrize(("ours", "verls"), [("grpo", "grpo"), ("rloo", "rloo"), ("dr_grpo", None)])
def test_advantages_match_verl_builtin(ours: str, verls: str | None) -> None:
    from verl.trainer.ppo import core_algos as ca

    ev.register([], advantages=[ours])
    g = torch.Generator().manual_seed(0)
    rewards = torch.zeros(12, 5)
    rewards[:, -1] = torch.randint(0, 3, (12,), generator=g).float()
    mask = torch.ones(12, 5)
    index = [f"q{i}" for i in torch.randperm(12, generator=g).remainder(3).tolist()]
    adv, _ = ca.get_adv_estimator_fn(ev.PREFIX + ours)(rewards, mask, index=index)
    if verls is None:  # Dr.GRPO = verl's grpo with norm_adv_by_std_in_grpo=False
        ref, _ = ca.compute_grpo_outcome_advantage(
            rewards.clone(), mask, index, norm_adv_by_std_in_grpo=False
        )
    else:
        ref, _ = ca.get_adv_estimator_fn(verls)(rewards.clone(), mask, index=index)
    torch.testing.assert_close(adv, ref, rtol=1e-6, atol=1e-6)


def _ppo_loss_case(seed: int = 0):  # type: ignore[no-untyped-def]
    """A verl worker micro-batch in no-padding layout: prompts of length 2, responses ≤ 4."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    g = torch.Generator().manual_seed(seed)
    b, p, r = 3, 2, 4
    resp_len = torch.tensor([4, 2, 3])
    mask = torch.arange(r)[None] < resp_len[:, None]
    am = torch.cat([torch.ones(b, p, dtype=torch.long), mask.long()], 1)
    total = int(am.sum())
    flat_lp = (-torch.rand(total, generator=g)).requires_grad_()
    flat_ent = torch.rand(total, generator=g) * 2
    data = TensorDict({
        "prompts": torch.zeros(b, p, dtype=torch.long), "responses": torch.zeros(b, r, dtype=torch.long),
        "attention_mask": am, "response_mask": mask.long(),
        "old_log_probs": -torch.rand(b, r, generator=g),
        "advantages": torch.randn(b, 1, generator=g).expand(b, r).contiguous(),
    }, batch_size=[b])  # fmt: skip
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=b)
    # Response token t of row i is predicted at flat position start_i + p − 1 + t.
    starts = torch.cat([torch.zeros(1, dtype=torch.long), am.sum(1).cumsum(0)[:-1]])
    pos = (starts[:, None] + p - 1 + torch.arange(r)[None]).clamp(max=total - 1)
    return data, flat_lp, flat_ent, pos, mask


@needs_verl
def test_entropy_reaches_forking_tokens_through_verl_ppo_loss() -> None:
    import verl.workers.utils.losses as vl

    ev.register(["forking_tokens"], advantages=False, params={"forking_tokens": {"rho": 0.5}})
    assert getattr(vl.ppo_loss, "__entrolab_entropy__", False)
    data, flat_lp, flat_ent, pos, mask = _ppo_loss_case()
    cfg = _actor_config(loss_mode=ev.PREFIX + "forking_tokens")
    loss, _ = vl.ppo_loss(cfg, {"log_probs": flat_lp, "entropy": flat_ent}, data)
    zero = torch.zeros(())
    inp = PolicyLossInput(
        logprobs=torch.where(mask, flat_lp[pos], zero),
        old_logprobs=data["old_log_probs"], advantages=data["advantages"], response_mask=mask,
        entropy=torch.where(mask, flat_ent[pos], zero), global_tokens=int(mask.sum()),
        global_sequences=3,
    )  # fmt: skip
    # verl's clip defaults (0.2 / 0.2, dual clip 3) replace entrolab's 0.28 clip-higher here.
    ref = POLICY_LOSSES.get("forking_tokens")(inp, rho=0.5, clip_high=0.2).loss
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-7)
    with pytest.raises(EntrolabError, match="calculate_entropy=True"):
        vl.ppo_loss(cfg, {"log_probs": flat_lp}, data)


@needs_verl
def test_passthrough_patches_modules_that_imported_ppo_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import verl.workers.utils.losses as vl

    original = getattr(vl.ppo_loss, "__wrapped__", vl.ppo_loss)
    monkeypatch.setattr(vl, "ppo_loss", original)
    fake = types.ModuleType("verl.workers.engine_workers")
    fake.ppo_loss = original
    monkeypatch.setitem(sys.modules, "verl.workers.engine_workers", fake)
    assert ev.enable_entropy_passthrough()
    assert fake.ppo_loss is vl.ppo_loss and vl.ppo_loss.__wrapped__ is original


@needs_verl
@pytest.mark.parametrize(
    ("name", "fixed"),
    [
        ("steer", {}),
        ("clip_b", {"mu": 1.0}),
        ("tea_rl", {}),
        ("aepo_arbitrary", {"target_entropy": 9.0, "weight_form": "first_order"}),
    ],
)
def test_entropy_losses_through_verl_ppo_loss_equal_entrolab(name: str, fixed: dict) -> None:
    """The entropy-shaping losses in verl's worker loss (entropy passed through) equal a direct
    entrolab call with the same parameters (verl's clip keys override entrolab's defaults)."""
    import verl.workers.utils.losses as vl

    ev.register([name], advantages=False, params={name: fixed})
    data, flat_lp, flat_ent, pos, mask = _ppo_loss_case()
    cfg = _actor_config(loss_mode=ev.PREFIX + name)
    loss, _ = vl.ppo_loss(cfg, {"log_probs": flat_lp, "entropy": flat_ent}, data)
    zero = torch.zeros(())
    inp = PolicyLossInput(
        logprobs=torch.where(mask, flat_lp[pos], zero),
        old_logprobs=data["old_log_probs"], advantages=data["advantages"], response_mask=mask,
        entropy=torch.where(mask, flat_ent[pos], zero), global_tokens=int(mask.sum()),
        global_sequences=3,
    )  # fmt: skip
    params = ev.verl_loss_params(name, cfg, fixed)
    ref = POLICY_LOSSES.get(name)(inp, **params).loss
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-7)
