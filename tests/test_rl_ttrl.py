"""Test-time RL (rl/ttrl.py, rl/explore.py) and the exploring-rollout losses: majority
pseudo-labels by hand, ETTRL damping by hand, ECHO's hybrid advantage and adaptive clip against
a transcription of the official code, echo_clip / aepo_agentic gradients by hand, trainer runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.errors import EntrolabError
from entrolab.rl.config import load_config
from entrolab.rl.losses import aepo_agentic, echo_clip, ppo_clip
from entrolab.rl.proxy import ProxySumTask
from entrolab.rl.trainer import Trainer
from entrolab.rl.ttrl import (
    echo_clip_epsilon,
    echo_hybrid_advantages,
    ettrl_damping,
    majority_pseudo_labels,
    masked_whiten,
    topk_confidence_probs,
)
from entrolab.rl.types import PolicyLossInput

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- pseudo-labels
def test_majority_pseudo_labels_by_hand() -> None:
    answers = ["4", "7", "4.0", None, None, None, None, None, "1", "2", "2", "1"]
    pl = majority_pseudo_labels(answers, 4)
    # group 0: 4 and 4.0 are one cluster (2 votes) vs 7 (1 vote); None does not vote
    assert pl.rewards[0].tolist() == [1, 0, 1, 0]
    assert pl.share[0] == pytest.approx(2 / 3) and pl.majority_row[0] == 0
    # group 1: no parseable answer -> no label, zero rewards
    assert pl.rewards[1].tolist() == [0, 0, 0, 0] and pl.majority_row[1] == -1
    assert float(pl.share[1]) == 0.0
    # group 2: a 2-2 tie goes to the answer counted first ("1")
    assert pl.rewards[2].tolist() == [1, 0, 0, 1] and pl.share[2] == pytest.approx(0.5)
    with pytest.raises(EntrolabError, match="groups of 5"):
        majority_pseudo_labels(answers, 5)


def test_ettrl_damping_by_hand() -> None:
    adv = torch.tensor([[1.0, -1.0, 0.5]])
    share = torch.tensor([0.8])
    h = torch.tensor([[0.2, 1.2, 0.7]])  # min-max normalised: 0, 1, 0.5
    out = ettrl_damping(adv, share, h, strength=0.5)
    # factors 1 − 0.5·0.8·(1 − H̃) = 1 − 0.4·[1, 0, 0.5] = [0.6, 1.0, 0.8]
    torch.testing.assert_close(out, torch.tensor([[0.6, -1.0, 0.4]]))
    # linear decay: at step 3 of decay_steps=4, λ = 0.5·(1 − 2/4) = 0.25 -> factor 0.8 on row 0
    out = ettrl_damping(adv, share, h, strength=0.5, step=3, decay_steps=4)
    assert float(out[0, 0]) == pytest.approx(0.8)
    out = ettrl_damping(adv, share, h, strength=0.5, step=9, decay_steps=4)  # λ = 0
    torch.testing.assert_close(out, adv)


# ------------------------------------------------------------ ECHO: transcribed reference
def _ref_masked_whiten(values, mask):
    """verl.utils.torch_functional masked_whiten (shift_mean=True) with masked_var unbiased."""
    mean = (values * mask).sum() / mask.sum()
    centered = values - mean
    variance = (centered**2 * mask).sum() / mask.sum()
    mask_sum = mask.sum()
    variance = variance * (mask_sum / (mask_sum - 1))
    return (values - mean) * torch.rsqrt(variance + 1e-8)


def _ref_echo(advantages, entropys, confidences, response_mask, uids, cfg):
    """user683/ECHO core_algos.apply_hybrid_advantage_shaping + _compute_tail_confidence,
    transcribed (dict config, float64)."""
    response_mask = response_mask.to(entropys.dtype)
    confidences = torch.clamp(confidences, 0.0, 1.0)
    entropy_z = _ref_masked_whiten(entropys, response_mask)
    inv_conf_z = _ref_masked_whiten(1.0 - confidences, response_mask)
    S = cfg["alpha"] * entropy_z + cfg["beta"] * inv_conf_z
    S = torch.clamp(S, -cfg["s_max"], cfg["s_max"])
    advantages = advantages * (1 + cfg["mult_coeff"] * S)
    group_mean = torch.zeros_like(S)
    for gid in set(uids):
        idx = torch.tensor([i for i, u in enumerate(uids) if u == gid])
        sub_v, sub_m = S[idx], response_mask[idx]
        group_mean[idx] = (sub_v * sub_m).sum() / sub_m.sum()
    advantages = advantages + cfg["add_coeff"] * (S - group_mean)
    advantages = advantages * response_mask
    tail_mask = torch.zeros_like(response_mask)
    lengths = response_mask.sum(dim=1).long()
    for i in range(confidences.size(0)):
        length = lengths[i].item()
        span = min(cfg["tail_window"], length)
        tail_mask[i, length - span : length] = 1.0
    tail_conf = ((confidences * tail_mask).sum(1) / tail_mask.sum(1).clamp(min=1.0)).clamp(0, 1)
    eps = cfg["eps_min"] + (cfg["eps_max"] - cfg["eps_min"]) * torch.sigmoid(
        cfg["kappa"] * (1.0 - tail_conf)
    )
    return advantages, eps


@pytest.mark.parametrize("seed", range(5))
def test_echo_hybrid_advantage_and_clip_match_the_official_code(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    r, t = 6, 9
    lengths = torch.randint(2, t + 1, (r,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    adv = torch.randn(r, 1, generator=g, dtype=torch.float64).expand(r, t) * mask
    ent = torch.rand(r, t, generator=g, dtype=torch.float64) * 3 * mask
    conf = torch.rand(r, t, generator=g, dtype=torch.float64) * mask
    uids = [0, 0, 0, 1, 1, 1]
    cfg = {"alpha": 1.0, "beta": 0.7, "s_max": 1.5, "mult_coeff": 0.3, "add_coeff": 0.2,
           "tail_window": 4, "eps_min": 0.05, "eps_max": 0.2, "kappa": 4.0}  # fmt: skip
    ref_adv, ref_eps = _ref_echo(adv, ent, conf, mask, uids, cfg)
    got = echo_hybrid_advantages(
        adv, ent, conf, mask, torch.tensor(uids), alpha=1.0, beta=0.7, s_max=1.5,
        mult_coeff=0.3, add_coeff=0.2,
    )  # fmt: skip
    torch.testing.assert_close(got, ref_adv, rtol=1e-10, atol=1e-12)
    eps = echo_clip_epsilon(conf, mask, tail_window=4)
    torch.testing.assert_close(eps, ref_eps, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(masked_whiten(ent, mask), _ref_masked_whiten(ent, mask.double()))


def test_topk_confidence_is_the_mean_top_k_probability() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05, 0.0 + 1e-9]]))
    assert float(topk_confidence_probs(lp, 5)[0]) == pytest.approx(
        (0.5 + 0.3 + 0.1 + 0.05 + 0.05) / 5
    )
    with pytest.raises(EntrolabError, match="top-5"):
        topk_confidence_probs(lp[:, :3], 5)


# ------------------------------------------------------------------------------- losses
def _inp(logp, old, adv, ent=None, info=None):
    mask = torch.ones_like(logp, dtype=torch.bool)
    return PolicyLossInput(
        logprobs=logp, old_logprobs=old, advantages=adv, response_mask=mask, entropy=ent,
        sequence_info=info,
    )  # fmt: skip


def test_echo_clip_uses_each_sequences_epsilon() -> None:
    # two sequences with the same ratio r = e^0.15 ≈ 1.1618 and A = 1; ε = 0.1 clips row 0
    # (1.1618 > 1.1) and ε = 0.2 does not clip row 1 -> grads: 0 for row 0, −A·r/2 for row 1
    logp = torch.full((2, 1), 0.15, dtype=torch.float64, requires_grad=True)
    old = torch.zeros(2, 1, dtype=torch.float64)
    adv = torch.ones(2, 1, dtype=torch.float64)
    out = echo_clip(_inp(logp, old, adv, info={"clip_epsilon": torch.tensor([0.1, 0.2])}))
    # loss = mean(−1.1·1, −e^0.15·1)
    assert float(out.loss.detach()) == pytest.approx(-(1.1 + math.exp(0.15)) / 2)
    out.loss.backward()
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0.0], [-math.exp(0.15) / 2]], dtype=torch.float64)
    )
    assert out.metrics["clip_frac_high"] == pytest.approx(0.5)
    # without per-sequence ε it is ppo_clip with ε = clip and no dual clip
    ref = ppo_clip(_inp(logp.detach(), old, adv), clip_low=0.2, clip_high=0.2, dual_clip=None)
    assert float(echo_clip(_inp(logp.detach(), old, adv)).loss) == pytest.approx(float(ref.loss))


def test_aepo_agentic_keeps_the_gradient_of_clipped_high_entropy_tokens() -> None:
    # 5 tokens, A = +1, ratio r = e^0.5 ≈ 1.65 > 1.28 on all (all clipped by DAPO bounds);
    # entropies 0..4: the 0.8 quantile is 3.2 -> only token 4 is "high entropy".
    logp = torch.full((1, 5), 0.5, dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 5, dtype=torch.float64)
    adv = torch.ones(1, 5, dtype=torch.float64)
    ent = torch.arange(5, dtype=torch.float64)[None]
    out = aepo_agentic(_inp(logp, old, adv, ent))
    # forward: every token is worth −1.28·A (clipped value); token-mean over 5
    assert float(out.loss.detach()) == pytest.approx(-1.28)
    out.loss.backward()
    # gradient: −(1 + ε_h)·A/5 on token 4 (r/sg(r) has derivative 1 in ℓ), 0 elsewhere
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0, 0, 0, 0, -1.28 / 5]], dtype=torch.float64)
    )
    assert out.metrics["hi_clip_grad_frac"] == 1.0 and out.metrics["high_entropy_frac"] == 0.2
    # plain clipping (sg_clip=False): the same value, no gradient at all
    logp.grad = None
    plain = aepo_agentic(_inp(logp, old, adv, ent), sg_clip=False)
    assert float(plain.loss.detach()) == pytest.approx(-1.28)
    plain.loss.backward()
    assert float(logp.grad.abs().sum()) == 0.0 and plain.metrics["hi_clip_grad_frac"] == 0.0
    with pytest.raises(EntrolabError, match="entropy"):
        aepo_agentic(_inp(logp, old, adv))


# ------------------------------------------------------------------------- trainer runs
class FirstCharTask(ProxySumTask):
    """Proxy prompts; the 'answer' of a reply is its first character, correct if it is a digit
    (gives a random tiny model parseable, disagreeing answers so votes are non-trivial)."""

    answer_kind = "text"

    def extract(self, item, response_text):
        return (response_text or "")[:1] or None

    def grade(self, item, response_text):
        from entrolab.tasks.base import Grade

        a = self.extract(item, response_text)
        ok = a is not None and a.isdigit()
        return Grade(ok, a, "correct" if ok else "wrong", float(ok))


BASE = [
    "model.name=tiny",
    "task.spec=proxy",
    "task.train_items=32",
    "task.eval_items=2",
    "rollout.prompts_per_step=2",
    "rollout.group_size=2",
    "rollout.max_new_tokens=6",
    "rollout.chat_template=false",
    "algorithm.micro_batch_size=8",
    "optim.lr=1e-3",
    "eval.every=0",
    "eval.at_start=false",
    "eval.samples=2",
    "monitor.probe_prompts=0",
    "progress=false",
    "tensorboard=false",
    "steps=1",
]


def _run(tmp_path, *extra):
    tr = Trainer(load_config(None, [*BASE, *extra]), tmp_path, task=FirstCharTask())
    return tr, tr.train()[-1]


def test_ttrl_votes_over_n_vote_and_trains_on_the_first_g(tmp_path) -> None:
    tr, rec = _run(tmp_path, "explore.reward=majority", "explore.vote_samples=4")
    assert 0.0 <= rec["ttrl/label_acc"] <= 1.0 and rec["ttrl/majority_share"] > 0
    assert rec["loss/response_tokens"] <= 2 * 2 * 6  # 2 prompts × G=2 rows trained on
    # the votes: regenerate the 4 samples per prompt and vote by hand
    items = tr._batch_items(1)
    from entrolab.rl.rollout import prompt_seeds

    cfg = tr._gen_config(4, 1.0)
    tr2 = Trainer(load_config(None, [*BASE]), tmp_path / "fresh", task=FirstCharTask())
    traces = tr2.backend.generate([it.prompt for it in items], cfg, seeds=prompt_seeds(0, 1, 2))
    shares = []
    for i in range(2):
        firsts = [t.text[:1] or None for t in traces if t.prompt_index == i]
        counted = [a for a in firsts if a is not None]
        top = max(counted.count(a) for a in counted) if counted else 0
        shares.append(top / len(counted) if counted else 0.0)
    assert rec["ttrl/majority_share"] == pytest.approx(np.mean(shares))


@pytest.mark.parametrize(
    "extra",
    [
        ("explore.mode=tree", "explore.points=1", "explore.branches=1"),
        ("explore.mode=tree", "explore.prefix=prompt", "explore.reward=majority",
         "explore.shaping=ettrl"),
        ("explore.mode=tree", "explore.rule=low_confidence", "explore.reward=majority",
         "explore.shaping=echo", "algorithm.loss=echo_clip"),
        ("explore.mode=tree", "explore.rule=echo", "explore.points=1", "explore.branches=1",
         "explore.reward=majority", "explore.shaping=echo", "algorithm.loss=echo_clip",
         "explore.echo_tree={min_depth: 1, entropy_high: 0.3, entropy_low: 0.0, "
         "branch_threshold: 4.0, entropy_delta_threshold: -1.0, prune_threshold: 3.4}"),
        # ECHO's official group shape: 1 root per prompt, its branches, fresh fills to 1·(1+3)
        ("explore.mode=tree", "explore.rule=echo", "rollout.group_size=1", "explore.points=1",
         "explore.branches=3", "explore.reward=majority", "explore.shaping=echo",
         "algorithm.loss=echo_clip", "algorithm.mini_batches=1",
         "explore.echo_tree={min_depth: 1, entropy_high: 0.3, entropy_low: 0.0, "
         "branch_threshold: 4.0, entropy_delta_threshold: -1.0, prune_threshold: 3.4}"),
        ("explore.mode=cure", "explore.cure_n2=1", "explore.cure_top_k=3", "algorithm.loss=dapo"),
        ("explore.mode=cure", "explore.cure_n2=1", "explore.cure_min_chars=1",
         "explore.stage1_steps=1", "steps=2"),
        ("explore.mode=agent", "algorithm.loss=aepo_agentic", "explore.agent_max_turns=2"),
        ("explore.mode=agent", "explore.agent_max_turns=2", "algorithm.advantage=grpo+empg",
         "algorithm.advantage_params={step_delimiter: '<turn>'}"),
    ],
)  # fmt: skip
def test_exploring_recipes_run_a_step(tmp_path, extra) -> None:
    _, rec = _run(tmp_path, *extra)
    assert math.isfinite(rec["loss/loss"])
    if "explore.mode=tree" in extra:
        g = 2 * (1 + 2 * 2) if "explore.points=1" not in extra else 2 * (1 + 1)
        if "rollout.group_size=1" in extra:
            g = 1 * (1 + 1 * 3)
        assert rec["explore/rows"] == 2 * g
    if "explore.shaping=echo" in extra:
        assert 0.05 <= rec["loss/clip_epsilon"] <= 0.2
    if "explore.rule=echo" in extra:  # the tiny model branches at every root (see test_rl_echo)
        assert rec["echo/branch_root_frac"] == 1.0 and rec["echo/branches_planned"] > 0
    if "explore.mode=cure" in extra and "steps=2" not in extra:
        assert rec["explore/rows"] == 2 * (2 + 2 * 1)
    if "explore.stage1_steps=1" in extra:  # step 2 is CURE's stage 2: plain i.i.d. groups
        assert rec["explore/stage"] == 2.0 and "explore/rows" not in rec
    if "explore.mode=agent" in extra:  # the random tiny model makes no tool call
        assert rec["agent/branch_frac"] == 0.0
        assert rec["agent/root_frac"] + rec["agent/fill_frac"] == 1.0
        assert rec["agent/tool_token_frac"] >= 0.0
        assert "loss/high_entropy_frac" in rec or rec["shaper/empg/steps_mean"] == 1.0  # 1 turn


def test_explore_config_errors() -> None:
    with pytest.raises(EntrolabError, match="unknown echo settings"):
        load_config(None, ["explore.echo={alpha: 1, gamma: 2}"])
    with pytest.raises(EntrolabError, match="vote_samples"):
        load_config(None, ["explore.mode=tree", "explore.vote_samples=8"])
