"""`--help` of the commands this file covers fits 80 columns without cutting an option name
(rich marks a cut with "…"), and boolean options have no long --no-… twin to cut."""

import pytest
from typer.testing import CliRunner

from entrolab.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["analyze", "think", "sample", "compare-samplers"])
def test_help_fits_80_columns(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(x) for x in lines) <= 80
    assert "…" not in result.output, result.output
    if command == "analyze":
        assert "--allow-download" in result.output and "--no-allow-download" not in result.output
        assert "deepconf_window(64)" in result.output
