"""EvalResults.table() prints as a table; its rows stay plain dicts."""

from __future__ import annotations

from entrolab.evaluation.table import RankingTable

ROWS = [
    # a tier leader with an interval above chance, and a long name tied with it (=1) whose
    # interval includes 0.5 (†); the third has no AUROC at all (constant scores)
    {"name": "deepconf_bottom10", "auroc": 0.848, "auroc_low": 0.741, "auroc_high": 0.943,
     "prr": 0.61, "aurc": 0.12, "ece": 0.05, "brier": 0.18, "n": 80, "tier": 1,
     "auroc_vs_chance": "above"},
    {"name": "mc_sequence_entropy_normalised", "auroc": 0.6, "auroc_low": 0.45,
     "auroc_high": 0.74, "prr": 0.2, "aurc": 0.2, "ece": 0.08, "brier": 0.22, "n": 80,
     "tier": 1, "auroc_vs_chance": "not significant"},
    {"name": "const", "auroc": None, "prr": None, "aurc": None, "ece": None, "brier": None,
     "n": 80, "tier": None},
]  # fmt: skip


def test_prints_every_name_in_full_with_intervals_ties_and_gaps():
    table = RankingTable(ROWS)
    lines = str(table).splitlines()
    assert lines[0].split() == ["#", "estimator", "AUROC↑", "PRR↑", "AURC↓", "ECE↓", "Brier↓"]
    assert lines[1].split() == ["1", "deepconf_bottom10", "0.848", "[.74,.94]", "0.610",
                                "0.120", "0.050", "0.180"]  # fmt: skip
    # =1: same DeLong tier as rank 1; † interval includes chance; the long name is not cut
    assert lines[2].split()[:4] == ["=1", "mc_sequence_entropy_normalised", "0.600", "[.45,.74]†"]
    assert lines[3].split() == ["–", "const", "–", "–", "–", "–", "–"]
    assert repr(table) == str(table) and max(len(line) for line in lines) <= 80


def test_rows_and_slices():
    table = RankingTable(ROWS)
    assert table.rows == ROWS and type(table.rows) is list
    assert table == ROWS  # still a list of dicts for code that indexes it
    top = table[:2]
    assert isinstance(top, RankingTable) and str(top).count("\n") == 2  # header + 2 rows
    assert table[0] is ROWS[0]
    assert str(RankingTable()) == "(no estimators)"


def test_terminal_summary_never_cuts_a_name_at_80_columns():
    import io

    import numpy as np
    from rich.console import Console

    from entrolab.evaluation.core import results_from_rows
    from entrolab.evaluation.report import print_summary

    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.5
    names = ["mc_sequence_entropy_normalized", "semantic_entropy_polygraph", "msp"]
    u = {k: -(y * (i + 1) + rng.normal(size=60)) for i, k in enumerate(names)}
    rows = [
        {"index": i, "correct": bool(y[i]), "reason": "ok", "u": {k: float(v[i]) for k, v in u.items()}}
        for i in range(60)
    ]  # fmt: skip
    res = results_from_rows({"task": "t", "samples": 1, "estimators_run": names}, rows)
    for width, layout_line in ((80, "  # "), (120, " estimator ")):
        buf = io.StringIO()
        print_summary(res, Console(file=buf, width=width, color_system=None))
        lines = buf.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        assert any(layout_line in line for line in lines)  # list layout at 80, table at 120
        for name in names:  # each name whole on one line, next to its rank
            assert any(line.split()[1:2] == [name] for line in lines if line.split()), name
