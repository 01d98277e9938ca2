"""The report figures as a browser shows them: inside the page width, every label inside its
figure (nothing clipped), no script errors; the pareto and compare-samplers pages end to end.

Needs Debian's Chromium and Python ``playwright`` (see tests/test_report_browser.py); skipped
when either is missing. Set ``ENTROLAB_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import numpy as np
import pytest

from entrolab.evaluation.figures import reliability_svg, risk_coverage_svg
from entrolab.evaluation.rundir import RunDir
from entrolab.evaluation.sampler_compare import CompareResults
from entrolab.evaluation.sampler_report import render_compare_html
from entrolab.inference.pareto_report import write_pareto_report
from test_decoding_compare import hand_rows
from test_report_browser import CHROMIUM, _keep, browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser
assert CHROMIUM  # imported with the fixture

#: every <svg> figure: its box, and the boxes of its texts that stick out of it by > 1 px
_CLIPPED = """() => [...document.querySelectorAll('svg')].map(svg => {
  const b = svg.getBoundingClientRect();
  const out = [...svg.querySelectorAll('text')].filter(t => {
    const r = t.getBoundingClientRect();
    return r.width > 0 && (r.left < b.left - 1 || r.right > b.right + 1 ||
                           r.top < b.top - 1 || r.bottom > b.bottom + 1);
  }).map(t => t.textContent);
  return {width: b.width, height: b.height, clipped: out};
})"""


def _check_page(browser, path, shot_dir, min_figures: int = 1):  # noqa: F811
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    figures = page.evaluate(_CLIPPED)
    width = page.evaluate("document.scrollingElement.scrollWidth")
    shot = shot_dir / f"{path.stem}.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    page.close()
    assert not errors
    assert width <= 1000, "the page scrolls sideways at 1000 px"
    assert len(figures) >= min_figures
    for fig in figures:
        assert fig["width"] > 100 and fig["height"] > 100
        assert fig["clipped"] == [], f"labels cut off at the figure's edge: {fig['clipped']}"
    return figures


def test_figure_svgs_fit_and_clip_no_label(browser, tmp_path):  # noqa: F811
    rng = np.random.default_rng(0)
    y = (rng.random(50) < 0.5).astype(int)
    conf = {f"estimator_{i}": np.clip(0.6 * y + 0.5 * rng.random(50), 0, 1) for i in range(4)}
    body = reliability_svg(conf, y) + risk_coverage_svg({k: -v for k, v in conf.items()}, y)
    page = tmp_path / "figures.html"
    page.write_text(f"<!DOCTYPE html><html><body>{body}</body></html>", encoding="utf-8")
    _check_page(browser, page, tmp_path, min_figures=2)


def test_compare_and_pareto_pages(browser, tmp_path):  # noqa: F811
    results = CompareResults(
        {
            "task": "arithmetic",
            "n": 2,
            "samples": 3,
            "model": "m",
            "samplers": ["top_h:alpha=0.4"],
            "temperatures": [1.0],
        },
        hand_rows(),
    )
    compare = tmp_path / "compare.html"
    compare.write_text(render_compare_html(results), encoding="utf-8")
    _check_page(browser, compare, tmp_path)

    rd = RunDir(tmp_path / "pareto").open({"task": {"spec": "arithmetic"}, "n": 4})
    for name, hits, tokens in (("majority", (0, 2), 10), ("deepconf-online", (0, 1, 2), 6)):
        rd.append(
            [
                {
                    "strategy": name,
                    "budget": b,
                    "params": {},
                    "item_id": f"i{i}",
                    "answer": "1",
                    "correct": i in hits,
                    "generated_tokens": tokens * b,
                    "prompt_tokens": 0,
                    "num_traces": b,
                    "meta": {},
                }
                for i in range(4)
                for b in (2, 4)
            ]
        )
    write_pareto_report(rd.path, title="arithmetic")
    _check_page(browser, rd.path / "report.html", tmp_path)
