"""Rollouts: sample G completions per prompt, and teacher-forced log-probs/entropy of responses.

Shapes: ``R`` rows (= N prompts × G samples, prompt-major: row ``i·G + g``), ``T`` response
positions (right-padded), ``V`` vocabulary. Sampling goes through
:meth:`entrolab.backends.HFBackend.generate` with one seed per prompt, so a prompt's samples do not
depend on what it is batched with. Log-probs and entropies come from a separate teacher-forced
forward of the policy, laid out like generation (left-padded prompt, then the response), with the
LM head applied only at the response positions and the logits divided by the sampling
temperature (full vocabulary, float32): ``log π(y_t | prompt, y_<t)`` and
``H_t = −Σ_v π(v | ·) log π(v | ·)`` in nats.

:class:`LossSetup` turns a configured policy loss and advantage estimator into gradients:
:meth:`LossSetup.accumulate` runs the forward/backward of one optimisation batch micro-batch by
micro-batch, with the batch's global counts (and batch-scope token selection), so the gradient
does not depend on the micro-batch size.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entrolab.backends.sampling import row_seed
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError

__all__ = [
    "ForwardOutput",
    "LossSetup",
    "Rollout",
    "combine_micro_metrics",
    "mean_metrics",
    "policy_forward",
    "prompt_seeds",
    "response_logprobs",
    "sample_rollout",
]


@dataclass(frozen=True)
class Rollout:
    """One batch of sampled responses, R = N·G rows, prompt-major.

    Attributes:
        prompt_ids: R lists of prompt token ids (as the model saw them, chat formatting included).
        response_ids: int64 [R, T], right-padded with the pad id.
        response_mask: bool [R, T], True on response tokens (a final EOS included).
        texts: R decoded responses (what the verifier grades).
        prompt_index: int64 [R], index of each row's prompt in the step's prompt list.
        group_size: G.
    """

    prompt_ids: list[list[int]]
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    prompt_index: torch.Tensor
    group_size: int

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        """Response tokens in the batch (the global token count)."""
        return int(self.response_mask.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the trainer stores its probe set this way)."""
        return {
            "prompt_ids": self.prompt_ids,
            "response_ids": self.response_ids.tolist(),
            "response_mask": self.response_mask.tolist(),
            "texts": self.texts,
            "prompt_index": self.prompt_index.tolist(),
            "group_size": self.group_size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rollout:
        """Inverse of :meth:`to_dict`."""
        return cls(
            [list(p) for p in d["prompt_ids"]],
            torch.tensor(d["response_ids"], dtype=torch.int64),
            torch.tensor(d["response_mask"], dtype=torch.bool),
            list(d["texts"]),
            torch.tensor(d["prompt_index"], dtype=torch.int64),
            int(d["group_size"]),
        )

    def select(self, rows: torch.Tensor | Sequence[int]) -> Rollout:
        """The sub-batch of ``rows`` (trimmed to its longest response)."""
        idx = torch.as_tensor(rows, dtype=torch.int64)
        mask = self.response_mask[idx]
        width = max(int(mask.sum(-1).max()) if len(idx) else 0, 1)
        return Rollout(
            [self.prompt_ids[i] for i in idx.tolist()],
            self.response_ids[idx, :width],
            mask[:, :width],
            [self.texts[i] for i in idx.tolist()],
            self.prompt_index[idx],
            self.group_size,
        )


def prompt_seeds(seed: int, step: int, n: int, stream: str = "train") -> list[int]:
    """One 63-bit sampling seed per prompt of a step, stable across runs, platforms and resumes.

    ``stream`` separates independent uses (training rollouts, evaluation, the probe set)."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{step}".encode(), digest_size=8).digest()
    base = int.from_bytes(digest, "little") >> 1
    return [row_seed(base, step, i) for i in range(n)]


def sample_rollout(
    backend,
    prompts: Sequence[str],
    config: GenerationConfig,
    seeds: Sequence[int],
    on_progress=None,
) -> Rollout:
    """Sample ``config.num_samples`` (G) completions for each prompt.

    Args:
        backend: an :class:`~entrolab.backends.HFBackend` wrapping the current policy.
        prompts: N prompts. seeds: N per-prompt seeds (see :func:`prompt_seeds`).
    Returns:
        a :class:`Rollout` with R = N·G rows; empty responses (no token at all) cannot occur
        (generation emits at least one token).
    """
    if len(prompts) != len(seeds):
        raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    traces = backend.generate(list(prompts), config, seeds=list(seeds), on_progress=on_progress)
    ids = [
        backend.prompt_ids(
            p, chat_template=config.chat_template, system_prompt=config.system_prompt
        )
        for p in prompts
    ]
    rows = sorted(traces, key=lambda t: (t.prompt_index, t.sample_index))
    width = max(len(t) for t in rows)
    pad = int(backend.tokenizer.pad_token_id)
    response = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, t in enumerate(rows):
        response[r, : len(t)] = t.token_ids
        mask[r, : len(t)] = True
    return Rollout(
        prompt_ids=[ids[t.prompt_index] for t in rows],
        response_ids=response,
        response_mask=mask,
        texts=[t.text for t in rows],
        prompt_index=torch.tensor([t.prompt_index for t in rows], dtype=torch.int64),
        group_size=config.num_samples,
    )


@dataclass
class ForwardOutput:
    """Per-token outputs of a teacher-forced forward over a (sub-)batch.

    Attributes:
        logprobs: float32 [B, T], log π(y_t | ·) at temperature τ (grad if computed with grad).
        entropy: float32 [B, T] in nats, or None (detached unless requested with grad).
        logits: float32 [B, T, V] temperature-scaled logits, or None.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor | None
    logits: torch.Tensor | None = None


def _layout(batch: Rollout, pad_id: int) -> tuple[torch.Tensor, ...]:
    """input_ids, attention_mask, position_ids for [left-padded prompt | right-padded response]."""
    p_max = max(len(p) for p in batch.prompt_ids)
    n, t = batch.response_ids.shape
    input_ids = torch.full((n, p_max + t), pad_id, dtype=torch.int64)
    attention = torch.zeros(n, p_max + t, dtype=torch.int64)
    for r, p in enumerate(batch.prompt_ids):
        input_ids[r, p_max - len(p) : p_max] = torch.tensor(p, dtype=torch.int64)
        attention[r, p_max - len(p) : p_max] = 1
    input_ids[:, p_max:] = batch.response_ids
    attention[:, p_max:] = batch.response_mask.to(torch.int64)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention, positions


def policy_forward(
    model,
    batch: Rollout,
    *,
    pad_id: int,
    temperature: float = 1.0,
    entropy: bool = True,
    entropy_grad: bool = False,
    keep_logits: bool = False,
) -> ForwardOutput:
    """Teacher-forced log-probs (and entropy) of ``batch``'s responses under ``model``.

    Gradient flows to ``logprobs`` when grad mode is on; ``entropy`` is detached unless
    ``entropy_grad``. Scope: per token; padding positions hold 0.

    Args:
        model: a causal LM whose forward accepts ``logits_to_keep``.
        batch: the rows to score (B = len(batch)).
        pad_id: token id used for padding.
        temperature: τ; logits are divided by it before the softmax (as when sampling).
    """
    input_ids, attention, positions = _layout(batch, pad_id)
    t = batch.response_ids.shape[1]
    device = next(model.parameters()).device
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=positions.to(device),
        use_cache=False,
        logits_to_keep=t + 1,
    )
    # logits at position p predict token p + 1: the last t + 1 positions minus the final one.
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    if not bool(torch.isfinite(logits.detach()).all()):
        raise EntrolabError(
            "the policy produced NaN/inf logits; lower the learning rate or enable grad clipping"
        )
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = batch.response_ids.to(device)
    mask = batch.response_mask.to(device)
    logprobs = logp_all.gather(-1, targets[..., None]).squeeze(-1) * mask
    ent = None
    if entropy:
        src = logp_all if entropy_grad else logp_all.detach()
        ent = -(src.exp() * src).sum(-1) * mask
    return ForwardOutput(logprobs, ent, logits if keep_logits else None)


