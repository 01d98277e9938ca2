"""Per-token signals from full-vocabulary logits.

Input ``logits`` has shape ``[..., V]`` (any leading dims, e.g. ``[B, T, V]``); every function
returns one value per row, shape ``[...]`` (scope: per token). Entropies are in nats.

Numerics: rows are processed in chunks of ``chunk_rows`` so peak extra memory stays about
``2 * chunk_rows * V`` floats (never a full ``[N, V]`` temporary). Computation is in float32
(float64 when the input is float64); bfloat16/float16 inputs are upcast chunk by chunk.

Non-finite logits: NaN and ``+inf`` always raise :class:`~entrolab.errors.EntrolabError`.
``-inf`` is allowed (processed logits mask tokens that way) as long as each row keeps at least
one finite logit; a row that is entirely ``-inf`` raises. Results carry no gradient, except
:func:`token_entropy`, which is differentiable when its input requires grad.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import torch

from entrolab.errors import EntrolabError

__all__ = [
    "TokenStatistics",
    "check_finite_logits",
    "entropy_and_varentropy",
    "max_prob",
    "self_certainty",
    "token_entropy",
    "token_nll",
    "token_rank",
    "token_statistics",
    "top_margin",
    "topk_confidence",
    "varentropy",
]

# Shifted logits below this are clamped: exp() is exactly 0 there in float32 and float64, so the
# result is unchanged, but 0 * (-inf) = NaN is avoided for -inf (masked) logits.
_NEG_CLAMP = -1.0e4


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fmt_row(lead: tuple[int, ...], flat_row: int) -> str:
    if len(lead) <= 1:
        return f"row {flat_row}"
    idx = torch.unravel_index(torch.tensor(flat_row), lead)
    return f"row ({', '.join(str(int(i)) for i in idx)})"


def _fmt_pos(lead: tuple[int, ...], flat_row: int, col: int) -> str:
    return f"{_fmt_row(lead, flat_row)}, col {col}" if lead else f"col {col}"


def _check_logits_shape(logits: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor):
        raise EntrolabError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise EntrolabError(
            f"{name} must be a floating-point tensor, got {logits.dtype}; convert with .float()"
        )
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise EntrolabError(
            f"{name} has shape {tuple(logits.shape)}; expected [..., V] with a non-empty "
            "vocabulary dimension V last"
        )


def check_finite_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """Raise :class:`EntrolabError` unless ``logits`` [..., V] defines a distribution per row.

    NaN and ``+inf`` are errors (the message gives their count and first position); ``-inf`` is
    allowed, but a row that is entirely ``-inf`` is an error. Cost: one ``amax`` pass over the
    logits (no ``[N, V]`` temporary) and one host sync; the detailed scan runs only on failure.
    """
    _check_logits_shape(logits, name)
    v = logits.shape[-1]
    row_max = logits.detach().amax(dim=-1).reshape(-1)
    bad_rows = torch.nonzero(~torch.isfinite(row_max)).flatten()
    if bad_rows.numel() == 0:
        return
    lead = tuple(logits.shape[:-1])
    flat = logits.detach().reshape(-1, v)
    n_bad, first, all_neg_inf, first_neg = 0, None, 0, None
    for start in range(0, bad_rows.numel(), 64):
        rows = bad_rows[start : start + 64]
        sub = flat[rows]
        bad = torch.isnan(sub) | (sub == math.inf)
        n_bad += int(bad.sum())
        if first is None and bool(bad.any()):
            r, c = (int(i) for i in torch.nonzero(bad)[0])
            first = (int(rows[r]), c)
        neg = (sub == -math.inf).all(dim=-1)
        all_neg_inf += int(neg.sum())
        if first_neg is None and bool(neg.any()):
            first_neg = int(rows[torch.nonzero(neg)[0, 0]])
    if first is not None:
        raise EntrolabError(
            f"{name} contain {n_bad} NaN/inf values (first at {_fmt_pos(lead, *first)}); "
            "check the model's dtype/overflow (e.g. float16 overflow: run in bfloat16/float32)"
        )
    raise EntrolabError(
        f"{name} have {all_neg_inf} row(s) that are entirely -inf (first: "
        f"{_fmt_row(lead, first_neg or 0)}); every token "
        "is masked, so there is no distribution. Keep at least one finite logit per row (check "
        "the logits processors / top-k / top-p / min-p settings)"
    )


def _rows(logits: torch.Tensor, name: str = "logits") -> torch.Tensor:
    _check_logits_shape(logits, name)
    return logits.detach().reshape(-1, logits.shape[-1])


def _check_chunk_rows(chunk_rows: int) -> None:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise EntrolabError(f"chunk_rows must be a positive int, got {chunk_rows!r}")


def _row_stats(
    x: torch.Tensor,
    chunk_rows: int,
    *,
    entropy: bool = True,
    var: bool = False,
    sum_shifted: bool = False,
) -> dict[str, torch.Tensor]:
    """Chunked core over rows of ``x`` [N, V]; returns [N] tensors in the compute dtype.

    Keys: ``logz`` (log-partition), ``logs`` (logz - row max, so max prob = exp(-logs)),
    optionally ``entropy``, ``varentropy`` and ``sum_shifted`` (sum over V of z - max; -inf if any
    logit is -inf). Rows with NaN/+inf or all -inf give NaN ``logz``; callers validate.
    """
    _check_chunk_rows(chunk_rows)
    n, v = x.shape
    cd = _compute_dtype(x.dtype)
    new = functools.partial(torch.empty, n, dtype=cd, device=x.device)
    row_max, sum_e, dot_eb = new(), new(), new()
    sq = new() if var else None
    shifted = new() if sum_shifted else None
    # On CPU, clamp only chunks that contain -inf (found as a NaN dot product: 0 * -inf); on
    # accelerators always clamp, to avoid a host sync per chunk.
    always_clamp = x.device.type != "cpu"
    r = min(chunk_rows, max(n, 1))
    buf_b = torch.empty(r, v, dtype=cd, device=x.device)
    buf_e = torch.empty(r, v, dtype=cd, device=x.device)
    for i in range(0, n, r):
        z = x[i : i + r]
        j = i + z.shape[0]
        b, e, m = buf_b[: j - i], buf_e[: j - i], row_max[i:j]
        if z.dtype == cd:
            torch.amax(z, dim=-1, out=m)
            torch.sub(z, m.unsqueeze(-1), out=b)
        else:  # low precision: upcast this chunk first
            b.copy_(z)
            torch.amax(b, dim=-1, out=m)
            b.sub_(m.unsqueeze(-1))
        if shifted is not None:
            torch.sum(b, dim=-1, out=shifted[i:j])
        if always_clamp:
            b.clamp_(min=_NEG_CLAMP)
        torch.exp(b, out=e)
        torch.sum(e, dim=-1, out=sum_e[i:j])
        if entropy or var:
            torch.linalg.vecdot(e, b, out=dot_eb[i:j])
            if not always_clamp and bool(torch.isnan(dot_eb[i:j]).any()):
                b.clamp_(min=_NEG_CLAMP)
                torch.linalg.vecdot(e, b, out=dot_eb[i:j])
            if sq is not None:  # Var_p[z] = Var_p[-log p], second pass within the chunk
                b.clamp_(min=_NEG_CLAMP)  # (b - c)² must stay finite where p = 0
                b.sub_((dot_eb[i:j] / sum_e[i:j]).unsqueeze(-1)).square_()
                torch.linalg.vecdot(e, b, out=sq[i:j])
    logs = sum_e.log()
    out = {"logz": row_max + logs, "logs": logs}
    if entropy:
        out["entropy"] = (logs - dot_eb / sum_e).clamp_(min=0.0)
    if sq is not None:
        out["varentropy"] = sq / sum_e
    if shifted is not None:
        out["sum_shifted"] = shifted
    return out


def _validate(logits: torch.Tensor, logz: torch.Tensor, name: str = "logits") -> None:
    if logz.numel() and not bool(torch.isfinite(logz).all()):
        check_finite_logits(logits, name)
        raise EntrolabError(f"{name} produced a non-finite normaliser; check for overflow")


def _entropy_autograd(logits: torch.Tensor) -> torch.Tensor:
    z = logits.to(_compute_dtype(logits.dtype))
    logz = torch.logsumexp(z, dim=-1)
    z_safe = torch.where(torch.isfinite(z), z, torch.zeros_like(z))
    return logz - (torch.softmax(z, dim=-1) * z_safe).sum(dim=-1)


def entropy_and_varentropy(
    logits: torch.Tensor, *, chunk_rows: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shannon entropy H (nats) and varentropy Σ p (−log p − H)² (nats²) from one pass.

    Args:
        logits: [..., V] raw or processed logits (``-inf`` allowed, see module doc).
        chunk_rows: rows processed at a time (bounds peak extra memory to ~2·chunk_rows·V floats).
    Returns:
        ``(entropy, varentropy)``, each [...] float32 (float64 for float64 input); per token.
    """
    x = _rows(logits)
    st = _row_stats(x, chunk_rows, var=True)
    _validate(logits, st["logz"])
    lead = logits.shape[:-1]
    return st["entropy"].reshape(lead), st["varentropy"].reshape(lead)


