"""Load test of the HTTP read API on loopback: ``make bench-api`` (not part of ``make test``).

Real profiles (the job's user logic over the replayed data, as in ``bench.redis_client``) are
written under a prefix of their own on the local Redis; the API runs as its own process
(``api_process``) and ``h2load`` (nghttp2's native load generator, HTTP/1.1, installed by
``stack/stack.sh install``) drives it, so the generator takes little of the two cores the server
needs. Per-request latencies come from h2load's ``--log-file``:

- closed loop at 1, 10 and 100 connections, each sending its next request when the last one is
  answered: single-profile reads (ids in random order) and batches of 50, beside redis-py's
  asyncio ``HGETALL`` (and a 50-key pipeline) at the same concurrency as the floor;
- open loop at a fixed rate (``--rate``, default 1,000 requests/s, spread over ``OPEN_CLIENTS``
  connections, h2load ``--rps``) of single reads: the latency a steady load sees (the goal:
  p99 <= 5 ms).

Writes ``bench/results/api-load.md`` and ``api-load.json``; the keys are deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import click
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
OPEN_CLIENTS = 50  # connections of the open loop: a request waits for its own connection only if
                   # the one sent OPEN_CLIENTS / rate seconds before (50 ms at 1,000/s) is unanswered


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


def h2load(args: list[str], workdir: Path, seconds: float | None = None) -> dict[str, float]:
    """One h2load run: for ``seconds`` after a 1 s warm-up it does not log, or (None) until the
    ``-n`` requests in ``args`` are answered. Latencies and status codes come from its
    per-request log, its CPU from the kernel's accounting of the child."""
    log_file = workdir / "h2load.log"
    log_file.unlink(missing_ok=True)
    timed = ["-D", f"{seconds:g}", "--warm-up-time", "1"] if seconds else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(["h2load", "--h1", *timed, "--log-file", str(log_file), *args],
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr or done.stdout}")
    rows = [[int(column) for column in line.split("\t")[:3]] for line in log_file.read_text().splitlines() if line]
    latencies = [latency / 1e6 for _, _, latency in rows]
    errors = sum(status != 200 for _, status, _ in rows)
    elapsed = seconds or (max(start + latency for start, _, latency in rows) - min(start for start, _, _ in rows)) / 1e6
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return summary(latencies, elapsed, errors, cpu)


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


def measure_api(url: str, key: str, users: list[str], seconds: float, rate: float, workdir: Path) -> dict:
    """The API rows, driven by h2load: closed loops, then the open loop at ``rate``."""
    order = random.sample(users, len(users))
    urls = workdir / "urls.txt"
    urls.write_text("".join(f"{url}/v1/users/{quote(user, safe='')}/profile\n" for user in order))
    body = workdir / "batch.json"
    body.write_bytes(orjson.dumps({"ids": random.sample(users, BATCH)}))
    auth = ["-H", f"x-api-key: {key}"]
    single, batch = [*auth, "-i", str(urls)], [*auth, "-H", "content-type: application/json", "-d", str(body),
                                               f"{url}/v1/profiles/batch"]
    results: dict = {}
    for name, args in (("api single", single), (f"api batch of {BATCH}", batch)):
        for clients in CONCURRENCY:
            results[f"{name} @ {clients}"] = h2load([*args, "-c", str(clients)], workdir, seconds)
            click.echo(f"{name:32} {clients:>3} clients: {_line(results[f'{name} @ {clients}'])}")
    # Connections opened one after another across one period of a connection's schedule, so the
    # requests arrive evenly spread, not in bursts of OPEN_CLIENTS (h2load's --rps clocks start
    # when a connection does); h2load's --rate-period has a 1 ms resolution.
    per_client = max(1, round(rate / OPEN_CLIENTS))
    period_ms = max(1, round(1000 / rate))
    name = f"api single, open loop @ {per_client * OPEN_CLIENTS:,}/s"
    results[name] = h2load([*single, "-c", str(OPEN_CLIENTS), "--rps", str(per_client),
                            "-r", str(max(1, round(rate * period_ms / 1000))), "--rate-period", f"{period_ms}ms",
                            "-n", str(round(per_client * OPEN_CLIENTS * seconds * 2))], workdir)
    click.echo(f"{name}: {_line(results[name])}")
    return results


