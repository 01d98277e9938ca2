"""The GRPO trainer on a tiny random model: updates, exact resume, micro-batch invariance,
teacher-forced log-probs against the backend's scorer, checkpoints, the probe set, the CLI."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch

from entrolab.backends import HFBackend
from entrolab.errors import EntrolabError
from entrolab.models import tiny_model
from entrolab.rl import checkpoint as ckpt
from entrolab.rl.config import load_config
from entrolab.rl.rollout import policy_forward, response_logprobs, sample_rollout
from entrolab.rl.trainer import Trainer
from entrolab.rl.update import LossSetup
from entrolab.types import Trace, TraceBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


BASE = [
    "model.name=tiny",
    "task.spec=proxy",
    "task.train_items=64",
    "task.eval_items=3",
    "rollout.prompts_per_step=3",
    "rollout.group_size=4",
    "rollout.max_new_tokens=8",
    "rollout.chat_template=false",
    "algorithm.micro_batch_size=5",
    "optim.lr=1e-3",
    "eval.every=2",
    "eval.samples=4",
    "monitor.probe_prompts=2",
    "monitor.law_min_points=3",
    "progress=false",
    "tensorboard=false",
]


def _cfg(*extra: str):
    return load_config(None, [*BASE, *extra])


def digit_reward(items, texts):
    """A dense scripted reward (mean of ord(char) mod 5, scaled to [0, 1]) so that a random
    model's completions get different rewards within each group."""
    return [sum(ord(ch) % 5 for ch in t) / (4 * max(len(t), 1)) for t in texts]


def _records(run_dir):
    return [
        {k: v for k, v in r.items() if not k.startswith("time/")}
        for r in ckpt.read_metrics(run_dir)
    ]


