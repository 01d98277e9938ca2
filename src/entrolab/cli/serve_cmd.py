"""``entrolab serve``: an OpenAI-compatible server that adds entropy, confidence and a route to
every answer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from entrolab.errors import EntrolabError

console = Console(stderr=True)


def serve_command(
    model: Annotated[
        str | None,
        typer.Option(help="embedded name, HF id or local dir [default: embedded]"),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="serve another OpenAI-compatible server instead of a local model (its /v1 URL); "
            "answers then carry top-k entropies"
        ),
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="model id at --upstream [default: its first]")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="tokenizer (name or dir) of the --upstream model")
    ] = None,
    served_name: Annotated[
        str | None, typer.Option(help="model id clients send [default: the model's name]")
    ] = None,
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(help="require this bearer key [default: $ENTROLAB_SERVE_API_KEY, or none]"),
    ] = None,
    estimator: Annotated[
        str, typer.Option(help="sequence-level estimator behind `confidence`")
    ] = "perplexity",
    calibrator: Annotated[
        Path | None,
        typer.Option(help="an `entrolab eval` RUN_DIR: calibrate the confidence on its items"),
    ] = None,
    thresholds: Annotated[
        str, typer.Option(help="route thresholds θ1,θ2: answer ≥ θ1 > retrieve ≥ θ2 > escalate")
    ] = "0.7,0.4",
    max_tokens_limit: Annotated[int, typer.Option(help="largest max_tokens accepted")] = 1024,
    max_queue: Annotated[int, typer.Option(help="requests queued at most (then 429)")] = 256,
    batching: Annotated[
        str,
        typer.Option(
            help="continuous: requests join the running decode between steps and stream token "
            "by token; micro: requests arriving within --batch-window-ms share one decode; "
            "auto: continuous where the backend can (in-process models)"
        ),
    ] = "auto",
    batch_window_ms: Annotated[
        float,
        typer.Option(
            help="micro: gather requests this long into one decode; continuous: an idle "
            "server waits this long for requests arriving together"
        ),
    ] = 10.0,
    max_batch_rows: Annotated[int, typer.Option(help="rows (prompts × n) decoding at once")] = 64,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "float32",
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models,
    /health); each choice gets an `entrolab` object with token entropies, the estimator's
    confidence (calibrated with --calibrator) and a route (answer / retrieve / escalate)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise EntrolabError(
            "entrolab serve needs FastAPI and uvicorn: pip install 'entrolab[serve]'"
        ) from None
    from entrolab.serve import ServeConfig, serve

    try:
        theta = tuple(float(x) for x in thresholds.split(","))
    except ValueError:
        theta = ()
    if len(theta) != 2:
        raise EntrolabError(
            f"--thresholds takes two numbers θ1,θ2 (e.g. 0.7,0.4), got {thresholds!r}"
        )
    if upstream is not None:
        from entrolab.backends.openai_compat import OpenAIBackend

        backend = OpenAIBackend(upstream, upstream_model, tokenizer=tokenizer)
    else:
        from entrolab.cli.common import load_backend

        backend = load_backend(console, model, dtype)
    config = ServeConfig(
        model_id=served_name or getattr(backend, "name", "") or "entrolab",
        host=host,
        port=port,
        api_key=api_key or os.environ.get("ENTROLAB_SERVE_API_KEY") or None,
        max_tokens_limit=max_tokens_limit,
        default_max_tokens=min(128, max_tokens_limit),
        max_queue=max_queue,
        batching=batching,
        batch_window_s=batch_window_ms / 1000.0,
        max_batch_rows=max_batch_rows,
        estimator=estimator,
        calibrator=calibrator,
        thresholds=theta,  # type: ignore[arg-type]
    )
    from entrolab.backends.base import has

    mode = config.batching
    if mode == "auto":
        mode = "continuous" if has(backend, "continuous_batching") else "micro"
    console.print(
        f"serving [bold]{config.model_id}[/] at http://{host}:{port}/v1 "
        f"({mode} batching, window {batch_window_ms:g} ms; estimator {estimator})"
    )
    serve(backend, config, log_level=log_level)
