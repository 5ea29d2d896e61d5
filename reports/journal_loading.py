"""Reading Chaos Toolkit journals into the :mod:`.journal` model.

Forgiving about what a journal lacks (every part that is missing or malformed
is skipped and named in :attr:`~.journal.Journal.problems`), strict about what
is not a journal at all (:class:`~.journal.JournalError` naming the file).
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blackstart.reports.extension import parse_extensions
from blackstart.reports.fields import as_list, json_type, number, text, time_field
from blackstart.reports.journal import (
    ActivityResult,
    Hypothesis,
    Journal,
    JournalError,
)

# Keys at least one of which every Chaos Toolkit journal has.
_JOURNAL_KEYS = ("experiment", "status", "steady_states", "run", "chaoslib-version")


def load_journal(path: str | Path) -> Journal:
    """Read the Chaos Toolkit journal at ``path``.

    Raises :class:`JournalError` (naming the file) when it cannot be read, is
    not JSON or is not a journal. Missing or malformed parts of a journal are
    not errors: they are listed in :attr:`Journal.problems`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JournalError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JournalError(f"{path}: is a folder, not a journal file") from None
    except UnicodeDecodeError as err:
        raise JournalError(f"{path}: not a text file ({err.reason}); expected JSON") from None
    except OSError as err:
        raise JournalError(f"{path}: cannot be read: {err.strerror or err}") from None
    if not text.strip():
        raise JournalError(f"{path}: the file is empty; a journal is a JSON object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise JournalError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "is it a complete journal written by `chaos run --journal-path`?"
        ) from None
    return parse_journal(data, source=str(path))


def parse_journal(data: Any, source: str = "<journal>") -> Journal:
    """Build a :class:`Journal` from an already decoded journal; see :func:`load_journal`."""
    if not isinstance(data, dict):
        raise JournalError(
            f"{source}: not a Chaos Toolkit journal: a journal is a JSON object, "
            f"this file holds {json_type(data)}"
        )
    if not any(key in data for key in _JOURNAL_KEYS):
        keys = ", ".join(sorted(str(k) for k in data)[:8]) or "none"
        hint = ""
        if "method" in data or "steady-state-hypothesis" in data:
            hint = "; it looks like an experiment: run it with `chaos run` and pass the journal"
        raise JournalError(
            f"{source}: not a Chaos Toolkit journal: it has none of the keys "
            f"{', '.join(repr(k) for k in _JOURNAL_KEYS)} (found: {keys}){hint}"
        )
    problems: list[str] = []
    experiment = data.get("experiment")
    if not isinstance(experiment, dict):
        problems.append("the journal has no 'experiment' object: title and hypothesis unknown")
        experiment = {}
    hypothesis = experiment.get("steady-state-hypothesis")
    if not isinstance(hypothesis, dict):
        hypothesis = {}
    declared = tuple(
        p
        for p in as_list(hypothesis.get("probes"), "experiment hypothesis probes", problems)
        if isinstance(p, dict)
    )

    status = data.get("status")
    if not isinstance(status, str):
        problems.append("the journal has no 'status': the run may not have finished")
        status = "unknown"
    deviated = data.get("deviated")
    if not isinstance(deviated, bool):
        if deviated is not None:
            problems.append(f"'deviated' is {json_type(deviated)}, not true/false")
        deviated = False

    states = data.get("steady_states")
    if states is not None and not isinstance(states, dict):
        problems.append(f"'steady_states' is {json_type(states)}, not an object; ignored")
        states = None
    states = states or {}
    before = _hypothesis(states.get("before"), "before", problems)
    after = _hypothesis(states.get("after"), "after", problems)
    during_raw = states.get("during")
    during: list[Hypothesis] = []
    for i, item in enumerate(as_list(during_raw, "steady_states.during", problems)):
        hyp = _hypothesis(item, "during", problems, where=f"steady_states.during[{i}]")
        if hyp is not None:
            during.append(hyp)

    method = _activities(data.get("run"), "method", "run", problems)
    rollbacks = _activities(data.get("rollbacks"), "rollback", "rollbacks", problems)

    extension, others = parse_extensions(data.get("extensions"), problems)
    duration = data.get("duration")
    return Journal(
        source=source,
        raw=data,
        title=text(experiment.get("title")) or Path(source).stem,
        description=text(experiment.get("description")),
        tags=tuple(str(t) for t in experiment.get("tags") or () if isinstance(t, str | int)),
        status=status,
        deviated=deviated,
        start=time_field(data.get("start"), "start", problems),
        end=time_field(data.get("end"), "end", problems),
        duration=number(duration),
        hypothesis_title=text(hypothesis.get("title")),
        declared_probes=declared,
        before=before,
        after=after,
        during=tuple(during),
        method=method,
        rollbacks=rollbacks,
        chaoslib_version=text(data.get("chaoslib-version")),
        platform=text(data.get("platform")),
        node=text(data.get("node")),
        extension=extension,
        other_extensions=others,
        problems=tuple(problems),
    )


def _hypothesis(
    raw: Any, phase: str, problems: list[str], where: str | None = None
) -> Hypothesis | None:
    where = where or f"steady_states.{phase}"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where} is {json_type(raw)}, not an object; ignored")
        return None
    met = raw.get("steady_state_met")
    probes = _activities(raw.get("probes"), phase, f"{where}.probes", problems)
    return Hypothesis(phase=phase, met=met if isinstance(met, bool) else None, probes=probes)


def _activities(
    raw: Any, phase: str, where: str, problems: list[str]
) -> tuple[ActivityResult, ...]:
    results = []
    for i, item in enumerate(as_list(raw, where, problems)):
        if not isinstance(item, dict):
            problems.append(f"{where}[{i}] is {json_type(item)}, not an activity; skipped")
            continue
        results.append(_activity(item, phase, f"{where}[{i}]", problems))
    return tuple(results)


def _activity(
    item: Mapping[str, Any], phase: str, where: str, problems: list[str]
) -> ActivityResult:
    activity = item.get("activity")
    if not isinstance(activity, dict):
        problems.append(f"{where} has no 'activity' object: name unknown")
        activity = {}
    exception = item.get("exception")
    if isinstance(exception, list):
        exception = "".join(str(line) for line in exception)
    elif exception is not None:
        exception = str(exception)
    duration = item.get("duration")
    met = item.get("tolerance_met")
    status = item.get("status")
    kind = text(activity.get("type"))
    return ActivityResult(
        name=text(activity.get("name")) or f"(unnamed {activity.get('type', 'activity')})",
        kind=kind if kind in ("action", "probe") else "unknown",
        phase=phase,
        status=status if isinstance(status, str) else "unknown",
        start=time_field(item.get("start"), f"{where}.start", problems),
        end=time_field(item.get("end"), f"{where}.end", problems),
        duration=number(duration),
        output=item.get("output"),
        exception=exception or None,
        tolerance=activity.get("tolerance"),
        has_tolerance="tolerance" in activity,
        tolerance_met=met if isinstance(met, bool) else None,
        background=bool(activity.get("background")),
        provider=_provider_summary(activity.get("provider")),
    )


def _provider_summary(provider: Any) -> str:
    if not isinstance(provider, dict):
        return ""
    kind = provider.get("type", "")
    if kind == "python":
        return f"python {provider.get('module', '?')}.{provider.get('func', '?')}"
    if kind == "process":
        return f"process {provider.get('path', '?')}"
    if kind == "http":
        return f"http {provider.get('method', 'GET')} {provider.get('url', '?')}"
    return str(kind)
