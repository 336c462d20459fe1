"""Rules files for the job: load and check them, publish an update to a running job.

    python -m personalization.pipelines.rules check rules/default.yaml
    python -m personalization.pipelines.rules publish rules/default.yaml

``publish`` checks the file exactly as the job will (the rules language and what the job's
config provides, e.g. the rolling windows) and refuses to publish a bad one; the running job
checks it again when it arrives on the rules topic (``kafka.topics.rules``) and keeps its
current rules if it is invalid, with a record on the DLQ topic (reason ``invalid_rules``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from personalization.config.cli import KafkaCommands, config_options, settings_or_exit
from personalization.config.settings import REPO_ROOT, Settings
from personalization.core import aggregates
from personalization.core.rules import RuleSet, RulesError
from personalization.pipelines.topics import publish_record

TOPIC_SOURCE = "rules topic"  # how errors name a rules text that came from the topic


def display_path(path: Path) -> str:
    """``rules/default.yaml`` for files in the repository, the path as given elsewhere."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def compile_rules(text: str, source: str, settings: Settings) -> RuleSet:
    """Parse and check ``text`` as the job would run it; raises ``RulesError`` (file:line: ...)."""
    rules = RuleSet(text, source)
    aggregates.check_provided(rules, settings.time.windows.sizes)
    return rules


def read_rules(path: Path, settings: Settings) -> RuleSet:
    source = display_path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RulesError(f"{source}: cannot be read ({err.strerror})") from None
    return compile_rules(text, source, settings)


def load_rules(settings: Settings) -> RuleSet:
    """The start-up rules (``rules.path``)."""
    return read_rules(settings.rules.path, settings)


def publish(settings: Settings, text: str) -> None:
    """Send a rules file's text to the rules topic (its one partition keeps updates in order)."""
    publish_record(settings, settings.kafka.topics.rules, text.encode(), partition=0)


@click.group(cls=KafkaCommands)
@config_options
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, overrides: tuple[str, ...]) -> None:
    ctx.obj = settings_or_exit(config_path, overrides)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def check(settings: Settings, path: Path) -> None:
    """Check a rules file (exit 2 naming file, line and problem)."""
    try:
        rules = read_rules(path, settings)
    except RulesError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    click.echo(f"rules ok: version {rules.version!r}, {len(rules.segments)} segments")


@cli.command(name="publish")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def publish_command(settings: Settings, path: Path) -> None:
    """Check a rules file, then publish it to the rules topic of the running job."""
    try:
        rules = read_rules(path, settings)
    except RulesError as err:
        click.echo(f"error: {err} (not published)", err=True)
        sys.exit(2)
    publish(settings, rules.text)
    click.echo(f"published rules version {rules.version!r} to topic {settings.kafka.topics.rules!r}")


if __name__ == "__main__":
    cli()
