"""Policy updates: the configured loss and advantage estimator turned into gradients.

:class:`LossSetup` binds an :class:`~entrolab.rl.config.AlgorithmConfig` to the registered loss,
aggregation and advantage functions; :meth:`LossSetup.accumulate` runs the forward/backward of one
optimisation batch micro-batch by micro-batch, with the batch's global counts (and batch-scope
token selection), so the gradient does not depend on the micro-batch size. :func:`run_updates`
is one RL step's ``ppo_epochs`` × ``mini_batches`` optimizer steps over a rollout (gradient-norm
clipping included). Shapes as in :mod:`entrolab.rl.rollout`: ``R`` rows, ``T`` response positions.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.rollout import ForwardOutput, Rollout, policy_forward, response_logprobs

__all__ = [
    "LossSetup",
    "UpdateResult",
    "combine_micro_metrics",
    "mean_metrics",
    "run_updates",
]


def _sum_key(key: str) -> bool:
    """Loss metrics that add up over micro-batches (global normalisation) rather than average."""
    return key == "loss" or key.endswith("_loss") or key.endswith("_tokens")


def combine_micro_metrics(parts: Sequence[tuple[dict[str, float], int]]) -> dict[str, float]:
    """One optimizer step's loss metrics from its micro-batches' ``(metrics, response tokens)``:
    losses and token counts are summed (each micro-batch loss is already its share of the
    batch loss), everything else is averaged weighted by response tokens."""
    total = sum(n for _, n in parts)
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for m, _ in parts for k in m):
        vals = [(float(m[key]), n) for m, n in parts if key in m]
        if _sum_key(key):
            out[key] = sum(v for v, _ in vals)
        else:
            w = sum(n for _, n in vals)
            out[key] = sum(v * n for v, n in vals) / w if w else sum(v for v, _ in vals) / len(vals)
    out.setdefault("response_tokens", float(total))
    return out


def mean_metrics(updates: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over the optimizer steps of one RL step."""
    keys = dict.fromkeys(k for u in updates for k in u)
    return {k: sum(u[k] for u in updates if k in u) / sum(k in u for u in updates) for k in keys}


