"""Epiplexity: split a stream's information into learnable structure and residue (Finzi, Qiu,
Jiang, Izmailov, Kolter & Wilson 2026, arXiv:2601.03220; spec B21), by prequential coding.

A small causal transformer is trained online on a token stream, one batch at a time; ``L_i`` is
the mean loss (nats per token) on batch i *before* training on it. With ``n_i`` tokens per
batch, N = Σ n_i and ``L_final`` the final model's mean loss on fresh data from the same
stream (``eval_batches`` held-out batches):

* prequential codelength ``Σ_i L_i n_i`` (nats);
* time-bounded entropy ``Ĥ_T ≈ N · L_final`` (what the trained observer still cannot predict);
* epiplexity ``Ŝ_T ≈ Σ_i (L_i − L_final) n_i`` (area under the loss curve above the final
  loss: structure the observer learned).

The constants of the paper's estimator are [R] in the spec; this is the plain prequential form.
Streams (:func:`make_stream`): ``"sums"`` (``a+b=c`` lines with correct sums), ``"random_sums"``
(the same lines with a random c), ``"digits"`` (uniform random characters of the same
alphabet) and ``"periodic"`` (a fixed repeating string). Expected ordering (spec):
S(sums) ≫ S(random_sums) > S(digits) ≈ 0, with H largest for digits; a periodic stream has
H → 0. Randomness comes from explicit seeds (the torch RNG is forked).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from entrolab.errors import EntrolabError

ALPHABET = "0123456789+=\n"
Stream = Literal["sums", "random_sums", "digits", "periodic"]
STREAMS = ("sums", "random_sums", "digits", "periodic")

__all__ = ["ALPHABET", "STREAMS", "EpiplexityResult", "make_stream", "prequential_epiplexity"]


def make_stream(kind: Stream, n_chars: int, *, seed: int = 0, max_operand: int = 99) -> str:
    """A character stream of length ``n_chars`` over :data:`ALPHABET`.

    Args:
        kind: ``"sums"`` (lines ``a+b=c`` with c = a + b, a, b uniform in 0 … max_operand),
            ``"random_sums"`` (c uniform in 0 … 2·max_operand instead), ``"digits"`` (each
            character uniform over the alphabet), ``"periodic"`` (``"12+34=46\\n"`` repeated).
        n_chars: length of the stream.
        seed: generator seed.
    """
    if kind not in STREAMS:
        raise EntrolabError(f"unknown stream {kind!r}; choose one of {', '.join(STREAMS)}")
    if n_chars < 1:
        raise EntrolabError(f"n_chars must be >= 1, got {n_chars}")
    rng = np.random.default_rng(seed)
    if kind == "digits":
        return "".join(rng.choice(list(ALPHABET), size=n_chars))
    if kind == "periodic":
        unit = "12+34=46\n"
        return (unit * (n_chars // len(unit) + 1))[:n_chars]
    parts: list[str] = []
    total = 0
    while total < n_chars:
        a, b = (int(v) for v in rng.integers(0, max_operand + 1, 2))
        c = a + b if kind == "sums" else int(rng.integers(0, 2 * max_operand + 1))
        line = f"{a}+{b}={c}\n"
        parts.append(line)
        total += len(line)
    return "".join(parts)[:n_chars]


class _TinyLM(torch.nn.Module):
    """A 2-layer causal transformer over a small vocabulary (learned positions)."""

    def __init__(self, vocab: int, context: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d_model)
        self.pos = torch.nn.Embedding(context, d_model)
        layer = torch.nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.0, batch_first=True
        )
        self.body = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d_model, vocab)
        self.register_buffer(
            "causal", torch.triu(torch.full((context, context), float("-inf")), 1), persistent=False
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        h = self.tok(ids) + self.pos(torch.arange(t))
        return self.head(self.body(h, mask=self.causal[:t, :t]))


@dataclass(frozen=True)
class EpiplexityResult:
    """Prequential estimates for one stream and seed (nats; per-token values in nats/token).

    Attributes:
        epiplexity: Ŝ_T = Σ (L_i − L_final) n_i.
        time_bounded_entropy: Ĥ_T = N · L_final.
        codelength: Σ L_i n_i (= Ŝ_T + Ĥ_T).
        final_loss: L_final; first_loss: L_0 (before any training).
        n_tokens: N, predicted tokens in the stream.
        losses: L_i per batch.
    """

    epiplexity: float
    time_bounded_entropy: float
    codelength: float
    final_loss: float
    first_loss: float
    n_tokens: int
    losses: list[float] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encode(text: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(ALPHABET)}
    bad = sorted(set(text) - set(index))
    if bad:
        raise EntrolabError(f"stream holds characters outside the alphabet: {bad[:5]!r}")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def _batches(ids: torch.Tensor, context: int, batch: int) -> list[torch.Tensor]:
    """Consecutive [batch, context + 1] windows (inputs + next-token targets), in stream order."""
    span = context + 1
    rows = ids[: (ids.numel() // span) * span].reshape(-1, span)
    return [rows[i : i + batch] for i in range(0, rows.shape[0] - batch + 1, batch)]


def prequential_epiplexity(
    stream: str,
    *,
    held_out: str | None = None,
    context: int = 32,
    batch: int = 16,
    d_model: int = 32,
    layers: int = 2,
    heads: int = 2,
    lr: float = 3e-3,
    steps_per_batch: int = 1,
    eval_batches: int = 4,
    seed: int = 0,
) -> EpiplexityResult:
    """Train a tiny causal transformer online on ``stream`` and return the prequential split.

    Args:
        stream: the text (characters of :data:`ALPHABET`), consumed once, in order.
        held_out: fresh text from the same source for ``L_final`` (default: the stream's last
            ``eval_batches`` batches are held out of training and used instead).
        context, batch: tokens per row and rows per batch (a batch predicts
            ``batch · context`` tokens).
        d_model, layers, heads: model size. lr, steps_per_batch: Adam steps on each batch after
            it was scored.
        eval_batches: batches used for L_final.
        seed: initialisation seed.
    """
    train = _batches(_encode(stream), context, batch)
    if held_out is not None:
        evals = _batches(_encode(held_out), context, batch)[:eval_batches]
    else:
        train, evals = train[:-eval_batches], train[-eval_batches:]
    if len(train) < 2 or not evals:
        raise EntrolabError(
            f"the stream gives {len(train)} training and {len(evals)} evaluation batches of "
            f"{batch}×{context + 1} characters; make it longer or the batches smaller"
        )
    loss_fn = torch.nn.CrossEntropyLoss()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _TinyLM(len(ALPHABET), context, d_model, layers, heads)
        opt = torch.optim.Adam(model.parameters(), lr=lr)

        def loss_of(rows: torch.Tensor) -> torch.Tensor:
            logits = model(rows[:, :-1])
            return loss_fn(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))

        losses = []
        for rows in train:
            with torch.no_grad():
                losses.append(float(loss_of(rows)))
            for _ in range(steps_per_batch):
                opt.zero_grad()
                loss_of(rows).backward()
                opt.step()
        with torch.no_grad():
            final = float(np.mean([float(loss_of(r)) for r in evals]))
    per_batch = batch * context
    n = per_batch * len(train)
    excess = float(np.sum(np.asarray(losses) - final)) * per_batch
    return EpiplexityResult(
        epiplexity=excess,
        time_bounded_entropy=n * final,
        codelength=float(np.sum(losses)) * per_batch,
        final_loss=final,
        first_loss=losses[0],
        n_tokens=n,
        losses=losses,
    )


def uniform_loss() -> float:
    """log |ALPHABET| (nats/token): the loss of a model that learned only the alphabet."""
    return math.log(len(ALPHABET))
