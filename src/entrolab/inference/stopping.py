"""Online early stopping by running window confidence (DeepConf online, Fu et al. 2025,
arXiv:2508.15260).

A trace is stopped right after token t when the window ending at t is *full* (t + 1 ≥ ``window``
tokens generated) and the mean DeepConf token confidence over it,
C_G = (1/w) Σ_{i=t−w+1}^{t} C_i with C_i = −(1/k) Σ_{j≤k} log P_i(j) (nats, k = 20, from the raw
logits of step i), is strictly below a threshold s. As in the official vLLM processor, nothing
is checked before the window is full. The threshold is fitted on warm-up traces
(:func:`fit_threshold`): s = a percentile of their lowest-window confidences (DeepConf-low: the
90th, keeps the top 10%; DeepConf-high: the 10th, keeps 90%).

The same rule in four forms:

* :func:`first_stop_index` – pure replay on stored confidences [N, T] (where would it stop?);
* :class:`WindowStopRule` – the vectorised per-row state machine behind the two hooks below;
* :class:`ConfidenceStopHook` – a ``step_hook`` for :meth:`entrolab.backends.HFBackend.generate`
  (stopped rows leave the batch and cost no more compute);
* :class:`DeepConfStoppingCriteria` – a transformers ``StoppingCriteria`` for ``model.generate``.

Differences from the official processor: it *replaces* the token at the triggering position with
EOS; here the sampled token is kept and the trace ends after it (both traces have the same
number of generated tokens). Token confidences are rounded to multiples of 2⁻²⁴ nats
(:data:`~entrolab.inference.voting.CONF_QUANTUM`; DeepConf rounds to 10⁻³), so window sums are
exact and all four forms, and the trace scores the threshold is fitted on, agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from entrolab.errors import EntrolabError
from entrolab.inference.voting import token_confidence
from entrolab.signals import TokenStatistics

__all__ = [
    "ConfidenceStopHook",
    "DeepConfStoppingCriteria",
    "WindowStopRule",
    "first_stop_index",
    "fit_threshold",
]

#: DeepConf-low keeps the top 10% of warm-up traces, DeepConf-high the top 90%.
VARIANT_KEEP = {"low": 0.1, "high": 0.9}


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise EntrolabError(f"window must be a positive int (tokens), got {window!r}")
    return window


def _check_threshold(threshold: float) -> float:
    try:
        s = float(threshold)
    except (TypeError, ValueError):
        raise EntrolabError(f"threshold must be a number (nats), got {threshold!r}") from None
    if s != s:
        raise EntrolabError("threshold is NaN; fit it on warm-up traces with fit_threshold")
    return s


def fit_threshold(
    lowest_confs: Sequence[float] | torch.Tensor,
    variant: Literal["low", "high"] = "high",
    *,
    percentile: float | None = None,
) -> float:
    """DeepConf's online threshold from warm-up traces' lowest-window confidences (nats).

    Args:
        lowest_confs: one lowest-group confidence per warm-up trace (see
            :func:`entrolab.inference.voting.trace_scores` with ``score="lowest_window"``).
        variant: ``"low"`` → 90th percentile (keeps ~10% of traces, aggressive);
            ``"high"`` → 10th percentile (keeps ~90%; what the released ``main`` code does).
        percentile: explicit percentile in [0, 100] instead of the variant's.
    Returns:
        s, the linear-interpolation percentile (``np.percentile`` default) of ``lowest_confs``.
    """
    from entrolab.inference.voting import percentile as _pct

    values = lowest_confs.tolist() if isinstance(lowest_confs, torch.Tensor) else lowest_confs
    if len(values) == 0:
        raise EntrolabError("no warm-up confidences to fit a threshold on; run >= 1 warm-up trace")
    if percentile is None:
        if variant not in VARIANT_KEEP:
            raise EntrolabError(f"variant must be 'low' or 'high', got {variant!r}")
        percentile = 100.0 * (1.0 - VARIANT_KEEP[variant])
    return _pct(list(values), float(percentile))


def first_stop_index(
    token_conf: torch.Tensor, mask: torch.Tensor | None, threshold: float, window: int
) -> torch.Tensor:
    """Where the online rule would stop each trace: replay on stored confidences.

    Args:
        token_conf: [N, T] (or [T]) DeepConf token confidences (nats), right-padded, as
            :func:`~entrolab.inference.voting.token_confidences` returns them.
        mask: same shape, True = real token (None: all real).
        threshold: s (nats); stop when a full window's mean is < s.
        window: w, tokens per window.
    Returns:
        int64 [N] (or a scalar for [T] input): the 0-based index t of the token after which the
        trace stops (it keeps t + 1 tokens), or −1 if no full window falls below s.
    """
    w, s = _check_window(window), _check_threshold(threshold)
    one = token_conf.dim() == 1
    conf = token_conf.reshape(1, -1) if one else token_conf
    if conf.dim() != 2:
        raise EntrolabError(f"token_conf must be [T] or [N, T], got {tuple(token_conf.shape)}")
    m = torch.ones_like(conf, dtype=torch.bool) if mask is None else mask.reshape(conf.shape)
    conf = torch.where(m, conf.double(), torch.zeros((), dtype=torch.float64))
    n, t = conf.shape
    out = torch.full((n,), -1, dtype=torch.int64)
    if t >= w:
        means = conf.unfold(-1, w, 1).sum(-1) / w  # [N, T − w + 1], window ending at s + w − 1
        lengths = m.sum(-1)
        ends = torch.arange(w - 1, t)
        hit = (means < s) & (ends.unsqueeze(0) < lengths.unsqueeze(1))
        first = torch.where(hit, ends, torch.full_like(ends, t)).amin(-1)
        out = torch.where(first < t, first, out)
    return out[0] if one else out


class WindowStopRule:
    """Per-row running-window state: feed one confidence per active row per step.

    Rows are identified by integer ids (any non-negative ints; storage grows on demand). Each row
    keeps its last ``window`` confidences in order and its token count; :meth:`update` returns
    which rows must stop now. Vectorised over rows (no Python loop over rows).
    """

    def __init__(self, threshold: float, window: int) -> None:
        self.threshold = _check_threshold(threshold)
        self.window = _check_window(window)
        self._buf = torch.zeros(0, self.window, dtype=torch.float64)
        self._count = torch.zeros(0, dtype=torch.int64)

    def _grow(self, n: int) -> None:
        if n > self._count.numel():
            extra = n - self._count.numel()
            self._buf = torch.cat([self._buf, torch.zeros(extra, self.window, dtype=torch.float64)])
            self._count = torch.cat([self._count, torch.zeros(extra, dtype=torch.int64)])

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Forget every row (``rows=None``) or the given rows."""
        if rows is None:
            self._buf.zero_()
            self._count.zero_()
            return
        rows = rows.long().cpu()
        self._grow(int(rows.max()) + 1 if rows.numel() else 0)
        self._buf[rows] = 0.0
        self._count[rows] = 0

    def update(
        self, rows: torch.Tensor, conf: torch.Tensor, threshold: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Append ``conf`` [R] (nats) to rows ``rows`` [R]; returns bool [R], True = stop now.

        ``threshold`` [R] overrides the rule's threshold per row (e.g. one per prompt)."""
        rows, conf = rows.long().cpu().reshape(-1), conf.detach().double().cpu().reshape(-1)
        if rows.numel() != conf.numel():
            raise EntrolabError(f"got {rows.numel()} rows but {conf.numel()} confidences")
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.bool)
        if not bool(torch.isfinite(conf).all()):
            raise EntrolabError(
                "a token confidence is NaN/inf (a top-k logprob is -inf?); compute it from raw "
                "logits, where every top-k logprob is finite"
            )
        self._grow(int(rows.max()) + 1)
        buf = torch.cat([self._buf[rows, 1:], conf.unsqueeze(1)], dim=1)
        self._buf[rows] = buf
        self._count[rows] += 1
        full = self._count[rows] >= self.window
        s = self.threshold if threshold is None else threshold.double().cpu().reshape(-1)
        return full & (buf.sum(-1) / self.window < s)


