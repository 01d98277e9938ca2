"""Progress and Ctrl-C on long commands: `entrolab think` on a tiny local model in a
pseudo-terminal shows items done/total, rate and ETA before it finishes; SIGINT mid-run prints one
line naming what was saved and the exact resume command; the resumed run equals an uninterrupted
one. Plus the pieces of the shared helper (rate text, resume command, interrupt line)."""

import json
import re
import sys

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from entrolab.cli.common import _rate_text, on_interrupt, resume_command, stage_progress
from entrolab.cli.think_cmd import think_command
from entrolab.models import tiny_model
from pty_run import ANSI as _ANSI
from pty_run import interrupt_when

runner = CliRunner()
app = typer.Typer()
app.command("think")(think_command)
app.command("other")(lambda: None)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _rows(run):
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines() if x]
    return sorted(rows, key=lambda r: r["index"])


def _interrupt_in_a_terminal(args, run) -> tuple[str, int]:
    """Run ``entrolab ARGS`` in a pseudo-terminal, send SIGINT once ``run/results.jsonl`` has a
    row; return (everything it drew, ANSI codes removed) and its exit code."""
    results = run / "results.jsonl"
    return interrupt_when(
        args,
        lambda: results.exists() and bool(results.read_text().strip()),
        env={"COLUMNS": "160"},
        timeout=240,
    )


def test_think_in_a_terminal_shows_progress_and_resumes_after_sigint(tiny_dir, tmp_path):
    run = tmp_path / "run"
    args = ["think", "--strategy", "majority", "--budget", "2", "--n", "30", "--chunk", "2"]
    args += ["--model", str(tiny_dir), "--param", "max_new_tokens=6", "--out", str(run)]
    text, code = _interrupt_in_a_terminal(args, run)
    # a progress line (done/total, rate, ETA) was drawn before the interrupt line
    progress = re.search(r"majority\s.*\b\d+/30\s+(–|\d+(\.\d+)?)/s\s.*ETA", text)
    assert progress is not None, text
    stop = text.index("interrupted: ")
    assert progress.start() < stop
    line = " ".join(text[stop:].split())  # the one line, unwrapped
    assert f"finished items are in {run / 'results.jsonl'}" in line
    assert "resume with: entrolab " + " ".join(args) in line
    assert code == 130
    saved = _rows(run)
    assert 1 <= len(saved) < 30  # interrupted mid-run, finished items kept
    # the same command resumes; the result equals an uninterrupted run
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    fresh = tmp_path / "fresh"
    result = runner.invoke(app, [*args[:-1], str(fresh)])
    assert result.exit_code == 0, result.output
    resumed, whole = _rows(run), _rows(fresh)
    assert [r["index"] for r in resumed] == list(range(30))
    assert resumed == whole
    assert (
        json.loads((run / "summary.json").read_text())["summary"]
        == json.loads((fresh / "summary.json").read_text())["summary"]
    )


def test_rate_text():
    assert _rate_text(None) == "–/s" and _rate_text(0.0) == "–/s"
    assert _rate_text(0.254) == "0.25/s"  # items per second, two decimals below 10
    assert _rate_text(12.6) == "13/s"


def test_resume_command_quotes_for_the_shell():
    cmd = resume_command(["think", "--strategy", "majority", "--task", "jsonl:my file.jsonl"])
    assert cmd == "entrolab think --strategy majority --task 'jsonl:my file.jsonl'"


def test_on_interrupt_prints_one_line_and_exits_130(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["entrolab", "sample", "hi there"])
    console = Console(record=True, width=40)
    with (
        pytest.raises(typer.Exit) as exc,
        on_interrupt(console, "nothing was saved", resumable=False),
    ):
        raise KeyboardInterrupt
    assert exc.value.exit_code == 130
    text = console.export_text()
    assert text == "interrupted: nothing was saved; run again with: entrolab sample 'hi there'\n"


def test_stage_progress_in_a_terminal_draws_done_total_rate_and_eta():
    console = Console(force_terminal=True, width=120, record=True)
    with stage_progress(console, "think", total=4, stage="") as update:
        update(1, 4)
        update(2, 4)
    text = _ANSI.sub("", console.export_text())
    assert re.search(r"think\s.*2/4\s+\S+/s\s.*ETA", text), text


@pytest.mark.parametrize("command", ["sample", "analyze"])
def test_sample_and_analyze_draw_progress_in_a_terminal(command, tiny_dir, monkeypatch):
    from entrolab.cli import main, sample_cmd

    term = Console(force_terminal=True, record=True, width=160)
    monkeypatch.setattr(main, "console", term)
    monkeypatch.setattr(sample_cmd, "console", term)
    args = [command, "What is 2+3?", "--model", str(tiny_dir), "--max-new-tokens", "5"]
    args += ["--samples", "3"] + (["--temperature", "1"] if command == "analyze" else [])
    result = runner.invoke(main.app, args)
    assert result.exit_code == 0, result.output
    text = _ANSI.sub("", term.export_text())
    label = "top_h" if command == "sample" else "generating"
    assert re.search(rf"{label}\s.*\b\d/3\s+\S+/s\s.*ETA", text), text
    if command == "analyze":  # the cross-sample summary
        assert re.search(r"answers across 3 samples: [123] distinct", text), text


def test_compare_samplers_draws_progress_in_a_terminal(tiny_dir, tmp_path, monkeypatch):
    from entrolab.cli import main, sample_cmd

    term = Console(force_terminal=True, record=True, width=160)
    monkeypatch.setattr(main, "console", term)
    monkeypatch.setattr(sample_cmd, "console", term)
    args = ["compare-samplers", "--sampler", "top_h:alpha=0.4", "--temperature", "1", "--n", "2"]
    args += ["--samples", "2", "--max-new-tokens", "5", "--model", str(tiny_dir)]
    result = runner.invoke(main.app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    text = _ANSI.sub("", term.export_text())
    assert re.search(r"compare-samplers\s.*\b\d/2\s+\S+/s\s.*ETA", text), text


@pytest.mark.slow
def test_compare_samplers_sigint_message_and_resume_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    from entrolab.cli.main import app as main_app

    run = tmp_path / "run"
    args = ["compare-samplers", "--sampler", "top_h:alpha=0.4", "--temperature", "1"]
    args += ["--n", "24", "--samples", "2", "--max-new-tokens", "5", "--chunk", "1"]
    args += ["--model", str(tiny_dir), "--out", str(run)]
    text, code = _interrupt_in_a_terminal(args, run)
    assert re.search(r"compare-samplers\s.*\b\d+/\d+\s+\S+/s\s.*ETA", text), text
    line = " ".join(text[text.index("interrupted: ") :].split())
    assert f"finished items are in {run / 'results.jsonl'}" in line
    assert "resume with: entrolab " + " ".join(args) in line and code == 130
    assert runner.invoke(main_app, args).exit_code == 0
    fresh = tmp_path / "fresh"
    assert runner.invoke(main_app, [*args[:-1], str(fresh)]).exit_code == 0
    a = json.loads((run / "summary.json").read_text())
    b = json.loads((fresh / "summary.json").read_text())
    for row in a["table"] + b["table"]:  # wall time is the one field allowed to differ
        row.pop("seconds")
    assert a == b
