"""Resuming an eval run directory: only the settings that determine results must match; what
the report shows (``estimators_skipped``, ``warnings``) may differ or be missing, as in a run
written by older code. Model-free (scripted MockBackend), a few seconds."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from entrolab.backends.mock import MockBackend
from entrolab.cli.eval_cmd import eval_command
from entrolab.errors import EntrolabError
from entrolab.evaluation import evaluate, load_results
from entrolab.evaluation.core import RESULT_KEYS
from entrolab.evaluation.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
app = typer.Typer()
app.command("eval")(eval_command)
SETTINGS = {"n": 3, "samples": 2, "estimators": ["perplexity"], "max_new_tokens": 3}


def _backend() -> MockBackend:
    # 20 digit tokens + EOS, flat logits: enough for topk_logprobs=20; replies are digits
    return MockBackend(torch.zeros(4, 21), vocab=[*map(str, range(20)), "<eos>"], eos_id=20)


def _older_run(tmp_path):
    """A finished 3-item run whose config.json lacks the report-time keys (as older code wrote
    it) and whose last row is gone (a run stopped after 2 items)."""
    out = tmp_path / "run"
    evaluate(_backend(), "arithmetic", out=out, **SETTINGS)
    config = json.loads((out / "config.json").read_text())
    assert "estimators_skipped" in config  # today's code stores it...
    del config["estimators_skipped"]  # ...older code did not
    (out / "config.json").write_text(json.dumps(config))
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")
    return out, config


def test_a_run_written_without_report_keys_resumes_and_rerenders(tmp_path):
    out, config = _older_run(tmp_path)
    res = evaluate(_backend(), "arithmetic", out=out, **SETTINGS)  # refused before the fix
    assert sorted(r["index"] for r in res.rows) == [0, 1, 2]  # item 2 generated, 0-1 kept
    assert json.loads((out / "config.json").read_text()) == config  # stored settings untouched
    assert "estimators_skipped" in res.config  # this run's report lists what it skipped
    # a stale report key (skipped reasons of an older estimator registry) does not block either
    config["estimators_skipped"] = {"old_estimator": "gone"}
    (out / "config.json").write_text(json.dumps(config))
    evaluate(_backend(), "arithmetic", out=out, **SETTINGS)
    result = CliRunner().invoke(app, ["--report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and len(load_results(out).rows) == 3


def test_a_changed_result_setting_is_refused_naming_the_key_and_the_fix(tmp_path):
    out, _ = _older_run(tmp_path)
    with pytest.raises(EntrolabError) as info:
        evaluate(_backend(), "arithmetic", out=out, **{**SETTINGS, "temperature": 0.5})
    msg = str(info.value)
    # only the differing result setting is named (not the missing estimators_skipped), with
    # both values and both ways out
    assert "other settings (temperature)" in msg and "stored 1.0, now 0.5" in msg
    assert "--overwrite" in msg and "--out" in msg
    assert {"model", "task", "n", "samples", "estimators", "temperature", "seed"} <= RESULT_KEYS
    assert {"estimators_run", "items", "estimator_params"} <= RESULT_KEYS
    assert not {"chunk", "estimators_skipped", "warnings"} & RESULT_KEYS


def test_rundir_compares_only_the_given_keys_and_reports_missing_ones(tmp_path):
    RunDir(tmp_path).open({"n": 3, "note": "a"})
    RunDir(tmp_path).open({"n": 3, "note": "b", "extra": 1}, compare={"n"})  # others ignored
    with pytest.raises(EntrolabError, match=r"seed: stored \(missing\), now 7"):
        RunDir(tmp_path).open({"n": 3, "seed": 7}, compare={"n", "seed"})
    with pytest.raises(EntrolabError, match=r"other settings \(note\)"):
        RunDir(tmp_path).open({"n": 3, "note": "b"})  # compare=None: every key, as before
