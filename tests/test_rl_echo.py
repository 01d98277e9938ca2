"""ECHO's DeepConf branching and pruning (rl/echo.py): statistics, branch plan and pruning against a
transcription of the official code (user683/ECHO deepconf_branching.py), widths by hand, the
official defaults never firing on a top-10 distribution, and the tree rollout (widths per root,
online pruning of branch rows equal to the after-the-fact rule, group cut/fill)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.echo import (
    ECHO_BRANCH_DEFAULTS,
    deepconf_step_stats,
    echo_branch_plan,
    echo_branch_width,
    echo_prune,
    echo_rollout,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------- official code, transcribed
class _RefController:
    """user683/ECHO ``DeepConfBranchController`` (HEAD 6f7b311), transcribed: plan_branch,
    should_prune, _compute_branch_width, _compute_step_stats, _convert_to_probs, _entropy,
    _confidence, _compute_prune_penalty. One fix: ``cfg.group_window`` (the official dataclass
    misspells the field, so the official code raises AttributeError/TypeError)."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.eps = 1e-9

    def plan_branch(self, steps):
        if len(steps) == 0:
            return None
        stats = self.step_stats(steps)
        c = self.cfg
        min_depth = min(c["min_depth"], len(stats) - 1)
        for idx in range(min_depth, len(stats)):
            s = stats[idx]
            if (
                s["entropy"] >= c["entropy_high"]
                and s["group_conf"] <= c["branch_threshold"]
                and s["delta_entropy"] >= c["entropy_delta_threshold"]
            ):
                width = self.width(s["entropy"], s["group_conf"])
                width = min(max(width, c["min_branches"]), c["max_branches"])
                if width <= 1:
                    return None
                return idx, width
        return None

    def should_prune(self, steps):
        if len(steps) == 0:
            return None
        stats = self.step_stats(steps)
        c = self.cfg
        running_min = np.inf
        tails: list[float] = []
        decline = rise = 0
        for idx, s in enumerate(stats):
            running_min = min(running_min, s["group_conf"])
            tails.append(s["tail_conf"])
            decline = decline + 1 if len(tails) >= 2 and tails[-1] < tails[-2] else 0
            rise = rise + 1 if s["delta_entropy"] > 0 else 0
            if running_min < c["prune_threshold"]:
                return idx, "low_confidence", self.penalty(s)
            if decline >= c["tail_decline_steps"] and s["tail_conf"] <= c["tail_threshold"]:
                return idx, "tail_decline", self.penalty(s)
            if rise >= c["delta_rise_steps"] and s["delta_entropy"] > c["delta_upper"]:
                return idx, "entropy_spike", self.penalty(s)
        return None

    def width(self, entropy, group_conf):
        c = self.cfg
        span = max(c["entropy_high"] - c["entropy_low"], self.eps)
        th = c["alpha"] * (entropy - c["entropy_low"]) / span
        tc = (
            c["beta"]
            * (group_conf - c["branch_threshold"])
            / max(abs(c["branch_threshold"]), self.eps)
        )
        raw = c["min_branches"] + th - tc
        return int(np.clip(np.round(raw), c["min_branches"], c["max_branches"]))

    def step_stats(self, steps):
        c = self.cfg
        ents, confs, out = [], [], []
        for step in steps:
            items = sorted(step.items(), key=lambda kv: kv[1], reverse=True)
            ids = [t for t, _ in items][: c["logprob_top_k"]]
            lps = np.array([step[t] for t in ids], dtype=np.float64)
            probs = np.exp(lps - (np.max(lps) if len(lps) else 0.0))
            probs = probs / max(np.sum(probs), self.eps)
            pc = np.clip(probs, self.eps, 1.0)
            ent = float(-np.sum(pc * np.log(pc)))
            k = min(len(probs), c["confidence_top_k"])
            conf = float(-np.mean(np.log(np.sort(probs)[-k:] + self.eps))) if k else 0.0
            ents.append(ent)
            confs.append(conf)
            tail = confs[max(0, len(confs) - c["tail_window"]) :]
            tail_val = float(np.mean(tail)) if tail else conf
            group = float(np.mean(confs[max(0, len(confs) - c["group_window"]) :]))
            prev = ents[max(0, len(ents) - c["entropy_window"] - 1) : len(ents) - 1]
            bar = np.mean(prev) if prev else ents[-1]
            bottom = max(1, int(0.1 * len(probs)))
            out.append(
                {
                    "entropy": ent,
                    "confidence": conf,
                    "tail_conf": tail_val,
                    "group_conf": group,
                    "delta_entropy": ent - bar,
                    "c_bot10": float(np.mean(np.sort(probs)[:bottom])),
                }
            )
        return out

    def penalty(self, s):
        c = self.cfg
        return (
            c["prune_lambda_1"] * s["tail_conf"]
            - c["prune_lambda_2"] * (1 - s["c_bot10"])
            - c["prune_lambda_3"]
        )


