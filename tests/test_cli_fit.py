"""`entrolab fit lynx|diffadapt` end to end on a tiny model rigged to always say "7" (so the
labels are known by hand), the command it prints run as given, the shared `--param` parser, and
bad input failing before the model loads."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from entrolab.cli.common import parse_params, parse_value
from entrolab.cli.fit_cmd import fit_command, parse_cues, think_line
from entrolab.cli.think_cmd import think_command
from entrolab.errors import EntrolabError

runner = CliRunner()
app = typer.Typer()
app.command("fit")(fit_command)
app.command("think")(think_command)

N_ITEMS, TOKENS = 8, 6
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SEVENS = "7" * TOKENS


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """Items 0, 2, 4, 6 expect "777777" (what the parrot says in 6 tokens), 1, 3, 5, 7 expect 5."""
    path = tmp_path_factory.mktemp("task") / "sevens.jsonl"
    rows = [
        {"id": f"q{i}", "prompt": f"Question {i}: name a number, {i} times.", "answer": a}
        for i, a in enumerate([SEVENS, "5"] * (N_ITEMS // 2))
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _command(output: str) -> list[str]:
    line = next(x for x in output.splitlines() if x.startswith("entrolab think "))
    return shlex.split(line)[1:]  # without the program name


# ----------------------------------------------------------------------------- end to end
def test_fit_lynx_saves_an_exit_whose_printed_command_runs(parrot_dir, task_file, tmp_path):
    from entrolab.inference.exits import _split_items, load_lynx

    out = tmp_path / "exit"
    args = ["fit", "lynx", "--task", f"jsonl:{task_file}", "--n", str(N_ITEMS), "--model"]
    args += [str(parrot_dir), "--max-new-tokens", str(TOKENS), "--cues", "7", "--delta", "0.25"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    ex = load_lynx(out)
    assert ex.cues == ("7",) and ex.layer == 1  # (2 · 2 blocks) // 3
    assert ex.threshold.delta == 0.25 and ex.threshold.scope == "cue"
    # Every trace is "777777": 6 cues per item, 48 in all; the forced answer after any cue is
    # "\nAnswer:777777", right exactly for the 4 items expecting 777777 → 24/48 ready.
    s = ex.stats
    assert s["train_cues"] + s["calibration_cues"] == N_ITEMS * TOKENS
    assert s["ready_fraction"] == 0.5
    # τ̂ is calibrated on the not-ready cues of the calibration items (seeded split, seed 0).
    _, cal = _split_items(N_ITEMS, 0.5, 0)
    assert ex.threshold.n == TOKENS * sum(i % 2 for i in cal)
    assert s["calibration_cues"] == TOKENS * len(cal)
    # The printed command names the saved exit and works as printed (plus small budgets).
    cmd = _command(result.output)
    assert cmd[:5] == ["think", "--strategy", "lynx", "--param", f"exit={out}"]
    assert "--seed" in cmd and cmd[cmd.index("--seed") + 1] == "1"
    record = tmp_path / "think-run"  # think writes a run directory
    extra = ["--n", str(N_ITEMS), "--param", f'config={{"max_new_tokens": {TOKENS}}}']
    run = runner.invoke(app, [*cmd, *extra, "--out", str(record)])
    assert run.exit_code == 0, run.output
    rec = json.loads((record / "summary.json").read_text())
    items = [json.loads(x) for x in (record / "results.jsonl").read_text().splitlines()]
    assert rec["summary"]["accuracy"] == 0.5  # every reply is 777777: right for half the items
    assert len(items) == N_ITEMS and all(it["answer"] == SEVENS for it in items)
    assert all(it["meta"]["cues_seen"] >= 1 for it in items)


def test_fit_diffadapt_labels_by_accuracy_and_its_router_separates_them(
    parrot_dir, task_file, tmp_path
):
    from entrolab.backends import HFBackend
    from entrolab.inference.routing import load_router
    from entrolab.tasks import load_task

    out = tmp_path / "router"
    args = ["fit", "diffadapt", "--task", f"jsonl:{task_file}", "--n", str(N_ITEMS), "--model"]
    args += [str(parrot_dir), "--max-new-tokens", str(TOKENS), "--k", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    router = load_router(out)
    # p̂ = 1 (both samples say 777777) on the even items → easy; p̂ = 0 on the odd → hard.
    assert router.probe.info.extra["label_counts"] == {"easy": 4, "normal": 0, "hard": 4}
    assert router.probe.info.extra["k"] == 2
    assert "easy 4 / normal 0 / hard 4" in result.output
    backend = HFBackend.load(str(parrot_dir))
    items = load_task(f"jsonl:{task_file}").items(N_ITEMS, seed=0)
    classes, probs = router.classify(backend, [it.prompt for it in items])
    assert classes == ["easy", "hard"] * (N_ITEMS // 2)  # separable training questions
    torch.testing.assert_close(probs.sum(-1), torch.ones(N_ITEMS, dtype=torch.float64))
    assert _command(result.output)[:5] == [
        "think", "--strategy", "diffadapt", "--param", f"router={out}",
    ]  # fmt: skip


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "lynks"], "KIND must be one of lynx, diffadapt"),
        (["fit", "diffadapt", "--delta", "0.1"], "--delta applies to `entrolab fit lynx` only"),
        (["fit", "lynx", "--k", "4", "--feature", "entropy"], "--k, --feature apply to"),
        (["fit", "lynx", "--delta", "1.5"], "--delta (the premature-exit rate) must be in (0, 1)"),
        (["fit", "lynx", "--scope", "trace"], "--scope must be 'cue' or 'item'"),
        (["fit", "lynx", "--cues", "a,,b"], "--cues needs non-empty cue strings"),
        (["fit", "diffadapt", "--routes", "no/such.yaml"], "--routes file 'no/such.yaml'"),
        (["fit", "lynx", "--task-setting", "level"], "--task-setting takes KEY=VALUE"),
        (["fit", "lynx", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["think", "--strategy", "lynx"], "entrolab fit lynx"),
        (["think", "--strategy", "diffadapt"], "entrolab fit diffadapt"),
    ],
)
def test_bad_input_fails_before_the_model_loads(tmp_path, args, message):
    missing = str(tmp_path / "no-such-model")  # loading it would fail with another message
    result = runner.invoke(app, [*args, "--model", missing])
    assert isinstance(result.exception, EntrolabError), result.output
    assert message in str(result.exception)


def test_think_lynx_without_an_exit_names_the_fit_command():
    result = runner.invoke(app, ["think", "--strategy", "lynx", "--n", "1"])
    msg = str(result.exception)
    assert "`entrolab fit lynx --out lynx_exit`" in msg and "--param exit=lynx_exit" in msg


# ------------------------------------------------------------------------- parsing helpers
def test_parse_params_by_hand():
    pairs = ["tau=0.9", "n= 3", "flag=True", "off=false", "none=None", "xs=[1, 2]"]
    pairs += ["name= majority ", "eq=a=b", 'q="007"', "empty=", " k =1e-3"]
    assert parse_params(pairs) == {
        "tau": 0.9, "n": 3, "flag": True, "off": False, "none": None, "xs": [1, 2],
        "name": "majority", "eq": "a=b", "q": "007", "empty": "", "k": 0.001,
    }  # fmt: skip
    assert parse_params(None) == {} and parse_value("NULL") is None


@pytest.mark.parametrize(
    ("pairs", "kw", "message"),
    [
        (["tau"], {}, "--param takes KEY=VALUE (e.g. --param tau=0.9), got 'tau'"),
        ([" =1"], {}, "--param takes KEY=VALUE"),
        (["level"], {"option": "--task-setting", "example": "level=2"}, "--task-setting level=2"),
        (["a=1", "b=2", "a =3"], {}, "--param a=… is given twice"),
    ],
)
def test_parse_params_rejects_malformed_pairs(pairs, kw, message):
    with pytest.raises(EntrolabError) as err:
        parse_params(pairs, **kw)
    assert message in str(err.value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_.]{0,8}", fullmatch=True), json_values))
def test_json_encoded_values_round_trip(params):
    assert parse_params([f"{k}={json.dumps(v)}" for k, v in params.items()]) == params


def test_parse_cues_and_the_printed_think_line():
    assert parse_cues("\\n,wait") == ("\n", "wait")
    assert parse_cues('["a,b", "\\n\\n"]') == ("a,b", "\n\n")  # JSON: commas inside cues
    assert parse_cues("\\\\n,\\t") == ("\\n", "\t")  # an escaped backslash stays literal
    with pytest.raises(EntrolabError, match="JSON list"):
        parse_cues('["a",')
    line = think_line("lynx", "runs/my exit", "arithmetic", ["level=2"], None, "bfloat16", 4)
    assert line == (
        "entrolab think --strategy lynx --param 'exit=runs/my exit' --task arithmetic "
        "--task-setting level=2 --dtype bfloat16 --seed 5"
    )
