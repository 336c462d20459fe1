"""Inspect the dead-letter topic, and re-publish selected records after a fix.

    pz dlq list --reason schema_violation --since 2026-05-01T00:00
    pz dlq list --json | jq .detail
    pz dlq replay --reason timestamp_mismatch --dry-run
    pz dlq replay --reason timestamp_mismatch

The topic is ``kafka.topics.dlq`` of the config (``--config``, ``--set``). Reading is bounded:
the end offsets are taken when the command starts, so a job still writing to the DLQ cannot
keep it running, and a stalled read raises instead of returning a partial answer. Partitions
are read one after the other in offset order, so ``--limit`` picks the same records every time.

A DLQ record is the rejected record's bytes with headers saying why and from where
(``core.dead_letter``). ``replay`` sends those bytes with the original Kafka record timestamp
(header ``dlq.timestamp``; the job checks ``ts`` against it), keyed by the user id when
the payload is a JSON object carrying one. Any failed send raises. A replay that failed half-way
can be re-run: the records it already sent are sent again, and the job drops the repeats by
``event_id``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import click
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table
from rich.text import Text

from personalization.config.cli import with_settings
from personalization.config.settings import Settings
from personalization.core.dead_letter import DeadLetter, DeadLetterError
from personalization.config.kafka import client_config, kafka_client
from personalization.replay.producer import ProduceError, RawRecord, produce_raw

POLL_TIMEOUT_MS = 500
STALL_TIMEOUT_S = 30.0  # no progress towards the end offsets for this long: raise, never return a partial read
PREVIEW_CHARS = 60


class DlqError(RuntimeError):
    """The DLQ could not be read completely, or holds a record that is not a dead letter."""


@dataclass(frozen=True)
class DlqRecord:
    """One dead letter and where it sits in the DLQ topic (partition/offset there, not at the source)."""

    partition: int
    offset: int
    letter: DeadLetter

    @classmethod
    def parse(cls, partition: int, offset: int, value: bytes | None,
              headers: Iterable[tuple[str, bytes | None]]) -> DlqRecord:
        """Read the headers replay relies on, so a bad record fails here, naming its position."""
        try:
            return cls(partition, offset, DeadLetter.from_headers(value, headers))
        except DeadLetterError as err:
            raise DlqError(f"DLQ record at partition {partition} offset {offset} is not a dead letter: {err}"
                           ) from None

    @property
    def reason(self) -> str:
        return self.letter.reason

    @property
    def rejected_at(self) -> int:
        return self.letter.rejected_at

    def to_raw(self) -> RawRecord:
        """The record to re-publish: original bytes and timestamp; key = user id when there is one.

        Only rejections of control topics (rules, erasures) carry no source timestamp; they get the send time.
        """
        value = self.letter.value
        return RawRecord(value=value, key=_user_key(value), timestamp_ms=self.letter.timestamp)

    def to_json(self, topic: str) -> dict[str, Any]:
        """The dead letter as JSON (``DeadLetter.as_json``), plus where it is in the DLQ (for ``jq``)."""
        return {**self.letter.as_json(), "dlq": {"topic": topic, "partition": self.partition, "offset": self.offset}}


@dataclass(frozen=True)
class Selection:
    """Which DLQ records a command works on; an empty ``reasons`` means every reason."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None
    limit: int | None = None

    def matches(self, record: DlqRecord) -> bool:
        return ((not self.reasons or record.reason in self.reasons)
                and (self.since_ms is None or record.rejected_at >= self.since_ms))

    def apply(self, records: Iterable[DlqRecord]) -> Iterator[DlqRecord]:
        """Stops reading as soon as the limit is reached."""
        return islice(filter(self.matches, records), self.limit)