def _random_row(g: torch.Generator, t: int, k: int, sharp: float) -> torch.Tensor:
    """[T, K] top-k log-probs (descending) of random distributions over 40 tokens."""
    logits = torch.randn(t, 40, generator=g, dtype=torch.float64) * sharp
    return torch.log_softmax(logits, -1).sort(-1, descending=True).values[:, :k]


def _as_steps(row: torch.Tensor) -> list[dict[int, float]]:
    return [{j: float(v) for j, v in enumerate(r.tolist())} for r in row]


def _random_params(rng: np.random.Generator) -> dict:
    # thresholds at the scale of top-k statistics so that every rule fires on some rows
    return {
        **ECHO_BRANCH_DEFAULTS,
        "min_depth": int(rng.integers(0, 4)),
        "entropy_window": int(rng.integers(1, 5)),
        "group_window": int(rng.integers(1, 5)),
        "tail_window": int(rng.integers(1, 9)),
        "tail_decline_steps": int(rng.integers(1, 4)),
        "tail_threshold": float(rng.uniform(1.5, 4.0)),
        "delta_rise_steps": int(rng.integers(1, 4)),
        "delta_upper": float(rng.uniform(0.0, 0.5)),
        "entropy_high": float(rng.uniform(0.5, 2.0)),
        "entropy_low": float(rng.uniform(0.0, 0.5)),
        "branch_threshold": float(rng.uniform(1.6, 4.0)),
        "entropy_delta_threshold": float(rng.uniform(-0.5, 0.3)),
        "max_branches": int(rng.integers(2, 6)),
        "alpha": float(rng.uniform(0.5, 3.0)),
        "beta": float(rng.uniform(0.0, 2.0)),
        "prune_threshold": float(rng.uniform(1.6, 2.6)),
        "logprob_top_k": int(rng.integers(5, 13)),
        "confidence_top_k": int(rng.integers(1, 6)),
    }


