"""The shared run loop of cue-based exit strategies (LYNX, ConCISE-style; see
:mod:`entrolab.inference.exits`): one chain-of-thought trace per item, a decision at each cue, a
forced answer where a trace exits.

Strategies run **online** by default: a :class:`~entrolab.inference.hidden.CueMonitor` step hook
decides at each cue during generation and the backend stops the row (one token past the cue,
counted). ``mode="replay"`` generates whole traces first and truncates at the first qualifying
cue, counting only the tokens up to the cue (what an online run would generate, not what was
computed); it is for backends without ``step_hook`` and for cross-checks.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from entrolab.backends.base import Backend, require
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import (
    ItemOutcome,
    ProgressFn,
    check_run,
    item_seeds,
    report_done,
    row_progress,
)
from entrolab.inference.cues import cot_prompt, cue_positions
from entrolab.inference.hidden import CueMonitor, greedy_continue, hidden_at, resolve_layer

__all__ = ["CueExitStrategy", "strategy_config"]


def strategy_config(config: GenerationConfig | Mapping[str, Any] | None) -> GenerationConfig:
    """The strategy's generation settings: greedy, 128 tokens, unless ``config`` says otherwise
    (a mapping overrides only the keys it names)."""
    if isinstance(config, GenerationConfig):
        return config
    base = GenerationConfig(max_new_tokens=128, temperature=0.0).to_dict()
    return GenerationConfig.from_dict({**base, **dict(config or {})})


class CueExitStrategy:
    """Shared run loop: one CoT trace per item, a decision at each cue, a forced answer."""

    name = "cue-exit"
    needs_hidden = False

    def __init__(
        self,
        *,
        cues: Sequence[str],
        config: GenerationConfig | Mapping[str, Any] | None,
        mode: Literal["online", "replay"],
        instructions: str,
        answer_prefix: str,
        answer_tokens: int,
        min_position: int,
        force_on_length: bool,
    ) -> None:
        if mode not in ("online", "replay"):
            raise EntrolabError(f"mode must be 'online' or 'replay', got {mode!r}")
        cue_positions([], cues)
        base = strategy_config(config)
        self.config = GenerationConfig.from_dict({**base.to_dict(), "num_samples": 1})
        self.cues, self.mode, self.instructions = tuple(cues), mode, instructions
        self.answer_prefix, self.answer_tokens = answer_prefix, int(answer_tokens)
        self.min_position, self.force_on_length = int(min_position), bool(force_on_length)

    # subclasses ---------------------------------------------------------------------------
    def _layer(self, backend: Backend) -> int:
        return resolve_layer(backend, None, "learned exits")

    def _decide(
        self, ctx: dict[str, Any], rows: list[int], prefixes: list[list[int]], hidden: torch.Tensor
    ) -> list[tuple[bool, dict[str, Any]]]:
        raise NotImplementedError

    def _exit_answer(
        self, ctx: dict[str, Any], exits: dict[int, dict[str, Any]], prefixes: dict[int, list[int]]
    ) -> dict[int, tuple[str, int]]:
        """(reply text, extra generated tokens) for every exited row."""
        return self._force(ctx, prefixes)

    # shared -------------------------------------------------------------------------------
    def _force(
        self, ctx: dict[str, Any], prefixes: Mapping[int, list[int]]
    ) -> dict[int, tuple[str, int]]:
        if not prefixes:
            return {}
        backend = ctx["backend"]
        pre = backend.encode(self.answer_prefix)
        rows = sorted(prefixes)
        conts = greedy_continue(
            backend, [ctx["prompt_ids"][r] + prefixes[r] + pre for r in rows], self.answer_tokens
        )
        return {r: (self.answer_prefix + c.text, len(c)) for r, c in zip(rows, conts, strict=True)}

    def run(
        self,
        backend: Backend,
        task: Any,
        items: Sequence[Any],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        from entrolab.tasks import answer_key

        items = check_run(backend, items)
        self._prepare(backend)
        cfg = self.config
        prompts = [cot_prompt(task, it, self.instructions) for it in items]
        seeds = item_seeds(seed, items)
        ids = [
            backend.prompt_ids(p, chat_template=cfg.chat_template, system_prompt=cfg.system_prompt)
            for p in prompts
        ]
        ctx = {"backend": backend, "task": task, "items": items, "prompt_ids": ids}
        layer = self._layer(backend)
        progress = row_progress(on_progress, len(items))

        def decide(rows, prefixes, hidden):
            return self._decide(ctx, rows, prefixes, hidden)

        if self.mode == "online":
            require(backend, "step_hooks", "online learned exits")
            with backend.watch_layer(layer, watch_inputs=True) as watch:
                monitor = CueMonitor(
                    watch,
                    lambda ids: backend.decode(ids, skip_special_tokens=False),
                    self.cues,
                    decide,
                    min_position=self.min_position,
                )
                batch = backend.generate(
                    prompts, cfg, seeds=seeds, step_hook=monitor, on_progress=progress
                )
            events, exits = monitor.events, monitor.exits
            spent = {r: len(t) for r, t in enumerate(batch)}
        else:
            batch = backend.generate(prompts, cfg, seeds=seeds, on_progress=progress)
            events, exits = self._replay(ctx, batch, layer, decide)
            spent = {
                r: (exits[r]["position"] + 1 if r in exits else len(t)) for r, t in enumerate(batch)
            }
        prefixes = {r: batch[r].token_ids[: e["position"] + 1].tolist() for r, e in exits.items()}
        answers = self._exit_answer(ctx, exits, prefixes)
        unanswered = {
            r: t.token_ids.tolist()
            for r, t in enumerate(batch)
            if r not in exits
            and self.force_on_length
            and t.finish_reason == "length"
            and task.extract(items[r], t.text) is None
        }
        forced_end = self._force(ctx, unanswered)
        out = []
        for r, (item, trace) in enumerate(zip(items, batch, strict=True)):
            text, extra = answers.get(r) or forced_end.get(r) or (trace.text, 0)
            probe_tokens = sum(int(e.get("probe_tokens", 0)) for e in events.get(r, []))
            parsed = task.extract(item, text)
            exit_info = exits.get(r)
            out.append(
                ItemOutcome(
                    item_id=item.id,
                    answer=None if parsed is None else answer_key(parsed),
                    correct=bool(parsed is not None and task.grade(item, text).correct),
                    generated_tokens=int(spent[r] + extra + probe_tokens),
                    prompt_tokens=int(trace.meta.get("prompt_tokens", len(ids[r]))),
                    num_traces=1,
                    meta={
                        "mode": self.mode,
                        "exited": exit_info is not None,
                        "exit_position": None if exit_info is None else exit_info["position"],
                        "cues_seen": len(events.get(r, [])),
                        "trace_tokens": len(trace),
                        "answer_tokens": extra,
                        "probe_tokens": probe_tokens,
                        "forced_at_end": r in forced_end,
                        "finish_reason": trace.finish_reason,
                        "decisions": [
                            {k: v for k, v in e.items() if k != "text"} for e in events.get(r, [])
                        ],
                    },
                )
            )
        report_done(on_progress, len(items))
        return out

    def _prepare(self, backend: Backend) -> None:
        if self.mode == "online" and "step_hook" not in _params(backend.generate):
            raise EntrolabError("this backend's generate() has no step_hook; use mode='replay'")

    def _replay(
        self, ctx, batch, layer, decide
    ) -> tuple[dict[int, list[dict[str, Any]]], dict[int, dict[str, Any]]]:
        """Decide at every cue of the finished traces; keep decisions up to the first stop.

        A cue at a trace's last token is skipped, as online (nothing is left to save there)."""
        cue_lists = {
            r: [
                p for p in cue_positions(t.tokens, self.cues) if self.min_position <= p < len(t) - 1
            ]
            for r, t in enumerate(batch)
        }
        rows = [r for r in cue_lists if cue_lists[r]]
        events: dict[int, list[dict[str, Any]]] = {}
        exits: dict[int, dict[str, Any]] = {}
        if not rows:
            return events, exits
        if self.needs_hidden:
            seqs = [ctx["prompt_ids"][r] + batch[r].token_ids.tolist() for r in rows]
            pos = [[len(ctx["prompt_ids"][r]) + p for p in cue_lists[r]] for r in rows]
            hidden = torch.cat(hidden_at(ctx["backend"], seqs, pos, layer))
        else:
            hidden = torch.zeros(sum(len(cue_lists[r]) for r in rows), 0)
        flat = [(r, p) for r in rows for p in cue_lists[r]]
        decisions = decide(
            [r for r, _ in flat], [batch[r].token_ids[: p + 1].tolist() for r, p in flat], hidden
        )
        for (r, p), (halt, info) in zip(flat, decisions, strict=True):
            if r in exits:
                continue
            info = {"position": p, **info}
            events.setdefault(r, []).append(info)
            if halt:
                exits[r] = info
        return events, exits


def _params(fn: Any) -> Mapping[str, Any]:
    return inspect.signature(fn).parameters
