"""The HTML report in a real headless Chromium: no errors, model <script> inert, tooltips work.

Needs Debian's Chromium (``apt-get install -y chromium``) and Python ``playwright`` (its wheel
ships the driver; no ``playwright install``). Skipped when either is missing. Set
``ENTROLAB_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from entrolab.report import write_html
from report_fixtures import hand_trace, hostile_trace

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs the Python playwright package"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def _keep(path: Path) -> None:
    out = os.environ.get("ENTROLAB_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)


def test_report_in_chromium(browser, tmp_path):
    traces = [hostile_trace(0), hand_trace(sample_index=1, prompt=hostile_trace().prompt)]
    page_path = write_html(
        tmp_path / "report.html", traces, meta={"model": "tiny-test"}, id_to_text={7: "<alt>"}
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console_errors, page_errors, dialogs, requests = [], [], [], []
    page.on("console", lambda m: m.type in ("error", "warning") and console_errors.append(m.text))
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")

    body = page.inner_text("body")
    assert "<script>alert(1)</script>" in body  # the model's script is shown as text
    assert 'Say <b>"hi"</b> & <script>alert("prompt")</script>' in body
    assert page.locator(".tok").count() == len(traces[0]) + len(traces[1])
    assert page.locator("img").count() == 0  # the model's <img onerror> never became an element

    # hover a token: the tooltip shows its entropy, probability, rank and alternatives
    page.locator('.heat[data-t="0"] .tok[data-i="1"]').hover()
    tip = page.locator("#tip")
    assert tip.is_visible()
    tip_text = tip.inner_text()
    assert "entropy 1.400 nats" in tip_text and "p 25.0%" in tip_text and "rank 1" in tip_text
    assert "<alt>" in tip_text and "50.0%" in tip_text
    assert page.locator("#plot-0 .cursor").get_attribute("visibility") == "visible"
    shot = tmp_path / "report_hover.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot)
    assert shot.stat().st_size > 20_000

    # keyboard: focusing a token shows its tooltip, Escape hides it
    page.mouse.move(0, 0)
    page.locator('.heat[data-t="1"] .tok[data-i="4"]').focus()
    assert tip.is_visible() and "entropy 3.000 nats" in tip.inner_text()
    page.keyboard.press("Escape")
    assert not tip.is_visible()

    assert page_errors == [] and console_errors == [] and dialogs == []
    assert requests == [page_path.as_uri()]  # nothing fetched besides the page itself
    page.close()
