"""Operator commands over the reader library (``pz profile|segments|members|sizes|follow|erase``).

    pz profile <user>      # the whole profile
    pz segments <user>     # segments, primary, scores
    pz members <segment>   # the segment's audience
    pz sizes               # members per segment
    pz follow [--from 0]   # segment changes as they happen
    pz erase <user>        # request the user's erasure (right to be forgotten)
"""

from __future__ import annotations

import sys
import time
import uuid

import click
import orjson

from personalization.config.cli import with_settings
from personalization.config.settings import Settings
from personalization.core.privacy import ErasureRequest, InvalidErasureRequest, parse_erasure
from personalization.pipelines.topics import publish_record
from personalization.serving.reader import ProfileReader


@click.command()
@click.argument("user_id")
@with_settings
def profile(settings: Settings, user_id: str) -> None:
    """Print a user's profile as JSON (exit 1 if there is none)."""
    found = ProfileReader.from_settings(settings).get(user_id)
    if found is None:
        click.echo(f"no profile for user {user_id!r}", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@click.command()
@click.argument("user_id")
@with_settings
def segments(settings: Settings, user_id: str) -> None:
    """Print a user's segments, primary segment and scores as JSON (exit 1 if there is no profile)."""
    found = ProfileReader.from_settings(settings).segments(user_id)
    if found is None:
        click.echo(f"no profile for user {user_id!r}", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@click.command()
@click.argument("segment")
@with_settings
def members(settings: Settings, segment: str) -> None:
    """Print the users currently in a segment, one per line."""
    for user_id in sorted(ProfileReader.from_settings(settings).members(segment)):
        click.echo(user_id)


@click.command()
@with_settings
def sizes(settings: Settings) -> None:
    """Print the number of members of every segment."""
    for segment, size in sorted(ProfileReader.from_settings(settings).segment_sizes().items()):
        click.echo(f"{segment}\t{size}")


@click.command()
@click.option("--from", "start", default="$", show_default=True,
              help="Stream id to start after: $ = only new changes, 0 = from the oldest kept.")
@click.option("--limit", type=int, default=None, help="Stop after this many changes.")
@with_settings
def follow(settings: Settings, start: str, limit: int | None) -> None:
    """Print segment changes as JSON lines as they are appended (Ctrl-C to stop)."""
    seen = 0
    for entry_id, record in ProfileReader.from_settings(settings).follow(start):
        click.echo(orjson.dumps({"id": entry_id, **record}).decode())
        seen += 1
        if limit is not None and seen >= limit:
            return


@click.command()
@click.argument("user_id")
@click.option("--request-id", default=None, help="Id to find the confirmation by (default: a new UUID).")
@with_settings
def erase(settings: Settings, user_id: str, request_id: str | None) -> None:
    """Request the erasure of a user (raw id: the job pseudonymizes it like the events).

    Publishes {user_id, request_id, requested_at} to kafka.topics.erasure and prints it; the job
    confirms on kafka.topics.audit with the same request_id."""
    request = ErasureRequest(user_id, request_id or str(uuid.uuid4()), int(time.time() * 1000))
    record = orjson.dumps(request.as_record())
    try:
        parse_erasure(record.decode())  # refuse here what the job would send to the DLQ
    except InvalidErasureRequest as err:
        click.echo(f"error: {err} (not published)", err=True)
        sys.exit(2)
    publish_record(settings, settings.kafka.topics.erasure, record)
    click.echo(record.decode())


COMMANDS = (profile, segments, members, sizes, follow, erase)
