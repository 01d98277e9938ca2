"""The Backend protocol: what every backend offers and what callers may rely on.

A backend turns prompts into :class:`~entrolab.types.Trace` objects (``generate``) and scores
given completions teacher-forced (``score``). Everything above ``backends`` — estimators,
strategies, exits, routing, RL rollouts, the server — talks to a backend only through this
protocol. What differs between backends is declared in :class:`Capabilities`; code that needs
more than the common core (hidden states, the torch module, per-step hooks, exact full-vocabulary
statistics) asks with :func:`require` and gets a clear error naming the backend that lacks it.

Backends:

============== ============ ======== ====== ========= ===========================================
backend        statistics   hidden   hooks  branching  where it runs
============== ============ ======== ====== ========= ===========================================
``hf``         full vocab   yes      yes    yes        in process (transformers), CPU or one GPU
``mock``       full vocab   no       yes    no         scripted logits, for unit tests
``vllm``       top-k only   no       no     no         in process (vLLM engine; own venv)
``openai``     top-k only   no       no     no         any OpenAI-compatible HTTP server
============== ============ ======== ====== ========= ===========================================

The common contract (checked by ``tests/test_backend_conformance.py`` for every backend):

- ``generate(prompts, config)`` returns ``len(prompts) * config.num_samples`` traces ordered by
  prompt, then sample, with ``prompt_index``/``sample_index`` set; each trace's ``token_ids``
  include a final EOS if one was emitted; ``finish_reason`` is ``eos`` | ``stop`` | ``length``
  (| ``stopped`` when a step hook ended it); ``text`` is cut before a stop string;
  ``provenance.vocab`` is ``"full"`` or ``"topk"`` as the backend declares; the same
  ``config.seed`` gives the same samples.
- A prompt is a string (chat-formatted when ``config.chat_template``) or a list of token ids
  used as they are (no template, no special tokens added) where ``token_prompts`` is declared.
- ``score(prompts, completions)`` returns one trace per pair with ``finish_reason="scored"``.
- Bad input raises :class:`~entrolab.errors.EntrolabError` saying how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from entrolab.errors import EntrolabError

if TYPE_CHECKING:
    from entrolab.config import GenerationConfig
    from entrolab.types import TraceBatch

#: A prompt: text (chat-formatted per the generation config), token ids used verbatim, or (where
#: ``message_prompts`` is declared) a chat: a list of ``{"role", "content"}`` messages.
Prompt = str | Sequence[int] | Sequence[Mapping[str, str]]
#: on_progress(rows_done, rows_total, tokens_generated)
ProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the common core (generate, score, tokenize).

    Attributes:
        full_logits: per-token statistics come from the full vocabulary distribution (exact
            entropy, varentropy, self-certainty, rank). False: only the top-k log-probabilities
            are known (``provenance.vocab == "topk"``), entropies are bounds or renormalised.
        max_topk: the most alternatives per token the backend returns (``topk_logprobs``).
        hidden_states: ``hidden_states(...)`` and ``watch_layer(...)`` give a decoder block's
            hidden states (learned exits, probes, routing).
        step_hooks: ``generate(step_hook=...)`` runs a per-step stopping rule inside decoding.
        kv_branching: continuations can share a prefix's KV cache (tree rollouts).
        torch_module: ``torch_model()`` exposes the in-process torch module (training, steering,
            forward hooks).
        token_prompts: prompts may be given as token-id lists.
        scoring: ``score(...)`` gives teacher-forced statistics of given completions.
        seeded: the same seed reproduces the same samples.
        continuous_batching: ``engine()`` gives a step-wise engine whose requests join a
            running decode between steps (``entrolab serve --batching continuous``).
        message_prompts: a prompt may be a chat (a list of ``{"role", "content"}`` messages),
            rendered with the model's chat template (multi-turn conversations).
    """

    full_logits: bool
    max_topk: int
    hidden_states: bool = False
    step_hooks: bool = False
    kv_branching: bool = False
    torch_module: bool = False
    token_prompts: bool = True
    scoring: bool = True
    seeded: bool = True
    continuous_batching: bool = False
    message_prompts: bool = False

    def names(self) -> list[str]:
        """The boolean capabilities this backend has, by name."""
        return [f.name for f in fields(self) if f.type in (bool, "bool") and getattr(self, f.name)]


_WHAT = {
    "full_logits": "full-vocabulary logits",
    "hidden_states": "hidden states of the model's layers",
    "step_hooks": "per-step hooks inside decoding",
    "kv_branching": "KV-cache prefix branching",
    "torch_module": "the in-process torch model",
    "token_prompts": "token-id prompts",
    "scoring": "teacher-forced scoring",
    "seeded": "seeded, reproducible sampling",
    "continuous_batching": "continuous batching (rows joining a running decode)",
    "message_prompts": "chat message-list prompts (multi-turn conversations)",
}


