"""Advantages with confidence shaping in the trainer: ``base+shaper+…`` end to end.

:class:`AdvantagePipeline` turns ``algorithm.advantage`` (``"grpo"``, ``"grpo+ucas"``,
``"riskpo"``, …) and ``algorithm.advantage_params`` into per-token advantages ``[R, T]``: the
base estimator on the rewards ``[N, G]``, broadcast over tokens, then each shaper of
:data:`~entrolab.rl.advantages.shaping.ADVANTAGE_SHAPERS` in turn. :func:`shaping_inputs`
computes what the shapers declare they need from the behaviour policy (no grad):

* ``old_logprobs``/``entropy``: :func:`entrolab.rl.rollout.response_logprobs` (temperature τ);
* ``self_certainty`` (UCAS convention ``logsumexp(z/τ) − mean(z/τ)`` =
  :func:`entrolab.signals.self_certainty` + log V) and ``token_logits`` (raw ``z(y_t)``): one
  forward keeping the ``[B, T, V]`` logits, ``micro_batch_size`` rows at a time;
* ``prompt_logprobs``: a forward over each prompt (log π of every prompt token after the first);
* ``semantic_entropy``: answer-equivalence clusters (:func:`entrolab.tasks.cluster_answers` of
  ``task.extract``) → :func:`entrolab.estimators.sampling.discrete_semantic_entropy`
  (``se="count"``) or :func:`~entrolab.estimators.sampling.semantic_entropy_rao` with
  length-normalised sequence log-probs (``se="mass"``);
* ``step_ids``: token pieces split at a delimiter (default a newline; the token that carries the
  delimiter closes its step), or, with ``step_delimiter: "<turn>"``, one step per model turn of
  a multi-turn tool rollout (:func:`entrolab.rl.agent.turn_step_ids`, EMPG's agent step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.advantages import ADVANTAGE_ESTIMATORS
from entrolab.rl.advantages.inputs import ShapingInputs
from entrolab.rl.advantages.riskpo import QuantileTracker, bundle_paper_scores
from entrolab.rl.advantages.shaping import ADVANTAGE_SHAPERS, parse_advantage_spec
from entrolab.rl.agent import TURN_STEPS, turn_step_ids
from entrolab.rl.rollout import Rollout, policy_forward, response_logprobs

__all__ = [
    "AdvantagePipeline",
    "rollout_advantages",
    "rollout_pieces",
    "semantic_entropy_per_group",
    "shaping_inputs",
    "step_ids_from_pieces",
]

#: advantage_params keys read by the pipeline itself (not passed to the functions).
PIPELINE_KEYS = ("se", "step_delimiter", "lr_q")


class AdvantagePipeline:
    """Base estimator + shapers, with the (small) state RiskPO's quantile tracking needs.

    Args:
        spec: ``algorithm.advantage`` (``base`` or ``base+shaper+…``).
        params: ``algorithm.advantage_params``: base keyword arguments at the top level, each
            shaper's under its name; plus ``se`` (``"count"``/``"mass"``, SEED-GRPO),
            ``step_delimiter`` (EMPG) and ``lr_q`` (RiskPO tracking step size).
    """

    def __init__(self, spec: str, params: dict[str, Any] | None = None) -> None:
        from entrolab.rl.update import _accepted, _check_params

        self.spec = spec
        self.base, self.shapers = parse_advantage_spec(spec)
        params = dict(params or {})
        self.shaper_params: dict[str, dict[str, Any]] = {}
        for name in self.shapers:
            sub = params.pop(name, {}) or {}
            if not isinstance(sub, dict):
                raise EntrolabError(
                    f"algorithm.advantage_params.{name} must be a mapping of {name}'s settings"
                )
            entry = ADVANTAGE_SHAPERS.entry(name)
            _check_params(sub, set(entry.defaults), f"algorithm.advantage_params.{name}")
            self.shaper_params[name] = sub
        stray = sorted(k for k in params if k in ADVANTAGE_SHAPERS)
        if stray:
            raise EntrolabError(
                f"algorithm.advantage_params has settings for {', '.join(stray)}, which "
                f"{spec!r} does not use; add it to algorithm.advantage (e.g. 'grpo+{stray[0]}')"
            )
        self.se = str(params.pop("se", "count"))
        if self.se not in ("count", "mass"):
            raise EntrolabError("algorithm.advantage_params.se must be 'count' or 'mass'")
        self.delimiter = str(params.pop("step_delimiter", "\n"))
        if not self.delimiter:
            raise EntrolabError("algorithm.advantage_params.step_delimiter must not be empty")
        lr_q = float(params.pop("lr_q", 0.1))
        base = ADVANTAGE_ESTIMATORS.entry(self.base)
        _check_params(
            params, _accepted(base.obj, base.defaults), f"algorithm.advantage_params for {spec!r}"
        )
        self.base_fn, self.base_params = base.obj, params
        self.tracker: QuantileTracker | None = None
        if self.base == "riskpo" and params.get("quantile_source", "batch") != "batch":
            self.tracker = QuantileTracker(lr=lr_q)
        self.requires: frozenset[str] = frozenset().union(
            *(ADVANTAGE_SHAPERS.get(s).requires for s in self.shapers)
        )
        if self.se == "mass" and "semantic_entropy" in self.requires:
            self.requires = self.requires | {"old_logprobs"}

    def sequence_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """The base estimator's ``[N, G]`` advantages (tracked RiskPO quantiles included)."""
        params = dict(self.base_params)
        if self.tracker is not None:
            lo, hi = params.get("quantile_down", 0.2), params.get("quantile_up", 0.9)
            params["q_track"] = self.tracker.get(lo, hi)
        out = self.base_fn(rewards, **params)
        if tuple(out.shape) != tuple(rewards.shape):
            raise EntrolabError(f"advantage estimator returned shape {tuple(out.shape)}")
        if self.tracker is not None:
            scores = bundle_paper_scores(rewards, int(params.get("bundle_size", 5)))
            self.tracker.update(torch.cat(scores))
        return out.float()

    def __call__(
        self, rewards: torch.Tensor, mask: torch.Tensor, inputs: ShapingInputs | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-token advantages ``[R, T]`` (0 on padding) and ``shaper/<name>/<metric>``
        metrics. ``inputs`` must hold what :attr:`requires` names (None: none needed)."""
        adv = self.sequence_advantages(rewards).reshape(-1)[:, None].expand_as(mask) * mask
        metrics: dict[str, float] = {}
        if self.shapers:
            if inputs is None:
                inputs = ShapingInputs(rewards, mask)
            for name in self.shapers:
                out = ADVANTAGE_SHAPERS.get(name)(adv, inputs, **self.shaper_params[name])
                adv = out.advantages
                metrics.update({f"shaper/{name}/{k}": v for k, v in out.metrics.items()})
        return adv.float(), metrics

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": None if self.tracker is None else self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.tracker is not None and state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])


# ---------------------------------------------------------------------------- the inputs
def step_ids_from_pieces(pieces: Sequence[str], delimiter: str = "\n") -> list[int]:
    """Step index of each token: a token whose text contains ``delimiter`` closes the current
    step (it belongs to it), so ``["a", "\\n", "b"]`` → ``[0, 0, 1]``."""
    ids, step = [], 0
    for piece in pieces:
        ids.append(step)
        if delimiter in piece:
            step += 1
    return ids


def rollout_pieces(tokenizer, rollout: Rollout) -> list[list[str]]:
    """The text each response token adds, per row (:func:`entrolab.backends.decode.token_pieces`)."""
    from entrolab.backends.decode import token_pieces

    lengths = rollout.response_mask.sum(-1).tolist()
    return [
        token_pieces(tokenizer, ids[:n].tolist())
        for ids, n in zip(rollout.response_ids, lengths, strict=True)
    ]


def semantic_entropy_per_group(
    answers: Sequence[str | None],
    group_size: int,
    *,
    kind: str = "count",
    loglik: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Semantic entropy (nats) of each group of ``group_size`` extracted answers → ``[N]``
    float32, with the estimators' functions (module doc); ``kind="mass"`` needs ``loglik``
    (summed token log-probs, ``[R]``) and ``lengths`` ``[R]``."""
    from entrolab.estimators.sampling import discrete_semantic_entropy, semantic_entropy_rao
    from entrolab.tasks import cluster_answers

    if len(answers) % group_size:
        raise EntrolabError(f"{len(answers)} answers do not split into groups of {group_size}")
    out = []
    for start in range(0, len(answers), group_size):
        ids = cluster_answers(list(answers[start : start + group_size]))
        if kind == "count":
            out.append(discrete_semantic_entropy(ids))
        else:
            if loglik is None or lengths is None:
                raise EntrolabError("mass semantic entropy needs sequence log-probs and lengths")
            sl = slice(start, start + group_size)
            out.append(semantic_entropy_rao(ids, loglik[sl].tolist(), lengths[sl].tolist()))
    return torch.tensor(out, dtype=torch.float32)


@torch.no_grad()
def _logit_stats(model, rollout: Rollout, *, pad_id: int, temperature: float, micro: int):
    from entrolab.signals import self_certainty

    n, t = rollout.response_ids.shape
    sc, z = torch.zeros(n, t), torch.zeros(n, t)
    for start in range(0, n, micro):
        rows = torch.arange(start, min(start + micro, n))
        sub = rollout.select(rows)
        fo = policy_forward(
            model, sub, pad_id=pad_id, temperature=temperature, entropy=False, keep_logits=True
        )
        assert fo.logits is not None
        logits, w = fo.logits.float().cpu(), sub.response_ids.shape[1]
        m = sub.response_mask
        sc[rows, :w] = (self_certainty(logits) + math.log(logits.shape[-1])) * m
        chosen = logits.gather(-1, sub.response_ids[..., None]).squeeze(-1)
        z[rows, :w] = chosen * temperature * m  # undo the temperature: the raw logit
    return sc, z


@torch.no_grad()
def _prompt_logprobs(model, prompts: list[list[int]], *, pad_id: int, temperature: float):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.int64)
    attn = torch.zeros(len(prompts), width, dtype=torch.int64)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.int64)
        attn[i, width - len(p) :] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    device = next(model.parameters()).device
    out = model(
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        position_ids=pos.to(device),
        use_cache=False,
    )
    logp = torch.log_softmax(out.logits[:, :-1].float().cpu() / temperature, dim=-1)
    lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = (attn[:, 1:] * attn[:, :-1]).bool()  # both the token and its context are real
    return lp * mask, mask


