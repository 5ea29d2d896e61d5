"""The local provider's pieces that need no cluster: Corefile, kwokctl command and config,
client certificates, Node manifests, and acting on local processes by pid file.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blackstart.clusters.local.coredns import CorednsConfig, coredns_argv, render_corefile
from blackstart.clusters.local.credentials import (
    COREDNS,
    IDENTITIES,
    TELEMETRY,
    kubeconfig_for,
    sign_client_cert,
    write_identity_kubeconfigs,
)
from blackstart.clusters.local.kwok_nodes import KWOK_NODE_ANNOTATION, node_manifest
from blackstart.clusters.local.kwokctl import (
    COMPONENTS,
    NODE_NOT_READY_LABEL,
    KwokCluster,
    KwokctlError,
    create_command,
    kwokctl_config,
)
from blackstart.clusters.processes import (
    ProcessError,
    is_alive,
    is_stopped,
    read_pid,
    signal_pid_file,
    start_detached,
    stop_pid_file,
)
from blackstart.clusters.spec import STANDBY_LABEL, load_spec, parse_spec
from blackstart.clusters.toolchain import Toolchain, ToolchainError

# --- CoreDNS ------------------------------------------------------------------


@pytest.fixture
def dns(tmp_path: Path) -> CorednsConfig:
    return CorednsConfig(
        kubeconfig=tmp_path / "coredns.kubeconfig",
        dns_port=10053,
        ready_port=18181,
        health_port=18080,
        metrics_port=19153,
    )


def directives(corefile: str) -> list[str]:
    return [line.strip() for line in corefile.splitlines()]


def test_the_corefile_serves_cluster_local_from_the_api_with_its_kubeconfig(
    dns: CorednsConfig,
) -> None:
    corefile = render_corefile(dns)
    lines = directives(corefile)
    assert lines[0] == "cluster.local:10053 in-addr.arpa:10053 ip6.arpa:10053 {"
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in lines
    assert f"kubeconfig {dns.kubeconfig}" in lines
    assert "ttl 5" in lines
    assert corefile.count("{") == corefile.count("}")


def test_the_corefile_binds_loopback_and_puts_ready_health_and_metrics_on_their_ports(
    dns: CorednsConfig,
) -> None:
    lines = directives(render_corefile(dns))
    assert "bind 127.0.0.1" in lines
    assert "ready 127.0.0.1:18181" in lines
    assert "health 127.0.0.1:18080" in lines
    assert "prometheus 127.0.0.1:19153" in lines
    assert "cache 30" in lines
    assert "reload 2s" in lines
    assert dns.address == "127.0.0.1:10053"


def test_the_corefile_has_no_erratic_block_unless_drops_or_delays_are_asked_for(
    dns: CorednsConfig,
) -> None:
    assert "erratic" not in render_corefile(dns)
    assert "erratic" not in render_corefile(dns.with_changes(erratic_delay_ms=500))


def test_dropping_one_answer_in_n_adds_an_erratic_drop(dns: CorednsConfig) -> None:
    lines = directives(render_corefile(dns.with_changes(erratic_drop=3)))
    start = lines.index("erratic {")
    assert lines[start : start + 3] == ["erratic {", "drop 3", "}"]


def test_delaying_one_answer_in_n_adds_an_erratic_delay(dns: CorednsConfig) -> None:
    changed = dns.with_changes(erratic_drop=2, erratic_delay_every=4, erratic_delay_ms=250)
    lines = directives(render_corefile(changed))
    start = lines.index("erratic {")
    assert lines[start : start + 4] == ["erratic {", "drop 2", "delay 4 250ms", "}"]
    assert dns.erratic_drop == 0  # with_changes left the original alone


def test_a_broken_corefile_carries_a_directive_coredns_does_not_know(
    dns: CorednsConfig,
) -> None:
    assert "blackstart-broken-directive" not in render_corefile(dns)
    assert "blackstart-broken-directive" in directives(
        render_corefile(dns.with_changes(broken=True))
    )


def test_coredns_runs_with_the_corefile(tmp_path: Path) -> None:
    assert coredns_argv(Path("/bin/coredns"), tmp_path / "Corefile") == [
        "/bin/coredns",
        "-conf",
        str(tmp_path / "Corefile"),
    ]


# --- kwokctl ------------------------------------------------------------------

FAKE_BINARIES = (
    "kwokctl",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "prometheus",
)


@pytest.fixture
def fake_toolchain(tmp_path: Path) -> Toolchain:
    paths = {name: Path(f"/opt/fake/{name}-bin") for name in FAKE_BINARIES}
    return Toolchain(
        paths=paths,
        sources=dict.fromkeys(paths, "bin-dir"),
        versions=dict.fromkeys(paths, "v0"),
        path_dir=tmp_path / "toolchain" / "bin",
    )


def test_the_kwokctl_config_is_two_configurations_then_six_stages() -> None:
    docs = list(yaml.safe_load_all(kwokctl_config()))
    assert len(docs) == 8
    assert docs[0] == {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {},
    }
    assert docs[1]["kind"] == "KwokConfiguration"
    assert [d["kind"] for d in docs[2:]] == ["Stage"] * 6
    assert {d["metadata"]["name"] for d in docs[2:]} == {
        "node-initialize",
        "node-heartbeat-with-lease",
        "node-not-ready",
        "pod-ready",
        "pod-complete",
        "pod-delete",
    }
    assert all(d["apiVersion"] == "kwok.x-k8s.io/v1alpha1" for d in docs[2:])


def test_the_kwok_controller_renews_sixteen_node_leases_at_once_so_leases_keep_pace() -> None:
    docs = list(yaml.safe_load_all(kwokctl_config()))
    assert docs[1] == {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {"nodeLeaseParallelism": 16},
    }


def test_the_heartbeat_factor_goes_into_the_kwokctl_options() -> None:
    first = next(yaml.safe_load_all(kwokctl_config(heartbeat_factor=0.5)))
    assert first["options"] == {"heartbeatFactor": 0.5}


def test_kwokctl_returns_once_the_api_server_serves_and_up_waits_for_healthz_itself(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    argv = create_command(
        fake_toolchain, "fleet", tmp_path / "kwok.yaml", "10.96.0.0/16", 19090, tmp_path / "prom"
    )
    assert "--wait" not in argv


def test_the_controller_manager_runs_every_controller_but_the_ttl_one_no_kubelet_reads(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    argv = create_command(
        fake_toolchain, "fleet", tmp_path / "kwok.yaml", "10.96.0.0/16", 19090, tmp_path / "prom"
    )
    extra = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--extra-args"]
    assert "kube-controller-manager=controllers=*,-ttl-controller" in extra


def test_the_node_not_ready_stage_is_selected_by_its_label() -> None:
    stages = {d["metadata"]["name"]: d for d in list(yaml.safe_load_all(kwokctl_config()))[2:]}
    assert NODE_NOT_READY_LABEL in yaml.safe_dump(stages["node-not-ready"]["spec"]["selector"])


def test_create_command_points_kwokctl_at_every_toolchain_binary(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    argv = create_command(
        fake_toolchain, "fleet", tmp_path / "kwok.yaml", "10.96.0.0/16", 19090, tmp_path / "prom"
    )
    assert argv[:8] == [
        "/opt/fake/kwokctl-bin",
        "create",
        "cluster",
        "--name",
        "fleet",
        "--runtime",
        "binary",
        "--config",
    ]

    def after(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert after("--config") == str(tmp_path / "kwok.yaml")
    assert after("--etcd-binary") == "/opt/fake/etcd-bin"
    assert after("--kube-apiserver-binary") == "/opt/fake/kube-apiserver-bin"
    assert after("--kube-controller-manager-binary") == "/opt/fake/kube-controller-manager-bin"
    assert after("--kube-scheduler-binary") == "/opt/fake/kube-scheduler-bin"
    assert after("--kwok-controller-binary") == "/opt/fake/kwok-bin"
    assert after("--prometheus-binary") == "/opt/fake/prometheus-bin"
    assert after("--prometheus-port") == "19090"
    assert "--kube-apiserver-port" not in argv


def test_create_command_keeps_apf_rbac_and_admission_on(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    argv = create_command(
        fake_toolchain, "fleet", tmp_path / "kwok.yaml", "10.96.0.0/16", 19090, tmp_path / "prom"
    )
    assert "--disable-qps-limits" not in argv
    assert "--kube-authorization" in argv
    assert "--kube-admission" in argv


def test_create_command_gives_the_spec_service_cidr_to_apiserver_and_controller_manager(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    argv = create_command(
        fake_toolchain, "fleet", tmp_path / "kwok.yaml", "10.100.0.0/20", 19090, tmp_path / "prom"
    )
    extra = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--extra-args"]
    assert extra == [
        "kube-apiserver=service-cluster-ip-range=10.100.0.0/20",
        "kube-controller-manager=service-cluster-ip-range=10.100.0.0/20",
        "kube-controller-manager=controllers=*,-ttl-controller",
        f"prometheus=storage.tsdb.path={tmp_path / 'prom'}",
    ]


def test_create_command_pins_the_apiserver_port_when_given(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    argv = create_command(
        fake_toolchain,
        "fleet",
        tmp_path / "kwok.yaml",
        "10.96.0.0/16",
        19090,
        tmp_path / "prom",
        apiserver_port=16443,
    )
    assert argv[-2:] == ["--kube-apiserver-port", "16443"]


def test_create_command_without_a_binary_says_to_install_the_toolchain(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    del fake_toolchain.paths["kube-scheduler"]
    with pytest.raises(ToolchainError, match="'kube-scheduler' is not in the toolchain"):
        create_command(
            fake_toolchain,
            "fleet",
            tmp_path / "kwok.yaml",
            "10.96.0.0/16",
            19090,
            tmp_path / "prom",
        )


def test_each_component_has_a_pid_file_under_the_cluster_folder(tmp_path: Path) -> None:
    cluster = KwokCluster("fleet", tmp_path)
    assert cluster.pid_file("kube-apiserver") == (
        tmp_path / "clusters" / "fleet" / "pids" / "kube-apiserver.pid"
    )
    assert cluster.pid("etcd") is None  # no pid file yet
    assert cluster.kubeconfig == tmp_path / "clusters" / "fleet" / "kubeconfig.yaml"


def test_an_unknown_component_is_rejected_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KwokctlError) as caught:
        KwokCluster("fleet", tmp_path).pid_file("kubelet")
    message = str(caught.value)
    assert "unknown component 'kubelet'" in message
    for component in COMPONENTS:
        assert component in message


def test_the_saved_kwokctl_options_are_read_back(tmp_path: Path) -> None:
    cluster = KwokCluster("fleet", tmp_path)
    assert cluster.options() == {}
    cluster.cluster_dir.mkdir(parents=True)
    (cluster.cluster_dir / "kwok.yaml").write_text(
        "kind: Stage\n---\nkind: KwokctlConfiguration\noptions: {kubeApiserverPort: 32766}\n"
    )
    assert cluster.options() == {"kubeApiserverPort": 32766}


# --- client certificates and kubeconfigs --------------------------------------


@pytest.fixture(scope="module")
def cluster_ca() -> tuple[bytes, bytes]:
    """A CA like the one kwokctl writes to <cluster>/pki: (ca.crt, ca.key) as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kwok-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_a_client_cert_names_the_user_and_its_groups_and_is_signed_by_the_ca(
    cluster_ca: tuple[bytes, bytes],
) -> None:
    ca_pem, ca_key_pem = cluster_ca
    cert_pem, key_pem = sign_client_cert(ca_pem, ca_key_pem, TELEMETRY)
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)

    # the API server reads the user from CN and the groups from O
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in cn] == ["blackstart:telemetry"]
    assert [a.value for a in orgs] == ["blackstart:telemetry-agents"]
    assert cert.issuer == ca.subject

    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_public.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )

    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value.digital_signature
    assert not key_usage.value.key_cert_sign

    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc

    # the key is the one the certificate was issued for
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_a_cert_signed_by_another_ca_does_not_verify(cluster_ca: tuple[bytes, bytes]) -> None:
    ca_pem, ca_key_pem = cluster_ca
    cert = x509.load_pem_x509_certificate(sign_client_cert(ca_pem, ca_key_pem, COREDNS)[0])
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert cert.signature_hash_algorithm is not None
    with pytest.raises(InvalidSignature):
        stranger.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )


