"""`entrolab fit fince|sdm` end to end on a tiny model rigged to always say "7" (labels known
by hand), the printed `think` command run as given, and bad options failing before loading."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from entrolab.cli.fit_cmd import fit_command
from entrolab.cli.think_cmd import think_command

runner = CliRunner()
app = typer.Typer()
app.command("fit")(fit_command)
app.command("think")(think_command)
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


def _base(kind, parrot_dir, task_file):
    return ["fit", kind, "--task", f"jsonl:{task_file}", "--n", str(N_ITEMS), "--model",
            str(parrot_dir), "--max-new-tokens", str(TOKENS)]  # fmt: skip


def test_fit_fince_labels_by_hand_resumes_and_its_command_runs(parrot_dir, task_file, tmp_path):
    from entrolab.inference.fince import load_fince

    out = tmp_path / "fince"
    args = [*_base("fince", parrot_dir, task_file), "--continuations", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    fince = load_fince(out)
    assert fince.layer == 1 and fince.settings["num_continuations"] == 2
    # "7777" has no step end: two rows per item (question, finished trace), 12 prefixes; from
    # the question both continuations say 7777 → 2/2 on even items, 0/2 on odd ones.
    assert fince.settings["train_rows"] == 2 * N_ITEMS
    rows = [json.loads(x) for x in (tmp_path / "fince.labels.jsonl").read_text().splitlines()[1:]]
    assert [r["successes"] for r in rows] == [[2, 2], [0, 0]] * (N_ITEMS // 2)
    # rerun: every item is in the label file, the probe is the same
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    x = torch.randn(3, fince.probe.feature_size)
    np.testing.assert_allclose(load_fince(out).confidence(x), fince.confidence(x))
    line = next(x for x in result.output.splitlines() if x.startswith("entrolab think "))
    cmd = shlex.split(line)[1:]
    assert cmd[:5] == ["think", "--strategy", "fince", "--param", f"probe={out}"]
    run = runner.invoke(app, [*cmd, "--n", "2", "--param", f'config={{"max_new_tokens": {TOKENS}}}',
                              "--out", str(tmp_path / "think.json")])  # fmt: skip
    assert run.exit_code == 0, run.output


def test_fit_zip_rc_head(parrot_dir, task_file, tmp_path):
    from entrolab.inference.zip_rc import load_zip_rc

    out = tmp_path / "zip"
    result = runner.invoke(app, [*_base("zip-rc", parrot_dir, task_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    head = load_zip_rc(out)
    # 4 rollouts of "7777" per item: rows at the prompt end and after 8 tokens (none: 4 < 8)
    # → 4 rows per item; half the items are right
    assert head.stats["rows"] == 4 * N_ITEMS and head.stats["reward_rate"] == 0.5
    line = next(x for x in result.output.splitlines() if x.startswith("entrolab think "))
    assert shlex.split(line)[1:5] == ["think", "--strategy", "zip-rc", "--param"]


def test_fit_sdm_and_bad_options(parrot_dir, task_file, tmp_path):
    from entrolab.inference.sdm import load_sdm

    out = tmp_path / "sdm"
    result = runner.invoke(app, [*_base("sdm", parrot_dir, task_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    v = load_sdm(out)
    # 2 samples per item, half the items right; 3 items train, 3 calibrate (seeded split)
    assert len(v.train_labels) + sum(len(c) for c in v.qbin_cdfs) == 2 * N_ITEMS
    assert f"--param sdm.scorer={out}" in result.output
    assert (tmp_path / "sdm.support.safetensors").is_file()
    bad = runner.invoke(app, [*_base("sdm", parrot_dir, task_file), "--continuations", "2"])
    assert bad.exit_code != 0 and "fit fince" in str(bad.exception or bad.output)
    bad = runner.invoke(app, [*_base("fince", parrot_dir, task_file), "--rule", "paragraph"])
    assert bad.exit_code != 0 and "--rule" in str(bad.exception or bad.output)
    bad = runner.invoke(app, [*_base("zip-rc", parrot_dir, task_file), "--head", "lora"])
    assert bad.exit_code != 0 and "--head must be probe or reserved" in str(bad.exception)
    # the parrot (a tiny model) has no unused vocabulary rows for the reserved-token head
    bad = runner.invoke(app, [*_base("zip-rc", parrot_dir, task_file), "--head", "reserved"])
    assert bad.exit_code != 0 and "0 unused vocabulary rows" in str(bad.exception)
