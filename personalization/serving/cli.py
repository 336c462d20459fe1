"""Operator CLI over the reader library.

    python -m personalization.serving.cli profile <user>      # the whole profile
    python -m personalization.serving.cli segments <user>     # segments, primary, scores
    python -m personalization.serving.cli members <segment>   # the segment's audience
    python -m personalization.serving.cli sizes               # members per segment
    python -m personalization.serving.cli follow [--from 0]   # segment changes as they happen
"""

from __future__ import annotations

import sys

import click
import orjson

from personalization.config.cli import config_options, settings_or_exit
from personalization.serving.reader import ProfileReader


@click.group()
@config_options
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    ctx.obj = ProfileReader.from_settings(settings_or_exit(config_path, overrides))


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


@cli.command()
@click.argument("user_id")
@click.pass_obj
def segments(reader: ProfileReader, user_id: str) -> None:
    """Print a user's segments, primary segment and scores as JSON (exit 1 if there is no profile)."""
    found = reader.segments(user_id)
    if found is None:
        click.echo(f"no profile for user {user_id!r}", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@cli.command()
@click.argument("segment")
@click.pass_obj
def members(reader: ProfileReader, segment: str) -> None:
    """Print the users currently in a segment, one per line."""
    for user_id in sorted(reader.members(segment)):
        click.echo(user_id)


@cli.command()
@click.pass_obj
def sizes(reader: ProfileReader) -> None:
    """Print the number of members of every segment."""
    for segment, size in sorted(reader.segment_sizes().items()):
        click.echo(f"{segment}\t{size}")


@cli.command()
@click.option("--from", "start", default="$", show_default=True,
              help="Stream id to start after: $ = only new changes, 0 = from the oldest kept.")
@click.option("--limit", type=int, default=None, help="Stop after this many changes.")
@click.pass_obj
def follow(reader: ProfileReader, start: str, limit: int | None) -> None:
    """Print segment changes as JSON lines as they are appended (Ctrl-C to stop)."""
    seen = 0
    for entry_id, record in reader.follow(start):
        click.echo(orjson.dumps({"id": entry_id, **record}).decode())
        seen += 1
        if limit is not None and seen >= limit:
            return


if __name__ == "__main__":
    cli()
