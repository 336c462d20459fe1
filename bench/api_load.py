"""Load test of the HTTP read API on loopback: ``make bench-api`` (not part of ``make test``).

Real profiles (the job's user logic over the replayed data, as in ``bench.redis_client``) are
written under a prefix of their own on the local Redis; the API runs as its own process
(``api_process``) and an asyncio ``httpx`` client drives it from this one:

- closed loop at 1, 10 and 100 concurrent clients, each sending its next request when the last
  one is answered: single-profile reads and batches of 50, beside redis-py's asyncio ``HGETALL``
  (and a 50-key pipeline) at the same concurrency as the floor;
- open loop at a fixed rate (``--rate``, default 1,000 requests/s) of single reads: the latency
  a steady load sees (the goal: p99 <= 5 ms).

Writes ``bench/results/api-load.md`` and ``api-load.json``; the keys are deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import click
import httpx
import orjson
import uvloop
import redis.asyncio as aioredis
import yaml

from bench.redis_client import _profiles
from personalization.config.settings import REPO_ROOT, load_settings
from personalization.serving.api import api_process
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import ProfileWriter, connect, profile_key

RESULTS = REPO_ROOT / "bench" / "results"
CONCURRENCY = (1, 10, 100)
BATCH = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float], elapsed: float, errors: int, cpu: float) -> dict[str, float]:
    """``cpu``: the load generator's own CPU seconds over the run (near ``elapsed``: it, not the
    server, was the limit)."""
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "client_cpu": cpu / elapsed,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000}


async def closed_loop(call: Callable[[int], Awaitable[bool]], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` loops, each calling again as soon as its call returns, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(worker: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ok = await call(worker)
            latencies.append(time.perf_counter() - started)
            errors += not ok
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(worker) for worker in range(clients)))
    return summary(latencies, time.perf_counter() - started, errors, time.process_time() - cpu)


async def open_loop(call: Callable[[int], Awaitable[bool]], rate: float, seconds: float,
                    workers: int) -> dict[str, float]:
    """Calls started on a fixed schedule of ``rate`` per second, whether or not earlier ones are
    answered; latency counts from the scheduled start (a late start is the server's delay too)."""
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float, worker: int) -> None:
        nonlocal errors
        ok = await call(worker)
        latencies.append(time.perf_counter() - scheduled)
        errors += not ok
    tasks = []
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(int(rate * seconds)):
        scheduled = started + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, n % workers)))
    await asyncio.gather(*tasks)
    return summary(latencies, time.perf_counter() - started, errors, time.process_time() - cpu)


async def measure(url: str, key: str, settings, users: list[str], seconds: float, rate: float) -> dict:
    prefix = settings.redis.key_prefix
    # One client (one connection) per simulated client: httpx's shared pool serializes 100
    # connections badly (measured: 99 requests/s through one pool against 1,096 through 100).
    pool = [httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) for _ in range(max(CONCURRENCY))]
    results: dict = {}
    async with contextlib.AsyncExitStack() as stack:
        for http in pool:
            await stack.enter_async_context(http)
        floor = aioredis.Redis(host=settings.redis.host, port=settings.redis.port, db=settings.redis.db,
                               max_connections=max(CONCURRENCY))

        async def api_single(worker: int) -> bool:
            return (await pool[worker].get(f"/v1/users/{random.choice(users)}/profile")).status_code == 200

        async def api_batch(worker: int) -> bool:
            answer = await pool[worker].post("/v1/profiles/batch", json={"ids": random.sample(users, BATCH)})
            return answer.status_code == 200

        async def redis_single(worker: int) -> bool:
            return bool(await floor.hgetall(profile_key(prefix, random.choice(users))))

        async def redis_batch(worker: int) -> bool:
            async with floor.pipeline(transaction=False) as pipe:
                for user in random.sample(users, BATCH):
                    pipe.hgetall(profile_key(prefix, user))
                return all(await pipe.execute())

        await closed_loop(api_single, 10, 1.0)  # warm-up: connections, thread pool
        for name, call in (("api single", api_single), ("redis HGETALL single", redis_single),
                           (f"api batch of {BATCH}", api_batch), (f"redis pipeline of {BATCH} HGETALL", redis_batch)):
            for clients in CONCURRENCY:
                results[f"{name} @ {clients}"] = await closed_loop(call, clients, seconds)
                click.echo(f"{name:32} {clients:>3} clients: {_line(results[f'{name} @ {clients}'])}")
        results[f"api single, open loop @ {rate:,.0f}/s"] = await open_loop(api_single, rate, seconds * 2, len(pool))
        click.echo(f"api single, open loop {rate:,.0f}/s: {_line(results[f'api single, open loop @ {rate:,.0f}/s'])}")
        await floor.aclose()
    return results


