"""ZIP-RC planned pruning: a hand-computed decision, the official offline-pruning rule
(transcribed below from rohinmanvi/ZIP-RC src/zip_offline_prune_7.py @21e32aa) on random joints,
and the strategy carrying a planned prune out with every token counted."""

# The reference functions are transcribed as written (their names, annotations, idioms):
# ruff: noqa: RUF005, RUF059, UP006, UP035

from __future__ import annotations

from typing import List

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.errors import EntrolabError
from entrolab.inference import make_strategy
from entrolab.inference.zip_rc import ZipRcHead
from entrolab.inference.zip_rc_plan import choose_action, expected_max, plan_prune
from entrolab.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---------------------------------------------------------------- reference (transcribed)
# From src/zip_offline_prune_7.py: _expected_max (pure-NumPy path), _modify_for_prune and
# _choose_action with selection_geom_alpha = 1, norm_tokens_per_sample = 1 and no switch
# penalty (the defaults that make its value term E[max value]); _geom_interpolate inlined.
TOL = 1e-12
EPS_GEOM = 1e-12


def _geom_interpolate(avg_val, max_val, alpha, eps=EPS_GEOM):
    a = float(avg_val)
    m = float(max_val)
    if a <= 0.0 or m <= 0.0:
        return (1.0 - alpha) * a + alpha * m
    return float(np.exp((1.0 - alpha) * np.log(a + eps) + alpha * np.log(m + eps)))


def ref_expected_max(marginals, bin_values):
    if not marginals:
        return 0.0
    idx = np.argsort(np.array(bin_values, dtype=np.float64))
    vals_sorted = np.array(bin_values, dtype=np.float64)[idx]
    cdfs = [np.cumsum(m[idx]) for m in marginals]
    out = 0.0
    prev = 0.0
    for b in range(len(vals_sorted)):
        f_upper = 1.0
        for c in cdfs:
            f_upper *= c[b]
        if b == 0:
            p_bin = f_upper
        else:
            p_bin = f_upper - prev
        out += p_bin * vals_sorted[b]
        prev = f_upper
    return float(out)


def ref_modify_for_prune(dist, prune_at_bin, reward_values):
    if prune_at_bin is None:
        return dist
    V, L = dist.shape
    mod = dist.copy()
    collapsed = mod[:, prune_at_bin:].sum()
    mod[:, prune_at_bin:] = 0.0
    if collapsed > 0:
        vals = np.array(reward_values, dtype=np.float64)
        zero_idx = int(np.argmin(np.abs(vals - 0.0)))
        mod[zero_idx, prune_at_bin] += collapsed
    return mod


