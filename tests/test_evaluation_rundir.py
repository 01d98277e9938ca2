"""Run directory: append-only rows, partial trailing lines, settings checks on resume."""

import json

import pytest

from entrolab.errors import EntrolabError
from entrolab.evaluation.rundir import RunDir


def test_rows_append_in_order_and_survive_reopening(tmp_path):
    run = RunDir(tmp_path / "run").open({"task": "arithmetic", "n": 3})
    assert run.append([{"index": 0, "u": 0.5}, {"index": 1, "u": 1.5}]) == 2
    assert run.append([]) == 0
    again = RunDir(tmp_path / "run").open({"task": "arithmetic", "n": 3})
    again.append([{"index": 2, "u": 2.5}])
    assert [r["index"] for r in again.rows()] == [0, 1, 2]
    assert again.done_keys() == {0, 1, 2}
    assert again.config() == {"task": "arithmetic", "n": 3}


def test_a_partial_trailing_line_is_ignored_then_truncated(tmp_path):
    run = RunDir(tmp_path).open({"a": 1})
    run.append([{"index": 0}])
    with open(run.results_path, "ab") as f:  # a write killed half-way
        f.write(b'{"index": 1, "u": 0.')
    assert [r["index"] for r in run.rows()] == [0]
    run = RunDir(tmp_path).open({"a": 1})  # resuming truncates the partial line
    assert run.results_path.read_bytes() == b'{"index": 0}\n'
    run.append([{"index": 1}])
    assert [json.loads(x)["index"] for x in run.results_path.read_text().splitlines()] == [0, 1]


def test_resuming_with_other_settings_names_the_difference(tmp_path):
    RunDir(tmp_path).open({"task": "arithmetic", "n": 3, "samples": 4})
    with pytest.raises(EntrolabError) as info:
        RunDir(tmp_path).open({"task": "arithmetic", "n": 5, "samples": 2})
    assert "other settings (n, samples)" in str(info.value) and "--overwrite" in str(info.value)
    run = RunDir(tmp_path).open({"task": "arithmetic", "n": 5}, overwrite=True)
    assert run.rows() == [] and run.config() == {"task": "arithmetic", "n": 5}


def test_foreign_directories_and_non_json_values_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EntrolabError, match="not an entrolab run directory"):
        RunDir(tmp_path).open({"a": 1})
    with pytest.raises(EntrolabError, match="no config.json"):
        RunDir(tmp_path / "nothing").config()
    run = RunDir(tmp_path / "r").open({})
    with pytest.raises(ValueError):  # NaN is not JSON: never written silently
        run.append([{"u": float("nan")}])
    assert run.rows() == []
