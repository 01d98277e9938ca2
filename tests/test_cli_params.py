"""The one parameter convention of the CLI, ``--param [NAME.]KEY=VALUE``: the parser by hand,
every command's use of it, the deprecated ``--sampler NAME:k=v`` spelling (same parsed result
plus a note naming the new spelling), and bad spellings answered with the right one."""

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from entrolab.cli import eval_cmd, sample_cmd
from entrolab.cli.common import format_value, method_params, parse_value
from entrolab.cli.think_cmd import pareto_command, think_command
from entrolab.errors import EntrolabError
from entrolab.evaluation.sampler_compare import DEFAULT_SAMPLERS

runner = CliRunner()
app = typer.Typer()
app.command("eval")(eval_cmd.eval_command)
app.command("compare-samplers")(sample_cmd.compare_samplers_command)
app.command("sample")(sample_cmd.sample_command)
app.command("think")(think_command)
app.command("pareto")(pareto_command)


def test_method_params_by_hand():
    pairs = ["tau=0.9", "majority.voter=mean_confidence_weighted", "adaptive.tau=0.5", "k=[1,2]"]
    # bare keys go to every method; NAME.KEY only to NAME and beats the bare one (adaptive.tau)
    assert method_params(pairs, ["majority", "adaptive"]) == {
        "majority": {"tau": 0.9, "voter": "mean_confidence_weighted", "k": [1, 2]},
        "adaptive": {"tau": 0.5, "k": [1, 2]},
    }
    assert method_params(None, ["a"]) == {"a": {}}
    # aliases map to the names run; a dotted NAME may itself hold dots (rpartition)
    got = method_params(["X.w=3"], ["x"], alias=str.lower)
    assert got == {"x": {"w": 3}}
    assert method_params(["a.b.c=1"], ["a.b"]) == {"a.b": {"c": 1}}


@pytest.mark.parametrize(
    ("pairs", "kw", "message"),
    [
        (["tau"], {}, "--param takes [NAME.]KEY=VALUE, e.g. --param tau=0.9; got 'tau'"),
        ([".tau=1"], {}, "--param takes [NAME.]KEY=VALUE"),
        (["a.=1"], {}, "--param takes [NAME.]KEY=VALUE"),
        (["nope.tau=1"], {}, "'nope' is not one of the methods run (a, b); write --param NAME.tau"),
        (["tau=1"], {"bare": False, "what": "estimator"}, "--param NAME.tau=VALUE"),
        (["tau=1", "tau=2"], {}, "--param tau=… is given twice"),
        (["a.tau=1", "a.tau=2"], {}, "--param a.tau=… is given twice"),
    ],
)
def test_bad_spellings_show_the_right_one(pairs, kw, message):
    with pytest.raises(EntrolabError) as err:
        method_params(pairs, ["a", "b"], **kw)
    assert message in str(err.value)


@pytest.mark.parametrize("value", [0.4, 3, True, None, [1, 2], "paper", "0.4", "true", " x"])
def test_format_value_reads_back(value):
    assert parse_value(format_value(value)) == value  # " x" goes out as JSON "\" x\""


@pytest.fixture
def captured(monkeypatch):
    """Replace the model-running part of eval and compare-samplers by a recorder of settings."""
    seen: dict = {}

    class Stop(Exception):
        pass

    def record(*args, **kwargs):
        seen["args"] = args
        raise Stop

    monkeypatch.setattr(sample_cmd, "_run", record)
    monkeypatch.setattr(eval_cmd, "_run", record)
    return seen


def _compare(*args):
    return runner.invoke(app, ["compare-samplers", "--n", "2", *args])


@pytest.mark.parametrize(
    ("old", "new", "specs"),
    [
        (
            ["--sampler", "top_h:alpha=0.4", "--sampler", "top_p:top_p=0.9"],
            [
                *("--sampler", "top_h", "--param", "top_h.alpha=0.4", "--sampler", "top_p"),
                *("--param", "top_p.top_p=0.9"),
            ],
            ("top_h:alpha=0.4", "top_p:top_p=0.9"),
        ),
        (
            ["--sampler", "top_h:alpha=0.4,mode=paper"],
            ["--sampler", "top_h", "--param", "alpha=0.4", "--param", "top_h.mode=paper"],
            ("top_h:alpha=0.4,mode=paper",),
        ),
        (  # two settings of one sampler: the old spelling had no alias; the new one needs it
            ["--sampler", "min_p:min_p=0.1", "--sampler", "tight=min_p:min_p=0.3"],
            [
                *("--sampler", "min_p", "--sampler", "tight=min_p"),
                *("--param", "min_p.min_p=0.1", "--param", "tight.min_p=0.3"),
            ],
            ("min_p:min_p=0.1", "min_p:min_p=0.3"),
        ),
    ],
)
def test_deprecated_sampler_spec_parses_the_same_and_names_the_new_spelling(
    captured, old, new, specs
):
    result = _compare(*old)
    assert captured["args"][2]["samplers"] == specs
    text = " ".join(result.output.split())
    assert text.count("deprecated: --sampler") == len([a for a in old if ":" in a])
    first_new = " ".join(new[: new.index("--sampler", 1)] if new.count("--sampler") > 1 else new)
    if "mode" not in first_new and "tight" not in text:
        assert f"write {first_new}" in text  # the note shows the exact new spelling
    captured.clear()
    result = _compare(*new)
    assert captured["args"][2]["samplers"] == specs
    assert "deprecated" not in result.output