def token_entropy(logits: torch.Tensor, *, chunk_rows: int = 16) -> torch.Tensor:
    """Shannon entropy H = −Σ_i p_i log p_i of softmax(logits), in nats, per row.

    Args:
        logits: [..., V]; ``-inf`` entries are masked tokens (p = 0).
        chunk_rows: rows per chunk; results do not depend on it.
    Returns:
        [...] float32 (float64 for float64 input), in [0, log V]. Differentiable when ``logits``
        requires grad (then computed without chunking); otherwise detached.
    """
    if isinstance(logits, torch.Tensor) and logits.requires_grad and torch.is_grad_enabled():
        _check_logits_shape(logits, "logits")
        check_finite_logits(logits)
        return _entropy_autograd(logits)
    x = _rows(logits)
    st = _row_stats(x, chunk_rows)
    _validate(logits, st["logz"])
    return st["entropy"].reshape(logits.shape[:-1])


def varentropy(logits: torch.Tensor, *, chunk_rows: int = 16) -> torch.Tensor:
    """Varentropy Σ_i p_i (−log p_i − H)², the variance of the surprisal, in nats², per row.

    Shapes as :func:`token_entropy` ([..., V] → [...]); computed two-pass within each chunk.
    """
    return entropy_and_varentropy(logits, chunk_rows=chunk_rows)[1]


