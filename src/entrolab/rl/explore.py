"""Exploring rollouts in the trainer: the ``explore`` config section and the :class:`Explorer` the
trainer calls at three points of a step (sample → relabel → shape).

Recipes built from it (see ``recipes/``):

- **tree** rollouts (``mode: tree``; :func:`entrolab.rl.tree_rollout.tree_rollout`): G roots and
  ``branches`` continuations at ``points`` positions per root picked by ``rule``; ``prefix`` says
  how inherited prefixes get gradient (``prompt``: none, ``shared``: 1/m credit, ``full``).
- **CURE** (``mode: cure``, ``stage1_steps``): critical-token re-concatenation (a tree rollout
  with CURE's critical rule) with DAPO for the first ``stage1_steps`` steps, then plain i.i.d.
  DAPO (stage 2) in the same run; ``explore/stage`` logs which stage a step ran.
- **TTRL** (``reward: majority``): majority-vote pseudo-labels from ``vote_samples`` per prompt,
  training on the first G; **ETTRL** = tree rollouts + majority + ``shaping: ettrl``;
  **ECHO** = ``rule: echo`` tree (DeepConf adaptive branch width and pruning,
  :mod:`entrolab.rl.echo`, settings ``echo_tree``; branches forced to the top-w tokens by
  default, as the official code, ``branch_tokens: sample`` samples them) + majority +
  ``shaping: echo`` + loss ``echo_clip``.
  Pseudo-label accuracy (majority vs truth) is logged every step as ``ttrl/label_acc``.
"""

from __future__ import annotations

import dataclasses

import torch

from entrolab.backends.decode import pad_batch
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.rl.agent import agent_rollout
from entrolab.rl.echo import echo_rollout
from entrolab.rl.explore_config import ECHO_DEFAULTS, ExploreConfig
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
        self._rollout_metrics: dict[str, float] = {}
        if mode == "agent":
            ro, self._rollout_metrics = agent_rollout(
                backend, prompts, gen, seeds, max_turns=c.agent_max_turns,
                window=c.agent_window, beta=c.agent_beta, penalty=c.agent_penalty,
                aepo=c.agent_aepo, instruction=c.agent_instruction,
            )  # fmt: skip
            return ro
        if mode == "tree" and c.rule == "echo":
            self.last, self._rollout_metrics = echo_rollout(
                backend, prompts, gen, seeds, size=c.tree_rows(gen.num_samples),
                params=c.echo_tree, prefix=c.prefix,
                prune=c.echo_prune,
            )  # fmt: skip
        elif mode == "tree":
            self.last = tree_rollout(
                backend, prompts, gen, seeds, rule=c.rule, points=c.points,
                branches=c.branches, prefix=c.prefix,
            )  # fmt: skip
        elif mode == "cure":
            self.last = cure_rollout(
                backend, prompts, gen, seeds, n2=c.cure_n2, top_k=c.cure_top_k,
                critical=c.cure_critical, min_chars=c.cure_min_chars,
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
        metrics.update(getattr(self, "_rollout_metrics", {}))
        if c.stage1_steps:
            metrics["explore/stage"] = 1.0 if self._step <= c.stage1_steps else 2.0
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
