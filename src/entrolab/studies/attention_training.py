"""Language-model fine-tuning with the attention-entropy regulariser as a loss option (spec B20),
and the before/after measurement of attention entropy it is judged by.

:func:`finetune_lm` trains a causal LM on texts with next-token cross-entropy, plus — when
``coeff > 0`` — the penalty of :class:`~entrolab.studies.attention.AttentionEntropyRegularizer`
(learnable per-head thresholds trained with the model, as in the reference code). ``coeff = 0``
is plain fine-tuning on the same batches, the control arm. :func:`attention_profile` measures,
per text, the mean raw and position-normalised attention entropy of every (layer, head), the
regulariser's penalty at its initial thresholds and the text's cross-entropy.

Models are passed in (a transformers causal LM and its tokenizer); randomness comes from the
``seed`` argument (torch RNG forked, global state untouched); the caller sets thread counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from entrolab.errors import EntrolabError
from entrolab.studies.attention import (
    AttentionEntropyRegularizer,
    attention_maps,
    head_entropy_table,
    lm_loss_with_attention_entropy,
)

__all__ = ["attention_profile", "finetune_lm"]


def _batch(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = [tokenizer.encode(t) for t in texts]
    width = max(len(e) for e in enc)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(enc), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):  # right padding: causal rows of real tokens never see padding
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids, mask


def finetune_lm(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    coeff: float,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-5,
    threshold_lr: float = 1e-2,
    gamma: float = 0.2,
    init_threshold: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``texts`` with CE (+ ``coeff`` × attention penalty).

    Args:
        model: a transformers causal LM (switched to eager attention: the penalty needs maps).
        tokenizer: its tokenizer; texts: training texts (batches drawn in a seeded order).
        coeff: regulariser coefficient (0 = plain CE; the reference uses 1e-5).
        steps: optimizer steps; batch_size: texts per step.
        lr: AdamW learning rate of the model; threshold_lr: of the per-head thresholds.
        gamma, init_threshold: the regulariser's tolerance and initial θ_h (see
            :class:`~entrolab.studies.attention.AttentionEntropyRegularizer`).
        seed: batch order.
    Returns:
        ``{"ce": [steps], "penalty": [steps] (already × coeff; 0 for coeff = 0),
        "thresholds": [heads] final θ_h}``.
    """
    if steps < 1 or batch_size < 1 or not texts:
        raise EntrolabError("need steps ≥ 1, batch_size ≥ 1 and at least one training text")
    if coeff < 0:
        raise EntrolabError(f"coeff must be ≥ 0, got {coeff}")
    model.set_attn_implementation("eager")
    heads = int(model.config.num_attention_heads)
    reg = AttentionEntropyRegularizer(
        heads, gamma=gamma, coeff=coeff, init_threshold=init_threshold
    )
    opt = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": lr},
         {"params": reg.parameters(), "lr": threshold_lr, "weight_decay": 0.0}],
    )  # fmt: skip
    history: dict[str, Any] = {"ce": [], "penalty": []}
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            order = torch.cat(
                [torch.randperm(len(texts)) for _ in range(steps * batch_size // len(texts) + 1)]
            )
            for step in range(steps):
                pick = order[step * batch_size : (step + 1) * batch_size].tolist()
                ids, mask = _batch(tokenizer, [texts[i] for i in pick])
                if coeff > 0:
                    loss, parts = lm_loss_with_attention_entropy(model, ids, reg, mask)
                else:
                    labels = ids.masked_fill(mask == 0, -100)
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                    parts = {"ce": loss.item(), "attn_entropy_penalty": 0.0}
                opt.zero_grad()
                loss.backward()
                opt.step()
                history["ce"].append(parts["ce"])
                history["penalty"].append(parts["attn_entropy_penalty"])
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
    history["thresholds"] = reg.threshold.detach().tolist()
    return history


def attention_profile(
    model: Any, tokenizer: Any, texts: Sequence[str], *, gamma: float = 0.2,
    init_threshold: float = 0.5,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-text attention entropy and loss, one forward pass per text (no padding).

    Returns float64 arrays: ``entropy`` [n, L, H] mean raw entropy per head (nats),
    ``normalized`` [n, L, H] mean ``H_i / log(i + 1)`` over queries ≥ 1, ``penalty`` [n] the
    regulariser's penalty per text at fixed thresholds ``init_threshold`` (coeff 1, i.e. the
    raw Σ δ² term averaged over heads and layers), ``ce`` [n] mean next-token cross-entropy
    (nats).
    """
    model.set_attn_implementation("eager")
    heads = int(model.config.num_attention_heads)
    reg = AttentionEntropyRegularizer(heads, gamma=gamma, coeff=1.0, init_threshold=init_threshold)
    ent, norm, pen, ce = [], [], [], []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text)])
            if ids.shape[1] < 2:
                raise EntrolabError(f"text {text!r} has fewer than 2 tokens")
            out = model(input_ids=ids, labels=ids, output_attentions=True)
            maps = list(out.attentions)
            if not maps or any(m is None for m in maps):
                maps = attention_maps(model, ids)
            table = head_entropy_table(maps)
            ent.append(table["entropy"].double().numpy())
            norm.append(table["normalized"].double().numpy())
            pen.append(float(reg(maps)))
            ce.append(float(out.loss))
    out_np = {
        "entropy": np.stack(ent),
        "normalized": np.stack(norm),
        "penalty": np.array(pen),
        "ce": np.array(ce),
    }
    if not all(np.isfinite(v).all() for v in out_np.values()):
        raise EntrolabError("attention profile produced non-finite values")
    return out_np
