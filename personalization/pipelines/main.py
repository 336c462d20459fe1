"""The job's commands: ``pz run`` (run the job) and ``pz config check|show``.

This file is also the ``flink run --python`` entry point on a cluster (its arguments are those of
``pz run``). The config and the rules file are validated before the job graph is built, so a bad
key or rule stops the job (exit code 2) before it reads a single record; so does a DLQ topic too
small for the dead letters of the events topic's largest records.
"""

from __future__ import annotations

import sys

import click

from personalization.config.cli import with_settings
from personalization.config.settings import DEFAULT_CONFIG, Settings
from personalization.core.rules import RuleSet, RulesError
from personalization.config.rules import load_rules
from personalization.topics.admin import dlq_size_problem
from personalization.udfs.pseudonymize import Pseudonymizer, PseudonymKeyError


def run_job(settings: Settings, wait: bool = True, job_name: str = "personalization",
            rules: RuleSet | None = None):
    """Build and submit the job; returns the JobClient when ``wait`` is False.

    ``rules``: the start-up rules, already checked (default: load ``rules.path``)."""
    from personalization.pipelines.job import build, create_environment

    env = create_environment(settings)
    build(env, settings, rules)
    if wait:
        env.execute(job_name)
        return None
    return env.execute_async(job_name)


def checked_rules(settings: Settings) -> RuleSet:
    """The start-up rules, once everything the job checks before it starts is fine (else exit 2):
    the rules file against the config, and the pseudonym key when ids are pseudonymized."""
    try:
        rules = load_rules(settings)
    except RulesError as err:
        click.echo(f"error: invalid rules: {err}", err=True)
        sys.exit(2)
    if settings.privacy.pseudonymize:
        try:  # fail before the job starts; the message names the variable, never the key
            Pseudonymizer(settings.privacy.pseudonym_key_env)
        except PseudonymKeyError as err:
            click.echo(f"error: privacy.pseudonymize: {err}", err=True)
            sys.exit(2)
    return rules


@click.command("run")
@with_settings
def run_command(settings: Settings) -> None:
    """Run the job (local MiniCluster, or the cluster of `flink run`) until it ends or Ctrl-C."""
    rules = checked_rules(settings)
    problem = dlq_size_problem(settings)
    if problem:  # the DLQ sink would fail on the first large reject, at every restart
        click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    run_job(settings, rules=rules)


@click.group("config")
def config_cli() -> None:
    """The job's configuration: check a config, show the default one."""


@config_cli.command("check")
@with_settings
def check_command(settings: Settings) -> None:
    """Validate the config and its rules file as the job does at start-up (exit 2 naming the problem)."""
    rules = checked_rules(settings)
    click.echo(f"config ok, rules ok (version {rules.version!r}, {len(rules.segments)} segments)")


@config_cli.command("show")
def show_command() -> None:
    """Print the default config (every key with its default and what it does): a start for your own."""
    click.echo(DEFAULT_CONFIG.read_text(), nl=False)


if __name__ == "__main__":  # flink run --python personalization/pipelines/main.py [--config ...] [--set ...]
    run_command()
