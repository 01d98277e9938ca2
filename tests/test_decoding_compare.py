"""compare-samplers (aggregation, resumable runs, report) and the `sample` / `compare-samplers`
commands, on the tiny random model; one short run on the embedded model."""

from __future__ import annotations

import json
import math

import pytest
import typer
from typer.testing import CliRunner

from entrolab.cli import sample_cmd
from entrolab.errors import EntrolabError
from entrolab.evaluation.sampler_compare import (
    CompareConfig,
    CompareResults,
    compare_samplers,
    load_compare_results,
    summarize_cell,
)
from entrolab.evaluation.sampler_report import accuracy_svg, render_compare_html
from entrolab.types import TraceBatch

TINY = {"n": 3, "samples": 2, "max_new_tokens": 4, "chunk": 2, "warmup": 2}


def hand_rows() -> list[dict]:
    base = {"sampler": "top_h:alpha=0.4", "temperature": 1.0, "cell": "top_h:alpha=0.4@T=1"}
    return [
        {
            **base,
            "index": 0,
            "id": "a",
            "prompt": "What is 2+2? <script>x</script>",
            "answer": "4",
            "responses": ["4 <b>bold</b>", "5", "4"],
            "parsed": ["4", "5", "4"],
            "keys": ["4", "5", "4"],
            "correct": [True, False, True],
            "kept": [2.0, 4.0, 3.0],
            "retained_mass": [0.9, 0.8, 0.7],
            "entropy_after": [0.5, 0.7, 0.6],
            "entropy": [1.0, 1.2, 1.1],
            "tokens": [3, 4, 5],
            "seconds": 0.5,
        },
        {
            **base,
            "index": 1,
            "id": "b",
            "prompt": "7?",
            "answer": "6",
            "responses": ["no idea", "7", "7"],
            "parsed": [None, "7", "7"],
            "keys": [None, "7", "7"],
            "correct": [False, False, False],
            "kept": [5.0, 5.0, 5.0],
            "retained_mass": [0.6, 0.6, 0.6],
            "entropy_after": [0.2, 0.2, 0.2],
            "entropy": [2.0, 2.0, 2.0],
            "tokens": [6, 6, 6],
            "seconds": 0.25,
        },
    ]


def test_summarize_cell_hand_computed():
    s = summarize_cell(hand_rows())
    # per-item share correct: (2/3, 0) → pass@1 = 1/3; SE = std([2/3, 0], ddof=1)/√2 = 1/3
    assert s["pass1"] == pytest.approx(1 / 3) and s["pass1_se"] == pytest.approx(1 / 3)
    assert s["passk"] == 0.5  # item a has a correct sample, item b none
    # answers a: {4: 2, 5: 1}; b: {<none>: 1, 7: 2} → 2 distinct each;
    # H = −(2/3 ln 2/3 + 1/3 ln 1/3) = 0.636514 nats for both
    assert s["distinct"] == 2.0
    assert s["answer_entropy"] == pytest.approx(math.log(3) - 2 / 3 * math.log(2))
    assert s["unparseable"] == pytest.approx(1 / 6)
    assert s["kept"] == pytest.approx(4.0)  # (2+4+3+5+5+5)/6 = 24/6, a mean over replies
    assert s["tokens"] == 5.0 and s["seconds"] == 0.75


def test_report_escapes_model_text_and_draws_the_figure():
    results = CompareResults(
        {
            "task": "arithmetic",
            "n": 2,
            "samples": 3,
            "model": "m",
            "samplers": ["top_h:alpha=0.4"],
            "temperatures": [1.0],
        },
        hand_rows(),
    )
    page = render_compare_html(results)
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("<svg") == 1 and "0.333" in page
    assert accuracy_svg(results.table()).startswith("<svg")


