"""Per-row bookkeeping of one decode batch of :class:`~entrolab.backends.HFBackend`: sampling,
per-token statistics, EOS / step-hook / stop-string endings and the traces they become. Used as
the ``step_fn`` of :func:`~entrolab.decoding.loop.decode_loop` by ``generate`` and by tree
rollouts (``backends/tree.py``), and by :class:`GenerationEngine` (continuous batching: one
:class:`~entrolab.decoding.loop.DecodeEngine` that requests join and leave between steps)."""

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
        first_token: ``first_token(active, raw, chosen) -> chosen`` replaces the tokens chosen at
            step 0 (forced first tokens, e.g. ECHO's top-w branches); the sampler still draws
            at step 0, and the forced tokens' statistics (log-prob, top-k) are recorded as usual.
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
        first_token: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
        | None = None,
    ) -> None:
        n = len(row_seeds)
        self.first_token = first_token
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
        if step == 0 and self.first_token is not None:
            chosen = self.first_token(active, raw, chosen)
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


#: on_tokens(rows [A] int64, step, buffers): called after each decode step with the rows of a
#: request that got a token at this step (indices into the request's rows: prompt-major, then
#: sample) and the request's :class:`StepBuffers`, whose column ``step`` holds those tokens'
#: ids and statistics. Runs on the decoding thread; keep it short.
TokenCallback = Callable[[torch.Tensor, int, StepBuffers], None]


class RowGroup:
    """The rows of one generate call (or one chunk of it): a :class:`RowDecoder` over them, the
    distinct prompts they are prefilled from, and the traces they become.

    Args:
        texts, ids: the call's prompts as stored in traces and as token ids.
        rows: (prompt index, sample index) per row.
        seed_of: ``seed_of(i, s)`` → the row's sampling seed.
    """

    def __init__(
        self,
        backend: Any,
        texts: Sequence[str],
        ids: Sequence[list[int]],
        rows: Sequence[tuple[int, int]],
        config: GenerationConfig,
        seed_of: Callable[[int, int], int],
        warper: Warper | None = None,
        step_hook: StepHook | None = None,
        progress: Callable[[int, int], None] | None = None,
        sample_offset: int = 0,
    ) -> None:
        self.texts, self.ids, self.rows, self.sample_offset = texts, ids, list(rows), sample_offset
        unique = sorted({i for i, _ in rows})
        self.prompts = [ids[i] for i in unique]
        self.row_prompt = [unique.index(i) for i, _ in rows]
        self.dec = RowDecoder(
            backend,
            config,
            [seed_of(i, s) for i, s in rows],
            hook_rows=torch.tensor([i * config.num_samples + s for i, s in rows]),
            warper=warper,
            step_hook=step_hook,
            progress=progress,
        )

    def traces(self, meta: dict[str, Any] | None = None) -> list[Trace]:
        """One trace per row, in row order (``meta`` is added to each trace's meta)."""
        return [
            self.dec.trace(
                r,
                self.texts[i],
                i,
                s + self.sample_offset,
                {"prompt_tokens": len(self.ids[i]), **(meta or {})},
            )
            for r, (i, s) in enumerate(self.rows)
        ]


class GenerationEngine:
    """Continuous batching on an :class:`~entrolab.backends.HFBackend`: requests (generate calls)
    join one running decode between steps and leave it when their rows finish.

    ``add`` takes what ``generate`` takes and returns a handle; each :meth:`step` admits the
    requests added since the last one (prefilled together, their KV cache merged into the
    running batch), runs one decode step for every row and returns the requests that finished,
    with their traces. A request's traces are those of ``backend.generate(prompts, config,
    seeds=seeds)``: every row keeps its own generator and positions, so what it runs beside does
    not change its tokens (up to float rounding of a wider batch). Each trace's
    ``meta["batch"]`` says how many rows were already decoding when the request was added and
    at which engine step. Not thread-safe: one thread drives the engine.
    """

    def __init__(self, backend: Any) -> None:
        from entrolab.decoding.loop import DecodeEngine

        self.backend = backend
        self.loop = DecodeEngine(backend.model, pad_id=backend.pad_id)
        self._requests: dict[int, tuple[RowGroup, dict[str, int]]] = {}
        self.steps = 0

    @property
    def idle(self) -> bool:
        """No request decoding or waiting to join."""
        return self.loop.idle

    @property
    def rows(self) -> int:
        """Rows decoding or waiting to join."""
        return self.loop.rows

    def add(
        self,
        prompts: Sequence[Any] | str,
        config: GenerationConfig | None = None,
        *,
        seeds: Sequence[int] | None = None,
        sample_offset: int = 0,
        on_tokens: TokenCallback | None = None,
    ) -> int:
        """Queue a request (arguments as in ``HFBackend.generate``); returns its handle. Bad
        input raises here, before the request touches the running batch."""
        config, texts, ids, seed_of, warper = self.backend._prepare(
            prompts, config, seeds, sample_offset
        )
        rows = [(i, s) for i in range(len(texts)) for s in range(config.num_samples)]
        group = RowGroup(self.backend, texts, ids, rows, config, seed_of, warper, None, None,
                         sample_offset)  # fmt: skip
        dec = group.dec

        def with_callback(active: torch.Tensor, step: int, raw: torch.Tensor):
            chosen, finished = dec(active, step, raw)
            on_tokens(active, step, dec.buf)  # type: ignore[misc]
            return chosen, finished

        meta = {"running_rows_at_join": int(self.loop.live.sum()), "engine_step": self.steps}
        handle = self.loop.add(
            group.prompts,
            dec if on_tokens is None else with_callback,
            max_new_tokens=config.max_new_tokens,
            row_prompt=group.row_prompt,
        )
        self._requests[handle] = (group, meta)
        return handle

    def step(self) -> list[tuple[int, list[Trace]]]:
        """One decode step; returns (handle, traces in row order) of the requests it finished."""
        ended = self.loop.step()
        self.steps += 1
        out = []
        for handle in ended:
            group, meta = self._requests.pop(handle)
            out.append((handle, group.traces({"batch": meta})))
        return out

    def cancel(self, handle: int) -> None:
        """Drop a request (e.g. its client went away); its rows leave at the next step."""
        self.loop.cancel(handle)
        self._requests.pop(handle, None)

    def reset(self) -> None:
        """Drop every request (after a failed step)."""
        from entrolab.decoding.loop import DecodeEngine

        self.loop = DecodeEngine(self.backend.model, pad_id=self.backend.pad_id)
        self._requests.clear()
