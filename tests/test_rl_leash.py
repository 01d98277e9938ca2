"""Invisible-Leash support metrics (rl/leash.py): the table by hand, resumable row files, the
trainer's held-out comparison with its starting checkpoint, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from entrolab.errors import EntrolabError
from entrolab.rl.leash import LeashRow, RowStore, leash_table, support_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _row(i, answers, correct, h):
    return LeashRow(i, list(answers), list(correct), h)


BASE = [
    _row(0, ["3", "3", "4", "3"], [1, 1, 0, 1], 0.5),  # solved, answers {3}
    _row(1, ["7", "8", None, "9"], [0, 1, 0, 1], 0.7),  # solved, answers {8, 9}
    _row(2, ["1", "2", "1", "2"], [0, 0, 0, 0], 0.9),  # unsolved
]
TRAINED = [
    _row(0, ["3", "3", "3", "3"], [1, 1, 1, 1], 0.6),  # solved, {3}
    _row(1, ["7", "7", "7", "7"], [0, 0, 0, 0], 0.8),  # shrunk: lost 8 and 9
    _row(2, ["5", "1", "5", "5"], [1, 0, 1, 1], 0.9),  # expanded: gained 5
]


def test_support_counts_by_hand() -> None:
    assert support_counts([True, True, False, False], [True, False, True, False]) == {
        "preserved": 1,
        "shrunk": 1,
        "expanded": 1,
        "unsolved": 1,
    }


def test_leash_table_by_hand() -> None:
    t = leash_table(BASE, TRAINED, ks=(1, 2, 4))
    assert t["n"] == 3 and t["k"] == 4
    assert t["problems"] == {"preserved": 1, "shrunk": 1, "expanded": 1, "unsolved": 0}
    # answer sets: item 0 {3}∩{3} -> 1 preserved; item 1 {8,9} lost -> 2 shrunk; item 2 {5} new
    assert t["answers"] == {"preserved": 1, "shrunk": 2, "expanded": 1}
    # pass@1 = mean c/k: base (3/4 + 2/4 + 0)/3 = 5/12; trained (4/4 + 0 + 3/4)/3 = 7/12
    assert t["pass_at_k"][1] == pytest.approx([5 / 12, 7 / 12])
    # pass@2, base: item 0 c=3 -> 1 − C(1,2)/C(4,2) = 1; item 1 c=2 -> 1 − C(2,2)/6 = 5/6; item 2 0
    assert t["pass_at_k"][2][0] == pytest.approx((1 + 5 / 6 + 0) / 3)
    assert t["pass_at_k"][4] == pytest.approx([2 / 3, 2 / 3])
    # H_ans base: item 0 {3:3, 4:1} -> −(.75 ln .75 + .25 ln .25); item 1: four singletons
    # (None is its own cluster) -> ln 4; item 2 {1:2, 2:2} -> ln 2
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert t["H_ans"][0] == pytest.approx((h0 + math.log(4) + math.log(2)) / 3)
    # trained: 0, 0, {5:3, 1:1} -> h0
    assert t["H_ans"][1] == pytest.approx(h0 / 3)
    assert t["H_tok"] == pytest.approx([0.7, 2.3 / 3])
    assert t["dH_tok"] > 0 and t["dH_ans"] < 0 and t["leash_signature"] is True


def test_leash_table_errors() -> None:
    with pytest.raises(EntrolabError, match="different problems"):
        leash_table(BASE, [TRAINED[1], TRAINED[0], TRAINED[2]])
    with pytest.raises(EntrolabError, match="same non-empty"):
        leash_table(BASE, TRAINED[:2])


def test_row_store_resumes_and_ignores_a_cut_line(tmp_path) -> None:
    path = tmp_path / "base.jsonl"
    store = RowStore(path)
    store.add(BASE[:2])
    with path.open("a") as f:
        f.write('{"index": 2, "answers": ["1"')  # killed mid-write
    again = RowStore(path)
    assert again.missing(3) == [2]
    again.add(BASE[2:])
    assert [r.index for r in RowStore(path).ordered(3)] == [0, 1, 2]
    assert RowStore(path).ordered(3)[1] == BASE[1]


def test_trainer_reports_support_vs_the_starting_checkpoint(tmp_path) -> None:
    from entrolab.rl.checkpoint import read_metrics
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    cfg = load_config(
        None,
        ["model.name=tiny", "task.spec=arithmetic", "task.train_items=16", "task.eval_items=3",
         "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=4",
         "rollout.chat_template=false", "eval.samples=2", "eval.every=1", "monitor.probe_prompts=0",
         "progress=false", "tensorboard=false", "steps=1", "optim.lr=1e-3"],
    )  # fmt: skip
    Trainer(cfg, tmp_path).train()
    recs = {r["step"]: r for r in read_metrics(tmp_path)}
    assert "leash/preserved" not in recs[0]
    counts = [recs[1][f"leash/{k}"] for k in ("preserved", "shrunk", "expanded", "unsolved")]
    assert sum(counts) == 3  # every held-out item falls in exactly one class
    start = RowStore(tmp_path / "leash" / "step_000000.jsonl").ordered(3)
    end = RowStore(tmp_path / "leash" / "step_000001.jsonl").ordered(3)
    t = leash_table(start, end)
    assert recs[1]["leash/shrunk"] == t["problems"]["shrunk"]
    assert recs[1]["leash/dH_tok"] == pytest.approx(t["dH_tok"])
    assert (
        json.loads((tmp_path / "leash" / "step_000000.jsonl").read_text().splitlines()[0])["index"]
        == 0
    )


def test_leash_cli_resumes_a_killed_run(tmp_path) -> None:
    from typer.testing import CliRunner

    from entrolab.cli.main import app
    from entrolab.rl.config import load_config
    from entrolab.rl.trainer import Trainer

    run = tmp_path / "run"
    cfg = load_config(
        None,
        ["model.name=tiny", "task.spec=arithmetic", "task.train_items=16", "task.eval_items=0",
         "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=4",
         "rollout.chat_template=false", "monitor.probe_prompts=0", "progress=false",
         "tensorboard=false", "steps=1", "optim.lr=1e-2"],
    )  # fmt: skip
    Trainer(cfg, run).train()
    out = tmp_path / "leash"
    args = ["leash", f"{run}@start", str(run), "--k", "3", "--items", "4", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    first = json.loads((out / "table.json").read_text())
    assert sum(first["problems"].values()) == 4 and first["k"] == 3
    assert (out / "pass_at_k.png").is_file()
    # "kill": drop the trained model's last two rows and cut a line in half; re-run continues
    lines = (out / "trained.jsonl").read_text().splitlines()
    (out / "trained.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    again = json.loads((out / "table.json").read_text())
    # same seeds -> same answers; token entropies agree up to batch-padding float noise
    for key in ("problems", "answers", "pass_at_k", "H_ans"):
        assert again[key] == first[key]
    assert again["H_tok"] == pytest.approx(first["H_tok"], abs=1e-6)
    res = CliRunner().invoke(app, [*args[:-2], "--out", str(out), "--k", "4"])
    assert res.exit_code != 0 and "other settings" in str(res.exception)
