"""``pz rules``: check a rules file, compare it with what the job runs, publish it to the running job.

    pz rules show > my-rules.yaml      # the rules the config names (default: the shipped ones)
    pz rules check my-rules.yaml
    pz rules diff my-rules.yaml        # against the rules last published to the running job
    pz rules publish my-rules.yaml

``publish`` checks the file exactly as the job will (the rules language and what the job's
config provides, e.g. the rolling windows) and refuses to publish a bad one; the running job
checks it again when it arrives on the rules topic (``kafka.topics.rules``) and keeps its
current rules if it is invalid, with a record on the DLQ topic (reason ``invalid_rules``).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

from personalization.config.cli import with_settings
from personalization.config.rules import display_path, read_rules
from personalization.config.settings import Settings
from personalization.core.rules import RuleSet, RulesError
from personalization.topics.records import last_record, publish_record


def publish(settings: Settings, text: str) -> None:
    """Send a rules file's text to the rules topic (its one partition keeps updates in order)."""
    publish_record(settings, settings.kafka.topics.rules, text.encode(), partition=0)


def current_rules(settings: Settings) -> tuple[str, str]:
    """What the running job runs, as (text, where from): the last rules published to the rules
    topic, else its start-up rules (``rules.path``). A published text the job rejected as
    invalid (DLQ reason ``invalid_rules``) is still what this returns."""
    published = last_record(settings, settings.kafka.topics.rules)
    if published is not None:
        return published.decode(), f"topic {settings.kafka.topics.rules}"
    return settings.rules.path.read_text(), display_path(settings.rules.path)


def _checked(path: Path, settings: Settings, consequence: str = "") -> RuleSet:
    """The rules of ``path``, or exit 2 naming file, line and problem."""
    try:
        return read_rules(path, settings)
    except RulesError as err:
        click.echo(f"error: {err}{consequence}", err=True)
        sys.exit(2)


@click.group()
def cli() -> None:
    """Rules files: check, diff, publish to the running job, show."""


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@with_settings
def check(settings: Settings, path: Path) -> None:
    """Check a rules file (exit 2 naming file, line and problem)."""
    rules = _checked(path, settings)
    click.echo(f"rules ok: version {rules.version!r}, {len(rules.segments)} segments")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--against", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Another rules file [default: the last rules published to the rules topic, else rules.path].")
@with_settings
def diff(settings: Settings, path: Path, against: Path | None) -> None:
    """Check a rules file and show what it changes: version, segments added and removed, and a
    unified diff of the text. Exit 0 if nothing changes, 1 if something does (like diff(1))."""
    try:
        new = read_rules(path, settings)
        if against is None:
            old_text, old_source = current_rules(settings)
        else:
            old_text, old_source = against.read_text(), display_path(against)
    except RulesError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        click.echo(f"error: {against}: cannot be read ({err.strerror})", err=True)
        sys.exit(2)
    if old_text == new.text:
        click.echo(f"no changes ({new.source} = {old_source})")
        return
    try:
        old = RuleSet(old_text, old_source)
        old_version, old_names = old.version, [segment.name for segment in old.segments]
    except RulesError as err:  # the text diff still shows what the new file changes
        click.echo(f"note: the current rules are not valid: {err}", err=True)
        old_version, old_names = None, []
    new_names = [segment.name for segment in new.segments]
    click.echo(f"version: {old_version!r} -> {new.version!r}")
    click.echo(f"segments added: {', '.join(n for n in new_names if n not in old_names) or '-'}")
    click.echo(f"segments removed: {', '.join(n for n in old_names if n not in new_names) or '-'}")
    click.echo("".join(difflib.unified_diff(old_text.splitlines(keepends=True), new.text.splitlines(keepends=True),
                                            fromfile=old_source, tofile=new.source)), nl=False)
    sys.exit(1)


@cli.command(name="publish")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@with_settings
def publish_command(settings: Settings, path: Path) -> None:
    """Check a rules file, then publish it to the rules topic of the running job."""
    rules = _checked(path, settings, " (not published)")
    publish(settings, rules.text)
    click.echo(f"published rules version {rules.version!r} to topic {settings.kafka.topics.rules!r}")


@cli.command()
@with_settings
def show(settings: Settings) -> None:
    """Print the rules file of the config (rules.path; default: the rules shipped with the package)."""
    click.echo(settings.rules.path.read_text(), nl=False)
