"""Training configuration: nested dataclasses loaded from YAML recipes, with dotted overrides.

The dataclasses are the single source of truth. :func:`load_config` reads a YAML recipe, applies
``key=value`` overrides (dotted paths such as ``algorithm.loss=kl_cov`` or
``algorithm.loss_params.ratio=0.002``; values are parsed as YAML scalars/lists) and validates the
result: unknown keys fail naming the known ones (with a close match), values of the wrong type
or out of range fail naming the field and the accepted values.

Sections (see each class): ``model``, ``task``, ``rollout``, ``reward``, ``algorithm``, ``optim``,
``eval``, ``monitor``, ``sft`` (proxy model only) and top-level run settings. The generic
conversion, override and recipe-reading machinery lives in :mod:`entrolab.rl.config_io`
(``apply_overrides`` and ``config_hash`` are re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from entrolab.errors import EntrolabError
from entrolab.rl.calibration_track import CalibrationConfig
from entrolab.rl.config_io import apply_overrides, build_dataclass, config_hash, read_recipe
from entrolab.rl.controller import EntropyBandConfig
from entrolab.rl.explore import ExploreConfig
from entrolab.rl.preference import PreferenceConfig
from entrolab.rl.selection import SelectionConfig

__all__ = [
    "AlgorithmConfig",
    "CalibrationConfig",
    "EvalConfig",
    "LoraConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "PreferenceConfig",
    "RewardConfig",
    "RolloutConfig",
    "SFTConfig",
    "SelectionConfig",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_hash",
    "config_to_dict",
    "load_config",
]


def _require(ok: bool, section: str, message: str) -> None:
    if not ok:
        raise EntrolabError(f"invalid {section} config: {message}")


@dataclass
class LoraConfig:
    """LoRA adapters via ``peft`` (optional dependency).

    Attributes:
        enabled: train LoRA adapters instead of all weights.
        r: adapter rank. alpha: scaling numerator (scale = alpha / r).
        target_modules: module names that get adapters (Llama-style projections by default).

    No adapter dropout: the policy runs in eval mode throughout, so that the behaviour and the
    updated log-probs of a ratio come from the same deterministic function.
    """

    enabled: bool = False
    r: int = 8
    alpha: float = 16.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    def __post_init__(self) -> None:
        _require(self.r >= 1, "model.lora", "r must be >= 1")
        _require(bool(self.target_modules), "model.lora", "target_modules must not be empty")


@dataclass
class ModelConfig:
    """Which policy to train.

    Attributes:
        name: ``None`` (embedded SmolLM2-135M-Instruct), an embedded name, a HF id or local dir;
            ``"tiny"`` = a random tiny Llama (:func:`entrolab.models.tiny_model`, for tests);
            ``"proxy"`` = the tiny model after SFT on the proxy task (see ``sft``; cached).
        dtype: parameter dtype (float32 recommended on CPU).
        lora: LoRA settings.
    """

    name: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TaskConfig:
    """The verifiable task.

    Attributes:
        spec: ``"proxy"`` (:class:`entrolab.rl.proxy.ProxySumTask`) or anything
            :func:`entrolab.tasks.load_task` accepts (``"arithmetic"``, ``"rg:chain_sum"``, …).
        settings: keyword settings of the task (e.g. ``{level: 1}``).
        train_items: size of the training pool (cycled through in a seeded order per epoch).
        eval_items: held-out items for evaluation (drawn with ``eval_seed``; training items
            whose prompt also appears there are dropped).
        seed / eval_seed: item seeds of the two pools.
    """

    spec: str = "arithmetic"
    settings: dict[str, Any] = field(default_factory=dict)
    train_items: int = 1000
    eval_items: int = 64
    seed: int = 0
    eval_seed: int = 1

    def __post_init__(self) -> None:
        _require(bool(self.spec.strip()), "task", "spec must not be empty")
        _require(self.train_items >= 1, "task", "train_items must be >= 1")
        _require(self.eval_items >= 0, "task", "eval_items must be >= 0 (0 = no evaluation)")


@dataclass
class RolloutConfig:
    """Sampling of G completions per prompt.

    Attributes:
        prompts_per_step: N prompts per RL step (the optimisation batch is N·G sequences).
        group_size: G completions per prompt (>= 2: group advantages need a baseline); in a
            tree rollout (``explore.mode: tree``) the G roots, 1 allowed when each root's group
            gets branches or fresh fills (``explore.points × explore.branches >= 1``).
        max_new_tokens: completion length cap (also the constant C of seq-mean-token-sum-norm).
        temperature, top_p, top_k: sampling filters; log-probs and entropies used in the loss
            are computed from logits / temperature (full vocabulary), as TRL and verl do.
        chat_template: wrap prompts in the tokenizer's chat template.
        system_prompt: optional system message.
        batch_size: rows decoded together by the backend.
    """

    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    chat_template: bool = True
    system_prompt: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        _require(self.prompts_per_step >= 1, "rollout", "prompts_per_step must be >= 1")
        _require(self.group_size >= 1, "rollout", "group_size must be >= 1")
        _require(self.max_new_tokens >= 1, "rollout", "max_new_tokens must be >= 1")
        _require(
            math.isfinite(self.temperature) and self.temperature > 0,
            "rollout",
            "temperature must be > 0 (RL needs sampling; greedy gives identical samples)",
        )
        _require(0 < self.top_p <= 1, "rollout", "top_p must be in (0, 1]")
        _require(self.top_k >= 0, "rollout", "top_k must be >= 0")
        _require(self.batch_size >= 1, "rollout", "batch_size must be >= 1")


@dataclass
class RewardConfig:
    """Verifier reward plus an optional format reward (added).

    Attributes:
        correct / wrong: reward of a correct / incorrect (or unparseable) answer.
        partial_credit: use the verifier's score in [0, 1] instead (reasoning-gym tasks).
        format_reward: added when the reply is well-formed: matches ``format_pattern``
            (a regex, ``re.search``) if given, else has an extractable answer.
        format_pattern: regex for the format check.
        terms: confidence-aware reward terms added with a weight, name → settings
            (``{confidence_reward: {kind: brier, weight: 0.5}}``; :mod:`entrolab.rl.reward_terms`).
    """

    correct: float = 1.0
    wrong: float = 0.0
    partial_credit: bool = False
    format_reward: float = 0.0
    format_pattern: str | None = None
    terms: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlgorithmConfig:
    """Advantages, policy loss and the update schedule.

    Attributes:
        advantage / advantage_params: ``entrolab.rl.advantage_estimators`` entry and kwargs.
        loss / loss_params: ``entrolab.rl.policy_losses`` entry and kwargs.
        aggregation: loss aggregation mode (``token-mean``, ``seq-mean-token-mean``,
            ``seq-mean-token-sum``, ``seq-mean-token-sum-norm``).
        selection_scope: ``"batch"`` (token selection statistics over the whole optimisation
            batch, via ``prepare_selection``) or ``"micro_batch"``; passed only to losses that
            take ``selection_scope``.
        ppo_epochs: passes over each rollout batch.
        mini_batches: optimizer steps per epoch (the rollout batch split into equal parts).
        micro_batch_size: sequences per forward/backward (gradient accumulation; the update does
            not depend on it).
        kl_coef: weight of the KL penalty to the frozen initial policy (0 = no reference model).
        kl_estimator: ``k1`` (log r), ``k2`` ((log r)²/2) or ``k3`` (r − 1 − log r, Schulman).
        old_logprobs: ``"forward"`` = a no-grad forward before the updates; ``"auto"`` = reuse
            the detached training log-probs when the batch gets a single update (identical
            values, one forward saved).
        entropy_grad: compute token entropy with gradient (needed by entropy-bonus losses).
        pass_logits: pass ``[B, T, V]`` logits to the loss.
    """

    advantage: str = "grpo"
    advantage_params: dict[str, Any] = field(default_factory=dict)
    loss: str = "ppo_clip"
    loss_params: dict[str, Any] = field(default_factory=dict)
    aggregation: str = "token-mean"
    selection_scope: Literal["batch", "micro_batch"] = "batch"
    ppo_epochs: int = 1
    mini_batches: int = 1
    micro_batch_size: int = 8
    kl_coef: float = 0.0
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    old_logprobs: Literal["auto", "forward"] = "auto"
    entropy_grad: bool = False
    pass_logits: bool = False

    def __post_init__(self) -> None:
        _require(self.ppo_epochs >= 1, "algorithm", "ppo_epochs must be >= 1")
        _require(self.mini_batches >= 1, "algorithm", "mini_batches must be >= 1")
        _require(self.micro_batch_size >= 1, "algorithm", "micro_batch_size must be >= 1")
        _require(self.kl_coef >= 0, "algorithm", "kl_coef must be >= 0 (0 disables the KL term)")


@dataclass
class OptimConfig:
    """AdamW with gradient-norm clipping and optional linear warm-up.

    Attributes:
        lr: peak learning rate. weight_decay, betas, eps: AdamW settings.
        max_grad_norm: clip the global gradient norm (0 disables clipping, the norm is logged).
        warmup_steps: linear warm-up from 0 over this many RL steps.
    """

    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        _require(self.lr > 0, "optim", "lr must be > 0")
        _require(self.weight_decay >= 0, "optim", "weight_decay must be >= 0")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim",
            "betas must be two numbers in [0, 1)",
        )
        _require(self.max_grad_norm >= 0, "optim", "max_grad_norm must be >= 0")
        _require(self.warmup_steps >= 0, "optim", "warmup_steps must be >= 0")


@dataclass
class EvalConfig:
    """Held-out evaluation: ``samples`` completions per item, pass@1, pass@k, answer entropy.

    Attributes:
        every: evaluate every this many steps (0 = never; the last step is always evaluated).
        at_start: also evaluate before the first update (step 0).
        samples: completions per item (k of pass@k).
        temperature: sampling temperature for evaluation.
    """

    every: int = 10
    at_start: bool = True
    samples: int = 8
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _require(self.every >= 0, "eval", "every must be >= 0")
        _require(self.samples >= 1, "eval", "samples must be >= 1")
        _require(self.temperature > 0, "eval", "temperature must be > 0")


@dataclass
class MonitorConfig:
    """Entropy-dynamics monitor (:mod:`entrolab.rl.dynamics`).

    Attributes:
        probe_prompts: prompts in the fixed probe set (0 disables the probe).
        probe_samples: fixed responses per probe prompt (sampled once from the initial policy).
        probe_seed: item seed of the probe prompts and sampling seed of its responses.
        bins: entropy quantile bins (10 = deciles).
        law_min_points: steps needed before R = −a·e^H + b is fitted.
    """

    probe_prompts: int = 8
    probe_samples: int = 2
    probe_seed: int = 7
    bins: int = 10
    law_min_points: int = 5

    def __post_init__(self) -> None:
        _require(self.probe_prompts >= 0, "monitor", "probe_prompts must be >= 0")
        _require(self.probe_samples >= 1, "monitor", "probe_samples must be >= 1")
        _require(self.bins >= 1, "monitor", "bins must be >= 1")
        _require(self.law_min_points >= 3, "monitor", "law_min_points must be >= 3")


@dataclass
class SFTConfig:
    """Supervised warm-up of the tiny proxy model (used when ``model.name == "proxy"``).

    Attributes:
        hidden_size, num_layers, num_heads: tiny Llama architecture (byte tokenizer).
        examples: distinct SFT items; steps: optimizer steps; batch_size; lr.
        noise: fraction of SFT targets replaced by a random (mostly invalid) pair of list
            numbers, so the model's accuracy stays imperfect.
        seed: initialisation / data seed.
        cache: cache the trained weights under ``$ENTROLAB_CACHE/rl-proxy/<key>``.
    """

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    examples: int = 4000
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    noise: float = 0.2
    seed: int = 0
    cache: bool = True
    loss: Literal["ce", "entropy_sft"] = "ce"  # entropy_sft: Light-IF Entropy-SFT (tea_rl.py)

    def __post_init__(self) -> None:
        _require(self.hidden_size % self.num_heads == 0, "sft", "hidden_size % num_heads != 0")
        _require(self.steps >= 1 and self.examples >= 1, "sft", "steps and examples >= 1")
        _require(0 <= self.noise <= 1, "sft", "noise must be in [0, 1]")


@dataclass
class TrainConfig:
    """A whole RL run.

    Attributes:
        seed: base seed (sampling, shuffling, initial RNG states).
        steps: RL steps (one rollout batch each).
        checkpoint_every: save a checkpoint every this many steps (0 = none on the way).
        checkpoint_at_end: also save one after the last step (to extend or resume the run).
        keep_checkpoints: most recent checkpoints kept on disk.
        threads: torch intra-op threads (None = leave torch's setting).
        tensorboard: also log to TensorBoard (if installed).
        progress: show a progress bar.
    """

    seed: int = 0
    steps: int = 100
    checkpoint_every: int = 0
    checkpoint_at_end: bool = True
    keep_checkpoints: int = 2
    threads: int | None = None
    tensorboard: bool = True
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    controller: EntropyBandConfig = field(default_factory=EntropyBandConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)

    def __post_init__(self) -> None:
        _require(self.steps >= 1, "train", "steps must be >= 1")
        _require(self.checkpoint_every >= 0, "train", "checkpoint_every must be >= 0")
        _require(self.keep_checkpoints >= 1, "train", "keep_checkpoints must be >= 1")
        _require(self.threads is None or self.threads >= 1, "train", "threads must be >= 1")
        ex, g = self.explore, self.rollout.group_size
        _require(
            (ex.tree_rows(g) if ex.mode == "tree" else g) >= 2,
            "rollout",
            f"group_size must be >= 2 (group baselines), got {g}"
            + (" (a tree rollout may use 1 root with explore.points × explore.branches >= 1)"
               if ex.mode == "tree" else ""),
        )  # fmt: skip
        rows = self.rollout.prompts_per_step * self.rollout.group_size
        _require(
            rows % self.algorithm.mini_batches == 0,
            "algorithm",
            f"mini_batches={self.algorithm.mini_batches} must divide the "
            f"{rows} sequences of a step (prompts_per_step × group_size)",
        )


# ------------------------------------------------------------------------------ conversion
def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a nested dict (e.g. parsed YAML) into a :class:`TrainConfig`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EntrolabError("a recipe must be a YAML mapping of settings at the top level")
    return build_dataclass(TrainConfig, data, "")


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), loadable by :func:`config_from_dict`."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_config(
    recipe: str | Path | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Load a recipe (YAML path or dict; None = all defaults), apply overrides, validate."""
    return config_from_dict(apply_overrides(read_recipe(recipe), list(overrides)))
