"""One generic registry class; one instance per extension point.

Each entry carries a name, a one-line summary, the paper it comes from and its defaults, so that
``entrolab list <kind>`` and ``docs/methods.md`` are generated from the code. Unknown names fail
with the list of known ones.

The registry instances live next to what they register (``entrolab.signals.SIGNALS`` …);
:data:`KINDS` maps each kind to where its instance lives, imported only on demand, so importing
this module has no side effects.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from entrolab.errors import EntrolabError, UnknownNameError

T = TypeVar("T")

#: kind name → "module:attribute" of its registry instance (loaded lazily by :func:`get_registry`).
KINDS: Mapping[str, str] = MappingProxyType(
    {
        "signals": "entrolab.signals:SIGNALS",
        "aggregations": "entrolab.signals:AGGREGATIONS",
        "metrics": "entrolab.calibration:METRICS",
        "calibrators": "entrolab.calibration:CALIBRATORS",
        "tasks": "entrolab.tasks:TASKS",
        "estimators": "entrolab.estimators:ESTIMATORS",
        "samplers": "entrolab.decoding:SAMPLERS",
        "branch_rules": "entrolab.backends.tree:BRANCH_RULES",
        "strategies": "entrolab.inference:STRATEGIES",
        "voters": "entrolab.inference.voting:VOTERS",
        "trace_scores": "entrolab.inference.voting:TRACE_SCORES",
        "losses": "entrolab.rl.losses:POLICY_LOSSES",
        "advantages": "entrolab.rl.advantages:ADVANTAGE_ESTIMATORS",
        "advantage_shapers": "entrolab.rl.advantages.shaping:ADVANTAGE_SHAPERS",
        "rewards": "entrolab.rl.reward_terms:REWARD_TERMS",
        "loss_aggregations": "entrolab.rl.aggregation:LOSS_AGGREGATIONS",
        "stopping_rules": "entrolab.beyond.stopping:STOPPING_RULES",
        "tta_methods": "entrolab.tta:TTA_METHODS",
    }
)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and what users need to know about it.

    Attributes:
        name: the string used in configs and on the command line.
        obj: the registered function or class.
        summary: one line saying what it computes (units included).
        paper: citation of the method's source ("" for textbook quantities).
        defaults: default keyword arguments, as the user would pass them.
        aliases: other accepted names.
    """

    name: str
    obj: T
    summary: str
    paper: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class Registry(Generic[T]):
    """A named collection of :class:`Entry` objects for one extension point.

    Registering a name twice raises (no silent overwrite); lookups of unknown names raise
    :class:`~entrolab.errors.UnknownNameError` listing the known names and the closest match.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self,
        name: str,
        *,
        summary: str,
        paper: str = "",
        defaults: Mapping[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
    ) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; returns ``obj`` unchanged."""

        def deco(obj: T) -> T:
            self.add(
                Entry(name, obj, summary, paper, MappingProxyType(dict(defaults or {})), aliases)
            )
            return obj

        return deco

    def add(self, entry: Entry[T]) -> None:
        """Add an entry; raises :class:`EntrolabError` if the name or an alias is taken."""
        if not entry.summary or "\n" in entry.summary:
            raise EntrolabError(f"{self.kind} entry {entry.name!r} needs a one-line summary")
        for key in (entry.name, *entry.aliases):
            if key in self._entries or key in self._aliases:
                raise EntrolabError(
                    f"{self.kind} name {key!r} is already registered; pick another name"
                )
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name`` (or an alias); unknown names raise listing the known ones."""
        key = self._aliases.get(name, name)
        try:
            return self._entries[key]
        except KeyError:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, [*known, *self._aliases], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"{name!r} is not among the registered {self.kind}.{hint} "
                f"Known {self.kind}: {', '.join(known)}"
            ) from None

    def get(self, name: str) -> T:
        """The registered object for ``name``."""
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Sorted canonical names."""
        return sorted(self._entries)


def get_registry(kind: str) -> Registry[Any]:
    """The registry instance for ``kind`` (e.g. ``"signals"``), importing its module on demand."""
    try:
        target = KINDS[kind]
    except KeyError:
        raise UnknownNameError(
            f"unknown registry kind {kind!r}. Known kinds: {', '.join(sorted(KINDS))}"
        ) from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def to_markdown(registry: Registry[Any]) -> str:
    """A markdown table of a registry's entries (what ``docs/methods.md`` is generated from)."""
    lines = [
        f"## {registry.kind}",
        "",
        "| name | summary | paper | defaults |",
        "|---|---|---|---|",
    ]
    for e in registry:
        defaults = ", ".join(f"`{k}={v!r}`" for k, v in e.defaults.items()) or "–"
        name = f"`{e.name}`" + (f" (aliases: {', '.join(e.aliases)})" if e.aliases else "")
        lines.append(f"| {name} | {e.summary} | {e.paper or '–'} | {defaults} |")
    return "\n".join(lines) + "\n"


def methods_markdown() -> str:
    """The whole of ``docs/methods.md``: one table per registry kind."""
    header = (
        "# Methods\n\nGenerated from the registries by `entrolab list --markdown all`; "
        "do not edit by hand.\n\n"
    )
    return header + "\n".join(to_markdown(get_registry(kind)) for kind in sorted(KINDS))
