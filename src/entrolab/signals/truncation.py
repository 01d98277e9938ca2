"""What a truncating sampler kept: kept-set size, retained mass and the entropy left after it.

Pure functions on logits [R, V] before and after a warper (removed tokens are -inf in ``after``).
Used by the generation loop to report per-trace sampler diagnostics and by the decoding package's
``diagnostics()``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from entrolab.errors import EntrolabError
from entrolab.signals.token import token_entropy


class TruncationStatistics(NamedTuple):
    """Per-row diagnostics of a truncation, each [R].

    Attributes:
        kept: number of tokens with a finite logit after the warper (int64).
        retained_mass: probability mass of the kept tokens under softmax(before) (float32).
        entropy_after: entropy of softmax(after) in nats (float32).
    """

    kept: torch.Tensor
    retained_mass: torch.Tensor
    entropy_after: torch.Tensor


def truncation_statistics(before: torch.Tensor, after: torch.Tensor) -> TruncationStatistics:
    """Kept-set size, retained mass and entropy after, per row of ``before``/``after`` [..., V].

    ``before`` is the distribution the warper was given (e.g. logits / temperature; ``-inf`` =
    already removed), ``after`` what it returned. Rows are independent; nothing is reduced
    across rows. Values are float32 (float64 for float64 input); ``kept`` is int64.
    """
    if before.shape != after.shape or before.dim() < 1:
        raise EntrolabError(
            f"before {tuple(before.shape)} and after {tuple(after.shape)} must have the same "
            "[..., V] shape: pass the logits a warper received and the logits it returned"
        )
    kept_mask = torch.isfinite(after)
    kept = kept_mask.sum(-1)
    if bool((kept == 0).any()):
        raise EntrolabError("a warper removed every token of a row; it must keep at least one")
    dtype = torch.float64 if before.dtype == torch.float64 else torch.float32
    probs = torch.softmax(before.to(dtype), dim=-1)
    retained = (probs * kept_mask).sum(-1).clamp(max=1.0)
    return TruncationStatistics(kept, retained, token_entropy(after.to(dtype)))
