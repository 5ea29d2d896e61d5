"""The game-day suite file: which experiments to run, with what, and how each should end.

A suite is YAML (``experiments/gameday.yaml``)::

    suite: catalogue                 # a name for the reports (default: the file's name)
    defaults:                        # optional, applied to every entry
      timeout: 600                   # seconds before the run is interrupted (rollbacks run)
      variables: {}                  # Chaos Toolkit configuration values (chaos run --var)
    experiments:
      - name: xid-62-cordon          # letters, digits, '-', '_', '.'; names the output folder
        file: xid-62-cordon.json     # relative to the suite file (default: <name>.json)
        expect: completed            # completed | deviated (a known weakness it demonstrates)
        timeout: 300
        variables: {xid: 62}
        description: ...             # optional, for people
        providers:                   # optional: what changes on one provider
          kind:                      # local | kind | context (blackstart gameday --context)
            variables: {xid_node: gpu-0}   # merged over the entry's variables there
          context:
            not_run: why             # not run there: reported as not run, with this reason

:func:`load_suite` checks every field and raises :class:`SuiteError` naming
the file, the entry and the field that is wrong, and what would be right.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXPECTED_OUTCOMES",
    "Suite",
    "SuiteEntry",
    "SuiteError",
    "chaos_var_arguments",
    "load_suite",
]

EXPECTED_OUTCOMES = ("completed", "deviated")
DEFAULT_TIMEOUT = 600.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ENTRY_FIELDS = ("name", "file", "expect", "timeout", "variables", "description", "providers")
PROVIDERS = ("local", "kind", "context")
PROVIDER_FIELDS = ("variables", "not_run")
DEFAULT_FIELDS = ("timeout", "variables", "expect")
TOP_FIELDS = ("suite", "description", "defaults", "experiments")


class SuiteError(ValueError):
    """The suite file is missing or wrong; the message names the file, entry and field."""


@dataclass(frozen=True)
class SuiteEntry:
    """One experiment of the suite."""

    name: str
    path: Path
    expect: str = "completed"
    timeout: float = DEFAULT_TIMEOUT
    variables: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: why this entry is not run on the game day's provider; empty when it runs
    not_run: str = ""


@dataclass(frozen=True)
class Suite:
    """A loaded, checked suite; ``entries`` are in file order (after ``--only``)."""

    name: str
    path: Path
    entries: tuple[SuiteEntry, ...]
    description: str = ""
    all_names: tuple[str, ...] = ()
    #: the provider the entries were resolved for (their ``providers`` section)
    provider: str = "local"


def load_suite(
    path: str | Path,
    only: Sequence[str] = (),
    check_files: bool = True,
    provider: str = "local",
) -> Suite:
    """Read and check the suite at ``path``, keeping only the entries named in ``only``.

    Each entry is resolved for ``provider`` (``local``, ``kind`` or ``context``):
    its ``providers.<provider>.variables`` are merged over its variables, and
    ``providers.<provider>.not_run`` marks it as not run there, with that reason.
    With ``check_files`` every kept entry's experiment file must exist and be
    JSON or YAML that looks like an experiment (a ``title`` and a ``method``).
    """
    if provider not in PROVIDERS:
        raise SuiteError(f"provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(
            f"{path}: no such suite file; pass --suite FILE (the catalogue is "
            "experiments/gameday.yaml in the blackstart repository)"
        ) from None
    except OSError as err:
        raise SuiteError(f"{path}: cannot be read: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        raise SuiteError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise SuiteError(
            f"{path}: a suite is a mapping with an 'experiments' list, found {_kind(data)}"
        )
    _no_unknown(data, TOP_FIELDS, f"{path}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SuiteError(f"{path}: 'defaults' must be a mapping, found {_kind(defaults)}")
    _no_unknown(defaults, DEFAULT_FIELDS, f"{path}: defaults")
    default_timeout = _timeout(defaults.get("timeout", DEFAULT_TIMEOUT), f"{path}: defaults")
    default_vars = _variables(defaults.get("variables") or {}, f"{path}: defaults")
    default_expect = _expect(defaults.get("expect", "completed"), f"{path}: defaults")

    raw_entries = data.get("experiments")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise SuiteError(
            f"{path}: 'experiments' must be a non-empty list of entries "
            "(each with at least a name), found " + _kind(raw_entries)
        )
    entries: list[SuiteEntry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        where = f"{path}: experiments[{index}]"
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise SuiteError(f"{where}: an entry is a mapping with a name, found {_kind(raw)}")
        name = raw.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise SuiteError(
                f"{where}: 'name' must be letters, digits, '-', '_' or '.' (it names the "
                f"output folder), found {name!r}"
            )
        where = f"{where} ({name})"
        if name in seen:
            raise SuiteError(f"{where}: the name is already used by experiments[{seen[name]}]")
        seen[name] = index
        _no_unknown(raw, ENTRY_FIELDS, where)
        file_value = raw.get("file", f"{name}.json")
        if not isinstance(file_value, str) or not file_value.strip():
            raise SuiteError(f"{where}: 'file' must be a path, found {file_value!r}")
        variables = dict(default_vars)
        variables.update(_variables(raw.get("variables") or {}, where))
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise SuiteError(f"{where}: 'description' must be text, found {_kind(description)}")
        here = _providers(raw.get("providers") or {}, where).get(provider, {})
        variables.update(here.get("variables", {}))
        entries.append(
            SuiteEntry(
                name=name,
                path=(path.parent / file_value).resolve()
                if not Path(file_value).is_absolute()
                else Path(file_value),
                expect=_expect(raw.get("expect", default_expect), where),
                timeout=_timeout(raw.get("timeout", default_timeout), where),
                variables=variables,
                description=description,
                not_run=str(here.get("not_run", "")),
            )
        )

    names = tuple(e.name for e in entries)
    unknown = [n for n in only if n not in seen]
    if unknown:
        raise SuiteError(
            f"{path}: --only names no entry of this suite: {', '.join(unknown)}; "
            f"the suite has: {', '.join(names)}"
        )
    if only:
        entries = [e for e in entries if e.name in only]
    if check_files:
        for entry in entries:
            _check_experiment_file(entry, f"{path}: experiments[{seen[entry.name]}] ({entry.name})")
    suite_name = data.get("suite", path.stem)
    if not isinstance(suite_name, str) or not NAME_PATTERN.match(suite_name):
        raise SuiteError(
            f"{path}: 'suite' must be a short name (letters, digits, '-', '_', '.'), "
            f"found {suite_name!r}"
        )
    description = data.get("description", "")
    return Suite(
        name=suite_name,
        path=path,
        entries=tuple(entries),
        description=description if isinstance(description, str) else "",
        all_names=names,
        provider=provider,
    )


def _check_experiment_file(entry: SuiteEntry, where: str) -> None:
    if not entry.path.exists():
        raise SuiteError(f"{where}: experiment file {entry.path} does not exist")
    if not entry.path.is_file():
        raise SuiteError(f"{where}: {entry.path} is not a file")
    try:
        text = entry.path.read_text(encoding="utf-8")
        data = json.loads(text) if entry.path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise SuiteError(
            f"{where}: experiment file {entry.path} is not valid JSON/YAML: {err}"
        ) from None
    if not isinstance(data, dict) or "method" not in data or "title" not in data:
        raise SuiteError(
            f"{where}: {entry.path} is not a Chaos Toolkit experiment (no 'title' and 'method')"
        )


def _no_unknown(mapping: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise SuiteError(
            f"{where}: unknown field(s) {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )


def _providers(value: Any, where: str) -> dict[str, dict[str, Any]]:
    """An entry's ``providers`` section, checked: provider -> {variables, not_run}."""
    if not isinstance(value, dict):
        raise SuiteError(
            f"{where}: 'providers' must map a provider ({', '.join(PROVIDERS)}) to what "
            f"changes there, found {_kind(value)}"
        )
    checked: dict[str, dict[str, Any]] = {}
    for name, section in value.items():
        at = f"{where}: providers.{name}"
        if name not in PROVIDERS:
            raise SuiteError(f"{at}: unknown provider; use one of {', '.join(PROVIDERS)}")
        if not isinstance(section, dict) or not section:
            raise SuiteError(
                f"{at}: must be a mapping with 'variables' and/or 'not_run', found {_kind(section)}"
            )
        _no_unknown(section, PROVIDER_FIELDS, at)
        reason = section.get("not_run", "")
        if "not_run" in section and (not isinstance(reason, str) or not reason.strip()):
            raise SuiteError(
                f"{at}: 'not_run' must say why the experiment does not run there, found {reason!r}"
            )
        checked[name] = {"variables": _variables(section.get("variables") or {}, at)}
        if reason:
            checked[name]["not_run"] = reason.strip()
    return checked


