"""Tree rollouts (backends/tree.py): branches equal independent generations from prompt +
prefix, the shared prefix is prefilled once, branch points follow their rules."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.backends import MockBackend
from entrolab.backends.tree import BRANCH_RULES, branch_seed, generate_tree
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = GenerationConfig(num_samples=2, max_new_tokens=12, temperature=1.0, topk_logprobs=4, seed=5)
PROMPTS = ["Count to three.", "Name a colour."]


@pytest.fixture(scope="module")
def tree(tiny_backend):
    return generate_tree(tiny_backend, PROMPTS, CFG, rule="entropy", points=2, branches=2)


def test_roots_are_the_plain_generation_and_layout_is_by_prompt(tiny_backend, tree) -> None:
    plain = tiny_backend.generate(PROMPTS, CFG)
    roots = [t for t in tree if "parent" not in t.meta]
    assert [t.token_ids.tolist() for t in roots] == [t.token_ids.tolist() for t in plain]
    # per prompt: 2 roots, then up to 2 points x 2 branches per root
    for i in range(2):
        group = [t for t in tree if t.prompt_index == i]
        assert [t.sample_index for t in group] == list(range(len(group)))
        assert len(group) == 2 + sum(
            2 * min(2, len(r) - 1) for r in group[:2]
        )  # each root of length L has min(2, L-1) branch points


def test_branch_equals_an_independent_generation_from_prompt_plus_prefix(tiny_backend, tree):
    branches = [t for t in tree if "parent" in t.meta]
    assert branches
    for br in branches[:6]:
        root = tree[br.meta["parent"]]
        t, j = br.meta["branch_position"], br.meta["branch"]
        # inherited prefix: the root's tokens and statistics
        assert br.token_ids[:t].tolist() == root.token_ids[:t].tolist()
        torch.testing.assert_close(br.entropy[:t], root.entropy[:t])
        prefix = tiny_backend.prompt_ids(root.prompt) + root.token_ids[:t].tolist()
        ref_cfg = GenerationConfig.from_dict(
            {**CFG.to_dict(), "num_samples": 1, "max_new_tokens": CFG.max_new_tokens - t}
        )
        ref = tiny_backend.generate(
            [prefix], ref_cfg, seeds=[branch_seed(root.meta["row_seed"], t, j)]
        )[0]
        assert br.token_ids[t:].tolist() == ref.token_ids.tolist()
        assert br.meta["new_tokens"] == len(ref) and br.finish_reason == ref.finish_reason
        torch.testing.assert_close(br.logprob[t:], ref.logprob, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(br.entropy[t:], ref.entropy, rtol=1e-4, atol=1e-4)
        # and teacher-forced scoring of the whole branch gives its log-probs back
        scored = tiny_backend.score([root.prompt], [br.token_ids.tolist()], k=4)[0]
        torch.testing.assert_close(scored.logprob, br.logprob, rtol=1e-4, atol=1e-4)


def test_shared_prefix_is_prefilled_once(tiny_backend) -> None:
    """Exactly one forward pass runs more than one position (the prompts' prefill): roots and
    branches feed one token per row per step; branches re-feed only the prefix's last token."""
    widths: list[int] = []
    emb = tiny_backend.model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda _m, inp, _o: widths.append(inp[0].shape[1]))
    try:
        out = generate_tree(tiny_backend, PROMPTS, CFG, rule="random", points=2, branches=3)
    finally:
        handle.remove()
    assert sum(w > 1 for w in widths) == 1 and widths[0] > 1
    new = sum(t.meta["new_tokens"] for t in out)
    inherited = sum(t.meta.get("inherited_tokens", 0) for t in out)
    assert new + inherited == sum(len(t) for t in out)  # budget counts new tokens only


def _entropy_trace():
    # 4-token vocab; steps 2 and 4 are uniform (entropy ln 4), others peaked
    peaked = torch.tensor([6.0, 0.0, 0.0, 0.0])
    table = torch.stack([peaked, peaked, torch.zeros(4), peaked, torch.zeros(4), peaked])
    mock = MockBackend(table, vocab=["a", "b", "c", "d"])
    return mock.generate(
        ["x"], GenerationConfig(temperature=0.0, max_new_tokens=6, topk_logprobs=4)
    )[0]


def test_branch_rules_on_scripted_logits() -> None:
    tr = _entropy_trace()
    assert tr.entropy[2].item() == pytest.approx(math.log(4), abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    assert BRANCH_RULES.get("entropy")(tr, 2, gen) == [2, 4]
    # a third pick: positions 1, 3 and 5 tie (same peaked logits) → the earliest, 1; position 0
    # (the reply's first token) is never a branch point
    assert BRANCH_RULES.get("entropy")(tr, 3, gen) == [1, 2, 4]
    # lowest DeepConf windows (window min(8, T) = 6 here: one window, ending at t = 5)
    assert BRANCH_RULES.get("low_confidence")(tr, 1, gen) == [5]
    picks = BRANCH_RULES.get("random")(tr, 3, torch.Generator().manual_seed(1))
    assert len(set(picks)) == 3 and all(1 <= p < len(tr) for p in picks)


def test_bad_settings(tiny_backend) -> None:
    with pytest.raises(EntrolabError, match="temperature > 0"):
        generate_tree(tiny_backend, PROMPTS, GenerationConfig(temperature=0.0))
    with pytest.raises(EntrolabError, match="branches must be"):
        generate_tree(tiny_backend, PROMPTS, CFG, branches=-1)
    with pytest.raises(EntrolabError, match="not among the registered branch rules"):
        generate_tree(tiny_backend, PROMPTS, CFG, rule="nope")
    # a MockBackend lacks kv_branching
    with pytest.raises(EntrolabError, match="KV-cache prefix branching"):
        generate_tree(MockBackend(torch.zeros(3, 4)), ["x"], CFG)


def test_width_function_critical_rule_and_branch_pruning_hook(tiny_backend) -> None:
    # per-point width: 1 branch at the first point, 3 at the second
    def width(root, t):
        return 1 if t == min(BRANCH_RULES.get("entropy")(root, 2, torch.Generator())) else 3

    out = generate_tree(tiny_backend, PROMPTS[:1], CFG, points=2, branches=width)
    for root_i in (0, 1):
        kids = [t for t in out if t.meta.get("parent") == root_i]
        by_point: dict[int, int] = {}
        for k in kids:
            by_point[k.meta["branch_position"]] = by_point.get(k.meta["branch_position"], 0) + 1
        assert sorted(by_point.values()) == [1, 3]  # 1 at the earlier point, 3 at the later
    # critical rule: only tokens whose text has more than one non-space character
    root = out[0]
    picks = BRANCH_RULES.get("critical")(root, 3, torch.Generator().manual_seed(0))
    assert all(len(root.tokens[t].strip()) > 1 for t in picks)

    # a pruning hook stopping every branch at its 2nd own token: each branch has 2 new tokens
    def prune(rows, step, stats):
        return torch.full(rows.shape, step >= 1, dtype=torch.bool)

    pruned = generate_tree(tiny_backend, PROMPTS[:1], CFG, points=1, branches=2, branch_hook=prune)
    kids = [t for t in pruned if "parent" in t.meta]
    assert kids and all(
        k.meta["new_tokens"] <= 2
        and (k.finish_reason in ("stopped", "eos") or k.meta["new_tokens"] < 2)
        for k in kids
    )
    assert any(k.finish_reason == "stopped" and k.meta["new_tokens"] == 2 for k in kids)
