"""Erasure time with many users in Redis (issue 19, point 6): ``.venv/bin/python -m bench.erasure``.

Writes ``--users`` users through the job's own writer (``ProfileWriter.write_many``: profile,
segment changes in the stream, audience sets and the erasure indexes) under a prefix of its own,
then erases ``--erase`` random users one by one with ``serving.erasure.erase_user`` and reports the
time per erasure. For scale, it also times one pass of the ``SCAN`` over the audience sets that
each erasure needed before the indexes (plus a full read of the change stream, also timed).
Deletes everything it wrote at the end. Writes ``bench/results/erasure.md``.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid

import click

from bench.run import RESULTS
from personalization.config.settings import load_settings
from personalization.serving.erasure import erase_user
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import ProfileWriter, changes_key, connect, members_key_pattern

SEGMENTS = ("high_intent", "browser", "cart_abandoner", "loyal_customer", "bargain_hunter", "new_visitor")
BATCH = 500


def profile(n: int) -> dict:
    """A small profile of user ``n`` (the erasure's cost does not depend on its size)."""
    return {"user_id": f"bench-{n}", "version": 2, "events_total": 3, "counts": {"product_view": 3},
            "first_seen": 1_511_658_000_000, "last_seen": 1_511_658_060_000, "top_categories": [str(n % 997)]}


def changes(n: int) -> list[dict]:
    """User ``n`` enters one or two segments."""
    chosen = SEGMENTS[n % len(SEGMENTS)], SEGMENTS[(n * 7 + 1) % len(SEGMENTS)]
    return [{"user_id": f"bench-{n}", "segment": segment, "action": "enter", "seq": seq,
             "event_time": 1_511_658_000_000 + seq, "rules_version": "bench", "cause": {"rule": f"{segment}.entry"}}
            for seq, segment in enumerate(dict.fromkeys(chosen), start=1)]


@click.command()
@click.option("--users", default=1_000_000, show_default=True)
@click.option("--erase", "erasures", default=1_000, show_default=True, help="Random users erased, one at a time.")
def main(users: int, erasures: int) -> None:
    settings = load_settings()
    client = connect(settings.redis)
    prefix = f"bench-erasure:{uuid.uuid4().hex[:8]}"
    writer = ProfileWriter(client, prefix, ttl_ms=3_600_000, stream_maxlen=settings.rules.stream_maxlen)
    try:
        started = time.monotonic()
        for first in range(0, users, BATCH):
            writer.write_many([(profile(n), changes(n)) for n in range(first, min(first + BATCH, users))])
        fill_s = time.monotonic() - started
        keys = client.dbsize()
        started = time.monotonic()
        audience_sets = sum(1 for _ in client.scan_iter(match=members_key_pattern(prefix), count=1_000))
        scan_s = time.monotonic() - started
        started = time.monotonic()
        stream_entries = sum(len(page) for page in _stream_pages(client, changes_key(prefix)))
        stream_s = time.monotonic() - started
        times, removed = [], []
        for n in random.Random(1).sample(range(users), erasures):
            started = time.perf_counter()
            removed.append(erase_user(client, prefix, f"bench-{n}") - 2)  # less the two index keys
            times.append(time.perf_counter() - started)
    finally:
        ProfileReader(client, prefix).delete_all()
    times_ms = sorted(t * 1000 for t in times)
    report = "\n".join([
        "# Erasure time (`python -m bench.erasure`)", "",
        f"- {users:,} users written through ProfileWriter in {fill_s:.0f} s; {keys:,} keys in the Redis "
        f"(all prefixes); {audience_sets} audience sets, {stream_entries:,} stream entries under the bench prefix",
        f"- {erasures:,} erasures of random users, one at a time: median {statistics.median(times_ms):.2f} ms, "
        f"p99 {times_ms[int(len(times_ms) * 0.99) - 1]:.2f} ms, max {times_ms[-1]:.2f} ms; "
        f"{statistics.mean(removed):.1f} keys/entries/memberships removed per erasure besides the two index keys",
        f"- before the indexes, each erasure also ran: the SCAN for audience sets {scan_s:.2f} s, "
        f"and a read of the whole change stream {stream_s:.2f} s", ""])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "erasure.md").write_text(report)
    click.echo(report)


def _stream_pages(client, stream: str):
    start = "-"
    while page := client.xrange(stream, min=start, max="+", count=1_000):
        yield page
        start = b"(" + page[-1][0]


if __name__ == "__main__":
    main()
