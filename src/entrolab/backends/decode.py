"""Helpers shared by the backends: per-step statistic buffers, step hooks, token pieces.

Padding, the preallocated KV cache and the decode loop itself live in
:mod:`entrolab.decoding.loop` (one loop for every in-process generation); they are re-exported
here for the backends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from entrolab.decoding.loop import decode_loop, pad_batch, preallocated_cache
from entrolab.errors import EntrolabError
from entrolab.signals import TokenStatistics

__all__ = [
    "StepBuffers",
    "StepHook",
    "StopStrings",
    "call_step_hook",
    "chat_prompt_ids",
    "cut_at_stop",
    "decode_loop",
    "pad_batch",
    "preallocated_cache",
    "replay_step_hook",
    "token_pieces",
]


@dataclass
class StepBuffers:
    """Per-row statistics for a batch of rows, filled one column (step) at a time.

    Shapes: R rows, N steps (tokens), K top-k alternatives.
    """

    token_ids: torch.Tensor  # int64 [R, N]
    logprob: torch.Tensor  # float32 [R, N]
    entropy: torch.Tensor
    varentropy: torch.Tensor
    self_certainty: torch.Tensor
    rank: torch.Tensor  # int64 [R, N]
    topk_ids: torch.Tensor  # int64 [R, N, K]
    topk_logprobs: torch.Tensor  # float32 [R, N, K]

    @classmethod
    def empty(cls, rows: int, steps: int, k: int) -> StepBuffers:
        f = torch.zeros(rows, steps)
        return cls(
            torch.zeros(rows, steps, dtype=torch.int64),
            f,
            f.clone(),
            f.clone(),
            f.clone(),
            torch.zeros(rows, steps, dtype=torch.int64),
            torch.zeros(rows, steps, k, dtype=torch.int64),
            torch.zeros(rows, steps, k),
        )

    def write(
        self, rows: torch.Tensor, step: int | torch.Tensor, chosen: torch.Tensor, s: TokenStatistics
    ) -> None:
        """Store step statistics for ``rows`` at column(s) ``step``."""
        self.token_ids[rows, step] = chosen
        self.logprob[rows, step] = s.logprob
        self.entropy[rows, step] = s.entropy
        self.varentropy[rows, step] = s.varentropy
        self.self_certainty[rows, step] = s.self_certainty
        self.rank[rows, step] = s.rank
        self.topk_ids[rows, step] = s.topk_ids
        self.topk_logprobs[rows, step] = s.topk_logprobs


class StopStrings:
    """Stop-string detection inside a decode loop, and the cut of the final text.

    A row stops once its recent tokens decode to text containing a stop string (only the last
    ``max bytes + 1`` tokens are decoded each step). With ``ignore_leading_whitespace`` the
    search starts after the completion's leading whitespace (the whole completion is decoded),
    so e.g. a newline stop does not fire on a reply that begins with a newline.

    Args:
        stop: the stop strings (empty: never stops).
        decode_raw: ids -> text with special tokens kept (tail checks).
        decode_text: ids -> text with special tokens removed (whole-completion checks).
    """

    def __init__(
        self,
        stop: Sequence[str],
        ignore_leading_whitespace: bool,
        decode_raw: Callable[[Sequence[int]], str],
        decode_text: Callable[[Sequence[int]], str],
    ) -> None:
        self.stop, self.lead = tuple(stop), bool(ignore_leading_whitespace)
        self.decode_raw, self.decode_text = decode_raw, decode_text
        self.max_bytes = max((len(s.encode()) for s in self.stop), default=0)

    def hits(
        self, active: torch.Tensor, finished: torch.Tensor, token_ids: torch.Tensor, step: int
    ) -> list[int]:
        """Positions j (into ``active``) of unfinished rows whose text now holds a stop string.

        ``token_ids`` [R, N] holds every row's tokens through column ``step``."""
        if not self.max_bytes:
            return []
        out = []
        for j in (~finished).nonzero().flatten().tolist():
            r = int(active[j])
            if self.lead:
                text = self.decode_text(token_ids[r, : step + 1].tolist()).lstrip()
            else:
                tail = token_ids[r, max(0, step + 1 - self.max_bytes - 1) : step + 1]
                text = self.decode_raw(tail.tolist())
            if any(s in text for s in self.stop):
                out.append(j)
        return out

    def cut(self, text: str) -> str:
        """``text`` cut before its first stop string (see :func:`cut_at_stop`)."""
        return cut_at_stop(text, self.stop, ignore_leading_whitespace=self.lead)


def cut_at_stop(text: str, stop: Sequence[str], *, ignore_leading_whitespace: bool = False) -> str:
    """``text`` up to (not including) the first of the ``stop`` strings it contains, searching
    after its leading whitespace with ``ignore_leading_whitespace``; unchanged when none occurs."""
    start = len(text) - len(text.lstrip()) if ignore_leading_whitespace else 0
    found = [text.find(s, start) for s in stop if s in text[start:]]
    return text[: min(found)] if found else text


#: step_hook(rows [R] int64, step, stats of the tokens just chosen) -> stop [R] bool.
#: ``rows`` are call-global row indices (prompt_index * num_samples + sample index within the
#: call) of the rows still active; a row whose entry is True ends after this token
#: (finish_reason ``"stopped"``) and leaves the batch.
StepHook = Callable[[torch.Tensor, int, TokenStatistics], torch.Tensor]


