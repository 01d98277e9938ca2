"""Per-row bookkeeping of one decode batch of :class:`~entrolab.backends.HFBackend`: sampling,
per-token statistics, EOS / step-hook / stop-string endings and the traces they become. Used as
the ``step_fn`` of :func:`~entrolab.decoding.loop.decode_loop` by ``generate`` and by tree
rollouts (``backends/tree.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from entrolab.backends.decode import StepBuffers, StepHook, StopStrings, call_step_hook
from entrolab.backends.sampling import Warper, process_logits, sample_rows
from entrolab.config import GenerationConfig
from entrolab.signals import token_statistics, truncation_statistics
from entrolab.types import Provenance, Trace


class RowDecoder:
    """Decode state of R rows: step buffers, lengths, finish reasons, sampler diagnostics.

    Args:
        backend: the HFBackend (for EOS ids and decoding text).
        config: the generation settings (``max_new_tokens`` columns are allocated).
        row_seeds: R seeds, one generator per row.
        hook_rows: R call-global row ids given to ``step_hook``.
        progress: ``progress(rows_done, tokens)`` after each step (or None).
    """

    def __init__(
        self,
        backend: Any,
        config: GenerationConfig,
        row_seeds: Sequence[int],
        *,
        hook_rows: torch.Tensor | None = None,
        warper: Warper | None = None,
        step_hook: StepHook | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        n = len(row_seeds)
        self.backend, self.config, self.warper, self.step_hook = backend, config, warper, step_hook
        self.row_seeds = [int(s) for s in row_seeds]
        self.generators = [torch.Generator().manual_seed(s) for s in self.row_seeds]
        self.buf = StepBuffers.empty(n, config.max_new_tokens, config.topk_logprobs)
        self.lengths = torch.zeros(n, dtype=torch.int64)
        self.hook_rows = torch.arange(n) if hook_rows is None else hook_rows
        self.diag = torch.zeros(3, n, dtype=torch.float64)  # kept, retained mass, entropy after
        self.finish = ["length"] * n
        self.progress = progress
        self.stop = StopStrings(
            config.stop,
            config.stop_ignores_leading_whitespace,
            lambda ids: backend.decode(ids, skip_special_tokens=False),
            backend.decode,
        )

    def __call__(self, active: torch.Tensor, step: int, raw: torch.Tensor):
        """The decode loop's ``step_fn``: choose, record, and say which rows are finished."""
        config = self.config
        processed = process_logits(raw, config, self.warper)
        if config.greedy:
            chosen = raw.argmax(-1)
        else:
            chosen = sample_rows(processed, [self.generators[r] for r in active.tolist()])
            kept = truncation_statistics(raw / config.temperature, processed)
            self.diag[:, active] += torch.stack([x.double() for x in kept])
        source = raw if config.signals_from == "raw" else processed
        stats = token_statistics(source, chosen, config.topk_logprobs)
        self.buf.write(active, step, chosen, stats)
        self.lengths[active] += 1
        finished = torch.isin(chosen, self.backend.eos_ids)
        for j in finished.nonzero().flatten().tolist():
            self.finish[int(active[j])] = "eos"
        if self.step_hook is not None:
            rows = self.hook_rows[active]
            stop = call_step_hook(self.step_hook, rows, step, stats) & ~finished
            for j in stop.nonzero().flatten().tolist():
                self.finish[int(active[j])] = "stopped"
            finished = finished | stop
        for j in self.stop.hits(active, finished, self.buf.token_ids, step):
            finished[j] = True
            self.finish[int(active[j])] = "stop"
        if self.progress is not None:
            self.progress(len(self.finish) - int((~finished).sum()), int(self.lengths.sum()))
        return chosen, finished

    def meta(self, r: int) -> dict[str, Any]:
        """Row r's seed and (when sampling) its sampler diagnostics, averaged over its tokens."""
        out: dict[str, Any] = {"row_seed": self.row_seeds[r]}
        if not self.config.greedy:
            m = (self.diag[:, r] / max(int(self.lengths[r]), 1)).tolist()
            out.update(kept_mean=m[0], retained_mass_mean=m[1], entropy_after_mean=m[2])
        return out

    def trace(
        self, r: int, prompt: str, prompt_index: int, sample_index: int, meta: dict[str, Any]
    ) -> Trace:
        """Row r as a Trace (text cut at a stop string)."""
        return buffer_trace(
            self.backend,
            self.buf,
            r,
            int(self.lengths[r]),
            prompt=prompt,
            finish=self.finish[r],
            prompt_index=prompt_index,
            sample_index=sample_index,
            provenance=Provenance(logits=self.config.signals_from, vocab="full"),
            meta={"generation": self.config.to_dict(), **meta, **self.meta(r)},
            stop=self.stop,
        )


def buffer_trace(
    backend: Any,
    buf: StepBuffers,
    r: int,
    n: int,
    *,
    prompt: str,
    finish: str,
    prompt_index: int,
    sample_index: int,
    provenance: Provenance,
    meta: dict[str, Any],
    stop: StopStrings | None = None,
) -> Trace:
    """Row r's first n buffered tokens as a Trace (text cut at a stop string when finished by
    one)."""
    ids = buf.token_ids[r, :n]
    text = backend.decode(ids)
    if finish == "stop" and stop is not None:
        text = stop.cut(text)
    return Trace(
        prompt=prompt,
        text=text,
        token_ids=ids,
        tokens=tuple(backend.token_pieces(ids.tolist())),
        logprob=buf.logprob[r, :n],
        entropy=buf.entropy[r, :n],
        varentropy=buf.varentropy[r, :n],
        self_certainty=buf.self_certainty[r, :n],
        rank=buf.rank[r, :n],
        topk_ids=buf.topk_ids[r, :n],
        topk_logprobs=buf.topk_logprobs[r, :n],
        provenance=provenance,
        finish_reason=finish,  # type: ignore[arg-type]
        prompt_index=prompt_index,
        sample_index=sample_index,
        model=backend.name,
        meta=meta,
    )
