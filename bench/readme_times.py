"""Run every command of the README's command-line sections as a new user would and time it.

Usage (from a fresh clone, after ``make install``)::

    .venv/bin/python bench/readme_times.py --out /tmp/readme-times.json

Each ``.venv/bin/entrolab …`` line of README.md is run in order from the repository root, as
written, with a per-command time limit. ``a|b|c`` alternatives (``list estimators|tasks``) are
run one by one; placeholders the README asks the user to fill in are filled: ``jsonl:my.jsonl``
gets a 20-line arithmetic file, ``--base-url … --model NAME`` runs against an ``entrolab serve``
started for it on 127.0.0.1, ``serve`` lines are started, checked with ``/health`` and stopped.
Lines that need the user's own data (``./my-hf-checkpoint``) are reported as skipped.

Per command: exit status, wall time and CPU time (user + system of the command and its
children) — CPU time barely depends on what else runs on the machine, wall time does; the load
average before each command is recorded so the two can be read together. Results go to a JSON
file (resumable: finished commands are not run again) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(readme: Path) -> list[str]:
    """The ``.venv/bin/entrolab`` lines of the README's code blocks, comments stripped and
    ``a|b`` alternatives of the last argument expanded."""
    out, in_block = [], False
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block or not line.startswith(".venv/bin/entrolab "):
            continue
        cmd = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
        parts = shlex.split(cmd)
        if "|" in parts[-1] and parts[1] == "list":
            out += [shlex.join([*parts[:-1], alt]) for alt in parts[-1].split("|")]
        else:
            out.append(cmd)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_health(port: int, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(1.0)
    return False


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_one(cmd: str, limit_s: float, jsonl: Path) -> dict:
    """Run one README command (placeholders filled); return its record."""
    if "my-hf-checkpoint" in cmd or '"…"' in cmd:
        return {"cmd": cmd, "status": "skipped: needs the user's own checkpoint"}
    args = shlex.split(cmd.replace("jsonl:my.jsonl", f"jsonl:{jsonl}"))
    server = None
    record: dict = {"cmd": cmd, "load_before": os.getloadavg()[0]}
    try:
        if "--base-url" in args:
            port = _free_port()
            server = subprocess.Popen(
                [".venv/bin/entrolab", "serve", "--port", str(port), "--log-level", "warning"],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if not _wait_health(port, 300):
                return {**record, "status": "failed: entrolab serve did not come up in 300 s"}
            i = args.index("--base-url")
            args[i + 1] = f"http://127.0.0.1:{port}/v1"
            if "NAME" in args:
                args[args.index("NAME")] = "smollm2-135m-instruct"
        if args[1] == "serve":
            port = _free_port()
            args = [*[a for a in args if a != "--port"], "--port", str(port)]
            if "8000" in args:
                args.remove("8000")
            if "--upstream" in args:
                return {**record, "status": "skipped: needs a running upstream server"}
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            proc = subprocess.Popen(
                args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            ok = _wait_health(port, limit_s)
            wall = time.perf_counter() - t0
            proc.terminate()
            err = proc.communicate(timeout=30)[1]
            record.update(wall_s=round(wall, 1), cpu_s=round(_cpu_seconds() - cpu0, 1))
            status = "ok (healthy, then stopped)" if ok else f"failed: {err[-300:]}"
            return {**record, "status": status, "what": "start-up until /health answers"}
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        try:
            proc = subprocess.run(
                args, cwd=ROOT, capture_output=True, text=True, timeout=limit_s, check=False
            )
            status = (
                "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-400:]}"
            )
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit_s:.0f} s"
        record.update(
            wall_s=round(time.perf_counter() - t0, 1),
            cpu_s=round(_cpu_seconds() - cpu0, 1),
            status=status,
        )
        return record
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/readme-times.json"))
    ap.add_argument("--limit", type=float, default=1800.0, help="seconds per command")
    args = ap.parse_args()
    done: dict[str, dict] = {}
    if args.out.exists():
        done = {r["cmd"]: r for r in json.loads(args.out.read_text())}
    jsonl = args.out.with_suffix(".jsonl")
    jsonl.write_text(
        "".join(
            json.dumps({"prompt": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
            for a, b in zip(range(11, 31), range(40, 20, -1), strict=True)
        ),
        encoding="utf-8",
    )
    cmds = readme_commands(ROOT / "README.md")
    for k, cmd in enumerate(cmds, start=1):
        if cmd in done and not str(done[cmd].get("status", "")).startswith(("failed", "timed")):
            continue
        print(f"[{k}/{len(cmds)}] {cmd}", file=sys.stderr, flush=True)
        done[cmd] = run_one(cmd, args.limit, jsonl)
        print(f"    -> {done[cmd]}", file=sys.stderr, flush=True)
        args.out.write_text(json.dumps(list(done.values()), indent=2), encoding="utf-8")
    print("| command | status | wall (s) | CPU (s) | load before |\n|---|---|---|---|---|")
    for cmd in cmds:
        r = done[cmd]
        print(
            f"| `{cmd.removeprefix('.venv/bin/')}` | {r['status'].splitlines()[0][:60]} | "
            f"{r.get('wall_s', '–')} | {r.get('cpu_s', '–')} | {r.get('load_before', 0):.1f} |"
        )


if __name__ == "__main__":
    main()
