"""Replay events into Kafka, keyed by user, with the record timestamp set to event time.

The job builds watermarks from Kafka record timestamps inside the source, so every
record carries ``timestamp_ms = event["ts"]``. Sending is paced against absolute
deadlines (record ``i`` is due at ``i / rate`` s), so fast rates sleep once per
batch, not per record, and the rate does not drift. Any failed send raises: a
replay that returns has had every record acknowledged.

    pz produce --dataset taobao --augment --rate 2000
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, TypedDict, TypeVar, Unpack, cast

import click
import orjson
from kafka import KafkaProducer
from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from personalization.replay.datasets import EventDict, locate_datasets, read_dataset, user_key
from personalization.replay.shuffle import bounded_shuffle
from personalization.replay.synthetic import DAY_MS, augment, generate

# "key": Kafka's default murmur2 partitioner on the user key (one user, one partition);
# "round_robin": spread each user's events over all partitions; int: everything to one
# partition (leaves the others idle, to exercise idleness timeouts).
Partitioner = Literal["key", "round_robin"] | int
DATASETS = ("auto", "taobao", "jd", "all", "synthetic")
MIN_SLEEP_S = 0.002
PROGRESS_REFRESH_S = 0.1
CLOSE_TIMEOUT_S = 10.0
# A short linger keeps paced replays low-latency; large batches help as-fast-as-possible runs;
# acks=all: an event acknowledged by a leader that dies before its followers copied it is lost.
PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 5, "batch_size": 256 * 1024, "acks": "all"}

T = TypeVar("T")


class RawRecord(NamedTuple):
    """A Kafka record as bytes, e.g. deliberately malformed input for the DLQ path."""

    value: bytes
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()  # e.g. a dead letter's (core.dead_letter)


class ProduceError(RuntimeError):
    """At least one record was not acknowledged by the broker."""


@dataclass(frozen=True)
class ProduceSummary:
    """What a replay delivered; only returned once every record is acknowledged or written."""

    sent: int
    elapsed_s: float
    destination: str

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return f"sent {self.sent:,} events to {self.destination} in {self.elapsed_s:.2f} s ({self.rate:,.0f} events/s)"


def to_record(event: EventDict) -> RawRecord:
    """Key = user id bytes, value = JSON bytes, timestamp = event time."""
    return RawRecord(value=orjson.dumps(event), key=user_key(event).encode(), timestamp_ms=event["ts"])


def pacing_delay(index: int, elapsed_s: float, rate: float | None, min_sleep_s: float = MIN_SLEEP_S) -> float:
    """Seconds to wait before sending record ``index`` (0-based), ``elapsed_s`` after the first.

    Waits shorter than ``min_sleep_s`` are skipped: records go out in small bursts
    and the next longer wait absorbs the slack. A sender that fell behind is never
    delayed, so it catches up.
    """
    if rate is None:
        return 0.0
    wait = index / rate - elapsed_s
    return wait if wait >= min_sleep_s else 0.0


class ProduceOptions(TypedDict, total=False):
    """How ``produce`` sends: the options of ``produce_raw``."""

    rate: float | None
    partitioner: Partitioner
    progress: bool
    config: Mapping[str, Any] | None


def produce(events: Iterable[EventDict], bootstrap: str, topic: str,
            **options: Unpack[ProduceOptions]) -> ProduceSummary:
    """Send contract events (see :func:`to_record`); ``config`` goes to ``KafkaProducer``."""
    return produce_raw(map(to_record, events), bootstrap, topic, **options)


def produce_raw(
    records: Iterable[RawRecord],
    bootstrap: str,
    topic: str,
    *,
    rate: float | None = None,
    partitioner: Partitioner = "key",
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
) -> ProduceSummary:
    """Send records as given, wait for every acknowledgement, raise :class:`ProduceError` on any failure."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER_DEFAULTS, **(config or {})})
    failures: list[BaseException] = []

    def fail() -> ProduceError:
        return ProduceError(f"{len(failures)} record(s) to {topic!r} failed; first: {failures[0]!r}")

    try:
        partition_for = _partition_chooser(partitioner, producer, topic)

        def send(index: int, record: RawRecord) -> None:
            if failures:  # stop early instead of queueing more doomed records
                raise fail()
            future = producer.send(
                topic,
                value=record.value,
                key=record.key,
                timestamp_ms=record.timestamp_ms,
                headers=list(record.headers) or None,
                partition=partition_for(index),
            )
            future.add_errback(failures.append)

        start = time.perf_counter()
        sent = _pump(records, send, rate, progress, f"{topic} @ {bootstrap}")
        producer.flush()
        elapsed = time.perf_counter() - start
    finally:
        producer.close(timeout=CLOSE_TIMEOUT_S)
    if failures:
        raise fail()
    return ProduceSummary(sent, elapsed, f"topic {topic!r}")


def write_jsonl(events: Iterable[EventDict], out: BinaryIO, *, progress: bool = True) -> ProduceSummary:
    """Write events as JSON lines: the file form of a replay, for backfills and inspection."""
    destination = getattr(out, "name", "output")
    start = time.perf_counter()
    sent = _pump(events, lambda _, event: out.write(orjson.dumps(event) + b"\n"), None, progress, destination)
    out.flush()
    return ProduceSummary(sent, time.perf_counter() - start, destination)


