"""The `entrolab` command: analyze (tiny local model and the real embedded one), list, errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from entrolab.cli.main import app
from entrolab.models import tiny_model
from entrolab.types import TraceBatch

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_analyze_writes_json_and_escaped_html(tiny_dir, tmp_path):
    out_json, out_html = tmp_path / "t.json", tmp_path / "r.html"
    result = runner.invoke(
        app,
        [
            "analyze",
            "<script>alert(1)</script>",
            "--model",
            str(tiny_dir),
            "--samples",
            "2",
            "--max-new-tokens",
            "12",
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ],
    )
    assert result.exit_code == 0, result.output
    traces = TraceBatch.load(out_json)
    assert len(traces) == 2 and all(len(t) == 12 for t in traces)
    assert traces[0].prompt == "<script>alert(1)</script>"
    assert traces[0].meta["generation"]["temperature"] == 1.0  # several samples: T = 1 default
    html = out_html.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "mean H" in result.output and "forks (top ρ=0.2)" in result.output


def test_analyze_single_sample_defaults_to_greedy(tiny_dir, tmp_path):
    out = tmp_path / "t.json"
    result = runner.invoke(
        app,
        ["analyze", "hi", "--model", str(tiny_dir), "--max-new-tokens", "5", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert TraceBatch.load(out)[0].meta["generation"]["temperature"] == 0.0


def test_list_signals_shows_names_summaries_and_papers():
    result = runner.invoke(app, ["list", "signals"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "entropy" in result.output and "self_certainty" in result.output
    assert "2502.18581" in result.output  # self-certainty's paper


def test_list_models_names_the_embedded_default():
    result = runner.invoke(app, ["list", "models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "smollm2-135m-instruct" in result.output


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "entrolab.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (
            ("list", "bogus"),
            "unknown registry kind 'bogus'. Known kinds: advantage_shapers, advantages, "
            "aggregations, branch_rules, calibrators",
        ),
        (
            ("analyze", "hi", "--model", "nobody/nothing-here"),
            "Embedded models: smollm2-135m-instruct",
        ),
        (("analyze", "hi", "--samples", "2", "--temperature", "0"), "identical copies"),
        (("analyze", "hi", "--top-p", "0"), "top_p must be in (0, 1]"),
        (("eval", "--task", "bogus"), "unknown task 'bogus'. Known tasks: arithmetic"),
        (("eval", "--task-setting", "level"), "--task-setting takes KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_error(args, phrase):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert phrase in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


@pytest.mark.model
def test_analyze_on_the_embedded_default_model(smollm, tmp_path):
    out = tmp_path / "r.html"
    result = runner.invoke(
        app,
        ["analyze", "What is 3 + 4?", "--max-new-tokens", "24", "--html", str(out)],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert "7" in result.output and out.stat().st_size > 5000
    assert "smollm2-135m-instruct" in out.read_text()
    json.dumps(result.output)  # terminal output is plain text
