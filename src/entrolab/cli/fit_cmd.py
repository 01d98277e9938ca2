"""``entrolab fit KIND``: fit a learned test-time-compute artefact on a task and save it, then use
it with ``entrolab think``.

* ``lynx``: a LYNX exit (a probe on the hidden state at reasoning cues + a split-conformal
  threshold; :func:`~entrolab.inference.exits.fit_lynx`, saved by
  :func:`~entrolab.inference.exits.save_lynx`) for ``think --strategy lynx --param exit=PATH``.
* ``diffadapt``: a DiffAdapt difficulty router (:func:`~entrolab.inference.routing_fit.
  fit_diffadapt`, saved by :func:`~entrolab.inference.routing.save_router`) for
  ``think --strategy diffadapt --param router=PATH``.
* ``fince``: a FineCE prefix-confidence probe (:func:`~entrolab.inference.fince.fit_fince`;
  Monte-Carlo labels in ``OUT.labels.jsonl``, so a stopped fit resumes) for
  ``think --strategy fince --param probe=PATH`` and the ``fince`` estimator.
* ``zip-rc``: a ZIP-RC joint reward × remaining-length head (:func:`~entrolab.inference.zip_rc.
  fit_zip_rc`) for ``think``/``pareto --strategy zip-rc --param head=PATH``.
* ``sdm``: an SDM verifier (:func:`~entrolab.inference.sdm.fit_sdm_on_task`; also
  ``OUT.support.safetensors``) for the ``sdm`` estimator.
* ``set-size``: the split-conformal q̂ of the ``set_size`` estimator on labelled
  multiple-choice items (:func:`~entrolab.inference.cip.fit_option_qhat`; ``OUT.json`` only).
* ``sayself``: SaySelf stage 1 (:func:`~entrolab.inference.sayself.fit_sayself`: the model's own
  chains → confidence targets → LoRA SFT, merged); OUT is a model *directory* (safetensors
  checkpoint + tokenizer + ``sayself.json``) for ``entrolab eval --model OUT``.

The others are saved as ``OUT.json`` + ``OUT.safetensors``. The fitted estimators (fince, sdm,
set_size) run in ``entrolab eval --estimators NAME --param NAME.scorer=OUT`` (``qhat=OUT`` for
set_size); the command is printed after the fit.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from entrolab.cli.common import load_backend, stage_progress, task_and_items
from entrolab.cli.fit_learned import eval_line, fit_sayself_kind, fit_set_size_kind, save_sayself
from entrolab.errors import EntrolabError

console = Console()

KINDS = ("lynx", "diffadapt", "fince", "sdm", "zip-rc", "set-size", "sayself")
#: The options that belong to one kind only (CLI flag → kind).
_OWN = {
    **dict.fromkeys(("--delta", "--cues", "--scope"), "lynx"),
    **dict.fromkeys(("--k", "--feature", "--routes"), "diffadapt"),
    **dict.fromkeys(("--continuations", "--rule"), "fince"),
    "--alpha": "set-size",
    "--head": "zip-rc",
    **dict.fromkeys(("--samples", "--steps"), "sayself"),
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def parse_cues(text: str) -> tuple[str, ...]:
    """``--cues``: a JSON list of strings, or comma-separated cues where ``\\n``, ``\\t``,
    ``\\r`` and ``\\\\`` are escapes (``'\\n,wait'`` → ``("\\n", "wait")``)."""
    if text.strip().startswith("["):
        try:
            cues = json.loads(text)
        except json.JSONDecodeError as e:
            raise EntrolabError(f"--cues looks like a JSON list but is not one: {e.msg}") from None
    else:
        cues = [re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), c) for c in text.split(",")]
    if not isinstance(cues, list) or not cues or any(not isinstance(c, str) or not c for c in cues):
        raise EntrolabError(
            f"--cues needs non-empty cue strings, e.g. --cues '\\n' or --cues '[\"wait\", \"\\n\"]'"
            f"; got {text!r}"
        )
    return tuple(cues)


def _check_options(kind: str, given: dict[str, Any]) -> None:
    if kind not in KINDS:
        raise EntrolabError(f"KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    wrong = [flag for flag, value in given.items() if value is not None and _OWN[flag] != kind]
    if wrong:
        raise EntrolabError(
            f"{', '.join(wrong)} {'applies' if len(wrong) == 1 else 'apply'} to `entrolab fit "
            f"{_OWN[wrong[0]]}` only, not to "
            f"`entrolab fit {kind}`"
        )


def _with_budget(base: Any, max_new_tokens: int | None) -> Any:
    """``base`` (a GenerationConfig) with another token budget; None keeps the fit's default."""
    return None if max_new_tokens is None else replace(base, max_new_tokens=max_new_tokens)


