"""Calculator tool (rl/tools.py), multi-turn rollouts and agentic AEPO's budget split (rl/agent.py),
tool tokens attended to but masked from the loss (Rollout.context_mask)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.advantages.empg import empg
from entrolab.rl.advantages.inputs import ShapingInputs
from entrolab.rl.agent import (
    TOOL_INSTRUCTION,
    TURN_STEPS,
    agent_rollout,
    branch_weights,
    budget_split,
    run_episodes,
    turn_step_ids,
)
from entrolab.rl.rollout import Rollout, policy_forward
from entrolab.rl.shaping import shaping_inputs
from entrolab.rl.tools import calculate, find_tool_call, run_tool_call
from entrolab.types import Trace, TraceBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------- calculator
def _expr(rng: random.Random, depth: int = 0) -> str:
    if depth > 3 or rng.random() < 0.3:
        return str(rng.randint(0, 30))
    op = rng.choice(["+", "-", "*", "//", "%", "**"])
    a, b = _expr(rng, depth + 1), _expr(rng, depth + 1)
    if op == "**":
        b = str(rng.randint(0, 3))
    return f"({a} {op} {b})" if rng.random() < 0.5 else f"{a}{op}{b}"


def test_calculator_matches_python_on_generated_integer_expressions(monkeypatch) -> None:
    # reference: Python's own evaluator on expressions *we* generate (never model text); the
    # 50 ms wall-clock bound is lifted so a busy machine cannot turn a result into a timeout
    import entrolab.rl.tools as tools

    monkeypatch.setattr(tools, "MAX_SECONDS", 60.0)
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        e = _expr(rng)
        try:
            want = eval(e, {"__builtins__": {}})  # test-generated arithmetic only
        except ZeroDivisionError:
            assert run_tool_call(e) == "<result>error: division by zero</result>"
            continue
        if abs(want) >= 10**59:
            continue
        assert calculate(e) == want, e
        checked += 1
    assert checked > 300


def test_calculator_by_hand() -> None:
    assert calculate("-2**2") == -4  # power binds tighter than unary minus, as in Python
    assert calculate("2**3**2") == 512  # right-associative
    assert calculate("7/2") == Fraction(7, 2) and run_tool_call("7/2") == "<result>3.5</result>"
    assert run_tool_call("1/3") == "<result>0.3333333333</result>"
    assert run_tool_call(" 12 * (3 + 4) ") == "<result>84</result>"


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "empty expression"),
        ("1+", "ends too early"),
        ("__import__('os').system('x')", "unexpected character '_'"),
        ("(1+2", "ends too early"),
        ("1 2", "after a complete expression"),
        ("2**0.5", "integer exponents"),
        ("10**65", "exponent too large"),
        ("9**64", "too large"),
        ("1/0", "division by zero"),
        ("0**-1", "division by zero"),
        ("(" * 40 + "1" + ")" * 40, "too deeply nested"),
        ("+".join(["1"] * 80), "too many operations"),
        ("1" * 201, "expression too long"),
    ],
)
def test_malformed_or_unbounded_calls_return_an_error_message(expr: str, reason: str) -> None:
    msg = run_tool_call(expr)
    assert msg.startswith("<result>error: ") and reason in msg, msg


def test_find_tool_call() -> None:
    assert find_tool_call("a <tool>1+2</tool> b <tool>3*4</tool>") == "3*4"
    assert find_tool_call("so <tool>5-1") == "5-1"  # the stop string cut the closing tag
    assert find_tool_call("no call") is None


# ------------------------------------------------------------------------- AEPO pieces
def test_budget_split_by_hand() -> None:
    # m = round(8·σ(β(H_root − H_tool))): equal entropies -> 4; H_root − H_tool = ln 3 with
    # β = 1 -> σ = 3/4 -> 6; always at least 1 and at most k
    assert budget_split(8, 1.0, 1.0) == 4
    assert budget_split(8, 1.0 + math.log(3), 1.0) == 6
    assert budget_split(8, 0.0, 50.0) == 1 and budget_split(8, 50.0, 0.0) == 8
    with pytest.raises(EntrolabError):
        budget_split(0, 1.0, 1.0)


def test_branch_weights_penalise_consecutive_high_entropy_steps() -> None:
    # H_root = 1; steps 2.0 (high), 3.0 (high, after 1 high), 0.5 (after 2 high), 2.0 (run reset)
    w = branch_weights([2.0, 3.0, 0.5, 2.0], 1.0, penalty=0.5)
    assert w == [2.0, 3.0 * 0.5, 0.5 * 0.25, 2.0]


# --------------------------------------------------------------- multi-turn orchestration
class ScriptedAgent:
    """A byte-level fake backend whose replies depend on how many tool results the prompt holds
    (a scripted policy: calls the tool twice, the second time malformed, then answers)."""

    pad_id = 0
    REPLIES = ("I compute <tool>3*4</tool>", "then <tool>12+</tool>", "Answer: 13")

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i)).decode(errors="replace")

    def prompt_ids(self, prompt, *, chat_template=True, system_prompt=None) -> list[int]:
        return self.encode(prompt)

    def generate(self, prompts, config, *, seeds=None, **_):
        out = []
        for i, p in enumerate(prompts):
            n = self.decode(p).split(TOOL_INSTRUCTION)[-1].count("<result>")  # after the prompt
            reply = self.REPLIES[min(n, 2)]
            stop = reply.endswith("</tool>")
            text = reply[: -len("</tool>")] if stop else reply  # text cut before the stop string
            ids = torch.tensor(self.encode(text)[: config.max_new_tokens])
            t = len(ids)
            out.append(
                Trace(
                    prompt="p",
                    text=text,
                    token_ids=ids,
                    tokens=tuple(chr(int(x)) for x in ids),
                    logprob=torch.zeros(t),
                    entropy=torch.full((t,), 0.5 + n),
                    varentropy=torch.zeros(t),
                    topk_ids=torch.zeros(t, 1, dtype=torch.int64),
                    topk_logprobs=torch.zeros(t, 1),
                    finish_reason="stop" if stop else "eos",
                    prompt_index=i,
                )
            )
        return TraceBatch(tuple(out))


CFG = GenerationConfig(num_samples=4, max_new_tokens=200, temperature=1.0, chat_template=False)


def test_episode_appends_tool_results_and_masks_them() -> None:
    be = ScriptedAgent()
    (ep,) = run_episodes(be, [be.encode("Q: 3*4+1?")], CFG, [1], max_turns=4, window=4)
    assert ep.text == (
        "I compute <tool>3*4</tool><result>12</result>"
        "then <tool>12+</tool><result>error: the expression ends too early</result>Answer: 13"
    )
    assert ep.calls == 2 and ep.errors == 1
    model_text = be.decode([t for t, m in zip(ep.tokens, ep.model, strict=True) if m])
    assert model_text == "I compute <tool>3*4then <tool>12+Answer: 13"  # forced </tool> masked
    # entropy after each tool result: the next turn's first 4 tokens (1.5, then 2.5 nats)
    assert [h for _, h in ep.steps] == [1.5, 2.5]
    # a budget of 30 tokens ends the episode inside the first tool message
    (short,) = run_episodes(be, [be.encode("Q")], GenerationConfig.from_dict(
        {**CFG.to_dict(), "max_new_tokens": 30}), [1])  # fmt: skip
    assert short.done and len(short.tokens) <= 30 + len("</tool><result>12</result>")


def test_agent_rollout_splits_the_budget_and_masks_tool_tokens() -> None:
    be = ScriptedAgent()
    ro, m = agent_rollout(be, ["Q: 3*4+1?", "Q: again"], CFG, [5, 6], window=4, beta=1.0)
    assert len(ro) == 8 and ro.group_size == 4 and ro.prompt_index.tolist() == [0] * 4 + [1] * 4
    # H_root = 0.5 (first turn), H_tool = mean(1.5, 2.5) = 2 -> m = round(4·σ(−1.5)) = 1
    assert m["agent/root_frac"] == pytest.approx(1 / 4) and m["agent/branch_frac"] == 0.75
    assert m["agent/h_root"] == pytest.approx(0.5) and m["agent/h_tool"] == pytest.approx(2.0)
    base = min(len(p) for p in ro.prompt_ids)
    for r in range(8):
        ctx, loss = ro.context_mask[r], ro.response_mask[r]
        assert bool((loss <= ctx).all())
        if len(ro.prompt_ids[r]) == base:  # root episodes hold two tool messages, masked
            assert int(ctx.sum()) - int(loss.sum()) == len(
                "</tool><result>12</result></tool><result>error: the expression ends too early</result>"
            )
        assert ro.texts[r].endswith("Answer: 13")
    # branches start after a tool result: their prompt holds the inherited prefix
    assert max(len(p) for p in ro.prompt_ids) > min(len(p) for p in ro.prompt_ids)
    _, plain = agent_rollout(be, ["Q"], CFG, [5], aepo=False)
    assert plain["agent/root_frac"] == 1.0 and plain["agent/branch_frac"] == 0.0


def test_agent_rollout_instruction_follows_each_prompt() -> None:
    be = ScriptedAgent()
    default, _ = agent_rollout(be, ["Q: 3*4+1?"], CFG, [5], aepo=False)
    assert list(default.prompt_ids[0]) == be.encode("Q: 3*4+1?" + TOOL_INSTRUCTION)
    own, _ = agent_rollout(be, ["Q: 3*4+1?"], CFG, [5], aepo=False, instruction="")
    assert list(own.prompt_ids[0]) == be.encode("Q: 3*4+1?")  # protocol taught elsewhere
    assert own.texts[0] == default.texts[0]  # the scripted replies do not read the prompt


def test_context_mask_attends_to_tool_tokens_without_loss(tiny_backend) -> None:
    # response [a, b, T1, T2, c, d] with T1, T2 tool tokens: log-probs of c, d equal those of a
    # plain rollout whose prompt already holds a, b, T1, T2; the tool positions get 0
    prompt = tiny_backend.encode("Count:")
    toks = [50, 51, 60, 61, 52, 53]
    model = torch.tensor([[1, 1, 0, 0, 1, 1]], dtype=torch.bool)
    ro = Rollout([prompt], torch.tensor([toks]), model, ["x"], torch.tensor([0]), 1,
                 torch.ones(1, 6, dtype=torch.bool))  # fmt: skip
    ref = Rollout([prompt + toks[:4]], torch.tensor([toks[4:]]), torch.ones(1, 2, dtype=torch.bool),
                  ["x"], torch.tensor([0]), 1)  # fmt: skip
    with torch.no_grad():
        a = policy_forward(tiny_backend.model, ro, pad_id=tiny_backend.pad_id).logprobs
        b = policy_forward(tiny_backend.model, ref, pad_id=tiny_backend.pad_id).logprobs
    torch.testing.assert_close(a[0, 4:], b[0], rtol=1e-4, atol=1e-5)
    assert a[0, 2:4].abs().sum() == 0
    again = Rollout.from_dict(ro.to_dict())
    assert torch.equal(again.context_mask, ro.context_mask)
    assert torch.equal(ro.select([0]).context_mask, ro.context_mask)


# ------------------------------------------------------------------------ EMPG agent steps
def test_turn_step_ids_number_the_model_turns() -> None:
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 1]]).bool()
    assert turn_step_ids(mask).tolist() == [
        [0, 0, -1, -1, 1, -1],
        [0, 0, 0, -1, -1, -1],
        [-1, 0, -1, 1, -1, 2],
    ]
    # the scripted episode: "I compute <tool>3*4" | tool | "then <tool>12+" | tool | "Answer: 13"
    be = ScriptedAgent()
    ro, _ = agent_rollout(be, ["Q: 3*4+1?"], CFG, [5], aepo=False)
    ids = turn_step_ids(ro.response_mask)
    for r in range(len(ro)):
        assert int(ids[r].max()) == 2  # three model turns
        turns = [be.decode(ro.response_ids[r][ids[r] == s].tolist()) for s in range(3)]
        assert turns == ["I compute <tool>3*4", "then <tool>12+", "Answer: 13"]


def test_empg_on_agent_turns_by_hand() -> None:
    # row 0: turn 0 = tokens 0-1 (H 0.2, 0.4 -> 0.3), tool tokens 2-3, turn 1 = token 4 (H 1.0);
    # row 1: one turn, tokens 0-2 (H 0.5). Sequence advantages A = +1 (row 0), -1 (row 1).
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0]]).bool()
    ent = torch.tensor([[0.2, 0.4, 0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]])
    adv = torch.tensor([[1.0] * 6, [-1.0] * 6]) * mask
    inp = shaping_inputs(
        {"step_ids"}, model=None, rollout=Rollout([[1], [1]], torch.zeros(2, 6, dtype=torch.long),
        mask, ["", ""], torch.tensor([0, 0]), 2), rewards=torch.tensor([[1.0, 0.0]]), pad_id=0,
        temperature=1.0, micro_batch_size=2, delimiter=TURN_STEPS,
    )  # fmt: skip
    inp = ShapingInputs(rewards=inp.rewards, response_mask=mask, entropy=ent, step_ids=inp.step_ids)
    out = empg(adv, inp, k=1.0, k_f=1.0, zeta=0.1, center=False).advantages
    # step H: 0.3, 1.0 | 0.5 -> min-max (lo 0.3, span 0.7): 0, 1, 0.2857143
    # exp(-H~): 1, 0.3678794, 0.7514773; mean 0.7064522 -> g = 1.4155238, 0.5207421, 1.0637340
    # f(next step): row 0 turn 0 -> exp(-1) = 0.3678794; last turns -> 0
    # A~ = g*A + 0.1*f: 1.4155238 + 0.0367879 = 1.4523118 | 0.5207421 | -1.0637340
    want = torch.tensor(
        [[1.4523118, 1.4523118, 0, 0, 0.5207421, 0], [-1.0637340, -1.0637340, -1.0637340, 0, 0, 0]]
    )
    torch.testing.assert_close(out, want, rtol=0, atol=2e-7)
    # centred over the 6 response tokens: mean = (2*1.4523118 + 0.5207421 - 3*1.0637340)/6
    # = 0.0390273
    centred = empg(adv, inp, k=1.0, k_f=1.0, zeta=0.1).advantages
    torch.testing.assert_close(centred, (want - 0.0390273) * mask, rtol=0, atol=3e-7)


def test_branch_placement_metrics_by_hand() -> None:
    # scripted episodes: tool steps with H_after 1.5 then 2.5 > H_root 0.5, so the second step
    # follows a high-entropy step. k = 4, m = 1: 3 branches, all from the one root episode.
    be = ScriptedAgent()
    _, m = agent_rollout(be, ["Q"], CFG, [5], window=4, beta=1.0, penalty=0.0)
    assert m["agent/branch_concentration"] == 1.0 and m["agent/tool_call_frac"] == 1.0
    # without the penalty the weights are 1.5 and 2.5; with penalty 1 the second step's weight
    # is 2.5 * (1 - 1)^1 = 0, so no branch is placed after a high-entropy step
    _, strict = agent_rollout(be, ["Q"], CFG, [5], window=4, beta=1.0, penalty=1.0)
    assert strict["agent/branch_after_high_frac"] == 0.0
    fracs = [agent_rollout(be, ["Q"], CFG, [s], window=4, penalty=0.0)[1] for s in range(6)]
    assert max(f["agent/branch_after_high_frac"] for f in fracs) > 0.0
