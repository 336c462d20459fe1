"""Operator commands over the reader library and the user's privacy requests.

    pz profile <user>          # the whole profile
    pz segments <user>         # segments, primary, scores
    pz recommendations <user>  # top-N items, each with its source, and the model version
    pz members <segment>       # the segment's audience
    pz sizes                   # members per segment
    pz follow [--from 0]       # segment changes as they happen
    pz erase <user>            # request the user's erasure (right to be forgotten)
    pz control reset <user>    # reset / opt-out / opt-in the user's personalization
    pz index-for-erasure       # once: index keys written before the erasure indexes
    pz expire-audiences        # drop members whose profile expired (--every 1h: until stopped)
"""

from __future__ import annotations

import sys
import time

import click
import orjson

from personalization.config.cli import with_settings
from personalization.config.settings import Settings
from personalization.core.durations import parse_duration_ms
from personalization.core.privacy import ERASE, InvalidErasureRequest
from personalization.serving.audiences import expire_audiences
from personalization.serving.controls import Request, RequestPublisher, new_request
from personalization.serving.erasure import index_existing
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect, retry_while_down


def _print_json(found: object | None, missing: str) -> None:
    """``found`` as indented JSON, or ``missing`` on stderr and exit 1 (nothing to show)."""
    if found is None:
        click.echo(missing, err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@click.command()
@click.argument("user_id")
@with_settings
def profile(settings: Settings, user_id: str) -> None:
    """Print a user's profile as JSON (exit 1 if there is none)."""
    _print_json(ProfileReader.from_settings(settings).get(user_id), f"no profile for user {user_id!r}")


@click.command()
@click.argument("user_id")
@with_settings
def segments(settings: Settings, user_id: str) -> None:
    """Print a user's segments, primary segment and scores as JSON (exit 1 if there is no profile)."""
    _print_json(ProfileReader.from_settings(settings).segments(user_id), f"no profile for user {user_id!r}")


@click.command()
@click.argument("user_id")
@with_settings
def recommendations(settings: Settings, user_id: str) -> None:
    """Print a user's recommended items with their source and the model version as JSON (exit 1 if none)."""
    _print_json(ProfileReader.from_settings(settings).recommendations(user_id),
                f"no recommendations for user {user_id!r}")


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
    for seen, (entry_id, record) in enumerate(ProfileReader.from_settings(settings).follow(start), start=1):
        click.echo(orjson.dumps({"id": entry_id, **record}).decode())
        if limit is not None and seen >= limit:
            return


REQUEST_ID = click.option("--request-id", default=None, help="Id to find the confirmation by (default: a new UUID).")


@click.command()
@click.argument("user_id")
@REQUEST_ID
@with_settings
def erase(settings: Settings, user_id: str, request_id: str | None) -> None:
    """Request the erasure of a user (raw id: the job pseudonymizes it like the events).

    Publishes {user_id, request_id, requested_at} to kafka.topics.erasure and prints it; the job
    confirms on kafka.topics.audit with the same request_id."""
    _publish(settings, new_request(user_id, ERASE, request_id))


@click.command()
@click.argument("action", type=click.Choice(["reset", "opt-out", "opt-in"]))
@click.argument("user_id")
@REQUEST_ID
@with_settings
def control(settings: Settings, action: str, user_id: str, request_id: str | None) -> None:
    """A user's control over their personalization (raw id), carried out by the job:

    reset (profile, segments, predictions cleared; consent kept), opt-out (reset, then nothing
    profiled until an opt-in), opt-in. Published to kafka.topics.erasure with an "action"; the
    job confirms on kafka.topics.audit with the same request_id."""
    _publish(settings, new_request(user_id, action.replace("-", "_"), request_id))


def _publish(settings: Settings, request: Request) -> None:
    publisher = RequestPublisher(settings)
    try:
        record = publisher.publish(request)
    except InvalidErasureRequest as err:
        click.echo(f"error: {err} (not published)", err=True)
        sys.exit(2)
    finally:
        publisher.close()
    click.echo(record.decode())


@click.command("index-for-erasure")
@with_settings
def index_for_erasure(settings: Settings) -> None:
    """Index the audience memberships and change-stream entries written before the erasure
    indexes (run once, with the job stopped; idempotent)."""
    memberships, entries = index_existing(connect(settings.redis), settings.redis.key_prefix)
    click.echo(f"indexed {memberships} audience memberships and {entries} stream entries")


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        every = parse_duration_ms(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    if every <= 0:
        raise click.BadParameter("must be greater than 0")
    return every


@click.command("expire-audiences")
@click.option("--every", metavar="DURATION", callback=_duration,
              help="Sweep again every DURATION (e.g. 1h) until stopped, riding out Redis outages; "
                   "default: once.")
@with_settings
def expire_audiences_command(settings: Settings, every: int | None) -> None:
    """Remove from every audience set the users whose profile expired (redis.profile_ttl). Audience
    sets have no TTL of their own: run it with --every beside the job (docker/compose.yaml's
    audience-sweeper does), or now and then."""
    client = connect(settings.redis)
    while True:
        removed = retry_while_down(lambda: expire_audiences(client, settings.redis.key_prefix),
                                   settings.redis.retry_backoff_max)
        click.echo(f"removed {removed} audience memberships of expired profiles")
        if every is None:
            return
        time.sleep(every / 1000)
