"""Recommendation quality by prequential evaluation on the real datasets, in plain Python.

Every interaction is first a test, then a lesson: before the recommender learns an event, each
source is asked for the user's top 10 and scored against the event's item (HR@10: in the list;
MRR@10: 1/rank, 0 when absent); then every source learns it. All sources see the same events in
one run, so their numbers compare.

Which events are tested: product views, add-to-carts and purchases of a user with a previous item
whose item differs from that previous item. "Next item" thus excludes repeats of the current item
(a JD session repeats an item for each click, scroll and add-to-cart on its page, and the current
item is excluded from every source's list), and a user's first event is not tested (there is no
current item; cold start shows trending, which is measured as its own source).

    .venv/bin/python -m personalization.tools.reco_quality                 # taobao and jd, PNG in docs/
    .venv/bin/python -m personalization.tools.reco_quality --dataset jd --limit 20000
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from personalization.config.settings import REPO_ROOT, load_settings
from personalization.core.recommend.config import RecoConfig
from personalization.core.recommend.recommender import SOURCES, Interaction, Recommender
from personalization.replay.producer import replay_events

TESTED = frozenset({"product_view", "add_to_cart", "purchase"})
CURVE_WINDOW = 2_000   # tested events per point of the HR@10-over-the-stream plot
DEFAULT_PLOT = REPO_ROOT / "docs" / "reco-quality.png"


@dataclass(slots=True)
class Quality:
    """Hits and reciprocal ranks per source, in total and per window of tested events."""

    dataset: str
    learned: int = 0
    tested: int = 0
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    reciprocal_ranks: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0.0))
    curve: dict[str, list[float]] = field(default_factory=lambda: {source: [] for source in SOURCES})
    _window_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    def hr(self, source: str) -> float:
        return self.hits[source] / self.tested if self.tested else 0.0

    def mrr(self, source: str) -> float:
        return self.reciprocal_ranks[source] / self.tested if self.tested else 0.0

    def score(self, source: str, recommended: list[str], item: str) -> None:
        if item in recommended:
            self.hits[source] += 1
            self._window_hits[source] += 1
            self.reciprocal_ranks[source] += 1.0 / (recommended.index(item) + 1)

    def close_test(self) -> None:
        self.tested += 1
        if self.tested % CURVE_WINDOW == 0:
            for source in SOURCES:
                self.curve[source].append(self._window_hits[source] / CURVE_WINDOW)
                self._window_hits[source] = 0


def interactions(events: Iterable[dict], weights: dict[str, float]) -> Iterator[Interaction]:
    """The events the recommender learns from: item events of a weighted type."""
    for event in events:
        if event.get("item_id") and weights.get(event["event_type"], 0.0) > 0:
            yield Interaction(event["user_id"], event["item_id"], event.get("category_id"), event["event_type"],
                              event["ts"], event.get("referrer"), event.get("device"))


def evaluate(dataset: str, stream: Iterable[Interaction], config: RecoConfig) -> Quality:
    """Predict, then learn, for every interaction of ``stream``."""
    recommender = Recommender(config)
    quality = Quality(dataset)
    for x in stream:
        user = recommender.users.get(x.user)
        if x.kind in TESTED and user is not None and user.recent and x.item != next(reversed(user.recent)):
            for source in SOURCES:
                recommended = [r.item for r in recommender.recommend(x.user, x.ts, source)]
                quality.score(source, recommended, x.item)
            quality.close_test()
        recommender.learn(x)
        quality.learned += 1
    return quality


def measure(dataset: str, limit: int | None = None, config: RecoConfig | None = None) -> Quality:
    """One dataset (``taobao`` or ``jd``, both JD files merged by time), its first ``limit`` events."""
    config = config or load_settings().recommendations.core()
    return evaluate(dataset, interactions(replay_events(dataset, limit=limit), config.event_weights), config)


def plot(results: list[Quality], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for axis, quality in zip(axes[0], results):
        for source in SOURCES:
            points = quality.curve[source]
            axis.plot([(i + 1) * CURVE_WINDOW for i in range(len(points))], points, label=source,
                      linewidth=2.5 if source == "blend" else 1.2)
        axis.set_title(f"{quality.dataset}: HR@10 per {CURVE_WINDOW:,} tested events")
        axis.set_xlabel("tested events")
        axis.set_ylabel("HR@10")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


@click.command()
@click.option("--dataset", "datasets", type=click.Choice(["taobao", "jd"]), multiple=True,
              help="Datasets to measure (default: both).")
@click.option("--limit", type=int, default=None, help="Only the first LIMIT events of each dataset.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_PLOT,
              show_default=True, help="Where to write the HR@10-over-the-stream PNG.")
def main(datasets: tuple[str, ...], limit: int | None, plot_path: Path) -> None:
    """Prequential HR@10 / MRR@10 of the recommenders on the real datasets (predict, then learn)."""
    results = [measure(name, limit) for name in datasets or ("taobao", "jd")]
    table = Table(title="recommendations, prequential HR@10 / MRR@10 (predict, then learn)")
    table.add_column("source")
    for quality in results:
        table.add_column(f"{quality.dataset} HR@10", justify="right")
        table.add_column(f"{quality.dataset} MRR@10", justify="right")
    for source in SOURCES:
        table.add_row(source, *(f"{value:.4f}" for q in results for value in (q.hr(source), q.mrr(source))))
    console = Console()
    console.print(table)
    for quality in results:
        console.print(f"{quality.dataset}: {quality.learned:,} interactions learned, {quality.tested:,} tested; "
                      f"blend / popularity {ratio(quality, 'popularity'):.1f}x, "
                      f"blend / trending {ratio(quality, 'trending'):.1f}x")
    plot(results, plot_path)
    console.print(f"plot: {plot_path}")


def ratio(quality: Quality, baseline: str) -> float:
    """The blend's HR@10 over a baseline's (inf when the baseline never hits)."""
    base = quality.hr(baseline)
    return quality.hr("blend") / base if base else float("inf")

