"""SaySelf stage 1 (Xu et al. 2024, arXiv:2405.20974): supervised fine-tuning data built from the
model's own sampled chains, and a LoRA SFT on it.

For each question, N chains are sampled; the answers are grouped by equivalence
(:func:`~entrolab.tasks.answer_key`); the majority answer's share s is the confidence, stated on
SaySelf's 1–10 scale as ``Confidence: k/10`` with k = max(1, round(10 s)); the rationale
summarises the disagreement ("I also considered 7 (2 of 8) and 9 (1 of 8).", or "All 8 of my
attempts agree."; the paper has an LLM summarise the inconsistency — here a template does, [R]).
The target is one majority chain + the confidence + the rationale, the format that
``recipes/smollm_confidence.yaml`` asks for and :func:`~entrolab.estimators.reflexive.
parse_stated_confidence` reads. Questions whose chains have no parseable answer are skipped.

Stage 2 (RL with the Brier confidence reward 1 − 2(y − c)²) is the landed trainer with the
``confidence_reward`` term of :mod:`entrolab.rl.reward_terms` (``recipes/smollm_confidence.yaml``),
not a second implementation here.

:func:`fit_sayself` runs stage 1 end to end (sample → targets → LoRA SFT, adapter merged into
the weights); ``entrolab fit sayself --out DIR`` saves the merged model as a checkpoint
directory, so ``entrolab eval --model DIR --task-setting instructions=… --estimators sayself``
scores the confidence it states (the ``sayself`` estimator reads it off the greedy reply).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from entrolab.backends.base import Backend, torch_model
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import item_seeds

__all__ = [
    "INSTRUCTIONS",
    "SaySelfFit",
    "SftExample",
    "fit_sayself",
    "lora_sft",
    "sayself_examples",
    "sayself_target",
]

#: The reply format asked for (as recipes/smollm_confidence.yaml does).
INSTRUCTIONS = (
    'Put the final answer in \\boxed{}. Then, on a new line, write "Confidence: k/10", where k '
    'from 1 to 10 says how sure you are that the answer is right, and one line "Reason: ...".'
)


@dataclass(frozen=True)
class SftExample:
    """One SFT pair: the prompt (user text) and the target reply; ``confidence`` in [0, 1]."""

    prompt: str
    target: str
    confidence: float


def sayself_target(chains: Sequence[str], answers: Sequence[str | None]) -> SftExample | None:
    """The SaySelf target from N chains and their answer keys (None: unparseable); None when no
    chain has an answer. Confidence = share of the majority answer among all N chains."""
    if len(chains) != len(answers) or not chains:
        raise EntrolabError("need one answer key per chain and at least one chain")
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    n = len(answers)
    top, k_top = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    share = k_top / n
    level = max(1, round(10 * share))
    others = [(a, k) for a, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if a != top]
    if others:
        listed = " and ".join(f"{a} ({k} of {n})" for a, k in others)
        reason = f"I also considered {listed}."
    elif k_top < n:
        reason = f"{n - k_top} of my {n} attempts gave no clear answer."
    else:
        reason = f"All {n} of my attempts agree."
    chain = next(c for c, a in zip(chains, answers, strict=True) if a == top).rstrip()
    target = f"{chain}\nConfidence: {level}/10\nReason: {reason}"
    return SftExample("", target, share)


def sayself_examples(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    samples: int = 8,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[SftExample]:
    """Sample ``samples`` chains per item (task prompt with :data:`INSTRUCTIONS`) and build the
    SaySelf SFT examples (:func:`sayself_target`)."""
    from entrolab.tasks import answer_key

    prompts = [_prompt(task, it) for it in items]
    cfg = GenerationConfig(num_samples=samples, max_new_tokens=max_new_tokens,
                           temperature=temperature, topk_logprobs=0)  # fmt: skip
    batch = list(backend.generate(prompts, cfg, seeds=item_seeds(seed, items)))
    out = []
    for i, item in enumerate(items):
        chains = [t.text for t in batch if t.prompt_index == i]
        keys = []
        for c in chains:
            a = task.extract(item, c.split("\nConfidence")[0])
            keys.append(None if a is None else answer_key(a))
        ex = sayself_target(chains, keys)
        if ex is not None:
            out.append(SftExample(prompts[i], ex.target, ex.confidence))
    return out


def _prompt(task: Any, item: Any) -> str:
    own = (getattr(task, "instructions", "") or "").strip()
    p = item.prompt.strip()
    if own and p.endswith(own):
        p = p[: -len(own)].rstrip()
    return f"{p} {INSTRUCTIONS}"


def lora_sft(
    backend: Backend,
    examples: Sequence[SftExample],
    *,
    steps: int = 50,
    lr: float = 1e-4,
    r: int = 16,
    alpha: float = 32.0,
    batch_size: int = 4,
    seed: int = 0,
    out: str | Path | None = None,
    merge: bool = False,
) -> list[float]:
    """LoRA SFT of the backend's model on ``examples`` (cross-entropy on the target tokens only,
    prompt chat-templated as at generation). The adapter stays attached to the model (the
    backend generates with it); with ``out`` it is saved (peft ``save_pretrained``, safetensors);
    with ``merge`` it is then folded into the weights (W + (α/r)·BA; the model's modules are
    plain again, so it saves as an ordinary checkpoint). Returns the loss per step (mean
    cross-entropy of the micro-batch's target tokens, nats)."""
    from peft import LoraConfig, get_peft_model

    if not examples:
        raise EntrolabError("no SFT examples; sample more items (every chain was unparseable?)")
    model = torch_model(backend, "SaySelf LoRA SFT")
    rows = []
    for ex in examples:
        p, t = backend.prompt_ids(ex.prompt), backend.encode(ex.target)
        rows.append((p + t, len(p)))
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"])
    )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    peft_model.train()
    with torch.enable_grad():
        for _ in range(steps):
            pick = torch.randint(len(rows), (min(batch_size, len(rows)),), generator=gen).tolist()
            width = max(len(rows[j][0]) for j in pick)
            ids = torch.zeros(len(pick), width, dtype=torch.long)
            labels = torch.full((len(pick), width), -100, dtype=torch.long)
            mask = torch.zeros(len(pick), width, dtype=torch.long)
            for b, j in enumerate(pick):
                seq, n_p = rows[j]
                ids[b, : len(seq)] = torch.tensor(seq)
                labels[b, n_p : len(seq)] = torch.tensor(seq[n_p:])
                mask[b, : len(seq)] = 1
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    peft_model.eval()
    if out is not None:
        peft_model.save_pretrained(str(out), safe_serialization=True)
    if merge:
        peft_model.merge_and_unload()  # in place: the backend's module holds merged weights
    return losses


