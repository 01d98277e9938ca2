"""ECHO's forced top-w branch tokens (``branch_tokens: top_w``, the official code's choice): the
branches of a point start with the most likely tokens at t other than the root's own token,
distinct and in probability order, and their recorded log-probs (trace and PPO old log-prob)
are the policy's log_softmax at t; ``branch_tokens: sample`` is today's sampling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from entrolab.backends.tree import _top_first
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.echo import ECHO_BRANCH_DEFAULTS, echo_rollout
from entrolab.rl.rollout import response_logprobs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = GenerationConfig(
    num_samples=2, max_new_tokens=10, temperature=1.0, chat_template=False, topk_logprobs=10
)
PROMPTS = ["Count to three.", "Name a colour."]
# as tests/test_rl_echo.py: every root of the tiny model branches at t = 1 with width 3
PARAMS = {"min_depth": 1, "entropy_high": 0.3, "entropy_low": 0.0, "branch_threshold": 4.0,
          "entropy_delta_threshold": -1.0, "prune_threshold": 3.4, "max_branches": 3}  # fmt: skip


def test_default_is_the_official_top_w() -> None:
    assert ECHO_BRANCH_DEFAULTS["branch_tokens"] == "top_w"
    with pytest.raises(EntrolabError, match="branch_tokens must be one of"):
        echo_rollout(None, PROMPTS, CFG, [0, 1], size=4, params={"branch_tokens": "top"})


def test_top_first_on_scripted_logits() -> None:
    # vocabulary of 5, logits [1, 4, 3, 0, 2]: order by probability 1, 2, 4, 0, 3.
    # root 0 has token 2 at t = 1 -> its branches j = 0, 1, 2 take 1, 4, 0 (2 skipped);
    # root 1 has token 3 at t = 0 (outside the top-2) -> its branches j = 0, 1 take 1, 2.
    roots = [SimpleNamespace(token_ids=torch.tensor([0, 2])),
             SimpleNamespace(token_ids=torch.tensor([3]))]  # fmt: skip
    plan = [(0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 0, 0), (1, 0, 1)]
    choose = _top_first(plan, roots)
    raw = torch.tensor([[1.0, 4.0, 3.0, 0.0, 2.0]]).repeat(5, 1)
    sampled = torch.full((5,), 3)
    assert choose(torch.arange(5), raw, sampled).tolist() == [1, 4, 0, 1, 2]
    # only some rows active (others finished): rows keep their own plan index
    assert choose(torch.tensor([2, 4]), raw[:2], sampled[:2]).tolist() == [0, 2]


def _step_logsoftmax(backend, prompt_ids: list[int], response: list[int], t: int) -> torch.Tensor:
    """log_softmax of the model's next-token distribution after prompt + response[:t]."""
    ids = torch.tensor([prompt_ids + response[:t]])
    with torch.no_grad():
        logits = backend.model(input_ids=ids).logits[0, -1].double()
    return torch.log_softmax(logits, -1)


def test_branches_start_with_the_top_tokens_and_record_their_logprobs(tiny_backend) -> None:
    tr, m = echo_rollout(tiny_backend, PROMPTS, CFG, [3, 4], size=6, params=PARAMS, prune=False)
    assert m["echo/width_mean"] == 3.0  # w = 3: root + 2 branches per root
    old = response_logprobs(tiny_backend.model, tr.rollout, pad_id=tiny_backend.pad_id).logprobs
    by_point: dict[int, list[int]] = {}
    for r, par in enumerate(tr.parent):
        if par >= 0:
            by_point.setdefault(par, []).append(r)
    assert len(by_point) == 4  # 2 prompts x 2 roots, each with its branches
    for par, rows in by_point.items():
        t = tr.branch_position[rows[0]]
        assert all(tr.branch_position[r] == t for r in rows) and len(rows) == 2
        root = tr.traces[par]
        prompt = tr.rollout.prompt_ids[par]  # prefix="full": the prompt is the same for all
        resp = root.token_ids.tolist()
        lsm = _step_logsoftmax(tiny_backend, prompt, resp, t)
        order = [x for x in lsm.argsort(descending=True).tolist() if x != resp[t]]
        firsts = [int(tr.traces[r].token_ids[t]) for r in rows]
        assert firsts == order[:2]  # the two most likely tokens other than the root's, in order
        assert len({resp[t], *firsts}) == 3  # root + branches: w = 3 distinct first tokens
        if resp[t] in lsm.argsort(descending=True)[:3].tolist():
            assert sorted({resp[t], *firsts}) == sorted(lsm.argsort(descending=True)[:3].tolist())
        for r, tok in zip(rows, firsts, strict=True):
            assert tr.traces[r].token_ids[:t].tolist() == resp[:t]  # inherited prefix
            want = float(lsm[tok])
            assert float(tr.traces[r].logprob[t]) == pytest.approx(want, abs=1e-6)  # trace
            assert tr.rollout.response_ids[r, t] == tok
            assert float(old[r, t]) == pytest.approx(want, abs=1e-5)  # PPO old log-prob
            assert float(old[r, t]) < 0.0  # a real log-prob, not a placeholder 0
        lp = [float(lsm[x]) for x in firsts]
        assert lp == sorted(lp, reverse=True)


def test_sample_option_is_todays_sampling(tiny_backend) -> None:
    # "sample": the branches' token t is drawn; with the same seeds it differs from the forced
    # top tokens on some branch (and the rollout is otherwise the same tree)
    p_s = {**PARAMS, "branch_tokens": "sample"}
    ts, _ = echo_rollout(tiny_backend, PROMPTS, CFG, [3, 4], size=6, params=p_s, prune=False)
    tt, _ = echo_rollout(tiny_backend, PROMPTS, CFG, [3, 4], size=6, params=PARAMS, prune=False)
    assert ts.parent == tt.parent and ts.branch_position == tt.branch_position
    firsts = [
        (int(a.token_ids[p]), int(b.token_ids[p]))
        for a, b, par, p in zip(ts.traces, tt.traces, ts.parent, ts.branch_position, strict=True)
        if par >= 0
    ]
    assert any(a != b for a, b in firsts)
