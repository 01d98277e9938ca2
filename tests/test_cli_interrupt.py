"""Ctrl-C in `eval`, `pareto` and `train` prints what was saved and the exact resume command,
then exits 130 (the work itself is interrupted with a KeyboardInterrupt at its first step)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from entrolab.cli.main import app

runner = CliRunner()


def _interrupt(*_a, **_k):
    raise KeyboardInterrupt


def _one_line(output: str) -> str:
    return " ".join(output.split())


def test_eval_interrupt_names_the_results_file_and_the_resume_command(monkeypatch, tmp_path):
    import entrolab.cli.common as common
    import entrolab.evaluation as evaluation

    monkeypatch.setattr(common, "load_backend", lambda *a, **k: object())
    monkeypatch.setattr(evaluation, "evaluate", _interrupt)
    monkeypatch.setattr("sys.argv", ["entrolab", "eval", "--n", "3", "--out", str(tmp_path)])
    result = runner.invoke(app, ["eval", "--n", "3", "--out", str(tmp_path)])
    assert result.exit_code == 130
    text = _one_line(result.output)
    assert f"interrupted: finished items are in {tmp_path}/results.jsonl" in text
    assert f"resume with: entrolab eval --n 3 --out {tmp_path}" in text


def test_train_interrupt_says_the_checkpoint_is_kept(monkeypatch, tmp_path):
    import entrolab.rl.preference_trainer as pt

    class Stub:
        def train(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(pt, "make_trainer", lambda *a, **k: Stub())
    args = ["train", "--recipe", "recipes/proxy_grpo.yaml", "--out", str(tmp_path / "run")]
    monkeypatch.setattr("sys.argv", ["entrolab", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    text = _one_line(result.output)
    assert f"the last checkpoint in {tmp_path}/run/checkpoints" in text
    assert "resume with: entrolab train --recipe recipes/proxy_grpo.yaml" in text


@pytest.mark.usefixtures("one_torch_thread")
def test_pareto_interrupt_names_the_rows_file(monkeypatch, tmp_path):
    import entrolab.cli.common as common
    import entrolab.inference.pareto as pareto

    class Named:
        name = "stub"

    monkeypatch.setattr(common, "load_backend", lambda *a, **k: Named())
    monkeypatch.setattr(pareto, "run_pareto", _interrupt)
    args = ["pareto", "--strategies", "majority", "--budgets", "1", "--n", "1"]
    args += ["--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", ["entrolab", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    text = _one_line(result.output)
    assert f"finished (strategy, budget, item) rows are in {tmp_path}/results.jsonl" in text
    assert "resume with: entrolab pareto --strategies majority" in text
