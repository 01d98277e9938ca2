"""Report layer: summarize(), the terminal renderer and the standalone HTML page (no browser)."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import pytest
from rich.console import Console

from entrolab.errors import EntrolabError
from entrolab.report import ForkToken, print_traces, render_html, summarize, write_html
from entrolab.report import html as report_html
from entrolab.report.summary import visible_token
from entrolab.report.terminal import token_style
from report_fixtures import HOSTILE_TOKENS, hand_trace, hostile_trace, make_trace

# ---- summarize ---------------------------------------------------------------------------------


def test_summarize_hand_computed():
    s = summarize(hand_trace(), window=2, rho=0.4, top_forks=5)
    assert s.n_tokens == 5
    assert s.mean_entropy == pytest.approx(1.42, rel=1e-6)  # (0.5+2+0.1+1.5+3)/5
    assert s.mean_logprob == pytest.approx(-1.4 * math.log(2), rel=1e-6)  # ln(1/128)/5
    assert s.perplexity == pytest.approx(2 ** (7 / 5), rel=1e-6)  # exp(-mean logprob)
    assert s.mean_confidence == pytest.approx(2.1, rel=1e-6)  # C = [2, 1, 4, 3, 0.5]
    # windows of 2 over C: [1.5, 2.5, 3.5, 1.75] → lowest 1.5
    assert s.lowest_window_confidence == pytest.approx(1.5, rel=1e-6)
    assert (s.window, s.rho, s.k) == (2, 0.4, 2)
    # top ceil(0.4 * 5) = 2 entropies: 3.0 at position 4 (" down"), 2.0 at position 1 (" cat")
    assert [(f.position, f.token) for f in s.forks] == [(4, " down"), (1, " cat")]
    assert [f.entropy for f in s.forks] == pytest.approx([3.0, 2.0])
    assert isinstance(s.forks[0], ForkToken) and tuple(s.forks[0])[:2] == (4, " down")


def test_summarize_window_longer_than_trace_uses_mean_and_top_forks_limits():
    s = summarize(hand_trace(), window=3, rho=0.4, top_forks=1)
    # windows of 3 over C = [2, 1, 4, 3, 0.5]: [7/3, 8/3, 2.5] → lowest 7/3
    assert s.lowest_window_confidence == pytest.approx(7 / 3, rel=1e-6)
    assert [f.position for f in s.forks] == [4]
    long = summarize(hand_trace(), window=10, rho=0.2)
    assert long.lowest_window_confidence == pytest.approx(2.1, rel=1e-6)  # shorter → mean
    assert [f.position for f in long.forks] == [4]  # ceil(0.2 * 5) = 1 token


def test_visible_token():
    assert visible_token("a\tb\n", keep_layout=True) == "a⇥\tb↵\n"
    assert visible_token("a\tb\n") == "a⇥b↵"
    assert visible_token("\x1b[31m\r\x00") == "\\x1b[31m\\x0d\\x00"
    assert visible_token("\x9b\x7f\u202e\u2066\u2028 x") == "\\x9b\\x7f\\u202e\\u2066\\u2028 x"
    assert visible_token("") == "∅" and visible_token("  héllo 🙂") == "  héllo 🙂"


def test_summarize_edge_cases():
    empty = summarize(make_trace((), [], []))
    assert empty.n_tokens == 0 and empty.forks == ()
    assert math.isnan(empty.mean_entropy) and math.isnan(empty.perplexity)
    no_topk = make_trace(
        ("a", "b"), [1.0, 2.0], [0.5, 0.5], topk_ids=[[], []], topk_logprobs=[[], []]
    )
    s = summarize(no_topk)
    assert s.k == 0 and math.isnan(s.mean_confidence) and s.mean_entropy == pytest.approx(1.5)
    assert json.dumps(summarize(hand_trace()).to_dict())  # JSON-friendly
    # a -inf top-k logprob (cut by top-p in processed logits) → +inf confidence → skipped:
    # C = [2, inf, 1] → mean over finite = 1.5, windows of 2 over [2, 1] → lowest 1.5
    cut = make_trace(
        ("a", "b", "c"),
        [1.0, 0.0, 2.0],
        [0.5, 1.0, 0.5],
        topk_logprobs=[[-1.0, -3.0], [0.0, -math.inf], [-0.5, -1.5]],
    )
    s = summarize(cut, window=2)
    assert (s.mean_confidence, s.lowest_window_confidence) == pytest.approx((1.5, 1.5))
    _, data = _data(render_html([cut]))
    assert data[0][1][4][1][1] == "0.0%"  # exp(-inf)
    for bad in ({"window": 0}, {"rho": 0.0}, {"rho": 1.5}, {"top_forks": -1}):
        with pytest.raises(EntrolabError):
            summarize(hand_trace(), **bad)


# ---- HTML --------------------------------------------------------------------------------------


class _Spans(HTMLParser):
    """Collects token spans (class 'tok'), their text, and polylines of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[dict[str, str]] = []
        self.texts: list[str] = []
        self.polylines: list[str] = []
        self.svg_ids: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and "tok" in (a.get("class") or "").split():
            self.tokens.append(a)
            self.texts.append("")
            self._depth = 1
        elif tag == "span" and self._depth:
            self._depth += 1
        if tag == "polyline" and a.get("class") == "line":  # the entropy curve(s)
            self.polylines.append(a["points"])
        if tag == "svg":
            self.svg_ids.append(a.get("id", ""))

    def handle_endtag(self, tag):
        if tag == "span" and self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.texts[-1] += data


