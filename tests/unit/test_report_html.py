"""The HTML page of a journal: self-contained, and showing what the journal says."""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from blackstart.reports.html import format_duration, render_report, write_report
from blackstart.reports.journal_loading import load_journal, parse_journal

JOURNALS = Path(__file__).resolve().parents[1] / "fixtures" / "journals"
ALL = sorted(p.stem for p in JOURNALS.glob("*.json"))
VOID = {"meta", "br", "link", "img", "hr", "input", "path", "use", "rect", "stop", "circle"}


class Page(HTMLParser):
    """Tags, attributes and text of a page, and whether its tags nest properly."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.mismatched: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.mismatched.append(f"</{tag}> closes <{self.stack[-1] if self.stack else ''}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def with_attr(self, name: str) -> list[str]:
        return [a[name] or "" for _, a in self.attrs if name in a]


def page_of(name: str, **kwargs: object) -> Page:
    return Page(render_report(load_journal(JOURNALS / f"{name}.json"), **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_every_page_is_self_contained_and_well_formed(name: str) -> None:
    page = page_of(name)
    assert page.tags["script"] == 0
    assert page.tags["link"] == 0 and page.tags["img"] == 0 and page.tags["iframe"] == 0
    fetched = page.with_attr("src") + [h for h in page.with_attr("href") if "://" in h]
    assert fetched == []
    assert page.mismatched == [] and page.stack == []
    ids = page.with_attr("id")
    assert [i for i, n in Counter(ids).items() if n > 1] == []  # several SVGs, no id clashes
    assert "@import" not in page.all_text and "url(http" not in page.all_text


@pytest.mark.parametrize(
    ("name", "badge"),
    [
        ("probe-holds", "Steady state held"),
        ("flag-deviates", "Deviated"),
        ("hypothesis-raises", "Failed"),
        ("interrupted", "Interrupted"),
        ("not-steady", "Not steady before"),
    ],
)
def test_the_verdict_is_at_the_top(name: str, badge: str) -> None:
    html = render_report(load_journal(JOURNALS / f"{name}.json"))
    verdict = html.index('id="verdict"')
    assert html.index(badge, verdict) < html.index('id="hypothesis"')


def test_each_probe_shows_its_tolerance_and_observed_values() -> None:
    page = page_of("flag-deviates")
    text = page.all_text
    assert "flag-exists python os.path.exists == true ✓ true ✗ false" in text
    assert "cpu-count python os.cpu_count in [1, 4096] ✓" in text


def hypothesis_text(html: str) -> str:
    """The text of the hypothesis section only."""
    section = html[html.index('id="hypothesis"') :]
    return Page(section[: section.index("<h2", 10)]).all_text


def test_a_continuous_hypothesis_gets_a_during_column() -> None:
    """Each probe's During cell counts the runs during the method, as the journal has them."""
    raw = json.loads((JOURNALS / "probe-holds.json").read_text())
    runs = Counter(
        p["activity"]["name"] for h in raw["steady_states"]["during"] for p in h["probes"]
    )
    assert runs == {"python-is-3": 3, "tmp-is-a-folder": 3, "mean-of-3-and-5": 3}
    text = hypothesis_text(render_report(load_journal(JOURNALS / "probe-holds.json")))
    assert "Probe Tolerance Before the method During After the method" in text
    assert (
        "python-is-3 python platform.python_version matches /^3\\./ ✓ 3.11.7 ✓ 3.11.7 3 of 3 met"
        in text
    )
    assert "tmp-is-a-folder python os.path.isdir == true ✓ true ✓ true 3 of 3 met ✓ true" in text


def test_a_miss_during_the_method_shows_in_the_during_column() -> None:
    raw = json.loads((JOURNALS / "probe-holds.json").read_text())
    second = raw["steady_states"]["during"][1]["probes"][1]  # tmp-is-a-folder, 2nd run
    second.update(output=False, tolerance_met=False)
    text = hypothesis_text(render_report(parse_journal(raw)))
    assert (
        "tmp-is-a-folder python os.path.isdir == true ✓ true ✗ false 2 of 3 met (first miss" in text
    )
    assert (
        "python-is-3 python platform.python_version matches /^3\\./ ✓ 3.11.7 ✓ 3.11.7 3 of 3 met"
        in text
    )