def _fit_lynx(
    backend: Any, task_obj: Any, items: list, common: dict[str, Any], *, delta: float | None,
    cues: tuple[str, ...] | None, scope: str | None,
) -> tuple[Any, str]:  # fmt: skip
    from entrolab.inference.exits import DEFAULT_CUES, fit_lynx
    from entrolab.inference.exits_data import COLLECT_CONFIG

    fitted = fit_lynx(
        backend, task_obj, items, cues=cues or DEFAULT_CUES, layer=common["layer"],
        config=_with_budget(COLLECT_CONFIG, common["max_new_tokens"]), seed=common["seed"],
        on_progress=common["report"], delta=0.1 if delta is None else delta, scope=scope or "cue",
    )  # fmt: skip
    t, s = fitted.threshold, fitted.stats
    where = "cues" if t.scope == "cue" else "items"
    line = (
        f"LYNX exit at layer {fitted.layer}: τ̂ = {t.threshold:.4g} (δ = {t.delta}, {t.scope} "
        f"scope, {t.n} calibration {where}); {s['train_cues'] + s['calibration_cues']} cues on "
        f"{len(items)} items, {100 * s['ready_fraction']:.1f}% ready"
    )
    return fitted, line + (f"\n{t.note}" if t.note else "")


def _fit_diffadapt(
    backend: Any, task_obj: Any, items: list, common: dict[str, Any], *, k: int | None,
    feature: str | None, routes: Any,
) -> tuple[Any, str]:  # fmt: skip
    from entrolab.inference.routing_fit import SAMPLE_CONFIG, fit_diffadapt

    router = fit_diffadapt(
        backend, task_obj, items, k=8 if k is None else k, feature=feature or "hidden",
        layer=common["layer"], routes=routes, seed=common["seed"], on_progress=common["report"],
        config=_with_budget(SAMPLE_CONFIG, common["max_new_tokens"]),
    )  # fmt: skip
    extra = router.probe.info.extra
    counts = " / ".join(f"{c} {extra['label_counts'][c]}" for c in ("easy", "normal", "hard"))
    return router, f"DiffAdapt router: questions labelled {counts} (k = {extra['k']} samples each)"


def _fit_fince(
    backend: Any, task_obj: Any, items: list, common: dict[str, Any], *, continuations: int | None,
    rule: str | None, labels_path: Path,
) -> tuple[Any, str]:  # fmt: skip
    from entrolab.inference.fince import fit_fince
    from entrolab.inference.fince_data import TRACE_CONFIG

    fitted = fit_fince(
        backend, task_obj, items, seed=common["seed"], layer=common["layer"],
        config=_with_budget(TRACE_CONFIG, common["max_new_tokens"]), rule=rule or "steps",
        num_continuations=4 if continuations is None else continuations, path=labels_path,
        continuation_tokens=common["max_new_tokens"] or TRACE_CONFIG.max_new_tokens,
        on_progress=common["report"],
    )  # fmt: skip
    s = fitted.settings
    line = (
        f"FineCE probe at layer {fitted.layer}: {s['train_rows']} prefixes of "
        f"{s['train_items']} items ({s['rule']} positions, {s['num_continuations']} "
        f"continuations each); labels in {labels_path}"
    )
    return fitted, line


def _fit_sdm(backend: Any, task_obj: Any, items: list, common: dict[str, Any]) -> tuple[Any, str]:
    from entrolab.inference.sdm import fit_sdm_on_task

    v = fit_sdm_on_task(
        backend, task_obj, items, layer=common["layer"], seed=common["seed"],
        max_new_tokens=common["max_new_tokens"] or 32,
    )  # fmt: skip
    n, correct = len(v.train_labels), int(v.train_labels.sum())
    cal = sum(len(c) for c in v.qbin_cdfs)
    line = (
        f"SDM verifier at layer {v.layer}: {n} training answers ({correct} correct), {cal} "
        "calibration answers"
    )
    return v, line


def _fit_zip_rc(backend: Any, task_obj: Any, items: list, common: dict[str, Any], head: str | None):
    from entrolab.inference.base import Sampling
    from entrolab.inference.zip_rc import fit_zip_rc

    budget = common["max_new_tokens"] or 64
    fitted = fit_zip_rc(backend, task_obj, items, layer=common["layer"], seed=common["seed"],
                        sampling=Sampling(max_new_tokens=budget), head=head or "probe")  # fmt: skip
    s = fitted.stats
    where = (f"reserved ids {fitted.reserved_start}…" if fitted.reserved
             else f"layer {fitted.layer}")  # fmt: skip
    return fitted, (
        f"ZIP-RC head ({where}): {s['rows']} prefixes, "
        f"{100 * s['reward_rate']:.1f}% from correct rollouts"
    )


