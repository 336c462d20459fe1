"""Operator CLI over the reader library.

    python -m personalization.serving.cli profile <user>      # the whole profile
    python -m personalization.serving.cli segments <user>     # segments, primary, scores
    python -m personalization.serving.cli members <segment>   # the segment's audience
    python -m personalization.serving.cli sizes               # members per segment
    python -m personalization.serving.cli follow [--from 0]   # segment changes as they happen
    python -m personalization.serving.cli erase <user>        # request the user's erasure (right to be forgotten)
    python -m personalization.serving.cli control reset <user> # reset / opt-out / opt-in the user's personalization
    python -m personalization.serving.cli index-for-erasure   # once: index keys written before the erasure indexes
    python -m personalization.serving.cli expire-audiences    # now and then: drop members whose profile expired
"""

from __future__ import annotations

import sys

import click
import orjson

from personalization.config.cli import KafkaCommands, config_options, settings_or_exit
from personalization.core.privacy import ERASE, InvalidErasureRequest
from personalization.pipelines.topics import publish_record
from personalization.serving.audiences import expire_audiences
from personalization.serving.controls import new_request, request_record
from personalization.serving.erasure import index_existing
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect


@click.group(cls=KafkaCommands)
@config_options
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    ctx.meta["settings"] = settings = settings_or_exit(config_path, overrides)
    ctx.obj = ProfileReader.from_settings(settings)


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


REQUEST_ID = click.option("--request-id", default=None, help="Id to find the confirmation by (default: a new UUID).")


@cli.command()
@click.argument("user_id")
@REQUEST_ID
@click.pass_context
def erase(ctx: click.Context, user_id: str, request_id: str | None) -> None:
    """Request the erasure of a user (raw id: the job pseudonymizes it like the events).

    Publishes {user_id, request_id, requested_at} to kafka.topics.erasure and prints it; the job
    confirms on kafka.topics.audit with the same request_id."""
    _publish(ctx.meta["settings"], new_request(user_id, ERASE, request_id))


@cli.command()
@click.argument("action", type=click.Choice(["reset", "opt-out", "opt-in"]))
@click.argument("user_id")
@REQUEST_ID
@click.pass_context
def control(ctx: click.Context, action: str, user_id: str, request_id: str | None) -> None:
    """A user's control over their personalization (raw id), carried out by the job:

    reset (profile, segments, predictions cleared; consent kept), opt-out (reset, then nothing
    profiled until an opt-in), opt-in. Published to kafka.topics.erasure with an "action"; the
    job confirms on kafka.topics.audit with the same request_id."""
    _publish(ctx.meta["settings"], new_request(user_id, action.replace("-", "_"), request_id))


def _publish(settings, request) -> None:
    try:
        record = request_record(request)
    except InvalidErasureRequest as err:
        click.echo(f"error: {err} (not published)", err=True)
        sys.exit(2)
    publish_record(settings, settings.kafka.topics.erasure, record)
    click.echo(record.decode())


@cli.command("index-for-erasure")
@click.pass_context
def index_for_erasure(ctx: click.Context) -> None:
    """Index the audience memberships and change-stream entries written before the erasure
    indexes (run once, with the job stopped; idempotent)."""
    settings = ctx.meta["settings"]
    memberships, entries = index_existing(connect(settings.redis), settings.redis.key_prefix)
    click.echo(f"indexed {memberships} audience memberships and {entries} stream entries")


@cli.command("expire-audiences")
@click.pass_context
def expire_audiences_command(ctx: click.Context) -> None:
    """Remove from every audience set the users whose profile expired (redis.profile_ttl); run it
    now and then, e.g. daily."""
    settings = ctx.meta["settings"]
    removed = expire_audiences(connect(settings.redis), settings.redis.key_prefix)
    click.echo(f"removed {removed} audience memberships of expired profiles")


if __name__ == "__main__":
    cli()