def _expect(value: Any, where: str) -> str:
    if value not in EXPECTED_OUTCOMES:
        raise SuiteError(
            f"{where}: 'expect' must be one of {', '.join(EXPECTED_OUTCOMES)} "
            f"('deviated' for an experiment that demonstrates a known weakness), found {value!r}"
        )
    return str(value)


def _timeout(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SuiteError(f"{where}: 'timeout' must be a number of seconds, found {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise SuiteError(f"{where}: 'timeout' must be more than 0 seconds, found {value!r}")
    return float(value)


def _variables(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SuiteError(
            f"{where}: 'variables' must be a mapping of configuration names to values, "
            f"found {_kind(value)}"
        )
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or ":" in key:
            raise SuiteError(f"{where}: variable name {key!r} must be text without '=' or ':'")
        if item is None:
            raise SuiteError(f"{where}: variable {key!r} has no value")
    return dict(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def chaos_var_arguments(variables: Mapping[str, Any]) -> list[str]:
    """``--var`` arguments for ``chaos run``, typed so Chaos Toolkit casts them back.

    Text is passed as is, numbers as ``name:int=`` / ``name:float=``, booleans
    as ``name:bool=``, lists and mappings as ``name:json=``.
    """
    args: list[str] = []
    for key, value in variables.items():
        if isinstance(value, bool):
            arg = f"{key}:bool={'true' if value else 'false'}"
        elif isinstance(value, int):
            arg = f"{key}:int={value}"
        elif isinstance(value, float):
            arg = f"{key}:float={value!r}"
        elif isinstance(value, str):
            arg = f"{key}={value}"
        else:
            arg = f"{key}:json={json.dumps(value, separators=(',', ':'))}"
        args += ["--var", arg]
    return args
