"""`entrolab eval` prints the degeneracy warnings of its estimators once: a DeepConf window that
covers every reply before the model loads (and again with --report), and nearly-all-unparseable
replies after the run (the tiny random model never writes a number)."""

import pytest
from typer.testing import CliRunner

from entrolab.cli.main import app
from entrolab.models import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_eval_warns_once_before_loading_and_after_the_run(tiny_dir, tmp_path):
    run = tmp_path / "run"
    args = ["eval", "--model", str(tiny_dir), "--n", "3", "--samples", "2"]
    args += ["--max-new-tokens", "4", "--estimators", "deepconf_mean,deepconf_tail,perplexity"]
    args += ["--param", "deepconf_tail.window=4", "--out", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # deepconf_mean: default window 8 >= 4 tokens; deepconf_tail: window 4 >= 4; one line for
    # both with the smaller window; perplexity has no window and is not named
    window = (
        "warning: deepconf_mean, deepconf_tail: window 4 tokens >= the longest reply (4 tokens)"
    )
    assert text.count(window) == 1 and text.count("these estimators then give identical") == 1
    assert text.index(window) < text.index("report written to")
    # the tiny random model writes no number: 3 of 3 replies unparseable (share 1.0 >= 0.9)
    assert text.count("warning: 3 of 3 replies have no parseable answer") == 1
    page = " ".join((run / "report.html").read_text().split())
    assert "<li>warning: deepconf_mean, deepconf_tail: window 4 tokens" in page
    assert "<li>warning: 3 of 3 replies have no parseable answer" in page
    shown = runner.invoke(app, ["eval", "--report", str(run)])
    again = " ".join(shown.output.split())
    assert again.count(window) == 1 and "3 of 3 replies have no parseable answer" in again


def test_no_warning_when_the_window_is_shorter_than_the_replies(tiny_dir, tmp_path):
    args = ["eval", "--model", str(tiny_dir), "--n", "1", "--samples", "2"]
    args += ["--max-new-tokens", "9", "--estimators", "deepconf_lowest"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: deepconf_lowest" not in result.output  # window 8 < 9 tokens: no collapse
