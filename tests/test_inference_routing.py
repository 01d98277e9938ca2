"""DiffAdapt routing: hand-computed labels, the U-shape table, route config round trips, question
features against an unpadded reference, probe accuracy on separable data, and that each question
is answered with its class's configured route."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from entrolab.backends import HFBackend
from entrolab.config import GenerationConfig
from entrolab.errors import EntrolabError
from entrolab.inference import make_strategy
from entrolab.inference.base import item_seeds
from entrolab.inference.hidden import hidden_at
from entrolab.inference.probes import ProbeInfo, fit_probe
from entrolab.inference.routing import (
    CLASSES,
    DiffAdaptRouter,
    DiffAdaptStrategy,
    Route,
    RoutingConfig,
    load_router,
    prompt_features,
    save_router,
)
from entrolab.inference.routing_fit import (
    DifficultyData,
    collect_difficulty_data,
    difficulty_labels,
    fit_router,
    u_shape_table,
)
from entrolab.tasks import load_task

#: one torch thread per test (see the fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


ACC = [0.9, 0.1, 0.5, 0.6, 0.4, 0.75, 0.25, 0.3]
ENT = [2.0, 2.5, 0.5, 3.0, 2.0, 1.0, 1.0, 2.8]


def test_difficulty_labels_by_hand() -> None:
    # 0.9 ≥ 0.75 → easy; 0.1 ≤ 0.25 → hard; the band edges 0.75 and 0.25 are inclusive.
    # Middle band: p̂ 0.5, 0.6, 0.4, 0.3 with H 0.5, 3.0, 2.0, 2.8 → median of
    # [0.5, 2.0, 2.8, 3.0] = (2.0 + 2.8) / 2 = 2.4: 0.6 (H 3.0) → easy side, 0.3 (H 2.8) → hard
    # side, 0.5 (H 0.5) and 0.4 (H 2.0) stay normal (the entropy valley).
    assert difficulty_labels(ACC, ENT) == [
        "easy", "hard", "normal", "easy", "normal", "easy", "hard", "hard",
    ]  # fmt: skip
    # Without the entropy split the middle band is all normal.
    assert difficulty_labels(ACC, ENT, entropy_quantile=None) == [
        "easy", "hard", "normal", "normal", "normal", "easy", "hard", "normal",
    ]  # fmt: skip
    # q = 0.9: position 0.9 · 3 = 2.7 → 2.8 + 0.7 · (3.0 − 2.8) = 2.94 (numpy's linear rule):
    # only H 3.0 exceeds it.
    assert float(np.quantile([0.5, 2.0, 2.8, 3.0], 0.9)) == pytest.approx(2.94)
    labels = difficulty_labels(ACC, ENT, entropy_quantile=0.9)
    assert [labels[i] for i in (2, 3, 4, 7)] == ["normal", "easy", "normal", "normal"]


def test_difficulty_label_errors() -> None:
    with pytest.raises(EntrolabError, match="one accuracy and one mean entropy"):
        difficulty_labels([0.5], [1.0, 2.0])
    with pytest.raises(EntrolabError, match=r"in \[0, 1\]"):
        difficulty_labels([1.5], [1.0])
    with pytest.raises(EntrolabError, match="hard_max_accuracy < easy_min_accuracy"):
        difficulty_labels([0.5], [1.0], easy_min_accuracy=0.2, hard_max_accuracy=0.3)
    with pytest.raises(EntrolabError, match="finite"):
        difficulty_labels([0.5], [math.nan])


def test_u_shape_table_by_hand() -> None:
    # buckets [0, .25) [.25, .5) [.5, .75) [.75, 1]: 0.1 | 0.4, 0.25, 0.3 | 0.5, 0.6 | 0.9, 0.75
    rows = u_shape_table(ACC, ENT)
    assert [r["n"] for r in rows] == [1, 3, 2, 2]
    assert rows[1]["entropy"] == pytest.approx((2.0 + 1.0 + 2.8) / 3)
    assert rows[2]["accuracy"] == pytest.approx(0.55) and rows[3]["entropy"] == 1.5
    empty = u_shape_table([0.9], [1.0])[0]
    assert empty["n"] == 0 and math.isnan(empty["entropy"])


def test_routing_config_round_trips_and_validates(tmp_path) -> None:
    cfg = RoutingConfig()
    assert cfg["easy"].max_new_tokens == 16 and cfg["hard"].max_new_tokens == 128
    assert RoutingConfig.from_yaml(cfg.to_yaml()) == cfg
    custom = RoutingConfig.from_dict(
        {**cfg.to_dict(), "hard": {"max_new_tokens": 96, "num_samples": 3, "temperature": 0.7}}
    )
    path = tmp_path / "routes.yaml"
    path.write_text(custom.to_yaml())
    assert RoutingConfig.from_yaml(path)["hard"] == Route(
        max_new_tokens=96, num_samples=3, temperature=0.7
    )
    with pytest.raises(EntrolabError, match="unknown settings"):
        RoutingConfig.from_dict({**cfg.to_dict(), "easy": {"budget": 3}})
    with pytest.raises(EntrolabError, match="missing"):
        RoutingConfig.from_dict({"easy": {}, "hard": {}})
    with pytest.raises(EntrolabError, match="invalid GenerationConfig"):
        Route(max_new_tokens=0)
    with pytest.raises(EntrolabError, match="not found"):
        RoutingConfig.from_yaml(tmp_path / "missing.yaml")


def test_probe_on_separable_features_reaches_high_accuracy() -> None:
    # Three well-separated Gaussian blobs; accuracies/entropies chosen so the labels are the
    # blobs (easy p̂ = 0.9, normal p̂ = 0.5 with low entropy, hard p̂ = 0.1).
    rng = np.random.default_rng(0)
    n = 90
    cls = np.arange(n) % 3
    centers = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    x = centers[cls] + rng.normal(size=(n, 4))
    acc = np.array([0.9, 0.5, 0.1])[cls]
    ent = np.array([2.0, 0.5, 2.0])[cls]
    train = DifficultyData(torch.tensor(x[:60]), torch.tensor(acc[:60]), torch.tensor(ent[:60]), (), "entropy", None, 8)  # fmt: skip
    router = fit_router(train, model="m")
    assert router.probe.info.extra["label_counts"] == {"easy": 20, "normal": 20, "hard": 20}
    pred = router.probe.predict(torch.tensor(x)).numpy()
    assert (pred[:60] == cls[:60]).mean() >= 0.95
    assert (pred[60:] == cls[60:]).mean() >= 0.9  # held out


def test_prompt_features_match_unpadded_reference(tiny_backend: HFBackend) -> None:
    prompts = ["What is 1 + 2?", "Hi"]  # different lengths: the batch is left-padded
    feats = prompt_features(tiny_backend, prompts, feature="hidden+entropy", layer=0)
    assert feats.shape == (2, 64 + 3)
    for i, p in enumerate(prompts):
        ids = tiny_backend.prompt_ids(p)
        with torch.no_grad():
            out = tiny_backend.model(torch.tensor([ids]), output_hidden_states=True)
        torch.testing.assert_close(feats[i, :64], out.hidden_states[1][0, -1], rtol=1e-4, atol=1e-5)
        dist = torch.distributions.Categorical(logits=out.logits[0, -1].double())
        logp = dist.logits
        var = (dist.probs * (-logp - dist.entropy()) ** 2).sum()
        ref = torch.stack([dist.entropy(), var, logp.max()]).float()
        torch.testing.assert_close(feats[i, 64:], ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(EntrolabError, match="feature must be"):
        prompt_features(tiny_backend, prompts, feature="logits")  # type: ignore[arg-type]


def test_collect_difficulty_data_matches_an_independent_generation(tiny_backend) -> None:
    task = load_task("arithmetic", level=1)
    items = task.items(2, seed=0)
    cfg = GenerationConfig(max_new_tokens=4, temperature=1.0)
    data = collect_difficulty_data(tiny_backend, task, items, k=2, config=cfg, layer=0)
    ref = tiny_backend.generate(
        [it.prompt for it in items],
        GenerationConfig(max_new_tokens=4, temperature=1.0, num_samples=2),
        seeds=item_seeds(0, items),
    ).by_prompt()
    for i, traces in ref.items():
        want = np.mean([t.entropy.double().mean().item() for t in traces])
        assert data.mean_entropy[i].item() == pytest.approx(want, rel=1e-9)
        assert data.accuracy[i].item() == np.mean(
            [task.grade(items[i], t.text).correct for t in traces]
        )
    assert data.generated_tokens == sum(len(t) for ts in ref.values() for t in ts)
    hid = hidden_at(tiny_backend, [tiny_backend.prompt_ids(items[0].prompt)], [[-1 % len(tiny_backend.prompt_ids(items[0].prompt))]], 0)  # fmt: skip
    torch.testing.assert_close(data.features[0], hid[0][0], rtol=1e-4, atol=1e-5)


class Recorder:
    """Wraps a backend and records every generate() call."""

    def __init__(self, backend) -> None:
        self._b, self.calls = backend, []

    def __getattr__(self, name):
        return getattr(self._b, name)

    def generate(self, prompts, config, **kw):
        self.calls.append((list(prompts), config))
        return self._b.generate(prompts, config, **kw)


@pytest.fixture(scope="module")
def routed(tiny_backend):
    task = load_task("arithmetic", level=1)
    items = task.items(3, seed=1)
    x = prompt_features(tiny_backend, [it.prompt for it in items], layer=1)
    # three questions, three classes: a lightly regularised probe memorises them
    info = ProbeInfo(model="tiny", layer=1, feature="hidden", labels=CLASSES)
    probe = fit_probe(x, torch.tensor([0, 1, 2]), num_classes=3, l2=1e-4, info=info)
    routes = RoutingConfig(
        {
            "easy": Route(max_new_tokens=2),
            "normal": Route("Think.", max_new_tokens=5, num_samples=2, temperature=1.0),
            "hard": Route("Think hard.", max_new_tokens=7, system_prompt="Be careful."),
        }
    )
    return task, items, DiffAdaptRouter(probe, routes)


def test_each_question_gets_its_class_route(tiny_backend, routed) -> None:
    task, items, router = routed
    rec = Recorder(tiny_backend)
    outs = DiffAdaptStrategy(router).run(rec, task, items)
    assert [o.meta["difficulty"] for o in outs] == ["easy", "normal", "hard"]
    assert len(rec.calls) == 3  # one generate call per class present
    for (prompts, cfg), c, item in zip(rec.calls, CLASSES, items, strict=True):
        route = router.routes[c]
        assert prompts == [route.prompt(task, item)]
        assert (cfg.max_new_tokens, cfg.num_samples, cfg.temperature, cfg.system_prompt) == (
            route.max_new_tokens, route.num_samples, route.temperature, route.system_prompt,
        )  # fmt: skip
    assert rec.calls[0][0] == [items[0].prompt]  # easy: the task's own direct prompt
    assert rec.calls[2][0][0].endswith("Think hard.")
    for o, c in zip(outs, CLASSES, strict=True):
        r = router.routes[c]
        assert o.num_traces == r.num_samples
        assert 1 <= o.generated_tokens <= r.max_new_tokens * r.num_samples
        assert sum(o.meta["probabilities"].values()) == pytest.approx(1.0)


def test_router_save_load_override_and_errors(tiny_backend, routed, tmp_path) -> None:
    task, items, router = routed
    save_router(router, tmp_path / "router")
    back = load_router(tmp_path / "router", tiny_backend)
    assert back.routes == router.routes
    x = prompt_features(tiny_backend, [it.prompt for it in items], layer=1)
    assert torch.equal(back.probe.predict_proba(x), router.probe.predict_proba(x))
    # routes override as YAML text: everything easy-routed gets 1 token
    yaml_text = RoutingConfig({c: Route(max_new_tokens=1) for c in CLASSES}).to_yaml()
    outs = make_strategy("diffadapt", router=str(tmp_path / "router"), routes=yaml_text).run(
        tiny_backend, task, items
    )
    assert [o.generated_tokens for o in outs] == [1, 1, 1]
    with pytest.raises(EntrolabError, match="fit_diffadapt"):
        make_strategy("diffadapt")
    wrong = DiffAdaptRouter(
        fit_probe(
            torch.randn(6, 10), torch.arange(6) % 3, info=ProbeInfo(model="tiny", labels=CLASSES)
        ),
    )
    with pytest.raises(EntrolabError, match=r"feature size 10 \(not 64\)"):
        DiffAdaptStrategy(wrong).run(tiny_backend, task, items)
