"""The machinery behind :mod:`entrolab.rl.config`: typed conversion of nested dicts into
dataclasses, dotted ``key=value`` overrides, recipe reading, hashing and diffing of config dicts.

Generic over dataclasses (nothing here names a config section): :func:`build_dataclass` checks
each value against its field's type hint (``bool``, ``int``, ``float``, ``str``, ``Literal``,
unions with ``None``, lists, tuples, dicts, nested dataclasses) and raises
:class:`~entrolab.errors.EntrolabError` naming the dotted path of the offending setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from entrolab.errors import EntrolabError

__all__ = ["apply_overrides", "build_dataclass", "config_diff", "config_hash", "read_recipe"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked against (and lightly coerced to) type ``tp``; raises naming ``path``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise EntrolabError(f"{path} must be a mapping of settings, got {value!r}")
        return build_dataclass(tp, value, path)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise EntrolabError(f"{path} must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except EntrolabError:
                pass
        raise EntrolabError(f"{path} must be {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise EntrolabError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EntrolabError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "1e-6" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise EntrolabError(f"{path} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EntrolabError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise EntrolabError(f"{path} must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise EntrolabError(f"{path} must be a string, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise EntrolabError(f"{path} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise EntrolabError(f"{path} must have {len(args)} entries, got {value!r}")
            return tuple(
                _convert(v, a, f"{path}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        out = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise EntrolabError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    return value


def build_dataclass(cls: type, data: dict[str, Any], path: str) -> Any:
    """An instance of dataclass ``cls`` from ``data``, every value checked against its field's
    type (nested dataclasses recursively); ``path`` is the dotted prefix used in error messages
    (``""`` at the top level). Unknown keys fail naming the known ones and a close match."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        where = f"{path}." if path else ""
        raise EntrolabError(
            f"unknown setting {where}{key}.{hint} Known settings"
            f"{' of ' + path if path else ''}: {', '.join(known)}"
        )
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - all fields have defaults
        raise EntrolabError(f"bad settings for {path or 'train'}: {e}") from None


def config_hash(data: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable dict (keys sorted)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML).

    Intermediate mappings are created as needed; unknown keys are caught later by validation.
    """
    out = json.loads(json.dumps(data or {}))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise EntrolabError(
                f"override {item!r} must look like section.key=value, e.g. algorithm.loss=kl_cov"
            )
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise EntrolabError(
                    f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = _parse_value(raw)
    return out


def read_recipe(recipe: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """The settings dict of a recipe: a YAML file path, a dict (returned as is) or None (``{}``).

    Raises if the file is missing, is not valid YAML, or does not hold a mapping at the top."""
    import yaml

    if recipe is None:
        data: Any = {}
    elif isinstance(recipe, dict):
        data = recipe
    else:
        path = Path(recipe)
        if not path.is_file():
            raise EntrolabError(f"recipe {str(path)!r} not found; pass a YAML file (see recipes/)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise EntrolabError(f"recipe {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise EntrolabError("a recipe must be a YAML mapping of settings at the top level")
    return data


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested config dicts differ (sorted within each level)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in config_diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []
