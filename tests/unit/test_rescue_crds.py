"""The CRDs in rescue/deploy/crds.yaml: structural, bounded, and in step with the Python code.

These read the file only. That the API server accepts the CRDs, compiles their CEL
rules within its cost budget and rejects malformed policies is checked end to end
on a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from blackstart.rescue.crd.plans import Step
from blackstart.rescue.crd.policy import ACTION_NAMES
from blackstart.rescue.crd.waittime import (
    WAITTIME_CEL_RULE,
    WAITTIME_MAX_LENGTH,
    WAITTIME_PATTERN,
    parse_waittime,
)

CRDS_FILE = Path(__file__).resolve().parents[2] / "rescue" / "deploy" / "crds.yaml"
GROUP = "rescue.blackstart.dev"
PHASES = [
    "Pending",
    "Cordoned",
    "Draining",
    "Rebooting",
    "WaitingReady",
    "Validating",
    "Uncordoned",
    "Replaced",
    "Succeeded",
    "Failed",
    "Refused",
]

Schema = dict[str, Any]


def load_crds() -> dict[str, Schema]:
    with CRDS_FILE.open(encoding="utf-8") as stream:
        documents = [doc for doc in yaml.safe_load_all(stream) if doc]
    return {doc["spec"]["names"]["kind"]: doc for doc in documents}


CRDS = load_crds()


def root_schema(kind: str) -> Schema:
    (version,) = CRDS[kind]["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node below ``schema`` with its path (``.spec.rules[].actions[]``)."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def all_nodes() -> Iterator[tuple[str, str, Schema]]:
    for kind in CRDS:
        for path, node in walk(root_schema(kind)):
            yield kind, path, node


def at(kind: str, path: str) -> Schema:
    nodes = dict(walk(root_schema(kind)))
    return nodes[path]


def waittime_fields() -> list[tuple[str, str, Schema]]:
    return [
        (kind, path, node)
        for kind, path, node in all_nodes()
        if path.endswith((".waittime", ".threshold.window", ".validation.waittime"))
    ]


# --- the definitions --------------------------------------------------------------------------


def test_the_file_defines_the_three_kinds_cluster_scoped_in_rescue_blackstart_dev_v1() -> None:
    assert sorted(CRDS) == ["RescuePlan", "RescuePolicy", "WarmStandbyPolicy"]
    for kind, crd in CRDS.items():
        spec = crd["spec"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert spec["group"] == GROUP
        assert spec["scope"] == "Cluster"
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{GROUP}"
        assert [v["name"] for v in spec["versions"]] == ["v1"], kind
        assert spec["versions"][0]["served"] and spec["versions"][0]["storage"]


def test_only_the_rescue_plan_has_a_status_subresource() -> None:
    subresources = {
        kind: crd["spec"]["versions"][0].get("subresources", {}) for kind, crd in CRDS.items()
    }
    assert subresources["RescuePlan"] == {"status": {}}
    assert not subresources["RescuePolicy"]
    assert not subresources["WarmStandbyPolicy"]


def test_the_rescue_plan_printer_columns_point_at_fields_that_exist() -> None:
    columns = CRDS["RescuePlan"]["spec"]["versions"][0]["additionalPrinterColumns"]
    paths = {path for path, _ in walk(root_schema("RescuePlan"))}

    assert [column["name"] for column in columns][:4] == ["Node", "Xids", "Phase", "Source"]
    for column in columns:
        if column["jsonPath"].startswith(".metadata."):
            continue
        assert column["jsonPath"] in paths, column


# --- structural schemas -------------------------------------------------------------------------


def test_every_schema_node_has_a_type() -> None:
    untyped = [(kind, path) for kind, path, node in all_nodes() if "type" not in node]
    assert untyped == []


def test_every_object_says_what_it_holds() -> None:
    # The root metadata is the one object the API server types itself.
    vague = [
        (kind, path)
        for kind, path, node in all_nodes()
        if node["type"] == "object"
        and path != ".metadata"
        and "properties" not in node
        and "additionalProperties" not in node
    ]
    assert vague == []


def test_no_field_keeps_unknown_fields() -> None:
    kept = [
        (kind, path)
        for kind, path, node in all_nodes()
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert kept == []


def test_every_list_string_and_map_is_bounded_so_cel_costs_can_be_estimated() -> None:
    unbounded = []
    for kind, path, node in all_nodes():
        if node["type"] == "array" and "maxItems" not in node:
            unbounded.append((kind, path))
        bounded_string = {"maxLength", "enum", "format"} & node.keys()
        if node["type"] == "string" and path not in (".apiVersion", ".kind") and not bounded_string:
            unbounded.append((kind, path))
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            unbounded.append((kind, path))
    assert unbounded == []


def test_every_required_field_is_a_property() -> None:
    for kind, path, node in all_nodes():
        for name in node.get("required", []):
            assert name in node.get("properties", {}), (kind, path, name)


# --- CEL rules ----------------------------------------------------------------------------------


def cel_rules() -> list[tuple[str, str, Schema, dict[str, str]]]:
    return [
        (kind, path, node, rule)
        for kind, path, node in all_nodes()
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_the_policy_rules_the_issue_asks_for_are_all_there() -> None:
    rules = at("RescuePolicy", ".spec.rules[]")["x-kubernetes-validations"]
    actions = at("RescuePolicy", ".spec.rules[].actions[]")["x-kubernetes-validations"]
    text = " ".join(rule["rule"] for rule in rules + actions)

    assert "self.priority > 0 || !has(self.errorCode)" in text
    assert "self.priority > 0 || !has(self.nodeSelector)" in text
    assert "self.priority == 0 || has(self.errorCode)" in text
    assert "exists_one" in text
    assert "enableWarmStandby" in text
    assert "self.name in ['drain', 'reboot']" in text
    assert "self.name == 'reboot'" in text
    assert at("RescuePolicy", ".spec.rules[].actions")["minItems"] == 1


def test_every_cel_rule_has_a_message_naming_its_field() -> None:
    for kind, path, _node, rule in cel_rules():
        message = rule.get("message", "")
        assert message, (kind, path, rule["rule"])
        if "fieldPath" in rule:
            field = rule["fieldPath"].rsplit(".", 1)[-1]
        else:
            field = path.rsplit(".", 1)[-1].rstrip("[]")
        assert re.search(rf"\b{re.escape(field)}\b", message), (kind, path, message)


def test_every_cel_rule_names_only_fields_its_schema_has() -> None:
    """A plausibility check of the CEL text; the API server compiles it for real."""
    for kind, path, node, rule in cel_rules():
        expression = rule["rule"]
        assert expression.count("(") == expression.count(")"), expression
        assert expression.count("'") % 2 == 0, expression
        properties = node.get("properties", {})
        for name in re.findall(r"\bself\.([A-Za-z_]\w*)\b(?!\()", expression):
            assert name in properties, (kind, path, name)
        for name in re.findall(r"\bhas\(self\.(\w+)\.(\w+)\)", expression):
            assert name[1] in properties[name[0]]["properties"], (kind, path, name)
        if "fieldPath" in rule:
            target = node
            for part in rule["fieldPath"].lstrip(".").split("."):
                target = target["properties"][part]


def test_action_names_and_plan_phases_agree_with_the_code() -> None:
    for kind in ("RescuePolicy", "RescuePlan"):
        item = ".spec.rules[].actions[]" if kind == "RescuePolicy" else ".spec.actions[]"
        assert at(kind, f"{item}.name")["enum"] == list(ACTION_NAMES)
    assert at("RescuePlan", ".status.phase")["enum"] == PHASES
    steps = at("RescuePlan", ".status.completedSteps")
    assert steps["items"]["enum"] == [step.value for step in Step]
    assert steps["maxItems"] == len(Step)
    assert at("RescuePlan", ".status.transitions[].phase")["enum"] == PHASES


def test_the_error_code_pattern_takes_one_to_three_digits() -> None:
    pattern = at("RescuePolicy", ".spec.rules[].errorCode[]")["pattern"]

    for good in ("0", "48", "062", "154"):
        assert re.search(pattern, good)
    for bad in ("", "1234", "x", "6 2", "-1"):
        assert not re.search(pattern, bad)


# --- waittime: the CRD's pattern and the parser agree --------------------------------------------

GOOD_WAITTIMES = [
    "10min",
    "20min",
    "1day3h5min",
    "2d",
    "2day",
    "45s",
    "1h",
    "0s",
    "1h30m",
    "90s",
    "1.5h",
    "0.25s",
    "30m1h",
    "365day",
    "8760h",
    "1h" * (WAITTIME_MAX_LENGTH // 2),
]
BAD_WAITTIMES = [
    "",
    "0",
    "10",
    "min",
    "10 min",
    " 10min",
    "10min\n",
    "10MIN",
    "10mins",
    "2days",
    "1w",
    "500ms",
    "-1h",
    ".5h",
    "5.h",
    "1e3s",
    "1000000s",
    "\u0661h",  # an Arabic-Indic digit one
    "1h" * (WAITTIME_MAX_LENGTH // 2 + 1),
    # fit the pattern and the length, but longer than 365 days
    "999999d999999d",
    "999999day",
    "366day",
    "365day0.5s",
]


def cel_bound_accepts(text: str) -> bool:
    """WAITTIME_CEL_RULE as the API server evaluates it, step by step, in Python."""
    seconds = 0
    for part in (m.group(0) for m in re.finditer(r"[0-9]+([.][0-9]+)?[a-z]+", text)):
        whole = int(re.findall(r"[0-9]+", part)[0]) + (1 if "." in part else 0)
        if part.endswith(("day", "d")):
            unit = 86400
        elif part.endswith("h"):
            unit = 3600
        elif part.endswith("s"):
            unit = 1
        else:
            unit = 60
        seconds += whole * unit
    return seconds <= 31536000


def crd_accepts(node: Schema, text: str) -> bool:
    # The API server matches patterns with Go's RE2, where $ is only the end of the text
    # and \d is only ASCII; Python needs \Z and re.ASCII for the same meaning.
    pattern = node["pattern"]
    assert pattern.endswith("$") and not pattern.endswith(r"\$")
    go_equivalent = re.compile(pattern[:-1] + r"\Z", re.ASCII)
    if not (len(text) <= node["maxLength"] and go_equivalent.search(text)):
        return False
    rules = [v["rule"] for v in node.get("x-kubernetes-validations", [])]
    assert WAITTIME_CEL_RULE in rules
    return cel_bound_accepts(text)


def parser_accepts(text: str) -> bool:
    try:
        parse_waittime(text)
    except ValueError:
        return False
    return True


def test_every_duration_field_uses_the_parser_s_pattern_and_length() -> None:
    fields = waittime_fields()

    assert {(kind, path) for kind, path, _ in fields} == {
        ("RescuePolicy", ".spec.rules[].actions[].attribute.waittime"),
        ("RescuePolicy", ".spec.rules[].threshold.window"),
        ("RescuePlan", ".spec.actions[].attribute.waittime"),
        ("RescuePolicy", ".spec.rules[].validation.waittime"),
        ("RescuePlan", ".spec.validation.waittime"),
    }
    for _, _, node in fields:
        assert node["pattern"] == WAITTIME_PATTERN
        assert node["maxLength"] == WAITTIME_MAX_LENGTH


@pytest.mark.parametrize("text", GOOD_WAITTIMES)
def test_a_good_waittime_is_accepted_by_the_crd_and_the_parser(text: str) -> None:
    for kind, path, node in waittime_fields():
        assert crd_accepts(node, text), (kind, path)
    assert parser_accepts(text)


@pytest.mark.parametrize("text", BAD_WAITTIMES)
def test_a_bad_waittime_is_refused_by_the_crd_and_the_parser(text: str) -> None:
    for kind, path, node in waittime_fields():
        assert not crd_accepts(node, text), (kind, path)
    assert not parser_accepts(text)


def test_a_zero_threshold_window_is_refused_by_the_crd_rule() -> None:
    (rule,) = [
        v
        for v in at("RescuePolicy", ".spec.rules[].threshold.window")["x-kubernetes-validations"]
        if v["rule"] != WAITTIME_CEL_RULE
    ]
    # The rule is self.matches('[1-9]'): a duration is above zero exactly when a digit
    # other than 0 appears in it, since every part is a non-negative number of a unit.
    nonzero = re.compile(re.search(r"matches\('(.*)'\)", rule["rule"])[1])  # type: ignore[index]

    for text in GOOD_WAITTIMES:
        assert bool(nonzero.search(text)) == (parse_waittime(text).total_seconds() > 0), text
