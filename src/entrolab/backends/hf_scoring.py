"""Teacher-forced scoring for :class:`~entrolab.backends.HFBackend`: the statistics of given
completions from one forward pass per batch, the LM head applied in chunks of positions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from entrolab.backends.base import Prompt, prompt_as_ids
from entrolab.backends.decode import StepBuffers, pad_batch
from entrolab.backends.hf_rows import buffer_trace
from entrolab.errors import EntrolabError
from entrolab.signals import token_statistics
from entrolab.types import Provenance, Trace, TraceBatch


class TeacherForcedScoring:
    """``score`` for a backend holding ``model`` (a transformers causal LM), ``tokenizer``,
    ``vocab_size``, ``decode`` and ``token_pieces`` (mixed into :class:`HFBackend`)."""

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str | Sequence[int]],
        *,
        k: int = 20,
        chat_template: bool = True,
        system_prompt: str | None = None,
        batch_size: int = 8,
        position_chunk: int = 64,
    ) -> TraceBatch:
        """Teacher-forced statistics of given completions; the same Trace fields as generation.

        Args:
            prompts: B prompts (text, templated per the arguments, or token ids used as they are).
            completions: B completions, as text (tokenized without special tokens) or token ids
                (e.g. a generated trace's ``token_ids``, for an exact comparison).
            k: top-k alternatives stored per token.
            position_chunk: positions per LM-head call, bounding the logits held at once to
                [batch_size, position_chunk, V].
        """
        if len(prompts) != len(completions):
            raise EntrolabError(
                f"got {len(prompts)} prompts but {len(completions)} completions; pair them 1:1"
            )
        if k > self.vocab_size:
            raise EntrolabError(f"k={k} exceeds the vocabulary size {self.vocab_size}")
        traces: list[Trace] = []
        for start in range(0, len(prompts), batch_size):
            sl = slice(start, start + batch_size)
            p_ids = [
                prompt_as_ids(self, p, chat_template=chat_template, system_prompt=system_prompt)
                for p in prompts[sl]
            ]
            c_ids = [
                self.tokenizer(c, add_special_tokens=False)["input_ids"]
                if isinstance(c, str)
                else [int(t) for t in c]
                for c in completions[sl]
            ]
            if any(len(c) == 0 for c in c_ids):
                raise EntrolabError("a completion is empty; there is nothing to score")
            texts = [
                p if isinstance(p, str) else self.decode(i)
                for p, i in zip(prompts[sl], p_ids, strict=True)
            ]
            traces += self._score_batch(texts, p_ids, c_ids, start, k, position_chunk)
        return TraceBatch(tuple(traces))

    def _score_batch(self, prompts, p_ids, c_ids, offset, k, position_chunk) -> list[Trace]:
        device = self.model.device
        seqs = [p + c for p, c in zip(p_ids, c_ids, strict=True)]
        input_ids, attention = pad_batch(seqs, self.tokenizer.pad_token_id, side="right")
        width = input_ids.shape[1]
        hidden = self.model.base_model(
            input_ids=input_ids.to(device), attention_mask=attention.to(device)
        ).last_hidden_state
        head = self.model.get_output_embeddings()
        t_max = max(len(c) for c in c_ids)
        buf = StepBuffers.empty(len(seqs), t_max, k)
        # hidden state at position (len(prompt) - 1 + t) predicts completion token t
        starts = torch.tensor([len(p) - 1 for p in p_ids])
        lengths = torch.tensor([len(c) for c in c_ids])
        targets, _ = pad_batch(c_ids, 0, side="right")
        for t0 in range(0, t_max, position_chunk):
            t = torch.arange(t0, min(t0 + position_chunk, t_max))
            pos = (starts[:, None] + t[None, :]).clamp(max=width - 1)
            h = hidden[torch.arange(len(seqs))[:, None], pos.to(device)]  # [R, C, H]
            logits = self._final_logits(head(h)).float().cpu()
            rows = torch.arange(len(seqs)).repeat_interleave(len(t))
            cols = t.repeat(len(seqs))
            stats = token_statistics(logits.reshape(-1, logits.shape[-1]), targets[rows, cols], k)
            buf.write(rows, cols, targets[rows, cols], stats)
        return [
            buffer_trace(
                self,
                buf,
                r,
                int(lengths[r]),
                prompt=prompts[r],
                finish="scored",
                prompt_index=offset + r,
                sample_index=0,
                provenance=Provenance(logits="raw", vocab="full"),
                meta={"prompt_tokens": len(p_ids[r])},
            )
            for r in range(len(seqs))
        ]

    def _final_logits(self, logits: torch.Tensor) -> torch.Tensor:
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2 style soft-capping that the model's forward would apply
            logits = torch.tanh(logits / cap) * cap
        return logits
