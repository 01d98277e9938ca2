"""FineCE: estimation positions, BCI by hand, the soft-label fit against scikit-learn, resumable
Monte-Carlo collection, save/load checks, the estimator and the online strategy (tiny model)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.backends import HFBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.estimators import ESTIMATORS, applicable_estimators, run_estimators
from entrolab.inference import make_strategy
from entrolab.inference.cues import cot_prompt, cue_positions
from entrolab.inference.fince import (
    FineceProbe,
    FineceStrategy,
    backward_integrate,
    expand_soft_labels,
    fit_fince_on,
    load_fince,
    save_fince,
)
from entrolab.inference.fince_data import (
    collect_prefix_labels,
    estimation_positions,
    interval_positions,
    stable_trigger,
)
from entrolab.inference.hidden import hidden_at
from entrolab.inference.probes import ProbeInfo, fit_probe, save_probe
from entrolab.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ positions
def test_positions_by_hand() -> None:
    # 10 tokens, every 4: prefixes after tokens 4 and 8 → indices 3, 7 (9 is the finished trace)
    assert interval_positions(10, 4) == [3, 7]
    assert interval_positions(4, 4) == []  # the only candidate is the last token
    # answers forced at 5 step ends: "3", "5", "5", None, "5" — stabilised at index 2 only
    # (index 4 follows a None); with patience 2 nowhere.
    assert stable_trigger(["3", "5", "5", None, "5"]) == [2]
    assert stable_trigger(["5", "5", "5"], patience=2) == [2]
    assert stable_trigger(["3", "5", "5"], patience=2) == []
    pieces = ["a", "\n", "b", "\n", "c", "\n"]  # step ends at 1, 3 (5 is the last token)
    assert estimation_positions(pieces, "steps") == [1, 3]
    assert estimation_positions(pieces, "stable", forced_answers=["1", "1"]) == [3]
    assert estimation_positions(pieces, "interval", every=2) == [1, 3]
    with pytest.raises(EntrolabError, match="one forced answer per step end"):
        estimation_positions(pieces, "stable", forced_answers=["1"])
    with pytest.raises(EntrolabError, match="unknown position rule"):
        estimation_positions(pieces, "paragraphs")  # type: ignore[arg-type]
    with pytest.raises(EntrolabError, match=">= 1 token"):
        interval_positions(5, 0)


# ------------------------------------------------------------------------------------ BCI
def test_bci_by_hand() -> None:
    # λ = 0.5, K = 2 on [0.2, 0.4, 0.8]:
    # t0: 0.5·0.2 + 0.5·mean(0.4, 0.8) = 0.1 + 0.3 = 0.4
    # t1: 0.5·0.4 + 0.5·mean(0.8)      = 0.2 + 0.4 = 0.6
    # t2: the last point keeps 0.8
    np.testing.assert_allclose(backward_integrate([0.2, 0.4, 0.8], 0.5, 2), [0.4, 0.6, 0.8])
    # K = 1, λ = 0.25 on [1, 0]: t0 = 0.25·1 + 0.75·0 = 0.25
    np.testing.assert_allclose(backward_integrate([1.0, 0.0], 0.25, 1), [0.25, 0.0])
    with pytest.raises(EntrolabError, match="lam in"):
        backward_integrate([0.5], 1.5, 1)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=12),
    st.floats(0, 1),
    st.integers(1, 5),
)
def test_bci_properties(conf, lam, k) -> None:
    out = backward_integrate(conf, lam, k)
    c = np.asarray(conf)
    assert np.all(out >= c.min() - 1e-12) and np.all(out <= c.max() + 1e-12)  # an average
    assert out[-1] == c[-1]
    np.testing.assert_allclose(backward_integrate(conf, 1.0, k), c)  # λ = 1: no smoothing


# --------------------------------------------------------------------------- soft-label fit
def test_soft_label_fit_equals_weighted_sklearn_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    trials = rng.integers(1, 6, size=30)
    succ = rng.binomial(trials, 1 / (1 + np.exp(-x[:, 0] + 0.5 * x[:, 1])))
    xr, yr = expand_soft_labels(torch.tensor(x), torch.tensor(succ), torch.tensor(trials))
    assert len(yr) == trials.sum() and int(yr.sum()) == succ.sum()
    l2 = 0.1
    probe = fit_probe(xr, yr, l2=l2)
    # Reference: soft labels as two weighted rows per prefix (weights k and N − k) on the same
    # standardisation (the mean/std of the expanded rows = trial-weighted mean/std).
    w = trials / trials.sum()
    mean = (w[:, None] * x).sum(0)
    std = np.sqrt((w[:, None] * (x - mean) ** 2).sum(0))
    xs = (x - mean) / std
    ref = LogisticRegression(C=1 / (trials.sum() * l2), tol=1e-12, max_iter=10000).fit(
        np.vstack([xs, xs]),
        np.r_[np.ones(30), np.zeros(30)],
        sample_weight=np.r_[succ, trials - succ].astype(float),
    )
    got = probe.net.weight.detach().numpy()[0]
    np.testing.assert_allclose(got, ref.coef_[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probe.net.bias.item(), ref.intercept_[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(EntrolabError, match="successes <= trials"):
        expand_soft_labels(torch.zeros(1, 2), torch.tensor([3]), torch.tensor([2]))


# ------------------------------------------------------------------------- collection
@pytest.fixture(scope="module")
def labels(tiny_backend: HFBackend, tmp_path_factory):
    task = load_task("arithmetic", level=1)
    items = task.items(3, seed=0)
    path = tmp_path_factory.mktemp("fince") / "labels.jsonl"
    kw = dict(rule="interval", every=4, num_continuations=3, continuation_tokens=4, layer=1,
              config=GenerationConfig(max_new_tokens=12, temperature=0.7), path=path)  # fmt: skip
    data = collect_prefix_labels(tiny_backend, task, items, **kw)
    return task, items, kw, path, data


def test_collection_rows_hidden_states_and_resume(tiny_backend, labels, monkeypatch) -> None:
    task, items, kw, path, data = labels
    rows = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    assert [r["id"] for r in rows] == [it.id for it in items]
    for i, r in enumerate(rows):
        n = len(r["trace_ids"])
        # the question (−1), every 4 tokens below the last, then the finished trace
        assert r["positions"] == [-1, *range(3, n - 1, 4), n - 1]
        mine = data.item == i
        assert data.position[mine].tolist() == r["positions"]
        assert data.step[mine].tolist() == list(range(len(r["positions"])))
        assert data.final[mine].tolist() == [False] * (len(r["positions"]) - 1) + [True]
        assert data.trials[mine].tolist() == [3] * len(r["positions"])
        assert data.successes[mine][-1] == 3 * int(r["trace_correct"])
        ref = hidden_at(tiny_backend, [r["prompt_ids"] + r["trace_ids"]],
                        [[len(r["prompt_ids"]) + p for p in r["positions"]]], 1)[0]  # fmt: skip
        torch.testing.assert_close(data.features[mine], ref)
    # resume: every item is in the file, so nothing is generated again
    calls = []
    orig = tiny_backend.generate
    monkeypatch.setattr(tiny_backend, "generate", lambda *a, **k: calls.append(1) or orig(*a, **k))
    again = collect_prefix_labels(tiny_backend, task, items, **kw)
    assert calls == []
    torch.testing.assert_close(again.features, data.features)
    assert torch.equal(again.successes, data.successes)


def test_collection_refuses_a_file_with_other_settings(tiny_backend, labels) -> None:
    task, items, kw, _path, _ = labels
    with pytest.raises(EntrolabError, match="other settings.*every"):
        collect_prefix_labels(tiny_backend, task, items, **{**kw, "every": 5})
    with pytest.raises(EntrolabError, match="no items"):
        collect_prefix_labels(tiny_backend, task, [], **kw)


# ---------------------------------------------------------------------- artefact and uses
def _fitted(data, model: str = "tiny") -> FineceProbe:
    # Arbitrary but two-class soft labels so the probe's scores spread (the tiny model is
    # never right).
    succ = torch.arange(len(data)) % 4
    fake = type(data)(**{**data.__dict__, "successes": succ, "trials": torch.full_like(succ, 3)})
    return fit_fince_on(fake, model=model, l2=1e-3)


def test_save_load_and_mismatch_errors(tiny_backend, labels, tmp_path) -> None:
    *_, data = labels
    fince = _fitted(data)
    save_fince(fince, tmp_path / "p")
    back = load_fince(tmp_path / "p", tiny_backend, layer=1)
    np.testing.assert_allclose(back.confidence(data.features), fince.confidence(data.features))
    assert back.settings["rule"] == "interval" and (back.bci_lam, back.bci_k) == (0.5, 2)
    with pytest.raises(EntrolabError, match="layer 1 \\(not 2\\)"):
        load_fince(tmp_path / "p", layer=2)
    save_fince(_fitted(data, model="smollm"), tmp_path / "other")
    with pytest.raises(EntrolabError, match="trained for model 'smollm'"):
        load_fince(tmp_path / "other", tiny_backend)
    save_probe(fit_probe(torch.randn(8, 64), torch.arange(8) % 2), tmp_path / "plain")
    with pytest.raises(EntrolabError, match="not a FineCE probe"):
        load_fince(tmp_path / "plain")


def test_estimator_reads_the_last_token_and_is_never_auto_selected(tiny_backend, labels) -> None:
    _task, items, *_, data = labels
    fince = _fitted(data)
    res = run_estimators(tiny_backend, items[:2], ["fince"], max_new_tokens=6,
                         params={"fince": {"scorer": fince}})  # fmt: skip
    g = res.greedy
    seqs = [tiny_backend.prompt_ids(t.prompt) + t.token_ids.tolist() for t in g]
    h = torch.cat(hidden_at(tiny_backend, seqs, [[len(s) - 1] for s in seqs], 1))
    np.testing.assert_allclose(res.uncertainty["fince"], 1 - fince.confidence(h), rtol=1e-5)
    ok, skipped = applicable_estimators(tiny_backend)
    assert "fince" not in ok and "fitted scorer" in skipped["fince"]
    with pytest.raises(EntrolabError, match="needs a fitted scorer"):
        run_estimators(tiny_backend, items[:1], ["fince"], max_new_tokens=4)
    assert ESTIMATORS.entry("fince").paper


def test_strategy_online_stops_where_replay_does(tiny_backend) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(3, seed=0)
    cfg = GenerationConfig(max_new_tokens=24, temperature=1.0, topk_logprobs=2)
    prompts = [cot_prompt(task, it) for it in items]
    free = tiny_backend.generate(prompts, cfg)
    cue = Counter(p for t in free for p in t.tokens if p).most_common(1)[0][0]
    seqs = [
        tiny_backend.prompt_ids(p) + t.token_ids.tolist()
        for p, t in zip(prompts, free, strict=True)
    ]
    pos = [[len(s) - len(t) + c for c in cue_positions(t.tokens, (cue,))]
           for s, t in zip(seqs, free, strict=True)]  # fmt: skip
    feats = torch.cat(hidden_at(tiny_backend, seqs, pos, layer=1))
    info = ProbeInfo(model="tiny", layer=1, extra={"fince": {"cues": [cue]}})
    fince = FineceProbe(fit_probe(feats, torch.arange(len(feats)) % 2, l2=1e-3, info=info))
    never = FineceStrategy(fince, threshold=1.0, config=cfg, mode="replay")
    scores = sorted(d["confidence"] for o in never.run(tiny_backend, task, items)
                    for d in o.meta["decisions"])  # fmt: skip
    mid = len(scores) // 2
    thr = (scores[mid - 1] + scores[mid]) / 2
    assert scores[mid] - scores[mid - 1] > 1e-4
    replay = FineceStrategy(fince, thr, config=cfg, mode="replay").run(tiny_backend, task, items)
    online = make_strategy("fince", probe=fince, threshold=thr, config=cfg).run(
        tiny_backend, task, items
    )
    assert any(o.meta["exited"] for o in replay)
    for r, o in zip(replay, online, strict=True):
        assert r.meta["exit_position"] == o.meta["exit_position"]
        if r.meta["exited"]:
            first = next(d for d in r.meta["decisions"] if d["confidence"] >= thr)
            assert first["position"] == r.meta["exit_position"]
    with pytest.raises(EntrolabError, match="needs a fitted probe"):
        FineceStrategy()
