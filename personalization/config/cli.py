"""The ``--config`` / ``--set`` options every command-line tool of the project shares."""

from __future__ import annotations

import sys
from typing import Callable

import click

from personalization.config.settings import ConfigError, Settings, load_settings


def config_options(command: Callable) -> Callable:
    command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                           help="Override one config key, e.g. --set time.session_gap=10m (repeatable).")(command)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="YAML config file (default: config/default.yaml).")(command)


def settings_or_exit(config_path: str | None, overrides: tuple[str, ...] | list[str]) -> Settings:
    """Load and validate, or print the problem and exit with status 2 (a usage error)."""
    try:
        return load_settings(config_path, list(overrides))
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
