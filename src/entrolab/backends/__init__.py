"""Backends turn prompts into Traces: ``hf`` (transformers, full logits), ``mock`` (scripted
logits), ``openai`` (any OpenAI-compatible server, top-k logprobs) and ``vllm`` (an offline vLLM
engine, top-k logprobs; ``vllm`` itself is imported only when an engine is started)."""

from entrolab.backends.hf import HFBackend
from entrolab.backends.mock import MockBackend
from entrolab.backends.openai_compat import OpenAIBackend

__all__ = ["HFBackend", "MockBackend", "OpenAIBackend", "VLLMBackend"]


def __getattr__(name: str):
    if name == "VLLMBackend":  # lazily: the module is light, but keep start-up lean
        from entrolab.backends.vllm import VLLMBackend

        return VLLMBackend
    raise AttributeError(f"module 'entrolab.backends' has no attribute {name!r}")
