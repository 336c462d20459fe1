"""Operator CLI over the reader library: ``python -m personalization.serving.cli profile <user>``."""

from __future__ import annotations

import sys

import click
import orjson

from personalization.config.settings import ConfigError, load_settings
from personalization.serving.reader import ProfileReader


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    try:
        ctx.obj = ProfileReader.from_settings(load_settings(config_path, list(overrides)))
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)


@cli.command()
@click.argument("user_id")
@click.pass_obj
def profile(reader: ProfileReader, user_id: str) -> None:
    """Print a user's profile as JSON (exit 1 if there is none)."""
    found = reader.get(user_id)
    if found is None:
        click.echo(f"no profile for user {user_id!r}", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    cli()
