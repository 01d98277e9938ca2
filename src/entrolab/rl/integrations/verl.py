"""verl plug-in: entrolab's policy losses and advantage estimators in verl's registries.

Tested with verl 0.9.1 (``pip install --no-deps verl`` + ray, tensordict ≤ 0.10, omegaconf,
codetiming, orjson; torch 2.13.0+cpu). :func:`register` adds, for every name in
``entrolab.rl.policy_losses``, a verl ``PolicyLossFn`` named ``entrolab_<name>`` to
``verl.trainer.ppo.core_algos.POLICY_LOSS_REGISTRY`` (select it with
``actor_rollout_ref.actor.policy_loss.loss_mode=entrolab_kl_cov``), and for every
``entrolab.rl.advantage_estimators`` name an estimator ``entrolab_<name>`` in
``ADV_ESTIMATOR_REGISTRY`` (``algorithm.adv_estimator=entrolab_rloo``).

How a verl call maps to an entrolab call (:func:`make_verl_loss`):

* tensors: ``log_prob``/``old_log_prob``/``advantages``/``response_mask`` ``[bs, T]`` →
  :class:`PolicyLossInput`; ``loss_agg_mode`` → ``aggregation``.
* reduction scope: ``config.global_batch_info`` (``batch_num_tokens``, ``global_batch_size``,
  ``loss_scale_factor``, ``dp_size``) → ``global_tokens``/``global_sequences``/
  ``max_response_length``, and the loss is multiplied by ``dp_size`` as verl's ``agg_loss`` does
  (DDP averages gradients over ranks). Token selection is per micro-batch (verl has no hook to
  prepare whole-batch statistics), exactly like verl's own clip_cov/kl_cov.
* parameters, lowest to highest precedence: entrolab's defaults; verl's config keys with the
  same meaning (``clip_ratio_low/high`` → ``clip_low/high``, ``clip_ratio_c`` → ``dual_clip``,
  ``policy_loss.clip_cov_ratio/lb/ub``, ``policy_loss.kl_cov_ratio``, ``policy_loss.ppo_kl_coef``;
  note verl's ``ppo_kl_coef`` default is 0.1, the paper's 1); ``params`` given to
  :func:`register` (entrolab-only keys such as ``rho``: verl's dataclass config rejects them).
* token entropy: verl passes none to policy losses. With ``entropy_passthrough`` (default),
  :func:`register` wraps verl 0.9.1's worker loss ``verl.workers.utils.losses.ppo_loss`` so the
  entropy it already receives (``model_output["entropy"]``, present when
  ``actor.calculate_entropy=True`` or ``entropy_coeff != 0``) reaches the entrolab loss; losses
  that need it (``forking_tokens*``, ``entropy_bonus``) fail with a message naming both settings.
* advantage shapers (``grpo+ucas`` …) need per-token tensors that stock verl does not pass to
  advantage estimators; :mod:`entrolab.rl.integrations.verl_shaping` documents what verl passes
  and adapts a pipeline for a ``compute_advantage`` patched to pass them.
* ``ares`` and ``clip_v`` are not registered (:data:`VERL_UNSUPPORTED` gives the reasons; naming
  them in :func:`register` raises): verl's worker hands a policy loss padded log-probs,
  advantages, masks and (passed through) entropy only — no group ids or rewards (ARES) and no
  logits (Clip_V's vocabulary baseline). Both run in entrolab's trainer and the TRL plug-in.
* ``rollout_is_weights`` (verl's rollout correction) is refused: entrolab losses take no
  per-token weights (fold them into the advantages yourself if the loss is linear in A).

Ray workers: registration must run in every worker process. Set
``VERL_USE_EXTERNAL_MODULES=entrolab.rl.integrations.verl`` and ``ENTROLAB_VERL_REGISTER=1``
(or a comma list of entrolab loss names) in the job's environment; importing this module then
calls :func:`register` with ``params`` from the JSON in ``ENTROLAB_VERL_PARAMS`` (e.g.
``{"forking_tokens": {"rho": 0.2}}``). Without ``ENTROLAB_VERL_REGISTER`` importing this module
does nothing; verl itself is imported only when a function here needs it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from entrolab.errors import EntrolabError
from entrolab.rl.advantages import ADVANTAGE_ESTIMATORS
from entrolab.rl.losses import POLICY_LOSSES
from entrolab.rl.types import PolicyLossInput

__all__ = [
    "PREFIX",
    "TESTED_VERL_VERSIONS",
    "VERL_UNSUPPORTED",
    "enable_entropy_passthrough",
    "make_verl_advantage",
    "make_verl_loss",
    "params_from_env",
    "register",
    "verl_loss_params",
    "verl_metrics",
]

PREFIX = "entrolab_"
TESTED_VERL_VERSIONS = ("0.9.1",)
_INSTALL_HINT = (
    "verl is not installed: install it apart from the main environment (make test-verl, or "
    "pip install --no-deps verl ray 'tensordict<=0.10' omegaconf codetiming orjson)"
)
#: entrolab losses that cannot run inside verl's worker loss → why (and what to use instead)
VERL_UNSUPPORTED = {
    "ares": "it needs each sequence's group id, correctness and group pass rate, but verl's actor "
    "update receives only padded log-probs, advantages and masks (uids and rewards stay in the "
    "driver's DataProto); use entrolab's trainer or the TRL plug-in, or fold ARES's entropy score "
    "into your verl reward function",
    "clip_v": "it needs the full logits [B, T, V] for the vocabulary baseline E_π[S], but verl's "
    "worker computes log-probs and entropy inside the model forward and passes no logits; use "
    "clip_b (the batch-mean baseline) or the TRL plug-in with pass_logits=True",
}
#: entrolab parameter → verl config paths (first one set wins), used when the loss accepts it.
VERL_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "clip_low": ("clip_ratio_low", "clip_ratio"),
    "clip_high": ("clip_ratio_high", "clip_ratio"),
    "dual_clip": ("clip_ratio_c",),
    "clip_cov_ratio": ("policy_loss.clip_cov_ratio",),
    "clip_cov_lb": ("policy_loss.clip_cov_lb",),
    "clip_cov_ub": ("policy_loss.clip_cov_ub",),
    "kl_cov_ratio": ("policy_loss.kl_cov_ratio",),
    "ppo_kl_coef": ("policy_loss.ppo_kl_coef",),
}
#: current micro-batch's padded token entropy [bs, T], set by the ppo_loss wrapper.
_ENTROPY: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar(
    "entrolab_verl_entropy", default=None
)


def _cfg_get(config: Any, path: str) -> Any:
    """``config.a.b`` for ``path="a.b"`` on a verl dataclass/DictConfig/dict (None if absent)."""
    node = config
    for key in path.split("."):
        if node is None:
            return None
        node = node.get(key) if hasattr(node, "get") else getattr(node, key, None)
    return node


def _accepted(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts (None: any, it has ``**kwargs``)."""
    sig = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        return None
    return set(sig) - {"inp", "aggregation"}