def parse_since(value: str) -> int:
    """Epoch milliseconds (as ``rejected_at``), or an ISO 8601 time; without an offset it is UTC."""
    if value.strip().isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"expected epoch milliseconds or an ISO time like 2026-05-01T12:00Z (got {value!r})") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_dlq(settings: Settings, stall_timeout_s: float = STALL_TIMEOUT_S) -> Iterator[DlqRecord]:
    """Every record of the DLQ topic up to the end offsets of the moment the read starts.

    ``read_committed``: with exactly-once outputs, records of open or aborted transactions are
    not rejections (yet). Raises :class:`DlqError` if the topic is missing or a partition makes
    no progress for ``stall_timeout_s``.
    """
    topic = settings.kafka.topics.dlq
    consumer = kafka_client(KafkaConsumer, settings, enable_auto_commit=False, isolation_level="read_committed")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise DlqError(f"DLQ topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            if starts[tp] >= ends[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, starts[tp])
            last_progress, position = time.monotonic(), starts[tp]
            while position < ends[tp]:
                for message in consumer.poll(timeout_ms=POLL_TIMEOUT_MS).get(tp, []):
                    if message.offset >= ends[tp]:
                        break
                    yield DlqRecord.parse(message.partition, message.offset, message.value, message.headers)
                if consumer.position(tp) > position:
                    last_progress, position = time.monotonic(), consumer.position(tp)
                elif time.monotonic() - last_progress > stall_timeout_s:
                    raise DlqError(f"reading {topic!r} partition {tp.partition} stalled at offset {position} "
                                   f"(end {ends[tp]}) for {stall_timeout_s:.0f} s")
    finally:
        consumer.close()


def replay(settings: Settings, records: Iterable[DlqRecord], topic: str) -> int:
    """Re-publish the records' original bytes to ``topic``; returns the count, all acknowledged.

    Raises :class:`ProduceError` if any send failed (nothing is dropped silently).
    """
    config = {"max_request_size": settings.kafka.max_message_bytes, **client_config(KafkaProducer, settings)}
    summary = produce_raw((record.to_raw() for record in records), settings.kafka.bootstrap_servers, topic,
                          progress=False, config=config)
    return summary.sent


def _user_key(value: bytes) -> bytes | None:
    """The anonymous id (else user id) as the Kafka key, like the producer CLI, when the payload has one."""
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    identity = payload.get("anonymous_id") or payload.get("user_id")
    return identity.encode() if isinstance(identity, str) else None


def _utc(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _preview(record: DlqRecord) -> Text:
    """Text payloads as text; other bytes as a Python bytes literal (readable escapes, not base64)."""
    try:
        text, style = record.letter.value.decode("utf-8"), ""
    except UnicodeDecodeError:
        text, style = repr(record.letter.value), "yellow"
    text = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"
    return Text(text, style=style)


def _source(record: DlqRecord) -> Text:
    letter = record.letter
    where = "/".join(str(n) for n in (letter.partition, letter.offset) if n is not None)
    return Text(f"{letter.topic} {where}".strip())


def _table(records: Iterable[DlqRecord], topic: str) -> Table:
    """Every cell is a ``Text``: payloads and paths contain ``[...]`` that rich would read as markup."""
    table = Table(title=f"DLQ {topic}", caption_justify="left")
    table.add_column("rejected at (UTC)", min_width=10)  # date and time on two lines when narrow
    table.add_column("reason", no_wrap=True)
    table.add_column("source p/offset", min_width=6)
    table.add_column("detail", ratio=3, overflow="fold")
    table.add_column("path", ratio=1, overflow="fold")
    table.add_column("payload", ratio=3, overflow="fold")
    shown = 0
    for record in records:
        table.add_row(Text(_utc(record.rejected_at)), Text(record.reason, style="bold red"), _source(record),
                      Text(record.letter.detail), Text(record.letter.path or "-"),
                      _preview(record))
        shown += 1
    table.caption = f"{shown} record(s)"
    return table


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _selection_options(command: Callable[..., None]) -> Callable[..., None]:
    """The filters shared by ``list`` and ``replay``."""
    command = click.option("--limit", type=click.IntRange(min=0), default=None, help="at most N records")(command)
    command = click.option("--since", callback=_since,
                           help="rejected at or after: epoch ms or ISO time (UTC if no offset)")(command)
    return click.option("--reason", "reasons", multiple=True, help="only this reason (repeatable)")(command)


@click.group()
def cli() -> None:
    """List and replay the dead-letter topic (kafka.topics.dlq)."""


@cli.command("list")
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line: the dead letter plus its DLQ position")
@with_settings
def list_command(settings: Settings, reasons: tuple[str, ...], since: int | None, limit: int | None,
                    as_json: bool) -> None:
    """Show rejected records: reason, detail, JSON path, source position, payload preview."""
    topic = settings.kafka.topics.dlq
    try:
        with closing(read_dlq(settings)) as dlq:
            records = Selection(frozenset(reasons), since, limit).apply(dlq)
            if as_json:
                for record in records:
                    click.echo(orjson.dumps(record.to_json(topic)).decode())
            else:
                Console().print(_table(records, topic))
    except DlqError as err:
        raise click.ClickException(str(err)) from None


@cli.command("replay")
@_selection_options
@click.option("--to", "target", default=None, help="topic to publish to [default: kafka.topics.events]")
@click.option("--dry-run", is_flag=True, help="count what would be re-published, publish nothing")
@with_settings
def replay_command(settings: Settings, reasons: tuple[str, ...], since: int | None, limit: int | None,
                   target: str | None, dry_run: bool) -> None:
    """Re-publish the original bytes of the selected records (original timestamps)."""
    target = target or settings.kafka.topics.events
    selection = Selection(frozenset(reasons), since, limit)
    if dry_run:
        try:
            with closing(read_dlq(settings)) as dlq:  # reads every header: a clean dry run means all can be sent
                count = sum(1 for _ in selection.apply(dlq))
        except DlqError as err:
            raise click.ClickException(str(err)) from None
        click.echo(f"dry run: would re-publish {count} record(s) to topic {target!r}")
        return
    try:
        with closing(read_dlq(settings)) as dlq:
            count = replay(settings, selection.apply(dlq), target)
    except (DlqError, ProduceError) as err:
        raise click.ClickException(f"{err}\nrecords sent before the failure stay sent: a re-run sends them again "
                                   f"and the job drops the repeats by event_id") from None
    click.echo(f"re-published {count} record(s) to topic {target!r}")
