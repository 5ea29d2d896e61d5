"""Every option of the rescue processes also comes from a ``BLACKSTART_*`` variable.

A Deployment or DaemonSet sets ``env:`` entries (from a ConfigMap or a Secret)
instead of editing the command line: ``--reboot-driver`` is
``BLACKSTART_REBOOT_DRIVER``, ``--metrics-port`` is ``BLACKSTART_METRICS_PORT``.
A flag on the command line wins over the variable.
"""

import click

ENV_PREFIX = "BLACKSTART_"


def env_name(option: click.Parameter) -> str:
    """The variable that sets ``option``: ``--max-report-age`` -> ``BLACKSTART_MAX_REPORT_AGE``."""
    return ENV_PREFIX + str(option.name).upper()


def with_env_options(command: click.Command) -> click.Command:
    """Give each option of ``command`` its ``BLACKSTART_*`` variable, shown in ``--help``."""
    for param in command.params:
        if isinstance(param, click.Option) and not param.envvar and param.name != "help":
            param.envvar = env_name(param)
            param.show_envvar = True
    return command
