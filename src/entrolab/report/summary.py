"""Per-trace summary numbers shown by every report, and the entropy colour scale they share.

:func:`summarize` reduces one :class:`~entrolab.types.Trace` to a :class:`TraceSummary` using the
pure functions of :mod:`entrolab.signals` (no maths is re-implemented here). All entropies are in
nats; the reduction scope of every number is the one trace (per sequence).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch

from entrolab.errors import EntrolabError
from entrolab.signals import (
    forking_token_mask,
    group_confidence,
    masked_mean,
    topk_confidence,
)
from entrolab.signals.windows import DEEPCONF_DEFAULT_WINDOW
from entrolab.types import Trace

#: Entropy (nats) at which the colour scales of the reports saturate (0 = green … >= this = red).
ENTROPY_SCALE_MAX = 3.0


class ForkToken(NamedTuple):
    """A high-entropy "forking" token: its 0-based position, its text piece and its entropy (nats)."""

    position: int
    token: str
    entropy: float


@dataclass(frozen=True)
class TraceSummary:
    """Sequence-level numbers for one trace (all per sequence; NaN where undefined).

    Attributes:
        n_tokens: number of completion tokens T.
        mean_entropy: mean token entropy (nats).
        mean_logprob: mean log-probability of the chosen tokens (nats, <= 0).
        perplexity: ``exp(-mean_logprob)``.
        mean_confidence: mean DeepConf token confidence ``-mean_k log p_k`` over the stored top-k
            (NaN when the trace stores no top-k).
        lowest_window_confidence: DeepConf "lowest group" confidence: the minimum over sliding
            windows of ``window`` tokens of the mean token confidence (traces shorter than the
            window use their mean). Tokens whose top-k holds a ``-inf`` logprob (infinite
            confidence) are skipped by both confidence numbers; NaN entropies or logprobs are
            skipped by the entropy/logprob numbers and never flagged as forks.
        window: the window length used (tokens).
        rho: fraction of tokens flagged as forking tokens.
        k: number of top-k logprobs the confidences were computed from.
        forks: the highest-entropy forking tokens, entropy descending, at most ``top_forks``.
    """

    n_tokens: int
    mean_entropy: float
    mean_logprob: float
    perplexity: float
    mean_confidence: float
    lowest_window_confidence: float
    window: int
    rho: float
    k: int
    forks: tuple[ForkToken, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (forks as lists of ``[position, token, entropy]``)."""
        out = asdict(self)
        out["forks"] = [list(f) for f in self.forks]
        return out


#: Text of token ids: a function from a list of ids to their strings, or a mapping id → string.
IdToText = Callable[[list[int]], list[str]] | Mapping[int, str]


def token_texts(traces: Sequence[Trace], id_to_text: IdToText | None) -> dict[int, str]:
    """Text for every token id the traces mention (for top-k alternatives).

    ``id_to_text`` (a function from a list of ids to their strings, called once with the sorted
    unique top-k ids, or a mapping) wins; ids it does not cover use the traces' own chosen token
    pieces. Ids in neither are absent (renderers show them as ``#<id>``).
    """
    texts: dict[int, str] = {}
    for t in traces:
        texts.update(zip(t.token_ids.tolist(), t.tokens, strict=True))
    if id_to_text is None:
        return texts
    ids = sorted({i for t in traces for i in t.topk_ids.reshape(-1).tolist()})
    if isinstance(id_to_text, Mapping):
        texts.update((i, id_to_text[i]) for i in ids if i in id_to_text)
    elif ids:
        decoded = list(id_to_text(ids))
        if len(decoded) != len(ids):
            raise EntrolabError(f"id_to_text returned {len(decoded)} strings for {len(ids)} ids")
        texts.update(zip(ids, decoded, strict=True))
    return texts


def _float(x: torch.Tensor) -> float:
    return float(x.reshape(-1)[0].item())