def _parse(page: str) -> _Spans:
    parser = _Spans()
    parser.feed(page)
    return parser


def _data(page: str):
    m = re.search(r'<script type="application/json" id="entrolab-data">(.*?)</script>', page, re.S)
    assert m, "tooltip data block missing"
    return m.group(1), json.loads(m.group(1))


def test_html_escapes_model_text():
    page = render_html([hostile_trace()], meta={"model": "<i>m</i>"})
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert '<script>alert("prompt")' not in page and '<b>"hi"' not in page and "<i>m" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert " said &quot;hi&quot;" in page and " &amp; " in page
    assert "&lt;img src=x onerror=alert(3)&gt;" in page
    assert page.count("<script") == 2  # our JSON block and our code, nothing from the model
    assert page.count("</script>") == 2
    # the parsed token texts are exactly the model's pieces (newline shown as ↵ + newline)
    spans = _parse(page)
    expected = [t.replace("\n", "↵\n").replace("\u2028", "\\u2028") for t in HOSTILE_TOKENS]
    expected[-1] = "\\x1b[2J\\u202e"  # control characters made visible
    assert spans.texts == expected


def test_html_one_span_per_token_and_newlines_visible():
    traces = [hostile_trace(0), hand_trace(sample_index=1)]
    page = render_html(traces)
    spans = _parse(page)
    assert len(spans.tokens) == len(HOSTILE_TOKENS) + 5
    assert [int(a["data-i"]) for a in spans.tokens] == [*range(11), *range(5)]
    assert all(a.get("tabindex") == "0" for a in spans.tokens)  # keyboard focus shows tooltips
    assert '<span class="ws">↵</span>\n</span>' in page  # ↵ marker, then a real line break
    # high-entropy token red-ish, low-entropy green-ish background
    bg = [re.search(r"background:#(..)(..)(..)", a["style"]).groups() for a in spans.tokens]
    r, g, _ = (int(x, 16) for x in bg[7])  # entropy 3.4 ≥ 3 nats
    assert r > 200 and g < 140
    r, g, _ = (int(x, 16) for x in bg[3])  # entropy 0.05
    assert g > r
    # default rho=0.2: ceil(0.2 * 11) + ceil(0.2 * 5) = 4 forking tokens, underlined in the heatmap
    assert page.count('class="tok fork"') == 4


def test_html_tooltip_data():
    page = render_html([hostile_trace()], id_to_text={7: "<alt & co>"})
    raw, data = _data(page)
    assert "<" not in raw and ">" not in raw and "&" not in raw
    entropy, prob, logprob, rank, alts = data[0][1]
    assert (entropy, prob, rank) == ("1.400", "25.0%", "1")  # p = exp(ln 0.25)
    assert logprob == f"{math.log(0.25):.3f}"
    # alternatives: id 7 from id_to_text; id 101 falls back to the trace's own token text
    assert alts == [["<alt & co>", "50.0%", False], [' said "hi"', "25.0%", True]]
    assert data[0][5][4][0][0] == "\\u2028" and data[0][3][4][0][0] == "↵"  # made visible


def test_script_json_escapes_everything_that_could_end_the_script():
    obj = {"a": "</script><!-- & \u2028\u2029 >"}
    text = report_html.script_json(obj)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == obj


def test_html_id_to_text_callable_and_fallback():
    calls = []

    def decode(ids):
        calls.append(list(ids))
        return [f"t{i}" if i != 7 else "seven" for i in ids]

    _, data = _data(render_html([hand_trace()], id_to_text=decode))
    assert calls == [[7, 200, 201, 202, 203, 204]]  # once, sorted unique ids
    assert data[0][0][4][1][0] == "seven"
    _, data = _data(render_html([hand_trace()]))
    assert data[0][0][4][1][0] == "#7"  # never chosen, no decoder → #<id>
    assert data[0][0][4][0][0] == "The"  # chosen token's own text
    with pytest.raises(EntrolabError):
        render_html([hand_trace()], id_to_text=lambda ids: ["x"])


def test_html_svg_polyline_maps_entropy():
    trace = hand_trace()
    spans = _parse(render_html([trace]))
    assert len(spans.polylines) == 1
    points = [tuple(map(float, p.split(","))) for p in spans.polylines[0].split()]
    assert len(points) == len(trace)
    h = report_html
    width = h.PLOT_WIDTH - h.PLOT_LEFT - h.PLOT_RIGHT
    height = h.PLOT_HEIGHT - h.PLOT_TOP - h.PLOT_BOTTOM
    y_max = 3.0  # ceil(max entropy 3.0)
    for i, ((x, y), e) in enumerate(zip(points, [0.5, 2.0, 0.1, 1.5, 3.0], strict=True)):
        assert x == pytest.approx(h.PLOT_LEFT + i * width / 4, abs=0.051)
        assert y == pytest.approx(h.PLOT_TOP + height * (1 - e / y_max), abs=0.051)
    assert "entropy (nats)" in render_html([trace])