@dataclass
class LossSetup:
    """The configured loss, advantage estimator and how micro-batches feed them.

    Built by :meth:`from_config` from an :class:`~entrolab.rl.config.AlgorithmConfig`; loss and
    advantage parameters are checked against the registered functions' signatures.
    """

    loss_name: str
    loss_fn: Any
    params: dict[str, Any]
    aggregation: str
    adv_fn: Any
    adv_params: dict[str, Any]
    max_response_length: int
    micro_batch_size: int
    entropy_grad: bool
    pass_logits: bool
    needs_selection: bool
    kl_coef: float
    kl_type: str
    kl_in_loss: bool
    #: the advantage pipeline (base estimator + shapers, :mod:`entrolab.rl.shaping`).
    pipeline: Any = None

    @classmethod
    def from_config(cls, a, max_response_length: int) -> LossSetup:
        from entrolab.rl.aggregation import LOSS_AGGREGATIONS
        from entrolab.rl.losses import POLICY_LOSSES

        entry = POLICY_LOSSES.entry(a.loss)
        LOSS_AGGREGATIONS.entry(a.aggregation)  # unknown mode: raises listing the known ones
        accepted = _accepted(entry.obj, entry.defaults)
        params = dict(a.loss_params)
        _check_params(params, accepted, f"algorithm.loss_params for loss {entry.name!r}")
        for fixed in ("aggregation", "selection_scope"):
            if fixed in params:
                raise EntrolabError(f"set {fixed} as algorithm.{fixed}, not in loss_params")
        selects = accepted is None or "selection_scope" in accepted
        if selects and accepted is not None:
            params["selection_scope"] = a.selection_scope
        kl_in_loss = accepted is None or "kl_coef" in accepted
        if kl_in_loss and a.kl_coef > 0:
            params.update(kl_coef=a.kl_coef, kl_type=a.kl_estimator)
        from entrolab.rl.shaping import AdvantagePipeline

        # base estimator + confidence shapers ("grpo+ucas"); names and params checked here
        pipeline = AdvantagePipeline(a.advantage, a.advantage_params)
        return cls(
            loss_name=entry.name,
            loss_fn=entry.obj,
            params=params,
            aggregation=a.aggregation,
            adv_fn=pipeline.sequence_advantages,
            adv_params={},
            max_response_length=max_response_length,
            micro_batch_size=a.micro_batch_size,
            entropy_grad=a.entropy_grad,
            pass_logits=a.pass_logits,
            needs_selection=selects and accepted is not None and a.selection_scope == "batch",
            kl_coef=a.kl_coef,
            kl_type=a.kl_estimator,
            kl_in_loss=kl_in_loss,
            pipeline=pipeline,
        )

    def _batch_logits(self, model, rollout: Rollout, rows, pad_id: int, temperature: float):
        """[S, T, V] no-grad logits of the whole optimisation batch for batch-scope statistics of
        losses that read the distribution (``pass_logits``: SIREN's top-p entropy, Clip_V's E_π[S]);
        None otherwise. Memory: S·T·V floats (use micro-batch scope for a large vocabulary)."""
        if not self.pass_logits:
            return None
        parts = []
        with torch.no_grad():
            for micro in rows.split(self.micro_batch_size):
                z = policy_forward(
                    model, rollout.select(micro), pad_id=pad_id, temperature=temperature,
                    keep_logits=True,
                ).logits  # fmt: skip
                parts.append(z)
        width = rollout.response_mask.shape[1]
        out = torch.zeros(len(rows), width, parts[0].shape[-1])
        i = 0
        for z in parts:
            out[i : i + z.shape[0], : z.shape[1]] = z
            i += z.shape[0]
        return out

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """Sequence advantages [N, G] from rewards [N, G]."""
        out = self.adv_fn(rewards, **self.adv_params)
        if tuple(out.shape) != tuple(rewards.shape):
            raise EntrolabError(f"advantage estimator returned shape {tuple(out.shape)}")
        return out.float()

    def accumulate(
        self,
        model,
        rollout: Rollout,
        rows: torch.Tensor,
        advantages: torch.Tensor,
        *,
        old: ForwardOutput | None,
        ref_logprobs: torch.Tensor | None,
        current: ForwardOutput | None,
        pad_id: int,
        temperature: float,
        seen: tuple[torch.Tensor, torch.Tensor] | None = None,
        sequence_info: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Backward the loss of one optimisation batch (``rows``), micro-batch by micro-batch.

        Every micro-batch loss uses the optimisation batch's ``global_tokens`` /
        ``global_sequences`` / ``max_response_length``, so the accumulated gradient is that of
        the whole batch whatever ``micro_batch_size`` is. For batch-scope token selection,
        ``prepare_selection`` runs once on the batch's *current* log-probs/entropies
        (``current``, a no-grad forward of the same weights; recomputed here when None) and the
        micro-batch losses see those exact values (``ℓ − sg(ℓ) + ℓ_current``: same value, the
        gradient of the micro-batch forward), so the selected set and the loss do not depend on
        how the batch is split (the micro-batch forwards agree with it only to rounding).

        Args:
            rows: int64 [S] rows of ``rollout`` in this optimisation batch.
            advantages: float32 [R, T] per-token advantages of the whole rollout.
            old / ref_logprobs: [R, T] behaviour / reference log-probs (None: old = the detached
                training log-probs, i.e. on-policy; no KL term).
            seen: buffers [R, T] that receive the detached training log-probs and entropies.
            sequence_info: [R] per-row tensors (``group``, ``correct``, ``pass_rate``) passed to
                the loss sliced to its rows, plus ``row`` (position in this optimisation batch).
        Returns the step's loss metrics (:func:`combine_micro_metrics`).
        """
        from entrolab.rl.losses import prepare_selection
        from entrolab.rl.types import PolicyLossInput

        mask = rollout.response_mask
        g_tokens, g_seqs = int(mask[rows].sum()), len(rows)
        counts = {
            "global_tokens": g_tokens,
            "global_sequences": g_seqs,
            "max_response_length": self.max_response_length,
        }
        selection = None
        if self.needs_selection:
            if current is None:
                current = _scatter(
                    response_logprobs(
                        model,
                        rollout.select(rows),
                        pad_id=pad_id,
                        temperature=temperature,
                        micro_batch_size=self.micro_batch_size,
                    ),
                    rows,
                    mask.shape,
                )
            old_lp = old.logprobs if old is not None else current.logprobs
            full = PolicyLossInput(
                logprobs=current.logprobs[rows],
                old_logprobs=old_lp[rows],
                advantages=advantages[rows],
                response_mask=mask[rows],
                ref_logprobs=None if ref_logprobs is None else ref_logprobs[rows],
                entropy=None if current.entropy is None else current.entropy[rows],
                logits=self._batch_logits(model, rollout, rows, pad_id, temperature),
                sequence_info=_seq_info(sequence_info, rows, 0),
                **counts,
            )
            selection = prepare_selection(self.loss_name, full, **self.params)
        else:
            current = None
        parts = []
        for i, micro in enumerate(rows.split(self.micro_batch_size)):
            sub = rollout.select(micro)
            w = sub.response_ids.shape[1]
            fo = policy_forward(
                model,
                sub,
                pad_id=pad_id,
                temperature=temperature,
                entropy_grad=self.entropy_grad,
                keep_logits=self.pass_logits,
            )
            lp, ent = fo.logprobs, fo.entropy
            if current is not None:
                lp = lp - lp.detach() + current.logprobs[micro, :w]
                if not self.entropy_grad and current.entropy is not None:
                    ent = current.entropy[micro, :w]
            inp = PolicyLossInput(
                logprobs=lp,
                old_logprobs=fo.logprobs.detach() if old is None else old.logprobs[micro, :w],
                advantages=advantages[micro, :w],
                response_mask=sub.response_mask,
                ref_logprobs=None if ref_logprobs is None else ref_logprobs[micro, :w],
                entropy=ent,
                logits=fo.logits,
                selection=selection,
                sequence_info=_seq_info(sequence_info, micro, i * self.micro_batch_size),
                **counts,
            )
            out = self.loss_fn(inp, aggregation=self.aggregation, **self.params)
            loss = out.loss
            metrics = dict(out.metrics)
            if self.kl_coef > 0 and not self.kl_in_loss and ref_logprobs is not None:
                from entrolab.rl.aggregation import LOSS_AGGREGATIONS
                from entrolab.rl.losses import kl_penalty

                kl = kl_penalty(lp, inp.ref_logprobs, self.kl_type) * sub.response_mask
                kl_loss = LOSS_AGGREGATIONS.get(self.aggregation)(kl, sub.response_mask, **counts)
                loss = loss + self.kl_coef * kl_loss
                metrics["kl_loss"] = float(kl_loss.detach())
            if not bool(torch.isfinite(loss.detach())):
                raise EntrolabError(
                    f"loss {self.loss_name!r} is not finite; lower optim.lr or check its params"
                )
            loss.backward()
            parts.append((metrics, int(sub.response_mask.sum())))
            if seen is not None:
                seen[0][micro, :w] = fo.logprobs.detach()
                if fo.entropy is not None:
                    seen[1][micro, :w] = fo.entropy.detach()
        return combine_micro_metrics(parts)


def _seq_info(
    info: dict[str, torch.Tensor] | None, rows: torch.Tensor, offset: int
) -> dict[str, torch.Tensor] | None:
    """``info`` at ``rows`` plus ``row``: positions ``offset …`` in the optimisation batch."""
    if info is None:
        return None
    out = {k: v[rows] for k, v in info.items()}
    out["row"] = torch.arange(offset, offset + len(rows))
    return out


def _scatter(fo: ForwardOutput, rows: torch.Tensor, shape: torch.Size) -> ForwardOutput:
    """Place a sub-batch's [S, T'] outputs at ``rows`` of zero [R, T] tensors."""
    lp = torch.zeros(shape)
    lp[rows, : fo.logprobs.shape[1]] = fo.logprobs
    ent = None
    if fo.entropy is not None:
        ent = torch.zeros(shape)
        ent[rows, : fo.entropy.shape[1]] = fo.entropy
    return ForwardOutput(lp, ent)


def _accepted(fn, defaults) -> set[str] | None:
    """Keyword parameters ``fn`` accepts (None when it takes **kwargs we cannot check)."""
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        if not defaults:
            return None
        names |= set(defaults)
    return names - {"inp", "rewards"}


def _check_params(params: dict[str, Any], accepted: set[str] | None, where: str) -> None:
    if accepted is None:
        return
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise EntrolabError(
            f"unknown {where}: {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )


@dataclass
class UpdateResult:
    """What one RL step's optimizer steps leave behind.

    Attributes:
        metrics: per optimizer step, its loss metrics (:func:`combine_micro_metrics`).
        grad_norms: per optimizer step, the global gradient norm before clipping.
        logprobs / entropy: float32 [R, T], the detached training log-probs / entropies (nats)
            seen by the first optimizer step at its rows (zero elsewhere and on padding); the
            whole batch when the step makes a single update.
    """

    metrics: list[dict[str, float]]
    grad_norms: list[float]
    logprobs: torch.Tensor
    entropy: torch.Tensor


def run_updates(
    loss: LossSetup,
    model,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    *,
    old: ForwardOutput | None,
    ref_logprobs: torch.Tensor | None,
    pad_id: int,
    temperature: float,
    ppo_epochs: int,
    mini_batches: int,
    max_grad_norm: float,
    shuffle_seed: int,
    step: int,
    sequence_info: dict[str, torch.Tensor] | None = None,
) -> UpdateResult:
    """``ppo_epochs`` passes over ``rollout``, each split into ``mini_batches`` optimisation
    batches (rows shuffled with a generator seeded by ``shuffle_seed`` when there are several);
    one :meth:`LossSetup.accumulate` + gradient-norm clipping (``max_grad_norm``; 0 = no
    clipping, the norm is still reported) + ``optimizer.step()`` per optimisation batch.

    Args:
        advantages: float32 [R, T] per-token advantages. old / ref_logprobs: as in
            :meth:`LossSetup.accumulate`; ``old`` doubles as the first optimizer step's
            ``current`` values (the same weights). step: the RL step, for error messages.
    Raises EntrolabError on a non-finite gradient norm.
    """
    mask = rollout.response_mask
    seen_lp, seen_h = torch.zeros(mask.shape), torch.zeros(mask.shape)
    update_metrics, grad_norms = [], []
    gen = torch.Generator().manual_seed(shuffle_seed)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    first = True
    for _epoch in range(ppo_epochs):
        order = torch.arange(len(rollout))
        if mini_batches > 1:
            order = torch.randperm(len(rollout), generator=gen)
        for rows in order.chunk(mini_batches):
            update_metrics.append(
                loss.accumulate(
                    model,
                    rollout,
                    rows,
                    advantages,
                    old=old,
                    ref_logprobs=ref_logprobs,
                    current=old if first else None,
                    pad_id=pad_id,
                    temperature=temperature,
                    seen=(seen_lp, seen_h) if first else None,
                    sequence_info=sequence_info,
                )
            )
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if not bool(torch.isfinite(norm)):
                raise EntrolabError(
                    f"non-finite gradient norm at step {step}; lower optim.lr or check the loss"
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
            grad_norms.append(float(norm))
            first = False
    return UpdateResult(update_metrics, grad_norms, seen_lp, seen_h)