@pytest.mark.parametrize("seed", range(40))
def test_plan_and_prune_match_the_official_code(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = _random_params(rng)
    row = _random_row(g, int(rng.integers(1, 14)), 12, float(rng.uniform(0.3, 4.0)))
    ref = _RefController(params)
    stats = deepconf_step_stats(row, params)
    for t, want in enumerate(ref.step_stats(_as_steps(row))):
        for key, value in want.items():
            assert float(stats[key][t]) == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert echo_branch_plan(stats, params) == ref.plan_branch(_as_steps(row))
    got, want = echo_prune(row, params), ref.should_prune(_as_steps(row))
    assert (got is None) == (want is None)
    if got is not None:
        assert got[:2] == want[:2] and got[2] == pytest.approx(want[2], rel=1e-10)


def test_the_random_cases_exercise_every_rule() -> None:
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        params = _random_params(rng)
        row = _random_row(g, int(rng.integers(1, 14)), 12, float(rng.uniform(0.3, 4.0)))
        ref = _RefController(params)
        seen.add("plan" if ref.plan_branch(_as_steps(row)) else "no plan")
        hit = ref.should_prune(_as_steps(row))
        seen.add(hit[1] if hit else "kept")
    assert seen >= {"plan", "no plan", "low_confidence", "tail_decline", "entropy_spike", "kept"}


def test_branch_width_by_hand() -> None:
    # official defaults: H_lo=1, H_hi=3.5, tau=1.2, alpha=2, beta=1, widths 1..4
    # H=3.0, C=1.0: 1 + 2*(3-1)/2.5 - (1.0-1.2)/1.2 = 1 + 1.6 + 0.1667 = 2.767 -> 3
    assert echo_branch_width(3.0, 1.0) == 3
    # H=1.0, C=1.2: 1 + 0 - 0 = 1
    assert echo_branch_width(1.0, 1.2) == 1
    # H=3.5, C=0.0: 1 + 2 + 1 = 4 (= max); H=4, C=0: 4.4 -> clipped to 4
    assert echo_branch_width(3.5, 0.0) == 4 and echo_branch_width(4.0, 0.0) == 4
    # round half to even, as numpy: H=1.625, C=1.2 -> 1 + 2*0.625/2.5 = 1.5 -> 2
    assert echo_branch_width(1.625, 1.2) == 2


def test_official_defaults_never_branch_or_prune_on_low_confidence_over_top10() -> None:
    # H over 10 renormalised probabilities <= log 10 = 2.30 < entropy_high = 3.5, and
    # C = -mean log(top-5) >= log 5 = 1.61 > branch_threshold = 1.2 > prune_threshold = 0.4
    g = torch.Generator().manual_seed(0)
    for sharp in (0.01, 1.0, 10.0):
        row = _random_row(g, 12, 10, sharp)
        st = deepconf_step_stats(row)
        assert float(st["entropy"].max()) <= math.log(10) + 1e-9
        assert float(st["confidence"].min()) >= math.log(5) - 1e-6
        assert echo_branch_plan(st) is None
        hit = echo_prune(row)
        assert hit is None or hit[1] == "entropy_spike"


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(EntrolabError, match="unknown ECHO branching settings"):
        deepconf_step_stats(torch.zeros(2, 3), {"gentropy_roup_window": 4})


# ------------------------------------------------------------------------- tree rollout
CFG = GenerationConfig(
    num_samples=2, max_new_tokens=10, temperature=1.0, chat_template=False, topk_logprobs=10
)
PROMPTS = ["Count to three.", "Name a colour."]
# tiny random model (H ~ 0.3-0.9 nats over its top-10, C ~ 3-5): every root branches at t = 1
# with width 3; pruning cuts some roots and some branches at different tokens (seeds 3, 4);
# sampled first branch tokens (the default top_w: tests/test_rl_echo_top_w.py)
PARAMS = {
    "min_depth": 1,
    "entropy_high": 0.3,
    "entropy_low": 0.0,
    "branch_threshold": 4.0,
    "entropy_delta_threshold": -1.0,
    "prune_threshold": 3.4,
    "max_branches": 3,
    "branch_tokens": "sample",
}


def test_echo_rollout_widths_pruning_and_group_size(tiny_backend) -> None:
    tr, m = echo_rollout(tiny_backend, PROMPTS, CFG, [3, 4], size=6, params=PARAMS)
    assert len(tr.rollout) == 12 and tr.rollout.group_size == 6
    assert m["echo/branch_root_frac"] > 0 and m["echo/branches_planned"] > 0
    roots = tiny_backend.generate(PROMPTS, CFG, seeds=[3, 4])
    n_branch = 0
    for r, (par, pos) in enumerate(zip(tr.parent, tr.branch_position, strict=True)):
        if par < 0:
            continue
        n_branch += 1
        root = roots[tr.traces[par].prompt_index * 2 + tr.traces[par].sample_index]
        plan = echo_branch_plan(deepconf_step_stats(root.topk_logprobs, PARAMS), PARAMS)
        assert plan is not None and plan[0] == pos  # branches sit at the root's plan point
        own = tr.traces[r].topk_logprobs[pos:]
        hit = echo_prune(own, PARAMS)  # online pruning = the rule on the branch's own tokens
        if tr.traces[r].finish_reason == "stopped":
            assert hit is not None and hit[0] == len(own) - 1
        else:
            assert hit is None or hit[0] == len(own) - 1
    assert n_branch == 8  # 2 prompts x 2 roots x (w - 1 = 2)
    ends = [t.finish_reason for t, p in zip(tr.traces, tr.parent, strict=True) if p >= 0]
    assert "stopped" in ends and "length" in ends  # pruned and kept branches both occur
    for k in range(len(tr.traces)):  # pruned roots are cut right after their pruning token
        if tr.parent[k] < 0 and tr.traces[k].finish_reason == "stopped":
            assert echo_prune(tr.traces[k].topk_logprobs, PARAMS)[0] == len(tr.traces[k]) - 1
    # without pruning: the roots are the plain generation
    tr2, m2 = echo_rollout(tiny_backend, PROMPTS, CFG, [3, 4], size=6, params=PARAMS, prune=False)
    assert m2["echo/pruned_root_frac"] == 0.0
    firsts = [t for t, p in zip(tr2.traces, tr2.parent, strict=True) if p < 0][:2]
    assert firsts[0].token_ids.tolist() == roots[0].token_ids.tolist()