def test_each_signed_identity_gets_a_fresh_key_and_serial(cluster_ca: tuple[bytes, bytes]) -> None:
    first = sign_client_cert(*cluster_ca, COREDNS)
    second = sign_client_cert(*cluster_ca, COREDNS)
    assert first[1] != second[1]
    serials = {x509.load_pem_x509_certificate(c).serial_number for c, _ in (first, second)}
    assert len(serials) == 2


def test_a_kubeconfig_embeds_the_ca_cert_and_key_for_one_user_and_context() -> None:
    config = kubeconfig_for(
        "https://127.0.0.1:32766", b"CA", b"CERT", b"KEY", "fleet", "blackstart:coredns"
    )
    assert config["apiVersion"] == "v1"
    assert config["kind"] == "Config"
    assert config["clusters"] == [
        {
            "name": "fleet",
            "cluster": {
                "server": "https://127.0.0.1:32766",
                "certificate-authority-data": base64.b64encode(b"CA").decode(),
            },
        }
    ]
    assert config["users"] == [
        {
            "name": "blackstart:coredns",
            "user": {
                "client-certificate-data": base64.b64encode(b"CERT").decode(),
                "client-key-data": base64.b64encode(b"KEY").decode(),
            },
        }
    ]
    assert config["contexts"] == [
        {
            "name": "fleet-blackstart-coredns",
            "context": {"cluster": "fleet", "user": "blackstart:coredns"},
        }
    ]
    assert config["current-context"] == "fleet-blackstart-coredns"


