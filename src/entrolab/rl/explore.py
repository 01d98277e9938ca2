"""Exploring rollouts in the trainer: the ``explore`` config section and the :class:`Explorer` the
trainer calls at three points of a step (sample → relabel → shape).

Recipes built from it (see ``recipes/``):

- **tree** rollouts (``mode: tree``; :func:`entrolab.rl.tree_rollout.tree_rollout`): G roots and
  ``branches`` continuations at ``points`` positions per root picked by ``rule``; ``prefix`` says
  how inherited prefixes get gradient (``prompt``: none, ``shared``: 1/m credit, ``full``).
- **CURE** (``mode: cure``, ``stage1_steps``): critical-token re-concatenation with DAPO for the
  first ``stage1_steps`` steps, then plain i.i.d. DAPO (stage 2) in the same run.
- **TTRL** (``reward: majority``): majority-vote pseudo-labels from ``vote_samples`` per prompt,
  training on the first G; **ETTRL** = tree rollouts + majority + ``shaping: ettrl``;
  **ECHO** = ``rule: low_confidence`` tree + majority + ``shaping: echo`` + loss ``echo_clip``.
  Pseudo-label accuracy (majority vs truth) is logged every step as ``ttrl/label_acc``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from entrolab.backends.decode import pad_batch
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.agent import agent_rollout
from entrolab.rl.rollout import Rollout, sample_rollout
from entrolab.rl.spear import BufferEntry, ReplayBuffer, intrinsic_weight, sil_weight
from entrolab.rl.tree_rollout import TreeRollout, cure_rollout, traces_rollout, tree_rollout
from entrolab.rl.ttrl import (
    distinct_answers,
    echo_clip_epsilon,
    echo_hybrid_advantages,
    ettrl_damping,
    majority_pseudo_labels,
    topk_confidence_probs,
)

__all__ = ["ECHO_DEFAULTS", "ExploreConfig", "Explorer"]

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
        rule, points, branches, prefix: tree rollouts (``backends.tree.BRANCH_RULES``).
        cure_n2, cure_top_k, cure_critical: CURE n2 (continuations per response), critical
            top-K, ``entropy`` or ``random`` (control) positions.
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
            consecutive-branch penalty, and whether to split the budget at all (``agent_aepo``).
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
    replay: bool = False
    replay_capacity: int = 256
    sil_max: float = 1.0
    sil_warmup: int = 0
    intrinsic: float = 0.0
    intrinsic_decay: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise EntrolabError(f"invalid explore config: {msg}")

        need(self.points >= 0 and self.branches >= 0, "points and branches must be >= 0")
        need(self.cure_n2 >= 1 and self.cure_top_k >= 1, "cure_n2 and cure_top_k must be >= 1")
        need(self.stage1_steps >= 0, "stage1_steps must be >= 0")
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


class Explorer:
    """The trainer's hook object for one run (stateless between steps except ``last``)."""

    def __init__(self, config: ExploreConfig, group_size: int) -> None:
        self.config = config
        self.group_size = group_size
        if config.vote_samples and config.vote_samples < group_size:
            raise EntrolabError(
                f"explore.vote_samples={config.vote_samples} < rollout.group_size={group_size}; "
                "TTRL votes over at least the trained samples"
            )
        self.echo = {**ECHO_DEFAULTS, **config.echo}
        self.last: TreeRollout | None = None
        self._traces: list | None = None
        self.buffer = ReplayBuffer(config.replay_capacity)
        self._replayed: list[int] = []

    @property
    def plain(self) -> bool:
        c = self.config
        return c.mode == "iid" and c.reward == "verifier" and c.shaping == "none"

    def active_mode(self, step: int) -> str:
        c = self.config
        return c.mode if not c.stage1_steps or step <= c.stage1_steps else "iid"

    # --------------------------------------------------------------------------- sample
    def sample(self, backend, prompts, gen: GenerationConfig, seeds, step: int) -> Rollout:
        """The step's rollout (prompt-major; ``group_size`` = G' for tree/CURE groups)."""
        c = self.config
        self._step, self._replayed, self._pad = step, [], int(backend.pad_id)
        self.last, self._traces = None, None
        if self.plain:
            return sample_rollout(backend, prompts, gen, seeds)
        if c.shaping == "echo":
            gen = GenerationConfig.from_dict(
                {
                    **gen.to_dict(),
                    "topk_logprobs": max(gen.topk_logprobs, int(self.echo["confidence_topk"])),
                }
            )
        mode = self.active_mode(step)
        self._agent_metrics: dict[str, float] = {}
        if mode == "agent":
            ro, self._agent_metrics = agent_rollout(
                backend, prompts, gen, seeds, max_turns=c.agent_max_turns,
                window=c.agent_window, beta=c.agent_beta, penalty=c.agent_penalty,
                aepo=c.agent_aepo,
            )  # fmt: skip
            return ro
        if mode == "tree":
            self.last = tree_rollout(
                backend, prompts, gen, seeds, rule=c.rule, points=c.points,
                branches=c.branches, prefix=c.prefix,
            )  # fmt: skip
        elif mode == "cure":
            self.last = cure_rollout(
                backend, prompts, gen, seeds, n2=c.cure_n2, top_k=c.cure_top_k,
                critical=c.cure_critical,
            )  # fmt: skip
        if self.last is not None:
            self._traces = self.last.traces
            return self.last.rollout
        g = c.vote_samples or gen.num_samples
        gen = GenerationConfig.from_dict({**gen.to_dict(), "num_samples": g})
        traces = sorted(
            backend.generate(list(prompts), gen, seeds=list(seeds)),
            key=lambda t: (t.prompt_index, t.sample_index),
        )
        ids = [
            backend.prompt_ids(p, chat_template=gen.chat_template, system_prompt=gen.system_prompt)
            for p in prompts
        ]
        self._traces = traces
        return traces_rollout(
            backend, [ids[t.prompt_index] for t in traces], traces, [0] * len(traces), g
        )

    # -------------------------------------------------------------------------- relabel
    def relabel(self, task, row_items, rollout: Rollout, scored):
        """TTRL: majority-vote rewards replace the verifier's; i.i.d. votes over N_vote rows are
        cut to the first G per prompt. Returns (rollout, row_items, scored, metrics)."""
        c = self.config
        metrics: dict[str, float] = {}
        if self.last is not None:
            metrics.update(self.last.metrics())
        metrics.update(getattr(self, "_agent_metrics", {}))
        g_vote = rollout.group_size
        answers = [task.extract(it, t) for it, t in zip(row_items, rollout.texts, strict=True)]
        metrics["train/distinct_answers"] = distinct_answers(answers, g_vote)
        if c.intrinsic:
            w = intrinsic_weight(self._step, c.intrinsic, c.intrinsic_decay)
            bonus = torch.tensor([float("<result>" in t) for t in rollout.texts])
            scored = dataclasses.replace(scored, rewards=scored.rewards + w * bonus)
            metrics["spear/intrinsic_weight"] = w
        if c.replay:
            rollout, scored = self._replay(task, row_items, rollout, scored, metrics)
        if c.reward != "majority":
            return rollout, row_items, scored, metrics
        labels = majority_pseudo_labels(answers, g_vote)
        n = len(rollout) // g_vote
        label_ok = []
        for i in range(n):
            row = labels.majority_row[i]
            label_ok.append(
                False
                if row < 0
                else bool(
                    task.grade(row_items[i * g_vote], rollout.texts[i * g_vote + row]).correct
                )
            )
        truth = scored.correct
        rewards = labels.rewards.reshape(-1)
        keep = None
        if self.config.mode == "iid" and g_vote > self.group_size:
            keep = torch.tensor([i * g_vote + s for i in range(n) for s in range(self.group_size)])
        ok = torch.tensor(label_ok, dtype=torch.float64)
        wrong = ok == 0
        metrics.update(
            {
                "ttrl/label_acc": float(ok.mean()),
                "ttrl/majority_share": float(labels.share.mean()),
                "ttrl/wrong_majority_share": float(labels.share[wrong].mean())
                if bool(wrong.any())
                else 0.0,
                "ttrl/reward_mean": float(rewards.mean()),
            }
        )
        if truth is not None:  # how often the pseudo-reward agrees with the true verdict
            metrics["ttrl/reward_agreement"] = float(
                (rewards.bool() == truth.bool()).float().mean()
            )
        self._share = labels.share
        if keep is not None:
            rollout = dataclasses.replace(rollout.select(keep), group_size=self.group_size)
            row_items = [row_items[i] for i in keep.tolist()]
            rewards = rewards[keep]
            truth = None if truth is None else truth[keep]
            if self._traces is not None:
                self._traces = [self._traces[i] for i in keep.tolist()]
        acc = None if truth is None else float(truth.float().mean())
        scored = dataclasses.replace(scored, rewards=rewards.float(), accuracy=acc, correct=truth)
        return rollout, row_items, scored, metrics

    # ---------------------------------------------------------------------------- shape
    def shape(self, adv: torch.Tensor, rollout: Rollout, step: int):
        """Advantages [R, T] after credit weights (shared prefixes) and ETTRL/ECHO reshaping;
        returns (adv, extra sequence_info, metrics)."""
        c = self.config
        metrics: dict[str, float] = {}
        extra: dict[str, torch.Tensor] = {}
        mask = rollout.response_mask
        if self._replayed:
            lam = sil_weight(step, c.sil_max, c.sil_warmup)
            adv = adv.clone()
            adv[self._replayed] = adv[self._replayed] * lam
            metrics["spear/sil_weight"] = lam
        if self.last is not None and c.prefix == "shared" and self.active_mode(step) == "tree":
            adv = adv * self.last.credit[:, : adv.shape[1]].to(adv.dtype)
        if c.shaping == "none":
            return adv, extra, metrics
        ent, conf = self._token_stats(rollout, mask, with_conf=c.shaping == "echo")
        if c.shaping == "ettrl":
            n, g = len(rollout) // rollout.group_size, rollout.group_size
            share = getattr(self, "_share", None)
            if share is None or share.numel() != n:
                raise EntrolabError("explore.shaping=ettrl needs explore.reward=majority")
            h_resp = (ent * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            seq = adv[:, 0] if adv.dim() == 2 else adv
            damped = ettrl_damping(
                seq.reshape(n, g), share, h_resp.reshape(n, g),
                strength=c.ettrl_strength, step=step, decay_steps=c.ettrl_decay_steps,
            ).reshape(-1)  # fmt: skip
            factor = torch.where(seq != 0, damped / torch.where(seq != 0, seq, 1.0), 1.0)
            adv = adv * factor[:, None].to(adv.dtype)
            metrics["explore/ettrl_factor"] = float(factor.mean())
        else:
            e = self.echo
            adv = echo_hybrid_advantages(
                adv, ent, conf, mask, rollout.prompt_index, alpha=e["alpha"], beta=e["beta"],
                s_max=e["s_max"], mult_coeff=e["mult_coeff"], add_coeff=e["add_coeff"],
            )  # fmt: skip
            eps = echo_clip_epsilon(
                conf, mask, tail_window=int(e["tail_window"]), eps_min=e["eps_min"],
                eps_max=e["eps_max"], kappa=e["kappa"],
            )  # fmt: skip
            extra["clip_epsilon"] = eps.float()
            metrics["explore/echo_clip_eps"] = float(eps.mean())
        return adv, extra, metrics

    def _token_stats(self, rollout: Rollout, mask: torch.Tensor, *, with_conf: bool):
        """Sampling-time entropy (and ECHO confidence) aligned with the response tokens [R, T]."""
        if self._traces is None:
            raise EntrolabError("reshaping needs the step's traces (call sample first)")
        r, t = mask.shape
        ent, conf = torch.zeros(r, t), torch.zeros(r, t)
        k = int(self.echo["confidence_topk"])
        for i, tr in enumerate(self._traces):
            n = int(mask[i].sum())
            start = len(tr) - n
            ent[i, :n] = tr.entropy[start:].float()
            if with_conf:
                conf[i, :n] = topk_confidence_probs(tr.topk_logprobs[start:], k).float()
        return ent, conf

    # --------------------------------------------------------------------------- replay
    def _replay(self, task, row_items, rollout: Rollout, scored, metrics):
        """SPEAR: splice buffered successes over each group's worst sample when they beat the
        current baseline; then offer each group's best fresh sample to the buffer."""
        g = rollout.group_size
        n = len(rollout) // g
        rewards = scored.rewards.clone()
        correct = None if scored.correct is None else scored.correct.clone()
        resp = [rollout.response_ids[r, : int(rollout.response_mask[r].sum())].tolist()
                for r in range(len(rollout))]  # fmt: skip
        prompts, texts = [list(p) for p in rollout.prompt_ids], list(rollout.texts)
        fresh = [(resp[r], prompts[r], texts[r], float(rewards[r])) for r in range(len(rollout))]
        for i in range(n):
            rows = list(range(i * g, (i + 1) * g))
            key = str(row_items[rows[0]].id)
            e = self.buffer.recall(key, float(rewards[rows].mean()))
            worst = min(rows, key=lambda r: float(rewards[r]))
            if e is not None and float(rewards[worst]) < e.reward:
                resp[worst], prompts[worst], texts[worst] = (
                    list(e.response_ids),
                    list(e.prompt_ids),
                    e.text,
                )
                rewards[worst] = e.reward
                if correct is not None:
                    correct[worst] = bool(task.grade(row_items[worst], e.text).correct)
                self._replayed.append(worst)
            best = max(rows, key=lambda r: fresh[r][3])
            ids, p, t, rew = fresh[best]
            self.buffer.offer(key, BufferEntry(p, ids, t, rew, self._step))
        if self._replayed:
            ids, mask = pad_batch(resp, self._pad, "right")
            rollout = dataclasses.replace(
                rollout, prompt_ids=prompts, response_ids=ids, response_mask=mask.to(torch.bool),
                texts=texts,
            )  # fmt: skip
            acc = scored.accuracy if correct is None else float(correct.float().mean())
            scored = dataclasses.replace(scored, rewards=rewards, correct=correct, accuracy=acc)
        metrics["spear/buffer_size"] = float(len(self.buffer))
        metrics["spear/replayed_frac"] = len(self._replayed) / max(n, 1)
        return rollout, scored

    def save(self, folder) -> None:
        """Checkpoint hook: the SPEAR buffer (safetensors + JSON) when replay is on."""
        if self.config.replay:
            self.buffer.save(folder)

    def load(self, folder) -> None:
        """Resume hook: the SPEAR buffer saved by :meth:`save`."""
        if self.config.replay:
            self.buffer = ReplayBuffer.load(folder)