def _check_values(
    max_new_tokens: int | None, delta: float | None, scope: str | None, k: int | None,
    feature: str | None, continuations: int | None = None, rule: str | None = None,
    alpha: float | None = None, samples: int | None = None, steps: int | None = None,
    head: str | None = None,
) -> None:  # fmt: skip
    """Bad values fail before the model loads (the fits would only notice after sampling)."""
    if head is not None and head not in ("probe", "reserved"):
        raise EntrolabError(f"--head must be probe or reserved, got {head!r}")
    if alpha is not None and not 0 < alpha < 1:
        raise EntrolabError(f"--alpha (the miscoverage) must be in (0, 1), got {alpha}")
    if samples is not None and samples < 2:
        raise EntrolabError(
            f"--samples must be >= 2 (chains per question; SaySelf's confidence is the majority "
            f"answer's share among them), got {samples}"
        )
    if steps is not None and steps < 1:
        raise EntrolabError(f"--steps (LoRA SFT steps) must be >= 1, got {steps}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise EntrolabError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if delta is not None and not 0 < delta < 1:
        raise EntrolabError(f"--delta (the premature-exit rate) must be in (0, 1), got {delta}")
    if scope is not None and scope not in ("cue", "item"):
        raise EntrolabError(f"--scope must be 'cue' or 'item', got {scope!r}")
    if k is not None and k < 1:
        raise EntrolabError(f"--k (samples per question) must be >= 1, got {k}")
    if feature is not None and feature not in ("hidden", "entropy", "hidden+entropy"):
        raise EntrolabError(f"--feature must be hidden, entropy or hidden+entropy, got {feature!r}")
    if continuations is not None and continuations < 1:
        raise EntrolabError(f"--continuations must be >= 1, got {continuations}")
    if rule is not None and rule not in ("steps", "interval", "stable"):
        raise EntrolabError(f"--rule must be steps, interval or stable, got {rule!r}")


def _load_routes(path: Path | None) -> Any:
    if path is None:
        return None
    if not path.is_file():
        raise EntrolabError(f"--routes file {str(path)!r} not found; give a routes YAML file")
    from entrolab.inference.routing import RoutingConfig

    return RoutingConfig.from_yaml(path.read_text(encoding="utf-8"))


def think_line(kind: str, path: Path, task: str, settings, model, dtype: str, seed: int) -> str:
    """The ``entrolab think`` command that uses the artefact saved at ``path`` (its stem), on
    items drawn with another seed than the fit's."""
    param = {"lynx": "exit", "diffadapt": "router", "fince": "probe", "zip-rc": "head"}[kind]
    args = ["entrolab", "think", "--strategy", kind, "--param", f"{param}={path}"]
    args += ["--task", task]
    for s in settings or []:
        args += ["--task-setting", s]
    if model is not None:
        args += ["--model", model]
    if dtype != "float32":
        args += ["--dtype", dtype]
    args += ["--seed", str(seed + 1)]
    return " ".join(shlex.quote(a) for a in args)


def fit_command(
    kind: Annotated[
        str,
        typer.Argument(
            help="lynx (a LYNX exit), diffadapt (a difficulty router), fince (a prefix "
            "confidence probe), sdm (an SDM verifier), zip-rc (a reward × length head), "
            "set-size (a conformal q̂ for set_size) or sayself (a model fine-tuned to state "
            "its confidence)"
        ),
    ],
    task: Annotated[
        str, typer.Option(help="arithmetic | rg:<dataset> | jsonl:<path>")
    ] = "arithmetic",
    task_setting: Annotated[
        list[str] | None, typer.Option(help="task setting KEY=VALUE (repeatable), e.g. level=2")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="items to collect supervision on")] = 64,
    seed: Annotated[int, typer.Option(help="seed of the items, samples and split")] = 0,
    model: Annotated[
        str | None, typer.Option(help="embedded name, HF id or local dir [default: embedded]")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    out: Annotated[
        Path | None, typer.Option(help="saves OUT.json + OUT.safetensors [default: runs/KIND-TASK]")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="tokens per sampled trace [default: lynx 96, diffadapt 64]")
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="decoder block of the hidden states [default: 2/3 up]")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="lynx: target premature-exit rate δ [default: 0.1]")
    ] = None,
    cues: Annotated[
        str | None,
        typer.Option(help="lynx: comma-separated cues (\\n escapes) or a JSON list [default: \\n]"),
    ] = None,
    scope: Annotated[
        str | None, typer.Option(help="lynx: conformal scope, cue or item [default: cue]")
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="diffadapt: samples per question [default: 8]")
    ] = None,
    feature: Annotated[
        str | None,
        typer.Option(help="diffadapt: hidden, entropy or hidden+entropy [default: hidden]"),
    ] = None,
    routes: Annotated[
        Path | None, typer.Option(help="diffadapt: routes YAML [default: built-in routes]")
    ] = None,
    continuations: Annotated[
        int | None, typer.Option(help="fince: continuations per prefix [default: 4]")
    ] = None,
    rule: Annotated[
        str | None, typer.Option(help="fince: steps, interval or stable [default: steps]")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="set-size: target miscoverage α [default: 0.1]")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="sayself: chains per question [default: 8]")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="sayself: LoRA SFT steps [default: 60]")] = None,
    head: Annotated[
        str | None,
        typer.Option(
            help="zip-rc: probe (a separate head) or reserved (unused vocabulary rows read from "
            "the model's logits, as the paper) [default: probe]"
        ),
    ] = None,
) -> None:
    """Fit a learned artefact (exit, router, probe, verifier, head, q̂, SaySelf model) on a task."""
    _check_options(kind, {"--delta": delta, "--cues": cues, "--scope": scope, "--k": k,
                          "--feature": feature, "--routes": routes,
                          "--continuations": continuations, "--rule": rule, "--alpha": alpha,
                          "--samples": samples, "--steps": steps, "--head": head})  # fmt: skip
    _check_values(max_new_tokens, delta, scope, k, feature, continuations, rule, alpha, samples,
                  steps, head)  # fmt: skip
    cue_list = None if cues is None else parse_cues(cues)
    route_cfg = _load_routes(routes)
    task_obj, items = task_and_items(task, task_setting, n, seed)
    target = out or Path("runs") / f"{kind}-{task.replace(':', '-').replace('/', '_')}"
    backend = load_backend(console, model, dtype)
    with stage_progress(console, f"fit {kind}") as update:

        def report(stage: str, done: int, total: int) -> None:
            update(done, total, stage)

        common = {"seed": seed, "layer": layer, "max_new_tokens": max_new_tokens, "report": report}
        if kind == "lynx":
            fitted, summary = _fit_lynx(
                backend, task_obj, items, common, delta=delta, cues=cue_list, scope=scope
            )
        elif kind == "fince":
            labels_path = target.with_name(target.name + ".labels.jsonl")
            fitted, summary = _fit_fince(backend, task_obj, items, common,
                                         continuations=continuations, rule=rule,
                                         labels_path=labels_path)  # fmt: skip
        elif kind == "sdm":
            fitted, summary = _fit_sdm(backend, task_obj, items, common)
        elif kind == "zip-rc":
            fitted, summary = _fit_zip_rc(backend, task_obj, items, common, head)
        elif kind == "set-size":
            fitted, summary = fit_set_size_kind(backend, items, alpha)
        elif kind == "sayself":
            fitted, summary = fit_sayself_kind(backend, task_obj, items, common, samples=samples,
                                           steps=steps)  # fmt: skip
        else:
            fitted, summary = _fit_diffadapt(
                backend, task_obj, items, common, k=k, feature=feature, routes=route_cfg
            )
    from entrolab.inference.cip import save_qhat
    from entrolab.inference.exits import save_lynx
    from entrolab.inference.fince import save_fince
    from entrolab.inference.routing import save_router
    from entrolab.inference.sdm import save_sdm
    from entrolab.inference.zip_rc import save_zip_rc

    save = {"lynx": save_lynx, "diffadapt": save_router, "fince": save_fince, "sdm": save_sdm,
            "zip-rc": save_zip_rc, "set-size": save_qhat,
            "sayself": lambda f, t: save_sayself(backend, f, t)}  # fmt: skip
    saved = save[kind](fitted, target)
    stem = saved if kind == "sayself" else saved.with_suffix("")
    console.print(summary)
    if kind == "sayself":
        console.print(Text.assemble("model saved to ", (f"{stem}/", "bold")))
    else:
        extra = "" if kind == "set-size" else " + .safetensors"
        console.print(Text.assemble("saved to ", (f"{stem}.json", "bold"), extra))
    console.print("use it with (another --seed, so generated tasks draw new items):")
    if kind in ("lynx", "diffadapt", "fince", "zip-rc"):
        typer.echo(think_line(kind, stem, task, task_setting, model, dtype, seed))
    if kind in ("fince", "sdm", "set-size", "sayself"):
        typer.echo(eval_line(kind, stem, task, task_setting, model, dtype, seed))
