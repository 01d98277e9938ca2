"""Backends turn prompts into Traces: ``hf`` (transformers, full logits), ``mock`` (scripted
logits) and ``openai`` (any OpenAI-compatible server, top-k logprobs)."""

from entrolab.backends.hf import HFBackend
from entrolab.backends.mock import MockBackend
from entrolab.backends.openai_compat import OpenAIBackend

__all__ = ["HFBackend", "MockBackend", "OpenAIBackend"]