def self_certainty(logits: torch.Tensor, *, chunk_rows: int = 16) -> torch.Tensor:
    """Self-certainty KL(U ‖ p) = −log V − (1/V) Σ_i log p_i, in nats, per row.

    Kang et al. 2025, "Scalable Best-of-N Selection for LLMs via Self-Certainty". ≥ 0, and 0 iff
    p is uniform. [..., V] → [...]. A row with any ``-inf`` logit (p_i = 0) gives ``+inf``.
    """
    x = _rows(logits)
    st = _row_stats(x, chunk_rows, entropy=False, sum_shifted=True)
    _validate(logits, st["logz"])
    v = x.shape[-1]
    sc = st["logs"] - st["sum_shifted"] / v - math.log(v)
    return sc.clamp_(min=0.0).reshape(logits.shape[:-1])


def max_prob(logits: torch.Tensor, *, chunk_rows: int = 16) -> torch.Tensor:
    """Probability of the most likely token, max_i p_i ∈ (0, 1], per row; [..., V] → [...]."""
    x = _rows(logits)
    st = _row_stats(x, chunk_rows, entropy=False)
    _validate(logits, st["logz"])
    return torch.exp(-st["logs"]).reshape(logits.shape[:-1])


def top_margin(
    logits: torch.Tensor, space: Literal["prob", "logprob"] = "prob", *, chunk_rows: int = 16
) -> torch.Tensor:
    """Margin between the two most likely tokens, per row; [..., V] → [...], V ≥ 2.

    ``space="prob"``: p₁ − p₂ ∈ [0, 1]. ``space="logprob"``: log p₁ − log p₂ ≥ 0 in nats
    (``+inf`` when the runner-up is masked with ``-inf``).
    """
    if space not in ("prob", "logprob"):
        raise EntrolabError(f"space must be 'prob' or 'logprob', got {space!r}")
    x = _rows(logits)
    if x.shape[-1] < 2:
        raise EntrolabError("top_margin needs a vocabulary of at least 2 tokens")
    st = _row_stats(x, chunk_rows, entropy=False)
    _validate(logits, st["logz"])
    top2 = torch.topk(x, 2, dim=-1).values.to(st["logz"].dtype)
    if space == "logprob":
        out = top2[:, 0] - top2[:, 1]
    else:
        p = torch.exp(top2 - st["logz"].unsqueeze(-1))
        out = p[:, 0] - p[:, 1]
    return out.reshape(logits.shape[:-1])


