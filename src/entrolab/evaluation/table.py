"""The printable ranking table that :meth:`EvalResults.table` returns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, SupportsIndex, overload

__all__ = ["RankingTable"]

#: (key, heading) of the plain-text rendering; AUROC carries its interval when one was computed
_TEXT_COLUMNS = (("prr", "PRR↑"), ("aurc", "AURC↓"), ("ece", "ECE↓"), ("brier", "Brier↓"))


class RankingTable(list[dict[str, Any]]):
    """Estimators ranked by AUROC: a list of row dicts that prints as a table.

    ``table.rows`` is the data as a plain list of dicts (keys as documented in
    :meth:`~entrolab.evaluation.core.EvalResults.table`); ``print(table)`` (and the REPL)
    shows rank, name, AUROC with its interval, PRR, AURC, ECE and Brier, one estimator per
    line, names never cut (n and the other intervals are in the rows). Slices are tables too (``res.table()[:3]``).
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows as a plain list of dicts."""
        return list(self)

    @overload
    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> RankingTable: ...
    def __getitem__(self, index: SupportsIndex | slice) -> dict[str, Any] | RankingTable:
        got = super().__getitem__(index)
        return RankingTable(got) if isinstance(index, slice) else got

    def __str__(self) -> str:
        from entrolab.evaluation.report import cell, fmt_value, rank_label

        if not self:
            return "(no estimators)"
        header = ["#", "estimator", "AUROC↑", *(label for _, label in _TEXT_COLUMNS)]
        body = [
            [
                rank_label(r, i),
                str(r["name"]),
                cell(r, "auroc"),
                *(fmt_value(r.get(k), ".3f") for k, _ in _TEXT_COLUMNS),
            ]
            for i, r in enumerate(self, start=1)
        ]
        widths = [max(len(row[j]) for row in [header, *body]) for j in range(len(header))]

        def line(cells: list[str]) -> str:
            # the name column is left-aligned, figures right-aligned; 2 spaces around the name,
            # 1 between figures, so a 30-character name still fits 80 columns
            out = [
                c.ljust(w) if j == 1 else c.rjust(w)
                for j, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(out[:3]) + " " + " ".join(out[3:])

        return "\n".join([line(header), *(line(row) for row in body)])

    def __repr__(self) -> str:
        return str(self)
