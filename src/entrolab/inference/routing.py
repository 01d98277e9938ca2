"""DiffAdapt-style difficulty routing (Liu, Hu, Chu, Choi, ICLR 2026, arXiv:2510.19669).

A probe on the question's encoding — the hidden state of the last prompt token, or entropy
features of the model's first-token distribution — classifies a question as ``easy``, ``normal``
or ``hard``; each class maps to a fixed generation strategy (:class:`Route`: instructions,
temperature, token budget, number of samples), given as config (:class:`RoutingConfig`, YAML).

The labels and the router's training (:func:`difficulty_labels`, :func:`fit_diffadapt`, …) live
in :mod:`entrolab.inference.routing_fit`; they are importable from here too (loaded on first use).

Default routes follow the spec's CPU validation: easy = the task's own direct prompt, 16 tokens;
normal = chain of thought, 64 tokens; hard = chain of thought + self-check, 128 tokens (greedy,
one sample each; set ``num_samples`` > 1 for a majority vote).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch

from entrolab.backends.base import Backend, require
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference.base import (
    STRATEGIES,
    ItemOutcome,
    ProgressFn,
    check_run,
    item_seeds,
    trace_keys,
    vote_outcome,
)
from entrolab.inference.cues import COT_INSTRUCTIONS, cot_prompt
from entrolab.inference.hidden import hidden_at
from entrolab.inference.probes import Probe, load_probe, save_probe

__all__ = [
    "CLASSES",
    "DiffAdaptRouter",
    "DiffAdaptStrategy",
    "Route",
    "RoutingConfig",
    "load_router",
    "prompt_features",
    "save_router",
]

_DIFFADAPT = "Liu, Hu, Chu, Choi 2026, DiffAdapt, ICLR 2026, arXiv:2510.19669"
CLASSES = ("easy", "normal", "hard")
Feature = Literal["hidden", "entropy", "hidden+entropy"]


# ------------------------------------------------------------------------------------ routes
@dataclass(frozen=True)
class Route:
    """One difficulty class's strategy.

    Attributes:
        instructions: text replacing the task's own instructions ("" keeps the task's prompt).
        max_new_tokens: token budget per sample. temperature: 0 = greedy. top_p: nucleus mass.
        num_samples: samples per question (> 1: majority vote over their answers).
        system_prompt: optional system message.
    """

    instructions: str = ""
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        self.generation_config()  # validates the numbers

    def generation_config(self, **overrides: Any) -> GenerationConfig:
        return GenerationConfig(
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            system_prompt=self.system_prompt,
            **overrides,
        )

    def prompt(self, task: Any, item: Any) -> str:
        return cot_prompt(task, item, self.instructions) if self.instructions else item.prompt


def _default_routes() -> dict[str, Route]:
    return {
        "easy": Route("", max_new_tokens=16),
        "normal": Route(COT_INSTRUCTIONS, max_new_tokens=64),
        "hard": Route(
            COT_INSTRUCTIONS + " Then check your result and state the final answer again.",
            max_new_tokens=128,
        ),
    }


@dataclass(frozen=True)
class RoutingConfig:
    """The route of each difficulty class (keys: ``easy``, ``normal``, ``hard``)."""

    routes: Mapping[str, Route] = field(default_factory=_default_routes)

    def __post_init__(self) -> None:
        missing = [c for c in CLASSES if c not in self.routes]
        extra = [c for c in self.routes if c not in CLASSES]
        if missing or extra:
            raise EntrolabError(
                f"routing config needs exactly the classes {CLASSES}; missing {missing}, "
                f"unknown {extra}"
            )

    def __getitem__(self, name: str) -> Route:
        return self.routes[name]

    def to_dict(self) -> dict[str, Any]:
        return {c: asdict(self.routes[c]) for c in CLASSES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingConfig:
        known = {f.name for f in fields(Route)}
        routes = {}
        for c, spec in data.items():
            if isinstance(spec, Route):
                routes[c] = spec
                continue
            unknown = sorted(set(spec) - known)
            if unknown:
                raise EntrolabError(
                    f"route {c!r} has unknown settings {unknown}; known: {', '.join(sorted(known))}"
                )
            routes[c] = Route(**spec)
        return cls(routes)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> RoutingConfig:
        """From YAML text or a .yaml/.yml file path."""
        import yaml

        text = str(text_or_path)
        p = Path(text)
        if p.suffix in (".yaml", ".yml"):
            if not p.is_file():
                raise EntrolabError(f"routing config file {text!r} not found")
            text = p.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise EntrolabError(f"routing config is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise EntrolabError("routing config YAML must map easy/normal/hard to route settings")
        return cls.from_dict(data)


# ---------------------------------------------------------------------------------- features
@torch.inference_mode()
def prompt_features(
    backend: Backend,
    prompts: Sequence[str],
    *,
    feature: Feature = "hidden",
    layer: int | None = None,
    system_prompt: str | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Question features, float32 [N, D], from a forward pass over each chat-formatted prompt.

    ``"hidden"``: decoder block ``layer``'s output at the last prompt token (D = hidden size);
    ``"entropy"``: [entropy (nats), varentropy (nats²), max log-probability] of the model's
    first-token distribution (D = 3); ``"hidden+entropy"``: both, concatenated.
    """
    if feature not in ("hidden", "entropy", "hidden+entropy"):
        raise EntrolabError(
            f"feature must be 'hidden', 'entropy' or 'hidden+entropy', got {feature!r}"
        )
    if not prompts:
        raise EntrolabError("no prompts to compute features for")
    ids = [backend.prompt_ids(p, system_prompt=system_prompt) for p in prompts]
    parts = []
    if "hidden" in feature:
        parts.append(torch.cat(hidden_at(backend, ids, [[len(s) - 1] for s in ids], layer)))
    if "entropy" in feature:
        parts.append(_first_token_entropy(backend, ids, batch_size))
    return torch.cat(parts, -1).float()