@torch.no_grad()
def response_logprobs(
    model,
    batch: Rollout,
    *,
    pad_id: int,
    temperature: float = 1.0,
    micro_batch_size: int = 8,
    entropy: bool = True,
) -> ForwardOutput:
    """:func:`policy_forward` without grad over all rows, ``micro_batch_size`` rows at a time.

    Returns tensors [R, T] aligned with ``batch.response_ids`` (used for old / reference
    log-probs and for the probe set's entropies).
    """
    n, t = batch.response_ids.shape
    logprobs = torch.zeros(n, t)
    ent = torch.zeros(n, t) if entropy else None
    for start in range(0, n, micro_batch_size):
        rows = torch.arange(start, min(start + micro_batch_size, n))
        sub = batch.select(rows)
        fo = policy_forward(model, sub, pad_id=pad_id, temperature=temperature, entropy=entropy)
        w = sub.response_ids.shape[1]
        logprobs[rows, :w] = fo.logprobs.float().cpu()
        if ent is not None and fo.entropy is not None:
            ent[rows, :w] = fo.entropy.float().cpu()
    return ForwardOutput(logprobs, ent)


# ------------------------------------------------------------------------ policy updates
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

    @classmethod
    def from_config(cls, a, max_response_length: int) -> LossSetup:
        from entrolab.rl.advantages import ADVANTAGE_ESTIMATORS
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
        adv = ADVANTAGE_ESTIMATORS.entry(a.advantage)
        adv_accepted = _accepted(adv.obj, adv.defaults)
        _check_params(
            dict(a.advantage_params), adv_accepted, f"algorithm.advantage_params for {adv.name!r}"
        )
        return cls(
            loss_name=entry.name,
            loss_fn=entry.obj,
            params=params,
            aggregation=a.aggregation,
            adv_fn=adv.obj,
            adv_params=dict(a.advantage_params),
            max_response_length=max_response_length,
            micro_batch_size=a.micro_batch_size,
            entropy_grad=a.entropy_grad,
            pass_logits=a.pass_logits,
            needs_selection=selects and accepted is not None and a.selection_scope == "batch",
            kl_coef=a.kl_coef,
            kl_type=a.kl_estimator,
            kl_in_loss=kl_in_loss,
        )

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
                **counts,
            )
            selection = prepare_selection(self.loss_name, full, **self.params)
        else:
            current = None
        parts = []
        for micro in rows.split(self.micro_batch_size):
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