def test_every_identity_gets_a_private_kubeconfig_the_kubernetes_client_accepts(
    cluster_ca: tuple[bytes, bytes], tmp_path: Path
) -> None:
    from kubernetes import config as kube_config

    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.crt").write_bytes(cluster_ca[0])
    (pki / "ca.key").write_bytes(cluster_ca[1])
    written = write_identity_kubeconfigs(pki, "https://127.0.0.1:32766", "fleet", tmp_path / "kc")
    assert set(written) == {identity.user for identity in IDENTITIES}
    for identity in IDENTITIES:
        path = written[identity.user]
        assert path.name == identity.kubeconfig_name
        assert path.stat().st_mode & 0o777 == 0o600
        document = yaml.safe_load(path.read_text())
        cert = x509.load_pem_x509_certificate(
            base64.b64decode(document["users"][0]["user"]["client-certificate-data"])
        )
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity.user
        api = kube_config.new_client_from_config_dict(document)
        assert api.configuration.host == "https://127.0.0.1:32766"


# --- KWOK Node manifests ------------------------------------------------------


def test_a_gpu_node_manifest_is_kwok_managed_and_advertises_its_capacity() -> None:
    gpu0 = load_spec().nodes()[0]
    manifest = node_manifest(gpu0)
    assert manifest["kind"] == "Node"
    assert manifest["metadata"]["name"] == "gpu-0"
    assert manifest["metadata"]["annotations"][KWOK_NODE_ANNOTATION] == "fake"
    assert manifest["metadata"]["labels"]["type"] == "kwok"
    assert manifest["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert manifest["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert manifest["status"]["capacity"] == manifest["status"]["allocatable"]
    assert manifest["status"]["capacity"] is not manifest["status"]["allocatable"]
    assert manifest["spec"] == {"unschedulable": False}


def test_a_standby_node_manifest_is_unschedulable_and_labelled_standby() -> None:
    standby = next(n for n in load_spec().nodes() if n.role == "standby")
    manifest = node_manifest(standby)
    assert manifest["spec"]["unschedulable"] is True
    assert manifest["metadata"]["labels"][STANDBY_LABEL] == "true"


def test_node_taints_are_copied_into_the_manifest() -> None:
    spec = parse_spec(
        {
            "metadata": {"name": "tainted"},
            "spec": {
                "pools": [
                    {
                        "name": "gpu",
                        "role": "gpu",
                        "count": 1,
                        "capacity": {"nvidia.com/gpu": "8"},
                        "taints": [
                            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                            {"key": "maintenance", "effect": "NoExecute"},
                        ],
                    }
                ]
            },
        }
    )
    node = spec.nodes()[0]
    manifest = node_manifest(node)
    assert manifest["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        {"key": "maintenance", "effect": "NoExecute"},
    ]
    manifest["spec"]["taints"][0]["effect"] = "NoExecute"
    assert node.taints[0]["effect"] == "NoSchedule"  # a copy, not the spec's own dicts


NODE_INFO_IN_ANOTHER_PROCESS = """
import json
from blackstart.clusters.local.kwok_nodes import node_manifest
from blackstart.clusters.spec import load_spec
print(json.dumps([node_manifest(n)["status"]["nodeInfo"] for n in load_spec().nodes()[:2]]))
"""


def test_node_identities_are_stable_across_runs_and_distinct_between_nodes() -> None:
    """Another run (a new Python process, another hash seed) gives every node the same
    machine id, system UUID and first boot id: a restarted cluster keeps its nodes."""
    a, b = load_spec().nodes()[:2]
    other_run = subprocess.run(
        [sys.executable, "-c", NODE_INFO_IN_ANOTHER_PROCESS],
        env={**os.environ, "PYTHONHASHSEED": "random"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    here = [node_manifest(a)["status"]["nodeInfo"], node_manifest(b)["status"]["nodeInfo"]]
    assert json.loads(other_run.stdout) == here
    for key in ("machineID", "systemUUID", "bootID"):
        assert here[0][key] and here[0][key] != here[1][key], key
    assert (
        node_manifest(a)["status"]["nodeInfo"]["systemUUID"]
        != node_manifest(b)["status"]["nodeInfo"]["systemUUID"]
    )


# --- local processes by pid file ----------------------------------------------

SLEEP = shutil.which("sleep") or "/bin/sleep"
SH = shutil.which("sh") or "/bin/sh"


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[list[str]], tuple[int, Path]]]:
    """Start processes with start_detached; SIGKILL any the test left running."""
    pids: list[int] = []

    def start(argv: list[str]) -> tuple[int, Path]:
        pid_file = tmp_path / "pids" / f"p{len(pids)}.pid"
        pid = start_detached(argv, pid_file, tmp_path / "logs" / f"p{len(pids)}.log")
        pids.append(pid)
        return pid, pid_file

    yield start
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_a_detached_process_runs_in_its_own_session_and_records_its_pid(
    started: Callable[[list[str]], tuple[int, Path]],
) -> None:
    pid, pid_file = started([SLEEP, "30"])
    assert read_pid(pid_file) == pid
    assert is_alive(pid)
    assert not is_stopped(pid)
    assert os.getsid(pid) == pid  # survives the CLI's terminal going away
    assert os.getsid(pid) != os.getsid(0)


def test_a_detached_process_logs_to_its_log_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "echo.log"
    pid = start_detached([SH, "-c", "echo started"], tmp_path / "echo.pid", log)
    assert eventually(lambda: not is_alive(pid))
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    assert log.read_text() == "started\n"


def test_starting_a_binary_that_does_not_exist_names_it(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="cannot start /nonexistent/coredns: no such binary"):
        start_detached(["/nonexistent/coredns"], tmp_path / "c.pid", tmp_path / "c.log")
    assert not (tmp_path / "c.pid").exists()


def test_a_hung_process_is_stopped_until_it_is_resumed(
    started: Callable[[list[str]], tuple[int, Path]],
) -> None:
    pid, pid_file = started([SLEEP, "30"])
    assert signal_pid_file(pid_file, signal.SIGSTOP, "coredns") == pid
    assert eventually(lambda: is_stopped(pid))
    assert is_alive(pid)  # hung, not dead
    signal_pid_file(pid_file, signal.SIGCONT, "coredns")
    assert eventually(lambda: not is_stopped(pid))
    assert is_alive(pid)


def test_stop_ends_a_running_process_and_a_second_stop_reports_it_was_not_running(
    started: Callable[[list[str]], tuple[int, Path]],
) -> None:
    pid, pid_file = started([SLEEP, "30"])
    assert stop_pid_file(pid_file, "coredns", timeout=5) is True
    assert not is_alive(pid)
    assert stop_pid_file(pid_file, "coredns", timeout=5) is False


def sigterm_recorder(marker: Path, then: str) -> list[str]:
    """A shell that writes ``term`` to ``marker`` on SIGTERM, then runs ``then``.

    Once its trap is set it writes ``ready`` to ``marker`` + ``.ready``.
    """
    script = f'trap "echo term >> {marker}; {then}" TERM; echo ready > {marker}.ready; '
    return [SH, "-c", script + "while :; do sleep 0.1; done"]


def trap_set(marker: Path) -> bool:
    return Path(f"{marker}.ready").exists()


def test_stop_ends_a_hung_process_too(
    started: Callable[[list[str]], tuple[int, Path]], tmp_path: Path
) -> None:
    """A SIGSTOPped process gets SIGCONT, so it handles SIGTERM (and exits by itself)
    instead of lying stopped until SIGKILL."""
    marker = tmp_path / "got-sigterm"
    pid, pid_file = started(sigterm_recorder(marker, "exit 0"))
    assert eventually(lambda: trap_set(marker))
    signal_pid_file(pid_file, signal.SIGSTOP, "coredns")
    assert eventually(lambda: is_stopped(pid))
    assert stop_pid_file(pid_file, "coredns", timeout=30) is True
    assert not is_alive(pid)
    assert marker.read_text() == "term\n"  # it ended on SIGTERM: resumed, not killed


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(
    started: Callable[[list[str]], tuple[int, Path]], tmp_path: Path
) -> None:
    """SIGTERM first (the process saw it and carried on), then SIGKILL ends it."""
    marker = tmp_path / "got-sigterm"
    pid, pid_file = started(sigterm_recorder(marker, ":"))
    assert eventually(lambda: trap_set(marker))
    assert stop_pid_file(pid_file, "stubborn", timeout=1.0) is True
    assert not is_alive(pid)
    assert marker.read_text().startswith("term\n")  # SIGTERM came first and was survived


def test_signalling_a_component_that_is_not_running_names_it_and_its_pid_file(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pids" / "coredns.pid"
    with pytest.raises(ProcessError, match=rf"coredns is not running \(pid file {pid_file}\)"):
        signal_pid_file(pid_file, signal.SIGSTOP, "coredns")
    assert stop_pid_file(pid_file, "coredns") is False


def test_a_pid_file_that_holds_no_pid_is_reported(tmp_path: Path) -> None:
    pid_file = tmp_path / "kube-apiserver.pid"
    pid_file.write_text("not-a-pid\n")
    with pytest.raises(ProcessError, match="does not hold a pid: 'not-a-pid'"):
        read_pid(pid_file)


def test_no_pid_and_non_positive_pids_are_not_alive() -> None:
    assert not is_alive(None)
    assert not is_alive(0)
    assert not is_alive(-1)
    assert not is_stopped(None)


def test_create_command_pins_each_component_port_so_clusters_cannot_collide(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    ports = {"etcd": 41001, "kube-scheduler": 41002, "kwok-controller": 41003}
    argv = create_command(
        fake_toolchain,
        "fleet",
        tmp_path / "kwok.yaml",
        "10.96.0.0/16",
        19090,
        tmp_path / "prom",
        component_ports=ports,
    )

    def after(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert after("--etcd-port") == "41001"
    assert after("--kube-scheduler-port") == "41002"
    assert after("--controller-port") == "41003"
    assert "--kube-controller-manager-port" not in argv


def test_create_command_rejects_a_component_without_a_port_flag(
    fake_toolchain: Toolchain, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no kwokctl port flag for component 'coredns'"):
        create_command(
            fake_toolchain,
            "fleet",
            tmp_path / "kwok.yaml",
            "10.96.0.0/16",
            19090,
            tmp_path / "prom",
            component_ports={"coredns": 1},
        )
