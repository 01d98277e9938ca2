"""What a warper did to one step's distribution: kept-set size, retained mass, entropy after."""

from __future__ import annotations

import torch

from entrolab.signals import truncation_statistics

__all__ = ["DIAGNOSTIC_KEYS", "warper_diagnostics"]

#: The keys of :func:`warper_diagnostics` (the backend stores per-trace means ``<key>_mean``).
DIAGNOSTIC_KEYS = ("kept", "retained_mass", "entropy_after")


def warper_diagnostics(before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row effect of a warper that mapped ``before`` to ``after``.

    Args:
        before: logits [..., V] given to the warper (``-inf`` = already removed).
        after: logits [..., V] it returned.
    Returns:
        ``kept``: int64 [...], number of finite logits in ``after`` (the kept set);
        ``retained_mass``: float32 [...], mass of the kept set under softmax(before), in [0, 1];
        ``entropy_after``: float32 [...], entropy of softmax(after) in nats (per token).
        float64 inputs give float64 values. A thin view of
        :func:`entrolab.signals.truncation_statistics`.
    """
    st = truncation_statistics(before, after)
    return {"kept": st.kept, "retained_mass": st.retained_mass, "entropy_after": st.entropy_after}
