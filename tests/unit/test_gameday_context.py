"""`blackstart gameday --context`: every experiment runs on the named context, or nothing runs.

Given a blackstart cluster ``ext`` (its saved state and admin kubeconfig, no
processes) and a copy of its kubeconfig whose context is renamed
``staging-gpu``: the pinned context wins over the cluster an experiment names,
the cluster behind the copy is still found, the guard refuses the context
until it is allow-listed, and the cluster control never creates a cluster.
The real game day on a real cluster is tests/e2e/test_gameday.py.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chaoslib.exceptions import InterruptExecution

from blackstart.clusters.state import ClusterState, list_states, state_dir_for
from blackstart.controls import cluster as cluster_control
from blackstart.controls import guard
from blackstart.gameday import (
    ClusterUnavailable,
    ContextSession,
    ExitCode,
    Gameday,
    GamedayOptions,
    chaos_binary,
)
from blackstart.suite import load_suite
from blackstart.target import PINNED_CONTEXT_ENV, context_target, resolve_target

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig(path: Path, server: str, ca: bytes, context: str) -> Path:
    user = {"name": "admin", "user": {"token": "not-used"}}
    cluster = {"certificate-authority-data": base64.b64encode(ca).decode(), "server": server}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [user],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "admin"}}],
                "current-context": context,
            }
        )
    )
    return path


@pytest.fixture
def ext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClusterState:
    """A blackstart cluster ``ext`` as its saved state says; its API server is not running."""
    monkeypatch.setenv("BLACKSTART_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("BLACKSTART_CLUSTER", "BLACKSTART_ALLOWED_CONTEXTS", PINNED_CONTEXT_ENV):
        monkeypatch.delenv(name, raising=False)
    folder = state_dir_for("ext")
    folder.mkdir(parents=True)
    server = f"https://127.0.0.1:{closed_port()}"
    admin = kubeconfig(folder / "admin.kubeconfig", server, b"ext's CA", "blackstart-ext")
    state = ClusterState(
        name="ext",
        provider="local",
        state_dir=str(folder),
        spec_path="gpu-fleet.yaml",
        kubeconfig=str(admin),
        context="blackstart-ext",
        apiserver_url=server,
        prometheus_url="http://127.0.0.1:1",
    )
    state.save()
    return state


@pytest.fixture
def staging(ext: ClusterState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's kubeconfig: ext's, copied, with the context renamed ``staging-gpu``."""
    path = kubeconfig(
        tmp_path / "staging.kubeconfig", ext.apiserver_url, b"ext's CA", "staging-gpu"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_a_pinned_context_wins_over_the_cluster_the_experiment_names(
    staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PINNED_CONTEXT_ENV, "staging-gpu")
    target = resolve_target({"blackstart_cluster": "blackstart"}, {})
    assert (target.kubeconfig, target.context) == (str(staging), "staging-gpu")
    assert target.named_context == "staging-gpu"
    # the cluster behind the copy is found, for the faults that need its processes and logs
    assert target.cluster == "ext" and target.state is not None and target.state.name == "ext"


def test_a_copied_kubeconfig_under_another_name_still_needs_the_allow_list(
    staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = context_target(str(staging), "staging-gpu")
    assert target.cluster == "ext" and target.named_context == "staging-gpu"
    ok, why = guard.target_allowed(target, guard.allow_list({}, None))
    assert not ok
    assert "'staging-gpu'" in why and "'ext'" in why and "BLACKSTART_ALLOWED_CONTEXTS" in why
    monkeypatch.setenv("BLACKSTART_ALLOWED_CONTEXTS", "prod,staging-gpu")
    ok, why = guard.target_allowed(target, guard.allow_list({}, None))
    assert ok and why == "context 'staging-gpu' is allow-listed"


def test_blackstarts_own_kubeconfig_and_context_is_its_cluster_without_the_allow_list(
    ext: ClusterState,
) -> None:
    target = context_target(ext.kubeconfig, ext.context)
    assert (target.provider, target.cluster, target.named_context) == ("local", "ext", None)
    assert guard.target_allowed(target, [])[0]


def test_pinning_blackstarts_own_context_still_needs_the_allow_list(
    ext: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", ext.kubeconfig)
    monkeypatch.setenv(PINNED_CONTEXT_ENV, ext.context)
    target = resolve_target({}, {})
    assert target.cluster == "ext" and target.named_context == ext.context
    assert not guard.target_allowed(target, [])[0]


def test_another_cluster_on_the_same_address_is_not_taken_for_ext(
    ext: ClusterState, tmp_path: Path
) -> None:
    """A port reused by another cluster: same URL, another CA; not blackstart's."""
    other = kubeconfig(tmp_path / "other", ext.apiserver_url, b"another CA", "prod")
    target = context_target(str(other), "prod")
    assert (target.provider, target.cluster, target.state) == ("context", None, None)
    assert not guard.target_allowed(target, [])[0]


def test_the_cluster_control_creates_nothing_when_a_context_is_pinned(
    staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PINNED_CONTEXT_ENV, "staging-gpu")
    configuration: dict[str, Any] = {"blackstart_cluster": "blackstart"}
    cluster_control.configure_control()
    cluster_control.before_experiment_control({}, configuration=configuration, create=True)
    cluster_control.cleanup_control()
    assert [s.name for s in list_states()] == ["ext"]
    assert os.environ["KUBECONFIG"] == str(staging)  # not pointed at a blackstart cluster


def test_a_pinned_context_without_the_rescue_controller_interrupts_naming_it(
    staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PINNED_CONTEXT_ENV, "staging-gpu")
    cluster_control.configure_control()
    with pytest.raises(InterruptExecution, match="cannot reach context 'staging-gpu'"):
        cluster_control.before_experiment_control(
            {}, configuration={"blackstart_cluster": "blackstart"}, rescue=True
        )
    assert [s.name for s in list_states()] == ["ext"]


def test_the_context_session_pins_the_context_for_chaos(staging: Path) -> None:
    env = ContextSession("staging-gpu").chaos_env()
    assert env == {
        "BLACKSTART_CONTEXT": "staging-gpu",
        "KUBERNETES_CONTEXT": "staging-gpu",
        "BLACKSTART_PROVIDER": "context",
        "BLACKSTART_CLUSTER": None,
        "KUBECONFIG": str(staging.resolve()),
    }


def test_the_context_session_refuses_a_context_not_allow_listed_before_any_request(
    staging: Path,
) -> None:
    session = ContextSession("staging-gpu")
    with pytest.raises(ClusterUnavailable, match="not allow-listed") as caught:
        session.up()
    assert "local cluster 'ext'" in str(caught.value)
    assert "does not answer" not in str(caught.value)  # refused before reaching the server


def test_the_context_session_names_an_unknown_context(staging: Path) -> None:
    with pytest.raises(ClusterUnavailable, match="'prod-eu' cannot be used"):
        ContextSession("prod-eu").up()


def test_an_allow_listed_context_that_does_not_answer_is_unavailable(
    staging: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLACKSTART_ALLOWED_CONTEXTS", "staging-gpu")
    with pytest.raises(ClusterUnavailable, match="does not answer"):
        ContextSession("staging-gpu").up()


def test_a_game_day_on_a_refused_context_runs_nothing_and_exits_3(
    staging: Path, tmp_path: Path
) -> None:
    suite = tmp_path / "suite.yaml"
    slow = FIXTURES / "gameday" / "slow.json"
    suite.write_text(f"suite: refused\nexperiments:\n  - name: slow\n    file: {slow}\n")
    chaos = chaos_binary()
    assert chaos
    lines: list[str] = []
    options = GamedayOptions(
        suite=load_suite(suite),
        out_dir=tmp_path / "out",
        session=ContextSession("staging-gpu"),
        chaos=chaos,
    )
    code = Gameday(options, echo=lines.append, out=lines.append).run()
    assert code == ExitCode.CLUSTER
    assert not (tmp_path / "out" / "slow" / "journal.json").exists()
    text = "\n".join(lines)
    assert "not allow-listed" in text and "slow" in text


def test_chaos_run_with_a_pinned_context_is_refused_by_the_guard_and_creates_nothing(
    staging: Path, tmp_path: Path
) -> None:
    """The real `chaos run` of an experiment whose configuration names cluster `blackstart`
    and whose cluster control may create it: pinned to staging-gpu, the guard refuses."""
    experiment = tmp_path / "experiment.json"
    experiment.write_text(
        json.dumps(
            {
                "title": "pinned",
                "description": "the cluster control would create `blackstart` if not pinned",
                "configuration": {
                    "blackstart_cluster": {
                        "type": "env",
                        "key": "BLACKSTART_CLUSTER",
                        "default": "blackstart",
                    }
                },
                "controls": [
                    {
                        "name": "blackstart-cluster",
                        "provider": {
                            "type": "python",
                            "module": "blackstart.controls.cluster",
                            "arguments": {"create": True},
                        },
                    },
                    {
                        "name": "blackstart-guard",
                        "provider": {"type": "python", "module": "blackstart.controls.guard"},
                    },
                ],
                "method": [
                    {
                        "type": "action",
                        "name": "touch-marker",
                        "provider": {
                            "type": "process",
                            "path": "touch",
                            "arguments": str(tmp_path / "injected"),
                        },
                    }
                ],
            }
        )
    )
    chaos = chaos_binary()
    assert chaos
    journal = tmp_path / "journal.json"
    done = subprocess.run(
        [chaos, "--no-log-file", "run", "--journal-path", str(journal), str(experiment)],
        env={**os.environ, PINNED_CONTEXT_ENV: "staging-gpu"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert journal.exists(), done.stdout + done.stderr
    ran = json.loads(journal.read_text())
    (entry,) = [e for e in ran["extensions"] if e["name"] == "blackstart"]
    assert "'staging-gpu'" in entry["guard"]["refused"]
    assert ran["status"] != "completed"
    assert not (tmp_path / "injected").exists()
    assert [s.name for s in list_states()] == ["ext"]
    assert "creating cluster" not in done.stdout + done.stderr


def test_the_suite_entries_of_the_provider_behind_the_context_run(
    ext: ClusterState, staging: Path, tmp_path: Path
) -> None:
    # ext is local: the catalogue's local entries (all of them)
    assert ContextSession("staging-gpu").suite_provider == "local"
    # an adopted kind cluster behind the user's context runs the kind entries and variables
    ext.provider = "kind"
    ext.save()
    assert ContextSession("staging-gpu").suite_provider == "kind"
    suite = load_suite(
        Path(__file__).resolve().parents[2] / "experiments" / "gameday.yaml",
        provider=ContextSession("staging-gpu").suite_provider,
    )
    assert [e for e in suite.entries if e.not_run]
    # any other cluster: the context's own entries
    other = kubeconfig(tmp_path / "other", "https://127.0.0.1:1", b"another CA", "prod")
    assert ContextSession("prod", str(other)).suite_provider == "context"
