"""The Helm chart of the rescue controller and agent (rescue/deploy/chart), run through the
real ``helm`` of the toolchain: lint, and ``helm template`` (no cluster).

With its default values the chart renders exactly the objects of the shipped manifests in
rescue/deploy/ (Helm's labels aside), so the two cannot drift; its values become flags that
the real ``blackstart rescue controller`` and ``agent`` commands parse.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import os
import subprocess
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from blackstart.clusters.toolchain import resolve
from blackstart.paths import cache_dir
from blackstart.rescue.agent.cli import agent_command
from blackstart.rescue.controller.cli import controller_command
from blackstart.rescue.controller.storm_guard import parse_reboot_cap
from blackstart.rescue.crd.policy import rescue_policy_from_object
from blackstart.rescue.image import image_tag
from blackstart.rescue.install import DEPLOY_FILES, LOCAL_REBOOT_FILE, deploy_documents

REPO = Path(__file__).resolve().parents[2]
CHART = Path(str(resources.files("blackstart.rescue").joinpath("deploy", "chart")))
RELEASE = NAMESPACE = "blackstart-rescue"
WORKLOAD_FILES = ("controller-deployment.yaml", "agent-daemonset.yaml")

Doc = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace ("" for cluster-scoped objects), name


def key(doc: Doc) -> Key:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def key_id(k: Key) -> str:
    return "/".join(part for part in k if part)


# What `kubectl apply -f rescue/deploy/...` creates, but the Namespace (Helm's --create-namespace).
SHIPPED: dict[Key, Doc] = {
    key(doc): doc
    for doc in deploy_documents([*DEPLOY_FILES, *WORKLOAD_FILES])
    if doc["kind"] != "Namespace"
}


@dataclass(frozen=True)
class Helm:
    """The toolchain's helm, with config and cache folders of its own and no cluster."""

    binary: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    toolchain, missing = resolve(cache_dir())
    if any(name == "helm" for _, name in missing):
        pytest.fail(
            "these tests run the real helm, which is missing: build it with "
            "`blackstart toolchain install` (helm v3.22.0 from its Go module, about 2 minutes)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-cluster"),
    )
    return Helm(toolchain.binary("helm"), env)


def template_args(sets: tuple[str, ...], namespace: str, kube_version: str | None) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds"]
    for value in sets:
        args += ["--set", value]
    return args + (["--kube-version", kube_version] if kube_version else [])


def render(
    helm: Helm, *sets: str, namespace: str = NAMESPACE, kube_version: str | None = None
) -> dict[Key, Doc]:
    """``helm template`` with ``--set`` of each of ``sets``: the objects by key."""
    result = helm.run(*template_args(sets, namespace, kube_version))
    assert result.returncode == 0, result.stderr
    return {key(doc): doc for doc in yaml.safe_load_all(result.stdout) if doc}


def render_error(helm: Helm, *sets: str) -> str:
    result = helm.run(*template_args(sets, NAMESPACE, None))
    assert result.returncode != 0, f"helm template accepted {sets}"
    return result.stderr


@pytest.fixture(scope="module")
def defaults(helm: Helm) -> dict[Key, Doc]:
    return render(helm)


def container(objects: dict[Key, Doc], kind: str, name: str) -> Doc:
    pod = objects[(kind, NAMESPACE, name)]["spec"]["template"]["spec"]
    [only] = pod["containers"]
    return dict(only)


def controller_args(objects: dict[Key, Doc]) -> list[str]:
    main = container(objects, "Deployment", "rescue-controller")
    assert main["command"] == ["blackstart", "rescue", "controller"]
    return list(main["args"])