def test_two_steps_change_the_parameters_and_keep_the_loss_finite(tmp_path):
    tr = Trainer(_cfg("steps=2"), tmp_path, reward_fn=digit_reward)
    before = {n: p.detach().clone() for n, p in tr.policy.named_parameters()}
    recs = tr.train()
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        assert math.isfinite(r["loss/loss"]) and math.isfinite(r["loss/pg_loss"])
        assert r["opt/grad_norm"] > 0  # the scripted reward varies within groups
        assert r["train/reward_std"] > 0
    changed = [n for n, p in tr.policy.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # full fine-tuning: every tensor moved
    # metrics.jsonl: step 0 (evaluation before training), then one record per step
    assert [r["step"] for r in ckpt.read_metrics(tmp_path)] == [0, 1, 2]
    assert (tmp_path / "checkpoints" / "step_00000002" / "model.safetensors").is_file()


RESUME = [
    "checkpoint_every=2",
    "algorithm.ppo_epochs=2",
    "algorithm.mini_batches=2",
    "algorithm.loss=kl_cov",
    "algorithm.loss_params.kl_cov_ratio=0.1",
    "algorithm.kl_coef=0.05",
]


def test_killed_run_resumes_with_the_same_metrics(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    Trainer(_cfg("steps=4", *RESUME), full, reward_fn=digit_reward).train()
    # "kill" after step 3: the checkpoint of step 2 is the last complete one, and step 3's
    # metrics line was already written (it must not appear twice after the resume)
    Trainer(_cfg("steps=3", *RESUME), killed, reward_fn=digit_reward).train()
    (killed / "checkpoints" / "latest").write_text("step_00000002")
    lines = [r["step"] for r in ckpt.read_metrics(killed)]
    assert lines == [0, 1, 2, 3]
    random.seed(123)  # disturb the global RNGs: the checkpoint's RNG states must win
    torch.manual_seed(123)
    np.random.seed(123)
    resumed = Trainer(_cfg("steps=4", *RESUME), killed, reward_fn=digit_reward)
    assert resumed.step == 2
    resumed.train()
    a, b = _records(full), _records(killed)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    assert a == b  # bitwise-equal floats: same weights, optimizer, RNG, data position
    assert a[3]["loss/touched_frac"] > 0  # KL-Cov actually selected tokens


def test_resume_with_other_settings_is_refused(tmp_path):
    Trainer(_cfg("steps=1"), tmp_path, reward_fn=digit_reward).train()
    with pytest.raises(EntrolabError, match=r"other settings \(algorithm.loss\)"):
        Trainer(_cfg("steps=2", "algorithm.loss=dapo"), tmp_path, reward_fn=digit_reward)
    tr = Trainer(_cfg("steps=2"), tmp_path, reward_fn=digit_reward)  # more steps: fine
    assert tr.step == 1


@pytest.mark.parametrize(
    ("loss", "params"),
    [
        ("ppo_clip", []),
        ("kl_cov", ["algorithm.loss_params.kl_cov_ratio=0.2"]),
        (
            "clip_cov",
            ["algorithm.loss_params.clip_cov_ratio=0.2", "algorithm.loss_params.clip_cov_lb=0.0"],
        ),
        ("forking_tokens", []),
        ("forking_tokens_bottom", []),
        ("reinforce", ["algorithm.aggregation=seq-mean-token-mean"]),
    ],
)
def test_micro_batch_size_does_not_change_the_update(loss, params):
    model, tok = tiny_model(seed=1)
    backend = HFBackend(model, tok)
    cfg = _cfg(f"algorithm.loss={loss}", *params, "algorithm.kl_coef=0.1")
    items = [f"{i} 5 2 7:9=" for i in range(3)]
    gen = sample_rollout(backend, items, _gen(cfg), [11, 12, 13])
    rows = torch.arange(len(gen))
    old = response_logprobs(model, gen, pad_id=tok.pad_token_id)
    # off-policy old log-probs so ratios move away from 1 and clipping is exercised
    noise = 0.3 * torch.randn(old.logprobs.shape, generator=torch.Generator().manual_seed(0))
    behaviour = type(old)((old.logprobs + noise) * gen.response_mask, old.entropy)
    ref = (old.logprobs - 0.2 * noise) * gen.response_mask
    adv = torch.linspace(-1.5, 1.5, len(gen))[:, None] * gen.response_mask

    def grads(micro: int) -> tuple[list[torch.Tensor], dict[str, float]]:
        setup = LossSetup.from_config(cfg.algorithm, cfg.rollout.max_new_tokens)
        setup.micro_batch_size = micro
        model.zero_grad(set_to_none=True)
        m = setup.accumulate(
            model,
            gen,
            rows,
            adv,
            old=behaviour,
            ref_logprobs=ref,
            current=old,
            pad_id=tok.pad_token_id,
            temperature=1.0,
        )
        assert math.isfinite(m["loss"])
        return [p.grad.clone() for p in model.parameters()], m

    g1, m1 = grads(len(gen))  # one micro-batch of 12 sequences
    g4, m4 = grads(3)  # four micro-batches of 3
    assert m1["loss"] == pytest.approx(m4["loss"], rel=1e-5, abs=1e-7)
    # the case is not trivial: PPO clipping and the token selection are active
    if loss != "reinforce":  # (REINFORCE has neither; there the per-sequence means matter)
        assert m1.get("clip_frac", 0) > 0 or m1.get("touched_frac", 0) > 0
    if loss not in ("ppo_clip", "reinforce"):
        assert 0 < m1["touched_frac"] < 1
        assert m1["touched_frac"] == pytest.approx(m4["touched_frac"], abs=1e-12)
    scale = max(float(g.abs().max()) for g in g1)
    assert scale > 0
    for a, b in zip(g1, g4, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * scale)


def test_micro_batch_scope_selection_does_depend_on_the_split():
    """The invariance test above can fail: per-micro-batch top-20% selection changes the set."""
    model, tok = tiny_model(seed=1)
    backend = HFBackend(model, tok)
    cfg = _cfg("algorithm.loss=forking_tokens", "algorithm.selection_scope=micro_batch")
    gen = sample_rollout(backend, [f"{i} 5 2 7:9=" for i in range(3)], _gen(cfg), [11, 12, 13])
    adv = torch.linspace(-1.5, 1.5, len(gen))[:, None] * gen.response_mask
    norms = []
    for micro in (len(gen), 3):
        setup = LossSetup.from_config(cfg.algorithm, cfg.rollout.max_new_tokens)
        setup.micro_batch_size = micro
        model.zero_grad(set_to_none=True)
        setup.accumulate(
            model,
            gen,
            torch.arange(len(gen)),
            adv,
            old=None,
            ref_logprobs=None,
            current=None,
            pad_id=tok.pad_token_id,
            temperature=1.0,
        )
        norms.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert not torch.allclose(norms[0], norms[1], rtol=1e-3, atol=0)


def _gen(cfg):
    from entrolab.config import GenerationConfig

    r = cfg.rollout
    return GenerationConfig(
        num_samples=r.group_size,
        max_new_tokens=r.max_new_tokens,
        chat_template=False,
        topk_logprobs=0,
    )


def test_teacher_forced_logprobs_match_the_backend_scorer(tiny_backend):
    cfg = _cfg()
    prompts = ["3 7 1 9 5 6:12=", "1 2:3="]
    gen = sample_rollout(tiny_backend, prompts, _gen(cfg), [5, 6])
    fo = policy_forward(tiny_backend.model, gen, pad_id=tiny_backend.tokenizer.pad_token_id)
    lengths = gen.response_mask.sum(-1).tolist()
    scored = tiny_backend.score(
        [prompts[i] for i in gen.prompt_index.tolist()],
        [gen.response_ids[r, :n].tolist() for r, n in enumerate(lengths)],
        chat_template=False,
    )
    for r, (trace, n) in enumerate(zip(scored, lengths, strict=True)):
        torch.testing.assert_close(fo.logprobs[r, :n].detach(), trace.logprob, atol=1e-5, rtol=0)
        torch.testing.assert_close(fo.entropy[r, :n], trace.entropy, atol=1e-5, rtol=0)
        assert float(fo.logprobs[r, n:].detach().abs().sum()) == 0.0  # padding holds 0
    # temperature τ: log-probs of softmax(z / τ)
    hot = policy_forward(tiny_backend.model, gen, pad_id=0, temperature=2.0)
    assert not torch.allclose(hot.logprobs, fo.logprobs)


def test_probe_entropy_change_matches_an_independent_scorer(tmp_path):
    tr = Trainer(_cfg("steps=1", "eval.at_start=false"), tmp_path, reward_fn=digit_reward)
    probe = tr.probe
    items = tr.task.items(tr.config.monitor.probe_prompts, seed=tr.config.monitor.probe_seed)
    prompts = [items[i].prompt for i in probe.prompt_index.tolist()]
    lengths = probe.response_mask.sum(-1).tolist()
    ids = [probe.response_ids[r, :n].tolist() for r, n in enumerate(lengths)]

    def mean_entropy(model) -> float:
        traces = HFBackend(model, tr.tokenizer).score(prompts, ids, chat_template=False)
        return float(torch.cat([t.entropy for t in traces]).double().mean())

    h0 = mean_entropy(copy.deepcopy(tr.policy))
    rec = tr.train()[0]
    h1 = mean_entropy(tr.policy)
    assert rec["dyn/probe_H_before"] == pytest.approx(h0, abs=1e-5)
    assert rec["dyn/probe_H_after"] == pytest.approx(h1, abs=1e-5)
    assert rec["dyn/probe_dH"] == pytest.approx(h1 - h0, abs=1e-5)
    assert abs(h1 - h0) > 1e-4  # the update did move the probe entropy
    assert len(rec["dyn/decile_dH"]) == 10
    # the batch covariance term: mean centred cross-product of (log-prob, advantage)
    assert math.isfinite(rec["dyn/cov"])


def test_kl_reference_starts_at_zero_and_unknown_params_fail(tmp_path):
    tr = Trainer(
        _cfg("steps=1", "algorithm.kl_coef=0.5", "monitor.probe_prompts=0", "task.eval_items=0"),
        tmp_path,
        reward_fn=digit_reward,
    )
    rec = tr.train()[0]
    assert rec["loss/kl_ref"] == 0.0  # the frozen reference equals the policy before step 1
    with pytest.raises(
        EntrolabError, match="unknown algorithm.loss_params for loss 'ppo_clip': rho"
    ):
        Trainer(_cfg("algorithm.loss_params.rho=0.2"), tmp_path / "x", reward_fn=digit_reward)
    with pytest.raises(EntrolabError, match="Known losses"):
        Trainer(_cfg("algorithm.loss=grpo_magic"), tmp_path / "y", reward_fn=digit_reward)


def test_lora_trains_only_the_adapters(tmp_path):
    pytest.importorskip("peft")
    from entrolab.rl.policy import reference_context

    cfg = _cfg(
        "steps=2",
        "model.lora.enabled=true",
        "model.lora.r=4",
        "algorithm.kl_coef=0.1",
        "monitor.probe_prompts=0",
        "task.eval_items=0",
    )
    tr = Trainer(cfg, tmp_path, reward_fn=digit_reward)
    before = {n: p.detach().clone() for n, p in tr.policy.named_parameters()}
    recs = tr.train()
    assert recs[0]["loss/kl_ref"] == 0.0  # adapters start as a no-op (B = 0)
    assert recs[1]["loss/kl_ref"] > 0.0  # then the policy leaves the frozen base model
    moved = {n for n, p in tr.policy.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all("lora_" in n for n in moved)
    saved = ckpt._load_tensors(tmp_path / "checkpoints" / "step_00000002" / "model.safetensors")
    assert set(saved) == {n for n, p in tr.policy.named_parameters() if p.requires_grad}
    # the reference (adapters disabled) is exactly the untouched base model
    base, _ = tiny_model(seed=cfg.seed)
    gen = sample_rollout(tr.backend, ["1 2 3 4:5="], _gen(cfg), [3])
    with reference_context(tr.peft_model):
        ref = response_logprobs(tr.policy, gen, pad_id=tr.pad_id).logprobs
    torch.testing.assert_close(ref, response_logprobs(base, gen, pad_id=tr.pad_id).logprobs)
    pol = response_logprobs(tr.policy, gen, pad_id=tr.pad_id).logprobs
    assert not torch.allclose(pol, ref)


def test_lora_without_peft_says_how_to_fix(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "peft":
            raise ImportError("no peft")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(EntrolabError, match="pip install peft"):
        Trainer(_cfg("model.lora.enabled=true"), tmp_path, reward_fn=digit_reward)


def test_optimizer_and_rng_state_round_trip_exactly():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, betas=(0.8, 0.95))
    for _ in range(3):
        net(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = ckpt.optimizer_to_parts(opt)
    meta = json.loads(json.dumps(meta))  # stored as JSON
    opt2 = torch.optim.AdamW(net.parameters(), lr=1.0)
    ckpt.optimizer_from_parts(opt2, tensors, meta)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for key, value in s1["state"][pid].items():
            assert torch.equal(value, s2["state"][pid][key])
    rng_t, rng_j = ckpt.get_rng_state()
    rng_j = json.loads(json.dumps(rng_j))
    draws = (torch.rand(3), random.random(), np.random.rand())
    ckpt.set_rng_state(rng_t, rng_j)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]


def test_metrics_log_truncates_and_never_writes_nan(tmp_path):
    log = ckpt.MetricsLog(tmp_path / "m.jsonl")
    for s in range(4):
        log.append({"step": s, "x": float("nan") if s == 2 else s / 2, "v": [1.0, math.inf]})
    assert ckpt.read_metrics(tmp_path / "m.jsonl")[2]["x"] is None
    log.truncate_after(1)
    assert [r["step"] for r in log.records()] == [0, 1]
    assert log.records()[1] == {"step": 1, "x": 0.5, "v": [1.0, None]}


def _trace(text: str, prompt_index: int, sample_index: int, entropy: list[float]) -> Trace:
    n = len(entropy)
    return Trace(
        prompt="p",
        text=text,
        token_ids=list(range(n)),
        tokens=["x"] * n,
        logprob=[0.0] * n,
        entropy=entropy,
        varentropy=[0.0] * n,
        topk_ids=torch.zeros(n, 0, dtype=torch.int64),
        topk_logprobs=torch.zeros(n, 0),
        prompt_index=prompt_index,
        sample_index=sample_index,
    )


def test_eval_metrics_hand_computed():
    from entrolab.rl.proxy import ProxySumTask
    from entrolab.rl.rewards import eval_metrics

    task = ProxySumTask()
    item = task.items(1, seed=0)[0]
    a, b = item.meta["solutions"][0], item.meta["solutions"][1]
    good_a, good_b = f"{a[0]}+{a[1]}", f"{b[1]}+{b[0]}"
    # item 0: 2 of 4 correct (two different answers) + 2 unparseable; item 1: none correct
    traces = TraceBatch.of(
        [
            _trace(good_a, 0, 0, [1.0, 2.0]),
            _trace(good_b, 0, 1, [1.0]),
            _trace("zz", 0, 2, [3.0]),
            _trace("zz", 0, 3, [0.0]),
            *[_trace("0+0", 1, s, [0.5]) for s in range(4)],
        ]
    )
    out = eval_metrics(task, [item, item], traces, 4)
    assert out["eval/pass@1"] == pytest.approx((2 / 4 + 0) / 2)
    assert out["eval/pass@4"] == pytest.approx((1 + 0) / 2)
    # item 0: four singleton clusters → ln 4; item 1: one cluster → 0
    assert out["eval/answer_entropy"] == pytest.approx(math.log(4) / 2)
    # tokens: 1 + 2 + 1 + 3 + 0 + 4 × 0.5 = 9 over 9 tokens
    assert out["eval/token_entropy"] == pytest.approx(9 / 9)
    assert out["eval/response_len"] == pytest.approx(9 / 8)


def test_cli_train_resume_and_plot(tmp_path):
    import typer
    from typer.testing import CliRunner

    from entrolab.cli.train_cmd import plot_command, train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("plot")(plot_command)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("\n".join(f"{k.replace('=', ': ', 1)}" for k in BASE if "." not in k))
    nested = [s for s in BASE if "." in s]
    run = tmp_path / "run"
    args = ["train", "--recipe", str(recipe), "--out", str(run), "--no-plot", *nested]
    res = CliRunner().invoke(app, [*args, "steps=2"])
    assert res.exit_code == 0, res.output
    assert [r["step"] for r in ckpt.read_metrics(run)] == [0, 1, 2]
    res = CliRunner().invoke(app, [*args, "steps=3"])  # resumes: one more step
    assert res.exit_code == 0, res.output
    assert [r["step"] for r in ckpt.read_metrics(run)] == [0, 1, 2, 3]
    res = CliRunner().invoke(app, ["plot", str(run), "--format", "svg"])
    assert res.exit_code == 0, res.output
    assert (run / "plots" / "dynamics.svg").read_text().lstrip().startswith("<?xml")
    assert (run / "plots" / "deciles.svg").is_file()
    res = CliRunner().invoke(app, [*args, "stepz=3"])
    assert isinstance(res.exception, EntrolabError)
    assert "Did you mean 'steps'" in str(res.exception)


def test_tensorboard_logs_and_warns_when_missing(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    Trainer(_cfg("steps=1", "tensorboard=true"), tmp_path / "tb", reward_fn=digit_reward).train()
    assert list((tmp_path / "tb" / "tb").glob("events.out.tfevents.*"))
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "torch.utils.tensorboard":
            raise ImportError("no tensorboard")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    tr = Trainer(_cfg("steps=1", "tensorboard=true"), tmp_path / "no", reward_fn=digit_reward)
    with pytest.warns(UserWarning, match="pip install tensorboard"):
        tr.train()
    assert [r["step"] for r in ckpt.read_metrics(tmp_path / "no")] == [0, 1]


@pytest.mark.model
def test_two_steps_on_the_embedded_model(smollm, tmp_path):
    """Two GRPO steps of the real SmolLM2 (2 prompts × 2 completions × ≤ 16 tokens)."""
    model = copy.deepcopy(smollm.model)  # the session fixture must stay untouched
    cfg = load_config(
        None,
        [
            "task.spec=arithmetic",
            "task.settings.level=2",
            "task.train_items=8",
            "task.eval_items=0",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.max_new_tokens=16",
            "algorithm.micro_batch_size=2",
            "optim.lr=1e-5",
            "monitor.probe_prompts=1",
            "monitor.probe_samples=1",
            "steps=2",
            "checkpoint_at_end=false",  # no 1.6 GB of weights + AdamW state written to disk
            "progress=false",
            "tensorboard=false",
        ],
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr = Trainer(cfg, tmp_path, model=model, tokenizer=smollm.tokenizer, reward_fn=digit_reward)
    recs = tr.train()
    for r in recs:
        assert math.isfinite(r["loss/loss"]) and r["opt/grad_norm"] > 0
        assert 0 < r["dyn/entropy"] < math.log(49152)
    moved = sum(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert moved == len(before)
