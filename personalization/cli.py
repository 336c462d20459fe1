"""``pz``: the one command of the project (installed with the package; ``python -m personalization``
is the same). Each subcommand is the click command of the module that does the work; this file
only names them. Shell completion: README "The pz command"."""

from __future__ import annotations

import importlib

import click

from personalization import __version__
from personalization.config.cli import KafkaCommands

COMMANDS = {  # name -> "module:click command"
    "run": "personalization.pipelines.main:run_command",
    "demo": "personalization.tools.demo:main",
    "produce": "personalization.replay.producer:main",
    "catalog": "personalization.replay.catalog:main",
    "topics": "personalization.tools.topics:cli",
    "dlq": "personalization.tools.dlq:cli",
    "rules": "personalization.tools.rules:cli",
    "models": "personalization.tools.models:cli",
    "reco-quality": "personalization.tools.reco_quality:main",
    "config": "personalization.pipelines.main:config_cli",
    "api": "personalization.serving.api:main",
    "webhooks": "personalization.activation.cli:cli",
    "experiment-report": "personalization.serving.experiments:report_command",
    **{name: f"personalization.serving.cli:{name}"
       for name in ("profile", "segments", "recommendations", "members", "sizes", "follow", "erase", "control")},
    "index-for-erasure": "personalization.serving.cli:index_for_erasure",
    "expire-audiences": "personalization.serving.cli:expire_audiences_command",
}


class LazyCommands(KafkaCommands):
    """Imports a subcommand's module only when it is used: ``pz --version`` and shell completion
    of the command names need not load PyFlink, River and FastAPI (seconds)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="pz")
def pz() -> None:
    """Real-time behavioral personalization: Kafka -> PyFlink -> Redis.

    Commands that read the config take --config FILE and --set KEY=VALUE (repeatable)."""
