"""`entrolab eval` end-to-end on OpenAIBackend against a live `entrolab serve` (tiny random model
on 127.0.0.1), compared with the same run on the in-process backend. (DeepConf online through a
server runs on the embedded model in tests/test_serve_embedded.py: the tiny model's
near-uniform confidences tie.)"""

from __future__ import annotations

import numpy as np
import pytest

from entrolab.backends import OpenAIBackend
from entrolab.estimators import EstimatorConfig, applicable_estimators
from entrolab.evaluation import evaluate
from entrolab.serve import ServeConfig, running

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def remote(tiny_backend):
    with running(tiny_backend, ServeConfig(model_id="tiny", port=0)) as url:
        yield OpenAIBackend(url, tokenizer=tiny_backend.tokenizer, token_ids=True)


def test_eval_end_to_end_on_the_server_skips_full_logit_estimators(remote, tiny_backend):
    ok, skipped = applicable_estimators(remote, EstimatorConfig(samples=2))
    assert "self_certainty" in skipped and "full-logits" in skipped["self_certainty"]
    assert "self_certainty" not in ok
    assert {"deepconf_lowest", "semantic_entropy", "pmi", "ptrue", "pcc"} <= set(ok)  # echo scoring
    assert "self_certainty" in applicable_estimators(tiny_backend, EstimatorConfig(samples=2))[0]
    names = [
        "perplexity",
        "msp",
        "deepconf_lowest",
        "mean_token_entropy",
        "answer_agreement",
        "pmi",
    ]
    settings = dict(n=4, samples=2, max_new_tokens=8, chunk=4, estimators=names)
    there = evaluate(remote, "arithmetic", **settings)
    here = evaluate(tiny_backend, "arithmetic", **settings)
    assert [r["response"] for r in there.rows] == [r["response"] for r in here.rows]
    assert [r["samples"] for r in there.rows] == [r["samples"] for r in here.rows]
    for name in ("perplexity", "msp", "answer_agreement", "pmi"):  # chosen-token logprobs only
        assert there.uncertainty(name) == pytest.approx(here.uncertainty(name), abs=1e-4)
    # perplexity u = −mean log p of the greedy answer's tokens, from the stored trace
    row = there.rows[0]
    assert row["u"]["perplexity"] == pytest.approx(-np.mean(row["trace"]["logprob"]), rel=1e-6)
    # top-k (renormalised) token entropy ≤ … is not the full entropy: the runs differ
    assert row["trace"]["provenance"]["vocab"] == "topk"


def test_eval_report_lists_the_estimators_the_backend_cannot_run(remote, tmp_path) -> None:
    from rich.console import Console

    from entrolab.evaluation.report import print_summary, render_eval_html

    res = evaluate(remote, "arithmetic", n=4, samples=2, max_new_tokens=6, chunk=4, out=tmp_path)
    skipped = res.config["estimators_skipped"]
    assert "self_certainty" in skipped and "self_certainty" not in res.config["estimators_run"]
    console = Console(record=True, width=100)
    print_summary(res, console=console)
    text = console.export_text()
    assert "skipped self_certainty:" in text and "full-logits" in text
    assert "skipped self_certainty:" in render_eval_html(res)


def test_eval_command_runs_against_a_server_with_base_url(remote, tiny_backend, tmp_path) -> None:
    from typer.testing import CliRunner

    from entrolab.cli.main import app

    tok_dir = tmp_path / "tok"
    tiny_backend.tokenizer.save_pretrained(tok_dir)
    out = tmp_path / "run"
    args = ["eval", "--base-url", remote.base_url, "--model", "tiny", "--tokenizer", str(tok_dir)]
    args += ["--n", "3", "--samples", "2", "--max-new-tokens", "6", "--out", str(out)]
    # asking by name for an estimator the server cannot feed is a clear error
    refused = CliRunner().invoke(app, [*args, "--estimators", "perplexity,self_certainty"])
    assert "'self_certainty' cannot run: needs full-logits" in str(refused.exception)
    result = CliRunner().invoke(app, [*args, "--estimators", "perplexity,msp", "--overwrite"])
    assert result.exit_code == 0, result.output
    import json

    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["trace"]["provenance"]["vocab"] == "topk" for r in rows)
    # the same items in process give the same greedy replies
    here = evaluate(tiny_backend, "arithmetic", n=3, samples=2, max_new_tokens=6, chunk=3,
                    estimators=["perplexity", "msp"])  # fmt: skip
    assert [r["response"] for r in rows] == [r["response"] for r in here.rows]
