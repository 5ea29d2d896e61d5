"""The dependency extras: what each part of blackstart needs, and nothing more.

The agent's image is installed without extras and the controller's with
``[rescue]``. These tests run blackstart in a fresh interpreter where the
modules of the other extras cannot be imported, as in those images (the images
themselves are built and run in tests/kind/test_rescue_images.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from blackstart.extras import EXTRAS, extra_for

REPO = Path(__file__).resolve().parents[2]
JOURNAL = REPO.parent / "shared" / "testdata" / "journals"


def _optional_dependencies() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras: dict[str, list[str]] = data["project"]["optional-dependencies"]
    return extras


def _distribution(requirement: str) -> str:
    name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_each_extra_in_pyproject_brings_exactly_the_modules_blackstart_expects_of_it() -> None:
    declared = _optional_dependencies()
    assert set(EXTRAS) | {"all", "test"} == set(declared)
    owners = metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        from_modules = {_distribution(d) for m in modules for d in owners.get(m, [])}
        # chaostoolkit-kubernetes is the chaosk8s module
        assert from_modules == {_distribution(r) for r in declared[extra]}, extra
    assert declared["all"] == [f"blackstart[{','.join(EXTRAS)}]"]
    assert "blackstart[all]" in declared["test"]


def test_a_module_maps_to_its_extra() -> None:
    assert extra_for("chaoslib.types") == "chaos"
    assert extra_for("matplotlib") == "reports"
    assert extra_for("kopf") == "rescue"
    assert extra_for("kubernetes.client") is None
    assert extra_for(None) is None


def _run_without(extras: tuple[str, ...], body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter that cannot import the modules of ``extras``."""
    blocked = sorted(m for e in extras for m in EXTRAS[e])
    prelude = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Block())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _modules_of(package: str) -> list[str]:
    folder = REPO / Path(*package.split("."))
    return sorted(
        f"{package}.{p.stem}" for p in folder.resolve().glob("*.py") if p.stem != "__main__"
    )


def _import_then_help(
    blocked: tuple[str, ...], modules: list[str], command: str
) -> subprocess.CompletedProcess[str]:
    """Import every one of ``modules``, then run ``blackstart rescue COMMAND --help``."""
    return _run_without(
        blocked,
        f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        from blackstart.cli import main
        main(["rescue", {command!r}, "--help"])
        """,
    )


AGENT_PACKAGES = ("blackstart.rescue.agent", "blackstart.rescue.wire", "blackstart.rescue.crd")


def test_the_agent_runs_without_any_extra() -> None:
    modules = [m for p in AGENT_PACKAGES for m in _modules_of(p)]
    assert "blackstart.rescue.agent.node_agent" in modules
    done = _import_then_help(tuple(EXTRAS), modules, "agent")
    assert done.returncode == 0, done.stderr
    assert "--max-rps" in done.stdout


def test_the_controller_runs_with_the_rescue_extra_alone() -> None:
    modules = _modules_of("blackstart.rescue.controller")
    assert "blackstart.rescue.controller.operator" in modules
    done = _import_then_help(("chaos", "reports"), modules, "controller")
    assert done.returncode == 0, done.stderr
    assert "--reboot-driver" in done.stdout


def test_the_controller_without_the_rescue_extra_names_it() -> None:
    done = _run_without(
        ("rescue",),
        """
        from blackstart.cli import main
        main(["rescue", "controller", "--kubeconfig", "/nonexistent", "--metrics-port", "0"])
        """,
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'blackstart[rescue]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("journal", sorted(JOURNAL.glob("*.json"))[:1], ids=lambda p: p.name)
def test_a_report_without_the_reports_extra_names_it_and_writes_nothing(
    journal: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    done = _run_without(
        ("reports",),
        f"""
        from blackstart.cli import main
        main(["report", {str(journal)!r}, "-o", {str(out)!r}])
        """,
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'blackstart[reports]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
