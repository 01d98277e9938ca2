"""A run directory: settings, append-only JSONL results, and safe resumption.

Layout::

    RUN_DIR/
      config.json      the run's settings (written once; a resumed run must match those that
                       determine results, see :meth:`RunDir.open`)
      results.jsonl    one JSON object per finished item, appended atomically
      report.html      written by the report step (re-rendered with `entrolab eval --report`)

Each appended chunk is one ``write`` of complete lines followed by ``fsync``. A run killed
mid-write can leave at most one partial trailing line, which :meth:`RunDir.rows` drops (and
:meth:`RunDir.open` truncates), so resuming never loses a finished row or duplicates one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text

CONFIG = "config.json"
RESULTS = "results.jsonl"


class RunDir:
    """Append-only, resumable storage for one evaluation run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    def open(
        self,
        config: dict[str, Any],
        *,
        overwrite: bool = False,
        compare: Collection[str] | None = None,
    ) -> RunDir:
        """Create the run directory, or check that an existing one has the same settings.

        ``compare``: the keys that must match to resume (the settings that determine results);
        other keys (what a report shows, e.g. which estimators were skipped and why) may differ
        or be missing, as in a run written by older code. None: every key. The stored
        ``config.json`` is kept as written.

        Raises:
            EntrolabError: the directory holds a run with different settings (and not
                ``overwrite``), or is not a run directory.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in (CONFIG, RESULTS):
                (self.path / name).unlink(missing_ok=True)
        if self.config_path.exists():
            old = json.loads(self.config_path.read_text(encoding="utf-8"))
            keys = set(old) | set(config) if compare is None else set(compare)
            diff = sorted(k for k in keys if old.get(k) != config.get(k))
            if diff:
                values = "; ".join(
                    f"{k}: stored {_shown(old, k)}, now {_shown(config, k)}" for k in diff
                )
                raise EntrolabError(
                    f"{self.path} holds a run with other settings ({', '.join(diff)}) — "
                    f"{values}. Resume it with the same settings, or start again: pass "
                    "--overwrite (discards its results) or a new --out directory"
                )
        else:
            if any(self.path.iterdir()):
                if not self.results_path.exists():
                    raise EntrolabError(
                        f"{self.path} is not empty and is not an entrolab run directory; "
                        "pick an empty or new directory"
                    )
            atomic_write_text(self.config_path, json.dumps(config, indent=2, sort_keys=True))
        self._truncate_partial_line()
        return self

    def config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise EntrolabError(f"{self.path} is not an entrolab run directory (no {CONFIG})")
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def rows(self) -> list[dict[str, Any]]:
        """Finished rows in the order written (a partial trailing line is ignored)."""
        if not self.results_path.exists():
            return []
        data = self.results_path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line]

    def done_keys(self, key: str = "index") -> set[Any]:
        return {row[key] for row in self.rows()}

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append rows as complete JSON lines in one write, then fsync. Returns rows written."""
        lines = [json.dumps(r, allow_nan=False, ensure_ascii=False) for r in rows]
        if not lines:
            return 0
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        with open(self.results_path, "ab") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        return len(lines)

    def _truncate_partial_line(self) -> None:
        if not self.results_path.exists():
            return
        data = self.results_path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.results_path, "r+b") as f:
                f.truncate(end)


def _shown(config: dict[str, Any], key: str, limit: int = 60) -> str:
    """``config[key]`` as JSON for an error message (cut to ``limit`` characters)."""
    if key not in config:
        return "(missing)"
    text = json.dumps(config[key], sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