def ref_choose_action(joints, pruned_flags, reward_values, length_bins, c_pt, c_seq,
                      unfinished_mask, selection_geom_alpha=1.0, norm_tokens_per_sample=1.0):  # fmt: skip
    V, L = joints[0].shape
    n = len(joints)
    unpruned = [i for i, p in enumerate(pruned_flags) if not p]
    if not unpruned:
        return set(), None, -1e30
    reward_values_np = np.array(reward_values, dtype=np.float64)
    mids = [(length_bins[i] + length_bins[i + 1]) / 2.0 for i in range(L)]
    mids_np = np.array(mids, dtype=np.float64)
    zero_idx = int(np.argmin(np.abs(reward_values_np - 0.0)))
    pruned_arr = np.array(pruned_flags, dtype=bool)
    reward_margs = [j.sum(axis=1).astype(np.float64) for j in joints]
    token_margs = [j.sum(axis=0).astype(np.float64) for j in joints]
    token_prefix = [np.concatenate([[0.0], np.cumsum(tm, dtype=np.float64)]) for tm in token_margs]
    reward_prefix = [np.concatenate([np.zeros((V, 1), dtype=np.float64),
                                     np.cumsum(j.astype(np.float64), axis=1)], axis=1)
                     for j in joints]  # fmt: skip
    reward_margs_prune, token_margs_prune = [], []
    for j in joints:
        tot = float(j.sum())
        rm0 = np.zeros(V, dtype=np.float64)
        rm0[zero_idx] = tot
        tm0 = np.zeros(L, dtype=np.float64)
        tm0[0] = tot
        reward_margs_prune.append(rm0)
        token_margs_prune.append(tm0)
    e_vals = [float(np.dot(reward_margs[i], reward_values_np)) for i in range(n)]
    e_toks = [float(np.dot(token_margs[i], mids_np)) for i in range(n)]
    order_tokens = sorted(unpruned, key=lambda i: e_toks[i])
    order_reward = sorted(unpruned, key=lambda i: -e_vals[i])
    prefix_t = np.zeros((len(order_tokens) + 1, n), dtype=bool)
    for k in range(1, len(order_tokens) + 1):
        prefix_t[k, order_tokens[:k]] = True
    prefix_r = np.zeros((len(order_reward) + 1, n), dtype=bool)
    for k in range(1, len(order_reward) + 1):
        prefix_r[k, order_reward[:k]] = True

    def group_obj_from_marginals(marg_vals: List[np.ndarray], marg_tok: List[np.ndarray],
                                 keep_mask, active_mask):  # fmt: skip
        kept_idxs = np.nonzero(keep_mask)[0].tolist()
        if kept_idxs:
            emax_val = ref_expected_max([marg_vals[i] for i in kept_idxs], reward_values)
            e_vals_kept = [float(np.dot(marg_vals[i], reward_values_np)) for i in kept_idxs]
            eavg_val = float(sum(e_vals_kept) / len(e_vals_kept)) if e_vals_kept else 0.0
        else:
            emax_val = 0.0
            eavg_val = 0.0
        e_value_term = _geom_interpolate(eavg_val, emax_val, float(selection_geom_alpha))
        active_idxs = np.nonzero(active_mask)[0].tolist()
        if active_idxs:
            active_tok_margs = [marg_tok[i] for i in active_idxs]
            e_max_tok = ref_expected_max(active_tok_margs, mids)
            e_sum_rem = float(sum(float(np.dot(m, mids_np)) for m in active_tok_margs))
        else:
            e_max_tok = 0.0
            e_sum_rem = 0.0
        denom = max(float(norm_tokens_per_sample), 1e-12)
        return e_value_term - c_pt * (e_sum_rem / denom) - c_seq * (e_max_tok / denom)

    best_obj, best_mask, best_B, best_keep_size = -1e30, None, None, -1
    finished_mask = (~np.asarray(unfinished_mask, dtype=bool)) & (~pruned_arr)
    future_options = [None] + list(range(1, L))
    seen = set()
    for B in future_options:
        keep_rm, keep_tm = [None] * n, [None] * n
        for i in range(n):
            if B is None:
                keep_rm[i], keep_tm[i] = reward_margs[i], token_margs[i]
            else:
                total_mass = float(joints[i].sum())
                rmB = reward_prefix[i][:, B].copy()
                collapsedB = total_mass - float(token_prefix[i][B])
                if collapsedB > 0:
                    rmB[zero_idx] += collapsedB
                tmB = np.zeros_like(token_margs[i])
                if B > 0:
                    tmB[:B] = token_margs[i][:B]
                tmB[B] = collapsedB
                keep_rm[i], keep_tm[i] = rmB, tmB
        for k1 in range(len(order_tokens) + 1):
            mask_t = prefix_t[k1]
            for k2 in range(len(order_reward) + 1):
                S_mask = (mask_t | prefix_r[k2]) | finished_mask
                key = (B, S_mask.tobytes())
                if key in seen:
                    continue
                seen.add(key)
                keep_mask = S_mask & (~pruned_arr)
                active_mask = keep_mask & unfinished_mask
                marg_vals = [
                    keep_rm[i] if keep_mask[i] else reward_margs_prune[i] for i in range(n)
                ]
                marg_tok = [keep_tm[i] if keep_mask[i] else token_margs_prune[i] for i in range(n)]
                g = group_obj_from_marginals(marg_vals, marg_tok, keep_mask, active_mask)
                curr_keep_size = int(keep_mask.sum())
                if g > best_obj + TOL:
                    best_obj, best_mask, best_B, best_keep_size = (
                        g,
                        S_mask.copy(),
                        B,
                        curr_keep_size,
                    )
                elif abs(g - best_obj) <= TOL and curr_keep_size > best_keep_size:
                    best_mask, best_B, best_keep_size = S_mask.copy(), B, curr_keep_size
    best_S = set(np.nonzero(best_mask)[0]) if best_mask is not None else set(unpruned)
    return best_S, best_B, best_obj


# ---------------------------------------------------------------------------------- tests
R = np.array([0.0, 1.0])
EDGES = [0, 8, 16, 32]  # the reference's length bins → mids 4, 12, 24
MIDS = np.array([4.0, 12.0, 24.0])
# right only when short: (R=1, len bin 0) 0.5; (R=0, len bin 2) 0.5
SHORT_OR_WRONG = np.array([[0.0, 0.0, 0.5], [0.5, 0.0, 0.0]])


