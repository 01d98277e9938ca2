"""Fitted artefacts as estimator parameters: the estimators that need one (``fince``, ``sdm``:
``scorer``; ``set_size``: ``qhat``) take a *path* on the command line
(``entrolab eval --param fince.scorer=runs/fince-arithmetic``), and :func:`resolve_fitted`
loads and checks it against the backend before anything is generated.

The artefacts' loaders live in this layer (``fince.py``, ``sdm.py``, ``cip.py``), above the
estimators and the evaluation harness, so the caller that has a backend (the CLI) resolves the
paths and hands the loaded objects down; the run directory keeps the paths (JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from entrolab.backends.base import Backend
from entrolab.errors import EntrolabError

__all__ = ["FITTED_KINDS", "check_fitted_given", "fitted_estimators", "resolve_fitted"]

#: estimator → (its fitted parameter, the ``entrolab fit`` kind that makes it)
FITTED_KINDS: dict[str, tuple[str, str]] = {
    "fince": ("scorer", "fince"),
    "sdm": ("scorer", "sdm"),
    "set_size": ("qhat", "set-size"),
}


def _load_fince(path: str, backend: Backend) -> Any:
    from entrolab.inference.fince import load_fince

    return load_fince(path)


def _load_sdm(path: str, backend: Backend) -> Any:
    from entrolab.inference.sdm import load_sdm

    return load_sdm(path)


def _load_qhat(path: str, backend: Backend) -> Any:
    from entrolab.inference.cip import load_qhat

    return load_qhat(path)


_LOADERS: dict[str, Callable[[str, Backend], Any]] = {
    "fince": _load_fince,
    "sdm": _load_sdm,
    "set_size": _load_qhat,
}


def fitted_estimators(names: Sequence[str]) -> list[str]:
    """The canonical names of the estimators in ``names`` (aliases allowed; unknown names fail,
    listing the known ones) that need a fitted artefact, in order."""
    from entrolab.estimators import ESTIMATORS

    out = [ESTIMATORS.entry(n).name for n in names]
    return [n for i, n in enumerate(out) if ESTIMATORS.get(n).fitted and n not in out[:i]]


def check_fitted_given(
    params: Mapping[str, Mapping[str, Any]], names: Sequence[str] | None
) -> list[str]:
    """Before a model loads: every fitted estimator that will run has its parameter (a path:
    its ``<stem>.json`` exists). ``names``
    None (all that apply) runs the fitted estimators whose parameter is in ``params``.
    Returns the fitted estimators that will run (canonical names)."""
    run = fitted_estimators(list(params) if names is None else names)
    for name in run:
        key = FITTED_KINDS.get(name, ("", ""))[0]
        value = (params.get(name) or {}).get(key)
        if value is None:
            raise EntrolabError(f"estimator {name!r} needs a fitted {key}: {_hint(name)}")
        if isinstance(value, str | Path):
            stem = Path(value)
            meta = stem.with_name(stem.name.removesuffix(".json") + ".json")
            if not meta.is_file():
                raise EntrolabError(
                    f"--param {name}.{key}={value}: {str(meta)!r} not found; {_hint(name)}"
                )
    return run


def _hint(name: str) -> str:
    key, kind = FITTED_KINDS.get(name, ("PARAM", name))
    return (
        f"make one with `entrolab fit {kind} --out PATH` on the same model, then pass "
        f"--param {name}.{key}=PATH"
    )


def _check_layer(obj: Any, backend: Backend, name: str, path: str) -> None:
    layer = getattr(obj, "layer", None)
    if layer is None or not callable(getattr(backend, "resolve_layer", None)):
        return
    try:
        backend.resolve_layer(int(layer))
    except EntrolabError as e:
        raise EntrolabError(
            f"--param {name}.scorer={path}: the artefact reads hidden states of layer {layer}, "
            f"which this model does not have ({e}); {_hint(name)}"
        ) from None


def resolve_fitted(
    params: Mapping[str, Mapping[str, Any]], backend: Backend, names: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    """Load the fitted artefacts of estimators ``names`` (canonical names) from ``params``.

    Args:
        params: ``{estimator: {key: value}}`` as parsed from ``--param NAME.KEY=VALUE``; a
            fitted parameter's value is a path (str/Path) to the saved artefact, a loaded
            artefact, or for ``set_size.qhat`` also a number.
        backend: the backend the run uses (artefacts are checked against its model name,
            hidden size and layer count).
        names: the estimators that will run (None: all that apply, which includes the fitted
            ones given in ``params``).

    Returns:
        ``{estimator: {key: loaded object}}`` for the fitted parameters only (merge it over
        ``params`` when running).

    Raises:
        EntrolabError: a fitted estimator without its parameter, a missing or wrong file, an
            artefact made for another model, hidden size or a layer this model lacks — each
            message names the fix.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in check_fitted_given(params, names):
        key = FITTED_KINDS.get(name, ("", ""))[0]
        value = params[name][key]
        if name == "set_size" and isinstance(value, int | float) and not isinstance(value, bool):
            continue  # a number is q̂ itself
        if isinstance(value, str | Path):
            path = str(value)
            try:
                obj = _LOADERS[name](path, backend)
            except EntrolabError as e:
                raise EntrolabError(f"--param {name}.{key}={path}: {e}") from None
        else:
            obj, path = value, repr(value)
        check = getattr(obj, "check_backend", None)
        if callable(check):
            try:
                check(backend)
            except EntrolabError as e:
                raise EntrolabError(f"--param {name}.{key}={path}: {e}; {_hint(name)}") from None
        _check_layer(obj, backend, name, path)
        out[name] = {key: obj.qhat if name == "set_size" else obj}
    return out
