"""`entrolab eval` / `evaluate`: resumable runs, scoring, the report, bad input."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from entrolab.backends import HFBackend
from entrolab.errors import EntrolabError, UnknownNameError
from entrolab.evaluation import evaluate, load_results, score_estimator
from entrolab.evaluation.report import render_eval_html
from entrolab.models import tiny_model

FAST = ["msp", "perplexity", "mean_token_entropy", "answer_agreement", "semantic_entropy"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-eval")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _cli(*args):
    return [sys.executable, "-m", "entrolab.cli.main", "eval", *args]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_killed_run_resumes_without_losing_or_duplicating_rows(tiny_dir, tmp_path):
    common = [
        "--model",
        str(tiny_dir),
        "--n",
        "12",
        "--samples",
        "3",
        "--chunk",
        "2",
        "--estimators",
        ",".join(FAST),
        "--max-new-tokens",
        "6",
    ]
    full = tmp_path / "full"
    subprocess.run(_cli(*common, "--out", str(full)), check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(*common, "--out", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    partial = results.read_text().count("\n")
    assert 2 <= partial < 12, "the run was not interrupted mid-way"
    subprocess.run(
        _cli(*common, "--out", str(killed)), check=True, capture_output=True, timeout=300
    )
    a = sorted(_strip(load_results(full).rows), key=lambda r: r["index"])
    b = [json.loads(x) for x in results.read_text().splitlines()]
    assert sorted(r["index"] for r in b) == list(range(12))  # none missing, none doubled
    assert a == sorted(_strip(b), key=lambda r: r["index"])
    assert (killed / "report.html").exists() and (killed / "summary.json").exists()
    (killed / "report.html").unlink()
    rerender = subprocess.run(
        _cli("--report", str(killed)), capture_output=True, text=True, timeout=120
    )
    assert rerender.returncode == 0, rerender.stderr
    assert (killed / "report.html").exists()
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["n"] == 12 and {r["name"] for r in summary["table"]} == set(FAST)


def test_evaluate_in_memory_scores_and_renders(tiny_dir):
    backend = HFBackend.load(str(tiny_dir))
    res = evaluate(backend, "arithmetic", n=6, samples=3, estimators=FAST[:3], max_new_tokens=5)
    assert len(res.rows) == 6 and res.run_dir is None
    assert {s.name for s in res.scores} == set(FAST[:3])
    assert all(r["reason"] in ("correct", "wrong", "unparseable") for r in res.rows)
    page = render_eval_html(res)
    assert "entrolab eval" in page and "msp" in page
    summary = res.to_dict()
    assert summary["n"] == 6 and summary["accuracy"] == res.accuracy


def test_score_estimator_hand_case():
    # u ranks the two correct items first: AUROC = 1, PRR = 1 (oracle), AURC = mean of
    # cumulative risk / k for k=1..4 on risks [0, 0, 1, 1]: (0 + 0 + 1/3 + 2/4) / 4 = 0.208333
    s = score_estimator("x", np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0]))
    assert s.auroc == 1.0 and s.prr == pytest.approx(1.0)
    assert s.aurc == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)
    # all correct: ranking metrics are undefined, reported as None (not NaN)
    none = score_estimator("x", np.array([0.1, 0.2]), np.array([1, 1]))
    assert none.auroc is None and none.prr is None and none.n == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "phrase"),
    [
        ({"task": "bogus"}, UnknownNameError, "Known tasks"),
        ({"estimators": ["nope"]}, UnknownNameError, "Known estimators"),
        ({"n": 0}, EntrolabError, "n must be >= 1"),
        ({"estimators": []}, EntrolabError, "estimators is empty"),
    ],
)
def test_bad_eval_input(tiny_dir, kwargs, error, phrase):
    backend = HFBackend.load(str(tiny_dir))
    with pytest.raises(error) as info:
        evaluate(backend, **{"task": "arithmetic", "n": 2, "samples": 2, **kwargs})
    assert phrase in str(info.value)


def test_report_of_an_empty_run_directory_says_what_to_do(tmp_path):
    from entrolab.evaluation.rundir import RunDir

    RunDir(tmp_path).open({"task": "arithmetic"})
    with pytest.raises(EntrolabError, match="run `entrolab eval` first"):
        load_results(tmp_path)


def test_selective_prediction_certifies_a_threshold_when_the_estimator_separates():
    from entrolab.evaluation.core import results_from_rows

    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.6
    # u separates perfectly: correct items have u in [0, 1), wrong ones in [2, 3)
    u = np.where(correct, rng.random(400), 2 + rng.random(400))
    rows = [
        {
            "index": i,
            "correct": bool(c),
            "reason": "correct" if c else "wrong",
            "u": {"sep": float(x)},
        }
        for i, (c, x) in enumerate(zip(correct, u, strict=True))
    ]
    res = results_from_rows({"estimators_run": ["sep"], "task": "t", "samples": 1}, rows)
    sel = res.selective(alpha=0.1, delta=0.1)
    assert sel["estimator"] == "sep" and sel["n_calibration"] == sel["n_test"] == 200
    # a certified threshold that answers every correct item (u < 1) and may admit a few wrong
    # ones (u just above 2) as long as the certified risk stays <= alpha
    assert sel["u_threshold"] is not None and 1.0 <= sel["u_threshold"] < 3.0
    assert sel["test_risk"] <= 0.15  # alpha = 0.1 plus sampling slack on 200 held-out items
    assert sel["test_coverage"] >= correct.mean() - 0.1
    few = results_from_rows({"estimators_run": ["sep"], "task": "t", "samples": 1}, rows[:10])
    assert few.selective(alpha=0.1)["u_threshold"] is None  # 5 calibration items certify nothing
