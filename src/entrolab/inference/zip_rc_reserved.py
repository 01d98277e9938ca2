"""ZIP-RC's reserved-vocabulary head (Manvi et al. 2025, arXiv:2512.01457): the joint
(reward bin × remaining-length bin) prediction is read from a contiguous slice of the model's own
vocabulary logits, so it comes out of the same forward pass as the next-token distribution.

As the official code does (``rohinmanvi/ZIP-RC``, ``src/score_with_ziprc_joint_head.py`` and
``src/train_ziprc_head_only.py`` @63281ba): with ``d`` the first reserved token id and
``N = R · L`` bins, ``P(b, ℓ | prefix) = softmax(W[d : d + N] h)`` reshaped reward-major to
[R, L] (class = b · L + ℓ), ``h`` the final (post-norm) hidden state that the LM head reads and
``W`` the LM head's weight (bias-free here, as in Llama-family heads); the head-only training
fits only those rows by cross-entropy with the body frozen (:func:`fit_reserved_rows`, L-BFGS
with an L2 penalty instead of their AdamW). The reserved ids must never be sampled: the
``mask_ids`` sampler sets their logits to −inf (:func:`mask_reserved`).

The rows must be *unused*: ids past the tokenizer's vocabulary (:func:`unused_rows`). A model
without such rows (SmolLM2-135M: 49152 rows, 49152 tokens) can get some with
:func:`add_reserved_rows` (``resize_token_embeddings``) before it is wrapped in a backend; else
use the separate probe head (:func:`~entrolab.inference.zip_rc.fit_zip_rc` ``head="probe"``).

Here the strategy reads the slice with one forward pass at its decision point (the decode loop
does not hand its per-step logits to strategies), so the saving of the same-pass read is not
realised; the prediction itself is the same-pass one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from entrolab.backends.base import Backend, torch_model
from entrolab.decoding.mask import mask_ids as mask_reserved
from entrolab.errors import EntrolabError

__all__ = [
    "MASK_SAMPLER",
    "add_reserved_rows",
    "final_states",
    "fit_reserved_rows",
    "install_reserved_rows",
    "mask_reserved",
    "reserved_joint",
    "reserved_logits",
    "unused_rows",
]

#: the sampler that keeps the reserved ids from being sampled (``mask_reserved`` per step)
MASK_SAMPLER = "mask_ids"


# ------------------------------------------------------------------------------ pure maths
def reserved_joint(logits: Any, start: int, n_reward: int, n_len: int) -> np.ndarray:
    """P(b, ℓ) float64 [..., R, L] from logits [..., V]: softmax over ids start … start + R·L − 1
    (the rest of the vocabulary ignored), reshaped reward-major (id start + b·L + ℓ)."""
    z = torch.as_tensor(logits)
    nb = n_reward * n_len
    if z.shape[-1] < start + nb or start < 0:
        raise EntrolabError(
            f"the reserved slice {start}…{start + nb - 1} does not fit logits of width "
            f"{z.shape[-1]}"
        )
    p = torch.softmax(z[..., start : start + nb].double(), dim=-1)
    return p.reshape(*z.shape[:-1], n_reward, n_len).numpy()


def fit_reserved_rows(
    features: Any, labels: Any, num_bins: int, *, l2: float = 1e-3, max_iter: int = 500
) -> torch.Tensor:
    """Rows W float32 [num_bins, H] minimising mean CE(softmax(W h_i), y_i) + (l2 / 2)·‖W‖²
    over final hidden states ``features`` [N, H] and bin labels [N] (bias-free multinomial
    logistic regression, convex: L-BFGS from zero, float64)."""
    x = torch.as_tensor(features).detach().double()
    y = torch.as_tensor(labels).long()
    if x.dim() != 2 or x.shape[0] == 0 or y.shape != (x.shape[0],):
        raise EntrolabError(f"need features [N, H] (N >= 1) and N labels, got {tuple(x.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= num_bins:
        raise EntrolabError(f"labels must lie in 0..{num_bins - 1}")
    w = torch.zeros(num_bins, x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float()


# ------------------------------------------------------------------------------ the model side
def _output_weight(backend: Backend, purpose: str) -> torch.Tensor:
    head = torch_model(backend, purpose).get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise EntrolabError(f"{purpose} needs a bias-free LM head (Llama-style)")
    return head.weight


def unused_rows(backend: Backend) -> tuple[int, int]:
    """(first unused id, how many): LM-head rows past the tokenizer's vocabulary."""
    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        raise EntrolabError("the reserved-token head needs a backend with a tokenizer (HFBackend)")
    rows = int(_output_weight(backend, "the ZIP-RC reserved-token head").shape[0])
    return len(tok), rows - len(tok)


def add_reserved_rows(model: Any, count: int) -> int:
    """Give a transformers model ``count`` more vocabulary rows (``resize_token_embeddings``,
    new rows at the mean of the old ones) for a reserved head; returns the first new id. Call
    it before wrapping the model in a backend (its vocabulary size is read there)."""
    if count < 1:
        raise EntrolabError(f"count must be >= 1, got {count}")
    start = int(model.get_output_embeddings().weight.shape[0])
    model.resize_token_embeddings(start + count, mean_resizing=True)
    return start


def install_reserved_rows(backend: Backend, start: int, weight: Any) -> None:
    """Write ``weight`` [N, H] into LM-head rows start … start + N − 1 (unused rows only)."""
    first_free, free = unused_rows(backend)
    w = torch.as_tensor(weight)
    head = _output_weight(backend, "the ZIP-RC reserved-token head")
    if start < first_free or start + w.shape[0] > first_free + free:
        raise EntrolabError(
            f"the reserved head needs {w.shape[0]} unused vocabulary rows from id {start}, but "
            f"{backend.name!r} has {free} unused rows (ids {first_free}…{first_free + free - 1})"
            "; add rows with add_reserved_rows(model, N) before loading, or fit the separate "
            "head (fit_zip_rc(head='probe'), `entrolab fit zip-rc --head probe`)"
        )
    if w.shape[1] != head.shape[1]:
        raise EntrolabError(f"reserved rows of width {w.shape[1]} for a {head.shape[1]}-wide head")
    with torch.no_grad():
        head[start : start + w.shape[0]] = w.to(head.dtype)


@torch.inference_mode()
def _forward(backend: Backend, seq: Sequence[int]):
    model = torch_model(backend, "the ZIP-RC reserved-token head")
    ids = torch.tensor([list(seq)], device=model.device)
    return model(input_ids=ids, output_hidden_states=True, use_cache=False)


def final_states(
    backend: Backend, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """The final (post-norm) hidden states that the LM head reads, float32 [P_i, H] at
    ``positions[i]`` of each token sequence (one forward per sequence)."""
    return [_forward(backend, s).hidden_states[-1][0, list(p)].float().cpu()
            for s, p in zip(seqs, positions, strict=True)]  # fmt: skip


def reserved_logits(backend: Backend, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """The model's full next-token logits float32 [n, V] at the last position of each sequence
    (where the strategy reads the reserved slice)."""
    return torch.stack([_forward(backend, s).logits[0, -1].float().cpu() for s in seqs])