def _first_token_entropy(
    backend: Backend, ids: Sequence[list[int]], batch_size: int
) -> torch.Tensor:
    """[N, 3]: entropy, varentropy, max log-prob of the next-token distribution after each
    prompt (raw logits, float32): the statistics of one greedy step through ``backend.generate``."""
    require(backend, "full_logits", "DiffAdapt's entropy features")
    cfg = GenerationConfig(
        temperature=0.0, max_new_tokens=1, topk_logprobs=1, batch_size=batch_size
    )
    traces = backend.generate([list(s) for s in ids], cfg)
    return torch.stack(
        [torch.stack([t.entropy[0], t.varentropy[0], t.topk_logprobs[0, 0]]) for t in traces]
    ).float()


# ---------------------------------------------------------------------------------- router
@dataclass
class DiffAdaptRouter:
    """A fitted difficulty probe (classes :data:`CLASSES`) and the routes it chooses between."""

    probe: Probe
    routes: RoutingConfig = field(default_factory=RoutingConfig)

    def check_backend(self, backend: Backend) -> None:
        """Raise if the probe was fitted for another model or feature size."""
        f, hidden = self.probe.info.feature, int(backend.hidden_size)
        size = 3 if f == "entropy" else hidden + (3 if f == "hidden+entropy" else 0)
        self.probe.check_compatible(model=backend.name, feature_size=size)

    def classify(self, backend: Backend, prompts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
        """(class name per prompt, probabilities float64 [N, 3])."""
        info = self.probe.info
        x = prompt_features(backend, prompts, feature=info.feature, layer=info.layer)  # type: ignore[arg-type]
        p = self.probe.predict_proba(x)
        return [info.labels[int(j)] for j in p.argmax(-1)], p


def save_router(router: DiffAdaptRouter, path: str | Path) -> Path:
    """Save as ``<stem>.safetensors`` + ``<stem>.json`` (routes inside the JSON)."""
    return save_probe(router.probe.with_extra(diffadapt={"routes": router.routes.to_dict()}), path)


def load_router(path: str | Path, backend: Backend = None) -> DiffAdaptRouter:
    """Load a router saved by :func:`save_router`; with ``backend``, check it matches."""
    probe = load_probe(path)
    cfg = probe.info.extra.get("diffadapt")
    if not isinstance(cfg, dict) or probe.info.labels != CLASSES:
        raise EntrolabError(
            f"{str(path)!r} is not a DiffAdapt router; make one with fit_diffadapt + save_router"
        )
    router = DiffAdaptRouter(probe, RoutingConfig.from_dict(cfg["routes"]))
    if backend is not None:
        router.check_backend(backend)
    return router


# -------------------------------------------------------------------------------- strategy
def _routes(value: RoutingConfig | Mapping[str, Any] | str | Path | None) -> RoutingConfig | None:
    if value is None or isinstance(value, RoutingConfig):
        return value
    if isinstance(value, Mapping):
        return RoutingConfig.from_dict(value)
    return RoutingConfig.from_yaml(value)


class DiffAdaptStrategy:
    """Classify each question with the router's probe, then answer it with its class's route
    (majority vote when the route samples more than once).

    Args:
        router: a :class:`DiffAdaptRouter` or the path it was saved to.
        routes: override the router's routes (a :class:`RoutingConfig`, a dict, YAML text or a
            .yaml path).
    """

    name = "diffadapt"

    def __init__(
        self,
        router: DiffAdaptRouter | str | Path | None = None,
        routes: RoutingConfig | Mapping[str, Any] | str | Path | None = None,
    ) -> None:
        if router is None:
            raise EntrolabError(
                "the 'diffadapt' strategy needs a fitted router: run `entrolab fit diffadapt "
                "--out router` and pass `--param router=router` (Python: save_router("
                "fit_diffadapt(backend, task, items), 'router'), then router='router')"
            )
        self.router = router if isinstance(router, DiffAdaptRouter) else load_router(router)
        self.routes = _routes(routes) or self.router.routes

    def run(
        self,
        backend: Backend,
        task: Any,
        items: Sequence[Any],
        *,
        seed: int = 0,
        on_progress: ProgressFn | None = None,
    ) -> list[ItemOutcome]:
        items = check_run(backend, items)
        self.router.check_backend(backend)
        classes, probs = self.router.classify(backend, [it.prompt for it in items])
        seeds = item_seeds(seed, items)
        out: list[ItemOutcome | None] = [None] * len(items)
        done = 0
        for c in CLASSES:
            idx = [i for i, x in enumerate(classes) if x == c]
            if not idx:
                continue
            route = self.routes[c]
            prompts = [route.prompt(task, items[i]) for i in idx]
            batch = backend.generate(
                prompts, route.generation_config(), seeds=[seeds[i] for i in idx]
            )
            for j, traces in batch.by_prompt().items():
                i = idx[j]
                out[i] = self._outcome(task, items[i], traces, c, route, probs[i])
            done += len(idx)
            if on_progress is not None:
                on_progress(done, len(items))
        return [o for o in out if o is not None]

    @staticmethod
    def _outcome(task, item, traces, c: str, route: Route, probs: torch.Tensor) -> ItemOutcome:
        from entrolab.inference.voting import weighted_vote

        keys = trace_keys(task, item, traces)
        v = weighted_vote(keys)
        meta = {
            "difficulty": c,
            "probabilities": dict(zip(CLASSES, probs.tolist(), strict=True)),
            "route": asdict(route),
            "answers": keys,
            "share": v.share,
        }
        return vote_outcome(task, item, traces, keys, v.answer, meta)


STRATEGIES.register(
    "diffadapt",
    summary="DiffAdapt routing: a probe on the question's hidden state picks an easy/normal/hard "
    "strategy (prompt, temperature, token budget, samples)",
    paper=_DIFFADAPT,
    defaults={"routes": None},
)(DiffAdaptStrategy)


#: Names defined in :mod:`entrolab.inference.routing_fit` (which imports this module), served
#: lazily so ``from entrolab.inference.routing import fit_diffadapt`` keeps working.
_FIT_NAMES = frozenset(
    {
        "DifficultyData",
        "collect_difficulty_data",
        "difficulty_labels",
        "fit_diffadapt",
        "fit_router",
        "u_shape_table",
    }
)


def __getattr__(name: str) -> Any:
    if name in _FIT_NAMES:
        return getattr(importlib.import_module("entrolab.inference.routing_fit"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
