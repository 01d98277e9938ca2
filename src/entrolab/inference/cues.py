"""Text-level helpers of the cue-based methods (LYNX, ConCISE, debate): cue detection on token
pieces, chain-of-thought prompts and the log-probability of an answer's span.

A cue "fires" at the token that contains the cue string's last character
(:func:`cue_positions`, :func:`cue_hit`). Pure Python: no model, no tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from entrolab.errors import EntrolabError

__all__ = ["COT_INSTRUCTIONS", "cot_prompt", "cue_hit", "cue_positions", "span_logprob"]

#: Instructions that replace a task's own (e.g. "Answer with just the number.") for CoT traces.
COT_INSTRUCTIONS = "Think step by step, one step per line, then give the final answer."


def cue_hit(before: str, piece: str, cues: Sequence[str]) -> bool:
    """Whether a cue occurrence ends inside ``piece`` (the text a token adds after ``before``)."""
    if not piece:
        return False
    for cue in cues:
        window = before[len(before) - len(cue) + 1 :] if len(cue) > 1 else ""
        text = window + piece
        start = text.find(cue)
        while start != -1:
            if start + len(cue) > len(window):
                return True
            start = text.find(cue, start + 1)
    return False


def cue_positions(
    pieces: Sequence[str], cues: Sequence[str], *, min_position: int = 0
) -> list[int]:
    """0-based indices of the tokens at which a cue fires, ascending (each token at most once).

    Args:
        pieces: the text each token adds (``Trace.tokens``).
        cues: cue strings, matched case-sensitively ("\\n", "Step", "wait", …).
        min_position: ignore tokens before this index.

    Example: pieces ``["1+1", "=2", ".\\n", "So", "\\n\\n"]``, cues ``["\\n"]`` → ``[2, 4]``.
    """
    if not cues or any(not isinstance(c, str) or not c for c in cues):
        raise EntrolabError(f"cues must be non-empty strings, got {list(cues)!r}")
    out, text = [], ""
    for t, piece in enumerate(pieces):
        if t >= min_position and cue_hit(text, piece, cues):
            out.append(t)
        text += piece
    return out


def cot_prompt(task: Any, item: Any, instructions: str = COT_INSTRUCTIONS) -> str:
    """``item.prompt`` with the task's own instructions (if it ends with them) replaced by
    ``instructions``, so the model reasons before answering."""
    prompt = item.prompt.strip()
    own = (getattr(task, "instructions", "") or "").strip()
    if own and prompt.endswith(own):
        prompt = prompt[: -len(own)].rstrip()
    return f"{prompt} {instructions}".strip()


def span_logprob(pieces: Sequence[str], logprobs: Sequence[float], answer: str) -> float | None:
    """Sum of the log-probabilities (nats) of the tokens that overlap the LAST occurrence of
    ``answer`` in ``"".join(pieces)``; None if ``answer`` does not occur. Exp of it is the
    probability the model gave to writing that answer there."""
    text = "".join(pieces)
    at = text.rfind(answer) if answer else -1
    if at < 0:
        return None
    lo, hi, total, pos = at, at + len(answer), 0.0, 0
    for piece, lp in zip(pieces, logprobs, strict=True):
        end = pos + len(piece)
        if end > lo and pos < hi:
            total += float(lp)
        pos = end
    return total