def test_html_nan_entropy_breaks_line():
    trace = make_trace(("a", "b", "c", "d"), [1.0, math.nan, 2.0, 0.5], [0.5] * 4)
    page = render_html([trace])
    spans = _parse(page)
    assert [len(p.split()) for p in spans.polylines] == [1, 2]
    assert len(spans.tokens) == 4


def test_html_is_standalone_and_grouped_side_by_side():
    traces = [hand_trace(sample_index=i) for i in range(3)]
    traces.append(hand_trace(prompt="second prompt", prompt_index=1))
    page = render_html(traces, title="t & t", meta={"samples": 3, "cfg": {"T": 0.7}})
    for needle in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert needle not in page
    assert "Content-Security-Policy" in page and "default-src &#x27;none&#x27;" not in page
    assert "<title>t &amp; t</title>" in page and "{&quot;T&quot;: 0.7}" in page
    assert page.count("<section>") == 2 and page.count('class="grid"') == 2
    assert page.count('class="card"') == 4 and "display:grid" in page
    assert _parse(page).svg_ids == ["plot-0", "plot-1", "plot-2", "plot-3"]


def test_html_rejects_mismatched_summaries_and_handles_empty():
    with pytest.raises(EntrolabError):
        render_html([hand_trace()], [])
    page = render_html([make_trace((), [], [])])
    assert len(_parse(page).tokens) == 0 and "</html>" in page
    assert "no traces" in render_html([])


def test_write_html_atomic(tmp_path):
    out = write_html(tmp_path / "r.html", [hand_trace()], title="x")
    assert out == tmp_path / "r.html"
    assert out.read_text(encoding="utf-8") == render_html([hand_trace()], title="x")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left behind
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, like a normal file


# ---- terminal ----------------------------------------------------------------------------------


def _console(width: int) -> Console:
    return Console(record=True, width=width, color_system="truecolor", force_terminal=True)


def test_terminal_prints_tokens_colours_and_literal_markup():
    console = _console(100)
    trace = hostile_trace()
    print_traces([trace], console=console)
    html_out = console.export_html(inline_styles=True, clear=False)
    text = console.export_text()
    # markup in model text printed literally, in the heatmap line itself
    assert "[bold]x[/bold]\\u2028</script> <img src=x onerror=alert(3)>↵" in text
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b[2J\\u202e" in text
    assert 'Say <b>"hi"</b> & <script>alert("prompt")</script>' in text
    assert "<script>alert(1)</script>" in text and "↵" in text
    assert "entropy (nats):" in text and "mean H " in text and "forks (top ρ=0.2)" in text
    # the 3.4-nat token is red, the 0.05-nat newline token green (and dimmed)
    assert token_style(3.4).color.get_truecolor().hex == "#e62d2d"
    assert token_style(0.05).dim and not token_style(1.0).dim
    colour = {}
    for hexcol, body in re.findall(
        r'<span style="color: #([0-9a-f]{6})[^>]*>([^<]*)</span>', html_out
    ):
        colour.setdefault(body, tuple(int(hexcol[i : i + 2], 16) for i in (0, 2, 4)))
    assert colour[" &lt;img src=x onerror=alert(3)&gt;"] == (230, 45, 45)
    r, g, b = colour["↵"]
    assert g > r + 40 and g > b + 40


def test_terminal_summary_numbers():
    console = _console(100)
    print_traces([hand_trace()], [summarize(hand_trace(), window=2, rho=0.4)], console=console)
    text = console.export_text()
    assert "5 tokens · mean H 1.420 nats · ppl 2.639" in text
    assert "lowest-window conf 1.500 nats (w=2, k=2)" in text
    assert "−mean log-probability of the top-k tokens, in nats" in text
    assert "' down'@4 3.00 ' cat'@1 2.00" in text


def test_terminal_side_by_side_when_wide():
    traces = [hand_trace(sample_index=i) for i in range(3)]
    wide = _console(150)
    print_traces(traces, console=wide)
    header = [line for line in wide.export_text().splitlines() if "sample 0" in line]
    assert len(header) == 1 and "sample 1" in header[0] and "sample 2" in header[0]
    narrow = _console(80)  # < 3 * 36 columns → one after another
    print_traces(traces, console=narrow)
    lines = narrow.export_text().splitlines()
    assert [line for line in lines if line.startswith("— sample")] == [
        "— sample 0 —",
        "— sample 1 —",
        "— sample 2 —",
    ]
    five = _console(250)  # more than 4 samples → one after another
    print_traces([hand_trace(sample_index=i) for i in range(5)], console=five)
    assert sum(line.startswith("— sample") for line in five.export_text().splitlines()) == 5
    with pytest.raises(EntrolabError):
        print_traces(traces, [], console=wide)
