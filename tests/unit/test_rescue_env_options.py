"""The controller and the agent take every option from BLACKSTART_* variables too."""

import click
import pytest

from blackstart.rescue.agent.cli import agent_command
from blackstart.rescue.controller.cli import controller_command


@pytest.mark.parametrize(
    "command", [agent_command, controller_command], ids=["agent", "controller"]
)
def test_every_option_has_its_blackstart_variable(command: click.Command) -> None:
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
    assert options
    for option in options:
        assert option.envvar == f"BLACKSTART_{str(option.name).upper()}", option.name


def test_a_variable_sets_the_option_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKSTART_REBOOT_DRIVER", "webhook")
    monkeypatch.setenv("BLACKSTART_DRY_RUN", "true")
    ctx = controller_command.make_context("controller", [], resilient_parsing=True)
    assert ctx.params["reboot_driver"] == "webhook"
    assert ctx.params["dry_run"] is True
    ctx = controller_command.make_context(
        "controller", ["--reboot-driver", "annotation"], resilient_parsing=True
    )
    assert ctx.params["reboot_driver"] == "annotation"


def test_a_bad_variable_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKSTART_REBOOT_DRIVER", "bogus")
    with pytest.raises(click.BadParameter) as caught:
        controller_command.make_context("controller", [])
    message = f"{caught.value.param_hint} {caught.value.format_message()}"
    assert "'bogus' is not one of" in message
