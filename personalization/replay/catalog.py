"""Derive an item catalog (item_id -> category_id CSV) from the shared datasets.

    pz catalog --dataset taobao --out .stack/catalog.csv

One dataset per catalog: item ids are a namespace per shop, and Taobao's and JD's collide
(e.g. item 584871 is category 3160926 on Taobao and 689 at JD).

The job loads it with ``--set enrichment.item_catalog=.stack/catalog.csv`` (see
``personalization.udfs.catalog``).
"""

from __future__ import annotations

from pathlib import Path

import click

from personalization.replay.datasets import locate_datasets, read_dataset
from personalization.udfs.catalog import write_catalog


def catalog_pairs(dataset: str, datasets_dir: Path | None = None):
    location = locate_datasets(datasets_dir)
    location.require()
    for event in read_dataset(dataset, location):
        if event.get("item_id") and event.get("category_id"):
            yield event["item_id"], event["category_id"]


@click.command()
@click.option("--dataset", type=click.Choice(["taobao", "jd"]), default="taobao", show_default=True)
@click.option("--datasets-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="default: $PZ_DATASETS_DIR, else ../shared/datasets")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def main(dataset: str, datasets_dir: Path | None, out: Path) -> None:
    """Write an item catalog (item_id,category_id CSV) derived from a dataset, for enrichment.item_catalog."""
    out.parent.mkdir(parents=True, exist_ok=True)
    items = write_catalog(catalog_pairs(dataset, datasets_dir), out)
    click.echo(f"{items} items -> {out}")