def summarize(
    trace: Trace, *, window: int = DEEPCONF_DEFAULT_WINDOW, rho: float = 0.2, top_forks: int = 5
) -> TraceSummary:
    """Summarise one trace.

    Args:
        trace: the completion; its per-token fields have shape [T], top-k fields [T, K].
        window: DeepConf group-confidence window, in tokens (>= 1); default
            :data:`~entrolab.signals.windows.DEEPCONF_DEFAULT_WINDOW` (8, the one rule of
            :func:`~entrolab.signals.windows.deepconf_window` for 64-token replies).
        rho: fraction of the trace's tokens flagged as forking tokens (top-ρ by entropy, scope
            per sequence), in (0, 1].
        top_forks: how many forking tokens to keep (highest entropy first; >= 0).

    Returns:
        A :class:`TraceSummary`; an empty trace gives NaN numbers and no forks.
    """
    if window < 1:
        raise EntrolabError(f"window must be >= 1 token, got {window}")
    if not 0.0 < rho <= 1.0:
        raise EntrolabError(f"rho must be in (0, 1], got {rho}")
    if top_forks < 0:
        raise EntrolabError(f"top_forks must be >= 0, got {top_forks}")
    n, k = len(trace), trace.k
    nan = math.nan
    if n == 0:
        return TraceSummary(0, nan, nan, nan, nan, nan, window, rho, k, ())

    # NaN statistics (e.g. from a damaged JSON file) are left out rather than poisoning the page.
    entropy = trace.entropy.reshape(1, n)
    h_mask = torch.isfinite(entropy)
    logprob = trace.logprob.reshape(1, n)
    mean_entropy = _float(masked_mean(entropy, h_mask, empty=nan))
    mean_logprob = _float(masked_mean(logprob, ~torch.isnan(logprob), empty=nan))

    mean_conf = lowest = nan
    if k > 0:
        # A -inf top-k logprob (a token cut by top-p/top-k in processed logits) gives +inf
        # confidence; such tokens (and NaN rows) are skipped by the window means.
        topk = trace.topk_logprobs
        bad_row = torch.isnan(topk).any(dim=-1)
        token_conf = topk_confidence(torch.where(bad_row[:, None], 0.0, topk)).reshape(1, n)
        c_mask = torch.isfinite(token_conf) & ~bad_row.reshape(1, n)
        if bool(c_mask.any()):
            mean_conf = _float(group_confidence(token_conf, c_mask, window=window, mode="mean"))
            lowest = _float(group_confidence(token_conf, c_mask, window=window, mode="lowest"))

    fork_mask = forking_token_mask(entropy, h_mask, rho=rho, scope="sequence").reshape(n)
    positions = torch.nonzero(fork_mask).reshape(-1).tolist()
    values = trace.entropy.tolist()
    positions.sort(key=lambda i: (-values[i], i))
    forks = tuple(ForkToken(i, trace.tokens[i], values[i]) for i in positions[:top_forks])

    return TraceSummary(
        n_tokens=n,
        mean_entropy=mean_entropy,
        mean_logprob=mean_logprob,
        perplexity=math.inf if mean_logprob < -700 else math.exp(-mean_logprob),
        mean_confidence=mean_conf,
        lowest_window_confidence=lowest,
        window=window,
        rho=rho,
        k=k,
        forks=forks,
    )


# ---- colour scale shared by the terminal and HTML renderers ----------------------------------

Stops = tuple[tuple[float, tuple[int, int, int]], ...]


def scale_color(entropy: float, stops: Stops) -> tuple[int, int, int]:
    """Colour for ``entropy`` (nats), linearly interpolated between ``stops``.

    ``stops`` are ``(fraction of ENTROPY_SCALE_MAX, (r, g, b))`` in ascending order; entropies
    beyond the ends clamp to the end colours; NaN maps to mid-grey.
    """
    if math.isnan(entropy):
        return (128, 128, 128)
    x = min(max(entropy / ENTROPY_SCALE_MAX, 0.0), 1.0)
    for (x0, c0), (x1, c1) in itertools.pairwise(stops):
        if x <= x1:
            a = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            return (
                round(c0[0] + a * (c1[0] - c0[0])),
                round(c0[1] + a * (c1[1] - c0[1])),
                round(c0[2] + a * (c1[2] - c0[2])),
            )
    return stops[-1][1]


def format_probability(p: float) -> str:
    """A chosen-token or alternative probability for display: ``25.0%``; tiny values ``3.1e-05``."""
    if math.isnan(p):
        return "n/a"
    if p >= 0.001 or p == 0.0:
        return f"{p * 100:.1f}%"
    return f"{p:.1e}"


#: Invisible characters that could reorder or hide text (bidi controls, line/paragraph separators).
_SHOW_AS_ESCAPE = frozenset(
    "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
)


def visible_token(piece: str, *, keep_layout: bool = False) -> str:
    """``piece`` made visible and harmless for a terminal or page.

    A newline shows as ``↵`` and a tab as ``⇥`` (each followed by the real character when
    ``keep_layout``); other control characters (ESC included, so no terminal escape sequence
    gets through), bidi controls and U+2028/U+2029 as ``\\xNN`` / ``\\uNNNN`` escapes; the
    empty piece as ``∅``. Spaces and all other characters are kept.
    """
    if piece == "":
        return "∅"
    out = []
    for ch in piece:
        code = ord(ch)
        if ch == "\n":
            out.append("↵\n" if keep_layout else "↵")
        elif ch == "\t":
            out.append("⇥\t" if keep_layout else "⇥")
        elif code < 32 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")
        elif ch in _SHOW_AS_ESCAPE:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
