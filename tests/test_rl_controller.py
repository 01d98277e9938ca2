"""Target-band entropy controller: hand-computed PI steps, anti-windup, state round trip, the
trainer wiring (parameter reaches the loss, exact resume of the controller state), SIREN's
first-step anchor."""

from __future__ import annotations

import json

import pytest

from entrolab.errors import EntrolabError
from entrolab.rl import checkpoint as ckpt
from entrolab.rl.controller import EntropyBandController, band_error
from entrolab.rl.losses import POLICY_LOSSES
from entrolab.rl.trainer import Trainer
from test_rl_trainer import _cfg, digit_reward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_band_error_signs() -> None:
    assert band_error(0.2, 0.5, 0.8) == pytest.approx(0.3)  # too low: positive
    assert band_error(1.0, 0.5, 0.8) == pytest.approx(-0.2)  # too high: negative
    assert band_error(0.6, 0.5, 0.8) == 0.0


def test_pi_steps_hand_computed() -> None:
    c = EntropyBandController(low=0.5, high=0.8, init=0.01, kp=0.1, ki=0.05, max_value=1.0)
    # step 1: H = 0.3, predicted ΔH = −0.1 → Ĥ = 0.2, e = 0.3; I = 0.3;
    # u = 0.01 + 0.1·0.3 + 0.05·0.3 = 0.055
    m = c.update(0.3, -0.1)
    assert m["ctl/error"] == pytest.approx(0.3) and m["ctl/value"] == pytest.approx(0.055)
    assert m["ctl/in_band"] == 0.0
    # step 2: H = 0.6 inside, no prediction → e = 0; I stays 0.3; u = 0.01 + 0.015 = 0.025
    m = c.update(0.6, None)
    assert m["ctl/value"] == pytest.approx(0.025) and m["ctl/in_band_frac"] == 0.5
    # step 3: H = 1.0, e = −0.2; I = 0.1; u = 0.01 − 0.02 + 0.005 = −0.005 → clamped to 0, and
    # I back-calculated so that u = 0 exactly: 0.01 + 0.1·(−0.2) + 0.05·I = 0 → I = 0.2
    m = c.update(1.0)
    assert m["ctl/value"] == 0.0 and m["ctl/integral"] == pytest.approx(0.2)
    # sign −1 (raising the parameter lowers entropy): the same error moves u the other way
    d = EntropyBandController(low=0.5, high=0.8, init=0.5, kp=1.0, ki=0.0, sign=-1)
    assert d.update(0.3, 0.0)["ctl/value"] == pytest.approx(0.3)


def test_anti_windup_and_warmup() -> None:
    c = EntropyBandController(low=0.5, high=0.8, init=0.0, kp=0.0, ki=1.0, max_value=0.2)
    for _ in range(5):  # e = 0.5 each step: u = I would be 2.5; pinned at 0.2 with I = 0.2
        c.update(0.0, 0.0)
    assert c.value == 0.2 and c.integral == pytest.approx(0.2)
    # above the band, e = −0.1: without anti-windup I = 2.4 would keep u pinned; here I = 0.1
    c.update(0.9, 0.0)
    assert c.value == pytest.approx(0.1)
    w = EntropyBandController(low=0.5, high=0.8, init=0.01, kp=1.0, warmup_steps=2)
    assert w.update(0.0)["ctl/value"] == 0.01 and w.update(0.0)["ctl/value"] == 0.01
    assert w.update(0.0)["ctl/value"] > 0.01


def test_state_round_trip_and_bad_settings() -> None:
    c = EntropyBandController(low=0.1, high=0.3, kp=0.2, ki=0.1)
    for h in (0.0, 0.05, 0.4, 0.2):
        c.update(h, 0.01)
    state = json.loads(json.dumps(c.state_dict()))
    d = EntropyBandController(low=0.1, high=0.3, kp=0.2, ki=0.1)
    d.load_state_dict(state)
    assert d.state_dict() == c.state_dict()
    assert d.update(0.0, 0.0) == c.update(0.0, 0.0)
    with pytest.raises(EntrolabError, match="same recipe"):
        EntropyBandController(low=0.1, high=0.4).load_state_dict(state)
    with pytest.raises(EntrolabError, match="low < high"):
        EntropyBandController(low=0.5, high=0.5)


CTL = [
    "algorithm.loss=entropy_bonus",
    "algorithm.entropy_grad=true",
    "controller.enabled=true",
    "controller.low=7.0",  # above a tiny byte model's entropy (≤ ln 260 ≈ 5.6): push up
    "controller.high=8.0",
    "controller.kp=0.01",
    "controller.ki=0.01",
    "controller.init=0.0",
    "controller.max_value=1.0",
    "algorithm.micro_batch_size=12",  # one micro-batch: loss = pg_loss − β·entropy_term exactly
    "checkpoint_every=2",
]


def test_controller_drives_the_loss_parameter_and_resumes_exactly(tmp_path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    recs = Trainer(_cfg("steps=4", *CTL), full, reward_fn=digit_reward).train()
    values = [r["ctl/value"] for r in recs]
    assert values[0] > 0 and values == sorted(values)  # entropy below the band: β grows
    # the value set after step k is the entropy_coef β the loss used in step k + 1
    # (entropy_bonus: loss = pg_loss − β·entropy_term); step 1 used init = 0
    betas = [(r["loss/pg_loss"] - r["loss/loss"]) / r["loss/entropy_term"] for r in recs]
    assert betas[0] == pytest.approx(0.0, abs=1e-9)
    assert betas[1:] == pytest.approx(values[:-1], rel=1e-5)
    Trainer(_cfg("steps=3", *CTL), killed, reward_fn=digit_reward).train()
    (killed / "checkpoints" / "latest").write_text("step_00000002")
    resumed = Trainer(_cfg("steps=4", *CTL), killed, reward_fn=digit_reward)
    assert resumed.loss_state.controller.steps == 2
    resumed.train()
    a = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in ckpt.read_metrics(full)]
    b = [
        {k: v for k, v in r.items() if not k.startswith("time/")} for r in ckpt.read_metrics(killed)
    ]
    assert a == b  # identical controller state → identical parameter sequence and metrics
    assert resumed.loss_state.controller.state_dict()["in_band"] == [False] * 4


def test_controller_param_must_belong_to_the_loss(tmp_path) -> None:
    with pytest.raises(EntrolabError, match="not a parameter of ppo_clip"):
        Trainer(_cfg("steps=1", "controller.enabled=true"), tmp_path, reward_fn=digit_reward)


def test_siren_anchor_set_from_the_first_step(tmp_path) -> None:
    cfg = _cfg(
        "steps=2", "algorithm.loss=siren", "algorithm.pass_logits=true",
        "algorithm.loss_params.top_k=50", "algorithm.loss_params.entropy_coef=0.5",
    )  # fmt: skip
    assert POLICY_LOSSES.get("siren").__entrolab_anchor__ == ("entropy_anchor", "siren_entropy")
    tr = Trainer(cfg, tmp_path, reward_fn=digit_reward)
    r1, r2 = tr.train()
    assert r1["loss/siren_reg"] == 0.0  # no anchor yet: the regulariser is inert
    assert tr.loss_state.anchors.value == pytest.approx(r1["loss/siren_entropy"])
    assert tr.loss.params["entropy_anchor"] == tr.loss_state.anchors.value
    assert r2["loss/siren_reg"] > 0  # step 2 measures the deviation from step 1's entropy
