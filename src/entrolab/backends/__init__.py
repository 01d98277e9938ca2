"""Backends turn prompts into Traces: ``hf`` (transformers, full logits) and ``mock`` (scripted logits)."""

from entrolab.backends.hf import HFBackend
from entrolab.backends.mock import MockBackend

__all__ = ["HFBackend", "MockBackend"]
