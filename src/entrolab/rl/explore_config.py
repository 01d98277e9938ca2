"""The ``explore`` section of the RL config (:class:`ExploreConfig`): how rollouts explore, used by
:class:`entrolab.rl.explore.Explorer` (see there for the recipes built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from entrolab.errors import EntrolabError
from entrolab.rl.echo import ECHO_BRANCH_DEFAULTS

__all__ = ["ECHO_DEFAULTS", "ExploreConfig"]

#: ECHO hybrid-advantage / adaptive-clip settings (user683/ECHO ppo_trainer.yaml ``hybrid_adv``).
ECHO_DEFAULTS: dict[str, float] = {
    "alpha": 1.0,
    "beta": 1.0,
    "s_max": 2.0,
    "mult_coeff": 0.1,
    "add_coeff": 0.0,
    "tail_window": 16,
    "confidence_topk": 5,
    "eps_min": 0.05,
    "eps_max": 0.2,
    "kappa": 4.0,
}


@dataclass
class ExploreConfig:
    """How rollouts explore (default: plain i.i.d. groups, verifier rewards, no reshaping).

    Attributes:
        mode: ``iid`` | ``tree`` | ``cure``.
        rule, points, branches, prefix: tree rollouts (``backends.tree.BRANCH_RULES``, or
            ``echo``: ECHO's DeepConf plan and pruning, :mod:`entrolab.rl.echo`; then each root
            gets one point with an adaptive width and the group is cut/filled to
            ``G·(1 + points·branches)`` rows).
        echo_tree: overrides of :data:`entrolab.rl.echo.ECHO_BRANCH_DEFAULTS` (``rule: echo``);
            ``branch_tokens``: ``top_w`` (default, as the official code: branches start with
            the most likely tokens at the branch point) or ``sample``.
        echo_prune: ECHO's pruning of low-confidence rows (``rule: echo``).
        cure_n2, cure_top_k, cure_critical: CURE n2 (continuations per response), critical
            top-K, ``entropy`` or ``random`` (control) positions.
        cure_min_chars: a critical token's text has at least this many characters (CURE: 2;
            1 for byte-level tokenizers, whose tokens are all one character).
        stage1_steps: the tree/CURE mode applies to steps 1..stage1_steps, then i.i.d. sampling
            (CURE stage 2); 0 = every step.
        reward: ``verifier`` | ``majority`` (TTRL pseudo-labels; the task's answers are only used
            to log the pseudo-label accuracy).
        vote_samples: N_vote per prompt for ``majority`` in i.i.d. mode (0 = the group size);
            the first ``rollout.group_size`` rows are trained on (TTRL downsampling).
        shaping: ``none`` | ``ettrl`` | ``echo`` advantage reshaping.
        ettrl_strength, ettrl_decay_steps: λ of :func:`entrolab.rl.ttrl.ettrl_damping`.
        echo: overrides of :data:`ECHO_DEFAULTS`.
        agent_*: multi-turn calculator rollouts (``mode: agent``, :mod:`entrolab.rl.agent`):
            turns per episode, entropy window, AEPO's β of the budget split, the
            consecutive-branch penalty, whether to split the budget at all (``agent_aepo``), and
            the text after each prompt (``agent_instruction``; None: ``agent.TOOL_INSTRUCTION``,
            ``""`` when the task's prompts already explain the tool).
        replay, replay_capacity, sil_max, sil_warmup: SPEAR self-imitation
            (:mod:`entrolab.rl.spear`): buffer of successful responses per prompt replayed into
            later groups, advantage scaled by the rising SIL weight.
        intrinsic, intrinsic_decay: SPEAR's decaying exploration bonus for tool use (agent mode:
            reward + w(step)·1[the episode called the tool]).
    """

    mode: Literal["iid", "tree", "cure", "agent"] = "iid"
    rule: str = "entropy"
    points: int = 2
    branches: int = 2
    prefix: Literal["prompt", "shared", "full"] = "shared"
    cure_n2: int = 3
    cure_top_k: int = 20
    cure_critical: Literal["entropy", "random"] = "entropy"
    cure_min_chars: int = 2
    echo_tree: dict[str, Any] = field(default_factory=dict)
    echo_prune: bool = True
    stage1_steps: int = 0
    reward: Literal["verifier", "majority"] = "verifier"
    vote_samples: int = 0
    shaping: Literal["none", "ettrl", "echo"] = "none"
    ettrl_strength: float = 0.5
    ettrl_decay_steps: int = 0
    echo: dict[str, Any] = field(default_factory=dict)
    agent_max_turns: int = 4
    agent_window: int = 4
    agent_beta: float = 1.0
    agent_penalty: float = 0.5
    agent_aepo: bool = True
    agent_instruction: str | None = None
    replay: bool = False
    replay_capacity: int = 256
    sil_max: float = 1.0
    sil_warmup: int = 0
    intrinsic: float = 0.0
    intrinsic_decay: int = 0

    def tree_rows(self, roots: int) -> int:
        """Rows per prompt of a ``mode: tree`` group of ``roots`` roots: ``G·(1 + points·branches)``
        (ECHO's groups are cut/filled to this size)."""
        return roots * (1 + self.points * self.branches)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise EntrolabError(f"invalid explore config: {msg}")

        need(self.points >= 0 and self.branches >= 0, "points and branches must be >= 0")
        need(self.cure_n2 >= 1 and self.cure_top_k >= 1, "cure_n2 and cure_top_k must be >= 1")
        need(self.stage1_steps >= 0, "stage1_steps must be >= 0")
        need(self.cure_min_chars >= 0, "cure_min_chars must be >= 0")
        bad = sorted(set(self.echo_tree) - set(ECHO_BRANCH_DEFAULTS))
        need(not bad, f"unknown echo_tree settings {bad}; known: {sorted(ECHO_BRANCH_DEFAULTS)}")
        need(self.vote_samples >= 0, "vote_samples must be >= 0 (0 = the group size)")
        need(0 <= self.ettrl_strength <= 1, "ettrl_strength must be in [0, 1]")
        unknown = sorted(set(self.echo) - set(ECHO_DEFAULTS))
        need(not unknown, f"unknown echo settings {unknown}; known: {sorted(ECHO_DEFAULTS)}")
        need(self.agent_max_turns >= 1 and self.agent_window >= 1, "agent turns/window >= 1")
        need(0 <= self.agent_penalty <= 1, "agent_penalty must be in [0, 1]")
        need(self.replay_capacity >= 1 and self.sil_max >= 0, "replay_capacity >= 1, sil_max >= 0")
        need(self.intrinsic >= 0 and self.intrinsic_decay >= 0, "intrinsic settings must be >= 0")
        need(
            not (self.replay and self.mode in ("agent", "tree", "cure")),
            "replay splices single responses into i.i.d. groups: use it with mode iid",
        )
        need(self.intrinsic == 0 or self.mode == "agent", "intrinsic tool bonus needs mode agent")
        need(
            self.mode != "agent" or self.shaping == "none",
            "shaping needs sampling-time statistics, which multi-turn agent rollouts do not keep",
        )
        need(
            self.vote_samples == 0 or self.mode == "iid",
            "vote_samples applies to mode iid (tree groups vote over all their rows)",
        )
