"""Terminal report: completions with tokens coloured by entropy, plus a compact summary.

Model text is untrusted: it is only ever put into :class:`rich.text.Text` objects (never into
markup strings), so ``[bold]`` or ``[/]`` in a completion prints literally.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.color import Color
from rich.console import Console, Group, RenderableType
from rich.rule import Rule
from rich.style import Style
from rich.table import Table
from rich.text import Text

from entrolab.errors import EntrolabError
from entrolab.report.summary import (
    ENTROPY_SCALE_MAX,
    Stops,
    TraceSummary,
    scale_color,
    summarize,
    visible_token,
)
from entrolab.types import Trace

#: Foreground colours for the terminal (0 nats = green … >= ENTROPY_SCALE_MAX = red).
TERMINAL_STOPS: Stops = (
    (0.0, (70, 160, 70)),
    (0.33, (190, 200, 60)),
    (0.66, (240, 150, 40)),
    (1.0, (230, 45, 45)),
)
#: Minimum terminal width per column before samples are printed side by side.
MIN_COLUMN_WIDTH = 36
#: At most this many samples are printed side by side.
MAX_COLUMNS = 4
#: Tokens with entropy below this (nats) are also dimmed.
DIM_BELOW = 0.25


def token_style(entropy: float) -> Style:
    """Rich style for a token of the given entropy (nats); low-entropy tokens are dimmed."""
    r, g, b = scale_color(entropy, TERMINAL_STOPS)
    return Style(color=Color.from_rgb(r, g, b), dim=entropy < DIM_BELOW)


#: What the "conf" numbers of :func:`summary_text` are (printed once under the legend).
CONF_NOTE = (
    "conf = DeepConf token confidence: −mean log-probability of the top-k tokens, in nats "
    "(not a probability; higher = more peaked = surer)"
)


def legend() -> Text:
    """Two lines: the colour scale of token entropy, then what the "conf" numbers mean."""
    text = Text("entropy (nats): ", style="bold")
    steps = 7
    for i in range(steps):
        h = ENTROPY_SCALE_MAX * i / (steps - 1)
        label = f"≥{h:g}" if i == steps - 1 else f"{h:g}"
        text.append("█", style=token_style(h))
        text.append(f"{label} ")
    text.append("\n")
    text.append(CONF_NOTE, style="dim")
    return text


def token_text(trace: Trace) -> Text:
    """The completion as one :class:`Text`, each token coloured by its entropy; newlines as ``↵``."""
    text = Text()
    for piece, h in zip(trace.tokens, trace.entropy.tolist(), strict=True):
        text.append(visible_token(piece, keep_layout=True), style=token_style(h))
    return text


def summary_text(summary: TraceSummary) -> Text:
    """The summary numbers and forking tokens as a few short lines."""
    text = Text()
    text.append(f"{summary.n_tokens} tokens", style="bold")
    text.append(f" · mean H {summary.mean_entropy:.3f} nats · ppl {summary.perplexity:.3f}\n")
    text.append(
        f"mean conf {summary.mean_confidence:.3f} nats · lowest-window conf "
        f"{summary.lowest_window_confidence:.3f} nats (w={summary.window}, k={summary.k})\n"
    )
    text.append(f"forks (top ρ={summary.rho:g}):", style="bold")
    if not summary.forks:
        text.append(" none")
    for fork in summary.forks:
        text.append(" ")
        text.append(repr(visible_token(fork.token)), style=token_style(fork.entropy))
        text.append(f"@{fork.position} {fork.entropy:.2f}")
    return text


def _card(trace: Trace, summary: TraceSummary) -> RenderableType:
    return Group(token_text(trace), Text(""), summary_text(summary))


def _groups(traces: Sequence[Trace]) -> list[list[int]]:
    """Indices of ``traces`` grouped by prompt_index, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(traces):
        groups.setdefault(t.prompt_index, []).append(i)
    return list(groups.values())


def print_traces(
    traces: Iterable[Trace],
    summaries: Sequence[TraceSummary] | None = None,
    console: Console | None = None,
) -> None:
    """Print each completion with entropy-coloured tokens and its summary.

    Samples of one prompt are printed side by side (one table column each) when there are at most
    :data:`MAX_COLUMNS` of them and the console is at least ``MIN_COLUMN_WIDTH`` characters wide
    per column; otherwise one after another.

    Args:
        traces: the completions (e.g. a :class:`~entrolab.types.TraceBatch`).
        summaries: one :class:`TraceSummary` per trace, same order; computed with
            :func:`summarize` defaults when omitted.
        console: where to print (a new :class:`rich.console.Console` by default).
    """
    traces = list(traces)
    if summaries is None:
        summaries = [summarize(t) for t in traces]
    if len(summaries) != len(traces):
        raise EntrolabError(f"got {len(summaries)} summaries for {len(traces)} traces")
    console = console or Console()
    console.print(legend())
    for group in _groups(traces):
        first = traces[group[0]]
        console.print(Rule(Text(f"prompt {first.prompt_index}"), style="dim"))
        prompt = "\n".join(visible_token(line) if line else "" for line in first.prompt.split("\n"))
        console.print(Text(prompt, style="italic"))
        side_by_side = 1 < len(group) <= MAX_COLUMNS
        side_by_side = side_by_side and console.width >= MIN_COLUMN_WIDTH * len(group)
        if side_by_side:
            table = Table(expand=True, show_lines=False, padding=(0, 1))
            for i in group:
                table.add_column(Text(f"sample {traces[i].sample_index}"), ratio=1)
            table.add_row(*(_card(traces[i], summaries[i]) for i in group))
            console.print(table)
            continue
        for i in group:
            if len(group) > 1:
                console.print(Text(f"— sample {traces[i].sample_index} —", style="bold"))
            console.print(_card(traces[i], summaries[i]))
            console.print()
