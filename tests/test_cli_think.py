"""`entrolab think` and `entrolab pareto` on a tiny local model: JSON and totals, resumable runs,
re-rendering, and bad input failing before the model loads."""

import json

import pytest
import typer
from typer.testing import CliRunner

from entrolab.cli.think_cmd import pareto_command, think_command
from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.inference.pareto import ParetoPoint, pareto_svg, points_from_rows
from entrolab.models import tiny_model

runner = CliRunner()
app = typer.Typer()
app.command("think")(think_command)
app.command("pareto")(pareto_command)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_think_prints_totals_and_writes_exact_token_counts(tiny_dir, tmp_path):
    out = tmp_path / "think"
    args = ["think", "--strategy", "majority", "--budget", "3", "--n", "2", "--model"]
    args += [str(tiny_dir), "--param", "max_new_tokens=6", "--param", "temperature=1", "--out"]
    result = runner.invoke(app, [*args, str(out)])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and "/item" in result.output
    rec = json.loads((out / "summary.json").read_text())  # a run directory
    config = json.loads((out / "config.json").read_text())
    assert rec["params"] == config["params"] == {"max_new_tokens": 6, "temperature": 1, "budget": 3}
    items = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(items) == 2 and rec["task"]["name"] == "arithmetic"
    assert [it["index"] for it in items] == [0, 1] and len(config["items"]) == 2
    for item in items:
        assert item["num_traces"] == 3
        assert item["generated_tokens"] == sum(item["meta"]["lengths"])
        assert all(1 <= n <= 6 for n in item["meta"]["lengths"])
    assert rec["summary"]["generated_tokens"] == sum(i["generated_tokens"] for i in items)
    # the same run with other batching is refused (batching can change results in the last bits)
    other = runner.invoke(app, [*args, str(out), "--chunk", "1"])
    assert "holds a run with other settings (chunk)" in str(other.exception)
    # --report shows the stored run again without a model
    per_item = f"({rec['summary']['tokens_per_item']:.1f}/item)"
    again = runner.invoke(app, ["think", "--strategy", "majority", "--report", str(out)])
    assert again.exit_code == 0 and per_item in again.output
    # the older single-file form: shown with a note, refused as --out with the way forward
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"strategy": "majority", **rec, "items": items}))
    shown = runner.invoke(app, ["think", "--strategy", "majority", "--report", str(old)])
    assert shown.exit_code == 0 and "single-file result of an older entrolab" in shown.output
    assert per_item in shown.output
    refused = runner.invoke(app, [*args, str(old)])
    assert "think now writes a run directory" in str(refused.exception)
    assert f"--report {old}" in str(refused.exception)


def test_think_rejects_bad_names_and_params_before_loading_the_model(tmp_path):
    missing = str(tmp_path / "no-such-model")
    result = runner.invoke(app, ["think", "--strategy", "majorty", "--model", missing])
    assert isinstance(result.exception, UnknownNameError)
    assert "Did you mean 'majority'" in str(result.exception)
    result = runner.invoke(app, ["think", "--strategy", "adaptive", "--param", "tau"])
    assert "--param takes [NAME.]KEY=VALUE" in str(result.exception)
    result = runner.invoke(
        app, ["think", "--strategy", "adaptive", "--param", "bogus=1", "--model", missing]
    )
    assert isinstance(result.exception, EntrolabError) and "bogus" in str(result.exception)


