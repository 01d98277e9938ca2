"""Run ``entrolab`` in a pseudo-terminal and press Ctrl-C (SIGINT) once a condition holds: the
real-interrupt half of the resume tests (tests/test_cli_sigint_resume.py)."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _read(fd: int, out: bytearray, timeout: float) -> bool:
    """Read what the pty has within ``timeout`` s into ``out``; False at EOF."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return True
    try:
        chunk = os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        return False
    out.extend(chunk)
    return bool(chunk)


def interrupt_when(
    args: list[str],
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> tuple[str, int]:
    """Run ``entrolab ARGS`` in a pseudo-terminal, send SIGINT as soon as ``ready()`` is true;
    return (everything it drew, ANSI codes removed) and its exit code."""
    master, slave = pty.openpty()
    full_env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "TERM": "xterm"}
    full_env.update(env or {})
    full_env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrolab.cli.main", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=full_env,
        close_fds=True,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert time.monotonic() < deadline, out.decode(errors="replace")
            assert proc.poll() is None, out.decode(errors="replace")
            _read(master, out, 0.005)
        proc.send_signal(signal.SIGINT)
        while _read(master, out, 1.0) and time.monotonic() < deadline:
            if proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                break
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return ANSI.sub("", out.decode(errors="replace")), code


def resume_args(text: str) -> list[str]:
    """The arguments of the command the interrupt line printed (``… resume with: entrolab …``),
    unwrapped from the terminal's line breaks."""
    line = " ".join(text[text.index("interrupted: ") :].split())
    command = line.split("resume with: ", 1)[1]
    words = shlex.split(command)
    assert words[0] == "entrolab", line
    return words[1:]
