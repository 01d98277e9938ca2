"""The HTTP layer of :class:`~entrolab.backends.openai_compat.OpenAIBackend`: JSON requests with
retries, backoff and timeouts, and a bounded pool that runs many requests at once.

Standard library only (``urllib``, ``concurrent.futures``). 408/409/425/429 and 5xx answers and
connection errors are retried with exponential backoff (``backoff · 2^attempt`` seconds, or the
server's ``Retry-After``, at most 60 s); any other HTTP error fails at once with the server's
``error.message``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from entrolab.backends.base import ProgressFn
from entrolab.backends.openai_wire import server_message
from entrolab.errors import EntrolabError

__all__ = ["RETRY_STATUS", "JSONClient"]

#: HTTP statuses worth retrying (rate limits, overload, transient server errors).
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class JSONClient:
    """JSON over HTTP to one API root, with retries and a bounded request pool.

    Args:
        base_url: the API root every ``path`` is appended to (e.g. ``http://host:8000/v1``).
        api_key: bearer token sent as ``Authorization`` (None: no header).
        concurrency: requests in flight at once in :meth:`map` (≥ 1).
        timeout: seconds per request (> 0).
        max_retries: retries after the first attempt (≥ 0).
        backoff: base of the exponential backoff, seconds (≥ 0).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise EntrolabError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not timeout > 0 or max_retries < 0 or backoff < 0:
            raise EntrolabError("timeout must be > 0, max_retries >= 0 and backoff >= 0")
        self.base_url, self.api_key = base_url, api_key
        self.concurrency, self.timeout = concurrency, float(timeout)
        self.max_retries, self.backoff = int(max_retries), float(backoff)

    def request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        """One JSON request with retries; raises EntrolabError with the server's message."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            wait = self.backoff * 2**attempt
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                text = err.read().decode("utf-8", errors="replace")
                last = f"HTTP {err.code}: {server_message(text)}"
                if err.code not in RETRY_STATUS:
                    raise EntrolabError(f"{method} {url} failed with {last}") from None
                retry_after = err.headers.get("Retry-After") if err.headers else None
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 60.0)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            except json.JSONDecodeError:
                raise EntrolabError(f"{method} {url} returned a body that is not JSON") from None
            if attempt < self.max_retries:
                time.sleep(min(wait, 60.0))
        raise EntrolabError(
            f"{method} {url} failed after {self.max_retries + 1} attempts ({last}); is the "
            "server running and reachable, and is the load within its limits?"
        )

    def map(
        self,
        n: int,
        one: Callable[[int], Any],
        on_progress: ProgressFn | None = None,
        rows_each: int = 1,
    ) -> list[Any]:
        """``[one(0), …, one(n − 1)]`` computed ``concurrency`` at a time, in order.

        ``on_progress(rows done, rows in all, tokens so far)`` after each result, counting
        ``rows_each`` rows per call and, where a result is a list of traces, their tokens. The
        first exception cancels the calls not yet started and is raised.
        """
        out: list[Any] = [None] * n
        done = tokens = 0
        with ThreadPoolExecutor(max_workers=min(self.concurrency, n)) as pool:
            futures = {pool.submit(one, r): r for r in range(n)}
            try:
                for fut in as_completed(futures):
                    result = out[futures[fut]] = fut.result()
                    done += rows_each
                    tokens += sum(len(t) for t in result) if isinstance(result, list) else 0
                    if on_progress is not None:
                        on_progress(done, n * rows_each, tokens)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return out
