"""The pareto report: points, paired comparisons and the HTML page from a stored run."""

from __future__ import annotations

import json

import pytest

from entrolab.errors import EntrolabError
from entrolab.evaluation.rundir import RunDir
from entrolab.inference.pareto_report import choose_baseline, write_pareto_report


def _row(strategy: str, item: int, correct: bool, tokens: int) -> dict:
    return {
        "strategy": strategy,
        "budget": 4,
        "params": {},
        "item_id": f"i{item}",
        "answer": "1" if correct else "2",
        "correct": correct,
        "generated_tokens": tokens,
        "prompt_tokens": 0,
        "num_traces": 4,
        "meta": {},
    }


@pytest.fixture
def run_dir(tmp_path):
    rd = RunDir(tmp_path / "run").open({"task": {"spec": "<script>x</script>"}, "n": 4})
    # majority: correct on items 0, 2 (acc 0.5), 10 tokens each (mean 10)
    # deepconf-online: correct on 0, 1, 2 (acc 0.75), tokens 5, 6, 7, 8 (mean 6.5)
    rd.append([_row("majority", i, i in (0, 2), 10) for i in range(4)])
    rd.append([_row("deepconf-online", i, i in (0, 1, 2), 5 + i) for i in range(4)])
    return rd.path


def test_report_points_and_paired_differences(run_dir):
    points, comparisons = write_pareto_report(run_dir, title="arithmetic")
    acc = {p.strategy: (p.accuracy, p.tokens_per_item) for p in points}
    assert acc == {"deepconf-online": (0.75, 6.5), "majority": (0.5, 10.0)}
    (c,) = comparisons  # majority is the baseline, so one row: deepconf-online vs majority
    assert (c["strategy"], c["vs"], c["n"]) == ("deepconf-online", "majority", 4)
    # Δ accuracy = 0.75 - 0.5 = 0.25; Δ tokens/item = mean(5-10, 6-10, 7-10, 8-10) = -3.5
    assert c["accuracy"]["difference"] == pytest.approx(0.25)
    assert c["tokens_per_item"]["difference"] == pytest.approx(-3.5)
    # every paired token difference is negative, so its bootstrap interval lies below 0
    assert c["tokens_per_item"]["high"] < 0
    stored = json.loads((run_dir / "comparisons.json").read_text())
    assert stored == comparisons
    assert len(json.loads((run_dir / "points.json").read_text())) == 2


def test_report_html_escapes_run_strings_and_marks_not_significant(run_dir):
    write_pareto_report(run_dir, title="<b>t</b>")
    page = (run_dir / "report.html").read_text()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>t</b>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
    # one discordant item out of 4: the accuracy interval spans 0, so the row reads n.s.
    assert '<tr class="ns"><td>deepconf-online</td><td>4</td><td>majority</td>' in page
    assert "<script" not in page.replace("&lt;script", "")
    assert page.count("<svg") == 1


def test_baseline_choice_and_errors(run_dir, tmp_path):
    points, _ = write_pareto_report(run_dir)
    assert choose_baseline(points) == "majority"
    assert choose_baseline(points, "deepconf-online") == "deepconf-online"
    with pytest.raises(EntrolabError, match="baseline 'adaptive' was not run"):
        write_pareto_report(run_dir, baseline="adaptive")
    empty = RunDir(tmp_path / "empty").open({"n": 0}).path
    with pytest.raises(EntrolabError, match="no finished results"):
        write_pareto_report(empty)