async def measure_redis(settings, users: list[str], seconds: float) -> dict:
    """The floor: redis-py's asyncio client reading the same profiles straight from Redis."""
    prefix = settings.redis.key_prefix
    floor = aioredis.Redis(host=settings.redis.host, port=settings.redis.port, db=settings.redis.db,
                           max_connections=max(CONCURRENCY))

    async def redis_single(worker: int) -> bool:
        return bool(await floor.hgetall(profile_key(prefix, random.choice(users))))

    async def redis_batch(worker: int) -> bool:
        async with floor.pipeline(transaction=False) as pipe:
            for user in random.sample(users, BATCH):
                pipe.hgetall(profile_key(prefix, user))
            return all(await pipe.execute())

    results: dict = {}
    for name, call in (("redis HGETALL single", redis_single), (f"redis pipeline of {BATCH} HGETALL", redis_batch)):
        for clients in CONCURRENCY:
            results[f"{name} @ {clients}"] = await closed_loop(call, clients, seconds)
            click.echo(f"{name:32} {clients:>3} clients: {_line(results[f'{name} @ {clients}'])}")
    await floor.aclose()
    return results


def _line(r: dict[str, float]) -> str:
    return (f"{r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
            f"  ({r['requests']:,} requests, {r['errors']} errors, client CPU {r['client_cpu']:.0%})")


def report(results: dict, users: int, profile_bytes: int, seconds: float, load: tuple[float, float],
           overrides: tuple[str, ...]) -> str:
    rows = "\n".join(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests']:,} | {r['errors']} "
                     f"| {r['client_cpu']:.0%} |"
                     for name, r in results.items())
    name, goal = next((name, r) for name, r in results.items() if name.startswith("api single, open loop"))
    rate = float(name.rpartition("@ ")[2].removesuffix("/s").replace(",", ""))
    met = goal["p99_ms"] <= 5 and goal["rps"] >= rate * 0.95 and goal["errors"] == 0
    settings = ", ".join(f"`{o}`" for o in overrides) or "the defaults"
    return f"""# HTTP read API under load (loopback)

`make bench-api` (`python -m bench.api_load`), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on a
machine with {os.cpu_count()} cores shared with other work. {users:,} real profiles (mean
{profile_bytes:,} bytes of JSON); the API (uvicorn, API settings: {settings}) driven by `h2load --h1`
(native, one thread) on the same cores; {seconds:g} s per closed-loop row, {2 * seconds:g} s for the
open loop ({OPEN_CLIENTS} connections opened evenly over one period, `--rps` each). Latency is per
request as h2load logs it, from the request's send (open loop: a request due while its connection
still waits for the one before is sent late, so latencies above {OPEN_CLIENTS} / rate seconds are
understated). The redis-py floor rows are Python asyncio (its CPU share in the last column: near
100 % means the client set the pace). Load average (1 min) at the start and end:
{load[0]:.1f} / {load[1]:.1f}.

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
@click.option("--floor/--no-floor", default=True, show_default=True, help="measure the redis-py floor rows")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="API setting, e.g. api.workers=2")
@click.option("--out", default="api-load", show_default=True, help="report name under bench/results (.md, .json)")
def main(events: int, seconds: float, rate: float, floor: bool, overrides: tuple[str, ...], out: str) -> None:
    if shutil.which("h2load") is None:
        raise click.ClickException("h2load not found: run `bash stack/stack.sh install` (apt nghttp2-client)")
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
            with api_process(config, _free_port(), env={"PZ_API_KEYS": key}, overrides=overrides) as url:
                results = measure_api(url, key, users, seconds, rate, Path(tmp))
            if floor:
                results |= uvloop.run(measure_redis(settings, users, seconds))
    finally:
        ProfileReader(client, settings.redis.key_prefix).delete_all()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{out}.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (RESULTS / f"{out}.md").write_text(report(results, len(users), profile_bytes, seconds,
                                              (load, os.getloadavg()[0]), overrides))
    click.echo(f"report: {RESULTS / f'{out}.md'}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