def verl_loss_params(
    name: str, config: Any = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Keyword arguments for entrolab loss ``name`` in verl: verl config keys, then ``params``.

    ``config``: verl's ``ActorConfig`` (or a DictConfig/dict shaped like it), may be None.
    Raises for unknown ``params`` keys and for ``selection_scope="batch"`` (unsupported in verl).
    """
    accepted = _accepted(POLICY_LOSSES.get(name))
    out: dict[str, Any] = {}
    if config is not None:
        for key, paths in VERL_CONFIG_KEYS.items():
            if accepted is not None and key not in accepted:
                continue
            value = next((v for p in paths if (v := _cfg_get(config, p)) is not None), None)
            if value is not None:
                out[key] = value
    for key, value in (params or {}).items():
        if accepted is not None and key not in accepted:
            raise EntrolabError(
                f"entrolab loss {name!r} has no parameter {key!r}; it accepts {sorted(accepted)}"
            )
        out[key] = value
    if out.get("selection_scope", "micro_batch") != "micro_batch":
        raise EntrolabError(
            f"{PREFIX}{name}: verl calls the loss per micro-batch with no whole-batch hook; use "
            "selection_scope='micro_batch' (verl's own clip_cov/kl_cov select per micro-batch too)"
        )
    return out


#: verl metric name → the entrolab metric with verl's meaning, per loss (verl's built-in
#: ``clip_cov`` reports the fraction of *zeroed* tokens as ``pg_clipfrac``; ``kl_cov`` reports
#: mean |log r| as ``ppo_kl`` and no clip fraction). Losses not listed use the PPO meaning.
VERL_METRIC_NAMES: dict[str, dict[str, str]] = {
    "clip_cov": {"actor/pg_clipfrac": "touched_frac", "actor/ppo_kl": "ppo_kl"},
    "kl_cov": {"actor/ppo_kl": "abs_log_ratio"},
}
_PPO_METRIC_NAMES = {
    "actor/pg_clipfrac": "clip_frac",  # low + high clipping, verl's vanilla pg_clipfrac
    "actor/pg_clipfrac_lower": "dual_clip_frac",
    "actor/ppo_kl": "ppo_kl",
}


def verl_metrics(name: str, metrics: Mapping[str, float]) -> dict[str, Any]:
    """Loss metrics for verl: every entrolab metric as ``actor/entrolab/<key>``, plus verl's own
    names (``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower``, ``actor/ppo_kl``) carrying the
    meaning verl's built-in loss of the same family gives them (:data:`VERL_METRIC_NAMES`); a
    verl name is left out when the loss has no metric with that meaning (e.g. REINFORCE)."""
    out: dict[str, Any] = {f"actor/entrolab/{k}": v for k, v in metrics.items()}
    for verl_name, key in VERL_METRIC_NAMES.get(name, _PPO_METRIC_NAMES).items():
        if key in metrics:
            out[verl_name] = metrics[key]
    return out


def make_verl_loss(name: str, params: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """A verl ``PolicyLossFn`` running entrolab loss ``name``.

    Signature (verl 0.9.1): ``(old_log_prob, log_prob, advantages, response_mask,
    loss_agg_mode="token-mean", config=None, rollout_is_weights=None) -> (loss, metrics)``, all
    tensors ``[bs, T]``. ``metrics``: :func:`verl_metrics` (every entrolab metric as
    ``actor/entrolab/<name>``, plus verl's names with verl's meaning).
    """
    entry = POLICY_LOSSES.entry(name)
    fn, fixed = entry.obj, dict(params or {})
    verl_loss_params(entry.name, None, fixed)  # validate the explicit params now

    def loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if rollout_is_weights is not None:
            raise EntrolabError(
                f"{PREFIX}{entry.name} takes no rollout_is_weights; disable verl's "
                "policy_loss.rollout_correction or use a verl built-in loss"
            )
        info = dict(_cfg_get(config, "global_batch_info") or {}) if config is not None else {}
        dp = info.get("dp_size") or 1
        entropy = _ENTROPY.get()
        if entropy is not None and tuple(entropy.shape) != tuple(log_prob.shape):
            raise EntrolabError(
                f"entropy pass-through has shape {tuple(entropy.shape)} but log_prob has "
                f"{tuple(log_prob.shape)}; this verl version pads them differently"
            )
        inp = PolicyLossInput(
            logprobs=log_prob,
            old_logprobs=old_log_prob,
            advantages=advantages,
            response_mask=response_mask.bool(),
            entropy=entropy,
            global_tokens=info.get("batch_num_tokens"),
            global_sequences=info.get("global_batch_size"),
            max_response_length=info.get("loss_scale_factor"),
        )
        kwargs = verl_loss_params(entry.name, config, fixed)
        try:
            out = fn(inp, aggregation=loss_agg_mode, **kwargs)
        except EntrolabError as err:
            if entropy is None and "entropy" in str(err):
                raise EntrolabError(
                    f"{err} — in verl: set actor_rollout_ref.actor.calculate_entropy=True and "
                    "register with entropy_passthrough=True in every worker (see "
                    "entrolab.rl.integrations.verl)"
                ) from err
            raise
        return out.loss * float(dp), verl_metrics(entry.name, out.metrics)

    loss_fn.__name__ = f"{PREFIX}{entry.name}"
    loss_fn.__doc__ = f"verl adapter of entrolab loss {entry.name!r}: {entry.summary}"
    loss_fn.__entrolab__ = ("loss", entry.name)  # type: ignore[attr-defined]
    return loss_fn


def make_verl_advantage(name: str, params: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """A verl advantage estimator running entrolab estimator ``name`` on outcome rewards.

    verl calls it as ``fn(token_level_rewards [bs, T], response_mask [bs, T], config=…,
    index=uid array, …)``; the score of a response is ``token_level_rewards.sum(-1)`` (as verl's
    GRPO), responses are grouped by ``index`` (every group must have the same size G ≥ 2), and
    the result ``A[:, None] * response_mask`` is returned as ``(advantages, returns)``.
    """
    entry = ADVANTAGE_ESTIMATORS.entry(name)
    fn, fixed = entry.obj, dict(params or {})

    def adv_fn(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        config: Any = None,
        index: Iterable[Any] | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if index is None:
            raise EntrolabError(f"{PREFIX}{entry.name} needs verl's uid index to form groups")
        scores = token_level_rewards.sum(dim=-1)
        groups: dict[Any, list[int]] = {}
        for i, uid in enumerate(index):
            groups.setdefault(uid, []).append(i)
        sizes = sorted({len(g) for g in groups.values()})
        if len(sizes) != 1:
            raise EntrolabError(
                f"{PREFIX}{entry.name} needs groups of equal size, got sizes {sizes}; do not "
                "filter single responses out of a group before computing advantages"
            )
        rows = torch.tensor(list(groups.values()), device=scores.device)  # [N, G]
        with torch.no_grad():
            grouped = fn(scores[rows].float(), **fixed)
            adv = torch.empty_like(scores)
            adv[rows.reshape(-1)] = grouped.reshape(-1).to(scores.dtype)
        adv = adv.unsqueeze(-1) * response_mask
        return adv, adv

    adv_fn.__name__ = f"{PREFIX}{entry.name}"
    adv_fn.__doc__ = f"verl adapter of entrolab advantage estimator {entry.name!r}"
    adv_fn.__entrolab__ = ("advantage", entry.name)  # type: ignore[attr-defined]
    return adv_fn


def _core_algos() -> Any:
    try:
        from verl.trainer.ppo import core_algos
    except ImportError as err:
        raise EntrolabError(f"{_INSTALL_HINT} ({err})") from err
    return core_algos


def enable_entropy_passthrough() -> bool:
    """Wrap verl's worker loss ``verl.workers.utils.losses.ppo_loss`` so that the token entropy it
    receives reaches entrolab losses (idempotent; also patches modules that already imported it).

    Returns False when this verl version has no such function (then entropy stays unavailable).
    """
    try:
        from verl.workers.utils import losses as vl
        from verl.workers.utils.padding import no_padding_2_padding
    except ImportError:
        return False
    original = getattr(vl, "ppo_loss", None)
    if original is None:
        return False
    if getattr(original, "__entrolab_entropy__", False):
        return True
    sig = inspect.signature(original)

    @functools.wraps(original)
    def ppo_loss(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        out, data = bound.arguments.get("model_output"), bound.arguments.get("data")
        entropy = out.get("entropy") if hasattr(out, "get") else None
        if entropy is not None:
            entropy = no_padding_2_padding(entropy, data)
        token = _ENTROPY.set(entropy)
        try:
            return original(*args, **kwargs)
        finally:
            _ENTROPY.reset(token)

    ppo_loss.__entrolab_entropy__ = True  # type: ignore[attr-defined]
    vl.ppo_loss = ppo_loss
    for mod in ("verl.workers.engine_workers", "verl.trainer.distillation.losses"):
        module = sys.modules.get(mod)
        if module is not None and getattr(module, "ppo_loss", None) is original:
            module.ppo_loss = ppo_loss
    return True


def register(
    losses: Iterable[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    advantages: bool | Iterable[str] = True,
    entropy_passthrough: bool = True,
) -> list[str]:
    """Register entrolab losses (and advantage estimators) in verl under ``entrolab_<name>``.

    Args:
        losses: entrolab loss names (default: all of ``entrolab.rl.policy_losses`` except those
            in :data:`VERL_UNSUPPORTED`; naming one of those raises with the reason).
        params: per-name fixed keyword arguments, e.g. ``{"forking_tokens": {"rho": 0.2}}``
            (keys may name losses or estimators).
        advantages: True (all estimators), False, or estimator names.
        entropy_passthrough: call :func:`enable_entropy_passthrough`.
    Returns:
        The verl names registered. Re-registering replaces earlier entrolab entries; a
        non-entrolab estimator already holding a name raises.
    """
    params = dict(params or {})
    if losses is None:
        names = [n for n in POLICY_LOSSES.names() if n not in VERL_UNSUPPORTED]
    else:
        names = [POLICY_LOSSES.entry(n).name for n in losses]
    bad = [n for n in names if n in VERL_UNSUPPORTED]
    if bad:
        raise EntrolabError(
            "; ".join(f"{PREFIX}{n} cannot run in verl: {VERL_UNSUPPORTED[n]}" for n in bad)
        )
    ca = _core_algos()
    done = []
    for name in names:
        ca.POLICY_LOSS_REGISTRY[PREFIX + name] = make_verl_loss(name, params.get(name))
        done.append(PREFIX + name)
    adv_names = ADVANTAGE_ESTIMATORS.names() if advantages is True else (advantages or [])
    for name in adv_names:
        key = PREFIX + ADVANTAGE_ESTIMATORS.entry(name).name
        current = ca.ADV_ESTIMATOR_REGISTRY.get(key)
        if current is not None and not hasattr(current, "__entrolab__"):
            raise EntrolabError(f"verl advantage estimator {key!r} exists and is not entrolab's")
        ca.ADV_ESTIMATOR_REGISTRY[key] = make_verl_advantage(name, params.get(name))
        done.append(key)
    if entropy_passthrough:
        enable_entropy_passthrough()
    return done


def params_from_env(var: str = "ENTROLAB_VERL_PARAMS") -> dict[str, dict[str, Any]]:
    """Per-name parameters from a JSON object in environment variable ``var`` ({} if unset)."""
    text = os.environ.get(var, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise EntrolabError(
            f'{var} must be a JSON object like {{"kl_cov": {{...}}}}: {err}'
        ) from err
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise EntrolabError(f"{var} must map names to objects of parameters, got {text!r}")
    return value


def _register_from_env() -> None:
    which = os.environ.get("ENTROLAB_VERL_REGISTER", "").strip()
    if which in ("", "0", "false", "False"):
        return
    names = None if which.lower() in ("1", "all", "true") else [n.strip() for n in which.split(",")]
    register(names, params=params_from_env())


_register_from_env()  # opt-in (ENTROLAB_VERL_REGISTER): for verl's VERL_USE_EXTERNAL_MODULES
