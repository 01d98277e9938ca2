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
    """Kept-set size, retained mass and entropy after, per row of ``before``/``after`` [R, V].

    ``before`` is the distribution the warper was given (e.g. logits / temperature), ``after``
    what it returned. Rows are independent; nothing is reduced across rows.
    """
    if before.shape != after.shape or before.dim() != 2:
        raise EntrolabError(
            f"before and after must both be [R, V] with the same shape, got "
            f"{tuple(before.shape)} and {tuple(after.shape)}"
        )
    kept_mask = torch.isfinite(after)
    kept = kept_mask.sum(-1)
    if bool((kept == 0).any()):
        raise EntrolabError("a warper removed every token of a row; it must keep at least one")
    probs = torch.softmax(before.float(), dim=-1)
    retained = (probs * kept_mask).sum(-1)
    return TruncationStatistics(kept, retained, token_entropy(after))
