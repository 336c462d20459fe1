"""The ``--config`` / ``--set`` options every ``pz`` command that reads the config shares."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import click
from kafka.errors import KafkaError

from personalization.config.kafka import KafkaPropertiesError, login_summary
from personalization.config.settings import ConfigError, Settings, load_settings

_SETTINGS = "personalization.settings"


def config_options(command: Callable) -> Callable:
    """The one declaration of ``--config`` and ``--set``: passed as ``config_path`` and ``overrides``."""
    command = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                           help="Override one config key, e.g. --set time.session_gap=10m (repeatable).")(command)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="YAML config file (default: the packaged config/default.yaml, `pz config show`)."
                        )(command)


def with_settings(command: Callable) -> Callable:
    """``--config``/``--set`` on a command that gets the loaded, validated Settings as its first
    argument (a bad config exits with status 2 before the command runs)."""
    @functools.wraps(command)
    def load_first(*args, config_path: str | None, overrides: tuple[str, ...], **kwargs):
        return command(settings_or_exit(config_path, overrides), *args, **kwargs)
    return config_options(load_first)


def settings_or_exit(config_path: str | None, overrides: tuple[str, ...] | list[str]) -> Settings:
    """Load and validate, or print the problem and exit with status 2 (a usage error)."""
    try:
        settings = load_settings(config_path, list(overrides))
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.get_current_context().meta[_SETTINGS] = settings
    return settings


class KafkaCommands(click.Group):
    """A command group whose Kafka failures (unreachable broker, refused login, a secret missing
    from the environment) end in one line naming the brokers and the login, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (KafkaError, KafkaPropertiesError) as err:
            settings: Settings | None = ctx.meta.get(_SETTINGS)
            if settings is None:
                raise
            kafka = settings.kafka
            raise click.ClickException(
                f"Kafka {kafka.bootstrap_servers} ({login_summary(kafka.properties)}): {type(err).__name__}: {err}. "
                "Check kafka.bootstrap_servers and kafka.properties: a broker that requires a login it did not "
                "get, or refused, looks like an unreachable one") from None