def test_compare_runs_resumes_and_reloads(tiny_backend, tmp_path):
    out = tmp_path / "run"
    settings = dict(
        samplers=["plain", "top_h:alpha=0.3", "entropix"], temperatures=[1.0, 2.0], **TINY
    )
    full = compare_samplers(tiny_backend, out=out, **settings)
    assert len(full.rows) == 3 * 2 * 3  # cells × items
    table = {(r["sampler"], r["temperature"]): r for r in full.table()}
    vocab = tiny_backend.vocab_size
    assert table[("plain", 1.0)]["kept"] == vocab  # no truncation: every token kept
    assert table[("plain", 1.0)]["retained_mass"] == pytest.approx(1.0)
    assert table[("top_h:alpha=0.3", 2.0)]["kept"] < vocab
    assert set(json.loads((out / "thresholds.json").read_text())) == {"T=1", "T=2"}
    # drop the last chunk of rows: a rerun regenerates exactly those, with the same samples
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-2]) + lines[-2][:10])  # + a torn line
    resumed = compare_samplers(tiny_backend, out=out, **settings)
    key = lambda r: (r["cell"], r["index"])  # noqa: E731
    for a, b in zip(sorted(resumed.rows, key=key), sorted(full.rows, key=key), strict=True):
        # the same tokens (per-item seeds); statistics equal up to batch-padding float noise
        assert {k: a[k] for k in ("cell", "index", "responses", "keys", "correct", "tokens")} == {
            k: b[k] for k in ("cell", "index", "responses", "keys", "correct", "tokens")
        }
        for k in ("kept", "retained_mass", "entropy_after", "entropy"):
            assert a[k] == pytest.approx(b[k], rel=1e-5)
    # nothing left to do: no generation at all
    original = tiny_backend.generate
    tiny_backend.generate = None
    try:
        again = compare_samplers(tiny_backend, out=out, **settings)
    finally:
        tiny_backend.generate = original
    assert again.table() == resumed.table()
    assert load_compare_results(out).table() == resumed.table()
    with pytest.raises(EntrolabError, match="other settings"):
        compare_samplers(tiny_backend, out=out, **{**settings, "samples": 3})


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"samplers": ["top_h:beta=1"]}, "accepts: alpha, mode, top_n"),
        ({"samplers": ["nucleus"]}, "Known samplers"),
        ({"samplers": ["plain", "plain"]}, "distinct"),
        ({"temperatures": [0.0]}, "temperatures must be finite and > 0"),
        ({"n": 0}, "n must be >= 1"),
    ],
)
def test_bad_settings_fail_before_any_work(settings, match):
    with pytest.raises(EntrolabError, match=match):
        CompareConfig(**settings)


# -------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli(tiny_backend, monkeypatch):
    import entrolab.cli.common as common

    monkeypatch.setattr(common, "load_backend", lambda *a, **k: tiny_backend)
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("sample")(sample_cmd.sample_command)
    app.command("compare-samplers")(sample_cmd.compare_samplers_command)
    return app


def test_sample_command_prints_table_and_writes_json(cli, tmp_path):
    path = tmp_path / "t.json"
    args = [
        "sample",
        "hello",
        "--sampler",
        "top_h",
        "--param",
        "alpha=0.3",
        "-n",
        "2",
        "--max-new-tokens",
        "4",
        "--json",
        str(path),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "top_h" in result.output
    traces = TraceBatch.load(path)
    assert len(traces) == 2
    assert all(t.meta["generation"]["sampler_params"] == {"alpha": 0.3} for t in traces)
    assert all(0 < t.meta["kept_mean"] < 259 for t in traces)
    stdout = CliRunner().invoke(cli, [*args[:-1], "-"])
    assert stdout.exit_code == 0
    assert len(json.loads(stdout.stdout)["traces"]) == 2


def test_sample_command_fits_entropix_and_rejects_bad_params(cli):
    result = CliRunner().invoke(
        cli,
        [
            "sample",
            "hi",
            "--sampler",
            "entropix",
            "--warmup",
            "2",
            "-n",
            "1",
            "--max-new-tokens",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "entropix thresholds (nats): h_low=" in result.output
    bad = CliRunner().invoke(cli, ["sample", "hi", "--sampler", "top_h", "--param", "beta=1"])
    assert isinstance(bad.exception, EntrolabError) and "accepts: alpha" in str(bad.exception)


def test_compare_samplers_command_writes_report_and_rerenders(cli, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    args = [
        "compare-samplers",
        "--sampler",
        "plain",
        "--sampler",
        "min_p:min_p=0.2",
        "--temperature",
        "1.5",
        "--n",
        "2",
        "--samples",
        "2",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["sampler"] for r in summary["table"]] == ["plain", "min_p:min_p=0.2"]
    assert (out / "accuracy.svg").read_text().startswith("<svg")
    assert "compare-samplers" in (out / "report.html").read_text()
    import entrolab.cli.common as common

    monkeypatch.setattr(common, "load_backend", lambda *a, **k: pytest.fail("no model needed"))
    again = CliRunner().invoke(cli, ["compare-samplers", "--report", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text()) == summary


@pytest.mark.model
def test_samplers_on_the_embedded_model(smollm):
    res = compare_samplers(
        smollm,
        n=2,
        samples=2,
        samplers=["plain", "top_h:alpha=0.4"],
        temperatures=[1.0],
        max_new_tokens=6,
    )
    plain, toph = res.table()
    assert plain["kept"] == smollm.vocab_size
    assert plain["retained_mass"] == pytest.approx(1.0, abs=1e-4)  # float32 sum over V
    assert toph["kept"] < 100 and toph["retained_mass"] < 1.0
    assert toph["entropy_after"] < plain["entropy_after"]
    assert all(len(r["responses"]) == 2 for r in res.rows)
