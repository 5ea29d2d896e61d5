"""Reports in a real browser: Debian's Chromium, headless, with and without JavaScript.

Renders the blackstart fixture journal (metrics, faults, rescue plans) and a
plain Chaos Toolkit journal, opens them from disk, and checks what a person
would see: no console errors, no request leaving the file, the verdict and
the charts drawn. Screenshots go to the test's temporary folder; the README's
picture comes from a real game day (`make screenshot`, docs/make_screenshot.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blackstart.reports import ExperimentRun, load_journal, write_index, write_report

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
JOURNALS = REPO / "tests" / "fixtures" / "journals"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package (.ci/bootstrap does)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    runs = []
    for name, expected in (("blackstart-storm", "deviated"), ("flag-deviates", "completed")):
        journal = load_journal(JOURNALS / f"{name}.json")
        shutil.copy(JOURNALS / f"{name}.json", out / f"{name}.json")
        write_report(
            journal,
            out / f"{name}.html",
            expected=expected,
            journal_href=f"{name}.json",
            index_href="index.html",
        )
        runs.append(
            ExperimentRun(
                name=name,
                outcome=journal.outcome,
                expected=expected,
                journal=journal,
                duration=journal.duration,
                report_href=f"{name}.html",
                journal_href=f"{name}.json",
            )
        )
    write_index(out / "index.html", runs, title="Game day: browser test")
    return out


def open_page(browser: Any, path: Path, javascript: bool) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(
        java_script_enabled=javascript, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on(
        "request",
        lambda r: (
            problems.append(f"request left the file: {r.url}")
            if not r.url.startswith("file://")
            else None
        ),
    )
    page.goto(path.as_uri(), wait_until="load")
    return context, page, problems


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_the_report_shows_verdict_and_charts_without_errors(
    browser: Any, site: Path, javascript: bool, tmp_path: Path
) -> None:
    context, page, problems = open_page(browser, site / "blackstart-storm.html", javascript)
    try:
        badge = page.locator("#verdict .badge")
        assert badge.is_visible()
        assert badge.inner_text() == "Deviated"
        assert "as expected (deviated)" in page.locator("#verdict").inner_text()
        charts = page.locator("svg.chart")
        assert charts.count() == 8
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box is not None and box["width"] > 600 and box["height"] > 100
        # charts are drawn, not empty boxes: lines and shaded fault windows are there
        assert page.locator("#chart-metric-dns-success-ratio path").count() > 10
        shot = tmp_path / f"report-{'js' if javascript else 'no-js'}.png"
        top = {"x": 0, "y": 0, "width": 1280, "height": 1950}
        page.screenshot(path=str(shot), full_page=True, clip=top)
        assert shot.stat().st_size > 50_000
        # folded tracebacks and outputs open without JavaScript
        details = page.locator("details").first
        details.locator(":scope > summary").click()
        assert details.get_attribute("open") is not None
        assert problems == []
    finally:
        context.close()


def test_a_plain_chaos_toolkit_journal_reads_well_too(browser: Any, site: Path) -> None:
    context, page, problems = open_page(browser, site / "flag-deviates.html", javascript=False)
    try:
        assert page.locator("#verdict .badge").inner_text() == "Deviated"
        assert "expected completed" in page.locator("#verdict").inner_text()
        assert page.locator("svg.chart").count() == 1  # the timeline; no metrics in this journal
        row = page.locator("tr", has_text="flag-exists").first
        assert "✗" in row.inner_text() and "false" in row.inner_text()
        assert problems == []
    finally:
        context.close()


def test_the_index_links_to_the_pages_and_journals(browser: Any, site: Path) -> None:
    context, page, problems = open_page(browser, site / "index.html", javascript=False)
    try:
        assert page.locator("#verdict .badge").inner_text() == "Not as expected"
        page.locator("a", has_text="blackstart-storm").first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith("/blackstart-storm.html")
        assert page.locator("svg.chart").count() == 8
        page.go_back()
        journal_link = page.locator("a[href='flag-deviates.json']")
        assert journal_link.count() == 1
        assert problems == []
    finally:
        context.close()
