"""Frozen dataclasses shared by every layer: :class:`Trace`, :class:`TraceBatch`, :class:`Provenance`.

A :class:`Trace` is one generated (or teacher-forced, scored) completion with its per-token
statistics. Shapes: ``T`` = number of completion tokens, ``K`` = number of top-k alternatives kept.
Per-token statistics are float32, in nats. JSON round-trip: :meth:`Trace.to_dict` /
:meth:`Trace.from_dict`, :meth:`TraceBatch.save` / :meth:`TraceBatch.load` (no pickle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import torch

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text

LogitsSource = Literal["raw", "processed"]
VocabScope = Literal["full", "topk"]
FinishReason = Literal["eos", "stop", "length", "scored", "stopped"]

#: Per-token float fields of a Trace, shape [T].
FLOAT_FIELDS = ("logprob", "entropy", "varentropy", "self_certainty")
#: Version written into JSON so later readers can migrate old files.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Provenance:
    """Where the stored per-token statistics came from.

    Attributes:
        logits: ``"raw"`` = the model's logits before temperature/top-p/top-k/min-p;
            ``"processed"`` = after them (the distribution actually sampled from).
        vocab: ``"full"`` = computed over the whole vocabulary; ``"topk"`` = only top-k
            logprobs were available (e.g. an OpenAI-compatible server), so entropies are bounds.
    """

    logits: LogitsSource = "raw"
    vocab: VocabScope = "full"

    def __post_init__(self) -> None:
        if self.logits not in ("raw", "processed"):
            raise EntrolabError(
                f"provenance.logits must be 'raw' or 'processed', got {self.logits!r}"
            )
        if self.vocab not in ("full", "topk"):
            raise EntrolabError(f"provenance.vocab must be 'full' or 'topk', got {self.vocab!r}")


def _vec(x: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype).detach().cpu()


@dataclass(frozen=True)
class Trace:
    """One completion and its per-token statistics.

    Attributes:
        prompt: the user prompt (before the chat template).
        text: the decoded completion (stop string and EOS removed).
        token_ids: int64 [T], the completion tokens (including a final EOS if one was emitted).
        tokens: T strings, each token's text piece, for display.
        logprob: float32 [T], log-probability of the chosen token (nats, <= 0).
        entropy: float32 [T], Shannon entropy of the step distribution (nats).
        varentropy: float32 [T], variance of the surprisal -log p under p (nats²).
        self_certainty: float32 [T] or None, KL(U || p) in nats (needs the full vocabulary).
        rank: int64 [T] or None, 0-based rank of the chosen token (0 = most likely).
        topk_ids: int64 [T, K], the K most likely token ids at each step, most likely first.
        topk_logprobs: float32 [T, K], their log-probabilities (nats).
        provenance: which logits the statistics came from.
        finish_reason: ``eos`` | ``stop`` (a stop string) | ``length`` | ``scored`` (teacher-forced)
            | ``stopped`` (ended early by a stopping rule, e.g. DeepConf's online threshold).
        prompt_index: index of the prompt in the batch it was generated with.
        sample_index: index of this sample among the G samples of its prompt.
        model: model name or path.
        meta: free-form JSON-serialisable details (generation settings, seed, …).
    """

    prompt: str
    text: str
    token_ids: torch.Tensor
    tokens: tuple[str, ...]
    logprob: torch.Tensor
    entropy: torch.Tensor
    varentropy: torch.Tensor
    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor
    self_certainty: torch.Tensor | None = None
    rank: torch.Tensor | None = None
    provenance: Provenance = field(default_factory=Provenance)
    finish_reason: FinishReason = "length"
    prompt_index: int = 0
    sample_index: int = 0
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "token_ids", _vec(self.token_ids, torch.int64).reshape(-1))
        set_(self, "tokens", tuple(self.tokens))
        n = self.token_ids.numel()
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None:
                if name == "self_certainty":
                    continue
                raise EntrolabError(f"Trace.{name} is required")
            value = _vec(value, torch.float32).reshape(-1)
            if value.numel() != n:
                raise EntrolabError(
                    f"Trace.{name} has {value.numel()} values but the trace has {n} tokens"
                )
            set_(self, name, value)
        if self.rank is not None:
            set_(self, "rank", _vec(self.rank, torch.int64).reshape(-1))
            if self.rank.numel() != n:
                raise EntrolabError(f"Trace.rank has {self.rank.numel()} values, expected {n}")
        if len(self.tokens) != n:
            raise EntrolabError(f"Trace.tokens has {len(self.tokens)} pieces, expected {n}")
        ids = _vec(self.topk_ids, torch.int64)
        lps = _vec(self.topk_logprobs, torch.float32)
        if ids.dim() == 1 and ids.numel() == 0:
            ids, lps = ids.reshape(n, 0), lps.reshape(n, 0)
        if ids.dim() != 2 or ids.shape != lps.shape or ids.shape[0] != n:
            raise EntrolabError(
                f"Trace.topk_ids {tuple(ids.shape)} and topk_logprobs {tuple(lps.shape)} "
                f"must both be [T={n}, K]"
            )
        set_(self, "topk_ids", ids)
        set_(self, "topk_logprobs", lps)
        if isinstance(self.provenance, dict):
            set_(self, "provenance", Provenance(**self.provenance))

    def __len__(self) -> int:
        return int(self.token_ids.numel())

    @property
    def k(self) -> int:
        """Number of top-k alternatives stored per token."""
        return int(self.topk_ids.shape[1])

    _PER_TOKEN = (
        "token_ids", "logprob", "entropy", "varentropy", "self_certainty", "rank", "topk_ids",
        "topk_logprobs",
    )  # fmt: skip

    def head(self, n: int, **changes: Any) -> Trace:
        """The first ``n`` tokens: per-token fields sliced, ``text`` = their pieces joined;
        ``changes`` set other fields (e.g. ``finish_reason="stopped"``)."""
        if not 0 <= n <= len(self):
            raise EntrolabError(f"head({n}) of a trace of {len(self)} tokens")
        sliced = {f: getattr(self, f)[:n] for f in self._PER_TOKEN if getattr(self, f) is not None}
        return replace(
            self, **sliced, tokens=self.tokens[:n], text="".join(self.tokens[:n]), **changes
        )

    @staticmethod
    def joined(prefix: Trace, n: int, rest: Trace, **changes: Any) -> Trace:
        """``prefix``'s first ``n`` tokens followed by all of ``rest`` (per-token fields
        concatenated, text = the prefix's pieces + ``rest.text``); other fields from ``rest``,
        then ``changes``. A branch continuing a root after its token n − 1 is
        ``Trace.joined(root, n, branch_tokens)``."""
        if not 0 <= n <= len(prefix):
            raise EntrolabError(f"cannot join after token {n} of a trace of {len(prefix)}")
        cat = {}
        for f in Trace._PER_TOKEN:
            a, b = getattr(prefix, f), getattr(rest, f)
            if a is not None and b is not None:
                cat[f] = torch.cat([a[:n], b])
            elif a is not None or b is not None:
                cat[f] = None  # known for one part only: unknown for the whole
        text = "".join(prefix.tokens[:n]) + rest.text
        return replace(rest, **cat, tokens=prefix.tokens[:n] + rest.tokens, text=text, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tensors become lists; non-finite floats become None)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = _finite_or_none(value.tolist())
            elif isinstance(value, Provenance):
                value = {"logits": value.logits, "vocab": value.vocab}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise EntrolabError(f"unknown Trace fields in JSON: {sorted(unknown)}")
        data = dict(data)
        for key in ("logprob", "entropy", "varentropy", "self_certainty", "topk_logprobs"):
            if data.get(key) is not None:
                data[key] = _none_to_nan(data[key])
        if data.get("topk_ids") == []:
            data["topk_ids"] = torch.zeros(0, 0, dtype=torch.int64)
            data["topk_logprobs"] = torch.zeros(0, 0)
        return cls(**data)


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _none_to_nan(x: Any) -> Any:
    if isinstance(x, list):
        return [_none_to_nan(v) for v in x]
    if x is None:
        return math.nan
    if x in ("inf", "-inf"):
        return float(x)
    return x


@dataclass(frozen=True)
class TraceBatch:
    """An ordered collection of traces (e.g. G samples for each of B prompts).

    ``padded(name)`` turns a per-token field into a right-padded tensor [N, T_max] plus a bool
    mask [N, T_max] (True = real token), which is what the sequence-level signal functions take.
    """

    traces: tuple[Trace, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "traces", tuple(self.traces))

    def __len__(self) -> int:
        return len(self.traces)

    def __iter__(self) -> Iterator[Trace]:
        return iter(self.traces)

    def __getitem__(self, i: int) -> Trace:
        return self.traces[i]

    def padded(self, name: str, pad: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad per-token field ``name`` to [N, T_max]; returns (values, mask)."""
        if name not in (*FLOAT_FIELDS, "token_ids", "rank"):
            raise EntrolabError(
                f"cannot pad field {name!r}; per-token fields: "
                f"{', '.join((*FLOAT_FIELDS, 'token_ids', 'rank'))}"
            )
        rows = [getattr(t, name) for t in self.traces]
        if any(r is None for r in rows):
            raise EntrolabError(f"some traces have no {name!r} (top-k-only provenance?)")
        t_max = max((len(t) for t in self.traces), default=0)
        dtype = rows[0].dtype if rows else torch.float32
        values = torch.full((len(rows), t_max), pad, dtype=dtype)
        mask = torch.zeros(len(rows), t_max, dtype=torch.bool)
        for i, r in enumerate(rows):
            values[i, : r.numel()] = r
            mask[i, : r.numel()] = True
        return values, mask

    def by_prompt(self) -> dict[int, list[Trace]]:
        """Traces grouped by ``prompt_index``, each group ordered by ``sample_index``."""
        groups: dict[int, list[Trace]] = {}
        for t in self.traces:
            groups.setdefault(t.prompt_index, []).append(t)
        return {k: sorted(v, key=lambda t: t.sample_index) for k, v in sorted(groups.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "traces": [t.to_dict() for t in self.traces]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceBatch:
        if not isinstance(data, dict) or "traces" not in data:
            raise EntrolabError("not an entrolab traces file: expected an object with 'traces'")
        if data.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise EntrolabError(
                f"traces file has schema {data['schema']}, newer than this entrolab "
                f"({SCHEMA_VERSION}); upgrade entrolab"
            )
        return cls(tuple(Trace.from_dict(t) for t in data["traces"]))

    def save(self, path: str | Path) -> Path:
        """Write the batch as JSON (atomically: a temp file renamed into place)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), allow_nan=False))

    @classmethod
    def load(cls, path: str | Path) -> TraceBatch:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def of(cls, traces: Sequence[Trace]) -> TraceBatch:
        return cls(tuple(traces))
