"""What an object was before a chaos action replaced it, kept on the object itself.

An action that finds an object of the name it was asked to apply (an admin's
RescuePolicy, a FlowSchema of the cluster's own) replaces it, and writes the
original's labels, annotations and spec, as JSON, into the
``blackstart.dev/original`` annotation of the replacement. Its rollback then
puts the original back instead of deleting it, also when the rollback runs in
another process than the action: the record is in the cluster, with the object.
An object the action created has no such annotation and is deleted.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from blackstart.names import ORIGINAL_ANNOTATION

__all__ = ["original_body", "replacing"]


def replacing(current: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """``body``, ready to replace ``current``: its resourceVersion, and what ``current`` was.

    When ``current`` is itself a replacement (the action ran twice), the first
    original is carried on, never blackstart's own version.
    """
    metadata = current.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})
    original = annotations.get(ORIGINAL_ANNOTATION)
    if original is None:
        original = json.dumps(
            {
                "labels": dict(metadata.get("labels") or {}),
                "annotations": annotations,
                "spec": current.get("spec"),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
    new = copy.deepcopy(dict(body))
    new_metadata = dict(new.get("metadata") or {})
    new_metadata["annotations"] = {
        **dict(new_metadata.get("annotations") or {}),
        ORIGINAL_ANNOTATION: original,
    }
    new_metadata["resourceVersion"] = metadata.get("resourceVersion")
    new["metadata"] = new_metadata
    return new


def original_body(current: Mapping[str, Any]) -> dict[str, Any] | None:
    """The body that puts back what ``current`` replaced; None when nothing was replaced.

    Raises ValueError when the record is not the JSON :func:`replacing` writes.
    """
    metadata = current.get("metadata") or {}
    recorded = (metadata.get("annotations") or {}).get(ORIGINAL_ANNOTATION)
    if recorded is None:
        return None
    try:
        original = json.loads(recorded)
        spec = original["spec"]
        labels = dict(original.get("labels") or {})
        annotations = dict(original.get("annotations") or {})
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"the {ORIGINAL_ANNOTATION} annotation of {metadata.get('name')} is not the record "
            f"blackstart writes ({err}); restore the object by hand"
        ) from err
    return {
        "apiVersion": current.get("apiVersion"),
        "kind": current.get("kind"),
        "metadata": {
            "name": metadata.get("name"),
            "resourceVersion": metadata.get("resourceVersion"),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
