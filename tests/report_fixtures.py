"""Hand-built traces for the report tests (no model needed)."""

from __future__ import annotations

import math

import torch

from entrolab.types import Trace

#: The hand-computed trace: 5 tokens.
#: entropy  = [0.5, 2.0, 0.1, 1.5, 3.0]                → mean 7.1 / 5 = 1.42 nats
#: p(chosen)= [1/2, 1/4, 1, 1/2, 1/8]                  → product 1/128,
#:            mean logprob = ln(1/128) / 5 = -(7/5) ln 2 ≈ -0.970406, perplexity = 2^(7/5) ≈ 2.639016
#: top-2 logprobs rows give DeepConf confidences C = -(a + b) / 2:
#:   [-1,-3]→2, [-0.5,-1.5]→1, [-2,-6]→4, [-1,-5]→3, [-0.25,-0.75]→0.5 → mean 10.5 / 5 = 2.1
HAND_ENTROPY = [0.5, 2.0, 0.1, 1.5, 3.0]
HAND_P = [0.5, 0.25, 1.0, 0.5, 0.125]
HAND_TOPK_LOGPROBS = [[-1.0, -3.0], [-0.5, -1.5], [-2.0, -6.0], [-1.0, -5.0], [-0.25, -0.75]]
HAND_TOKENS = ("The", " cat", " sat", "\n", " down")


def make_trace(
    tokens: tuple[str, ...],
    entropy: list[float],
    p: list[float],
    *,
    token_ids: list[int] | None = None,
    topk_ids: list[list[int]] | None = None,
    topk_logprobs: list[list[float]] | None = None,
    prompt: str = "What did the cat do?",
    prompt_index: int = 0,
    sample_index: int = 0,
) -> Trace:
    """A Trace from plain lists; chosen-token probabilities ``p`` become logprobs ``ln p``."""
    n = len(tokens)
    ids = token_ids if token_ids is not None else list(range(100, 100 + n))
    if topk_ids is None:
        topk_ids = [[i, 1] for i in ids]
    if topk_logprobs is None:
        topk_logprobs = [[math.log(q), math.log(max(1e-9, 1 - q))] for q in p]
    shape = (n, len(topk_ids[0]) if n else 0)
    return Trace(
        prompt=prompt,
        text="".join(tokens),
        token_ids=ids,
        tokens=tokens,
        logprob=[math.log(q) for q in p],
        entropy=entropy,
        varentropy=[0.0] * n,
        topk_ids=torch.tensor(topk_ids, dtype=torch.int64).reshape(shape),
        topk_logprobs=torch.tensor(topk_logprobs, dtype=torch.float32).reshape(shape),
        prompt_index=prompt_index,
        sample_index=sample_index,
        model="tiny-test",
    )


def hand_trace(**kwargs) -> Trace:
    """The hand-computed 5-token trace documented above."""
    return make_trace(
        HAND_TOKENS,
        HAND_ENTROPY,
        HAND_P,
        token_ids=[200 + i for i in range(5)],
        topk_ids=[[200 + i, 7] for i in range(5)],
        topk_logprobs=HAND_TOPK_LOGPROBS,
        **kwargs,
    )


#: Model output that tries to break out of the page: markup, quotes, ampersands, newlines.
HOSTILE_TOKENS = (
    "<script>alert(1)</script>",
    ' said "hi"',
    " & ",
    "\n",
    "[bold]x[/bold]",
    "\u2028",
    "</script>",
    " <img src=x onerror=alert(3)>",
    "\n",
    "end",
    "\x1b[2J\u202e",
)


def hostile_trace(sample_index: int = 0) -> Trace:
    """An 11-token trace of :data:`HOSTILE_TOKENS` (the last one clears a terminal screen and
    reverses text direction if printed raw). Token 1 has p = 0.25 (logprob ln 0.25), and its
    top-2 alternatives are id 7 (p = 0.5) and its own id 101 (p = 0.25), so its rank is 1."""
    n = len(HOSTILE_TOKENS)
    p = [0.9, 0.25, 0.6, 0.99, 0.5, 0.7, 0.8, 0.3, 0.95, 0.4, 0.9]
    entropy = [0.2, 1.4, 0.8, 0.05, 2.5, 1.0, 0.6, 3.4, 0.1, 1.9, 0.3]
    ids = list(range(100, 100 + n))
    topk_ids = [[i, 7] for i in ids]
    topk_lps = [[math.log(q), math.log(1 - q)] for q in p]
    topk_ids[1] = [7, 101]
    topk_lps[1] = [math.log(0.5), math.log(0.25)]
    return make_trace(
        HOSTILE_TOKENS,
        entropy,
        p,
        token_ids=ids,
        topk_ids=topk_ids,
        topk_logprobs=topk_lps,
        prompt='Say <b>"hi"</b> & <script>alert("prompt")</script>',
        sample_index=sample_index,
    )
