"""Tree and CURE rollouts for RL (rl/tree_rollout.py): fixed group layout, prefix-as-prompt rows
score exactly like the whole branch, shared credit by hand, CURE critical positions."""

from __future__ import annotations

import pytest
import torch

from entrolab.backends.tree import generate_tree
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.rollout import response_logprobs
from entrolab.rl.tree_rollout import (
    critical_positions,
    cure_rollout,
    cure_rule,
    shared_credit,
    tree_rollout,
)
from entrolab.types import Trace

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = GenerationConfig(
    num_samples=2, max_new_tokens=10, temperature=1.0, chat_template=False, topk_logprobs=4
)
PROMPTS = ["Count to three.", "Name a colour."]
SEEDS = [11, 12]


def test_shared_credit_by_hand() -> None:
    # root 0 (len 4) with branches 1 (t=2) and 2 (t=1); root 3 (len 3) alone.
    # token p of root 0 is shared by 1 + #{b : t_b > p}: p=0 -> 3 rows, p=1 -> 2 (branch 1),
    # p>=2 -> 1. Branch 1 inherits p=0 (1/3), p=1 (1/2), then own tokens 1.
    w = shared_credit([4, 5, 3, 3], [-1, 0, 0, -1], [0, 2, 1, 0])
    third = 1 / 3
    expected = torch.tensor(
        [
            [third, 0.5, 1, 1, 0],
            [third, 0.5, 1, 1, 1],
            [third, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
        ]
    )
    torch.testing.assert_close(w, expected)
    # each shared token's weights sum to 1 over the rows holding it: total gradient = mean(A)∇ℓ
    assert float(w[0, 0] + w[1, 0] + w[2, 0]) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def trees(tiny_backend):
    return {
        mode: tree_rollout(
            tiny_backend, PROMPTS, CFG, SEEDS, rule="entropy", points=2, branches=1, prefix=mode
        )
        for mode in ("prompt", "shared", "full")
    }


def test_group_layout_is_fixed_and_roots_are_the_tree_roots(tiny_backend, trees) -> None:
    tb = generate_tree(
        tiny_backend, PROMPTS, CFG, rule="entropy", points=2, branches=1, seeds=SEEDS
    )
    for tr in trees.values():
        ro = tr.rollout
        assert ro.group_size == 2 * (1 + 2 * 1) == 6
        assert len(ro) == 12 and ro.prompt_index.tolist() == [0] * 6 + [1] * 6
        roots = [t for t in tb if "parent" not in t.meta]
        got_roots = [tr.traces[i] for i in (0, 1, 6, 7)]
        assert [t.token_ids.tolist() for t in got_roots] == [t.token_ids.tolist() for t in roots]
        for r, par in enumerate(tr.parent):
            if par >= 0:  # a branch's parent is a root of its own prompt
                assert tr.parent[par] == -1 and ro.prompt_index[par] == ro.prompt_index[r]
                t = tr.branch_position[r]
                assert tr.traces[r].token_ids[:t].tolist() == tr.traces[par].token_ids[:t].tolist()
        # budget counts only new tokens: total length minus inherited prefixes
        inherited = sum(tr.branch_position)
        assert tr.new_tokens == sum(len(t) for t in tr.traces) - inherited


def test_prompt_mode_moves_the_prefix_into_the_prompt(tiny_backend, trees) -> None:
    pr, full = trees["prompt"], trees["full"]
    for r, pos in enumerate(pr.branch_position):
        n_resp = int(pr.rollout.response_mask[r].sum())
        assert n_resp == len(pr.traces[r]) - pos
        assert len(pr.rollout.prompt_ids[r]) == len(full.rollout.prompt_ids[r]) + pos
    # teacher-forced log-probs of the branch's own tokens are the same either way
    model = tiny_backend.model
    a = response_logprobs(model, pr.rollout, pad_id=tiny_backend.pad_id, entropy=False).logprobs
    b = response_logprobs(model, full.rollout, pad_id=tiny_backend.pad_id, entropy=False).logprobs
    for r, pos in enumerate(pr.branch_position):
        n = len(pr.traces[r]) - pos
        torch.testing.assert_close(a[r, :n], b[r, pos : pos + n], rtol=1e-4, atol=1e-4)
    # prompt mode: credit is the response mask (no inherited token in the loss)
    torch.testing.assert_close(pr.credit, pr.rollout.response_mask.float())


def test_shared_mode_credit_sums_to_one_per_distinct_token(trees) -> None:
    sh = trees["shared"]
    w = sh.credit
    for r, par in enumerate(sh.parent):
        if par < 0:
            continue
        t = sh.branch_position[r]
        assert torch.all(w[r, :t] < 1) and torch.all(w[r, :t] > 0)
        assert torch.all(w[r, t : len(sh.traces[r])] == 1)
    # root token p: its weight times the number of rows holding it is 1
    for root in (i for i, p in enumerate(sh.parent) if p < 0):
        kids = [b for b, p in enumerate(sh.parent) if p == root]
        for p in range(len(sh.traces[root])):
            m = 1 + sum(sh.branch_position[b] > p for b in kids)
            assert float(w[root, p]) == pytest.approx(1 / m)


def _trace(pieces, entropy, finish="eos"):
    n = len(pieces)
    return Trace(
        prompt="p",
        text="".join(pieces),
        token_ids=torch.arange(10, 10 + n),
        tokens=tuple(pieces),
        logprob=torch.zeros(n),
        entropy=torch.tensor(entropy),
        varentropy=torch.zeros(n),
        topk_ids=torch.zeros(n, 1, dtype=torch.int64),
        topk_logprobs=torch.zeros(n, 1),
        finish_reason=finish,
    )


def test_critical_positions_skip_position_0_single_characters_special_and_eos() -> None:
    # entropies:    3.5(pos 0)  2.0  1.5   0.9   3.0(eos)
    tr = _trace([" a1", "b", " cd", "ef", "</s>"], [3.5, 2.0, 1.5, 0.9, 3.0])
    # CURE's code skips index 0; position 1 ("b") has one character; 4 is the final EOS;
    # by entropy: 2 (1.5), 3 (0.9)
    assert critical_positions(tr, 5) == [2, 3]
    assert critical_positions(tr, 1) == [2]
    assert critical_positions(tr, 5, special_ids=[12]) == [3]  # token id 12 = position 2
    # byte-level setting: one character is enough -> 1 (2.0), 2, 3
    assert critical_positions(tr, 5, min_chars=1) == [1, 2, 3]


def test_cure_rule_draws_one_candidate_with_the_tree_generator() -> None:
    tr = _trace([" a1", "b", " cd", "ef", "</s>"], [3.5, 2.0, 1.5, 0.9, 3.0])
    rule = cure_rule(5, min_chars=1)
    picks = {rule(tr, 1, torch.Generator().manual_seed(s))[0] for s in range(40)}
    assert picks == {1, 2, 3}
    assert rule(tr, 0, torch.Generator()) == []
    assert cure_rule(5)(_trace(["a", "b"], [1.0, 2.0]), 1, torch.Generator()) == []  # none


def test_cure_groups_hold_n1_plus_n1_n2_rows_with_prefix_as_prompt(tiny_backend) -> None:
    cfg = GenerationConfig.from_dict({**CFG.to_dict(), "num_samples": 2})
    special = tiny_backend.tokenizer.all_special_ids
    tr = cure_rollout(tiny_backend, PROMPTS, cfg, SEEDS, n2=2, top_k=4, min_chars=1)
    assert tr.rollout.group_size == 2 + 2 * 2 and len(tr.rollout) == 12
    assert tr.fills == 0  # byte tokens with min_chars=1: every root has candidates
    # the branches are exactly generate_tree's with CURE's rule (shared KV prefix)
    tree = generate_tree(tiny_backend, PROMPTS, cfg, rule=cure_rule(4, special_ids=special,
                         min_chars=1), points=1, branches=2, seeds=SEEDS)  # fmt: skip
    assert [t.token_ids.tolist() for t in tr.traces] == [t.token_ids.tolist() for t in tree]
    roots = tiny_backend.generate(PROMPTS, cfg, seeds=SEEDS)
    for k in range(2):  # roots are the plain generation
        assert tr.traces[k].token_ids.tolist() == roots[k].token_ids.tolist()
    for r, par in enumerate(tr.parent):
        if par >= 0:
            c = tr.branch_position[r]
            root = tr.traces[par]
            assert tr.traces[r].token_ids[:c].tolist() == root.token_ids[:c].tolist()
            assert c in critical_positions(root, 4, special_ids=special, min_chars=1)
            assert len(tr.rollout.prompt_ids[r]) == len(tr.rollout.prompt_ids[par]) + c
    # CURE's default (2 characters) finds fewer critical tokens; a root without one gets n2
    # fresh samples (CURE's c = 0), and every root token branched at has >= 2 characters
    plain = cure_rollout(tiny_backend, PROMPTS, cfg, SEEDS, n2=2, top_k=4)
    assert plain.fills > 0 and plain.fills % 2 == 0 and len(plain.rollout) == 12
    for r, par in enumerate(plain.parent):
        if par >= 0:
            assert len(plain.traces[par].tokens[plain.branch_position[r]].strip()) >= 2
    # the same seeds give the same rollout
    again = cure_rollout(tiny_backend, PROMPTS, cfg, SEEDS, n2=2, top_k=4, min_chars=1)
    assert torch.equal(again.rollout.response_ids, tr.rollout.response_ids)


def test_tree_rollout_cuts_and_fills_groups_to_size(tiny_backend) -> None:
    # width 3 at one point per root: 2 roots + 6 branches, cut to 5 rows (roots first)
    tr = tree_rollout(tiny_backend, PROMPTS, CFG, SEEDS, rule="entropy", points=1,
                      branches=lambda root, t: 3, size=5)  # fmt: skip
    assert len(tr.rollout) == 10 and tr.parent[:2] == [-1, -1] and tr.fills == 0
    assert tr.parent[2:5] == [0, 0, 0]  # the first root's branches come first
    # no branch point: every extra row is a fresh sample
    none = tree_rollout(tiny_backend, PROMPTS, CFG, SEEDS, rule=lambda tr, k, g: [], points=1,
                        branches=1, size=4)  # fmt: skip
    assert none.fills == 4 and all(p < 0 for p in none.parent)
    with pytest.raises(EntrolabError, match="group size"):
        tree_rollout(tiny_backend, PROMPTS, CFG, SEEDS, branches=lambda root, t: 1)
