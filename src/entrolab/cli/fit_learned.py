"""The ``entrolab fit`` kinds for learned confidence that are not test-time strategies:
``set-size`` (a conformal q̂ for the ``set_size`` estimator) and ``sayself`` (SaySelf stage 1, a
merged checkpoint), and the ``entrolab eval`` command that runs a fitted estimator."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

__all__ = ["eval_line", "fit_sayself_kind", "fit_set_size_kind", "save_sayself"]


def fit_set_size_kind(backend: Any, items: list, alpha: float | None) -> tuple[Any, str]:
    from entrolab.inference.cip import fit_option_qhat

    fit = fit_option_qhat(backend, items, 0.1 if alpha is None else alpha)
    return fit, (
        f"set_size q̂ = {fit.qhat:.4g} at α = {fit.alpha} from {fit.n} calibration items "
        f"(sets keep options with p̂ >= {max(0.0, 1 - fit.qhat):.4g})"
    )


def fit_sayself_kind(
    backend: Any, task_obj: Any, items: list, common: dict[str, Any], *, samples: int | None,
    steps: int | None,
) -> tuple[Any, str]:  # fmt: skip
    from entrolab.inference.sayself import fit_sayself

    fit = fit_sayself(
        backend, task_obj, items, samples=8 if samples is None else samples,
        steps=60 if steps is None else steps, max_new_tokens=common["max_new_tokens"] or 64,
        seed=common["seed"], on_progress=common["report"],
    )  # fmt: skip
    d = fit.to_dict()
    return fit, (
        f"SaySelf stage 1: {d['examples']} SFT examples from {d['items']} items × {d['samples']} "
        f"chains (mean target confidence {d['mean_target_confidence']:.3f}); LoRA loss "
        f"{d['first_loss']:.3f} → {d['last_loss']:.3f} over {d['steps']} steps (merged)"
    )


def save_sayself(backend: Any, fit: Any, target: Path) -> Path:
    """The merged model as a checkpoint directory ``target`` (+ ``sayself.json``)."""
    from entrolab.backends.base import torch_model

    target.mkdir(parents=True, exist_ok=True)
    torch_model(backend, "saving the SaySelf model").save_pretrained(target)
    backend.tokenizer.save_pretrained(target)
    (target / "sayself.json").write_text(json.dumps(fit.to_dict(), indent=2), encoding="utf-8")
    return target


def eval_line(kind: str, path: Path, task: str, settings, model, dtype: str, seed: int) -> str:
    """The ``entrolab eval`` command that runs the estimator fitted at ``path`` on items drawn
    with another seed than the fit's (for ``sayself``: the saved model, with the SaySelf
    instructions as a task setting)."""
    args = ["entrolab", "eval", "--task", task]
    for s in settings or []:
        if not (kind == "sayself" and s.partition("=")[0].strip() == "instructions"):
            args += ["--task-setting", s]
    if kind == "sayself":
        from entrolab.inference.sayself import INSTRUCTIONS

        args += ["--task-setting", f"instructions={INSTRUCTIONS}", "--model", str(path)]
        args += ["--estimators", "sayself,msp"]
    else:
        name = kind.replace("-", "_")
        key = "qhat" if kind == "set-size" else "scorer"
        args += ["--estimators", name, "--param", f"{name}.{key}={path}"]
        if model is not None:
            args += ["--model", model]
    if dtype != "float32":
        args += ["--dtype", dtype]
    args += ["--seed", str(seed + 1)]
    return " ".join(shlex.quote(a) for a in args)
