"""A real Ctrl-C (SIGINT in a pseudo-terminal) in `entrolab eval`, `pareto` and `train` after the
first checkpointed unit: the command prints what was saved and the exact command that resumes,
exits 130, and running that printed command finishes with results equal to an uninterrupted run
(no item lost or doubled). `train` is interrupted twice: inside the SFT stage and inside RL.

Each test starts one or two Python processes that import torch (10–30 s on a busy 2-core
machine), so they are marked slow (`make test-slow`)."""

import json

import pytest
from typer.testing import CliRunner

from entrolab.cli.main import app
from entrolab.models import tiny_model
from entrolab.rl import checkpoint as ckpt
from pty_run import interrupt_when, resume_args

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # as the children
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, tok = tiny_model(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _rows(path, drop=("seconds",)):
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _has_rows(path):
    return lambda: path.is_file() and bool(path.read_text().strip())


def _check_interrupt_line(text, code, saved, args):
    line = " ".join(text[text.index("interrupted: ") :].split())
    assert saved in line, line
    assert code == 130
    again = resume_args(text)
    assert again == args  # the printed command is exactly the one that was run
    return again


def test_eval_sigint_then_the_printed_command_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    run = tmp_path / "run"
    args = ["eval", "--model", str(tiny_dir), "--n", "12", "--chunk", "1", "--samples", "2"]
    args += ["--max-new-tokens", "4", "--estimators", "mean_token_entropy,semantic_entropy"]
    args += ["--out", str(run)]
    results = run / "results.jsonl"
    text, code = interrupt_when(args, _has_rows(results))
    again = _check_interrupt_line(text, code, f"finished items are in {results}", args)
    cut = _rows(results)
    assert 1 <= len(cut) < 12  # stopped mid-run with finished items kept
    assert runner.invoke(app, again).exit_code == 0
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, [*args[:-1], str(fresh)]).exit_code == 0
    resumed, whole = _rows(results), _rows(fresh / "results.jsonl")
    assert sorted(r["index"] for r in resumed) == list(range(12))  # none lost, none twice
    assert sorted(resumed, key=lambda r: r["index"]) == sorted(whole, key=lambda r: r["index"])
    assert resumed[: len(cut)] == cut  # the rows saved before Ctrl-C were kept, not redone


def test_pareto_sigint_then_the_printed_command_equals_an_uninterrupted_run(tiny_dir, tmp_path):
    run = tmp_path / "run"
    args = ["pareto", "--strategies", "majority", "--budgets", "1,2", "--n", "10", "--chunk", "1"]
    args += ["--model", str(tiny_dir), "--param", "max_new_tokens=4", "--out", str(run)]
    results = run / "results.jsonl"
    text, code = interrupt_when(args, _has_rows(results))
    saved = f"finished (strategy, budget, item) rows are in {run}/results.jsonl"
    again = _check_interrupt_line(text, code, saved, args)
    cut = _rows(results)
    assert 1 <= len(cut) < 20
    assert runner.invoke(app, again).exit_code == 0
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, [*args[:-1], str(fresh)]).exit_code == 0

    def key(r):
        return json.dumps(r, sort_keys=True)

    resumed, whole = _rows(results), _rows(fresh / "results.jsonl")
    assert len(resumed) == len(whole) == 20  # 1 strategy x 2 budgets x 10 items, none twice
    assert sorted(map(key, resumed)) == sorted(map(key, whole))
    assert json.loads((run / "points.json").read_text()) == json.loads(
        (fresh / "points.json").read_text()
    )


TRAIN = [
    "steps=4",
    "checkpoint_every=1",
    "task.train_items=32",
    "task.eval_items=2",
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.batch_size=8",
    "algorithm.mini_batches=1",
    "algorithm.micro_batch_size=8",
    "eval.every=2",
    "eval.samples=2",
    "monitor.probe_prompts=2",
    "monitor.probe_samples=2",
    "monitor.law_min_points=3",
    "tensorboard=false",
    "sft.hidden_size=32",
    "sft.num_layers=1",
    "sft.num_heads=2",
    "sft.examples=64",
    "sft.steps=300",  # 3 SFT checkpoints (every 100 steps)
    "sft.batch_size=8",
]


def _metrics(run_dir):
    return [
        {k: v for k, v in r.items() if not k.startswith("time/")}
        for r in ckpt.read_metrics(run_dir)
    ]


def test_train_sigint_in_sft_and_in_rl_then_the_printed_command_equals_an_uninterrupted_run(
    tmp_path,
):
    run = tmp_path / "run"
    cache = {"ENTROLAB_CACHE": str(tmp_path / "cache")}
    args = ["train", "--recipe", "recipes/proxy_grpo.yaml", *TRAIN, "--out", str(run), "--no-plot"]
    saved = f"an unfinished proxy SFT resumes from {run}/sft"

    def sft_saved():
        return any((run / "sft").glob("*/state.json"))

    text, code = interrupt_when(args, sft_saved, env=cache)
    again = _check_interrupt_line(text, code, saved, args)
    assert not (run / "metrics.jsonl").exists()  # stopped inside the SFT stage
    step = json.loads(next((run / "sft").glob("*/state.json")).read_text())["step"]
    assert step in (100, 200)

    text, code = interrupt_when(again, lambda: (run / "checkpoints" / "latest").is_file(), cache)
    again = _check_interrupt_line(text, code, saved, args)
    assert "SFT steps" in text  # the resumed SFT showed its progress in the terminal
    done = [r["step"] for r in ckpt.read_metrics(run)]
    assert done and done[-1] < 4  # stopped inside the RL stage

    assert runner.invoke(app, again, env=cache).exit_code == 0
    fresh = tmp_path / "fresh"
    other_cache = {"ENTROLAB_CACHE": str(tmp_path / "cache2")}  # SFT in process, uninterrupted
    result = runner.invoke(app, [*args[:-2], str(fresh), "--no-plot"], env=other_cache)
    assert result.exit_code == 0, result.output
    resumed, whole = _metrics(run), _metrics(fresh)
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]  # none lost, none twice
    assert resumed == whole