def test_planned_prune_by_hand() -> None:
    # plan at bin 1: the 0.5 in bin 2 moves to (R=0, bin 1); the input is not modified
    planned = plan_prune(SHORT_OR_WRONG, 1, R)
    np.testing.assert_allclose(planned, [[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]])
    assert SHORT_OR_WRONG[0, 2] == 0.5
    np.testing.assert_allclose(plan_prune(SHORT_OR_WRONG, None, R), SHORT_OR_WRONG)
    # one sample, λ_c = 0.01: keep, no plan: E[R] 0.5 − 0.01·(0.5·4 + 0.5·24) = 0.5 − 0.14 = 0.36
    # keep, plan bin 1: 0.5 − 0.01·(0.5·4 + 0.5·12) = 0.5 − 0.08 = 0.42 (the best);
    # plan bin 2: = no plan, 0.36; drop it: 0
    keep, b, g = choose_action(SHORT_OR_WRONG[None], R, MIDS, lam_c=0.01)
    assert (keep, b) == ([0], 1) and g == pytest.approx(0.42)
    keep, b, g = choose_action(SHORT_OR_WRONG[None], R, MIDS, lam_c=0.01, future=False)
    assert (keep, b) == ([0], None) and g == pytest.approx(0.36)
    # a finished sample is always kept and costs no tokens; a pruned one is never kept
    two = np.stack([SHORT_OR_WRONG, SHORT_OR_WRONG])
    keep, b, g = choose_action(two, R, MIDS, finished=[True, False], pruned=[False, True],
                               lam_c=1.0)  # fmt: skip
    assert keep == [0] and g == pytest.approx(0.5)
    assert expected_max(np.zeros((0, 2)), R) == 0.0
    with pytest.raises(EntrolabError, match="prune_bin"):
        plan_prune(SHORT_OR_WRONG, 3, R)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 10**6), st.floats(0, 0.02), st.floats(0, 0.02))
def test_choose_action_matches_the_official_rule(s, seed, lam_c, lam_l) -> None:
    rng = np.random.default_rng(seed)
    n_r = int(rng.integers(2, 4))
    rv = np.sort(rng.choice([0.0, 0.25, 0.5, 1.0], size=n_r, replace=False))
    joint = rng.dirichlet(np.ones(n_r * 3), size=s).reshape(s, n_r, 3)
    finished = rng.random(s) < 0.3
    pruned = (rng.random(s) < 0.2) & ~finished
    keep, b, g = choose_action(joint, rv, MIDS, finished=finished, pruned=pruned, lam_c=lam_c,
                               lam_l=lam_l)  # fmt: skip
    ref_s, ref_b, ref_g = ref_choose_action(list(joint), pruned.tolist(), rv.tolist(), EDGES,
                                            lam_c, lam_l, ~finished)  # fmt: skip
    if not (~pruned).any():
        assert keep == [] and b is None
        return
    assert keep == sorted(int(i) for i in ref_s) and b == ref_b
    assert g == pytest.approx(ref_g, abs=1e-9)
    for k in range(s):
        for bb in (None, 1, 2):
            np.testing.assert_allclose(plan_prune(joint[k], bb, rv),
                                       ref_modify_for_prune(joint[k], bb, rv.tolist()))  # fmt: skip
    m = joint.sum(1)
    assert expected_max(m, MIDS) == pytest.approx(ref_expected_max(list(m), MIDS.tolist()))


class _FixedHead(ZipRcHead):
    """A head that predicts the same joint everywhere (edges 8, 16 → length values 4, 12, 20)."""

    def __init__(self, joint: np.ndarray) -> None:
        super().__init__(probe=None, length_edges=(8, 16))  # type: ignore[arg-type]
        self.fixed = joint

    @property
    def layer(self) -> int:
        return 1

    def check_backend(self, backend) -> None:
        return None

    def joint(self, hidden) -> np.ndarray:
        return np.repeat(self.fixed[None], len(hidden), 0)


def test_strategy_carries_out_the_planned_prune(tiny_backend) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(2, seed=0)
    head = _FixedHead(SHORT_OR_WRONG)
    lv = head.length_values  # 4, 12, 20
    np.testing.assert_allclose(lv, [4.0, 12.0, 20.0])
    strat = make_strategy("zip-rc", head=head, budget=4, prune_at=3, lam_c=0.01,
                          future_prune=True, max_new_tokens=40, temperature=1.0)  # fmt: skip
    # n₀: U(n) = 1 − 0.5ⁿ − 0.01·12n → 0.38, 0.51, 0.515, 0.4575 → 3
    for o in strat.run(tiny_backend, task, items):
        assert o.meta["n0"] == 3
        done = o.generated_tokens  # the tiny random model never stops early in practice
        keep_all = o.meta["kept"] + o.meta["planned_pruned"]
        expected_keep, expected_b, _ = choose_action(np.repeat(SHORT_OR_WRONG[None], 3, 0),
                                                     [0.0, 1.0], lv, lam_c=0.01)  # fmt: skip
        assert sorted(keep_all) == expected_keep and o.meta["future_bin"] == expected_b == 1
        # planned prune at bin 1 = after 8 more tokens: 3 prefixes of 3 tokens + 8 per survivor;
        # none finished within 8, so all leave the vote and there is no answer
        assert done == 3 * 3 + 8 * len(keep_all)
        assert o.meta["planned_pruned"] == expected_keep and o.answer is None
