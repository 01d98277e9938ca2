"""The proxy SFT stage checkpoints and resumes (issue 17): interrupted after k steps and run
again, it ends with the same weights and per-step losses, bit for bit, as an uninterrupted SFT,
redoing only the steps after its last checkpoint; the trainer shows its steps as progress and an
RL run after an interrupted SFT equals one after an uninterrupted SFT."""

import pytest
import torch

from entrolab.models import tiny_model
from entrolab.rl import checkpoint as ckpt
from entrolab.rl.config import SFTConfig, load_config
from entrolab.rl.proxy import ProxySumTask, sft_model, train_sft
from entrolab.rl.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, examples=64, steps=12, batch_size=8)


class Stop(Exception):
    """Stands for the KeyboardInterrupt of Ctrl-C (raised from the progress callback)."""


def _fresh():
    model, tok = tiny_model(hidden_size=32, num_layers=1, num_heads=2, seed=0)
    return model, tok


def _pairs():
    return ProxySumTask().sft_examples(64, 0, 0.2)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _train(model, tok, folder=None, stop_at=None, seen=None):
    def on_step(done, steps):
        if seen is not None:
            seen.append(done)
        if done == stop_at:
            raise Stop

    return train_sft(
        model, tok, _pairs(), steps=12, batch_size=8, lr=3e-3, seed=0,
        checkpoint_dir=folder, checkpoint_every=4, on_step=on_step,
    )  # fmt: skip


@pytest.mark.parametrize(("stop_at", "redone"), [(6, [5, 6]), (8, [])])
def test_interrupted_sft_resumes_to_the_same_weights_and_losses(tmp_path, stop_at, redone):
    model, tok = _fresh()
    whole = _train(model, tok)
    want = _params(model)

    folder = tmp_path / "sft"
    model, tok = _fresh()
    with pytest.raises(Stop):
        _train(model, tok, folder, stop_at=stop_at)
    # checkpoints every 4 steps: the last one before the interrupt is at step 4 (stop at 6) or 8
    model, tok = _fresh()  # a new process: the initial weights again
    seen: list[int] = []
    losses = _train(model, tok, folder, seen=seen)
    last_saved = stop_at // 4 * 4
    assert seen == list(range(last_saved + 1, 13))  # only unsaved steps are redone
    assert [s for s in seen if s <= stop_at] == redone
    assert losses == whole  # all 12 per-step losses, exactly
    got = _params(model)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_sft_model_resumes_from_state_dir_and_deletes_it_when_done(tmp_path, monkeypatch):
    from entrolab.rl import proxy

    sft = SFTConfig(**SMALL, cache=False)
    whole, _, info = sft_model(sft, ProxySumTask(), cache_dir=tmp_path / "c1")
    original = proxy.train_sft  # checkpoint every 4 steps instead of SFT_CHECKPOINT_EVERY
    monkeypatch.setattr(
        proxy, "train_sft", lambda *a, **kw: original(*a, **{**kw, "checkpoint_every": 4})
    )
    state = tmp_path / "state"

    def stop_at_9(done, steps):
        if done == 9:
            raise Stop

    with pytest.raises(Stop):
        sft_model(
            sft, ProxySumTask(), cache_dir=tmp_path / "c2", state_dir=state, on_step=stop_at_9
        )
    (key_dir,) = list(state.iterdir())
    assert key_dir.name == info["key"]  # keyed by the SFT settings: runs never mix
    calls: list[int] = []
    resumed, _, again = sft_model(
        sft, ProxySumTask(), cache_dir=tmp_path / "c2", state_dir=state,
        on_step=lambda done, steps: calls.append(done),
    )  # fmt: skip
    assert calls == list(range(9, 13))  # steps 9..12: the checkpoint held 8
    assert again["final_loss"] == info["final_loss"]
    a, b = dict(whole.named_parameters()), dict(resumed.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not key_dir.exists()  # done: the resume state is gone


def test_a_corrupt_step_count_is_a_clear_error(tmp_path):
    model, tok = _fresh()
    folder = tmp_path / "sft"
    with pytest.raises(Stop):
        _train(model, tok, folder, stop_at=5)
    text = (folder / "state.json").read_text().replace('"step": 4', '"step": 40')
    (folder / "state.json").write_text(text)
    with pytest.raises(Exception, match="at step 40 of a 12-step SFT; delete"):
        _train(*_fresh(), folder)


BASE = [
    "model.name=proxy",
    "task.spec=proxy",
    "task.train_items=32",
    "task.eval_items=2",
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=8",
    "rollout.chat_template=false",
    "optim.lr=1e-2",
    "eval.every=100",
    "monitor.probe_prompts=2",
    "monitor.law_min_points=3",
    "tensorboard=false",
    "sft.cache=false",
    *[f"sft.{k}={v}" for k, v in SMALL.items()],
]


def digit_reward(items, texts):
    """Dense scripted reward, as in test_rl_sft_cache_determinism."""
    return [sum(ord(ch) % 5 for ch in t) / (4 * max(len(t), 1)) for t in texts]


def _metrics(run_dir):
    return [
        {k: v for k, v in r.items() if not k.startswith("time/")}
        for r in ckpt.read_metrics(run_dir)
    ]


def test_trainer_shows_sft_progress_and_rl_after_a_resumed_sft_is_unchanged(
    tmp_path, monkeypatch, capsys
):
    from entrolab.rl import proxy

    monkeypatch.setenv("ENTROLAB_PROGRESS_SECONDS", "0")
    original = proxy.train_sft
    monkeypatch.setattr(
        proxy, "train_sft", lambda *a, **kw: original(*a, **{**kw, "checkpoint_every": 4})
    )
    config = load_config(None, [*BASE, "progress=true"])
    whole = Trainer(config, tmp_path / "whole", reward_fn=digit_reward)
    err = capsys.readouterr().err
    # stderr is no terminal under pytest: plain lines, from 0/12 to 12/12
    assert "SFT steps: 0/12 (0%)" in err and "SFT steps: 12/12 (100%)" in err
    whole.train(2)

    calls = []

    def stop_at_6(done, steps):
        calls.append(done)
        if done == 6:
            raise Stop

    monkeypatch.setattr(proxy, "train_sft", lambda *a, **kw: original(
        *a, **{**kw, "checkpoint_every": 4, "on_step": stop_at_6}
    ))  # fmt: skip
    with pytest.raises(Stop):
        Trainer(config, tmp_path / "cut", reward_fn=digit_reward)
    assert (tmp_path / "cut" / "sft").is_dir()  # the SFT checkpoint lives in the run directory
    monkeypatch.setattr(
        proxy, "train_sft", lambda *a, **kw: original(*a, **{**kw, "checkpoint_every": 4})
    )
    capsys.readouterr()
    cut = Trainer(config, tmp_path / "cut", reward_fn=digit_reward)
    assert "SFT steps: 4/12" in capsys.readouterr().err  # resumed at its step-4 checkpoint
    cut.train(2)
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
    p1, p2 = dict(whole.policy.named_parameters()), dict(cut.policy.named_parameters())
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