def _check_ids(token_ids: torch.Tensor, logits: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(token_ids, torch.Tensor) or token_ids.is_floating_point():
        raise EntrolabError(f"{name} must be an integer tensor of token ids")
    if tuple(token_ids.shape) != tuple(logits.shape[:-1]):
        raise EntrolabError(
            f"{name} has shape {tuple(token_ids.shape)} but logits {tuple(logits.shape)} need "
            f"{tuple(logits.shape[:-1])} (one id per logits row)"
        )
    ids = token_ids.reshape(-1).long()
    v = logits.shape[-1]
    if ids.numel() and bool(((ids < 0) | (ids >= v)).any()):
        raise EntrolabError(f"{name} has ids outside [0, {v}); check the vocabulary size")
    return ids


def token_nll(
    logits: torch.Tensor, token_ids: torch.Tensor, *, chunk_rows: int = 16
) -> torch.Tensor:
    """Negative log-likelihood −log p(token_id) of the chosen token, in nats, per row.

    Args:
        logits: [..., V]. token_ids: [...] int64 ids in [0, V).
    Returns:
        [...] float32 (float64 for float64 input), ≥ 0 (``+inf`` for a ``-inf``-masked token).
    """
    x = _rows(logits)
    ids = _check_ids(token_ids, logits, "token_ids")
    st = _row_stats(x, chunk_rows, entropy=False)
    _validate(logits, st["logz"])
    chosen = x.gather(-1, ids.unsqueeze(-1)).squeeze(-1).to(st["logz"].dtype)
    return (st["logz"] - chosen).reshape(logits.shape[:-1])


def token_rank(
    logits: torch.Tensor, token_ids: torch.Tensor, *, chunk_rows: int = 16
) -> torch.Tensor:
    """0-based rank of the chosen token (0 = most likely), per row; [..., V], [...] → [...] int64.

    Ties: the rank is the number of logits strictly greater than the chosen one, so tied tokens
    share the best rank.
    """
    _check_chunk_rows(chunk_rows)
    x = _rows(logits)
    ids = _check_ids(token_ids, logits, "token_ids")
    check_finite_logits(logits)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], chunk_rows):
        z = x[i : i + chunk_rows]
        ref = z.gather(-1, ids[i : i + chunk_rows].unsqueeze(-1))
        out[i : i + z.shape[0]] = (z > ref).sum(dim=-1)
    return out.reshape(logits.shape[:-1])


def _check_topk_logprobs(topk_logprobs: torch.Tensor, name: str = "topk_logprobs") -> None:
    if not isinstance(topk_logprobs, torch.Tensor) or not topk_logprobs.is_floating_point():
        raise EntrolabError(f"{name} must be a floating-point tensor [..., K]")
    if topk_logprobs.dim() == 0:
        raise EntrolabError(f"{name} must have shape [..., K], got a scalar")
    bad = torch.isnan(topk_logprobs) | (topk_logprobs == math.inf)
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise EntrolabError(
            f"{name} contain {int(bad.sum())} NaN/+inf values (first at index {first}); "
            "log-probabilities must be finite or -inf"
        )


