"""FineCE supervision: Monte-Carlo prefix labels collected from the model itself, resumable.

For every item one chain-of-thought trace is sampled; at each *estimation position* of that trace
(:func:`estimation_positions`: step ends, fixed token intervals, or the answer-stabilised
trigger) ``num_continuations`` continuations are sampled from the prefix (temperature 1 by
default, as FineCE's ``--sample_num 30, T = 1``) and graded by the task; the label of the prefix
is the fraction of correct continuations. Two extra rows per trace: the question-level prefix
(the prompt alone, hidden state of its last token, ``position = -1``) and the finished trace
(its own correctness, counted as ``num_continuations`` trials so it weighs like the others).

Collection is resumable: with ``path`` every finished item is appended to a JSONL file (token
ids, positions, successes) and a rerun skips it; hidden states are read again from the stored
token ids at the end (one truncated forward per trace), so nothing large is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import item_seeds
from entrolab.inference.cues import COT_INSTRUCTIONS, cot_prompt, cue_positions
from entrolab.inference.hidden import greedy_continue, hidden_at, resolve_layer

__all__ = [
    "PositionRule",
    "PrefixLabels",
    "collect_prefix_labels",
    "estimation_positions",
    "interval_positions",
    "stable_trigger",
]

PositionRule = Literal["steps", "interval", "stable"]
#: How the CoT traces are sampled unless told otherwise (LYNX's collection settings).
TRACE_CONFIG = GenerationConfig(max_new_tokens=64, temperature=0.7, top_p=0.95)
_FORMAT = "entrolab-fince-labels-1"


# ------------------------------------------------------------------------ estimation positions
def interval_positions(num_tokens: int, every: int) -> list[int]:
    """Token indices ``every − 1, 2·every − 1, …`` below ``num_tokens − 1`` (the prefix after
    every ``every`` generated tokens; the last token is the finished trace, handled apart)."""
    if every < 1:
        raise EntrolabError(f"the estimation interval must be >= 1 token, got {every}")
    return list(range(every - 1, max(num_tokens - 1, 0), every))


def stable_trigger(answers: Sequence[str | None], patience: int = 1) -> list[int]:
    """Indices ``i`` whose forced answer equals the previous ``patience`` forced answers (all
    parseable): the answer has *stabilised* there. ``answers[i]`` is the answer forced at the
    i-th step end. Example: ``["3", "5", "5", None, "5"]``, patience 1 → ``[2]``."""
    if patience < 1:
        raise EntrolabError(
            f"patience must be >= 1 (earlier answers to agree with), got {patience}"
        )
    out = []
    for i in range(patience, len(answers)):
        window = answers[i - patience : i + 1]
        if window[-1] is not None and all(a == window[-1] for a in window):
            out.append(i)
    return out


def estimation_positions(
    pieces: Sequence[str],
    rule: PositionRule = "steps",
    *,
    cues: Sequence[str] = ("\n",),
    every: int = 8,
    forced_answers: Sequence[str | None] | None = None,
    patience: int = 1,
) -> list[int]:
    """Token indices of a trace (``pieces``: ``Trace.tokens``) where confidence is estimated,
    ascending, the last token excluded.

    * ``"steps"``: step ends (tokens completing a cue, default a line break).
    * ``"interval"``: every ``every`` tokens (:func:`interval_positions`).
    * ``"stable"``: step ends at which the answer forced there has stabilised
      (:func:`stable_trigger` on ``forced_answers``, one per step end).
    """
    last = len(pieces) - 1
    if rule == "interval":
        return interval_positions(len(pieces), every)
    steps = [p for p in cue_positions(pieces, cues) if p < last]
    if rule == "steps":
        return steps
    if rule == "stable":
        if forced_answers is None or len(forced_answers) != len(steps):
            raise EntrolabError(
                f"the 'stable' rule needs one forced answer per step end ({len(steps)}), got "
                f"{None if forced_answers is None else len(forced_answers)}"
            )
        return [steps[i] for i in stable_trigger(forced_answers, patience)]
    raise EntrolabError(f"unknown position rule {rule!r}; use 'steps', 'interval' or 'stable'")


# ------------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class PrefixLabels:
    """Monte-Carlo prefix supervision: one row per estimation point of every trace.

    Attributes (M rows, N items):
        features: float32 [M, H], hidden state of the prefix's last token at ``layer``.
        successes: int64 [M], correct continuations; trials: int64 [M], continuations sampled.
        item: int64 [M], index into ``item_ids``. step: int64 [M], 0 = question level, then
            1, 2, … along the trace (the finished trace is the last step).
        position: int64 [M], token index of the prefix's end in the trace (−1: the question).
        final: bool [M], the row of the finished trace. trace_correct: bool [M], whether the
            sampled trace the prefix belongs to ended correct.
        trace_logprob, trace_entropy: float64 [M], mean token log-probability and entropy
            (nats) of the row's trace (white-box baselines on the same traces).
        item_ids, layer, meta: as in :class:`~entrolab.inference.exits_data.ExitData`.
    """

    features: torch.Tensor
    successes: torch.Tensor
    trials: torch.Tensor
    item: torch.Tensor
    step: torch.Tensor
    position: torch.Tensor
    final: torch.Tensor
    trace_correct: torch.Tensor
    trace_logprob: torch.Tensor
    trace_entropy: torch.Tensor
    item_ids: tuple[str, ...]
    layer: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.successes.numel())

    @property
    def label(self) -> torch.Tensor:
        """float64 [M], the fraction of correct continuations (FineCE's training target;
        NaN for prefixes collected with ``num_continuations=0``)."""
        return self.successes.double() / self.trials.double()


def _settings(rule, cues, every, patience, n_cont, cont_cfg, trace_cfg, instr, prefix, layer):
    return {
        "format": _FORMAT,
        "rule": rule,
        "cues": list(cues),
        "every": every,
        "patience": patience,
        "num_continuations": n_cont,
        "continuation": cont_cfg.to_dict(),
        "trace": trace_cfg.to_dict(),
        "instructions": instr,
        "answer_prefix": prefix,
        "layer": layer,
    }


def _read_rows(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings) + "\n", encoding="utf-8")
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header, rows = json.loads(lines[0]), [json.loads(x) for x in lines[1:] if x.strip()]
    except (json.JSONDecodeError, IndexError) as e:
        raise EntrolabError(f"{str(path)!r} is not a FineCE label file ({e}); remove it") from None
    if header != settings:
        diff = sorted(k for k in settings if header.get(k) != settings[k])
        raise EntrolabError(
            f"{str(path)!r} was collected with other settings ({', '.join(diff)}); use another "
            "path or delete it to start over"
        )
    return {r["id"]: r for r in rows}


def collect_prefix_labels(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    rule: PositionRule = "steps",
    cues: Sequence[str] = ("\n",),
    every: int = 8,
    patience: int = 1,
    num_continuations: int = 8,
    continuation_tokens: int = 48,
    temperature: float = 1.0,
    layer: int | None = None,
    config: GenerationConfig | None = None,
    instructions: str = COT_INSTRUCTIONS,
    answer_prefix: str = "\nAnswer:",
    max_points: int = 8,
    seed: int = 0,
    path: str | Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> PrefixLabels:
    """Sample a CoT trace per item and label its prefixes by Monte-Carlo continuations.

    Cost per item: one trace, ``num_continuations`` continuations of up to
    ``continuation_tokens`` tokens for each of at most ``max_points`` estimation points plus the
    question (the ``"stable"`` rule adds a short greedy forced answer per step end), and one
    truncated forward for the hidden states. ``path``: the resumable JSONL file.

    Raises:
        EntrolabError: no items, bad settings, or a label file made with other settings.
    """
    if not items:
        raise EntrolabError("no items to collect FineCE labels from")
    if num_continuations < 0 or continuation_tokens < 1 or max_points < 0:
        raise EntrolabError(
            "num_continuations and max_points must be >= 0 and continuation_tokens >= 1"
        )
    trace_cfg = config or TRACE_CONFIG
    cont_cfg = GenerationConfig(
        num_samples=max(num_continuations, 1), max_new_tokens=continuation_tokens,
        temperature=temperature, topk_logprobs=0, batch_size=64,
    )  # fmt: skip
    layer = resolve_layer(backend, layer, "FineCE prefix confidence")
    settings = _settings(rule, cues, every, patience, num_continuations, cont_cfg, trace_cfg,
                         instructions, answer_prefix, layer)  # fmt: skip
    done = _read_rows(Path(path), settings) if path is not None else {}
    todo = [i for i, it in enumerate(items) if it.id not in done]
    seeds = item_seeds(seed, items)

    def report(stage: str, k: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, k, total)

    if todo:
        prompts = [cot_prompt(task, items[i], instructions) for i in todo]
        traces = backend.generate(prompts, trace_cfg, seeds=[seeds[i] for i in todo])
        for k, (i, tr) in enumerate(zip(todo, traces, strict=True)):
            report("labelling prefixes", k, len(todo))
            row = _label_item(backend, task, items[i], tr, seeds[i], trace_cfg, cont_cfg, settings,
                              max_points)  # fmt: skip
            done[items[i].id] = row
            if path is not None:
                with Path(path).open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        report("labelling prefixes", len(todo), len(todo))
    return _assemble(backend, items, done, layer, settings, report)


def _label_item(backend, task, item, trace, seed, trace_cfg, cont_cfg, settings, max_points):
    p_ids = backend.prompt_ids(
        trace.prompt, chat_template=trace_cfg.chat_template, system_prompt=trace_cfg.system_prompt
    )
    ids = trace.token_ids.tolist()
    forced = None
    if settings["rule"] == "stable":
        steps = [p for p in cue_positions(trace.tokens, settings["cues"]) if p < len(ids) - 1]
        pre = backend.encode(settings["answer_prefix"])
        conts = greedy_continue(backend, [p_ids + ids[: p + 1] + pre for p in steps], 6)
        forced = [task.extract(item, settings["answer_prefix"] + c.text) for c in conts]
    points = estimation_positions(
        trace.tokens, settings["rule"], cues=settings["cues"], every=settings["every"],
        forced_answers=forced, patience=settings["patience"],
    )[:max_points]  # fmt: skip
    prefixes = [-1, *points]
    n = settings["num_continuations"]
    successes = [0] * len(prefixes)
    if n > 0:  # n = 0: positions and hidden states only (evaluation items)
        batch = list(backend.generate(
            [p_ids + ids[: p + 1] for p in prefixes], replace(cont_cfg, seed=seed % (2**62) + 1)
        ))  # fmt: skip
        for j, p in enumerate(prefixes):
            head = backend.decode(ids[: p + 1]) if p >= 0 else ""
            conts = batch[j * n : (j + 1) * n]
            successes[j] = sum(bool(task.grade(item, head + c.text).correct) for c in conts)
    correct = bool(task.grade(item, trace.text).correct)
    return {
        "id": item.id,
        "prompt_ids": p_ids,
        "trace_ids": ids,
        "positions": [*prefixes, len(ids) - 1],
        "successes": [*successes, max(n, 1) * int(correct)],
        "trials": n,
        "trace_correct": correct,
        "mean_logprob": float(trace.logprob.double().mean()) if ids else 0.0,
        "mean_entropy": float(trace.entropy.double().mean()) if ids else 0.0,
    }


def _assemble(backend, items, rows, layer, settings, report) -> PrefixLabels:
    seqs, pos, meta_rows = [], [], []
    for i, it in enumerate(items):
        r = rows[it.id]
        n_p = len(r["prompt_ids"])
        seqs.append(r["prompt_ids"] + r["trace_ids"])
        pos.append([n_p + p for p in r["positions"]])
        last = len(r["positions"]) - 1
        for s, (p, k) in enumerate(zip(r["positions"], r["successes"], strict=True)):
            trials = max(r["trials"], 1) if s == last else r["trials"]
            meta_rows.append((k, trials, i, s, p, s == last, r["trace_correct"],
                              r["mean_logprob"], r["mean_entropy"]))  # fmt: skip
    report("reading hidden states", 0, len(seqs))
    feats = torch.cat(hidden_at(backend, seqs, pos, layer))
    report("reading hidden states", len(seqs), len(seqs))
    cols = list(zip(*meta_rows, strict=True))
    return PrefixLabels(
        features=feats,
        successes=torch.tensor(cols[0], dtype=torch.int64),
        trials=torch.tensor(cols[1], dtype=torch.int64),
        item=torch.tensor(cols[2], dtype=torch.int64),
        step=torch.tensor(cols[3], dtype=torch.int64),
        position=torch.tensor(cols[4], dtype=torch.int64),
        final=torch.tensor(cols[5], dtype=torch.bool),
        trace_correct=torch.tensor(cols[6], dtype=torch.bool),
        trace_logprob=torch.tensor(cols[7], dtype=torch.float64),
        trace_entropy=torch.tensor(cols[8], dtype=torch.float64),
        item_ids=tuple(it.id for it in items),
        layer=layer,
        meta=settings,
    )
