"""``entrolab serve``: an OpenAI-compatible HTTP server over any backend that adds token
entropies, a sequence confidence (calibrated when a calibrator is given) and a routing decision
to every answer, with entrolab samplers and DeepConf early stopping per request.

Needs the ``serve`` extra (FastAPI, uvicorn). Entry points: :func:`create_app` (an ASGI app),
:func:`serve` (run it with uvicorn) and the ``entrolab serve`` command.
"""

from __future__ import annotations

from typing import Any

from entrolab.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def create_app(backend: Any, config: ServeConfig | None = None) -> Any:
    """The FastAPI application serving ``backend`` (see :mod:`entrolab.serve.app`)."""
    from entrolab.serve.app import create_app as _create

    return _create(backend, config)


def serve(backend: Any, config: ServeConfig | None = None, *, log_level: str = "info") -> None:
    """Run the server in this process until interrupted (uvicorn, one worker)."""
    import uvicorn

    config = config or ServeConfig()
    uvicorn.run(
        create_app(backend, config), host=config.host, port=config.port, log_level=log_level
    )
