"""``pz webhooks run|replay``: the webhook service and its DLQ replay."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from personalization.activation.service import replay, run
from personalization.activation.signing import SecretMissing
from personalization.config.cli import with_settings
from personalization.config.settings import Settings


@click.group()
def cli() -> None:
    """Deliver segment changes to webhooks (docs/webhooks.md "Webhooks")."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise


@cli.command("run")
@with_settings
def run_command(settings: Settings) -> None:
    """Consume kafka.topics.segment_changes until SIGTERM/SIGINT (then finish the batch in hand)."""
    if not settings.activation.endpoints:  # it would commit the changes it read, delivered nowhere
        click.echo("error: no webhook endpoints configured (activation.endpoints)", err=True)
        sys.exit(2)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        stats = run(settings, stop=stopping.is_set)
    except SecretMissing as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(f"stopped: {stats.records} changes, {stats.delivered} deliveries, "
               f"{stats.dead_lettered} dead-lettered ({stats.invalid} invalid records)")


@cli.command("replay")
@click.option("--endpoint", required=True, help="Name of the endpoint whose dead letters to deliver again.")
@with_settings
def replay_command(settings: Settings, endpoint: str) -> None:
    """Deliver an endpoint's dead-lettered changes again, up to the DLQ's end now."""
    try:
        stats = replay(settings, endpoint)
    except (SecretMissing, KeyError) as err:
        click.echo(f"error: {err.args[0]}", err=True)
        sys.exit(2)
    click.echo(f"replayed for {endpoint}: {stats.delivered} delivered, {stats.dead_lettered} dead-lettered again")
