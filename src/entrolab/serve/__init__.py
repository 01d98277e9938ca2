"""``entrolab serve``: an OpenAI-compatible HTTP server over any backend that adds token
entropies, a sequence confidence (calibrated when a calibrator is given) and a routing decision
to every answer, with entrolab samplers and DeepConf early stopping per request.

Needs the ``serve`` extra (FastAPI, uvicorn). Entry points: :func:`create_app` (an ASGI app),
:func:`serve` (run it with uvicorn) and the ``entrolab serve`` command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from entrolab.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "running", "serve"]


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


@contextmanager
def running(
    backend: Any, config: ServeConfig | None = None, *, startup_timeout: float = 30.0
) -> Iterator[str]:
    """Run the server on a background thread for the duration of a ``with`` block.

    ``config.port = 0`` (the default when no config is given) picks a free port.
    Yields the base URL (``http://127.0.0.1:PORT/v1``). Used by the tests and benchmarks.
    """
    import socket
    import threading
    import time

    import uvicorn

    from entrolab.errors import EntrolabError

    config = config or ServeConfig(port=0)
    port = config.port
    if config.port == 0:
        with socket.socket() as sock:
            sock.bind((config.host, 0))
            port = sock.getsockname()[1]
    app = create_app(backend, config)
    server = uvicorn.Server(
        uvicorn.Config(app, host=config.host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="entrolab-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise EntrolabError(f"the server did not start on {config.host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{config.host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