def _rows(run):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def test_pareto_is_resumable_and_extendable(tiny_dir, tmp_path):
    run = tmp_path / "run"
    base = ["pareto", "--strategies", "majority,adaptive", "--n", "2", "--model", str(tiny_dir)]
    base += ["--param", "max_new_tokens=5", "--param", "majority.voter=majority", "--out", str(run)]
    result = runner.invoke(app, [*base, "--budgets", "1,2"])
    assert result.exit_code == 0, result.output
    rows = _rows(run)
    assert len(rows) == 2 * 2 * 2  # strategies × budgets × items
    assert {(r["strategy"], r["budget"]) for r in rows} == {
        (s, b) for s in ("majority", "adaptive") for b in (1, 2)
    }
    points = json.loads((run / "points.json").read_text())
    assert len(points) == 4 and (run / "pareto.svg").read_text().startswith("<svg")
    for p in points:  # aggregates of the stored rows
        mine = [r for r in rows if (r["strategy"], r["budget"]) == (p["strategy"], p["budget"])]
        assert p["generated_tokens"] == sum(r["generated_tokens"] for r in mine)
    # the same command again generates nothing new; a new budget adds only its rows
    assert runner.invoke(app, [*base, "--budgets", "1,2"]).exit_code == 0
    assert _rows(run) == rows
    assert runner.invoke(app, [*base, "--budgets", "1,2,3"]).exit_code == 0
    new = _rows(run)
    assert new[:8] == rows and len(new) == 12 and {r["budget"] for r in new[8:]} == {3}
    # other parameters for a strategy already in the run are refused
    bad = [
        a if a != "majority.voter=majority" else "majority.voter=min_window_weighted" for a in base
    ]
    result = runner.invoke(app, [*bad, "--budgets", "1"])
    assert isinstance(result.exception, EntrolabError)
    assert "min_window_weighted" in str(result.exception)
    # re-render without a model: the figure, the HTML report and adaptive vs majority per budget
    (run / "pareto.svg").unlink()
    result = runner.invoke(app, ["pareto", "--report", str(run)])
    assert result.exit_code == 0 and (run / "pareto.svg").exists()
    assert "paired on items" in result.output and (run / "report.html").exists()
    paired = json.loads((run / "comparisons.json").read_text())
    assert [(c["strategy"], c["budget"], c["vs"], c["n"]) for c in paired] == [
        ("adaptive", b, "majority", 2) for b in (1, 2, 3)
    ]


def test_points_and_plot_from_rows_hand_computed():
    def row(s, b, i, tokens, correct):
        return {
            "strategy": s,
            "budget": b,
            "item_id": i,
            "answer": "1" if correct else "2",
            "correct": correct,
            "generated_tokens": tokens,
        }

    rows = [row("m", 4, "a", 40, True), row("m", 4, "b", 20, False), row("m", 1, "a", 9, False)]
    rows += [row("m", 1, "b", 11, True), row("x", 4, "a", 10, True), row("x", 4, "b", 14, True)]
    pts = points_from_rows(rows)
    assert pts == [
        ParetoPoint("m", 1, 0.5, 10.0, 20, 2, 2),
        ParetoPoint("m", 4, 0.5, 30.0, 60, 2, 2),
        ParetoPoint("x", 4, 1.0, 12.0, 24, 2, 2),
    ]
    svg = pareto_svg(pts, title="t")
    assert svg.startswith("<svg") and ">m<" in svg and ">x<" in svg
    with pytest.raises(EntrolabError, match="no points"):
        pareto_svg([])


def test_think_warns_before_work_and_keeps_the_warnings_in_the_run(tiny_dir, tmp_path):
    out = tmp_path / "offline"
    args = ["think", "--strategy", "deepconf-offline", "--budget", "3", "--n", "1", "--model"]
    args += [str(tiny_dir), "--param", "max_new_tokens=6", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    # top 10% of 3 traces keeps 1; the window (8) covers the 6-token replies
    keep = "keeps the top 10% of 3 traces = 1 trace"
    assert flat.index(keep) < flat.index("deepconf-offline ┏")  # before the results table
    assert "window 8 tokens >= the longest reply (6 tokens)" in flat
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert any(keep in w for w in warnings)
    shown = runner.invoke(app, ["think", "--strategy", "deepconf-offline", "--report", str(out)])
    assert keep in " ".join(shown.output.split())
    assert "in nats" in " ".join(result.output.split())  # DeepConf confidence says its unit


def test_pareto_warns_about_degenerate_settings_before_loading_the_model(tmp_path):
    # deepconf-online at budget 4 with 4 warm-up traces is exactly majority voting; the model
    # path does not exist, so the warning must come before the (failing) model load
    missing = str(tmp_path / "no-such-model")
    args = ["pareto", "--strategies", "deepconf-online", "--budgets", "4,16", "--n", "1"]
    result = runner.invoke(app, [*args, "--param", "warmup=4", "--model", missing])
    assert isinstance(result.exception, EntrolabError)  # the model load fails afterwards
    assert "warning: deepconf-online@4:" in result.output
    assert "deepconf-online@16" not in result.output  # 16 > 4 warm-up traces: no warning
