"""`--help` of every command fits 80 columns without cutting an option name
(rich marks a cut with "…"), and boolean options have no long --no-… twin to cut."""

import unicodedata

import pytest
from typer.testing import CliRunner

from entrolab.cli.main import app

runner = CliRunner()


COMMANDS = [
    "analyze", "eval", "sample", "compare-samplers", "think", "pareto", "fit", "train", "leash",
    "plot", "tta", "serve", "list",
]  # fmt: skip


def test_every_command_is_covered():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert sorted(names) == sorted(COMMANDS)


def _width(line: str) -> int:
    """Columns a line takes: combining marks (the hat of q̂) take none."""
    return sum(not unicodedata.combining(ch) for ch in line)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(_width(x) for x in lines) <= 80
    assert "…" not in result.output, result.output
    if command == "analyze":
        assert "--allow-download" in result.output and "--no-allow-download" not in result.output
        assert "deepconf_window(64)" in result.output
