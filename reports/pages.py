"""Pages for journals named on the command line (``blackstart report``).

Where each page goes:

- one journal, no ``-o``: beside the journal, ``<journal>.html``;
- one journal, ``-o FILE.html``: that file; ``-o DIR`` (an existing folder or
  a path ending in ``/``): ``DIR/<journal>.html``;
- several journals, ``-o DIR``: one page each in ``DIR`` plus ``DIR/index.html``
  linking the pages and the raw journals; without ``-o``: beside each journal.

Every journal is read before anything is written, so one unreadable file
stops the command with a message naming it and nothing half-written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from blackstart.reports.html import write_report
from blackstart.reports.index import write_index
from blackstart.reports.journal import Journal, JournalError
from blackstart.reports.journal_loading import load_journal
from blackstart.reports.junit import write_junit
from blackstart.reports.runs import ExperimentRun

__all__ = ["ReportError", "page_names", "render_journals"]


class ReportError(ValueError):
    """A journal could not be read or an output path cannot be used; the message says which."""


def page_names(paths: Sequence[Path]) -> list[str]:
    """A distinct page name per journal: its file name, else ``<folder>-<file name>``.

    Game-day folders hold ``<experiment>/journal.json``, so the folder is what
    tells them apart.
    """
    stems = [p.stem for p in paths]
    names = []
    for path, stem in zip(paths, stems, strict=True):
        folder = path.resolve().parent.name
        if stems.count(stem) > 1 and folder:
            stem = folder if stem == "journal" else f"{folder}-{stem}"
        names.append(stem)
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


def _href(target: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix()


def render_journals(
    paths: Sequence[Path],
    output: Path | None = None,
    junit_path: Path | None = None,
    title: str = "Chaos Toolkit journals",
) -> list[str]:
    """Write the pages (and index, JUnit) for ``paths``; returns one line per file written."""
    journals: list[Journal] = []
    problems: list[str] = []
    for path in paths:
        try:
            journals.append(load_journal(path))
        except JournalError as err:
            problems.append(str(err))
    if problems:
        raise ReportError("\n".join(problems))

    several = len(paths) > 1
    if output is not None and several and output.exists() and not output.is_dir():
        raise ReportError(f"{output}: several journals need a folder for -o, this is a file")
    to_dir = output is not None and (
        several or output.is_dir() or str(output).endswith(("/", os.sep))
    )
    if output is not None and not to_dir and output.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{output}: the page is HTML; name the file .html (or pass a folder/)")

    names = page_names(list(paths))
    lines: list[str] = []
    runs: list[ExperimentRun] = []
    for path, journal, name in zip(paths, journals, names, strict=True):
        if output is None:
            page = path.with_suffix(".html")
            if page == path:
                raise ReportError(f"{path}: a journal is JSON; this one is named .html")
        elif to_dir:
            page = output / f"{name}.html"
        else:
            page = output
        started = time.perf_counter()
        write_report(journal, page, journal_href=_href(path, page.parent))
        took = time.perf_counter() - started
        size = page.stat().st_size
        lines.append(f"{page}  ({journal.outcome}, {size / 1024:.0f} kB, rendered in {took:.2f} s)")
        runs.append(
            ExperimentRun(
                name=name,
                outcome=journal.outcome,
                journal=journal,
                duration=journal.duration,
                report_href=_href(page, output) if to_dir and output else None,
                journal_href=_href(path, output) if to_dir and output else None,
            )
        )
    if to_dir and output is not None and several:
        index = write_index(
            output / "index.html",
            runs,
            title=title,
            junit_href=_href(junit_path, output) if junit_path else None,
        )
        lines.append(f"{index}  (index of {len(runs)} pages)")
    if junit_path is not None:
        write_junit(junit_path, runs, suite="journals")
        lines.append(f"{junit_path}  (JUnit XML, {len(runs)} test cases)")
    return lines
