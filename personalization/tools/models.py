"""Operator CLI for model snapshot files (the trainer writes them to ``learning.snapshot_dir``).

    pz models list                  # the rollback menu, oldest first
    pz models show FILE             # header, metrics, clusters (checks the file)
    pz models export FILE OUT.json  # the model parameters as plain JSON
    pz models quality               # the propensity model's progressive validation on replays

Start a job from a snapshot, or roll a running job back to one (docs/learning.md "Online learning"):
stop the job with a savepoint, then resume it with ``--set learning.start_from=FILE`` (and the
savepoint). ``show`` loads the file exactly as the trainer will (digest, River version), so
run it first.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from personalization.config.cli import config_options, settings_or_exit
from personalization.core.learning.shared import SharedModels, SnapshotError, import_snapshot, list_snapshots, read_header
from personalization.tools import propensity_quality


def format_metric(value: float | None) -> str:
    """A progressive metric for people: "n/a" where it is undefined (None), never a made-up 0."""
    return "n/a" if value is None else f"{value:.4f}"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _load(path: str) -> tuple[dict, SharedModels]:
    try:
        return read_header(path), import_snapshot(path)
    except (OSError, SnapshotError) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


def parameters(models: SharedModels) -> dict:
    """The models' learned parameters in plain numbers (no pickle): for audit and offline use."""
    model = models.propensity.model
    if not hasattr(model, "parameters"):   # a snapshot of the logistic regression, the model before
        raise click.ClickException(f"this release exports the parameters of CalibratedNaiveBayes only; the "
                                   f"snapshot holds {model} (its header and metrics: `show`)")
    return {
        "propensity": {"model": str(model), **model.parameters(), "metrics": models.propensity.metrics()},
        "clusters": models.clusters.summary(),
        "trending": {"as_of": models.trending.anchor, "categories": models.trending.top(20)},
    }


@click.group()
def cli() -> None:
    """Model snapshot files: list, show, export; the propensity model's quality on replays."""


@cli.command("list")
@config_options
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Snapshot directory (default: learning.snapshot_dir).")
def list_(config_path, overrides, directory) -> None:
    """The snapshot files, oldest event time first."""
    directory = directory or settings_or_exit(config_path, overrides).learning.snapshot_dir
    found = list_snapshots(directory) if Path(directory).is_dir() else []
    if not found:
        click.echo(f"no snapshot files in {directory}")
        return
    table = Table(title=f"model snapshots in {directory}")
    for column in ("file", "created_at (event time, UTC)", "examples", "ROC AUC", "log loss", "bytes"):
        table.add_column(column)
    for path, header in found:
        m = header["metrics"]
        table.add_row(path.name, _utc(header["created_at"]), f"{header['examples_learned']:,}",
                      format_metric(m["roc_auc"]), format_metric(m["log_loss"]), f"{header['payload_bytes']:,}")
    Console(width=120).print(table)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
def show(path: str) -> None:
    """Check a snapshot as the trainer would load it, and print its header and models' summary."""
    header, models = _load(path)
    click.echo(orjson.dumps({"file": path, "header": header, **models.metrics()},
                            option=orjson.OPT_INDENT_2).decode())


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def export(path: str, out: str) -> None:
    """Write a snapshot's model parameters (naive Bayes counts, calibration, centroids, trending) as JSON."""
    header, models = _load(path)
    Path(out).write_bytes(orjson.dumps({"snapshot": header, **parameters(models)},
                                       option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    click.echo(f"{out}: parameters of {Path(path).name} ({header['examples_learned']:,} examples learned)")



cli.add_command(propensity_quality.main, "quality")