def test_compare_samplers_default_set_takes_param_overrides(captured):
    _compare("--param", "top_h.alpha=0.5")
    specs = captured["args"][2]["samplers"]
    assert specs == tuple(s.replace("alpha=0.4", "alpha=0.5") for s in DEFAULT_SAMPLERS)
    captured.clear()
    _compare()
    assert captured["args"][2]["samplers"] == tuple(DEFAULT_SAMPLERS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "top_h", "--sampler", "top_h"], "--sampler other=top_h --param other.KEY"),
        (
            ["--sampler", "top_h", "--param", "min_p.min_p=0.1"],
            "'min_p' is not one of the samplers",
        ),
        (["--sampler", "top_h", "--param", "alpha"], "--param takes [NAME.]KEY=VALUE"),
        (["--sampler", "nope"], "'nope' is not among the registered samplers"),
    ],
)
def test_compare_samplers_bad_spellings(captured, args, message):
    result = _compare(*args)
    assert isinstance(result.exception, EntrolabError)
    assert message in " ".join(str(result.exception).split())
    assert "args" not in captured


def test_eval_param_reaches_the_estimators_by_canonical_name_and_warns_before_loading(captured):
    result = runner.invoke(
        app,
        [
            *("eval", "--max-new-tokens", "32", "--estimators", "deepconf_lowest,deepconf_tail"),
            *("--param", "deepconf_lowest.window=32", "--param", "deepconf_tail.window=4"),
        ],
    )
    settings = captured["args"][3]
    assert settings["estimator_params"] == {
        "deepconf_lowest": {"window": 32},
        "deepconf_tail": {"window": 4},
    }
    text = " ".join(result.output.split())
    # window 32 >= max_new_tokens 32 for deepconf_lowest only; printed once, before the model
    assert text.count("warning: deepconf_lowest: window 32 tokens >= the longest reply") == 1
    assert "deepconf_tail: window" not in text


def test_eval_default_window_warns_at_a_short_reply_budget(captured):
    # the registered default window is 8 tokens: at --max-new-tokens 8 every deepconf_* estimator
    # among "all that apply" collapses onto deepconf_mean -> one line names all four
    result = runner.invoke(app, ["eval", "--max-new-tokens", "8"])
    text = " ".join(result.output.split())
    assert text.count("warning:") == 1
    for name in ("deepconf_mean", "deepconf_lowest", "deepconf_bottom10", "deepconf_tail"):
        assert name in text
    assert "these estimators then give identical scores" in text
    captured.clear()
    result = runner.invoke(app, ["eval", "--max-new-tokens", "9"])
    assert "warning:" not in result.output and captured["args"][3]["estimator_params"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "window=8"], "say which estimator it is for: --param NAME.window=VALUE"),
        (["--param", "nope.window=8"], "'nope' is not among the registered estimators"),
        (
            ["--estimators", "deepconf_tail", "--param", "deepconf_mean.window=8"],
            "'deepconf_mean' is not one of the estimators run (deepconf_tail)",
        ),
    ],
)
def test_eval_bad_param_spellings(captured, args, message):
    result = runner.invoke(app, ["eval", *args])
    assert isinstance(result.exception, EntrolabError)
    assert message in " ".join(str(result.exception).split())


@pytest.mark.parametrize("command", ["think", "sample"])
def test_single_method_commands_take_bare_and_named_keys_alike(tmp_path, command):
    """``--param tau=…`` and ``--param NAME.tau=…`` mean the same for a one-method command; a
    NAME that is not the method is an error showing the right spelling (before any model)."""
    missing = str(tmp_path / "no-such-model")
    if command == "think":
        head = ["think", "--strategy", "adaptive", "--model", missing]
        good, bad = "adaptive.bogus=1", "majority.tau=1"
        named = runner.invoke(app, [*head, "--param", good])
        bare = runner.invoke(app, [*head, "--param", "bogus=1"])
        for r in (named, bare):  # both reach the strategy, which names the bad parameter
            assert "has no parameter(s) 'bogus'" in str(r.exception)
    else:
        head = ["sample", "hi", "--sampler", "top_h", "--model", missing]
        bad = "min_p.alpha=0.4"
        for r in (
            runner.invoke(app, [*head, "--param", "top_h.alpha=2"]),
            runner.invoke(app, [*head, "--param", "alpha=2"]),
        ):  # both reach the sampler, which checks alpha's range
            assert "alpha" in str(r.exception) and "no-such-model" not in str(r.exception)
    result = runner.invoke(app, [*head, "--param", bad])
    assert "is not one of the" in str(result.exception)
    assert "write --param NAME." in str(result.exception)


def test_pareto_named_and_bare_params_split_per_strategy(tmp_path):
    missing = str(tmp_path / "no-such-model")
    result = runner.invoke(
        app,
        [
            *("pareto", "--strategies", "majority,adaptive", "--budgets", "2", "--model", missing),
            *("--param", "adaptive.bogus=1"),
        ],
    )
    assert "strategy 'adaptive' has no parameter(s) 'bogus'" in str(result.exception)
    result = runner.invoke(
        app,
        [
            *("pareto", "--strategies", "majority", "--budgets", "2", "--model", missing),
            *("--param", "adaptive.tau=1"),
        ],
    )
    assert "'adaptive' is not one of the strategys run" not in str(result.exception)
    assert "'adaptive' is not one of the strategies run (majority)" in str(result.exception)


def test_deprecated_note_goes_to_the_console_given():
    console = Console(record=True, width=200)
    sample_cmd.sampler_specs(["top_h:alpha=0.4"], None, (), console)
    assert "deprecated: --sampler top_h:alpha=0.4" in console.export_text()