def call_step_hook(
    hook: StepHook, rows: torch.Tensor, step: int, stats: TokenStatistics
) -> torch.Tensor:
    """Run ``hook`` and check it returned one bool flag per active row (CPU bool [R])."""
    stop = hook(rows, step, stats)
    if not isinstance(stop, torch.Tensor) or stop.shape != rows.shape:
        raise EntrolabError(
            f"step_hook must return a bool tensor of shape {tuple(rows.shape)} (one flag per "
            f"active row), got {getattr(stop, 'shape', type(stop).__name__)}"
        )
    return stop.to(torch.bool).cpu()


def replay_step_hook(
    traces: Sequence[Any], hook: StepHook, num_samples: int, sample_offset: int = 0
) -> list[Any]:
    """Apply a per-step stopping rule after generation, for backends without step hooks.

    Feeds each step's stored statistics to ``hook`` exactly as a decode loop would (rows still
    active, call-global row ids ``prompt_index * num_samples + sample_index - sample_offset``)
    and cuts every trace the rule stops right after that token, with
    ``finish_reason="stopped"``. The traces (and so votes and confidences) are those an online
    stop would give; no compute is saved. Rows are the traces of one ``generate`` call.

    Args:
        traces: R traces of one call, ordered by prompt then sample.
        hook: the step hook (e.g. DeepConf's ``ConfidenceStopHook``).
    Returns:
        R traces, cut where the rule fired.
    """
    rows = torch.tensor(
        [t.prompt_index * num_samples + t.sample_index - sample_offset for t in traces]
    )
    lengths = torch.tensor([len(t) for t in traces])
    cut = lengths.clone()
    hit = torch.zeros(len(traces), dtype=torch.bool)
    active = torch.arange(len(traces))
    step = 0
    while active.numel():
        cols = [traces[int(r)] for r in active]

        def field(name: str, default: float = 0.0, cols=cols, step=step) -> torch.Tensor:
            vals = [getattr(t, name) for t in cols]
            if any(v is None for v in vals):
                return torch.full((len(cols),), default)
            return torch.stack([v[step] for v in vals])

        stats = TokenStatistics(
            field("logprob"),
            field("entropy"),
            field("varentropy"),
            field("self_certainty", math.nan),
            field("rank", -1).to(torch.int64),
            torch.stack([t.topk_ids[step] for t in cols]),
            torch.stack([t.topk_logprobs[step] for t in cols]),
        )
        stop = call_step_hook(hook, rows[active], step, stats)
        ends = step + 1 >= lengths[active]
        cut[active[stop]] = step + 1
        hit[active[stop]] = True
        active = active[~(stop | ends)]
        step += 1
    # as in the decode loop: a rule firing at a trace's last token marks it "stopped" unless
    # that token is EOS (EOS is checked first)
    return [
        t.head(n, finish_reason="stopped") if h and (n < len(t) or t.finish_reason != "eos") else t
        for t, n, h in zip(traces, cut.tolist(), hit.tolist(), strict=True)
    ]


def chat_prompt_ids(
    tokenizer: Any,
    prompt: str | Sequence[Any],
    *,
    chat_template: bool = True,
    system_prompt: str | None = None,
) -> list[int]:
    """Token ids of ``prompt`` as a transformers tokenizer's model sees it: a user message (after
    an optional system message) in the chat template with the generation prompt added, or the
    plain text (with the tokenizer's special tokens) when there is no template or
    ``chat_template`` is False.

    ``prompt`` may also be a whole conversation: a list of ``{"role", "content"}`` messages
    (roles ``system``, ``user``, ``assistant``; the last one a user message), rendered with the
    chat template (``system_prompt`` is put first unless the list has a system message)."""
    if not isinstance(prompt, str):
        return _conversation_ids(tokenizer, prompt, chat_template, system_prompt)
    if not prompt.strip():
        raise EntrolabError("prompt is empty; give the model some text to respond to")
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def _conversation_ids(
    tokenizer: Any, messages: Sequence[Any], chat_template: bool, system_prompt: str | None
) -> list[int]:
    if not chat_template or not getattr(tokenizer, "chat_template", None):
        raise EntrolabError(
            "a conversation (message list) needs the model's chat template; this tokenizer has "
            "none (or chat_template=False): give the prompt as text instead"
        )
    clean = []
    for i, m in enumerate(messages):
        role, content = (m.get("role"), m.get("content")) if hasattr(m, "get") else (None, None)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise EntrolabError(
                f"message {i} must be {{'role': 'system'|'user'|'assistant', 'content': str}}, "
                f"got {m!r}"
            )
        clean.append({"role": role, "content": content})
    if not clean or clean[-1]["role"] != "user" or not clean[-1]["content"].strip():
        raise EntrolabError("a conversation must end with a non-empty user message")
    if system_prompt and clean[0]["role"] != "system":
        clean.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, from differences of prefix decodes.

    A token that ends inside a multi-byte character adds "" and the token completing the
    character adds all of it, so the pieces always concatenate to the decoded text.
    """
    if not ids:
        return []
    prefixes = tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))])
    pieces, prev = [], ""
    for i, cur in enumerate(prefixes):
        stable = cur.rstrip("\ufffd")  # an incomplete character decodes to U+FFFD
        if stable.startswith(prev):
            pieces.append(stable[len(prev) :])
        else:  # the tokenizer rewrote earlier text: fall back to the lone token
            pieces.append(tokenizer.decode([ids[i]]))
        prev = stable
    pieces[-1] += prefixes[-1][len(prev) :]  # invalid trailing bytes stay visible
    return pieces