def _partition_chooser(partitioner: Partitioner, producer: KafkaProducer, topic: str) -> Callable[[int], int | None]:
    """Map a record's index to an explicit partition, or ``None`` for the key partitioner."""
    if partitioner == "key":
        return lambda _: None
    if isinstance(partitioner, int):
        return lambda _: partitioner
    if partitioner == "round_robin":
        partitions = sorted(producer.partitions_for(topic) or ())
        if not partitions:
            raise ProduceError(f"topic {topic!r} has no partitions; create it first")
        return lambda index: partitions[index % len(partitions)]
    raise ValueError(f"unknown partitioner {partitioner!r}")


class _RateColumn(ProgressColumn):
    """Average rate since the start (rich's own speed is a moving estimate, shown only for bars)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed if elapsed else 0.0:,.0f} events/s")


def _pump(items: Iterable[T], send: Callable[[int, T], object], rate: float | None, progress: bool, label: str) -> int:
    """Hand items to ``send`` at ``rate`` with a progress display on stderr; return the count."""
    bar = Progress(
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} sent"),
        _RateColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    sent = 0
    with bar:
        task = bar.add_task(label, total=None)
        start = last_refresh = time.perf_counter()
        for item in items:
            delay = pacing_delay(sent, time.perf_counter() - start, rate)
            if delay:
                time.sleep(delay)
            send(sent, item)
            sent += 1
            now = time.perf_counter()
            if now - last_refresh >= PROGRESS_REFRESH_S:
                bar.update(task, completed=sent)
                last_refresh = now
        bar.update(task, completed=sent)
    return sent


def replay_events(
    dataset: str,
    *,
    datasets_dir: Path | None = None,
    seed: int = 0,
    augmented: bool = False,
    limit: int | None = None,
    shuffle_ms: int = 0,
    users: int = 1000,
    duration_ms: int = DAY_MS,
    user_share: float = 1.0,
) -> Iterator[EventDict]:
    """The event stream the CLI sends: source -> user sample -> augment -> limit -> bounded shuffle.

    ``dataset`` is ``taobao``, ``jd``, ``all`` (both merged by time) or ``synthetic``;
    ``users`` and ``duration_ms`` only apply to ``synthetic``. ``user_share`` < 1 keeps every event
    of that share of the real datasets' users (``in_user_sample``) and none of the others': fewer
    events over the same span of event time, each kept user's history whole.
    """
    if dataset == "synthetic":
        if augmented or user_share < 1:
            raise ValueError("augment and user_share apply to real datasets; synthetic events already carry "
                             "every signal, and `users` sets how many users they have")
        events = generate(users, duration_ms=duration_ms, seed=seed)
    else:
        location = locate_datasets(datasets_dir)
        location.require()
        events = read_dataset(dataset, location, seed=seed)
        if user_share < 1:
            events = (event for event in events if in_user_sample(event["user_id"], user_share))
        if augmented:
            events = augment(events, seed)
    events = islice(events, limit)
    return iter(bounded_shuffle(events, shuffle_ms, seed)) if shuffle_ms else events


def in_user_sample(user_id: str, share: float) -> bool:
    """Whether ``user_id`` is in a sample of ``share`` of the users: by a CRC-32 of the id, so the
    same users on every run and machine."""
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % 10_000 < share * 10_000


def _parse_partitioner(_ctx: click.Context, _param: click.Parameter, value: str) -> Partitioner:
    if value in ("key", "round_robin"):
        return cast(Partitioner, value)
    if value.isdigit():
        return int(value)
    raise click.BadParameter("expected key, round_robin or a partition number")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default="auto",
    help="auto = all real datasets if present, else synthetic",
)
@click.option(
    "--datasets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="shared datasets folder [default: $PZ_DATASETS_DIR, else <repo>/../shared/datasets]",
)
@click.option(
    "--augment/--no-augment", default=False, help="real data only: add synthetic devices, dwell, scrolls, clicks"
)
@click.option("--seed", type=int, default=0)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="send at most N events")
@click.option("--users", type=click.IntRange(min=1), default=1000, help="synthetic: number of users")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=1.0, help="synthetic: days of activity")
@click.option("--shuffle-ms", type=click.IntRange(min=0), default=0, help="displace arrival by < N ms of event time")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="events/s [default: as fast as possible]"
)
@click.option("--bootstrap", default="127.0.0.1:9092")
@click.option("--topic", default="events")
@click.option(
    "--partitioner", default="key", callback=_parse_partitioner, help="key, round_robin or a partition number"
)
@click.option(
    "--output", type=click.File("wb"), default=None, help="write JSON lines here ('-' = stdout), unpaced, not to Kafka"
)
@click.option("--progress/--no-progress", default=True)
def main(
    dataset: str,
    datasets_dir: Path | None,
    augment: bool,
    seed: int,
    limit: int | None,
    users: int,
    days: float,
    shuffle_ms: int,
    rate: float | None,
    bootstrap: str,
    topic: str,
    partitioner: Partitioner,
    output: BinaryIO | None,
    progress: bool,
) -> None:
    """Replay a dataset, or a synthetic stream, into Kafka."""
    location = locate_datasets(datasets_dir)
    if dataset == "auto":
        dataset = "synthetic" if location.missing else "all"
        if location.missing:
            click.echo(f"{location.report()}\n-> replaying the synthetic stream instead", err=True)
            augment = False
    try:
        events = replay_events(
            dataset,
            datasets_dir=datasets_dir,
            seed=seed,
            augmented=augment,
            limit=limit,
            shuffle_ms=shuffle_ms,
            users=users,
            duration_ms=int(days * DAY_MS),
        )
    except (FileNotFoundError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    if output is None:
        summary = produce(events, bootstrap, topic, rate=rate, partitioner=partitioner, progress=progress)
    else:
        summary = write_jsonl(events, output, progress=progress)
    click.echo(str(summary), err=output is not None)
