"""The single-process GRPO loop: sample → score → advantages → policy updates → monitor.

One explicit loop (:meth:`Trainer.train`), one step at a time (:meth:`Trainer.train_step`):

1. take N prompts from the training pool (seeded order per epoch, or chosen by a
   :class:`~entrolab.rl.selection.PromptSelector` such as InSight; resumable from the step);
2. sample G completions per prompt with :meth:`HFBackend.generate` (one seed per prompt);
3. score them with the task's verifier (+ format reward) → rewards ``[N, G]``;
4. advantages ``adv_fn(rewards [N, G], **params)`` broadcast over each completion's tokens,
   then any confidence shapers (``grpo+ucas``; :mod:`entrolab.rl.shaping`);
5. ``ppo_epochs`` × ``mini_batches`` optimizer steps; each accumulates gradients over
   micro-batches whose losses use the *whole optimisation batch's* token/sequence counts (and,
   for token-selecting losses in batch scope, one ``prepare_selection`` per optimizer step), so
   the update does not depend on the micro-batch size; AdamW with gradient-norm clipping;
6. the entropy-dynamics monitor (:mod:`entrolab.rl.dynamics`), held-out evaluation every
   ``eval.every`` steps (and held-out calibration every ``calibration.every`` steps,
   :mod:`entrolab.rl.calibration_track`), metrics to ``metrics.jsonl`` (+ TensorBoard), checkpoints.

Run directory: ``config.yaml``, ``metrics.jsonl`` (one JSON object per step, step 0 = the
evaluation before training), ``probe.json`` (the monitor's fixed probe set), ``checkpoints/``,
``tb/``. Restarting on a run directory with a checkpoint resumes exactly (same metrics as an
uninterrupted run on CPU): weights, optimizer and RNG states are restored, every random draw is
seeded from (seed, step), and metric lines after the checkpoint are dropped.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from entrolab.backends import HFBackend
from entrolab.errors import EntrolabError
from entrolab.rl.checkpoint import MetricsLog
from entrolab.rl.config import TrainConfig
from entrolab.rl.controller import LossParamState
from entrolab.rl.dynamics import EntropyMonitor, discriminator_stats, phase_entropy
from entrolab.rl.entropy_law import covariance_proxy
from entrolab.rl.explore import Explorer
from entrolab.rl.leash import LeashTracker
from entrolab.rl.policy import build_policy, reference_context
from entrolab.rl.reward_terms import check_reward_terms, rollout_reward_terms
from entrolab.rl.rewards import RewardFn, eval_metrics, make_task, score_replies
from entrolab.rl.rollout import Rollout, prompt_seeds, response_logprobs
from entrolab.rl.runtime import ProgressBar, release_memory, tensorboard_writer
from entrolab.rl.shaping import rollout_advantages
from entrolab.rl.trainer_state import RESUMABLE_KEYS, TrainerState
from entrolab.rl.update import LossSetup, mean_metrics, run_updates
from entrolab.tasks.stated import AnswerBeforeConfidence

__all__ = ["RESUMABLE_KEYS", "Trainer", "build_policy", "reference_context"]


class Trainer(TrainerState):
    """GRPO-style RL fine-tuning in one process.

    Args:
        config: the run's :class:`~entrolab.rl.config.TrainConfig`.
        run_dir: where metrics, checkpoints and the probe set go; resumed if it has a checkpoint.
        model, tokenizer: use this policy instead of loading ``config.model.name``.
        task: use this task instead of ``config.task.spec``.
        reward_fn: custom rewards ``(items, replies) -> floats`` instead of the verifier.
        log: a function taking one-line status messages (default: silent).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        model=None,
        tokenizer=None,
        task=None,
        reward_fn: RewardFn | None = None,
        log=None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log or (lambda msg: None)
        if config.threads:
            torch.set_num_threads(config.threads)
        self._seed_everything(config.seed)
        # settings errors (task, loss, advantage names and params) before the model loads
        self.task = task or make_task(config.task.spec, config.task.settings)
        self.loss = LossSetup.from_config(config.algorithm, config.rollout.max_new_tokens)
        check_reward_terms(config.reward.terms)
        self.reward_fn = reward_fn
        self.policy, self.tokenizer, self.peft_model = self._build_policy(model, tokenizer)
        if "confidence_reward" in (config.reward.terms or {}) or config.calibration.verbal:
            # replies end with "Confidence: k/10", often the last number: grade the answer part
            self.task = AnswerBeforeConfidence(self.task)
        self.backend = HFBackend(self.policy, self.tokenizer, name=config.model.name or "")
        self.pad_id = int(self.tokenizer.pad_token_id)
        delim = (getattr(self.task, "answer_delimiter", None) or "").strip()  # per-phase entropy
        self._phase_ids = self.tokenizer(delim, add_special_tokens=False)["input_ids"] or None
        self.ref_model = None
        if config.algorithm.kl_coef > 0 and self.peft_model is None:
            self.ref_model = copy.deepcopy(self.policy).eval().requires_grad_(False)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if not params:
            raise EntrolabError("the policy has no trainable parameters")
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
        self._make_data()
        self.monitor = EntropyMonitor(config.monitor.bins, config.monitor.law_min_points)
        # band controller and run-level loss anchors (SIREN): loss params set between steps
        self.loss_state = LossParamState(config.controller, self.loss.loss_fn, self.loss.params)
        self.explorer = Explorer(config.explore, config.rollout.group_size)  # tree/CURE/TTRL
        self.leash = LeashTracker(self.run_dir)  # support metrics vs the starting checkpoint
        self.step = 0
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.probe: Rollout | None = None
        self._probe_h: torch.Tensor | None = None
        self._resume_or_start()

    def _build_policy(self, model, tokenizer):
        """:func:`build_policy` with a progress bar over the proxy SFT steps (shown only when the
        SFT runs) and its resume checkpoints in ``run_dir/sft``."""
        bars: list[ProgressBar] = []

        def sft_step(done: int, steps: int) -> None:
            if not bars:  # the first step of this process (done - 1 were resumed)
                bars.append(ProgressBar(self.config.progress, steps, done - 1, "SFT steps"))
            bars[0].advance(done)

        try:
            return build_policy(
                self.config, self.task, model, tokenizer, self.log,
                sft_dir=self.run_dir / "sft", on_sft_step=sft_step,
            )  # fmt: skip
        finally:
            for bar in bars:
                bar.close()

    # ------------------------------------------------------------------------------- loop
    def train(self, steps: int | None = None) -> list[dict[str, Any]]:
        """Run until ``steps`` (default ``config.steps``) steps are done; returns their metrics."""
        total = self.config.steps if steps is None else steps
        cfg = self.config
        writer = tensorboard_writer(self.run_dir / "tb", self.step + 1) if cfg.tensorboard else None
        records = []
        progress = ProgressBar(cfg.progress, total, self.step)
        try:
            if self.step == 0 and cfg.eval.at_start and self.eval_items and not self.metrics.has(0):
                rec = {"step": 0, **self.evaluate()}
                if self.calibration.due(0, last=False):
                    rec.update(self.calibration.evaluate(self.backend))
                self.metrics.append(rec, writer)
            while self.step < total:
                rec = self.train_step()
                last = self.step == total
                if self.eval_items and (
                    last or (cfg.eval.every and self.step % cfg.eval.every == 0)
                ):
                    rec.update(self.evaluate())
                if self.calibration.due(self.step, last):
                    rec.update(self.calibration.evaluate(self.backend))
                self.metrics.append(rec, writer)
                records.append(rec)
                if (last and cfg.checkpoint_at_end) or (
                    cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                ):
                    self.save_checkpoint()
                progress.update(rec)
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        return records

    # ------------------------------------------------------------------------------- step
    def train_step(self) -> dict[str, Any]:
        """One RL step; returns its metrics (also appended to the history by :meth:`train`)."""
        cfg, a = self.config, self.config.algorithm
        step = self.step + 1
        t0 = time.perf_counter()
        items = self._batch_items(step)
        n, g = len(items), cfg.rollout.group_size
        rollout = self.explorer.sample(
            self.backend,
            [it.prompt for it in items],
            self._gen_config(g, cfg.rollout.temperature),
            prompt_seeds(cfg.seed, step, n),
            step,
        )
        release_memory()  # the generation's KV cache and buffers
        t_gen = time.perf_counter()
        row_items = [items[i] for i in rollout.prompt_index.tolist()]
        scored = score_replies(self.task, row_items, rollout.texts, cfg.reward, self.reward_fn)
        rollout, row_items, scored, explore_metrics = self.explorer.relabel(
            self.task, row_items, rollout, scored
        )
        g = rollout.group_size  # tree/CURE groups: roots + branches
        total, term_metrics = rollout_reward_terms(
            cfg.reward.terms,
            scored.rewards,
            scored.correct,
            rollout,
            model=self.policy,
            tokenizer=self.tokenizer,
            pad_id=self.pad_id,
            temperature=cfg.rollout.temperature,
            micro_batch_size=a.micro_batch_size,
        )
        rewards = total.view(n, g)
        mask = rollout.response_mask
        adv, adv_metrics = rollout_advantages(
            self.loss.pipeline,
            model=self.policy,
            rollout=rollout,
            rewards=rewards,
            task=self.task,
            items=row_items,
            tokenizer=self.tokenizer,
            pad_id=self.pad_id,
            temperature=cfg.rollout.temperature,
            micro_batch_size=a.micro_batch_size,
        )
        adv, explore_info, shape_metrics = self.explorer.shape(adv, rollout, step)
        explore_metrics.update(shape_metrics)
        tau = cfg.rollout.temperature
        ref_lp = None
        if a.kl_coef > 0:
            with reference_context(self.peft_model):
                model = self.ref_model if self.ref_model is not None else self.policy
                ref_lp = response_logprobs(
                    model,
                    rollout,
                    pad_id=self.pad_id,
                    temperature=tau,
                    micro_batch_size=a.micro_batch_size,
                    entropy=False,
                ).logprobs
        n_updates = a.ppo_epochs * a.mini_batches
        old = None
        if a.old_logprobs == "forward" or n_updates > 1 or self.loss.needs_selection:
            old = response_logprobs(
                self.policy,
                rollout,
                pad_id=self.pad_id,
                temperature=tau,
                micro_batch_size=a.micro_batch_size,
            )
        lr = cfg.optim.lr * (
            min(1.0, step / cfg.optim.warmup_steps) if cfg.optim.warmup_steps else 1.0
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.loss_state.apply(self.loss.params)
        upd = run_updates(
            self.loss,
            self.policy,
            self.optimizer,
            rollout,
            adv,
            old=old,
            ref_logprobs=ref_lp,
            pad_id=self.pad_id,
            temperature=tau,
            ppo_epochs=a.ppo_epochs,
            mini_batches=a.mini_batches,
            max_grad_norm=cfg.optim.max_grad_norm,
            shuffle_seed=prompt_seeds(cfg.seed, step, 1, stream="shuffle")[0],
            step=step,
            sequence_info={
                **_sequence_info(rollout, scored.correct, scored.rewards, n, g),
                **explore_info,
            },
        )
        grad_norms = upd.grad_norms
        release_memory()  # activations and logits of the updates
        t_train = time.perf_counter()
        batch_lp = old.logprobs if old is not None else upd.logprobs
        batch_h = old.entropy if old is not None and old.entropy is not None else upd.entropy
        n_tok = max(int(mask.sum()), 1)
        cov = float(covariance_proxy(batch_lp, adv, mask).sum()) / n_tok
        entropy = float((batch_h * mask).sum()) / n_tok
        probe: dict[str, Any] = {}
        if self.probe is not None:
            after = self.probe_entropy()
            probe = {
                "probe_before": self._probe_h,
                "probe_after": after,
                "probe_mask": self.probe.response_mask,
            }
            self._probe_h = after
        reward_mean = float(rewards.mean())
        rec: dict[str, Any] = {
            "step": step,
            "train/reward": reward_mean,
            "train/reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
            "train/accuracy": scored.accuracy,
            "train/format": scored.format_rate,
            "train/frac_zero_std": float((rewards.std(dim=1) == 0).float().mean()),
            "train/response_len": float(mask.sum(-1).float().mean()),
            "opt/lr": lr,
            "opt/grad_norm": sum(grad_norms) / len(grad_norms),
            "opt/grad_norm_max": max(grad_norms),
        }
        rec.update({f"loss/{k}": v for k, v in mean_metrics(upd.metrics).items()})
        rec.update(adv_metrics)
        rec.update(term_metrics)
        rec.update(explore_metrics)
        rec.update(self.selector.observe(self._batch_index, scored.rewards.view(n, g)))
        rec.update(
            self.monitor.update(entropy=entropy, reward=reward_mean, covariance=cov, **probe)
        )
        rec.update(discriminator_stats(batch_lp, batch_h, adv, mask))
        if self._phase_ids:
            rec.update(phase_entropy(batch_h, rollout.response_ids, mask, self._phase_ids))
        rec.update(self.loss_state.observe(rec))
        t_end = time.perf_counter()
        rec.update(
            {
                "time/step_s": t_end - t0,
                "time/generate_s": t_gen - t0,
                "time/update_s": t_train - t_gen,
                "time/monitor_s": t_end - t_train,
            }
        )
        self.step = step
        return rec

    # ------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, Any]:
        """Held-out pass@1, pass@k, answer entropy over k samples (and mean token entropy)."""
        e = self.config.eval
        t0 = time.perf_counter()
        items = self.eval_items
        traces = self.backend.generate(
            [it.prompt for it in items],
            self._gen_config(e.samples, e.temperature),
            seeds=prompt_seeds(self.config.seed, 0, len(items), stream="eval"),
        )
        out = eval_metrics(self.task, items, traces, e.samples)
        out.update(self.leash.observe(self.task, items, traces, e.samples, self.step))  # vs start
        out["time/eval_s"] = time.perf_counter() - t0
        return out


def _sequence_info(rollout: Rollout, correct, rewards: torch.Tensor, n: int, g: int) -> dict:
    """Per-row ``group`` (prompt id), ``correct`` and ``pass_rate`` (group accuracy) [N·G];
    custom rewards without verdicts count a reward > 0 as correct."""
    c = (rewards > 0 if correct is None else correct).reshape(n, g).float()
    return {
        "group": rollout.prompt_index.clone(),
        "correct": c.reshape(-1),
        "pass_rate": c.mean(1, keepdim=True).expand(n, g).reshape(-1),
    }
