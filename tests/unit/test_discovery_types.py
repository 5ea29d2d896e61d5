"""`chaos discover blackstart` names real types for every argument and return value."""

from typing import Any, Literal

import pytest

from blackstart.discovery import discover_extension, plain_doc, portable_type


@pytest.fixture(scope="module")
def activities() -> list[dict[str, Any]]:
    return list(discover_extension(discover_system=False)["activities"])


def test_no_annotated_argument_is_discovered_as_object(activities: list[dict[str, Any]]) -> None:
    untyped = [
        f"{a['mod']}.{a['name']}({arg['name']})"
        for a in activities
        for arg in a["arguments"]
        if arg.get("type") in (None, "object")
    ]
    assert untyped == []
    assert sum(len(a["arguments"]) for a in activities) > 200


def test_every_return_value_has_a_real_type(activities: list[dict[str, Any]]) -> None:
    assert [a["name"] for a in activities if a.get("return_type") in (None, "object")] == []


def test_configuration_and_secrets_are_mappings(activities: list[dict[str, Any]]) -> None:
    for activity in activities:
        kinds = {arg["name"]: arg["type"] for arg in activity["arguments"]}
        assert kinds.get("configuration") == "mapping", activity["name"]
        assert kinds.get("secrets") == "mapping", activity["name"]


def test_discovered_docstrings_carry_no_rest_roles(activities: list[dict[str, Any]]) -> None:
    for activity in activities:
        doc = activity["doc"] or ""
        assert ":func:" not in doc and ":class:" not in doc and "``" not in doc, activity["name"]


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (str, "string"),
        (int | None, "integer"),
        (list[str], "list"),
        (list[str] | None, "list"),
        (dict[str, Any], "mapping"),
        (tuple[int, int], "tuple"),
        (Literal["kmsg", "dmesg"], "string"),
        (float, "number"),
        (bool, "boolean"),
        (None, "null"),
        (Any, "object"),
        (int | str, "object"),
    ],
)
def test_portable_type_names(annotation: Any, name: str) -> None:
    assert portable_type(annotation) == name


def test_plain_doc_keeps_the_name_of_a_role() -> None:
    text = "Undo with :func:`~blackstart.actions.apiserver.start_apiserver`; ``gpu-3``."
    assert plain_doc(text) == "Undo with `start_apiserver`; `gpu-3`."
