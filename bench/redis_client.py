"""Why ``hiredis`` is pinned: ``ProfileWriter.write_many`` of real profiles in batches of 200, with
redis-py's pure-Python reply parser and command packer against hiredis's (both in one run,
alternating rounds). ``.venv/bin/python -m bench.redis_client``."""

from __future__ import annotations

import statistics
import time
import uuid

import click
import orjson
import redis
from redis._parsers import _HiredisParser, _RESP2Parser
from redis.connection import PythonRespSerializer

from bench.run import workload
from personalization.config.settings import load_settings
from personalization.wiring import user_logic
from personalization.config.rules import load_rules
from personalization.serving.redis_store import ProfileWriter
from personalization.udfs.validation import EventValidator, Rejection


class _PythonPacker(redis.Connection):
    def _construct_command_packer(self, packer):
        return PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)


def _client(settings, hiredis: bool) -> redis.Redis:
    cfg = settings.redis
    pool = (redis.ConnectionPool(host=cfg.host, port=cfg.port, db=cfg.db, parser_class=_HiredisParser) if hiredis
            else redis.ConnectionPool(host=cfg.host, port=cfg.port, db=cfg.db, parser_class=_RESP2Parser,
                                      connection_class=_PythonPacker))
    return redis.Redis(connection_pool=pool)


def _profiles(settings, size: int) -> list[dict]:
    validation = settings.validation
    validator = EventValidator(validation.schema_path, validation.max_event_bytes, validation.max_future_skew)
    logic = user_logic(settings, load_rules(settings))
    states = {}
    for raw in workload(size):
        event = validator.validate(orjson.dumps(raw), raw["ts"], 2**62)
        if not isinstance(event, Rejection):
            state = states.setdefault(event.user_id, logic.new_state(event.user_id))
            logic.on_event(state, event, event.ts - settings.time.out_of_orderness)
    return [logic.profile(state) for state in states.values()]


@click.command()
@click.option("--events", default=6_000, show_default=True, help="replayed events whose users' profiles are written")
@click.option("--rounds", default=6, show_default=True)
def main(events: int, rounds: int) -> None:
    settings = load_settings()
    profiles = _profiles(settings, events)
    prefix = f"bench-redis-{uuid.uuid4().hex[:8]}"
    rates: dict[bool, list[float]] = {False: [], True: []}
    cleanup = _client(settings, True)
    try:
        for _ in range(rounds):
            for hiredis in (False, True):
                writer = ProfileWriter(_client(settings, hiredis), f"{prefix}-{int(hiredis)}", 60_000)
                for profile in profiles:
                    profile["version"] += 1
                started = time.perf_counter()
                for i in range(0, len(profiles), 200):
                    writer.write_many([(p, []) for p in profiles[i:i + 200]])
                rates[hiredis].append(len(profiles) / (time.perf_counter() - started))
    finally:
        for key in cleanup.scan_iter(f"{prefix}*", count=1000):
            cleanup.delete(key)
    python, native = (statistics.median(rates[h]) for h in (False, True))
    click.echo(f"{len(profiles)} profiles x {rounds} rounds, profiles written/s (median):")
    click.echo(f"  redis-py's Python parser and packer: {python:,.0f}")
    click.echo(f"  hiredis:                             {native:,.0f}  ({native / python:.2f}x)")


if __name__ == "__main__":
    main()
