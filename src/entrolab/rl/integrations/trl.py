"""TRL plug-in: a ``trl.GRPOTrainer`` whose advantages and per-token policy loss come from
entrolab's registries, logging the entropy-dynamics metrics through TRL's own metric logging.

Tested with TRL 1.16.0 (transformers 5.24.0, torch 2.13.0+cpu). The override surface is three
``GRPOTrainer`` methods, each calling TRL's own code for everything it does not replace:

* ``_calculate_rewards`` — unchanged; its result (rewards of all processes, ``[N·G, F]``) is kept.
* ``_generate_and_score_completions`` — TRL's output, with ``output["advantages"]`` replaced by
  ``advantage_estimators[advantage](R.view(N, G), **advantage_params)`` where ``R`` is the
  weighted sum of the reward functions (TRL's ``sum_then_normalize`` reward); in ``"batch"``
  selection scope it also runs :func:`entrolab.rl.losses.prepare_selection` on the batch.
* ``_compute_loss`` — one forward through TRL's ``_get_per_token_logps_and_entropies``
  (``compute_entropy=True``; log-probs and entropy of the temperature-scaled logits, entropy
  differentiable) → :func:`trl_policy_loss_input` → ``policy_losses[loss](inp, **loss_params)``.

Reduction scope: the loss of one micro-batch is normalised by the counts of the whole optimizer
step (:func:`trl_global_counts`), so the micro-batch losses TRL accumulates sum to the loss of the
full batch; with P processes each local loss is multiplied by P because DDP averages gradients.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from entrolab.errors import EntrolabError
from entrolab.rl.entropy_law import covariance_proxy
from entrolab.rl.integrations.trl_inputs import (
    _MM_KEYS,
    SEQ_PREFIX,
    TESTED_TRL_VERSIONS,
    TRL_AGGREGATION,
    trl_global_counts,
    trl_policy_loss_input,
    trl_sequence_info,
)
from entrolab.rl.losses import POLICY_LOSSES, prepare_selection
from entrolab.rl.shaping import AdvantagePipeline
from entrolab.rl.types import PolicyLossInput

__all__ = [
    "TESTED_TRL_VERSIONS",
    "EntrolabGRPOTrainer",
    "StepTimer",
    "trainer_from_config",
    "trl_global_counts",
    "trl_policy_loss_input",
]


#: losses that cannot run without ``inp.logits`` → what they use them for
_NEEDS_LOGITS = {"clip_v": "the vocabulary baseline E_π[S] of each position"}
#: losses that need ``inp.sequence_info`` (group, correct, pass_rate, row)
_NEEDS_SEQUENCE_INFO = {"ares"}


class EntrolabGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` routed through entrolab's registries (all other arguments are TRL's).

    Args:
        loss: a ``entrolab.rl.policy_losses`` name (``"kl_cov"``, ``"clip_cov"``,
            ``"forking_tokens"``, …); None keeps TRL's own loss.
        loss_params: keyword arguments of the loss (e.g. ``{"kl_cov_ratio": 2e-3}``).
        aggregation: loss aggregation; None → the mode matching ``args.loss_type``.
        advantage: a ``entrolab.rl.advantage_estimators`` name, optionally followed by
            confidence shapers (``"grpo+ucas"``; single process, needs ``loss``); None keeps
            TRL's advantages.
        advantage_params: keyword arguments of the estimator (a shaper's under its name).
        selection_scope: ``"micro_batch"`` or ``"batch"`` for losses that select tokens
            (None: the loss's default). ``"batch"`` = this process's generation batch.
        pass_logits: give the loss the temperature-scaled logits ``[B, T, V]`` (needed by
            ``clip_v``; optional for ``siren``'s top-p and ``aepo_arbitrary``'s exact form).
            TRL's fused LM head never materialises them, so they come from one extra no-grad
            forward per micro-batch (detached: no gradient flows through them).

    Losses that need per-sequence verdicts (``ares``: group, correctness, group pass rate) get
    them from TRL's rewards: the G completions of a prompt form a group, a completion with a
    summed reward > 0 counts as correct (:func:`trl_sequence_info`).

    TRL's ``beta`` becomes the loss's ``kl_coef`` (k3 estimator, like TRL) and TRL's
    ``ref_per_token_logps`` its ``ref_logprobs``. TRL loss settings an entrolab loss would
    silently ignore (``epsilon*``, ``delta``, ``top_entropy_quantile``, ``entropy_coef``,
    sequence-level importance sampling, off-policy masks, vLLM IS correction, KL bias
    correction) raise :class:`EntrolabError` naming the entrolab equivalent.
    """

    def __init__(
        self,
        *args: Any,
        loss: str | None = None,
        loss_params: Mapping[str, Any] | None = None,
        aggregation: str | None = None,
        advantage: str | None = None,
        advantage_params: Mapping[str, Any] | None = None,
        selection_scope: str | None = None,
        pass_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        self._el_loss_name = None if loss is None else POLICY_LOSSES.entry(loss).name
        self._el_loss_fn = None if loss is None else POLICY_LOSSES.get(loss)
        self._el_loss_params = dict(loss_params or {})
        self._el_pass_logits = bool(pass_logits)
        need = _NEEDS_LOGITS.get(self._el_loss_name or "")
        if need and not pass_logits:
            raise EntrolabError(
                f"loss {self._el_loss_name!r} needs the full logits for {need}, which TRL's "
                "fused LM head never materialises; pass pass_logits=True (one extra no-grad "
                "forward per micro-batch)"
            )
        # base estimator + confidence shapers ("grpo+ucas"; shapers: integrations/trl_shaping.py)
        self._el_pipeline = (
            None
            if advantage is None
            else AdvantagePipeline(advantage, dict(advantage_params or {}))
        )
        self._el_adv_fn = (
            None if self._el_pipeline is None else self._el_pipeline.sequence_advantages
        )
        self._el_adv_params: dict[str, Any] = {}
        self._el_rewards: torch.Tensor | None = None
        self._el_selection: dict[str, dict[str, torch.Tensor] | None] = {}
        super().__init__(*args, **kwargs)
        fwd = self._get_per_token_logps_and_entropies
        self._el_fwd_params = set(inspect.signature(fwd).parameters)
        if self._el_loss_fn is not None:
            self._el_setup_loss(aggregation, selection_scope)
        if self._el_adv_fn is not None:
            self._el_setup_advantage()

    # ------------------------------------------------------------------ validation
    def _el_setup_loss(self, aggregation: str | None, selection_scope: str | None) -> None:
        a, name = self.args, self._el_loss_name

        def refuse(what: str, instead: str) -> NoReturn:
            raise EntrolabError(
                f"EntrolabGRPOTrainer(loss={name!r}) ignores TRL's {what}; {instead}"
            )

        for bad, what, instead in (
            (a.epsilon != 0.2 or a.epsilon_high not in (None, a.epsilon), "epsilon/epsilon_high",
             "set clip_low/clip_high in loss_params"),
            (a.delta is not None, "delta (two-sided clip)", "use dual_clip in loss_params"),
            (self.top_entropy_quantile < 1.0, "top_entropy_quantile",
             "use loss='forking_tokens_trl' with loss_params rho"),
            (getattr(self, "_entropy_bonus_enabled", False), "entropy_coef/use_adaptive_entropy",
             "use loss='entropy_bonus'"),
            (self.importance_sampling_level != "token", "importance_sampling_level='sequence'",
             "keep the token level"),
            (getattr(self, "off_policy_mask_threshold", None) is not None,
             "off_policy_mask_threshold", "leave it None"),
            (self.use_vllm and self.vllm_importance_sampling_correction,
             "vLLM importance-sampling correction", "set vllm_importance_sampling_correction=False"),
            (self.beta != 0.0 and a.use_bias_correction_kl, "use_bias_correction_kl",
             "set use_bias_correction_kl=False (entrolab's KL term has no IS factor)"),
        ):  # fmt: skip
            if bad:
                refuse(what, instead)
        params = self._el_loss_params
        if self.beta != 0.0:
            if params.get("kl_coef", self.beta) != self.beta:
                refuse("beta when loss_params sets kl_coef", "set only one of them")
            params["kl_coef"] = self.beta
            params.setdefault("kl_type", "k3")
        sig = inspect.signature(self._el_loss_fn).parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.values())
        if selection_scope is not None and (var_kw or "selection_scope" in sig):
            if params.get("selection_scope", selection_scope) != selection_scope:
                refuse("selection_scope twice", "pass it once")
            params["selection_scope"] = selection_scope
        if aggregation is None:
            aggregation = TRL_AGGREGATION.get(a.loss_type)
            if aggregation is None:
                refuse(f"loss_type={a.loss_type!r}", "pass aggregation= explicitly")
        self._el_aggregation = aggregation
        if not var_kw:
            known = sorted(set(sig) - {"inp", "aggregation"})
            unknown = sorted(k for k in params if k not in known)
            if unknown:
                raise EntrolabError(
                    f"loss {name!r} has no parameter(s) {unknown}; it accepts {known}"
                )

    def _el_setup_advantage(self) -> None:
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise EntrolabError(
                "an entrolab advantage estimator sums the weighted rewards first; set "
                "multi_objective_aggregation='sum_then_normalize'"
            )
        if self.scale_rewards != "group":
            raise EntrolabError(
                "scale_rewards is TRL's advantage setting, ignored with advantage=…; use "
                "advantage_params instead (e.g. grpo scale='batch' or advantage='dr_grpo')"
            )

    # ------------------------------------------------------------------ advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._el_rewards = rewards
        return rewards

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        if self._el_adv_fn is not None:
            output["advantages"] = self._el_advantages(mode, output["advantages"], output)
        if self._el_loss_name in _NEEDS_SEQUENCE_INFO:
            output.update(self._el_sequence_info(mode, output))
        if self._el_loss_fn is not None and self._el_loss_params.get("selection_scope") == "batch":
            self._el_selection[mode] = self._el_prepare_selection(mode, output)
        return output

    def _el_advantages(
        self, mode: str, trl_advantages: torch.Tensor, output: dict[str, Any] | None = None
    ) -> torch.Tensor:
        per_func = self._el_rewards
        assert per_func is not None
        if bool(torch.isnan(per_func).all(dim=1).any()):
            raise EntrolabError(
                "a completion got None from every reward function; entrolab advantage estimators "
                "need a finite reward for each completion (return 0.0 instead of None)"
            )
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        g = self.num_generations if mode == "train" else self.num_generations_eval
        if self._el_pipeline is not None and self._el_pipeline.shapers and output is not None:
            from entrolab.rl.integrations.trl_shaping import trl_shaped_advantages

            tok_adv, metrics = trl_shaped_advantages(self, self._el_pipeline, output, rewards, g)
            for key, value in {
                **metrics,
                "advantage_abs_mean": float(tok_adv.abs().mean()),
            }.items():
                self._metrics[mode][f"entrolab/{key}"].append(value)
            return tok_adv  # [B, T] per-token advantages (single process)
        adv = self._el_adv_fn(rewards.view(-1, g), **self._el_adv_params).reshape(-1)
        n = trl_advantages.shape[0]
        start = self.accelerator.process_index * n
        self._metrics[mode]["entrolab/advantage_abs_mean"].append(float(adv.abs().mean()))
        return adv[start : start + n].to(trl_advantages.device, torch.float32)

    def _el_sequence_info(self, mode: str, output: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``SEQ_PREFIX``-keyed per-sequence tensors of this process's rows (split with the batch)."""
        per_func = self._el_rewards
        assert per_func is not None
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        g = self.num_generations if mode == "train" else self.num_generations_eval
        n = output["completion_ids"].shape[0]
        info = trl_sequence_info(rewards, g, self.accelerator.process_index * n, n)
        device = output["completion_ids"].device
        return {SEQ_PREFIX + k: v.to(device) for k, v in info.items()}

    def _el_prepare_selection(self, mode: str, output: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = (
            self.args.per_device_train_batch_size
            if mode == "train"
            else self.args.per_device_eval_batch_size
        )
        with torch.no_grad():
            logps, ent, _ = self._el_forward(self.model, output, batch_size=batch)
            logits = self._el_logits(self.model, output) if self._el_pass_logits else None
            inp = trl_policy_loss_input(output, logps, ent, use_ref=self.beta != 0.0, logits=logits)
            return prepare_selection(self._el_loss_name, inp, **self._el_loss_params)

    # ------------------------------------------------------------------ loss
    def _el_forward(
        self, model: torch.nn.Module, inputs: Mapping[str, Any], batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        kw = {k: inputs.get(k) for k in _MM_KEYS if k in self._el_fwd_params}
        if "compute_aux_loss" in self._el_fwd_params:
            kw["compute_aux_loss"] = getattr(self, "aux_loss_enabled", False)
        out = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, inputs["completion_ids"].size(1),
            batch_size=batch_size, compute_entropy=True, **kw,
        )  # fmt: skip
        if out[1] is None:
            raise EntrolabError("TRL returned no token entropy although compute_entropy=True")
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def _el_logits(self, model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        """Detached temperature-scaled logits ``[B, T, V]`` of the completion positions (one
        plain forward without TRL's fused head; text models only)."""
        if any(inputs.get(k) is not None for k in _MM_KEYS):
            raise EntrolabError("pass_logits supports text-only batches (no image inputs)")
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        t = inputs["completion_ids"].size(1)
        with torch.no_grad(), self.accelerator.autocast():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, -t - 1 : -1, :].float() / self.temperature

    def _compute_loss(self, model, inputs):  # type: ignore[no-untyped-def]
        if self._el_loss_fn is None:
            return super()._compute_loss(model, inputs)
        mode = "train" if self.model.training else "eval"
        logps, entropies, aux = self._el_forward(model, inputs)
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        tokens, seqs, scale = trl_global_counts(
            inputs["num_items_in_batch"], logps.shape[0], int(mask.sum()),
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=self.current_gradient_accumulation_steps,
            steps_per_generation=self.args.steps_per_generation, training=mode == "train",
        )  # fmt: skip
        inp = trl_policy_loss_input(
            inputs, logps, entropies, use_ref=self.beta != 0.0, global_tokens=tokens,
            global_sequences=seqs, max_response_length=self.max_completion_length,
            selection=self._el_selection.get(mode),
            logits=self._el_logits(model, inputs) if self._el_pass_logits else None,
        )  # fmt: skip
        out = self._el_loss_fn(inp, aggregation=self._el_aggregation, **self._el_loss_params)
        loss = out.loss * scale
        if aux is not None:  # MoE load-balancing loss, scaled for accumulation as TRL does
            ga = self.current_gradient_accumulation_steps if mode == "train" else 1
            loss = loss + self.router_aux_loss_coef * aux / ga
        self._el_log(mode, out.metrics, inp)
        return loss

    def _el_log(self, mode: str, metrics: Mapping[str, float], inp: PolicyLossInput) -> None:
        """Loss metrics as ``entrolab/<name>`` plus the monitor's micro-batch statistics, averaged
        over processes; the TRL names (entropy, clip_ratio/*, kl) are filled from them too."""
        m = {f"entrolab/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        with torch.no_grad():
            mask = inp.response_mask
            n = max(int(mask.sum()), 1)
            if inp.entropy is not None:
                m["entrolab/entropy_mean"] = (
                    float(torch.where(mask, inp.entropy.float(), 0.0).sum()) / n
                )
            cov = covariance_proxy(inp.logprobs, inp.advantages, mask)
            m["entrolab/cov_mean"] = float(cov.sum()) / n
        for trl_name, key in (
            ("entropy", "entrolab/entropy_mean"), ("kl", "entrolab/kl_ref"),
            ("clip_ratio/low_mean", "entrolab/clip_frac_low"),
            ("clip_ratio/high_mean", "entrolab/clip_frac_high"),
            ("clip_ratio/region_mean", "entrolab/clip_frac"),
        ):  # fmt: skip
            if key in m:
                m[trl_name] = m[key]
        values = torch.tensor(list(m.values()), dtype=torch.float32, device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        for k, v in zip(m, values.tolist(), strict=True):
            self._metrics[mode][k].append(v)


class StepTimer(TrainerCallback):
    """Wall-clock seconds of each optimizer step (generation, scoring, forward/backward, update):
    ``step_seconds[i]`` is step ``i + 1``. Pass it in ``callbacks=[…]``."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self._t0: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if self._t0 is not None:
            self.step_seconds.append(time.perf_counter() - self._t0)
            self._t0 = None


def trainer_from_config(
    cfg: Any,
    *,
    model: Any,
    processing_class: Any,
    train_dataset: Any,
    reward_funcs: Any,
    output_dir: str,
    callbacks: list[Any] | None = None,
    **grpo_overrides: Any,
) -> EntrolabGRPOTrainer:
    """An :class:`EntrolabGRPOTrainer` with the same algorithm as an ``entrolab.rl.config.TrainConfig``.

    Mapping: ``rollout`` → ``num_generations`` (G), ``max_completion_length``, temperature/top-p/
    top-k; one RL step of ``prompts_per_step × group_size`` sequences = one TRL generation
    batch, split into ``algorithm.mini_batches`` optimizer steps of ``micro_batch_size``-row
    micro-batches, ``ppo_epochs`` → ``num_iterations``; ``max_steps = steps · mini_batches ·
    ppo_epochs``; ``optim`` → AdamW settings and a constant schedule after linear warm-up;
    ``kl_coef`` → ``beta`` (estimator ``kl_estimator``); autocast only for a bf16/fp16
    ``model.dtype`` (TRL 1.16 otherwise defaults to bf16 autocast). The dataset must hold the
    ``prompt`` column (chat-formatted or not, as the run wants). ``grpo_overrides`` go to
    ``GRPOConfig`` last (e.g. ``report_to``, ``logging_steps``).
    """
    r, al, op = cfg.rollout, cfg.algorithm, cfg.optim
    rows = r.prompts_per_step * r.group_size
    per_update = rows // al.mini_batches
    if per_update % al.micro_batch_size:
        raise EntrolabError(
            f"TRL needs equal micro-batches: micro_batch_size={al.micro_batch_size} must divide "
            f"the {per_update} sequences of each optimizer step"
        )
    ga = per_update // al.micro_batch_size
    updates = al.mini_batches * al.ppo_epochs
    args = dict(
        output_dir=output_dir, seed=cfg.seed, max_steps=cfg.steps * updates,
        per_device_train_batch_size=al.micro_batch_size, gradient_accumulation_steps=ga,
        steps_per_generation=ga * al.mini_batches, num_iterations=al.ppo_epochs,
        num_generations=r.group_size, max_completion_length=r.max_new_tokens,
        temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        learning_rate=op.lr, weight_decay=op.weight_decay, adam_beta1=op.betas[0],
        adam_beta2=op.betas[1], adam_epsilon=op.eps, max_grad_norm=op.max_grad_norm,
        warmup_steps=op.warmup_steps * updates,
        lr_scheduler_type="constant_with_warmup" if op.warmup_steps else "constant",
        beta=al.kl_coef, use_bias_correction_kl=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=not cfg.progress, bf16=cfg.model.dtype == "bfloat16",
        fp16=cfg.model.dtype == "float16",
    )  # fmt: skip
    args.update(grpo_overrides)
    peft_config = None
    if cfg.model.lora.enabled:
        from peft import LoraConfig

        lc = cfg.model.lora
        peft_config = LoraConfig(
            r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
            target_modules=list(lc.target_modules), task_type="CAUSAL_LM",
        )  # fmt: skip
    loss_params = dict(al.loss_params)
    if al.kl_coef:
        loss_params.setdefault("kl_type", al.kl_estimator)
    return EntrolabGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=GRPOConfig(**args),
        train_dataset=train_dataset, processing_class=processing_class, callbacks=callbacks,
        peft_config=peft_config, loss=al.loss, loss_params=loss_params,
        aggregation=al.aggregation, advantage=al.advantage,
        advantage_params=dict(al.advantage_params), selection_scope=al.selection_scope,
        pass_logits=al.pass_logits,
    )  # fmt: skip
