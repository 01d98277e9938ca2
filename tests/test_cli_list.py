"""`entrolab list` at 80 columns: every registered name appears in full on a line of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from entrolab.registry import KINDS, get_registry


def test_list_all_at_80_columns_shows_every_name_in_full() -> None:
    exe = Path(sys.executable).with_name("entrolab")
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(
        [str(exe), "list", "all"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = [ln.rstrip() for ln in out.stdout.splitlines()]
    assert max(len(ln) for ln in lines) <= 80
    names = {e.name for kind in KINDS for e in get_registry(kind)}
    missing = sorted(n for n in names if n not in lines)  # a name is a whole line of its own
    assert not missing, f"names cut or missing at 80 columns: {missing}"
    for kind in KINDS:  # one titled section per registry kind
        assert any(ln.startswith(f"{kind} (") for ln in lines)
