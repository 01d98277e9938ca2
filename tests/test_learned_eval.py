"""Fitted estimators in `entrolab eval`: `fit fince|sdm|set-size` → the printed `eval` command →
the eval's AUROC equals the estimator called directly on the stored traces; artefacts from
another model, hidden size or layer, and a fitted estimator without its artefact, fail clearly.
Also `fit sayself` on the parrot model (a merged checkpoint `eval --model` loads) and the
`sayself` estimator's parse of stated confidences."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from entrolab.calibration import auroc
from entrolab.cli.eval_cmd import eval_command
from entrolab.cli.fit_cmd import fit_command
from entrolab.errors import EntrolabError
from entrolab.tasks import load_task

runner = CliRunner()
app = typer.Typer()
app.command("fit")(fit_command)
app.command("eval")(eval_command)
N_ITEMS, TOKENS = 6, 4
SEVENS = "7" * TOKENS
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """Even items expect "7777" (what the parrot says in 4 tokens), odd items expect 5."""
    path = tmp_path_factory.mktemp("task") / "sevens.jsonl"
    rows = [
        {"id": f"q{i}", "prompt": f"Question {i}: name a number.", "answer": a}
        for i, a in enumerate([SEVENS, "5"] * (N_ITEMS // 2))
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _fit(kind, parrot_dir, task, out, *extra):
    args = ["fit", kind, "--task", f"jsonl:{task}", "--n", str(N_ITEMS), "--model",
            str(parrot_dir), "--max-new-tokens", str(TOKENS), "--out", str(out), *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def _eval_cmd(result) -> list[str]:
    line = next(x for x in result.output.splitlines() if x.startswith("entrolab eval "))
    return shlex.split(line)[1:]


def _run_eval(cmd, tmp_path, name):
    out = tmp_path / name
    args = [*cmd, "--n", str(N_ITEMS), "--max-new-tokens", str(TOKENS), "--samples", "1",
            "--seed", "0", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "summary.json").read_text()), out


@pytest.mark.parametrize("kind", ["fince", "sdm"])
def test_fitted_hidden_state_estimator_in_eval_matches_direct_call(
    kind, parrot_dir, task_file, tmp_path
):
    from entrolab.backends import HFBackend
    from entrolab.estimators.learned import GreedyHidden, fince_uncertainty, sdm_uncertainty
    from entrolab.evaluation import load_results
    from entrolab.inference.fitted import resolve_fitted

    art = tmp_path / kind
    fit = _fit(
        kind, parrot_dir, task_file, art, *(["--continuations", "2"] if kind == "fince" else [])
    )
    cmd = _eval_cmd(fit)
    assert cmd[cmd.index("--param") + 1] == f"{kind}.scorer={art}"
    summary, run_dir = _run_eval(cmd, tmp_path, f"eval-{kind}")
    row = next(r for r in summary["table"] if r["name"] == kind)
    assert summary["config"]["estimator_params"] == {kind: {"scorer": str(art)}}  # the path
    assert row["auroc_low"] <= row["auroc"] <= row["auroc_high"]  # intervals like any other
    # direct: the stored greedy traces → hidden states → the estimator function → AUROC
    res = load_results(run_dir)
    backend = HFBackend.load(str(parrot_dir))
    scorer = resolve_fitted({kind: {"scorer": str(art)}}, backend, [kind])[kind]["scorer"]
    seqs = [backend.prompt_ids(r["prompt"]) + r["trace"]["token_ids"] for r in res.rows]
    fn = fince_uncertainty if kind == "fince" else sdm_uncertainty
    u = fn({"greedy_hidden": GreedyHidden(backend, seqs)}, scorer=scorer)
    np.testing.assert_allclose(res.uncertainty(kind), u, rtol=1e-6, atol=1e-9)
    y = res.correct
    assert y.tolist() == [1.0, 0.0] * (N_ITEMS // 2)  # the parrot's "7777" is right on even items
    assert row["auroc"] == pytest.approx(auroc(-u, y), abs=1e-12)


def test_set_size_qhat_fit_and_eval(parrot_dir, tmp_path):
    from entrolab.backends import HFBackend
    from entrolab.estimators.option_sets import option_probs, set_size
    from entrolab.evaluation import load_results
    from entrolab.inference.cip import load_qhat

    task = tmp_path / "mc.jsonl"
    rows = [{"id": f"m{i}", "prompt": f"Pick one ({i}).", "answer": a, "options": ["7", "5", "3"]}
            for i, a in enumerate(["7", "5", "7", "3", "7", "7"])]  # fmt: skip
    task.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    art = tmp_path / "qhat"
    fit = _fit("set-size", parrot_dir, task, art, "--alpha", "0.3")
    q = load_qhat(art)
    backend = HFBackend.load(str(parrot_dir))
    items = load_task(f"jsonl:{task}").items(N_ITEMS, seed=0)
    opts = ["7", "5", "3"]
    probs = option_probs(backend, [it.prompt for it in items], [opts] * N_ITEMS)
    scores = np.sort([1 - p[opts.index(it.answer)] for p, it in zip(probs, items, strict=True)])
    # n = 6, α = 0.3: k = ⌈7 · 0.7⌉ = ⌈4.9⌉ = 5 → the 5th smallest score
    assert q.qhat == pytest.approx(scores[4]) and q.n == N_ITEMS and q.alpha == 0.3
    _, run_dir = _run_eval(_eval_cmd(fit), tmp_path, "eval-set-size")
    res = load_results(run_dir)
    probs = option_probs(backend, [r["prompt"] for r in res.rows], [opts] * N_ITEMS)
    expected = [float(set_size(p, q.qhat)) for p in probs]
    np.testing.assert_array_equal(res.uncertainty("set_size"), expected)
    # a q̂ of another model is refused (its coverage holds only for the model it came from)
    other = json.loads((tmp_path / "qhat.json").read_text()) | {"model": "another-model"}
    (tmp_path / "q2.json").write_text(json.dumps(other))
    bad = runner.invoke(app, ["eval", "--task", f"jsonl:{task}", "--model", str(parrot_dir),
                              "--n", "2", "--estimators", "set_size", "--param",
                              f"set_size.qhat={tmp_path / 'q2'}", "--out", str(tmp_path / "x")])  # fmt: skip
    assert bad.exit_code != 0 and "another-model" in str(bad.exception)
    assert "entrolab fit set-size" in str(bad.exception)


def test_bad_artefacts_fail_with_the_fix(parrot_dir, task_file, tmp_path):
    from entrolab.backends import HFBackend
    from entrolab.inference.fitted import check_fitted_given, resolve_fitted
    from entrolab.inference.probes import probe_paths
    from entrolab.models import tiny_model

    # no artefact: fails before any model loads, naming the fit command and the --param
    with pytest.raises(EntrolabError, match=r"entrolab fit fince --out PATH.*fince\.scorer=PATH"):
        check_fitted_given({}, ["fince"])
    bad = runner.invoke(app, ["eval", "--estimators", "sdm", "--model", "/nonexistent"])
    assert bad.exit_code != 0 and "entrolab fit sdm" in str(bad.exception)
    art = tmp_path / "fince"
    _fit("fince", parrot_dir, task_file, art, "--continuations", "1")
    parrot = HFBackend.load(str(parrot_dir))
    # another model (same architecture, another name)
    model, tok = tiny_model(seed=3)
    other = HFBackend(model, tok, name="other-tiny")
    with pytest.raises(EntrolabError, match=r"trained for model .*other-tiny.*entrolab fit fince"):
        resolve_fitted({"fince": {"scorer": str(art)}}, other, ["fince"])
    # another hidden size under the same name
    wide, tok = tiny_model(seed=3, hidden_size=2 * parrot.hidden_size)
    with pytest.raises(EntrolabError, match="feature size"):
        resolve_fitted({"fince": {"scorer": str(art)}},
                       HFBackend(wide, tok, name=parrot.name), ["fince"])  # fmt: skip
    # a layer this model does not have (the JSON edited to layer 9 of a 2-block model)
    _, meta = probe_paths(art)
    d = json.loads(meta.read_text())
    d["info"]["layer"] = 9
    meta.write_text(json.dumps(d))
    with pytest.raises(EntrolabError, match=r"layer 9, which this model does not have"):
        resolve_fitted({"fince": {"scorer": str(art)}}, parrot, ["fince"])
    with pytest.raises(EntrolabError, match=r"--param sdm.scorer=.*not an SDM verifier"):
        resolve_fitted({"sdm": {"scorer": str(art)}}, parrot, ["sdm"])
    with pytest.raises(EntrolabError, match="not found"):
        resolve_fitted({"sdm": {"scorer": str(tmp_path / "nope")}}, parrot, ["sdm"])
    # q̂ as a number needs no file
    assert resolve_fitted({"set_size": {"qhat": 0.4}}, parrot, ["set_size"]) == {}


def test_sayself_estimator_reads_the_stated_confidence() -> None:
    from types import SimpleNamespace

    from entrolab.estimators import EstimatorConfig, StatContext
    from entrolab.estimators.learned import (
        _stated_confidence,
        parse_stated_confidence,
        sayself_uncertainty,
    )

    texts = ["\\boxed{7}\nConfidence: 8/10\nReason: all agree", "\\boxed{3}", "x\nConfidence: 30%"]
    traces = [SimpleNamespace(text=t) for t in texts]  # the statistic reads .text only
    ctx = StatContext(None, ["p"] * 3, [None] * 3, EstimatorConfig(unparsed_confidence=0.25),
                      [0, 0, 0], lambda item, text: None, lambda answers: [])  # fmt: skip
    stat = _stated_confidence(ctx, {"greedy": traces})
    # 8/10 → 0.8; none stated → the run's fallback 0.25; 30% → 0.3
    np.testing.assert_allclose(stat["confidence"], [0.8, 0.25, 0.3])
    assert stat["parsed"].tolist() == [True, False, True] and ctx.meta["unparsed"]["sayself"] == 1
    np.testing.assert_allclose(sayself_uncertainty({"stated_confidence": stat}), [0.2, 0.75, 0.7])
    # the k/10 scale the SaySelf prompt asks for: a bare 3 is 3/10 (not 3%), a bare 75 is 75%,
    # a decimal below 1 a probability; only the first "Confidence:" line counts
    cases = {"Confidence: 3": 0.3, "Confidence: 1\nConfidence: 9": 0.1, "Confidence: 75": 0.75,
             "Confidence: 0.8": 0.8, "Confidence: 2/100": 0.02, "Confidence: 12/10": None,
             "I am 90% sure": 0.9, "no statement": None}  # fmt: skip
    for text, want in cases.items():
        got = parse_stated_confidence(text)
        assert got == (None if want is None else pytest.approx(want)), text


def test_fit_sayself_saves_a_merged_model_eval_loads(parrot_dir, task_file, tmp_path):
    from entrolab.backends import HFBackend

    out = tmp_path / "sayself"
    result = _fit("sayself", parrot_dir, task_file, out, "--samples", "2", "--steps", "2")
    meta = json.loads((out / "sayself.json").read_text())
    # every chain of every item is "7777…" → all agree: one example per item, confidence 1
    assert meta["examples"] == N_ITEMS and meta["mean_target_confidence"] == 1.0
    assert meta["steps"] == 2 and meta["samples"] == 2
    merged = HFBackend.load(str(out))
    assert not any("lora" in k for k in merged.model.state_dict())  # merged, a plain checkpoint
    cmd = _eval_cmd(result)
    assert cmd[cmd.index("--model") + 1] == str(out) and "sayself,msp" in cmd
    assert any(c.startswith("instructions=Put the final answer") for c in cmd)
    bad = runner.invoke(app, ["fit", "sayself", "--samples", "1"])
    assert bad.exit_code != 0 and "--samples must be >= 2" in str(bad.exception)