def shaping_inputs(
    requires: frozenset[str] | set[str],
    *,
    model,
    rollout: Rollout,
    rewards: torch.Tensor,
    pad_id: int,
    temperature: float,
    micro_batch_size: int,
    answers: Sequence[str | None] | None = None,
    pieces: Sequence[Sequence[str]] | None = None,
    old=None,
    se: str = "count",
    delimiter: str = "\n",
) -> ShapingInputs:
    """The :class:`ShapingInputs` named in ``requires`` for ``rollout`` under ``model``.

    Args:
        answers: R extracted answers (for ``semantic_entropy``).
        pieces: R lists of token texts (for ``step_ids``).
        old: a :class:`~entrolab.rl.rollout.ForwardOutput` already computed for the rollout
            (reused for ``old_logprobs``/``entropy``).
    """
    mask = rollout.response_mask
    got: dict[str, Any] = {}
    if {"old_logprobs", "entropy"} & set(requires):
        if old is None or old.entropy is None:
            old = response_logprobs(
                model,
                rollout,
                pad_id=pad_id,
                temperature=temperature,
                micro_batch_size=micro_batch_size,
            )
        got["old_logprobs"], got["entropy"] = old.logprobs, old.entropy
    if {"self_certainty", "token_logits"} & set(requires):
        got["self_certainty"], got["token_logits"] = _logit_stats(
            model, rollout, pad_id=pad_id, temperature=temperature, micro=micro_batch_size
        )
    if "prompt_logprobs" in requires:
        g = rollout.group_size
        got["prompt_logprobs"], got["prompt_mask"] = _prompt_logprobs(
            model, rollout.prompt_ids[::g], pad_id=pad_id, temperature=temperature
        )
    if "semantic_entropy" in requires:
        if answers is None:
            raise EntrolabError("semantic entropy needs the extracted answers of the rollout")
        loglik = got["old_logprobs"].sum(-1) if se == "mass" else None
        got["semantic_entropy"] = semantic_entropy_per_group(
            answers, rollout.group_size, kind=se, loglik=loglik, lengths=mask.sum(-1)
        )
    if "step_ids" in requires and delimiter == TURN_STEPS:
        got["step_ids"] = turn_step_ids(mask)
    elif "step_ids" in requires:
        if pieces is None or len(pieces) != len(rollout):
            raise EntrolabError("step ids need the token texts of every rollout row")
        ids = torch.full(mask.shape, -1, dtype=torch.int64)
        for r, row in enumerate(pieces):
            n = int(mask[r].sum())
            ids[r, :n] = torch.tensor(step_ids_from_pieces(list(row)[:n], delimiter))
        got["step_ids"] = ids
    return ShapingInputs(rewards=rewards, response_mask=mask, **got)


def rollout_advantages(
    pipeline: AdvantagePipeline,
    *,
    model,
    rollout: Rollout,
    rewards: torch.Tensor,
    task,
    items: Sequence,
    tokenizer,
    pad_id: int,
    temperature: float,
    micro_batch_size: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token advantages ``[R, T]`` of a rollout (and shaper metrics): computes the inputs
    the pipeline's shapers require (``items``: the R task items, for answer extraction)."""
    inputs = None
    if pipeline.requires:
        answers = pieces = None
        if "semantic_entropy" in pipeline.requires:
            answers = [
                task.extract(it, text) for it, text in zip(items, rollout.texts, strict=True)
            ]
        if "step_ids" in pipeline.requires and pipeline.delimiter != TURN_STEPS:
            pieces = rollout_pieces(tokenizer, rollout)
        inputs = shaping_inputs(
            pipeline.requires,
            model=model,
            rollout=rollout,
            rewards=rewards,
            pad_id=pad_id,
            temperature=temperature,
            micro_batch_size=micro_batch_size,
            answers=answers,
            pieces=pieces,
            se=pipeline.se,
            delimiter=pipeline.delimiter,
        )
    return pipeline(rewards, rollout.response_mask, inputs)