def topk_confidence(topk_logprobs: torch.Tensor) -> torch.Tensor:
    """DeepConf token confidence C = −(1/K) Σ_{j≤K} log p_j, in nats, per row.

    Fu et al. 2025, "Deep Think with Confidence". Args: ``topk_logprobs`` [..., K] (K ≥ 1) the
    log-probabilities of the K most likely tokens (order irrelevant). Returns [...] float32
    (float64 for float64 input); higher = peakier = more confident; ``+inf`` if any is ``-inf``.
    """
    _check_topk_logprobs(topk_logprobs)
    if topk_logprobs.shape[-1] == 0:
        raise EntrolabError("topk_confidence needs K ≥ 1 top-k logprobs per token, got K = 0")
    return -topk_logprobs.to(_compute_dtype(topk_logprobs.dtype)).mean(dim=-1)


class TokenStatistics(NamedTuple):
    """Everything one generation step captures (B rows = batch at this step).

    Attributes (float ones in float32, float64 for float64 logits):
        logprob: [B] log p of the chosen token (nats, ≤ 0).
        entropy: [B] Shannon entropy (nats).
        varentropy: [B] variance of −log p (nats²).
        self_certainty: [B] KL(U ‖ p) (nats; +inf if the row has -inf logits).
        rank: [B] int64 rank of the chosen token (0 = most likely; ties → strictly-greater count).
        topk_ids: [B, K] int64 the K most likely ids, most likely first.
        topk_logprobs: [B, K] their log-probabilities (nats).
    """

    logprob: torch.Tensor
    entropy: torch.Tensor
    varentropy: torch.Tensor
    self_certainty: torch.Tensor
    rank: torch.Tensor
    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor


def token_statistics(
    logits: torch.Tensor,
    chosen: torch.Tensor,
    k: int = 20,
    *,
    chunk_rows: int = 16,
    validate: bool = True,
) -> TokenStatistics:
    """All per-step statistics from one chunked pass over ``logits`` [B, V] (shared log-softmax).

    Args:
        logits: [B, V] this step's logits (raw or processed; ``-inf`` allowed).
        chosen: [B] int64 the sampled/forced token ids.
        k: number of top alternatives to keep (0 ≤ k ≤ V; k = 0 gives [B, 0] tensors).
        chunk_rows: rows per chunk (bounds peak extra memory).
        validate: check ids and finiteness (two host syncs). With ``False`` nothing syncs; bad
            rows then give NaN and out-of-range ids are undefined behaviour.
    Returns:
        :class:`TokenStatistics` (scope: per token).
    """
    _check_logits_shape(logits, "logits")
    if logits.dim() != 2:
        raise EntrolabError(f"token_statistics expects logits [B, V], got {tuple(logits.shape)}")
    v = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise EntrolabError(f"k must be a non-negative int, got {k!r}")
    if k > v:
        raise EntrolabError(f"k = {k} is larger than the vocabulary (V = {v}); lower k")
    x = logits.detach()
    if validate:
        ids = _check_ids(chosen, logits, "chosen")
    else:
        ids = chosen.reshape(-1).long()
    st = _row_stats(x, chunk_rows, var=True, sum_shifted=True)
    if validate:
        _validate(logits, st["logz"])
    logz = st["logz"]
    chosen_logit = x.gather(-1, ids.unsqueeze(-1))
    rank = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], chunk_rows):
        z = x[i : i + chunk_rows]
        rank[i : i + z.shape[0]] = (z > chosen_logit[i : i + chunk_rows]).sum(dim=-1)
    top_vals, top_ids = torch.topk(x, k, dim=-1)
    sc = (st["logs"] - st["sum_shifted"] / v - math.log(v)).clamp_(min=0.0)
    return TokenStatistics(
        logprob=chosen_logit.squeeze(-1).to(logz.dtype) - logz,
        entropy=st["entropy"],
        varentropy=st["varentropy"],
        self_certainty=sc,
        rank=rank,
        topk_ids=top_ids,
        topk_logprobs=top_vals.to(logz.dtype) - logz.unsqueeze(-1),
    )
