"""The agent and controller images: built offline, slim where they must be, run by kind.

`blackstart rescue image` builds both from this source tree (Debian's Python and
a pip-installed blackstart); here they are built (or found current), checked in
the local engine, loaded into the session's kind cluster and run as real pods.
"""

from __future__ import annotations

import subprocess

import pytest
from kubernetes import client

from blackstart.extras import EXTRAS
from blackstart.paths import cache_dir
from blackstart.rescue.image import INPUTS_LABEL, RescueImage, build_images, image_tag

from .conftest import eventually

pytestmark = pytest.mark.kind


def importable(tag: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` the image's Python can import."""
    probe = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    done = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python3", tag, "-c", probe, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.split()


def test_the_agent_image_carries_no_extra_and_the_controller_only_rescue(
    images: dict[str, RescueImage],
) -> None:
    every = sorted(m for modules in EXTRAS.values() for m in modules)
    # aiohttp is the rescue extra's for the controller's own use, but the Kubernetes
    # client (37 and later) requires it too: the agent's image has it through that
    agent = importable(images["agent"].tag, [*every, "kubernetes", "prometheus_client"])
    assert sorted(set(agent) - {"aiohttp"}) == ["kubernetes", "prometheus_client"]
    assert sorted(importable(images["controller"].tag, every)) == sorted(EXTRAS["rescue"])


def test_a_second_build_finds_both_images_current(images: dict[str, RescueImage]) -> None:
    again = build_images(cache_dir(), progress=print)
    assert [(i.tag, i.cached) for i in again] == [
        (image_tag("agent"), True),
        (image_tag("controller"), True),
    ]
    assert [i.size_bytes for i in again] == [images["agent"].size_bytes,
                                             images["controller"].size_bytes]  # fmt: skip


def test_no_image_a_rebuild_replaced_is_left_behind(images: dict[str, RescueImage]) -> None:
    # each build with new sources takes the tags; the images it replaced (330 MB each)
    # used to stay as untagged <none> images until someone pruned them by hand
    done = subprocess.run(
        ["docker", "images", "--quiet", "--filter", "dangling=true",
         "--filter", f"label={INPUTS_LABEL}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split() == []


def _run_pod(core: client.CoreV1Api, namespace: str, name: str, image: str, args: list[str]) -> str:
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": name, "image": image, "imagePullPolicy": "Never", "args": args}
                ],
            },
        },
    )

    def ended() -> str:
        return str(core.read_namespaced_pod(name, namespace).status.phase or "")

    phase = eventually(lambda: ended() in ("Succeeded", "Failed") and ended(), 120, f"{name} ended")
    log = str(core.read_namespaced_pod_log(name, namespace))
    assert phase == "Succeeded", log
    return log


def test_both_images_run_as_pods_on_the_kind_nodes_without_a_registry(
    images: dict[str, RescueImage], core: client.CoreV1Api, namespace: str
) -> None:
    log = _run_pod(core, namespace, "agent", images["agent"].tag, ["xid", "catalogue", "79"])
    assert "79" in log and "fallen off the bus" in log.lower()
    log = _run_pod(
        core, namespace, "controller", images["controller"].tag, ["rescue", "controller", "--help"]
    )
    assert "--reboot-driver" in log