@runtime_checkable
class Backend(Protocol):
    """What every backend offers; see the module docstring for the contract."""

    name: str
    capabilities: Capabilities
    vocab_size: int

    def generate(
        self,
        prompts: Sequence[Prompt] | str,
        config: GenerationConfig | None = None,
        *,
        seeds: Sequence[int] | None = None,
        on_progress: ProgressFn | None = None,
        step_hook: Any = None,
        sample_offset: int = 0,
    ) -> TraceBatch:
        """``config.num_samples`` completions per prompt, ordered by prompt then sample."""
        ...

    def score(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str | Sequence[int]],
        *,
        k: int = 20,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> TraceBatch:
        """Teacher-forced statistics of the given completions (``finish_reason="scored"``)."""
        ...

    def prompt_ids(
        self, prompt: str, *, chat_template: bool = True, system_prompt: str | None = None
    ) -> list[int]:
        """Token ids of ``prompt`` as the model sees it (chat template and generation prompt)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a continuation (no special tokens, no template)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens removed)."""
        ...

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """The text each token adds; the pieces concatenate to the decoded text."""
        ...


def backend_label(backend: Any) -> str:
    """``name (ClassName)`` for error messages."""
    name = getattr(backend, "name", "") or "unnamed"
    return f"{name!r} ({type(backend).__name__})"


def has(backend: Any, capability: str) -> bool:
    """Whether ``backend`` declares ``capability`` (a boolean field of :class:`Capabilities`)."""
    if capability not in _WHAT:
        raise EntrolabError(f"unknown capability {capability!r}; known: {', '.join(_WHAT)}")
    caps = getattr(backend, "capabilities", None)
    return bool(getattr(caps, capability, False))


def require(backend: Any, capability: str, purpose: str) -> None:
    """Raise a clear error unless ``backend`` declares ``capability``.

    Args:
        capability: a boolean field of :class:`Capabilities`, e.g. ``"hidden_states"``.
        purpose: what needs it, for the message (e.g. ``"LYNX learned exits"``).
    """
    if not has(backend, capability):
        raise EntrolabError(
            f"{purpose} needs {_WHAT[capability]}, which backend {backend_label(backend)} does "
            "not offer; run it on an in-process transformers backend "
            "(entrolab.backends.HFBackend.load(MODEL), or --backend hf on the command line)"
        )


def torch_model(backend: Any, purpose: str) -> Any:
    """The backend's in-process torch module, or a clear error naming the backend."""
    require(backend, "torch_module", purpose)
    return backend.torch_model()


def check_backend(backend: Any, purpose: str = "this call") -> None:
    """Raise unless ``backend`` implements the :class:`Backend` protocol."""
    if not isinstance(backend, Backend):
        missing = [
            m
            for m in ("name", "capabilities", "vocab_size", "generate", "score", "prompt_ids")
            if not hasattr(backend, m)
        ]
        raise EntrolabError(
            f"{purpose} needs an entrolab backend (HFBackend, VLLMBackend, OpenAIBackend, "
            f"MockBackend); got {type(backend).__name__} lacking {', '.join(missing) or 'methods'}"
        )


def prompt_as_ids(
    backend: Any,
    prompt: Prompt,
    *,
    chat_template: bool = True,
    system_prompt: str | None = None,
) -> list[int]:
    """Token ids for a prompt given as text (templated per the arguments), as a chat message list
    (the backend's ``prompt_ids`` renders it) or as ids (verbatim)."""
    if isinstance(prompt, str) or is_messages(prompt):
        if not isinstance(prompt, str):
            require(backend, "message_prompts", "a message-list (multi-turn chat) prompt")
        return backend.prompt_ids(prompt, chat_template=chat_template, system_prompt=system_prompt)
    ids = [int(t) for t in prompt]
    if not ids:
        raise EntrolabError("a token-id prompt is empty; give at least one token")
    vocab = getattr(backend, "vocab_size", None)
    if vocab is not None and any(not 0 <= t < vocab for t in ids):
        raise EntrolabError(f"a token-id prompt has ids outside the vocabulary [0, {vocab})")
    return ids


def is_messages(prompt: Any) -> bool:
    """Whether ``prompt`` is a chat message list (a non-empty sequence of mappings)."""
    return (
        isinstance(prompt, Sequence)
        and not isinstance(prompt, str)
        and len(prompt) > 0
        and all(isinstance(m, Mapping) for m in prompt)
    )


def prompt_text(prompt: Prompt) -> str:
    """The prompt as stored in a Trace: the text, or ``""`` for a token-id prompt."""
    return prompt if isinstance(prompt, str) else ""
