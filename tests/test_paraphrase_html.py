"""The report's "Stability under paraphrase" section (studies/paraphrase_html.py): hand-computed
figures in their cells, escaped model text, the plain-language reading, and ``entrolab eval``
/ ``eval --report`` writing the section only when the run has paraphrases."""

from __future__ import annotations

import json
import shutil

import pytest

from entrolab.evaluation.report import _short
from entrolab.studies.paraphrase_eval import paraphrase_summary, write_paraphrase_summary
from entrolab.studies.paraphrase_html import (
    TITLE,
    auroc_by_prompt_figure,
    paraphrase_section,
    paraphrase_section_html,
    reading_lines,
)
from test_report_browser import browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _row(i, correct, ue, uf, samples, keys, conf, prompts=("a", "b"), responses=(None, "r")):
    """A stored paraphrase row: 2 prompts, estimators e and f, 2 samples per prompt."""
    return {
        "index": i, "id": f"it{i}", "answer": "4", "prompts": list(prompts),
        "sources": ["original", "rule"],
        "per_paraphrase": [
            {"correct": c, "u": {"e": a, "f": b}, "sample_correct": s, "sample_keys": k,
             "sample_confidence": f, **({} if r is None else {"response": r})}
            for c, a, b, s, k, f, r in zip(correct, ue, uf, samples, keys, conf, responses,
                                           strict=True)
        ],
    }  # fmt: skip


HOSTILE = "<script>alert(1)</script>"
ROWS = [
    # item 0: greedy right on both prompts; samples 2/2 and 1/2 right (rate 3/4)
    _row(0, [1, 1], [0.1, 0.2], [0.8, 0.9], [[1, 1], [1, 0]], [["4", "4"], ["4", "5"]],
         [[0.5, 0.5], [0.5, 0.95]]),
    # item 1: greedy right then wrong; every sample wrong (rate 0) → greedy right, P(correct) < ½
    _row(1, [1, 0], [0.3, 0.9], [0.1, 0.1], [[0, 0], [0, 0]], [["5", "5"], ["<i>6</i>", None]],
         [[0.2, 0.2], [0.2, 0.2]], prompts=("What is 2+2?", "What is <b>2+2</b>?"),
         responses=(None, HOSTILE)),
    # item 2: greedy wrong on both; 1 of 4 samples right (rate 1/4)
    _row(2, [0, 0], [0.8, 0.7], [0.3, 0.3], [[0, 1], [0, 0]], [["3", "4"], ["3", "3"]],
         [[0.3, 0.3], [0.3, 0.3]]),
]  # fmt: skip


def _ends(iv):
    """The bootstrap ends as the main report table writes them: ``[.61,.80]``."""
    return f"[{_short(iv['low'])},{_short(iv['high'])}]"


@pytest.fixture(scope="module")
def summary():
    return paraphrase_summary(ROWS, n_boot=200)


