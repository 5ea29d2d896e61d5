"""One experiment's run as a suite sees it: what was expected, how it ended, where its files are.

The game-day runner makes one :class:`ExperimentRun` per suite entry and hands
the list to :mod:`blackstart.reports.index` (the index page) and
:mod:`blackstart.reports.junit` (JUnit XML); ``blackstart report`` makes them
from journals given on the command line, expecting ``completed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from blackstart.reports.journal import Deviation, Journal

__all__ = ["EXPECTABLE", "RUNNER_OUTCOMES", "ExperimentRun"]

#: Outcomes a suite entry may expect.
EXPECTABLE = ("completed", "deviated")
#: Outcomes only the runner knows: the run hit its timeout, or never produced a journal,
#: or was not started because the game day was interrupted first.
RUNNER_OUTCOMES = ("timeout", "error", "skipped")


@dataclass(frozen=True)
class ExperimentRun:
    """One experiment of a suite, run (or not): outcome, expectation and files.

    ``outcome`` is the journal's outcome (see
    :data:`blackstart.reports.journal.OUTCOMES`) or one of
    :data:`RUNNER_OUTCOMES`. The ``*_href`` fields are links relative to the
    index page.
    """

    name: str
    outcome: str
    expected: str = "completed"
    journal: Journal | None = None
    duration: float | None = None
    error: str = ""
    experiment_path: str = ""
    report_href: str | None = None
    journal_href: str | None = None
    log_href: str | None = None

    @property
    def as_expected(self) -> bool:
        return self.outcome == self.expected

    @property
    def deviations(self) -> list[Deviation]:
        return self.journal.deviations if self.journal else []

    @property
    def title(self) -> str:
        return self.journal.title if self.journal else self.name

    @property
    def kind(self) -> str:
        """How a CI system should count it: ``passed``, ``failure``, ``error`` or ``skipped``.

        A failure is a run that ended cleanly but not as expected (deviated
        when it should have held, or held when it should have deviated). An
        error is a run that did not get to an answer: failed, aborted,
        interrupted, not steady to begin with, timed out, no journal.
        """
        if self.as_expected:
            return "passed"
        if self.outcome == "skipped":
            return "skipped"
        if self.outcome in EXPECTABLE:
            return "failure"
        return "error"

    @property
    def summary(self) -> str:
        """Why it ended as it did, in one line."""
        if self.error:
            return self.error
        if self.outcome == "completed" and self.expected == "deviated":
            return (
                "the steady state held, but this experiment is expected to deviate "
                "(it demonstrates a known weakness): has the weakness been fixed?"
            )
        if self.journal is not None:
            return self.journal.headline
        return self.outcome
