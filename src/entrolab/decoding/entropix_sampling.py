"""entropix-style adaptive sampling over (entropy, varentropy) regimes, as a warper.

After xjdr-alt/entropix's Oct-2024 torch sampler (``entropix/torch_sampler.py`` @cdb6f6f; spec
B2 (a)). Each row's step entropy H and varentropy V (of the logits received) pick a regime:

=========  ==========================  ==================================================
regime     condition (first match)     action (T_e = ``temperature``, k = ``top_k``, p = ``top_p``)
=========  ==========================  ==================================================
LELV       H < h_low  and V < v_low    greedy: keep the most likely token only
HELV       H > h_mid  and V < v_low    T = min(1.5, 1.3·T_e)
LEHV       H < h_high and V > v_high   T = min(1.5, 1.2·T_e), k' = max(5, ⌊1.5·k⌋)
HEHV       H > h_high and V > v_high   T = max(2, 2·T_e), p' = max(0.5, p)
adaptive   otherwise                   T = T_e·(1 + 0.3(H+V)), min-p = clip(0.03(1 − 0.5(H+V)),
                                       0.01, 0.5), best of ``n_candidates`` draws
=========  ==========================  ==================================================

then top-k → top-p → min-p with transformers' semantics (top-p on the top-k renormalised).
The adaptive formulas use H in bits and V in bits², as entropix; thresholds are in nats / nats².

Departures from entropix, all forced or deliberate:

* no attention terms (a warper sees only logits): attention entropy, attention varentropy,
  agreement and interaction strength are taken as 0, which is what the formulas above show;
* HELV does not insert entropix's "clarifying" token (id 2564 of Llama-3; not a warper's job and
  model specific) — it samples at the temperature entropix uses right after inserting it;
* regimes are per row (entropix averages H and V over the batch);
* entropix's ``_sample`` builds its probabilities before min-p (so min-p had no effect) and its
  flipped cumulative sum removes the *head* for top-p; here both act as in transformers;
* the adaptive branch's "draw 5 candidates, keep the one with the highest log-probability plus
  a score that is the same for all 5" is applied exactly as a distribution: the best of n i.i.d.
  draws is the token of rank j with probability T_j^n − T_{j+1}^n (T_j = mass of ranks ≥ j).

Thresholds: entropix's values (0.1 / 3 / 5 bits for H, 0.1 / 5 bits² for V) are heuristics for
Llama-3; by default entrolab sets them as quantiles of the model's own per-token (H, V)
(:func:`fit_entropix_thresholds` on warm-up traces; ``entrolab sample`` / ``compare-samplers``
do it automatically). ``EntropixThresholds.fixed()`` gives entropix's values in nats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from entrolab.decoding.base import (
    WarperProcessor,
    as_rows,
    check_int,
    check_number,
    compute_dtype,
    scatter_kept,
)
from entrolab.errors import EntrolabError
from entrolab.signals import entropy_and_varentropy

__all__ = [
    "DEFAULT_QUANTILES",
    "ENTROPIX_FIXED_BITS",
    "REGIMES",
    "EntropixLogitsProcessor",
    "EntropixThresholds",
    "entropix",
    "entropix_regimes",
    "fit_entropix_thresholds",
]

LN2 = math.log(2.0)
#: Regime codes returned by :func:`entropix_regimes` (index = code).
REGIMES = ("lelv", "helv", "lehv", "hehv", "adaptive")
#: entropix's fixed thresholds, in bits (H) and bits² (V).
ENTROPIX_FIXED_BITS = {"h_low": 0.1, "h_mid": 3.0, "h_high": 5.0, "v_low": 0.1, "v_high": 5.0}
#: Default quantile levels of the model's own per-token H and V distributions.
DEFAULT_QUANTILES = {"h_low": 0.3, "h_mid": 0.8, "h_high": 0.95, "v_low": 0.3, "v_high": 0.9}
_KEYS = ("h_low", "h_mid", "h_high", "v_low", "v_high")


@dataclass(frozen=True)
class EntropixThresholds:
    """Regime thresholds: entropy in nats (h_low ≤ h_mid ≤ h_high), varentropy in nats²
    (v_low ≤ v_high)."""

    h_low: float
    h_mid: float
    h_high: float
    v_low: float
    v_high: float

    def __post_init__(self) -> None:
        for key in _KEYS:
            v = getattr(self, key)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
            ):
                raise EntrolabError(
                    f"entropix threshold {key} must be a finite number >= 0, got {v!r}"
                )
            object.__setattr__(self, key, float(v))
        if not self.h_low <= self.h_mid <= self.h_high or not self.v_low <= self.v_high:
            raise EntrolabError(
                f"entropix thresholds must be ordered h_low <= h_mid <= h_high and v_low <= "
                f"v_high; got {self.to_dict()}"
            )

    @classmethod
    def fixed(cls) -> EntropixThresholds:
        """entropix's own values, converted from bits to nats (×ln 2; ×ln² 2 for V)."""
        b = ENTROPIX_FIXED_BITS
        return cls(
            b["h_low"] * LN2,
            b["h_mid"] * LN2,
            b["h_high"] * LN2,
            b["v_low"] * LN2**2,
            b["v_high"] * LN2**2,
        )

    @classmethod
    def from_value(cls, value: Any) -> EntropixThresholds:
        """From an instance, a mapping with the five keys, or ``"fixed"``."""
        if isinstance(value, cls):
            return value
        if value == "fixed":
            return cls.fixed()
        if isinstance(value, Mapping):
            missing = [k for k in _KEYS if k not in value]
            extra = sorted(set(value) - set(_KEYS))
            if missing or extra:
                raise EntrolabError(
                    f"entropix thresholds need exactly the keys {', '.join(_KEYS)}; "
                    f"missing {missing}, unknown {extra}"
                )
            return cls(**{k: value[k] for k in _KEYS})
        raise EntrolabError(
            "entropix thresholds must be 'fixed', a mapping with keys "
            f"{', '.join(_KEYS)} (nats), or fitted with fit_entropix_thresholds; got {value!r}"
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _values(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, Sequence) and x and all(isinstance(t, torch.Tensor) for t in x):
        x = torch.cat([t.reshape(-1) for t in x])
    t = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if t.numel() == 0:
        raise EntrolabError(f"{name} is empty; give per-token values from warm-up traces")
    if not bool(torch.isfinite(t).all()):
        raise EntrolabError(f"{name} contains NaN/inf; drop those tokens before fitting")
    return t


def fit_entropix_thresholds(
    entropy: Any, varentropy: Any, quantiles: Mapping[str, float] | None = None
) -> EntropixThresholds:
    """Thresholds at quantiles of the model's own per-token entropy and varentropy.

    Args:
        entropy: per-token entropies in nats, [N] (tensor/array/list, or a list of [T_i]
            tensors such as ``[t.entropy for t in traces]``, concatenated).
        varentropy: per-token varentropies in nats², same count.
        quantiles: levels in [0, 1] for any of ``h_low, h_mid, h_high`` (of H) and
            ``v_low, v_high`` (of V); missing keys take :data:`DEFAULT_QUANTILES`.
    Returns:
        :class:`EntropixThresholds` (linear-interpolated quantiles, as ``torch.quantile``).
    """
    h, v = _values(entropy, "entropy"), _values(varentropy, "varentropy")
    if h.numel() != v.numel():
        raise EntrolabError(
            f"entropy has {h.numel()} values but varentropy {v.numel()}; pass one pair per token"
        )
    unknown = sorted(set(quantiles or {}) - set(_KEYS))
    if unknown:
        raise EntrolabError(f"unknown quantile keys {unknown}; known: {', '.join(_KEYS)}")
    q = {**DEFAULT_QUANTILES, **(quantiles or {})}
    for key in _KEYS:
        q[key] = check_number(key, q[key], low=0.0, high=1.0, owner="entropix quantiles")
    if not q["h_low"] <= q["h_mid"] <= q["h_high"] or not q["v_low"] <= q["v_high"]:
        raise EntrolabError(f"entropix quantiles must be ordered like the thresholds; got {q}")
    hq = torch.quantile(h, torch.tensor([q["h_low"], q["h_mid"], q["h_high"]], dtype=h.dtype))
    vq = torch.quantile(v, torch.tensor([q["v_low"], q["v_high"]], dtype=v.dtype))
    return EntropixThresholds(*(max(float(x), 0.0) for x in (*hq.tolist(), *vq.tolist())))


def entropix_regimes(
    entropy: torch.Tensor, varentropy: torch.Tensor, thresholds: EntropixThresholds
) -> torch.Tensor:
    """Regime code per entry (int64, same shape; index into :data:`REGIMES`), first match wins."""
    h, v, th = entropy, varentropy, thresholds
    code = torch.full(h.shape, REGIMES.index("adaptive"), dtype=torch.int64, device=h.device)
    rules = [
        ("hehv", (h > th.h_high) & (v > th.v_high)),
        ("lehv", (h < th.h_high) & (v > th.v_high)),
        ("helv", (h > th.h_mid) & (v < th.v_low)),
        ("lelv", (h < th.h_low) & (v < th.v_low)),
    ]
    for name, cond in rules:  # applied last-to-first priority, so the first rule wins
        code = torch.where(cond, REGIMES.index(name), code)
    return code


def _best_of_n_logits(q: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """log P(the best of n i.i.d. draws has rank j) for sorted q [N, m] restricted to ``keep``."""
    qk = torch.where(keep, q, torch.zeros_like(q)).double()
    qk = qk / qk.sum(-1, keepdim=True)
    tail = qk.flip(-1).cumsum(-1).flip(-1)  # T_j = Σ_{i≥j} q_i
    nxt = torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], dim=-1)
    ratio = torch.where(tail > 0, nxt / tail, torch.zeros_like(tail)).clamp(max=1.0)
    out = n * tail.log() + torch.log1p(-(ratio**n))  # T_j^n − T_{j+1}^n, in log space
    return out.to(q.dtype)


