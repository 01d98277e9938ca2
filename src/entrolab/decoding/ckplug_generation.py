"""CK-PLUG generation: both passes (with and without the context) as one batch over one KV cache,
and :class:`CKPlugLogitsProcessor` for ``model.generate``. The maths is in
:mod:`entrolab.decoding.ckplug`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from entrolab.decoding.base import cache_kwarg
from entrolab.decoding.ckplug import Trigger, _adjust, _check_args
from entrolab.decoding.loop import decode_loop, pad_batch
from entrolab.errors import EntrolabError

__all__ = ["CKPlugLogitsProcessor", "CKPlugResult", "ckplug_generate"]


# ---------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class CKPlugResult:
    """What :func:`ckplug_generate` produced; B rows, T = the longest generation.

    Attributes:
        texts: B decoded completions (special tokens removed).
        token_ids: B lists of generated ids (including a final EOS if one was emitted).
        mask: bool [B, T], True at generated steps (False after a row's EOS).
        confidence_gain: float32 [B, T], CG = H^p − H^c per step (nats), 0 where ``mask`` is False.
        entropy_ctx, entropy_par: float32 [B, T], H^c and H^p per step (nats, raw logits).
        triggered: bool [B, T], steps whose logits CK-PLUG adjusted.
        finish_reasons: B strings, ``"eos"`` or ``"length"``.
    """

    texts: list[str]
    token_ids: list[list[int]]
    mask: torch.Tensor
    confidence_gain: torch.Tensor
    entropy_ctx: torch.Tensor
    entropy_par: torch.Tensor
    triggered: torch.Tensor
    finish_reasons: list[str]


def _as_ids(tokenizer, prompts, name: str) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise EntrolabError(f"{name} must be a non-empty list of token-id lists or strings")
    out = []
    for i, p in enumerate(prompts):
        ids = tokenizer(p)["input_ids"] if isinstance(p, str) else [int(t) for t in p]
        if not ids:
            raise EntrolabError(f"{name}[{i}] is empty; every prompt needs at least one token")
        out.append(ids)
    return out


def _eos_ids(model, tokenizer, eos_token_id) -> torch.Tensor:
    given = [eos_token_id] if eos_token_id is not None else [
        getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id
    ]  # fmt: skip
    ids = {int(i) for s in given if s is not None for i in ([s] if isinstance(s, int) else s)}
    return torch.tensor(sorted(ids), dtype=torch.int64)


class _CachedRows:
    """Token-id rows, left-padded together, decoded in lock step over one KV cache."""

    def __init__(self, model, rows: Sequence[Sequence[int]], pad: int) -> None:
        from transformers import DynamicCache

        ids, self.attn = pad_batch(rows, int(pad))
        self.kw = cache_kwarg(model)
        self.model, self.cache = model, DynamicCache(config=model.config)
        self.logits = self._run(ids, (self.attn.cumsum(-1) - 1).clamp(min=0))

    def _run(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        d = self.model.device
        out = self.model(
            input_ids=ids.to(d), attention_mask=self.attn.to(d), position_ids=pos.to(d),
            **{self.kw: self.cache}, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        self.next_pos = pos[:, -1:] + 1
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` [R] to every row; returns the next logits [R, V]."""
        self.attn = torch.cat([self.attn, torch.ones(len(self.attn), 1, dtype=torch.int64)], 1)
        self.logits = self._run(tokens.reshape(-1, 1).cpu(), self.next_pos)
        return self.logits


def _row_generator(seed: int, row: int) -> torch.Generator:
    digest = hashlib.blake2b(f"ckplug:{seed}:{row}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def _sample(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) from row r's own generator."""
    noise = torch.stack(
        [torch.empty(logits.shape[-1]).exponential_(generator=g) for g in generators]
    )
    return torch.argmax(torch.softmax(logits.float(), -1) / noise, dim=-1)


@torch.inference_mode()
def ckplug_generate(
    model,
    tokenizer,
    with_context_ids: Sequence[Sequence[int] | str],
    without_context_ids: Sequence[Sequence[int] | str],
    *,
    alpha: float | None = None,
    adaptive: bool | None = None,
    trigger: Trigger = "released",
    select_top: int = 10,
    relative_top: float = 0.01,
    max_new_tokens: int = 32,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    sample_fn: Callable[[torch.Tensor, Sequence[torch.Generator]], torch.Tensor] | None = None,
    candidates_only: bool = True,
) -> CKPlugResult:
    """Generate with CK-PLUG, both passes in one batch of 2B rows over one KV cache.

    Rows 0..B−1 hold the prompts with context, rows B..2B−1 those without, decoded by the one
    decode loop (:func:`~entrolab.decoding.loop.decode_loop`: preallocated cache, a finished pair
    leaves the batch); each step the token chosen from :func:`ckplug_logits` of row pair
    (i, B+i) is appended to both.
    Prompts are token-id lists (format chat prompts yourself, e.g. with
    ``tokenizer.apply_chat_template``) or plain strings (tokenized as they are).

    Args:
        model, tokenizer: a Hugging Face causal LM and its tokenizer.
        alpha, adaptive, trigger, select_top, relative_top, candidates_only: as
            :func:`ckplug_logits`.
        greedy: argmax of the adjusted logits; otherwise sample softmax(z̃ / temperature), row i
            with its own generator seeded from (``seed``, i): its samples do not depend on the
            other rows.
        eos_token_id: stop ids (default: the model's generation config and tokenizer EOS).
        sample_fn: optional ``(logits [B, V], generators) -> ids [B]`` replacing the sampler
            (logits already divided by ``temperature``), e.g. to add a warper.
    Returns:
        :class:`CKPlugResult` (per-step CG, entropies and trigger flags included).
    """
    _check_args(alpha, adaptive, trigger, select_top, relative_top, candidates_only)
    ctx = _as_ids(tokenizer, with_context_ids, "with_context_ids")
    par = _as_ids(tokenizer, without_context_ids, "without_context_ids")
    if len(ctx) != len(par):
        raise EntrolabError(
            f"got {len(ctx)} prompts with context but {len(par)} without; pair them"
        )
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise EntrolabError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not greedy and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise EntrolabError(f"temperature must be > 0 when sampling, got {temperature!r}")
    b = len(ctx)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer, eos_token_id)
    gens = [_row_generator(seed, r) for r in range(b)]
    steps = max_new_tokens
    tok = torch.zeros(b, steps, dtype=torch.int64)
    cg, hcs, hps = (torch.zeros(b, steps) for _ in range(3))
    trig = torch.zeros(b, steps, dtype=torch.bool)
    mask = torch.zeros(b, steps, dtype=torch.bool)
    done = torch.zeros(b, dtype=torch.bool)

    def step_fn(active: torch.Tensor, step: int, raw: torch.Tensor):
        # rows r and b + r leave together, so the active rows are pairs: first half with context
        half = active.numel() // 2
        pairs = active[:half]
        z, t, hc, hp = _adjust(
            raw[:half], raw[half:], alpha, adaptive, trigger, select_top, relative_top,
            candidates_only,
        )  # fmt: skip
        sub = [gens[r] for r in pairs.tolist()]
        if greedy:
            chosen = z.argmax(-1)
        elif sample_fn is not None:
            chosen = sample_fn(z / temperature, sub).to(torch.int64)
        else:
            chosen = _sample(z / temperature, sub)
        tok[pairs, step], mask[pairs, step], trig[pairs, step] = chosen, True, t
        cg[pairs, step], hcs[pairs, step], hps[pairs, step] = hp - hc, hc, hp
        ended = torch.isin(chosen, eos)
        done[pairs] |= ended
        return torch.cat([chosen, chosen]), torch.cat([ended, ended])

    n = decode_loop(model, ctx + par, step_fn, max_new_tokens=steps, pad_id=int(pad))
    mask = mask[:, :n]
    token_ids = [tok[i, :n][mask[i]].tolist() for i in range(b)]
    return CKPlugResult(
        texts=[tokenizer.decode(t, skip_special_tokens=True) for t in token_ids],
        token_ids=token_ids,
        mask=mask,
        confidence_gain=cg[:, :n],
        entropy_ctx=hcs[:, :n],
        entropy_par=hps[:, :n],
        triggered=trig[:, :n],
        finish_reasons=["eos" if bool(d) else "length" for d in done],
    )


# ------------------------------------------------------------------------- HF logits processor
class CKPlugLogitsProcessor(LogitsProcessor):
    """CK-PLUG inside ``model.generate``: the processor runs the parametric pass itself.

    ``generate`` is called on the prompts *with* context; this processor holds the prompts
    *without* it and its own KV cache, feeds it each newly generated token, and replaces the
    scores by :func:`ckplug_logits`. Put it first in the processor list (CK-PLUG needs the raw
    logits; temperature and other warpers may follow). Greedy or sampling; no beam search.
    One processor per ``generate`` call (it keeps state). ``scores`` come back float32.

    Args:
        model: the same causal LM ``generate`` runs (or another with the same vocabulary).
        without_context_ids: B token-id lists, in the batch order of ``generate``'s input.
        pad_token_id: id used to left-pad them.
        alpha, adaptive, trigger, select_top, relative_top, candidates_only: as
            :func:`ckplug_logits`.
    """

    def __init__(
        self,
        model,
        without_context_ids: Sequence[Sequence[int]],
        *,
        pad_token_id: int,
        alpha: float | None = None,
        adaptive: bool | None = None,
        trigger: Trigger = "released",
        select_top: int = 10,
        relative_top: float = 0.01,
        candidates_only: bool = True,
    ) -> None:
        self.adaptive = _check_args(
            alpha, adaptive, trigger, select_top, relative_top, candidates_only
        )
        self.candidates_only = candidates_only
        if not without_context_ids or any(len(s) == 0 for s in without_context_ids):
            raise EntrolabError(
                "without_context_ids must be a non-empty list of non-empty id lists"
            )
        self.model, self.alpha, self.trigger = model, alpha, trigger
        self.select_top, self.relative_top = select_top, relative_top
        self.rows = [[int(t) for t in s] for s in without_context_ids]
        self.pad = int(pad_token_id)
        self._stream: _CachedRows | None = None
        #: bool [B] per call: which rows were adjusted at that step.
        self.triggered: list[torch.Tensor] = []

    @torch.inference_mode()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._stream is None:  # first step: prefill the prompts without context
            if input_ids.shape[0] != len(self.rows):
                raise EntrolabError(
                    f"generate runs {input_ids.shape[0]} rows but the processor holds "
                    f"{len(self.rows)} prompts without context; pass one per row (no beams, "
                    "num_return_sequences=1)"
                )
            self._stream = _CachedRows(self.model, self.rows, self.pad)
            par = self._stream.logits
        else:  # later steps: feed the token generate appended last
            par = self._stream.step(input_ids[:, -1])
        z, t, _, _ = _adjust(
            scores, par.to(scores.device).float(), self.alpha, self.adaptive, self.trigger,
            self.select_top, self.relative_top, self.candidates_only,
        )  # fmt: skip
        self.triggered.append(t.cpu())
        return z