class ConfidenceStopHook:
    """``step_hook`` for :meth:`HFBackend.generate <entrolab.backends.HFBackend.generate>`.

    Called every decode step as ``hook(rows [R], step, stats)`` with the call-global ids of the
    rows still active and the statistics of the token each just chose; returns bool [R] (True =
    stop after this token). State is per row and reset when a row is at step 0, so one hook can
    serve several ``generate`` calls. ``stopped`` maps each row id the rule stopped to the
    0-based index of its last token (a row that emitted EOS at that very step is listed too;
    the trace's ``finish_reason`` tells which came first).

    Args:
        threshold: s in nats (see :func:`fit_threshold`), or one threshold per prompt of the
            ``generate`` call (row r belongs to prompt r // ``num_samples``).
        window: tokens per window.
        k: top-k logprobs per confidence (needs ``GenerationConfig.topk_logprobs >= k``).
        num_samples: samples per prompt in the call (only used with per-prompt thresholds).
    """

    def __init__(
        self,
        threshold: float | Sequence[float],
        window: int = 2048,
        k: int = 20,
        *,
        num_samples: int = 1,
    ) -> None:
        per_prompt = isinstance(threshold, (Sequence, torch.Tensor))
        values = [_check_threshold(x) for x in threshold] if per_prompt else []  # type: ignore[union-attr]
        if per_prompt and not values:
            raise EntrolabError("threshold is an empty list; give one threshold per prompt")
        self.rule = WindowStopRule(0.0 if per_prompt else threshold, window)  # type: ignore[arg-type]
        self._per_prompt = torch.tensor(values, dtype=torch.float64) if per_prompt else None
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise EntrolabError(f"k must be a positive int, got {k!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise EntrolabError(f"num_samples must be a positive int, got {num_samples!r}")
        self.k, self.num_samples = k, num_samples
        self.stopped: dict[int, int] = {}

    def __call__(self, rows: torch.Tensor, step: int, stats: TokenStatistics) -> torch.Tensor:
        lp = stats.topk_logprobs
        rows = rows.long().cpu()
        if step == 0:
            self.rule.reset(rows)
            for r in rows.tolist():
                self.stopped.pop(r, None)
        threshold = None
        if self._per_prompt is not None:
            prompt = rows // self.num_samples
            if int(prompt.max()) >= self._per_prompt.numel():
                raise EntrolabError(
                    f"row {int(rows.max())} belongs to prompt {int(prompt.max())} but only "
                    f"{self._per_prompt.numel()} thresholds were given (num_samples="
                    f"{self.num_samples}); give one threshold per prompt"
                )
            threshold = self._per_prompt[prompt]
        stop = self.rule.update(rows, token_confidence(lp, self.k), threshold)
        for r in rows[stop].tolist():
            self.stopped[r] = step
        return stop


class _ConfidenceRecorder:
    """LogitsProcessor side of :class:`DeepConfStoppingCriteria`: records each step's token
    confidences from the logits it sees and returns them unchanged."""

    def __init__(self, owner: DeepConfStoppingCriteria) -> None:
        self.owner = owner

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.owner._pending = self.owner.confidence(scores)
        return scores


class DeepConfStoppingCriteria:
    """A transformers ``StoppingCriteria`` ending each row on a low window confidence.

    Usage (the confidence must see the step's logits, which transformers does not pass to
    stopping criteria by default)::

        crit = DeepConfStoppingCriteria(threshold, window=16)
        model.generate(**inputs, logits_processor=[crit.processor], stopping_criteria=[crit])

    ``crit.processor`` records C = −mean top-k logprob of the logits it is given (custom
    processors run after transformers' built-in ones, e.g. repetition penalty or the EOS mask of
    ``min_new_tokens``, and before temperature/top-k/top-p, so these are the near-raw logits). Without it, the criteria falls
    back to ``scores[-1]`` (with ``output_scores=True, return_dict_in_generate=True``), which are
    the *processed* scores. Returns bool [B] per step (True = this row is done); a stopped row
    keeps its last token, and transformers pads it afterwards. State is reset automatically
    when a new ``generate`` call starts (detected from ``input_ids``) or with :meth:`reset`.
    ``stopped`` maps each stopped row to the 0-based index of its last generated token (a row
    that had already ended with EOS is padded by transformers and may still be listed when its
    padded continuation falls below the threshold; its output is unaffected).
    """

    def __init__(self, threshold: float, window: int = 2048, k: int = 20) -> None:
        self.rule = WindowStopRule(threshold, window)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise EntrolabError(f"k must be a positive int, got {k!r}")
        self.k = k
        self.processor = _ConfidenceRecorder(self)
        self.stopped: dict[int, int] = {}
        self._pending: torch.Tensor | None = None
        self._last_ids: torch.Tensor | None = None
        self._step = 0
        self._done: torch.Tensor | None = None

    def confidence(self, logits: torch.Tensor) -> torch.Tensor:
        """DeepConf token confidence [B] (nats) of logits [B, V]."""
        if logits.shape[-1] < self.k:
            raise EntrolabError(f"k={self.k} exceeds the vocabulary size {logits.shape[-1]}")
        logp = torch.log_softmax(logits.detach().float(), dim=-1)
        return token_confidence(torch.topk(logp, self.k, dim=-1).values, self.k)

    def reset(self) -> None:
        self.rule.reset()
        self.stopped, self._pending, self._last_ids, self._step, self._done = (
            {},
            None,
            None,
            0,
            None,
        )

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        ids = input_ids.detach().cpu()
        prev = self._last_ids
        same_call = (
            prev is not None
            and ids.shape[0] == prev.shape[0]
            and ids.shape[1] == prev.shape[1] + 1
            and torch.equal(ids[:, :-1], prev)
        )
        if not same_call:
            self.rule.reset()
            self.stopped, self._step = {}, 0
            self._done = torch.zeros(ids.shape[0], dtype=torch.bool)
        self._last_ids = ids
        if self._pending is not None:
            conf = self._pending
        elif isinstance(scores, (tuple, list)) and len(scores) > 0:
            conf = self.confidence(scores[-1])
        else:
            raise EntrolabError(
                "DeepConfStoppingCriteria did not see this step's logits: pass "
                "logits_processor=[criteria.processor] to generate (or output_scores=True with "
                "return_dict_in_generate=True)"
            )
        self._pending = None
        rows = torch.arange(ids.shape[0])
        stop = self.rule.update(rows, conf) & ~self._done  # type: ignore[operator]
        for r in rows[stop].tolist():
            self.stopped[r] = self._step
        self._done = self._done | stop  # type: ignore[operator]
        self._step += 1
        return stop.to(input_ids.device)
