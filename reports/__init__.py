"""blackstart.reports: Chaos Toolkit journals as self-contained HTML pages and JUnit XML.

- :func:`load_journal` reads any Chaos Toolkit journal (with or without
  blackstart's ``extensions`` entry) into a :class:`Journal`;
- :func:`write_report` writes one self-contained HTML page for a journal;
- :func:`write_index` writes the index page of several runs (a game day);
- :func:`write_junit` writes JUnit XML, one test case per experiment.
"""

from __future__ import annotations

from blackstart.reports.html import render_report, write_report
from blackstart.reports.index import render_index, write_index
from blackstart.reports.journal import Journal, JournalError
from blackstart.reports.journal_loading import load_journal, parse_journal
from blackstart.reports.junit import junit_xml, write_junit
from blackstart.reports.runs import ExperimentRun

__all__ = [
    "ExperimentRun",
    "Journal",
    "JournalError",
    "junit_xml",
    "load_journal",
    "parse_journal",
    "render_index",
    "render_report",
    "write_index",
    "write_junit",
    "write_report",
]
