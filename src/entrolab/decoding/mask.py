"""``mask_ids``: a warper that removes a contiguous range of token ids from sampling (logit −inf),
e.g. vocabulary rows reserved for an auxiliary head (ZIP-RC's joint reward × length logits,
:mod:`entrolab.inference.zip_rc_reserved`) that must never be emitted."""

from __future__ import annotations

import torch

from entrolab.decoding.base import WarperProcessor, check_int

__all__ = ["MaskIdsWarper", "mask_ids", "mask_ids_warper"]


def mask_ids(logits: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """A copy of logits [..., V] with ids start … start + count − 1 set to −inf (input kept)."""
    out = logits.clone()
    out[..., start : start + count] = float("-inf")
    return out


class MaskIdsWarper(WarperProcessor):
    """Mask ids ``start … start + count − 1`` (per row, every step)."""

    name = "mask_ids"

    def __init__(self, start: int = 0, count: int = 1) -> None:
        super().__init__()
        self.start = check_int("start", start, low=0, owner="mask_ids")
        self.count = check_int("count", count, low=1, owner="mask_ids")
        self.params = {"start": self.start, "count": self.count}

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        return mask_ids(logits, self.start, self.count)


def mask_ids_warper(start: int = 0, count: int = 1) -> MaskIdsWarper:
    """The ``mask_ids`` sampler: the plain distribution without ids start … start + count − 1."""
    return MaskIdsWarper(start, count)
