"""Support metrics of "The Invisible Leash" (Wu et al. 2025, arXiv:2507.14843; spec §4): does RL
expand what the model can solve, or only shrink it?

For each problem, k samples from a base and a trained model give a *row*: the extracted answers,
their verdicts and the mean token entropy. From two aligned lists of rows:

- problem-level support: preserved = solved(base) ∧ solved(RL), shrunk = solved(base) ∧
  ¬solved(RL), expanded = ¬solved(base) ∧ solved(RL), where solved = at least one correct sample
  out of k (empirical support at k);
- answer-level support: the same over the sets of distinct correct answers (answer keys), summed
  over problems;
- unbiased pass@k curves ``1 − C(n−c, k)/C(n, k)`` for both models;
- answer-level entropy ``H_ans`` (nats, over clusters of equivalent answers; each unparseable answer
  its own cluster) vs mean token entropy ``H_tok``: the "leash" signature is ΔH_tok ≥ 0 with
  ΔH_ans < 0.

:class:`RowStore` keeps rows in a JSONL file and skips problems already sampled, so a killed
``entrolab leash`` continues where it stopped. :class:`LeashTracker` gives the trainer's held-out
evaluation the same table against the starting checkpoint (rows of step 0 kept in the run dir).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text
from entrolab.rl.rewards import answer_entropy, pass_at_k
from entrolab.tasks.answers import answer_key

__all__ = [
    "LeashRow",
    "LeashTracker",
    "RowStore",
    "format_table",
    "leash_table",
    "rows_from_traces",
    "support_counts",
    "table_metrics",
]


@dataclass(frozen=True)
class LeashRow:
    """k samples of one problem.

    Attributes:
        index: the problem's position in the evaluated item list.
        answers: k extracted answers (None = unparseable).
        correct: k verdicts.
        token_entropy: mean token entropy over the k responses' tokens (nats).
    """

    index: int
    answers: list[str | None]
    correct: list[bool]
    token_entropy: float

    @property
    def solved(self) -> bool:
        return any(self.correct)

    def correct_set(self) -> set[str]:
        """Distinct correct answers (canonical keys)."""
        return {_key(a) for a, ok in zip(self.answers, self.correct, strict=True) if ok and a}


def _key(answer: str) -> str:
    try:
        return answer_key(answer)
    except Exception:  # a text answer without a canonical numeric form
        return answer.strip()


def rows_from_traces(task, items: Sequence[Any], traces, k: int) -> list[LeashRow]:
    """One :class:`LeashRow` per item from ``k`` traces per item (``traces.by_prompt()``)."""
    groups = traces.by_prompt()
    rows = []
    for i, item in enumerate(items):
        group = groups.get(i, [])
        if len(group) != k:
            raise EntrolabError(f"expected {k} samples for item {i}, got {len(group)}")
        grades = [task.grade(item, t.text) for t in group]
        n_tok = sum(len(t) for t in group)
        h = sum(float(t.entropy.sum()) for t in group) / max(n_tok, 1)
        rows.append(LeashRow(i, [g.parsed for g in grades], [bool(g.correct) for g in grades], h))
    return rows


def support_counts(base: Sequence[bool], trained: Sequence[bool]) -> dict[str, int]:
    """Preserved / shrunk / expanded / unsolved problem counts from per-problem solved flags."""
    if len(base) != len(trained):
        raise EntrolabError(f"{len(base)} base vs {len(trained)} trained problems; align them")
    out = {"preserved": 0, "shrunk": 0, "expanded": 0, "unsolved": 0}
    for b, t in zip(base, trained, strict=True):
        key = ("preserved" if t else "shrunk") if b else ("expanded" if t else "unsolved")
        out[key] += 1
    return out


def leash_table(
    base: Sequence[LeashRow], trained: Sequence[LeashRow], ks: Sequence[int] | None = None
) -> dict[str, Any]:
    """The Invisible-Leash table of two aligned row lists (same problems, same k).

    Returns ``problems`` (support counts), ``answers`` (answer-set counts summed over problems),
    ``pass_at_k`` ({k: [base, trained]}, mean over problems), ``H_ans`` / ``H_tok``
    ([base, trained] means, nats), ``dH_ans``, ``dH_tok`` and ``leash_signature``
    (ΔH_tok ≥ 0 and ΔH_ans < 0), plus ``n`` problems and ``k`` samples each."""
    if len(base) != len(trained) or not base:
        raise EntrolabError("leash_table needs the same non-empty list of problems for both models")
    if [r.index for r in base] != [r.index for r in trained]:
        raise EntrolabError("base and trained rows cover different problems; align them by index")
    k = len(base[0].answers)
    if any(len(r.answers) != k for r in [*base, *trained]):
        raise EntrolabError("every row must hold the same number of samples k")
    probs = support_counts([r.solved for r in base], [r.solved for r in trained])
    ans = {"preserved": 0, "shrunk": 0, "expanded": 0}
    for b, t in zip(base, trained, strict=True):
        sb, st = b.correct_set(), t.correct_set()
        ans["preserved"] += len(sb & st)
        ans["shrunk"] += len(sb - st)
        ans["expanded"] += len(st - sb)
    ks = sorted({1, k, *[x for x in (ks or (1, 2, 4, 8, 16, 32, 64)) if 1 <= x <= k]})
    curve = {
        x: [
            sum(pass_at_k(k, sum(r.correct), x) for r in rows) / len(rows)
            for rows in (base, trained)
        ]
        for x in ks
    }
    h_ans = [sum(answer_entropy(r.answers) for r in rows) / len(rows) for rows in (base, trained)]
    h_tok = [sum(r.token_entropy for r in rows) / len(rows) for rows in (base, trained)]
    d_ans, d_tok = h_ans[1] - h_ans[0], h_tok[1] - h_tok[0]
    return {
        "n": len(base),
        "k": k,
        "problems": probs,
        "answers": ans,
        "pass_at_k": curve,
        "H_ans": h_ans,
        "H_tok": h_tok,
        "dH_ans": d_ans,
        "dH_tok": d_tok,
        "leash_signature": bool(d_tok >= 0 and d_ans < 0),
    }


class RowStore:
    """Rows of one model in a JSONL file, one line per problem (appended as sampled)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[int, LeashRow] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: sampled again
                self.rows[int(d["index"])] = LeashRow(**d)

    def missing(self, n: int) -> list[int]:
        return [i for i in range(n) if i not in self.rows]

    def add(self, rows: Sequence[LeashRow]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut = (
            self.path.is_file()
            and self.path.stat().st_size > 0
            and not self.path.read_bytes().endswith(b"\n")
        )
        with self.path.open("a") as f:
            if cut:  # a line left unfinished by a kill: close it (it is skipped when read)
                f.write("\n")
            for r in rows:
                f.write(json.dumps(asdict(r)) + "\n")
                self.rows[r.index] = r

    def ordered(self, n: int) -> list[LeashRow]:
        if self.missing(n):
            raise EntrolabError(f"{self.path} lacks problems {self.missing(n)[:5]}…")
        return [self.rows[i] for i in range(n)]


def table_metrics(table: dict[str, Any], prefix: str = "leash/") -> dict[str, float]:
    """Flat float metrics of a :func:`leash_table` (for metrics.jsonl)."""
    out = {f"{prefix}{k}": float(v) for k, v in table["problems"].items()}
    out.update({f"{prefix}answers_{k}": float(v) for k, v in table["answers"].items()})
    out[f"{prefix}dH_ans"] = table["dH_ans"]
    out[f"{prefix}dH_tok"] = table["dH_tok"]
    return out


class LeashTracker:
    """The trainer's held-out support metrics vs the starting checkpoint: the rows of every
    evaluation are saved to ``run_dir/leash/step_<step>.jsonl``; evaluations after step 0 are
    compared with the step-0 rows (``leash/preserved``, ``leash/shrunk``, ``leash/expanded``,
    answer-set counts, ΔH_ans, ΔH_tok)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / "leash"

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:06d}.jsonl"

    def observe(self, task, items, traces, k: int, step: int) -> dict[str, float]:
        rows = rows_from_traces(task, items, traces, k)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(step), "".join(json.dumps(asdict(r)) + "\n" for r in rows))
        start = self.path(0)
        if step == 0 or not start.is_file():
            return {}
        base = RowStore(start).ordered(len(rows))
        if len(base[0].answers) != k:
            return {}
        return table_metrics(leash_table(base, rows))


def format_table(table: dict[str, Any]) -> str:
    """A plain-text rendering of :func:`leash_table` (for the CLI and the docs)."""
    p, a = table["problems"], table["answers"]
    lines = [
        f"problems: n={table['n']}, k={table['k']}",
        f"  preserved {p['preserved']}  shrunk {p['shrunk']}  expanded {p['expanded']}  "
        f"unsolved {p['unsolved']}",
        f"distinct correct answers: preserved {a['preserved']}  shrunk {a['shrunk']}  "
        f"expanded {a['expanded']}",
        "pass@k (base -> trained): "
        + ", ".join(f"@{x}: {b:.3f}->{t:.3f}" for x, (b, t) in table["pass_at_k"].items()),
        f"H_ans {table['H_ans'][0]:.3f} -> {table['H_ans'][1]:.3f} (d {table['dH_ans']:+.3f}); "
        f"H_tok {table['H_tok'][0]:.3f} -> {table['H_tok'][1]:.3f} (d {table['dH_tok']:+.3f}); "
        f"leash signature: {'yes' if table['leash_signature'] else 'no'}",
    ]
    return "\n".join(lines)