def test_a_hypothesis_checked_only_before_and_after_has_no_during_column() -> None:
    text = hypothesis_text(render_report(load_journal(JOURNALS / "flag-deviates.json")))
    assert "Probe Tolerance Before the method After the method" in text
    assert "During" not in text


def test_errors_are_listed_with_tracebacks_folded() -> None:
    html = render_report(load_journal(JOURNALS / "hypothesis-raises.json"))
    errors = html[html.index('id="errors"') :]
    assert "flag-size" in errors
    assert "<details><summary>traceback</summary><pre>Traceback (most recent call last)" in errors


def test_the_blackstart_page_has_the_timeline_metrics_plans_and_environment() -> None:
    page = page_of("blackstart-storm", expected="deviated")
    charts = [a for t, a in page.attrs if t == "svg" and a.get("class") == "chart"]
    assert [c["id"] for c in charts] == [
        "chart-timeline",
        "chart-metric-apiserver-p99-seconds",
        "chart-metric-apiserver-429-per-second",
        "chart-metric-dns-success-ratio",
        "chart-metric-dns-p99-seconds",
        "chart-metric-nodes-ready",
        "chart-metric-nodes-cordoned",
        "chart-metric-xid-to-cordon-seconds",
    ]
    assert all(c.get("viewbox") for c in charts)  # scalable: sized by CSS
    text = page.all_text
    assert "as expected (deviated)" in text
    assert "telemetry-storm start-telemetry-storm +15.00 s +75.00 s" in text
    assert "xid-79-gpu-07 inject-xid-79 +50.00 s never rolled back" in text
    assert "gpu-07-xid79-1 Replaced" in text
    assert "Cordoned 2026-11-24 08:30:51 UTC +51.80 s" in text
    assert "storm guard: maximum concurrent plans reached" in text
    assert "kubernetes v1.33.13" in text and "coredns v1.12.4" in text
    assert "API server p99 latency: min 0.021, median" in text
    assert "3 unavailable" in text


def test_matplotlib_draws_the_charts_with_the_fault_windows() -> None:
    html = render_report(load_journal(JOURNALS / "blackstart-storm.json"))
    start = html.index('id="chart-metric-dns-success-ratio"')
    svg = html[start : html.index("</svg>", start)]
    assert "Matplotlib" in svg or "matplotlib" in svg
    assert "telemetry-storm" in svg and "coredns-restart" in svg  # labelled shading


def test_a_journal_without_the_extension_says_so_instead_of_charts() -> None:
    page = page_of("probe-holds")
    assert "it was not written with blackstart's controls" in page.all_text
    assert [a["id"] for t, a in page.attrs if t == "svg"] == ["chart-timeline"]


def test_expected_and_actual_outcomes_differ_visibly() -> None:
    text = page_of("flag-deviates", expected="completed").all_text
    assert "expected completed" in text


def test_text_from_the_journal_is_escaped() -> None:
    data = json.loads((JOURNALS / "probe-holds.json").read_text())
    data["experiment"]["title"] = "<script>alert(1)</script>"
    data["steady_states"]["before"]["probes"][0]["output"] = "<img src=x onerror=alert(1)>"
    html = render_report(parse_journal(data, source="evil.json"))
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_partial_journal_renders_and_lists_what_was_left_out() -> None:
    data = json.loads((JOURNALS / "blackstart-storm.json").read_text())
    del data["end"], data["duration"], data["steady_states"]["after"]
    data["extensions"][0]["metrics"]["series"][2]["points"] = "broken"
    text = Page(render_report(parse_journal(data, source="partial.json"))).all_text
    assert "This journal is incomplete or partly malformed" in text
    assert "metrics.series[2].points is a string, not a list" in text
    assert "not run" in text  # the after column


def test_write_report_creates_folders(tmp_path: Path) -> None:
    path = write_report(
        load_journal(JOURNALS / "interrupted.json"),
        tmp_path / "a" / "b" / "report.html",
        journal_href="journal.json",
        index_href="../index.html",
    )
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert 'href="../index.html"' in html and 'href="journal.json"' in html


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.0004, "0.4 ms"), (2.5, "2.50 s"), (42.0, "42.0 s"), (125, "2 min 05 s")],
)
def test_durations_read_naturally(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text
