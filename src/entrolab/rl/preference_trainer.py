"""The preference-optimisation loop (DPO / VPO on self-generated pairs, see
:mod:`entrolab.rl.preference`): the RL :class:`~entrolab.rl.trainer.Trainer` with its data,
prompt selection, evaluation, calibration tracking, checkpoints and logs, and a preference step
instead of the policy-gradient step. ``entrolab train`` uses it when ``preference.method`` is
``dpo`` or ``vpo``. One optimizer step per RL step over all pairs of the step (gradient
accumulated over micro-batches of ``algorithm.micro_batch_size`` sequences).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.preference import build_pairs, dpo_loss, vpo_loss
from entrolab.rl.trainer import Trainer

__all__ = ["PreferenceTrainer", "make_trainer"]


def make_trainer(config, run_dir, **kwargs: Any) -> Trainer:
    """A :class:`PreferenceTrainer` when ``config.preference.method`` is set, else a
    :class:`Trainer`."""
    if config.preference.method != "none":
        return PreferenceTrainer(config, run_dir, **kwargs)
    return Trainer(config, run_dir, **kwargs)


def _seq_logprobs(model, rollout, rows: torch.Tensor, *, pad_id: int, grad: bool, micro: int):
    """Summed log-probs (temperature 1) of ``rows`` → ([S], token entropies sum, tokens)."""
    from entrolab.rl.rollout import policy_forward

    out, h_sum, n_tok = [], 0.0, 0
    for part in rows.split(micro):
        sub = rollout.select(part)
        with torch.set_grad_enabled(grad):
            fo = policy_forward(model, sub, pad_id=pad_id, temperature=1.0, entropy=grad)
        out.append(fo.logprobs.sum(-1))
        if fo.entropy is not None:
            h_sum += float(fo.entropy.detach().sum())
            n_tok += int(sub.response_mask.sum())
    return torch.cat(out), h_sum, n_tok


class PreferenceTrainer(Trainer):
    """The RL :class:`~entrolab.rl.trainer.Trainer` (data, selection, evaluation, calibration
    tracking, checkpoints, logs) with a preference step instead of the policy-gradient step."""

    def __init__(self, config, run_dir, **kwargs: Any) -> None:
        if config.preference.method == "none":
            raise EntrolabError("PreferenceTrainer needs preference.method dpo or vpo")
        super().__init__(config, run_dir, **kwargs)
        from entrolab.backends import HFBackend

        self.pref_ref = None
        if self.peft_model is None:
            self.pref_ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        ref_model = self.pref_ref if self.pref_ref is not None else self.policy
        self.ref_backend = HFBackend(ref_model, self.tokenizer, name="reference")

    def _ref_logprobs(self, rollout, rows: torch.Tensor) -> torch.Tensor:
        from entrolab.rl.policy import reference_context

        micro = self.config.algorithm.micro_batch_size
        with reference_context(self.peft_model if self.pref_ref is None else None):
            model = self.pref_ref if self.pref_ref is not None else self.policy
            lp, _, _ = _seq_logprobs(
                model, rollout, rows, pad_id=self.pad_id, grad=False, micro=micro
            )
        return lp.detach()

    def train_step(self) -> dict[str, Any]:
        from entrolab.rl.policy import reference_context
        from entrolab.rl.rewards import score_replies
        from entrolab.rl.rollout import prompt_seeds, sample_rollout
        from entrolab.rl.runtime import release_memory

        cfg, p = self.config, self.config.preference
        step = self.step + 1
        t0 = time.perf_counter()
        items = self._batch_items(step)
        n, g = len(items), cfg.rollout.group_size
        gen = self._gen_config(g, cfg.rollout.temperature)
        seeds = prompt_seeds(cfg.seed, step, n)
        prompts = [it.prompt for it in items]
        if p.mode == "offline":  # the frozen initial policy generates the data
            with reference_context(self.peft_model if self.pref_ref is None else None):
                rollout = sample_rollout(self.ref_backend, prompts, gen, seeds)
        else:
            rollout = sample_rollout(self.backend, prompts, gen, seeds)
        release_memory()
        row_items = [items[i] for i in rollout.prompt_index.tolist()]
        scored = score_replies(self.task, row_items, rollout.texts, cfg.reward, self.reward_fn)
        if scored.correct is None:
            raise EntrolabError("preference pairs need the task's verifier (no custom reward_fn)")
        pairs = build_pairs(scored.correct, g, per_prompt=p.pairs_per_prompt, seed=seeds[0])
        rec: dict[str, Any] = {
            "step": step,
            "train/reward": float(scored.rewards.mean()),
            "train/accuracy": scored.accuracy,
            "train/response_len": float(rollout.response_mask.sum(-1).float().mean()),
            "pref/pairs": float(len(pairs)),
        }
        rec.update(self.selector.observe(self._batch_index, scored.rewards.view(n, g)))
        self.optimizer.zero_grad(set_to_none=False)
        self.step = step  # (the learning-rate warm-up reads it)
        if pairs:
            rec.update(self._update(rollout, pairs))
        rec["time/step_s"] = time.perf_counter() - t0
        return rec

    def _update(self, rollout, pairs: list[tuple[int, int]]) -> dict[str, float]:
        p, a = self.config.preference, self.config.algorithm
        w = torch.tensor([c for c, _ in pairs], dtype=torch.int64)
        lo = torch.tensor([r for _, r in pairs], dtype=torch.int64)
        cal = {"chosen": w, "rejected": lo, "all": torch.cat([w, lo])}[p.calibration]
        ref_w, ref_l = self._ref_logprobs(rollout, w), self._ref_logprobs(rollout, lo)
        ref_cal = self._ref_logprobs(rollout, cal)
        micro = a.micro_batch_size
        pol_w, h1, n1 = _seq_logprobs(
            self.policy, rollout, w, pad_id=self.pad_id, grad=True, micro=micro
        )
        pol_l, h2, n2 = _seq_logprobs(
            self.policy, rollout, lo, pad_id=self.pad_id, grad=True, micro=micro
        )
        if p.method == "vpo":
            pol_cal = {"chosen": pol_w, "rejected": pol_l, "all": torch.cat([pol_w, pol_l])}[
                p.calibration
            ]
            sign = -1.0 if p.mode == "offline" else 1.0
            loss, dpo, value = vpo_loss(
                pol_w, pol_l, ref_w, ref_l, pol_cal, ref_cal, beta=p.beta, alpha=p.alpha, sign=sign
            )
        else:
            per_pair, _ = dpo_loss(pol_w, pol_l, ref_w, ref_l, p.beta)
            loss = dpo = per_pair.mean()
            value = torch.zeros(())
        if not bool(torch.isfinite(loss.detach())):
            raise EntrolabError("preference loss is not finite; lower optim.lr")
        loss.backward()
        params = [q for group in self.optimizer.param_groups for q in group["params"]]
        max_norm = self.config.optim.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        o = self.config.optim
        lr = o.lr * (min(1.0, self.step / o.warmup_steps) if o.warmup_steps else 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)
        h = (pol_w - ref_w).detach()
        h_l = (pol_l - ref_l).detach()
        margin = p.beta * (h - h_l)
        return {
            "pref/loss": float(loss.detach()),
            "pref/dpo_loss": float(dpo.detach()),
            "pref/vpo_term": float(value.detach()),
            "pref/chosen_logratio": float(h.mean()),
            "pref/rejected_logratio": float(h_l.mean()),
            "pref/margin": float(margin.mean()),
            "pref/reward_acc": float((margin > 0).float().mean()),
            "pref/chosen_logprob": float(pol_w.detach().mean()),
            "dyn/entropy": (h1 + h2) / max(n1 + n2, 1),
            "opt/grad_norm": float(norm),
            "opt/lr": lr,
        }
