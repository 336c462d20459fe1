"""Entry point: ``python -m personalization.pipelines.main [--config FILE] [--set key=value ...]``.

Also the ``flink run --python`` entry point on a cluster. The config and the rules file are
validated before the job graph is built, so a bad key or rule stops the job (exit code 2) before
it reads a single record; so does a DLQ topic too small for the dead letters of the events
topic's largest records.
"""

from __future__ import annotations

import sys

import click

from personalization.config.settings import ConfigError, Settings, load_settings
from personalization.core.rules import RuleSet, RulesError
from personalization.pipelines.rules import load_rules
from personalization.pipelines.topics import dlq_size_problem
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


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file (default: config/default.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set time.session_gap=10m (repeatable).")
@click.option("--check", is_flag=True, help="Validate the config and exit.")
def main(config_path: str | None, overrides: tuple[str, ...], check: bool) -> None:
    try:
        settings = load_settings(config_path, list(overrides))
        rules = load_rules(settings)
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except RulesError as err:
        click.echo(f"error: invalid rules: {err}", err=True)
        sys.exit(2)
    if settings.privacy.pseudonymize:
        try:  # fail before the job starts; the message names the variable, never the key
            Pseudonymizer(settings.privacy.pseudonym_key_env)
        except PseudonymKeyError as err:
            click.echo(f"error: privacy.pseudonymize: {err}", err=True)
            sys.exit(2)
    if check:
        click.echo(f"config ok, rules ok (version {rules.version!r})")
        return
    problem = dlq_size_problem(settings)
    if problem:  # the DLQ sink would fail on the first large reject, at every restart
        click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    run_job(settings, rules=rules)


if __name__ == "__main__":
    main()
