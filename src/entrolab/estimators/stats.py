"""The statistics graph: named statistics, their dependencies, and a resolver that computes the
union of what the selected estimators need, in dependency order, each exactly once.

A :class:`Statistic` is ``compute(ctx, stats) -> value`` plus the names it depends on (a fixed set
or a function of the run's :class:`EstimatorConfig`, e.g. ``answer_clusters`` depends on
embeddings only when ``clustering="embedding"``). Family modules (whitebox, sampling, similarity,
reflexive) register their own statistics with :func:`statistic`; this module holds the machinery,
the run settings and the core generation statistics:

- ``greedy``: TraceBatch [N], one greedy (temperature 0) answer per prompt, one batched call
  (greedy decoding needs no seed; batch composition can only change float rounding).
- ``samples``: TraceBatch [N·G], G samples per prompt at ``temperature``, ordered prompt-major;
  ``prompt_index`` is the prompt's index in this run.

Seeding (``seed_scope``): with ``"item"`` (default) each prompt's G samples come from their own
``generate`` call seeded by :func:`item_seed` ``(seed, item key)``, where the key is the task item's
``id`` (or ``item_offset + i`` for plain prompt strings), so an item's samples do not depend on
which other items share the run — a resumable eval may run any chunk of items and get the same
per-item results. ``"call"`` makes one batched call for all prompts (faster on CPU; samples then
depend on the prompt's position in the call).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from entrolab.backends.base import Backend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.types import TraceBatch

__all__ = [
    "STATISTICS",
    "EstimatorConfig",
    "StatContext",
    "Statistic",
    "compute_statistics",
    "item_seed",
    "prompts_of",
    "requirements",
    "resolve",
    "statistic",
]

#: progress callback: (stage name, done, total)
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EstimatorConfig:
    """Settings of an estimator run (the one source of truth; CLI flags follow it).

    Attributes:
        samples: G, samples per prompt for the set-level estimators.
        temperature: sampling temperature for the G samples (> 0).
        top_p: nucleus mass for the samples (1 disables it).
        max_new_tokens: token budget of the greedy answer and of each sample.
        seed: base seed; see the module docstring for how items get their own seeds.
        seed_scope: ``"item"`` (per-item seeds, chunking-invariant) or ``"call"`` (one call).
        topk_logprobs: K alternatives kept per token (DeepConf token confidence uses them).
        chat_template: wrap prompts in the model's chat template.
        system_prompt: optional system message for every generation.
        batch_size: rows decoded together (128: on a 2-core CPU, 20 prompts × 10 samples ran
            in 25 s at 128 vs 31 s at 64 and 40 s at 32; larger matmuls are more efficient).
        clustering: how samples are grouped into meanings: ``"answer"`` (extracted-answer
            equivalence, exact for math) or ``"embedding"`` (greedy first-member clustering at
            cosine ≥ ``embedding_threshold``, for free text).
        embedding_threshold: cosine similarity above which two texts share a meaning.
        reflexive_max_new_tokens: budget of the 1-stage verbalized / linguistic replies
            (None = ``max_new_tokens``).
        confidence_max_new_tokens: budget of the 2-stage follow-up confidence reply.
        neutral_prompt: the content-free prompt of the PMI unconditional pass.
        unparsed_confidence: confidence used when a verbalized / linguistic reply states none
            (counted in the results' metadata, never a silent NaN).
    """

    samples: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    seed_scope: Literal["item", "call"] = "item"
    topk_logprobs: int = 20
    chat_template: bool = True
    system_prompt: str | None = None
    batch_size: int = 128
    clustering: Literal["answer", "embedding"] = "answer"
    embedding_threshold: float = 0.9
    reflexive_max_new_tokens: int | None = None
    confidence_max_new_tokens: int = 16
    neutral_prompt: str = "Say something."
    unparsed_confidence: float = 0.5

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.samples, int) and self.samples >= 1, "samples must be an int >= 1"),
            (
                math.isfinite(self.temperature) and self.temperature > 0,
                "temperature must be > 0 (the greedy answer is generated separately)",
            ),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.seed_scope in ("item", "call"), "seed_scope must be 'item' or 'call'"),
            (self.topk_logprobs >= 1, "topk_logprobs must be >= 1 (DeepConf needs top-k)"),
            (self.clustering in ("answer", "embedding"), "clustering: 'answer' or 'embedding'"),
            (0 < self.embedding_threshold <= 1, "embedding_threshold must be in (0, 1]"),
            (
                self.reflexive_max_new_tokens is None or self.reflexive_max_new_tokens >= 1,
                "reflexive_max_new_tokens must be >= 1 or None",
            ),
            (self.confidence_max_new_tokens >= 1, "confidence_max_new_tokens must be >= 1"),
            (bool(self.neutral_prompt.strip()), "neutral_prompt must not be empty"),
            (0 <= self.unparsed_confidence <= 1, "unparsed_confidence must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise EntrolabError(f"invalid EstimatorConfig: {message}")

    def generation(self, **changes: Any) -> GenerationConfig:
        """A :class:`GenerationConfig` with this run's shared settings plus ``changes``."""
        base = dict(
            max_new_tokens=self.max_new_tokens,
            topk_logprobs=self.topk_logprobs,
            chat_template=self.chat_template,
            system_prompt=self.system_prompt,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        base.update(changes)
        return GenerationConfig(**base)


@dataclass
class StatContext:
    """What statistics are computed from: the backend, the prompts and the run settings.

    Attributes:
        backend: anything with ``generate(prompts, GenerationConfig) -> TraceBatch`` (and
            ``score(prompts, completions, k=…)`` for the statistics that need it).
        prompts: N prompt strings. items: the N items as given (TaskItem or str).
        config: run settings. item_seeds: N per-item seeds (see :func:`item_seed`).
        extract_fn: (item, text) → answer string or None. cluster_fn: answers → cluster ids.
        embed_fn: texts → float array [n, D] of unit vectors (loaded lazily when needed).
        counts: how often each statistic was computed (each must be 1). timings: seconds.
        meta: JSON-serialisable run details (e.g. unparsed confidence counts).
    """

    backend: Backend
    prompts: list[str]
    items: list[Any]
    config: EstimatorConfig
    item_seeds: list[int]
    extract_fn: Callable[[Any, str], str | None]
    cluster_fn: Callable[[list[str | None]], list[int]]
    embed_fn: Callable[[list[str]], Any] | None = None
    on_progress: ProgressFn | None = None
    counts: Counter = field(default_factory=Counter)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.prompts)

    def score_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``backend.score`` matching this run's prompt formatting."""
        kw: dict[str, Any] = {"chat_template": self.config.chat_template}
        if self.config.system_prompt:
            kw["system_prompt"] = self.config.system_prompt
        return kw

    def progress(self, stage: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, done, total)


Deps = frozenset[str] | Callable[[EstimatorConfig], frozenset[str]]


@dataclass(frozen=True)
class Statistic:
    """A named statistic: ``compute(ctx, stats)`` reads its dependencies from ``stats``.

    ``backend_methods`` names backend methods it calls besides ``generate`` (e.g. ``"score"``);
    ``packages`` names importable packages it needs (checked without importing them).
    """

    name: str
    compute: Callable[[StatContext, Mapping[str, Any]], Any]
    deps: Deps
    summary: str
    backend_methods: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    def dependencies(self, config: EstimatorConfig) -> frozenset[str]:
        return self.deps(config) if callable(self.deps) else self.deps


#: name → Statistic; family modules add theirs with :func:`statistic`.
STATISTICS: dict[str, Statistic] = {}


def statistic(
    name: str,
    *,
    deps: Iterable[str] | Callable[[EstimatorConfig], frozenset[str]] = (),
    summary: str,
    backend_methods: tuple[str, ...] = (),
    packages: tuple[str, ...] = (),
) -> Callable[[Callable[[StatContext, Mapping[str, Any]], Any]], Any]:
    """Decorator registering ``compute(ctx, stats) -> value`` as statistic ``name``."""

    def deco(fn: Callable[[StatContext, Mapping[str, Any]], Any]) -> Any:
        if name in STATISTICS:
            raise EntrolabError(f"statistic {name!r} is already registered; pick another name")
        d = deps if callable(deps) else frozenset(deps)
        STATISTICS[name] = Statistic(name, fn, d, summary, backend_methods, packages)
        return fn

    return deco


def resolve(names: Iterable[str], config: EstimatorConfig) -> list[str]:
    """The statistics ``names`` need, themselves included, in dependency order (each once).

    Raises :class:`EntrolabError` on an unknown statistic or a dependency cycle.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise EntrolabError(f"statistics dependency cycle: {' -> '.join((*path, name))}")
        if name not in STATISTICS:
            raise EntrolabError(
                f"unknown statistic {name!r}; known: {', '.join(sorted(STATISTICS))}"
            )
        state[name] = 1
        for dep in sorted(STATISTICS[name].dependencies(config)):
            visit(dep, (*path, name))
        state[name] = 2
        order.append(name)

    for name in sorted(set(names)):
        visit(name, ())
    return order


def requirements(names: Iterable[str], config: EstimatorConfig) -> tuple[set[str], set[str]]:
    """(backend methods, packages) needed to compute ``names`` and their dependencies."""
    methods: set[str] = {"generate"}
    packages: set[str] = set()
    for name in resolve(names, config):
        methods.update(STATISTICS[name].backend_methods)
        packages.update(STATISTICS[name].packages)
    return methods, packages


def compute_statistics(
    ctx: StatContext, names: Iterable[str], cache: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Compute ``names`` and their dependencies into ``cache`` (values already there are kept,
    e.g. precomputed samples); returns the cache. Each statistic is computed at most once."""
    stats: dict[str, Any] = {} if cache is None else cache
    for name in resolve(names, ctx.config):
        if name in stats:
            continue
        t0 = time.perf_counter()
        ctx.progress(name, 0, 1)
        stats[name] = STATISTICS[name].compute(ctx, stats)
        ctx.counts[name] += 1
        ctx.timings[name] = time.perf_counter() - t0
        ctx.progress(name, 1, 1)
    return stats


def item_seed(seed: int, key: str) -> int:
    """A 63-bit seed for one item from the run seed and a stable item key (platform-stable)."""
    digest = hashlib.blake2b(f"entrolab-item:{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def prompts_of(items: Sequence[Any]) -> list[str]:
    """Prompt strings of ``items`` (plain strings, or objects with a ``prompt`` attribute)."""
    out = []
    for i, item in enumerate(items):
        prompt = item if isinstance(item, str) else getattr(item, "prompt", None)
        if not isinstance(prompt, str) or not prompt.strip():
            raise EntrolabError(
                f"item {i} has no prompt text; pass strings or TaskItems with a non-empty .prompt"
            )
        out.append(prompt)
    return out


def item_keys(items: Sequence[Any], offset: int = 0) -> list[str]:
    """Stable per-item keys: ``id:<item.id>`` for task items, else ``index:<offset + i>``."""
    keys = []
    for i, item in enumerate(items):
        item_id = None if isinstance(item, str) else getattr(item, "id", None)
        keys.append(f"id:{item_id}" if item_id is not None else f"index:{offset + i}")
    return keys


def sample_groups(stats: Mapping[str, Any], n: int) -> list[list[Any]]:
    """The ``samples`` TraceBatch as N lists of G traces (prompt-major order)."""
    traces = list(stats["samples"])
    if n == 0 or len(traces) % n:
        raise EntrolabError(f"{len(traces)} sample traces do not split into {n} equal groups")
    g = len(traces) // n
    return [traces[i * g : (i + 1) * g] for i in range(n)]


# ----------------------------------------------------------------------- core statistics


@statistic("greedy", summary="one greedy answer per prompt (TraceBatch [N])")
def _greedy(ctx: StatContext, stats: Mapping[str, Any]) -> TraceBatch:
    cfg = ctx.config.generation(num_samples=1, temperature=0.0)
    return ctx.backend.generate(ctx.prompts, cfg)


@statistic("samples", summary="G temperature samples per prompt (TraceBatch [N·G])")
def _samples(ctx: StatContext, stats: Mapping[str, Any]) -> TraceBatch:
    c = ctx.config
    cfg = c.generation(num_samples=c.samples, temperature=c.temperature, top_p=c.top_p)
    if c.seed_scope == "call":
        return ctx.backend.generate(ctx.prompts, cfg)
    if "seeds" in inspect.signature(ctx.backend.generate).parameters:
        # one batched call, each prompt seeded as if generated alone (chunking-invariant)
        out = ctx.backend.generate(ctx.prompts, cfg, seeds=ctx.item_seeds)
        ctx.progress("samples", ctx.n, ctx.n)
        return out
    traces = []
    for i, prompt in enumerate(ctx.prompts):
        batch = ctx.backend.generate([prompt], replace(cfg, seed=ctx.item_seeds[i]))
        traces += [t if t.prompt_index == i else replace(t, prompt_index=i) for t in batch]
        ctx.progress("samples", i + 1, ctx.n)
    return TraceBatch(tuple(traces))


@statistic("greedy_texts", deps={"greedy"}, summary="greedy answer texts (list[str] [N])")
def _greedy_texts(ctx: StatContext, stats: Mapping[str, Any]) -> list[str]:
    return [t.text for t in stats["greedy"]]


@statistic("sample_texts", deps={"samples"}, summary="sample texts (N lists of G strings)")
def _sample_texts(ctx: StatContext, stats: Mapping[str, Any]) -> list[list[str]]:
    return [[t.text for t in group] for group in sample_groups(stats, ctx.n)]


@statistic("greedy_answers", deps={"greedy_texts"}, summary="answers extracted from greedy texts")
def _greedy_answers(ctx: StatContext, stats: Mapping[str, Any]) -> list[str | None]:
    return [
        ctx.extract_fn(item, t) for item, t in zip(ctx.items, stats["greedy_texts"], strict=True)
    ]


@statistic("sample_answers", deps={"sample_texts"}, summary="answers extracted from samples")
def _sample_answers(ctx: StatContext, stats: Mapping[str, Any]) -> list[list[str | None]]:
    return [
        [ctx.extract_fn(item, t) for t in texts]
        for item, texts in zip(ctx.items, stats["sample_texts"], strict=True)
    ]
