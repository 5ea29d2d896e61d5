"""Whose cordon it is, and which Xids a node reported from its new boot. Pure logic."""

from __future__ import annotations

import json

from blackstart.rescue.controller.node_actions import NodeView, cordoned_by_someone_else
from blackstart.rescue.controller.node_steps import xids_from_boot

MARK = "rescue.blackstart.dev/cordoned-by"


def node(unschedulable: bool, mark: str | None = None) -> NodeView:
    annotations = {MARK: mark} if mark else {}
    return NodeView.from_object(
        {
            "metadata": {"name": "gpu-3", "annotations": annotations},
            "spec": {"unschedulable": unschedulable},
        }
    )


def test_a_cordon_is_ours_only_while_it_names_an_active_plan_of_ours() -> None:
    running = {"gpu-3-xid-aaaa"}
    assert not cordoned_by_someone_else(node(True, "gpu-3-xid-aaaa"), running)
    # a Failed plan left it for a person: the next plan must not take it for its own
    assert cordoned_by_someone_else(node(True, "gpu-3-xid-0ld0"), running)
    assert cordoned_by_someone_else(node(True), running)  # kubectl cordon
    assert not cordoned_by_someone_else(node(False, "gpu-3-xid-0ld0"), running)


def test_xids_from_the_new_boot_are_told_by_the_boot_in_the_report() -> None:
    message = json.dumps(
        {
            "v": 1,
            "reports": [
                {"id": "boot-a:100", "xid": 62},
                {"id": "boot-b:7", "xid": 79},
                {"id": "x", "bootId": "boot-b", "xid": 48},
            ],
        }
    )
    assert xids_from_boot(message, "boot-b") == [79, 48]
    assert xids_from_boot(message, "boot-c") == []
    assert xids_from_boot(None, "boot-b") == []
    assert xids_from_boot(message, "") == []