def entropix(
    logits: torch.Tensor,
    thresholds: EntropixThresholds | Mapping[str, float] | str,
    *,
    temperature: float = 0.666,
    top_k: int = 27,
    top_p: float = 0.9,
    min_p: float = 0.0,
    n_candidates: int = 5,
) -> torch.Tensor:
    """entropix-style regime sampling of logits [..., V] → new logits [..., V] (see module doc).

    Args:
        logits: [..., V]; H and V are measured on them (use the backend at temperature 1 to
            measure the model's raw distribution, as entropix does).
        thresholds: :class:`EntropixThresholds` (nats), a mapping, or ``"fixed"``.
        temperature, top_k, top_p, min_p: entropix's base settings (defaults as entropix).
        n_candidates: draws in the adaptive regime's best-of-n (1 = plain sampling).
    Returns:
        kept tokens get their logit / T (LELV: their logit), or log best-of-n probabilities in
        the adaptive regime; the rest ``-inf``. Output dtype = input dtype.
    """
    th = EntropixThresholds.from_value(thresholds)
    t_e = check_number("temperature", temperature, low=0.0, low_open=True, owner="entropix")
    k = check_int("top_k", top_k, owner="entropix")
    p = check_number("top_p", top_p, low=0.0, high=1.0, low_open=True, owner="entropix")
    mp = check_number("min_p", min_p, low=0.0, high=1.0, high_open=True, owner="entropix")
    n = check_int("n_candidates", n_candidates, owner="entropix")
    rows = as_rows(logits)
    x = rows.to(compute_dtype(rows.dtype))
    h, v = entropy_and_varentropy(x)  # nats, nats²; validates the logits
    regime = entropix_regimes(h, v, th)
    lelv, helv, lehv, hehv, adaptive = (regime == i for i in range(len(REGIMES)))
    hv_bits = h / LN2 + v / LN2**2
    temp = torch.full_like(h, t_e)
    temp = torch.where(helv, min(1.5, 1.3 * t_e), temp)
    temp = torch.where(lehv, min(1.5, 1.2 * t_e), temp)
    temp = torch.where(hehv, max(2.0, 2.0 * t_e), temp)
    temp = torch.where(adaptive, t_e * (1 + 0.3 * hv_bits), temp)
    k_lehv, k_adapt = max(5, int(k * 1.5)), min(max(k, 1), 100)
    k_row = torch.where(lehv, k_lehv, torch.where(adaptive, k_adapt, k))
    p_row = torch.where(hehv, max(0.5, p), torch.where(adaptive, min(max(p, 0.1), 1.0), p))
    mp_adapt = (0.03 * (1 - 0.5 * hv_bits)).clamp(0.01, 0.5)
    mp_row = torch.where(adaptive, mp_adapt, torch.full_like(h, mp))

    m = min(max(k, k_lehv, k_adapt), x.shape[-1])
    vals, idx = x.topk(m, dim=-1)
    rank = torch.arange(m, device=x.device)
    scaled = vals / temp.unsqueeze(-1)
    in_k = rank < k_row.unsqueeze(-1)
    q = scaled.masked_fill(~in_k, float("-inf")).softmax(-1)  # top-k, renormalised
    before = q.cumsum(-1) - q
    keep = in_k & (before < p_row.unsqueeze(-1)) & (q >= mp_row.unsqueeze(-1) * q[:, :1]) & (q > 0)
    keep[:, 0] = True
    keep = torch.where(lelv.unsqueeze(-1), rank == 0, keep)
    values = scaled
    if n > 1:
        best = _best_of_n_logits(q, keep, n)
        values = torch.where(adaptive.unsqueeze(-1), best, scaled)
    return scatter_kept(rows, idx, keep, values).reshape(logits.shape)