def _line(r: dict[str, float]) -> str:
    return (f"{r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  ({r['requests']:,} requests, {r['errors']} errors, client CPU {r['client_cpu']:.0%})")


def report(results: dict, users: int, profile_bytes: int, rate: float, seconds: float, load: float) -> str:
    rows = "\n".join(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests']:,} | {r['errors']} "
                     f"| {r['client_cpu']:.0%} |"
                     for name, r in results.items())
    goal = results[f"api single, open loop @ {rate:,.0f}/s"]
    met = goal["p99_ms"] <= 5 and goal["rps"] >= rate * 0.95
    return f"""# HTTP read API under load (loopback)

`make bench-api` (`python -m bench.api_load`), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on a
machine with {os.cpu_count()} cores shared with other work. {users:,} real profiles (mean
{profile_bytes:,} bytes of JSON), one API process (uvicorn, one worker), the load generator
(httpx, one client per simulated client, on uvloop) in another process on the same cores; {seconds:.0f} s per closed-loop row,
{2 * seconds:.0f} s for the open loop. Latency is per request as the client sees it (open loop: from
its scheduled start). Load generator CPU near 100 % means the Python client, not the server, set
the pace. Load average (1 min) at the start: {load:.1f}.

| load | requests/s | p50 ms | p99 ms | requests | errors | load generator CPU |
|---|---:|---:|---:|---:|---:|---:|
{rows}

Goal: single-read p99 <= 5 ms at {rate:,.0f} requests/s: **{'met' if met else 'not met'}**
(p99 {goal['p99_ms']:.2f} ms at {goal['rps']:,.0f} requests/s).
"""


@click.command()
@click.option("--events", default=6_000, show_default=True, help="replayed events whose users' profiles are served")
@click.option("--seconds", default=5.0, show_default=True, help="duration of each closed-loop measurement")
@click.option("--rate", default=1_000.0, show_default=True, help="requests/s of the open-loop single reads")
def main(events: int, seconds: float, rate: float) -> None:
    load = os.getloadavg()[0]
    base = load_settings()
    settings = base.with_overrides(redis={"key_prefix": f"bench-api-{uuid.uuid4().hex[:8]}"})
    profiles = _profiles(settings, events)
    client = connect(settings.redis)
    ProfileWriter(client, settings.redis.key_prefix, 3_600_000).write_many([(p, []) for p in profiles])
    users = [p["user_id"] for p in profiles]
    profile_bytes = round(statistics.fmean(len(orjson.dumps(p)) for p in profiles[:500]))
    key = uuid.uuid4().hex
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yaml"
            config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
            with api_process(config, _free_port(), env={"PZ_API_KEYS": key}) as url:
                results = uvloop.run(measure(url, key, settings, users, seconds, rate))
    finally:
        ProfileReader(client, settings.redis.key_prefix).delete_all()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api-load.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (RESULTS / "api-load.md").write_text(report(results, len(users), profile_bytes, rate, seconds, load))
    click.echo(f"report: {RESULTS / 'api-load.md'}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
