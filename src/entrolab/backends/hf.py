"""Hugging Face transformers backend (white-box): batched generation and teacher-forced scoring.

Generation runs its own decode loop over the model's KV cache instead of ``model.generate``: each
step's raw logits [R, V] are turned into per-token statistics at once (entropy, varentropy,
self-certainty, chosen-token logprob and rank, top-k) and then dropped, so no [T, V] logits are
ever held; finished rows leave the batch (the cache is compacted), so short answers stop costing
compute. Scoring runs one forward pass per batch and applies the LM head in chunks of positions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from entrolab.backends.base import Capabilities, ProgressFn, Prompt, prompt_as_ids
from entrolab.backends.decode import (
    StepHook,
    chat_prompt_ids,
    decode_loop,
    token_pieces,
)
from entrolab.backends.hf_rows import GenerationEngine, RowGroup
from entrolab.backends.hf_scoring import TeacherForcedScoring
from entrolab.backends.sampling import (
    Warper,
    resolve_warper,
    seed_function,
)
from entrolab.config import GenerationConfig
from entrolab.decoding.kv_cache import preallocated_cache, supports_merge
from entrolab.errors import EntrolabError
from entrolab.types import Trace, TraceBatch


class HFBackend(TeacherForcedScoring):
    """A transformers causal LM with entrolab's generation and scoring (white-box).

    Implements :class:`~entrolab.backends.base.Backend` with every capability: full-vocabulary
    statistics, hidden states, step hooks, token-id prompts and the torch module.

    Args:
        model: a causal LM (``AutoModelForCausalLM``), put in eval mode.
        tokenizer: its tokenizer.
        name: a label stored in every trace.
    """

    def __init__(self, model, tokenizer, name: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.eos_ids = self._eos_ids()
        self.capabilities = Capabilities(
            full_logits=True,
            max_topk=self.vocab_size,
            hidden_states=True,
            step_hooks=True,
            kv_branching=True,
            torch_module=True,
            continuous_batching=supports_merge(preallocated_cache(model.config, 1)),
            message_prompts=True,
        )

    @classmethod
    def load(cls, name_or_path: str | None = None, **kwargs) -> HFBackend:
        """Load a model with :func:`entrolab.models.load_model` and wrap it."""
        from entrolab.models import load_model

        loaded = load_model(name_or_path, **kwargs)
        return cls(loaded.model, loaded.tokenizer, loaded.name)

    def _eos_ids(self) -> torch.Tensor:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(i) for i in source)
        return torch.tensor(sorted(ids), dtype=torch.int64)

    # ------------------------------------------------------- protocol: tokens, model access
    @property
    def pad_id(self) -> int:
        """The id used to pad batches."""
        return int(self.tokenizer.pad_token_id)

    def torch_model(self):
        """The wrapped torch module (capability ``torch_module``)."""
        return self.model

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a continuation (no special tokens)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens removed unless asked to keep them)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_pieces(self, ids: Sequence[int]) -> list[str]:
        """The text each token adds (see :func:`~entrolab.backends.decode.token_pieces`)."""
        return token_pieces(self.tokenizer, ids)

    @property
    def hidden_size(self) -> int:
        """Width H of the decoder's hidden states."""
        return int(self.model.config.hidden_size)

    def resolve_layer(self, layer: int | None) -> int:
        """``layer`` as a 0-based decoder block index (see :func:`~entrolab.backends.hidden.resolve_layer`)."""
        from entrolab.backends.hidden import resolve_layer

        return resolve_layer(self.model, layer)

    def hidden_states(self, seqs, positions, layer: int, *, batch_size: int = 16):
        """Hidden states of decoder block ``layer`` at given positions (see
        :func:`~entrolab.backends.hidden.hidden_at`)."""
        from entrolab.backends.hidden import hidden_at

        return hidden_at(self.model, self.pad_id, seqs, positions, layer, batch_size=batch_size)

    def watch_layer(self, layer: int, *, watch_inputs: bool = False):
        """A :class:`~entrolab.backends.hidden.LayerWatch` on this model (use as a context
        manager around ``generate`` for online hidden states)."""
        from entrolab.backends.hidden import LayerWatch

        return LayerWatch(self.model, layer, watch_inputs=watch_inputs)

    # ------------------------------------------------------------------ prompts
    def prompt_ids(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> list[int]:
        """Token ids of ``prompt`` as the model sees it (chat-formatted, generation prompt added);
        ``prompt`` may be a whole conversation (a list of ``{"role", "content"}`` messages, see
        :func:`~entrolab.backends.decode.chat_prompt_ids`)."""
        return chat_prompt_ids(
            self.tokenizer, prompt, chat_template=chat_template, system_prompt=system_prompt
        )

    # --------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Prompt] | str,
        config: GenerationConfig | None = None,
        *,
        seeds: Sequence[int] | None = None,
        on_progress: ProgressFn | None = None,
        step_hook: StepHook | None = None,
        sample_offset: int = 0,
    ) -> TraceBatch:
        """Sample ``config.num_samples`` completions per prompt; one Trace per completion.

        A prompt is text (chat-formatted per ``config``) or a list of token ids used as they are
        (the trace's ``prompt`` is then their decoded text). Traces come back ordered by prompt,
        then sample. Statistics are computed from each step's
        raw logits (``config.signals_from="processed"`` for the sampled distribution). When
        sampling (temperature > 0), each trace's ``meta`` has the sampler diagnostics
        ``kept_mean`` (tokens kept per step), ``retained_mass_mean`` and ``entropy_after_mean``
        (nats, of the distribution actually sampled from), averaged over its tokens.

        Args:
            seeds: one base seed per prompt (instead of ``config.seed``): sample ``s`` of prompt
                ``i`` then draws from ``row_seed(seeds[i], 0, s)``, exactly as if prompt ``i``
                had been generated alone with ``config.seed = seeds[i]``; lets callers batch
                items whose samples must not depend on what they are batched with.
            step_hook: a per-step stopping rule (see :data:`StepHook`), e.g. DeepConf's online
                early stop; stopped rows cost no more compute.
            sample_offset: sample ``s`` is drawn and labelled as sample ``s + sample_offset``, so
                a later call with a larger offset draws fresh samples for the same prompts
                (adaptive sample counts).
        """
        config, prompts, ids, seed_of, warper = self._prepare(prompts, config, seeds, sample_offset)
        rows = [(i, s) for i in range(len(prompts)) for s in range(config.num_samples)]
        traces: list[Trace] = []
        for start in range(0, len(rows), config.batch_size):
            chunk = rows[start : start + config.batch_size]
            rows_before, tokens_before = len(traces), sum(len(t) for t in traces)

            def progress(rows_done: int, tokens: int, r0=rows_before, t0=tokens_before) -> None:
                if on_progress is not None:
                    on_progress(r0 + rows_done, len(rows), t0 + tokens)

            traces += self._generate_batch(
                prompts, ids, chunk, config, progress, seed_of, warper, step_hook, sample_offset
            )
        return TraceBatch(tuple(traces))

    def _prepare(
        self,
        prompts: Sequence[Prompt] | str,
        config: GenerationConfig | None,
        seeds: Sequence[int] | None,
        sample_offset: int,
    ) -> tuple[
        GenerationConfig, list[str], list[list[int]], Callable[[int, int], int], Warper | None
    ]:
        """A generate call's checked inputs: (config, prompt texts, prompt ids, seed_of(i, s),
        warper)."""
        config = config or GenerationConfig()
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise EntrolabError("no prompts given")
        if config.topk_logprobs > self.vocab_size:
            raise EntrolabError(
                f"topk_logprobs={config.topk_logprobs} exceeds the vocabulary size {self.vocab_size}"
            )
        ids = [
            prompt_as_ids(
                self, p, chat_template=config.chat_template, system_prompt=config.system_prompt
            )
            for p in prompts
        ]
        prompts = [
            p if isinstance(p, str) else self.decode(i) for p, i in zip(prompts, ids, strict=True)
        ]
        if seeds is not None and len(seeds) != len(prompts):
            raise EntrolabError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if sample_offset < 0:
            raise EntrolabError(f"sample_offset must be >= 0, got {sample_offset}")
        base_seed_of = seed_function(config.seed, seeds)
        seed_of = lambda i, s: base_seed_of(i, s + sample_offset)  # noqa: E731
        warper = resolve_warper(config)
        return config, prompts, ids, seed_of, warper

    def engine(self) -> GenerationEngine:
        """A step-wise generation engine over this model: requests join a running decode between
        steps and leave when finished (continuous batching; see
        :class:`~entrolab.backends.hf_rows.GenerationEngine`)."""
        return GenerationEngine(self)

    def _generate_batch(
        self,
        prompts: Sequence[str],
        prompt_ids: Sequence[list[int]],
        rows: Sequence[tuple[int, int]],
        config: GenerationConfig,
        progress: Callable[[int, int], None],
        seed_of: Callable[[int, int], int],
        warper: Warper | None = None,
        step_hook: StepHook | None = None,
        sample_offset: int = 0,
    ) -> list[Trace]:
        group = RowGroup(
            self, prompts, prompt_ids, rows, config, seed_of, warper, step_hook, progress,
            sample_offset,
        )  # fmt: skip
        decode_loop(
            self.model,
            group.prompts,
            group.dec,
            max_new_tokens=config.max_new_tokens,
            pad_id=self.pad_id,
            row_prompt=group.row_prompt,
        )
        progress(len(rows), int(group.dec.lengths.sum()))
        return group.traces()

    def generate_tree(self, prompts: Sequence[Prompt], config: GenerationConfig, **kwargs):
        """Tree rollouts sharing each prefix's KV cache; see
        :func:`~entrolab.backends.tree.generate_tree` (``rule``, ``points``, ``branches``,
        ``seeds``)."""
        from entrolab.backends.tree import generate_tree

        return generate_tree(self, prompts, config, **kwargs)