class EntropixLogitsProcessor(WarperProcessor):
    """entropix-style sampling as a transformers ``LogitsProcessor``; see :func:`entropix`.

    :meth:`diagnostics` adds ``regime`` (int64 per row, index into :data:`REGIMES`).
    """

    name = "entropix"

    def __init__(
        self,
        thresholds: EntropixThresholds | Mapping[str, float] | str,
        *,
        temperature: float = 0.666,
        top_k: int = 27,
        top_p: float = 0.9,
        min_p: float = 0.0,
        n_candidates: int = 5,
    ) -> None:
        super().__init__()
        self.thresholds = EntropixThresholds.from_value(thresholds)
        self.settings = {
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "min_p": min_p,
            "n_candidates": n_candidates,
        }
        entropix(torch.zeros(1, 2), self.thresholds, **self.settings)  # validate the arguments
        self.params = {**self.thresholds.to_dict(), **self.settings}

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        return entropix(logits, self.thresholds, **self.settings)

    def diagnostics(self) -> dict[str, torch.Tensor]:
        out = super().diagnostics()
        before = self._last[0] if self._last is not None else None
        h, v = entropy_and_varentropy(before)
        out["regime"] = entropix_regimes(h, v, self.thresholds)
        return out


def entropix_warper(
    thresholds: str | Mapping[str, float] | EntropixThresholds = "quantile",
    h_low: float | None = None,
    h_mid: float | None = None,
    h_high: float | None = None,
    v_low: float | None = None,
    v_high: float | None = None,
    temperature: float = 0.666,
    top_k: int = 27,
    top_p: float = 0.9,
    min_p: float = 0.0,
    n_candidates: int = 5,
) -> EntropixLogitsProcessor:
    """Registry factory: thresholds from ``h_low … v_high`` (nats), a mapping, or ``"fixed"``.

    ``thresholds="quantile"`` (the default) needs the five values fitted on the model's own
    warm-up traces — :func:`fit_entropix_thresholds`; the CLI does this automatically.
    """
    flat = {"h_low": h_low, "h_mid": h_mid, "h_high": h_high, "v_low": v_low, "v_high": v_high}
    given = {k: x for k, x in flat.items() if x is not None}
    if given:
        th: Any = given
    elif thresholds == "quantile":
        raise EntrolabError(
            "entropix thresholds are quantiles of the model's own entropy/varentropy: fit them "
            "with entrolab.decoding.fit_entropix_thresholds(entropy, varentropy) on warm-up "
            "traces and pass h_low, h_mid, h_high, v_low, v_high (nats), or pass "
            "thresholds='fixed' for entropix's Llama-3 values (the CLI fits them for you)"
        )
    else:
        th = thresholds
    return EntropixLogitsProcessor(
        th,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        n_candidates=n_candidates,
    )
