"""Target-band entropy control: keep the mean response entropy inside ``[H_lo, H_hi]`` by
adapting one parameter of *any* registered policy loss each step (a PI controller), plus the
run-level state some losses need (SIREN's entropy anchor).

:class:`EntropyBandController`. Each step the trainer reports the step's mean token entropy H
(``dyn/entropy``) and the monitor's predicted entropy change of the step's update (``dyn/pred_dH``
= −η̂·cov, :mod:`entrolab.rl.dynamics`; 0 until it is defined). The controller looks one step
ahead, ``Ĥ = H + pred_dH`` (``use_prediction``; else ``Ĥ = H``), and measures the band error::

    e = H_lo − Ĥ  if Ĥ < H_lo;    e = H_hi − Ĥ  if Ĥ > H_hi;    e = 0  inside the band

(nats; e > 0 means "entropy too low"). The parameter is ``u = clamp(u₀ + k_p·e + k_i·I, u_min,
u_max)`` with the integral ``I ← I + e`` (anti-windup by back-calculation: when u hits a bound, I is
reset to the value that gives exactly that bound, so the integral never winds up past it). Inside the band e = 0, so u holds the value the integral found:
the band is a dead zone, not a set-point, which keeps a controlled run as close to the
uncontrolled one as the band allows. The default acts on ``entropy_coef`` of the
``entropy_bonus`` loss (β > 0 raises entropy: e > 0 raises β); any loss parameter whose increase
raises entropy works the same way (``clip_cov_ratio``, ``kl_cov_ratio``, AEPO's
``reinforce_coef``…); set ``sign = −1`` for one whose increase lowers it.

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
from typing import Any

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
        init, min_value, max_value: starting value and bounds of the parameter.
        kp, ki: PI gains (parameter units per nat of band error).
        sign: +1 if raising the parameter raises entropy, −1 if it lowers it.
        warmup_steps: steps before the controller acts.
        use_prediction: add the monitor's predicted ΔH to the measured entropy.
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

    def __post_init__(self) -> None:
        if self.enabled and not self.low < self.high:
            raise EntrolabError(f"invalid controller config: need low < high, got {self.low}, "
                                f"{self.high}")  # fmt: skip
        if self.sign not in (1, -1):
            raise EntrolabError("invalid controller config: sign must be 1 or -1")


def band_error(h: float, low: float, high: float) -> float:
    """Signed distance of ``h`` to the band ``[low, high]`` (0 inside; > 0 below: too low)."""
    if h < low:
        return low - h
    if h > high:
        return high - h
    return 0.0


class EntropyBandController:
    """PI controller of one loss parameter that keeps mean token entropy in ``[low, high]``.

    Args:
        low, high: the band (nats, mean token entropy of the step's responses), low < high.
        param: the loss parameter it sets (must be accepted by the loss).
        init: u₀, the value before any correction.
        kp, ki: proportional and integral gains (parameter units per nat).
        min_value, max_value: bounds of u.
        sign: +1 when raising the parameter raises entropy, −1 when it lowers it.
        warmup_steps: steps during which u stays u₀ (the error is still logged).
        use_prediction: look one step ahead with the monitor's predicted ΔH.
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
    ) -> None:
        for name, v in (("low", low), ("high", high), ("init", init), ("kp", kp), ("ki", ki)):
            if not math.isfinite(v):
                raise EntrolabError(f"entropy band controller: {name} must be finite, got {v}")
        if not low < high:
            raise EntrolabError(f"entropy band controller: need low < high, got [{low}, {high}]")
        if not min_value <= init <= max_value:
            raise EntrolabError(
                f"entropy band controller: need min_value <= init <= max_value, got "
                f"{min_value} <= {init} <= {max_value}"
            )
        if sign not in (1, -1) or kp < 0 or ki < 0 or warmup_steps < 0:
            raise EntrolabError("entropy band controller: sign ±1, kp, ki, warmup_steps >= 0")
        self.low, self.high, self.param = float(low), float(high), param
        self.init, self.kp, self.ki = float(init), float(kp), float(ki)
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.sign, self.warmup_steps, self.use_prediction = sign, warmup_steps, use_prediction
        self.integral = 0.0
        self.value = float(init)
        self.steps = 0
        self.in_band: list[bool] = []

    def update(self, entropy: float, predicted_change: float | None = None) -> dict[str, float]:
        """Record a step's entropy; set :attr:`value` for the next step; return ``ctl/*`` metrics."""
        if not math.isfinite(entropy):
            raise EntrolabError(f"entropy band controller got a non-finite entropy {entropy}")
        pred = predicted_change if self.use_prediction and predicted_change is not None else 0.0
        h_hat = entropy + (pred if math.isfinite(pred) else 0.0)
        e = band_error(h_hat, self.low, self.high)
        self.steps += 1
        self.in_band.append(self.low <= entropy <= self.high)
        if self.steps > self.warmup_steps:
            self.integral += e
            u = self.init + self.sign * (self.kp * e + self.ki * self.integral)
            clamped = min(max(u, self.min_value), self.max_value)
            if clamped != u and self.ki > 0:  # back-calculation: I that gives exactly the bound
                self.integral = (self.sign * (clamped - self.init) - self.kp * e) / self.ki
            self.value = clamped
        return {
            "ctl/value": self.value,
            "ctl/error": e,
            "ctl/predicted_H": h_hat,
            "ctl/integral": self.integral,
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
            },
            "integral": self.integral,
            "value": self.value,
            "steps": self.steps,
            "in_band": list(self.in_band),
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

    @classmethod
    def from_config(cls, cfg: Any) -> EntropyBandController:
        """From an :class:`entrolab.rl.config.EntropyBandConfig`."""
        return cls(
            low=cfg.low, high=cfg.high, param=cfg.param, init=cfg.init, kp=cfg.kp, ki=cfg.ki,
            min_value=cfg.min_value, max_value=cfg.max_value, sign=cfg.sign,
            warmup_steps=cfg.warmup_steps, use_prediction=cfg.use_prediction,
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
        """Update from a finished step's record (``dyn/entropy``, ``dyn/pred_dH``, loss metrics);
        returns the ``ctl/*`` metrics (the parameter value for the *next* step)."""
        self.anchors.observe(record)
        if self.controller is None:
            return {}
        pred = record.get("dyn/pred_dH")
        return self.controller.update(float(record["dyn/entropy"]), pred)

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