def parse(command: click.Command, args: list[str], files_under: Path) -> dict[str, Any]:
    """What the real command receives from ``args``; the files it must find exist."""
    local = [arg.replace("=/etc/blackstart/", f"={files_under}/") for arg in args]
    for arg in local:
        if arg.startswith("--") and f"={files_under}/" in arg:
            path = Path(arg.split("=", 1)[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("secret\n")
    context = command.make_context(command.name or "", local)
    return dict(context.params)


@pytest.fixture(autouse=True)
def no_blackstart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read BLACKSTART_* variables: none from the developer's shell here."""
    for name in list(os.environ):
        if name.startswith("BLACKSTART_") and name != "BLACKSTART_CACHE_DIR":
            monkeypatch.delenv(name)


# --- the chart as a package -----------------------------------------------------------------


def test_helm_lint_strict_passes_with_the_defaults_and_with_every_option_on(
    helm: Helm,
) -> None:
    everything = (
        "controller.decisionApi.enabled=true,controller.decisionApi.tlsSecret=api-tls,"
        "controller.rebootDriver=webhook,controller.webhook.url=https://fleet.example/reboot,"
        "controller.webhook.tokenSecret=fleet-token,controller.dryRun=true,"
        "rescuePolicy.create=true,controller.plansTtl=3d,agent.hostReboot.enabled=true"
    )
    for extra in ([], ["--set", everything]):
        result = helm.run("lint", "--strict", str(CHART), *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


def test_the_chart_version_and_app_version_are_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version and chart["version"] == version


def test_every_file_of_the_chart_is_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["blackstart.rescue"]
    rescue = REPO / "rescue"
    files = [
        p.relative_to(rescue).as_posix()
        for p in (rescue / "deploy" / "chart").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "deploy/chart/Chart.yaml" in files and "deploy/chart/templates/NOTES.txt" in files
    # setuptools' globs: `*` does not cross a `/`
    unshipped = [
        f
        for f in files
        if not any(fnmatch.fnmatch(f, p) and f.count("/") == p.count("/") for p in patterns)
    ]
    assert unshipped == [], "add them to [tool.setuptools.package-data] in pyproject.toml"


# --- the defaults are the shipped manifests ---------------------------------------------------


def test_the_defaults_render_the_objects_of_the_shipped_manifests_and_no_others(
    defaults: dict[Key, Doc],
) -> None:
    assert sorted(map(key_id, defaults)) == sorted(map(key_id, SHIPPED))


def without_labels(doc: Doc) -> Doc:
    bare = copy.deepcopy(doc)
    bare["metadata"].pop("labels", None)
    template = bare.get("spec", {}).get("template")
    if isinstance(template, dict):
        template["metadata"].pop("labels", None)
    return bare


@pytest.mark.parametrize("shipped_key", sorted(SHIPPED), ids=key_id)
def test_each_shipped_object_is_rendered_the_same_but_for_helms_labels(
    defaults: dict[Key, Doc], shipped_key: Key
) -> None:
    shipped, rendered = SHIPPED[shipped_key], defaults[shipped_key]
    for path in (["metadata"], ["spec", "template", "metadata"]):
        want, got = shipped, rendered
        for step in path:
            want, got = want.get(step, {}), got.get(step, {})
        assert want.get("labels", {}).items() <= got.get("labels", {}).items(), path
    if shipped["kind"] == "CustomResourceDefinition":
        assert rendered == shipped  # crds/ is copied as it is: `cp rescue/deploy/crds.yaml`
    else:
        assert without_labels(rendered) == without_labels(shipped)


def test_the_controller_and_agent_commands_accept_the_default_flags(
    defaults: dict[Key, Doc], tmp_path: Path
) -> None:
    params = parse(controller_command, controller_args(defaults), tmp_path)
    assert params["reboot_driver"] == "annotation" and params["dry_run"] is False
    assert params["decision_api"] is None
    agent = container(defaults, "DaemonSet", "rescue-agent")
    assert agent["command"] == ["blackstart", "rescue", "agent"]
    agent_params = parse(agent_command, agent["args"], tmp_path)
    assert agent_params["kmsg"] is True and agent_params["max_rps"] == 5.0


# --- values -----------------------------------------------------------------------------------


def test_reboot_driver_dry_run_and_storm_guard_values_reach_the_controller(
    helm: Helm, tmp_path: Path
) -> None:
    objects = render(
        helm,
        "controller.rebootDriver=webhook",
        "controller.webhook.url=https://fleet.example/reboot",
        "controller.webhook.tokenSecret=fleet-token",
        "controller.dryRun=true",
        "controller.stormGuard.maxConcurrentPlans=4",
        "controller.stormGuard.maxUnavailableShare=0.25",
        "controller.stormGuard.maxReportingShare=0.3",
        "controller.stormGuard.rebootCap=2/30min",
        "controller.drainEmptyDir=evict",
    )
    params = parse(controller_command, controller_args(objects), tmp_path)
    assert params["reboot_driver"] == "webhook" and params["dry_run"] is True
    assert params["webhook_url"] == "https://fleet.example/reboot"
    assert Path(params["webhook_token_file"]).read_text() == "secret\n"
    assert params["max_concurrent_plans"] == 4
    assert params["max_unavailable_share"] == 0.25 and params["max_reporting_share"] == 0.3
    assert parse_reboot_cap(params["reboot_cap"])[0] == 2
    assert params["drain_emptydir"] == "evict"
    pod = objects[("Deployment", NAMESPACE, "rescue-controller")]["spec"]["template"]["spec"]
    token = {"secretName": "fleet-token", "items": [{"key": "token", "path": "token"}]}
    assert {"name": "webhook-token", "secret": token} in pod["volumes"]


def test_the_local_reboot_driver_alone_may_patch_node_status(
    helm: Helm, defaults: dict[Key, Doc]
) -> None:
    for doc in defaults.values():
        if doc["kind"] in ("ClusterRole", "Role") and "controller" in doc["metadata"]["name"]:
            assert all("nodes/status" not in rule["resources"] for rule in doc["rules"])
    local = render(helm, "controller.rebootDriver=local")
    extra = {key(d): d for d in deploy_documents([LOCAL_REBOOT_FILE])}
    for extra_key, shipped in extra.items():
        assert without_labels(local[extra_key]) == without_labels(shipped)


def test_decision_api_on_serves_through_a_service_with_a_token_secret(
    helm: Helm, tmp_path: Path
) -> None:
    objects = render(
        helm, "controller.decisionApi.enabled=true", "controller.decisionApi.port=9443"
    )
    service = objects[("Service", NAMESPACE, "rescue-controller-decision-api")]
    assert service["spec"]["ports"][0]["port"] == 9443
    assert (
        service["spec"]["selector"]
        == (
            objects[("Deployment", NAMESPACE, "rescue-controller")]["spec"]["selector"][
                "matchLabels"
            ]
        )
    )
    secret = objects[("Secret", NAMESPACE, "rescue-controller-decision-api")]
    assert len(base64.b64decode(secret["data"]["token"])) == 48  # a random token
    params = parse(controller_command, controller_args(objects), tmp_path)
    assert params["decision_api"] == "0.0.0.0:9443" and params["token_file"]
    ports = container(objects, "Deployment", "rescue-controller")["ports"]
    assert {"name": "decision-api", "containerPort": 9443} in ports


def test_a_given_decision_api_token_is_the_secrets_and_an_existing_secret_makes_none(
    helm: Helm,
) -> None:
    given = render(
        helm, "controller.decisionApi.enabled=true", "controller.decisionApi.token=s3cret"
    )
    secret = given[("Secret", NAMESPACE, "rescue-controller-decision-api")]
    assert base64.b64decode(secret["data"]["token"]) == b"s3cret"
    theirs = render(
        helm, "controller.decisionApi.enabled=true", "controller.decisionApi.existingSecret=theirs"
    )
    assert [k for k in theirs if k[0] == "Secret"] == []
    pod = theirs[("Deployment", NAMESPACE, "rescue-controller")]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "theirs"


def test_decision_api_off_renders_no_service_and_no_secret(defaults: dict[Key, Doc]) -> None:
    assert not [k for k in defaults if k[0] in ("Service", "Secret")]
    assert not any(
        a.startswith(("--decision-api", "--token-file")) for a in controller_args(defaults)
    )


def test_the_images_come_from_the_shared_values_or_each_components_own(helm: Helm) -> None:
    shared = render(helm, "image.repositoryPrefix=registry.local/bs-", "image.tag=dev")
    for kind, name in (("Deployment", "rescue-controller"), ("DaemonSet", "rescue-agent")):
        component = name.removeprefix("rescue-")
        assert container(shared, kind, name)["image"] == f"registry.local/bs-{component}:dev"
    split = render(helm, "controller.image.repository=registry.local/my-controller")
    assert container(split, "Deployment", "rescue-controller")["image"] == (
        "registry.local/my-controller:0.1.0"
    )
    # what `blackstart rescue image` builds
    assert container(split, "DaemonSet", "rescue-agent")["image"] == image_tag("agent")


def test_the_agents_admission_policy_needs_kubernetes_1_32_and_names_the_release_namespace(
    helm: Helm,
) -> None:
    old = render(helm, kube_version="1.31.0")
    assert not [k for k in old if k[0].startswith("ValidatingAdmissionPolicy")]
    current = render(helm, namespace="gpu-ops", kube_version="1.32.0")
    policy = current[("ValidatingAdmissionPolicy", "", "blackstart-rescue-agent-own-node")]
    expression = policy["spec"]["matchConditions"][0]["expression"]
    assert expression.endswith('"system:serviceaccount:gpu-ops:rescue-agent"')


def test_an_agent_given_a_kernel_log_file_reads_it_unprivileged(
    helm: Helm, defaults: dict[Key, Doc], tmp_path: Path
) -> None:
    log = "/var/log/blackstart/kmsg.log"  # a kind node's
    objects = render(helm, f"agent.kernelLog={log}")
    agent = container(objects, "DaemonSet", "rescue-agent")
    pod = objects[("DaemonSet", NAMESPACE, "rescue-agent")]["spec"]["template"]["spec"]
    assert agent["securityContext"]["privileged"] is False
    assert container(defaults, "DaemonSet", "rescue-agent")["securityContext"]["privileged"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "kmsg"]
    assert volume["hostPath"] == {"path": log, "type": "File"}
    [mount] = [m for m in agent["volumeMounts"] if m["name"] == "kmsg"]
    assert mount == {"name": "kmsg", "mountPath": log, "readOnly": True}
    # the kubelet expands $(NODE_NAME) from the container's env
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in (
        agent["env"]
    )
    args = [a.replace("$(NODE_NAME)", "gpu-worker") for a in agent["args"]]
    params = parse(agent_command, args, tmp_path)
    assert params["kmsg"] is False
    assert params["nodes"] == (f"gpu-worker={log}",)
    assert "relative" in render_error(helm, "agent.kernelLog=relative/kmsg.log")


def test_the_agent_can_be_left_out(helm: Helm) -> None:
    objects = render(helm, "agent.enabled=false")
    assert not [k for k in objects if "agent" in k[2]]
    assert ("Deployment", NAMESPACE, "rescue-controller") in objects


def test_the_optional_rescue_policy_is_the_values_rules(helm: Helm) -> None:
    objects = render(helm, "rescuePolicy.create=true")
    policy = objects[("RescuePolicy", "", "default")]
    rules = yaml.safe_load((CHART / "values.yaml").read_text())["rescuePolicy"]["rules"]
    assert policy["spec"]["rules"] == rules
    parsed = rescue_policy_from_object(policy)  # the controller's own reading of it
    assert [rule.priority for rule in parsed.rules] == [0, 10]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "controller.rebootDriver=reboot-it",
            "at '/controller/rebootDriver': value must be one of",
        ),
        ("controller.rebootDriver=webhook", "controller.webhook.url is empty"),
        (
            "controller.stormGuard.maxUnavailableShare=1.5",
            "/controller/stormGuard/maxUnavailableShare",
        ),
        ("controller.stormGuard.rebootCap=three", "/controller/stormGuard/rebootCap"),
        ("controller.drainUnmanaged=delete", "/controller/drainUnmanaged"),
        ("controller.rebotDriver=kind", "additional properties 'rebotDriver' not allowed"),
    ],
    ids=["unknown-driver", "webhook-without-url", "share-over-1", "cap", "drain", "typo"],
)
def test_a_bad_value_fails_helm_template_naming_it(helm: Helm, value: str, message: str) -> None:
    assert message in render_error(helm, value)


def test_host_reboot_runs_the_agent_with_host_pid_and_lets_it_watch_its_node_and_read_plans(
    helm: Helm, defaults: dict[Key, Doc], tmp_path: Path
) -> None:
    log = "/var/log/blackstart/kmsg.log"
    command = "nsenter -t 1 -m -- /sbin/reboot"
    objects = render(
        helm,
        "agent.hostReboot.enabled=true",
        f"agent.kernelLog={log}",
        f"agent.hostReboot.command={command}",
    )
    daemonset = objects[("DaemonSet", NAMESPACE, "rescue-agent")]["spec"]["template"]["spec"]
    agent = container(objects, "DaemonSet", "rescue-agent")
    assert daemonset["hostPID"] is True
    assert agent["securityContext"]["privileged"] is True  # even with a kernel-log file
    args = [a.replace("$(NODE_NAME)", "gpu-worker") for a in agent["args"]]
    params = parse(agent_command, args, tmp_path)
    assert params["host_reboot"] is True and params["reboot_command"] == command
    rules = objects[("ClusterRole", "", "blackstart-rescue-agent")]["rules"]
    assert {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]} in rules
    assert {
        "apiGroups": ["rescue.blackstart.dev"],
        "resources": ["rescueplans"],
        "verbs": ["get"],
    } in rules
    # off by default: no hostPID, no reboot flag, no plan reading
    default_pod = defaults[("DaemonSet", NAMESPACE, "rescue-agent")]["spec"]["template"]["spec"]
    assert "hostPID" not in default_pod
    assert "--host-reboot" not in container(defaults, "DaemonSet", "rescue-agent")["args"]
    default_rules = defaults[("ClusterRole", "", "blackstart-rescue-agent")]["rules"]
    assert not [r for r in default_rules if "rescueplans" in r["resources"]]