def test_section_shows_the_hand_computed_figures(summary):
    page = paraphrase_section_html(summary, ROWS, [{"index": 1, "response": "4 & more"}],
                                   figure=False)  # fmt: skip
    assert f"<h2>{TITLE}</h2>" in page and "3 items × 2 prompts" in page
    # e: u p0 (.1,.3,.8) vs correct (1,1,0) and p1 (.2,.9,.7) vs (1,0,0): right answers least
    # uncertain → AUROC 1 on both, mean 1, spread 0. Ranks p0 (1,2,3), p1 (1,3,2): Spearman
    # 1 − 6·2/(3·8) = 0.50. Mid-ranks of all 6 values scaled (r − ½)/6 → per-item std
    # .5/6, 1.5/6, .5/6 → mean 0.139. Median .5: item 1's flag flips (.3 ≤ .5 < .9) → 1/3.
    e = summary["estimators"]["e"]
    assert (
        "<tr><td>e</td><td>1.000 · 1.000</td><td>1.000</td><td>0.000</td>"
        f"<td>0.50 {_ends(e['rank_agreement'])}</td>"
        f"<td>0.139 {_ends(e['within_item_spread'])}</td><td>0.33 ["
    ) in page
    # f: p0 (.8,.1,.3) vs (1,1,0): pairs (0,2) lost, (1,2) won → 0.5; p1 (.9,.1,.3) vs (1,0,0)
    # → 0; mean 0.25, spread 0.5; same order on both prompts → ρ 1 in every resample. Mid-ranks
    # (.1,.1 → 1.5; .3,.3 → 3.5; .8 → 5; .9 → 6): only item 0 moves, std .5/6 → mean 0.028;
    # median .3: flags (F,F), (T,T), (T,T) → no flip.
    assert (
        "<tr><td>f</td><td>0.500 · 0.000</td><td>0.250</td><td>0.500</td>"
        "<td>1.00 [1.00,1.00]</td><td>0.028 ["
    ) in page
    assert page.index("<td>e</td>") < page.index("<td>f</td>")  # best mean AUROC first
    ms = summary["multi_sample"]
    # rates 3/4, 0, 1/4; greedy (original) 1,1,0; pass@2 per prompt: item 0 (1, 1), item 1
    # (0, 0), item 2 (1, 0) → 1/2; P(fail) per prompt: (0, .5), (1, 1), (.5, 1) → mean over
    # prompts .25, 1, .75 → 2/3, worst .5, 1, 1 → 5/6; fragile: items 0 and 2 → 2/3
    for key, mean in (
        ("greedy_accuracy", "0.67"), ("sampled_accuracy", "0.33"),
        ("greedy_minus_sampled", "0.33"), ("pass@2", "0.50"), ("maj@2", "0.33"),
        ("p_fail_mean", "0.67"), ("p_fail_worst", "0.83"), ("fragile_fraction", "0.67"),
        ("tail_risk", "0.33"),
    ):  # fmt: skip
        assert f"<td>{mean} {_ends(ms[key])}</td>" in page, key
    # variance of the rates (3/4, 0, 1/4) around 1/3: (.1736 + .1111 + .0069) / 3 = 0.097
    assert "<td>0.097</td>" in page
    # item 1 is the one greedy-right / P(correct) < ½ item, shown prompt by prompt
    assert "Greedy right but P(correct) &lt; 0.5: 1 item</h2>" in page
    assert "Greedy wrong but P(correct) ≥ 0.5: 0 items</h2><p>P(correct)" in page
    assert "<td rowspan=2>item 1 (it1)<br>reference 4</td>" in page
    assert "<td class=t>4 &amp; more</td><td>right</td><td>0/2</td><td class=t>5 ×2</td>" in page


def test_model_text_and_prompts_are_escaped(summary):
    page = paraphrase_section_html(summary, ROWS, figure=False)
    assert "<script" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</td><td>wrong</td>" in page
    assert "p1: What is &lt;b&gt;2+2&lt;/b&gt;?<br><small>rule</small>" in page
    assert "&lt;i&gt;6&lt;/i&gt; ×1, unparseable ×1" in page
    assert (
        "original: What is 2+2?<br><small>original</small></td><td class=t>–</td>" in page
    )  # no eval row


def _iv(mean, low, high):
    return {"mean": mean, "low": low, "high": high}


def _summary(gap):
    """A hand-made summary: a and b with intervals, c unscored; no AUROC per prompt."""
    rest = {"auroc_by_paraphrase": [None, None], "within_item_spread": _iv(0.1, 0.0, 0.2),
            "decision_flip_rate": _iv(0.2, 0.1, 0.3)}  # fmt: skip
    est = {
        "a": {"n": 10, "rank_agreement": _iv(0.9, 0.8, 0.95), "auroc_mean": _iv(0.7, 0.6, 0.8),
              "auroc_spread": _iv(0.05, 0.0, 0.1), **rest},
        "b": {"n": 10, "rank_agreement": _iv(0.5, 0.3, 0.7), "auroc_mean": _iv(0.65, 0.45, 0.85),
              "auroc_spread": _iv(0.2, 0.1, 0.3), **rest},
        "c": {"n": 2, "reason": "fewer than 3 items with a finite u on every paraphrase"},
    }  # fmt: skip
    return {
        "estimators": est,
        "correctness": {"accuracy_by_paraphrase": [0.6, 0.5], "flip_rate": _iv(0.1, 0.0, 0.3)},
        "multi_sample": {"greedy_minus_sampled": gap, "p_fail_worst": _iv(0.5, 0.4, 0.6),
                         "p_fail_mean": _iv(0.4, 0.3, 0.5)},
    }  # fmt: skip


def test_reading_names_the_most_stable_and_says_when_it_is_not_significant():
    lines = reading_lines(_summary(_iv(0.2, 0.1, 0.3)))
    # ρ: a [.80, .95] vs b [.30, .70] do not overlap; AUROC a [.6, .8] vs b [.45, .85] overlap
    assert lines[0].startswith("most stable: a, rank agreement ρ 0.90 [0.80, 0.95]")
    assert lines[0].endswith("ahead of b's 0.50 [0.30, 0.70] (the intervals do not overlap)")
    assert lines[1] == (
        "best mean AUROC over prompts: a, 0.700 [0.600, 0.800], moving by 0.050 [0.000, 0.100] "
        "between wordings; not significant: its interval overlaps b's 0.650 [0.450, 0.850]"
    )
    assert lines[2].endswith("(greedy accuracy per prompt: original 0.60, p1 0.50)")
    assert lines[3].startswith("greedy evaluation overstates accuracy: greedy − sampled 0.20")
    s = _summary(_iv(-0.05, -0.15, 0.05))
    s["estimators"]["b"]["auroc_mean"] = _iv(0.8, 0.45, 0.9)  # b best, interval holds 0.5
    lines = reading_lines(s)
    assert "b, 0.800 [0.450, 0.900] (its interval includes 0.5: not distinguishable" in lines[1]
    assert lines[3].startswith("greedy and sampled accuracy do not differ significantly")


