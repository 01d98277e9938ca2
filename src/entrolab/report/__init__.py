"""Reports: terminal and standalone-HTML renderings of traces (token entropy heatmaps, plots).

``report`` may import every other layer; nothing imports it. Importing it has no side effects.
"""

from entrolab.report.html import render_html, write_html
from entrolab.report.summary import ENTROPY_SCALE_MAX, ForkToken, TraceSummary, summarize
from entrolab.report.terminal import print_traces

__all__ = [
    "ENTROPY_SCALE_MAX",
    "ForkToken",
    "TraceSummary",
    "print_traces",
    "render_html",
    "summarize",
    "write_html",
]
