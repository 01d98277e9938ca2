"""Progress when output is not a terminal: periodic plain lines on stderr (the pieces by hand
with a scripted clock, then `entrolab think` with stdout and stderr piped)."""

import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from entrolab.cli.common import PlainProgress, stage_progress
from entrolab.models import tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain(every: float, total: int | None = 10):
    console = Console(record=True, width=200, force_terminal=False)
    clock = Clock()
    bar = PlainProgress("think", "", total, every=every, console=console, clock=clock)
    return bar, console, clock


def test_plain_lines_are_periodic_with_rate_and_eta_by_hand():
    bar, console, clock = _plain(every=10.0)
    bar.update(2, 10)  # first update: always a line; 2 resumed items, no rate yet
    clock.now += 4.0
    bar.update(4, 10)  # 4 s after the last line < 10 s: silent
    clock.now += 6.0
    bar.update(6, 10)  # 10 s: due. rate = (6 - 2) items / 10 s = 0.40/s; ETA = 4 / 0.4 = 10 s
    clock.now += 1.0
    bar.update(6, 10, stage="scoring")  # a new stage text: printed at once
    clock.now += 1.0
    bar.update(10, 10)  # done = total: the final line, even 1 s after the last one
    bar.update(10, 10)  # ...and only once
    lines = console.export_text().splitlines()
    assert lines == [
        "think: 2/10 (20%) –/s elapsed 0:00:00 ETA –",
        "think: 6/10 (60%) 0.40/s elapsed 0:00:10 ETA 0:00:10",
        # 11 s elapsed, 4 made: 4/11 = 0.3636 -> "0.36/s"; ETA 4 left / 0.3636 = 11 s
        "think scoring: 6/10 (60%) 0.36/s elapsed 0:00:11 ETA 0:00:11",
        # 12 s, 8 made: 0.6667/s -> "0.67/s"; nothing left -> ETA 0
        "think scoring: 10/10 (100%) 0.67/s elapsed 0:00:12 ETA 0:00:00",
    ]


def test_a_stage_that_changes_only_in_its_numbers_is_no_new_stage():
    bar, console, clock = _plain(every=60.0)
    bar.update(0, 10, stage="3 tokens")
    clock.now += 1.0
    bar.update(0, 10, stage="17 tokens")  # same stage, new number: no line (60 s not passed)
    bar.update(1, 10, stage="reward -0.5 H 1.2e-3")  # new words: a line
    clock.now += 1.0
    bar.update(2, 10, stage="reward 0.25 H 2.5")  # same words: no line
    assert [ln.split(":")[0] for ln in console.export_text().splitlines()] == [
        "think 3 tokens",
        "think reward -0.5 H 1.2e-3",
    ]


def test_plain_progress_without_a_total_and_the_hour_clock():
    bar, console, clock = _plain(every=0.0, total=None)
    bar.update(0, None, stage="loading model")
    clock.now += 3725.0  # 1 h 2 min 5 s
    bar.update(3, None)
    assert console.export_text().splitlines() == [
        "think loading model: 0 done –/s elapsed 0:00:00 ETA –",
        "think loading model: 3 done 0.00/s elapsed 1:02:05 ETA –",
    ]


def test_stage_progress_off_a_terminal_prints_plain_lines_on_stderr(capsys, monkeypatch):
    monkeypatch.setenv("ENTROLAB_PROGRESS_SECONDS", "0")
    console = Console(force_terminal=False, width=120)
    with stage_progress(console, "pareto", total=3, stage="") as update:
        for i in range(1, 4):
            update(i, 3)
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing on stdout: it may be a result being piped on
    lines = captured.err.splitlines()
    assert [ln.split(" ")[1] for ln in lines] == ["0/3", "1/3", "2/3", "3/3"]  # 0/3 at start
    assert all(re.fullmatch(r"pareto: \d/3 \(\d+%\) \S+/s elapsed \S+ ETA \S+", ln) for ln in lines)


@pytest.mark.slow  # a Python process that imports torch: 10-30 s on a busy 2-core machine
def test_think_with_output_piped_shows_plain_progress_lines_on_stderr(tiny_dir, tmp_path):
    run = tmp_path / "run"
    args = ["think", "--strategy", "majority", "--budget", "2", "--n", "4", "--chunk", "1"]
    args += ["--model", str(tiny_dir), "--param", "max_new_tokens=4", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ENTROLAB_PROGRESS_SECONDS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "entrolab.cli.main", *args],
        capture_output=True,  # both pipes: neither is a terminal
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert f"loading {tiny_dir}…" in err
    counts = [m.group(1) for ln in err if (m := re.match(r"majority: (\d)/4 \(", ln))]
    assert counts[0] == "0" and counts[-1] == "4"  # from the start to the end, in order
    assert counts == sorted(counts)
    assert "\x1b[" not in proc.stderr  # plain text, no terminal codes
    assert "majority: " not in proc.stdout  # the table on stdout stays clean
    assert "total" in proc.stdout


def test_busy_is_one_plain_line_off_a_terminal(capsys):
    from entrolab.report.progress import busy

    with busy(Console(force_terminal=False), "loading tiny"):
        pass
    captured = capsys.readouterr()
    assert captured.err == "loading tiny…\n" and captured.out == ""
