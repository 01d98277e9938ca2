"""Target-band entropy control: keep the mean response entropy inside ``[H_lo, H_hi]`` by
adapting one parameter of *any* registered policy loss each step, plus the run-level state some
losses need (SIREN's entropy anchor).

:class:`EntropyBandController` — a PI controller with a look-ahead and a feed-forward built on a
one-line plant model of a step's entropy change::

    ΔH_t = d_t + s·g·u_t        d_t = −η·cov_t  (the entropy law: the drift of the policy-gradient
                                                 update); g = ``plant_gain``; s = ``sign``

(nats per step; u_t is the parameter used in update t). Timing: the entropy H_t reported at
step t (``dyn/entropy``) is measured on the rollouts *before* update t, and the value the
controller sets now is first used by update t+1, so its effect appears in H_{t+2} — a one-step
delay. Each step the controller

1. **looks ahead** one update: ``Ĥ = H_t + r_t`` with ``r_t`` the realised entropy change of
   update t on the monitor's fixed probe set (``dyn/probe_dH``); without a probe it falls back to
   the monitor's predicted ``dyn/pred_dH``, else ``Ĥ = H_t`` (``use_prediction=False``: always);
2. **estimates the drift** with the controller's own action removed: ``d_t = r_t − s·g·u_t``,
   ``η̂`` = least squares through the origin of ``d`` on ``−cov`` (the monitor's ``dyn/eta_hat``
   cannot be used: it is fitted on the realised change, which includes the controller's push,
   so under control it shrinks towards 0 — seen on the reasoning proxy: 0.24 → 0.05), and
   predicts the next update's drift ``d̂ = −η̂·cov_t``;
3. sets ``u = clamp(u₀ + u_ff + s·(k_p·e + k_i·I), u_min, u_max)`` with the **feed-forward**
   ``u_ff = −s·d̂/g`` (the value that cancels the predicted drift; ``feedforward``, needs g > 0),
   the error ``e`` and the integral ``I ← I + e``.

The error (nats; e > 0 means "entropy too low") is, with ``mode="setpoint"`` (default),
``e = target − Ĥ`` (target = band centre unless set), and with ``mode="band"`` the dead-zone
distance to the band (0 inside), :func:`band_error`. The dead zone keeps a controlled run as
close to the uncontrolled one as the band allows, but under a steady drift its equilibrium is
the band *edge*, where measurement noise puts about half of the steps outside the band.

Gains: with the plant above and g known, ``k_p = λ/g`` removes a fraction λ of the error per
step (λ = 1: dead-beat); the integral absorbs a misestimated g or drift. Anti-windup by
back-calculation: when u hits a bound, I is reset to the value that gives exactly that bound.
Each increase of the parameter must raise entropy (``sign = +1``: ``entropy_coef`` of
``entropy_bonus``, ``clip_cov_ratio``, ``kl_cov_ratio``, AEPO's ``reinforce_coef``…), or lower
it (``sign = −1``). A negative ``min_value`` makes ``entropy_coef`` two-sided (β < 0 lowers
entropy), which helps when an overshoot would otherwise have to wait for the drift.

The controller is pure Python (no tensors), its state a small JSON-able dict saved in every
checkpoint, so a resumed run continues with the identical parameter sequence.

:class:`LossAnchors` — losses that take a run-level anchor (``siren``: ``ANCHOR =
("entropy_anchor", "siren_entropy")``) get it from the first step's metric when the
configuration leaves it None; the anchor is checkpointed too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from entrolab.errors import EntrolabError

__all__ = [
    "EntropyBandConfig",
    "EntropyBandController",
    "LossAnchors",
    "LossParamState",
    "band_error",
]


@dataclass
class EntropyBandConfig:
    """Settings of the target-band entropy controller (``controller:`` in a recipe).

    Attributes:
        enabled: run the controller (off by default).
        low, high: the band of mean token entropy (nats).
        param: the loss parameter it sets (``entropy_coef`` of ``entropy_bonus`` by default).
        init, min_value, max_value: bias u₀ and bounds of the parameter.
        kp, ki: PI gains (parameter units per nat of error).
        sign: +1 if raising the parameter raises entropy, −1 if it lowers it.
        warmup_steps: steps before the controller acts.
        use_prediction: look one update ahead (probe's realised ΔH, else predicted ΔH).
        mode: ``"setpoint"`` (error to ``target``) or ``"band"`` (dead zone: 0 inside the band).
        target: the set-point (nats); None = the band centre.
        plant_gain: g, entropy change per step per unit of the parameter (nats); 0 = unknown
            (no feed-forward, no drift estimate).
        feedforward: cancel the predicted drift (needs plant_gain > 0).
    """

    enabled: bool = False
    low: float = 0.5
    high: float = 0.8
    param: str = "entropy_coef"
    init: float = 0.0
    min_value: float = 0.0
    max_value: float = 0.1
    kp: float = 0.05
    ki: float = 0.02
    sign: int = 1
    warmup_steps: int = 0
    use_prediction: bool = True
    mode: Literal["setpoint", "band"] = "setpoint"
    target: float | None = None
    plant_gain: float = 0.0
    feedforward: bool = True

    def __post_init__(self) -> None:
        if self.enabled and not self.low < self.high:
            raise EntrolabError(f"invalid controller config: need low < high, got {self.low}, "
                                f"{self.high}")  # fmt: skip
        if self.sign not in (1, -1):
            raise EntrolabError("invalid controller config: sign must be 1 or -1")
        if self.mode not in ("setpoint", "band"):
            raise EntrolabError(f"invalid controller config: mode {self.mode!r}; known: "
                                "setpoint, band")  # fmt: skip


def band_error(h: float, low: float, high: float) -> float:
    """Signed distance of ``h`` to the band ``[low, high]`` (0 inside; > 0 below: too low)."""
    if h < low:
        return low - h
    if h > high:
        return high - h
    return 0.0


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


class EntropyBandController:
    """PI controller (look-ahead, drift feed-forward) of one loss parameter that keeps mean token
    entropy in ``[low, high]``; the algorithm is in the module docstring.

    Args:
        low, high: the band (nats, mean token entropy of the step's responses), low < high.
        param: the loss parameter it sets (must be accepted by the loss).
        init: u₀, the value before any correction (and the bias of every later value).
        kp, ki: proportional and integral gains (parameter units per nat).
        min_value, max_value: bounds of u.
        sign: +1 when raising the parameter raises entropy, −1 when it lowers it.
        warmup_steps: steps during which u stays u₀ (errors and drift are still recorded).
        use_prediction: look one update ahead.
        mode: ``"setpoint"`` or ``"band"`` (dead zone).
        target: set-point in nats (None: the band centre); must lie inside the band.
        plant_gain: g ≥ 0 (nats per step per unit u); 0 disables the drift estimate.
        feedforward: add u_ff = −sign·d̂/g.
    """

    def __init__(
        self,
        *,
        low: float,
        high: float,
        param: str = "entropy_coef",
        init: float = 0.0,
        kp: float = 0.05,
        ki: float = 0.02,
        min_value: float = 0.0,
        max_value: float = 1.0,
        sign: int = 1,
        warmup_steps: int = 0,
        use_prediction: bool = True,
        mode: str = "setpoint",
        target: float | None = None,
        plant_gain: float = 0.0,
        feedforward: bool = True,
    ) -> None:
        for name, v in (("low", low), ("high", high), ("init", init), ("kp", kp), ("ki", ki),
                        ("plant_gain", plant_gain)):  # fmt: skip
            if not math.isfinite(v):
                raise EntrolabError(f"entropy band controller: {name} must be finite, got {v}")
        if not low < high:
            raise EntrolabError(f"entropy band controller: need low < high, got [{low}, {high}]")
        if not min_value <= init <= max_value:
            raise EntrolabError(
                f"entropy band controller: need min_value <= init <= max_value, got "
                f"{min_value} <= {init} <= {max_value}"
            )
        if sign not in (1, -1) or kp < 0 or ki < 0 or warmup_steps < 0 or plant_gain < 0:
            raise EntrolabError(
                "entropy band controller: sign ±1, kp, ki, warmup_steps, plant_gain >= 0"
            )
        if mode not in ("setpoint", "band"):
            raise EntrolabError(f"entropy band controller: mode {mode!r}; known: setpoint, band")
        tgt = (low + high) / 2 if target is None else float(target)
        if not low <= tgt <= high:
            raise EntrolabError(f"entropy band controller: target {tgt} outside [{low}, {high}]")
        self.low, self.high, self.param = float(low), float(high), param
        self.init, self.kp, self.ki = float(init), float(kp), float(ki)
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.sign, self.warmup_steps, self.use_prediction = sign, warmup_steps, use_prediction
        self.mode, self.target, self.target_setting = mode, tgt, target
        self.plant_gain, self.feedforward = float(plant_gain), feedforward
        self.integral = 0.0
        self.value = float(init)
        self.steps = 0
        self.in_band: list[bool] = []
        self.drift_xy = 0.0  # Σ (−cov)·d  for η̂ (least squares through the origin)
        self.drift_xx = 0.0  # Σ (−cov)²

    def update(
        self,
        entropy: float,
        predicted_change: float | None = None,
        *,
        realised_change: float | None = None,
        covariance: float | None = None,
    ) -> dict[str, float]:
        """Record a step and set :attr:`value` for the next update; return ``ctl/*`` metrics.

        Args:
            entropy: H_t, mean token entropy of this step's rollouts (before its update).
            predicted_change: the monitor's predicted ΔH of this step's update (``dyn/pred_dH``).
            realised_change: the realised ΔH of this step's update on the probe set
                (``dyn/probe_dH``); preferred over ``predicted_change`` for the look-ahead.
            covariance: this step's ``dyn/cov`` (for the drift estimate and feed-forward).
        """
        if not math.isfinite(entropy):
            raise EntrolabError(f"entropy band controller got a non-finite entropy {entropy}")
        real, pred, cov = (_finite(realised_change), _finite(predicted_change),
                           _finite(covariance))  # fmt: skip
        u_applied = self.value
        g = self.plant_gain
        if real is not None and cov is not None and g > 0:  # drift with our own push removed
            d = real - self.sign * g * u_applied
            self.drift_xy += -cov * d
            self.drift_xx += cov * cov
        ahead = real if real is not None else pred
        h_hat = entropy + (ahead if self.use_prediction and ahead is not None else 0.0)
        if self.mode == "band":
            e = band_error(h_hat, self.low, self.high)
        else:
            e = self.target - h_hat
        eta = max(self.drift_xy / self.drift_xx, 0.0) if self.drift_xx > 0 else None
        drift = -eta * cov if eta is not None and cov is not None else 0.0
        u_ff = -self.sign * drift / g if self.feedforward and g > 0 else 0.0
        self.steps += 1
        self.in_band.append(self.low <= entropy <= self.high)
        if self.steps > self.warmup_steps:
            self.integral += e
            base = self.init + u_ff
            u = base + self.sign * (self.kp * e + self.ki * self.integral)
            clamped = min(max(u, self.min_value), self.max_value)
            if clamped != u and self.ki > 0:  # back-calculation: I that gives exactly the bound
                self.integral = (self.sign * (clamped - base) - self.kp * e) / self.ki
            self.value = clamped
        return {
            "ctl/value": self.value,
            "ctl/error": e,
            "ctl/predicted_H": h_hat,
            "ctl/integral": self.integral,
            "ctl/feedforward": u_ff,
            "ctl/drift": drift,
            "ctl/in_band": 1.0 if self.in_band[-1] else 0.0,
            "ctl/in_band_frac": sum(self.in_band) / len(self.in_band),
        }

    def in_band_fraction(self, after: int = 0) -> float:
        """Fraction of steps after the first ``after`` whose entropy was inside the band."""
        tail = self.in_band[after:]
        return sum(tail) / len(tail) if tail else float("nan")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (settings included, so a resume can check them)."""
        return {
            "settings": {
                "low": self.low, "high": self.high, "param": self.param, "init": self.init,
                "kp": self.kp, "ki": self.ki, "min_value": self.min_value,
                "max_value": self.max_value, "sign": self.sign,
                "warmup_steps": self.warmup_steps, "use_prediction": self.use_prediction,
                "mode": self.mode, "target": self.target_setting,
                "plant_gain": self.plant_gain, "feedforward": self.feedforward,
            },
            "integral": self.integral,
            "value": self.value,
            "steps": self.steps,
            "in_band": list(self.in_band),
            "drift_xy": self.drift_xy,
            "drift_xx": self.drift_xx,
        }  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the settings must match this controller's)."""
        mine = self.state_dict()["settings"]
        if dict(state["settings"]) != mine:
            raise EntrolabError(
                f"checkpointed entropy band controller settings {dict(state['settings'])} differ "
                f"from this run's {mine}; resume with the same recipe"
            )
        self.integral = float(state["integral"])
        self.value = float(state["value"])
        self.steps = int(state["steps"])
        self.in_band = [bool(x) for x in state["in_band"]]
        self.drift_xy = float(state.get("drift_xy", 0.0))
        self.drift_xx = float(state.get("drift_xx", 0.0))

    @classmethod
    def from_config(cls, cfg: Any) -> EntropyBandController:
        """From an :class:`EntropyBandConfig`."""
        return cls(
            low=cfg.low, high=cfg.high, param=cfg.param, init=cfg.init, kp=cfg.kp, ki=cfg.ki,
            min_value=cfg.min_value, max_value=cfg.max_value, sign=cfg.sign,
            warmup_steps=cfg.warmup_steps, use_prediction=cfg.use_prediction, mode=cfg.mode,
            target=cfg.target, plant_gain=cfg.plant_gain, feedforward=cfg.feedforward,
        )  # fmt: skip


class LossAnchors:
    """Run-level anchors of a loss: ``(param, metric)`` from the loss function's ``ANCHOR``
    attribute; when the configured value is None, the first step's ``loss/<metric>`` becomes the
    parameter for every later step."""

    def __init__(self, loss_fn: Any, params: Mapping[str, Any]) -> None:
        anchor = getattr(loss_fn, "__entrolab_anchor__", None)
        self.param, self.metric = anchor if anchor else (None, None)
        self.value: float | None = None if self.param is None else params.get(self.param)

    def apply(self, params: dict[str, Any]) -> None:
        if self.param is not None and self.value is not None:
            params[self.param] = self.value

    def observe(self, record: Mapping[str, Any]) -> None:
        if self.param is None or self.value is not None:
            return
        v = record.get(f"loss/{self.metric}")
        if isinstance(v, (int, float)) and math.isfinite(v):
            self.value = float(v)

    def state_dict(self) -> dict[str, Any]:
        return {"param": self.param, "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("param") == self.param:
            self.value = state.get("value")


class LossParamState:
    """Everything that sets loss parameters between steps: the band controller (when enabled)
    and the loss's run-level anchor. The trainer calls :meth:`apply` before each step's updates
    and :meth:`observe` with the step's record; :meth:`state_dict` goes into checkpoints.

    Args:
        cfg: an :class:`EntropyBandConfig`. loss_fn: the registered loss function.
        params: the loss's keyword arguments (updated in place by :meth:`apply`).
    """

    def __init__(self, cfg: EntropyBandConfig, loss_fn: Any, params: Mapping[str, Any]) -> None:
        self.controller = EntropyBandController.from_config(cfg) if cfg.enabled else None
        if self.controller is not None:
            import inspect

            sig = inspect.signature(loss_fn).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.values())
            if not takes_any and cfg.param not in sig:
                name = getattr(loss_fn, "__name__", "the loss")
                raise EntrolabError(
                    f"controller.param={cfg.param!r} is not a parameter of {name}; it accepts "
                    f"{sorted(k for k in sig if k != 'inp')}"
                )
        self.anchors = LossAnchors(loss_fn, params)

    def apply(self, params: dict[str, Any]) -> None:
        if self.controller is not None:
            params[self.controller.param] = self.controller.value
        self.anchors.apply(params)

    def observe(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Update from a finished step's record (``dyn/entropy``, ``dyn/pred_dH``,
        ``dyn/probe_dH``, ``dyn/cov``, loss metrics);
        returns the ``ctl/*`` metrics (the parameter value for the *next* step)."""
        self.anchors.observe(record)
        if self.controller is None:
            return {}
        return self.controller.update(
            float(record["dyn/entropy"]),
            record.get("dyn/pred_dH"),
            realised_change=record.get("dyn/probe_dH"),
            covariance=record.get("dyn/cov"),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": None if self.controller is None else self.controller.state_dict(),
            "anchors": self.anchors.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.controller is not None and state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
        if state.get("anchors"):
            self.anchors.load_state_dict(state["anchors"])