@dataclass
class SaySelfFit:
    """What :func:`fit_sayself` did: the SFT examples, the loss per step and its settings."""

    examples: list[SftExample]
    losses: list[float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        conf = [e.confidence for e in self.examples]
        return {
            "format": "entrolab-sayself",
            "stage": 1,
            "instructions": INSTRUCTIONS,
            "examples": len(self.examples),
            "mean_target_confidence": sum(conf) / len(conf) if conf else None,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            **self.settings,
        }


def fit_sayself(
    backend: Backend,
    task: Any,
    items: Sequence[Any],
    *,
    samples: int = 8,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    steps: int = 60,
    lr: float = 1e-4,
    r: int = 16,
    alpha: float = 32.0,
    batch_size: int = 4,
    seed: int = 0,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SaySelfFit:
    """SaySelf stage 1 on ``items``: :func:`sayself_examples` then :func:`lora_sft` with the
    adapter merged into the backend's model (the backend then states confidences as taught).

    Raises:
        EntrolabError: bad sizes, or no item with a parseable answer among its chains.
    """
    for name, v in (("samples", samples), ("steps", steps), ("batch_size", batch_size),
                    ("max_new_tokens", max_new_tokens), ("r", r)):  # fmt: skip
        if int(v) < 1:
            raise EntrolabError(f"SaySelf {name} must be >= 1, got {v}")
    if samples < 2:
        raise EntrolabError(
            f"SaySelf needs >= 2 chains per question (got samples={samples}): the confidence "
            "is the majority answer's share among them"
        )
    if on_progress is not None:
        on_progress("sampling chains", 0, len(items))
    examples = sayself_examples(backend, task, items, samples=samples,
                                max_new_tokens=max_new_tokens, temperature=temperature,
                                seed=seed)  # fmt: skip
    if on_progress is not None:
        on_progress("LoRA SFT", len(items), len(items))
    losses = lora_sft(backend, examples, steps=steps, lr=lr, r=r, alpha=alpha,
                      batch_size=batch_size, seed=seed, merge=True)  # fmt: skip
    settings = {"model": backend.name, "items": len(items), "samples": samples,
                "max_new_tokens": max_new_tokens, "temperature": temperature, "steps": steps,
                "lr": lr, "r": r, "alpha": alpha, "batch_size": batch_size, "seed": seed}  # fmt: skip
    return SaySelfFit(examples, losses, settings)