def test_figure_plots_auroc_per_prompt_and_rows_without_figures(summary):
    fig = auroc_by_prompt_figure(summary)
    ax = fig.axes[0]
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()}
    assert lines["e"] == [1.0, 1.0] and lines["f"] == [0.5, 0.0] and "chance" in lines
    assert [t.get_text() for t in ax.get_xticklabels()] == ["original", "p1"]
    s = _summary(_iv(0.2, 0.1, 0.3))
    s.update(n_items=10, paraphrases=2, sources={"template": 10},
             multi_sample={"reason": "no samples were stored"})  # fmt: skip
    assert auroc_by_prompt_figure(s) is None  # no AUROC per prompt in the hand summary
    page = paraphrase_section_html(s, [])
    assert "<svg" not in page and "not available: no samples were stored" in page
    assert "<tr><td>c</td><td colspan=6>fewer than 3 items" in page


def test_section_of_a_run_directory(summary, tmp_path):
    assert paraphrase_section(tmp_path) == ""  # no paraphrases/summary.json: no section
    (tmp_path / "paraphrases").mkdir()
    (tmp_path / "paraphrases" / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8"
    )
    write_paraphrase_summary(tmp_path, summary)
    page = paraphrase_section(tmp_path, [{"index": 1, "response": "4 & more"}])
    assert "3 items × 2 prompts" in page and "<td class=t>4 &amp; more</td>" in page
    # a summary of fewer rows than stored (rows appended since) is recomputed from the rows
    write_paraphrase_summary(tmp_path, paraphrase_summary(ROWS[:2], n_boot=50))
    assert "3 items × 2 prompts" in paraphrase_section(tmp_path)


def test_eval_and_eval_report_write_the_section_only_with_paraphrases(parrot_dir, tmp_path):
    from typer.testing import CliRunner

    from entrolab.cli.main import app

    task = tmp_path / "t.jsonl"
    # the parrot replies "77": items 0 and 2 expect it, items 1 and 3 expect 5
    rows = [{"id": f"q{i}", "prompt": f"Question {i}: <b>name</b> a number.", "answer": a}
            for i, a in enumerate(["77", "5", "77", "5"])]  # fmt: skip
    task.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    args = ["eval", "--model", str(parrot_dir), "--task", f"jsonl:{task}", "--n", "4",
            "--samples", "2", "--estimators", "mean_token_entropy,answer_agreement",
            "--max-new-tokens", "2", "--paraphrases", "2", "--out", str(out)]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    # right on items 0 and 2 whatever the wording: accuracy ½ on both prompts, nothing flips
    assert f"<h2>{TITLE}</h2>" in page and "4 items × 2 prompts" in page
    assert "(greedy accuracy per prompt: original 0.50, p1 0.50)" in page
    assert "<b>name</b>" not in page and "&lt;b&gt;name&lt;/b&gt;" in page
    (out / "report.html").unlink()
    again = runner.invoke(app, ["eval", "--report", str(out)], env={"COLUMNS": "160"})
    assert again.exit_code == 0, again.output
    assert f"<h2>{TITLE}</h2>" in (out / "report.html").read_text()
    shutil.rmtree(out / "paraphrases")  # a run without paraphrases: no section
    plain = runner.invoke(app, ["eval", "--report", str(out)], env={"COLUMNS": "160"})
    assert plain.exit_code == 0, plain.output
    assert TITLE not in (out / "report.html").read_text()


@pytest.mark.browser
def test_section_fits_the_page_in_chromium(browser, summary, tmp_path):  # noqa: F811
    from entrolab.report import render_html
    from test_figures_browser import _check_page

    rows = json.loads(json.dumps(ROWS))
    rows[1]["per_paraphrase"][1]["response"] = "7" * 400  # one long unbroken answer
    body = paraphrase_section_html(summary, rows)
    page = tmp_path / "paraphrase_section.html"
    page.write_text(render_html([], title="t", intro_html=body), encoding="utf-8")
    _check_page(browser, page, tmp_path, min_figures=1)
