"""``make bench``: throughput and latency of the job on the local stack, side by side in one run.

Measured, in this order and on the same events (real Taobao + JD replay, looped with fresh
event ids and user suffixes when more events are asked for than the data holds):

a. the plain-Python core (validate + UserLogic + profile) in a loop: the limit;
b. the tuned job (the default config) on the local MiniCluster;
c. the job with PyFlink's defaults (process mode, 100,000-record / 1 s bundles, 1,000-key
   state cache, Flink's 32 KB network buffers): the naive baseline;
d. the lean PyFlink floor (``bench.lean_job``): the same source, events and Flink settings as b,
   a pickled per-user ValueState and a pipelined Redis write per event, nothing else: what
   PyFlink itself allows here, so b/d says how much of it the job's design uses;
then the tuned job once more with py-spy sampling its embedded Python (``worker_profile``): where
the job's time goes, which the core's cProfile cannot show (state, timers, Redis, the trainer),
and the CPU of every thread on the machine over the same span (which tasks were busy).

Job throughput is events divided by the span between the first and the last profile write, so
job start-up is not counted: the first from a Redis keyspace notification, the last from the
profiles' ``updated_at`` (each profile's last write, so their minimum is not when writing
began). Latency: at fixed input rates, every 50th event is a probe for a user of its own; its
latency is the wall-clock time its profile is first written (a Redis keyspace notification,
received by a subscriber thread) minus the time the producer sent it (same machine, same clock).
The first write is the event's effect: later writes of the same profile (the session closing
when the watermark passes, segment deadlines) are not. Probes are 2 % of the load and the
subscriber only listens, so measuring does not distort it. Each rate runs for a warm-up
(``--warmup-seconds``) and then for the measured span (``--latency-seconds``): the table is the
steady state after the warm-up, and the probes of the warm-up, the job's first seconds of
traffic, are reported apart (a cold job built up a backlog of ~3-5 s at half the max rate, which
took ~20-40 s to drain).

Writes ``bench/results/report.md``, ``report.json`` and ``latency.png``.
"""

from __future__ import annotations

import cProfile
import io
import json
import platform
import pstats
import time
import uuid
from itertools import islice
from pathlib import Path

import click
import orjson
from kafka import KafkaProducer

from bench.lean_job import run_lean_job
from bench.poll import wait_for
from bench.worker_profile import ThreadCpu, WorkerProfile, top_costs
from personalization.config.settings import REPO_ROOT, Settings, load_settings
from personalization.wiring import user_logic
from personalization.config.rules import load_rules
from personalization.pipelines.control import stop_with_savepoint
from personalization.pipelines.main import run_job
from personalization.topics.admin import delete_topics, ensure_topics
from personalization.replay.producer import produce, replay_events
from personalization.replay.synthetic import DAY_MS
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect, decode_id, profile_key_pattern
from personalization.udfs.validation import EventValidator, Rejection

RESULTS = REPO_ROOT / "bench" / "results"
PYFLINK_DEFAULTS = {"python_execution_mode": "process", "bundle_size": 100_000, "bundle_time": 1_000,
                    "state_cache_size": 1_000, "network_buffer_bytes": 32_768}
PROBE_EVERY = 50
RUNS: list[Settings] = []  # every run this process set up, for remove_runs()
# Each tuned default set back to PyFlink's (or the naive choice), one at a time, on the same
# events as b: the measurement behind each default (docs/performance.md); for a default that is
# Flink's own (the network buffers), the alternative measured against it.
ABLATIONS = {
    "process-mode": ("flink.python_execution_mode: process", {"flink": {"python_execution_mode": "process"}}),
    "bundles": ("flink.bundle_size 100,000, bundle_time 1 s",
                {"flink": {"bundle_size": 100_000, "bundle_time": 1_000}}),
    "state-cache": ("flink.state_cache_size: 1 (no cache of live states)", {"flink": {"state_cache_size": 1}}),
    "network-buffers": ("flink.network_buffer_bytes: 4,096 (the smallest)", {"flink": {"network_buffer_bytes": 4_096}}),
    "redis-batching": ("redis.batch_delay: 0 (every write at once)", {"redis": {"batch_delay": 0}}),
    "parallelism": ("flink.parallelism: 2 (a task per core, as a local Flink does)", {"flink": {"parallelism": 2}}),
    # not a tuned default but a feature (off by default): its row is the job with it on
    "recommendations": ("recommendations.enabled: true (item recommendations on)",
                        {"recommendations": {"enabled": True}}),
}


def workload(size: int) -> list[dict]:
    """``size`` events of the real replay, looped when the data runs out: each loop has fresh
    ids and is shifted in event time past the one before, so the watermark keeps moving and
    looped events are not late."""
    base = list(replay_events("all", augmented=True, seed=1))
    span = max(e["ts"] for e in base) - min(e["ts"] for e in base) + DAY_MS
    out: list[dict] = []
    loop = 0
    while len(out) < size:
        for event in islice(base, size - len(out)):
            if loop:
                event = {**event, "event_id": f"{event['event_id']}~{loop}", "user_id": f"{event['user_id']}~{loop}",
                         "ts": event["ts"] + loop * span}
            out.append(event)
        loop += 1
    return out


def core_rate(settings: Settings, events: list[dict]) -> tuple[float, str]:
    """Events per second of the core alone, and a profile of where its time goes."""
    validator = EventValidator(settings.validation.schema_path, settings.validation.max_event_bytes,
                               settings.validation.max_future_skew)
    logic = user_logic(settings, load_rules(settings))  # with the segments, as the job runs it
    raws = [(orjson.dumps(e), e["ts"]) for e in events]
    profiler = cProfile.Profile()

    def loop() -> None:
        states = {}
        watermark = -(2**63)
        for raw, ts in raws:
            event = validator.validate(raw, ts, 2**62)
            if isinstance(event, Rejection):
                continue
            state = states.get(event.user_id) or states.setdefault(event.user_id, logic.new_state(event.user_id))
            watermark = max(watermark, event.ts - settings.time.out_of_orderness)
            if logic.on_event(state, event, watermark).profile_changed:
                orjson.dumps(logic.profile(state))

    started = time.perf_counter()
    loop()
    rate = len(events) / (time.perf_counter() - started)
    profiler.runcall(loop)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    return rate, text.getvalue()


def _run_settings(base: Settings, flink: dict, kafka: dict | None = None) -> Settings:
    """Topics, consumer group and Redis prefix of the run's own."""
    run = uuid.uuid4().hex[:8]
    topics = {name: f"bench-{run}-{name}" for name in base.kafka.topics.keys()}
    settings = base.with_overrides(
        kafka={"topics": topics, "group_id": f"bench-{run}", "bounded": True, **(kafka or {})},
        redis={"key_prefix": f"pzb:{run}"}, flink=flink)
    RUNS.append(settings)
    ensure_topics(settings)
    return settings


def remove_runs() -> None:
    """Delete the topics and Redis keys of every run this process set up (also after a failure):
    bench runs leave nothing on the local stack."""
    while RUNS:
        settings = RUNS.pop()
        delete_topics(settings)
        ProfileReader.from_settings(settings).delete_all()


def job_rate(base: Settings, events: list[dict], flink: dict, job=run_job) -> float:
    """Events/s of ``job`` (the job, or ``run_lean_job``) from its first profile write to its last."""
    profiles, span_s = job_profiles(base, events, flink, job)
    return sum(p["events_total"] for p in profiles) / span_s


def job_profiles(base: Settings, events: list[dict], flink: dict, job=run_job) -> tuple[list[dict], float]:
    """One bounded run of ``job`` over ``events`` on topics and a Redis prefix of its own: the
    profiles it wrote (deleted from Redis once read) and the seconds from its first profile
    write to its last."""
    settings = _run_settings(base, flink)
    first = _run_timed(settings, events, job)
    reader = ProfileReader.from_settings(settings)
    profiles = list(reader.all_profiles())
    reader.delete_all()
    return profiles, (max(p["updated_at"] for p in profiles) - first) / 1000


def _run_timed(settings: Settings, events: list[dict], job=run_job) -> float:
    """Run ``job`` over ``events`` to the end; the wall-clock ms of its first profile write."""
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    first_written = FirstWrites(settings, users="")
    try:
        job(settings)
    finally:
        first_written.close()
    return min(first_written.at.values())


def ablated(base: Settings, name: str) -> tuple[Settings, dict]:
    """The settings with one tuned default reverted, and the Flink overrides that go with them."""
    _, overrides = ABLATIONS[name]
    settings = base.with_overrides(**{section: v for section, v in overrides.items() if section != "flink"})
    return settings, overrides.get("flink", {})


def ablation_rates(base: Settings, events: list[dict], names: list[str]) -> list[dict]:
    """Throughput with one tuned default reverted at a time."""
    rows = []
    for name in names:
        settings, flink = ablated(base, name)
        rows.append({"name": name, "change": ABLATIONS[name][0], "events_per_s": job_rate(settings, events, flink)})
    return rows


def profile_worker(base: Settings, events: list[dict], tuned_rate: float) -> dict:
    """The tuned job again, its embedded Python sampled by py-spy while it processes: a run of
    its own, so the sampling cannot touch b's throughput. Sampling starts at the first profile
    write and lasts about 80 % of the processing span b measured."""
    settings = _run_settings(base, {})
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    client = run_job(settings, wait=False)
    redis_client = connect(settings.redis)
    wait_for(lambda: redis_client.scan(match=f"{settings.redis.key_prefix}:*", count=1000)[1], 300,
             "the profiled run's first Redis write", interval_s=0.1, client=client)
    profile = WorkerProfile(max(1.0, 0.8 * len(events) / tuned_rate))
    profile.start()
    cpu = ThreadCpu()
    stacks = profile.stacks()
    threads = cpu.stop()
    client.get_job_execution_result().result()
    ProfileReader.from_settings(settings).delete_all()
    return {**top_costs(stacks), "unreadable_lines": profile.unreadable, "threads": threads}


COSTS = {  # --cost: a feature switched by ``<section>.enabled``, its name, where its report goes
    "learning": ("the online models", "learning-cost.md"),
    "recommendations": ("item recommendations", "reco-cost.md"),
}


def measure_cost(base: Settings, events: list[dict], section: str) -> dict[bool, float]:
    """Events/s of the tuned job with ``<section>.enabled`` true and false, on the same events.

    The span runs from the first profile write to the last write of anything the run makes
    (profiles, and with learning the predictions and the model hash, with recommendations the
    users' top-N: those operators finish after the user operator), so their own lag is part of
    the price."""
    rates = {}
    for enabled in (True, False):
        settings = _run_settings(base, {}).with_overrides(**{section: {"enabled": enabled}})
        first = _run_timed(settings, events)
        client = connect(settings.redis)
        last = max(int(at) for key in client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000)
                   if client.type(key) == b"hash" and (at := client.hget(key, "updated_at")) is not None)
        processed = sum(p["events_total"] for p in ProfileReader.from_settings(settings).all_profiles())
        ProfileReader.from_settings(settings).delete_all()
        rates[enabled] = processed / ((last - first) / 1000)
    return rates


def latency_rows(base: Settings, events: list[dict], tuned: float, fractions: list[float], warmup: float,
                 seconds: float, tmp: Path, ablate: tuple[str, ...]) -> list[dict]:
    """Latency of the tuned job at each fraction of its max rate, then of each ``ablate`` run at
    the same rates."""
    rows = []
    for name in ("tuned", *ablate):
        settings, flink = (base, {}) if name == "tuned" else ablated(base, name)
        for fraction in fractions:
            rate = tuned * fraction
            warming, measured = latency_at(settings, flink, events, rate, warmup, seconds, tmp)
            ms, first = percentiles(measured), percentiles(warming) if warming else None
            click.echo(f"latency, {name}, at {rate:,.0f} events/s: {ms} (first {warmup:.0f} s: {first})")
            rows.append({"run": name, "change": ABLATIONS[name][0] if name in ABLATIONS else None,
                         "fraction": fraction, "rate": rate, "ms": ms, "warmup_ms": first})
    return rows


def latency_at(base: Settings, flink: dict, events: list[dict], rate: float, warmup: float, seconds: float,
               tmp: Path) -> tuple[list[float], list[float]]:
    """Produce at ``rate`` for ``warmup`` and then ``seconds`` seconds; the probe latencies in ms
    of the warm-up and of the measured span."""
    settings = _run_settings(base, flink, {"bounded": False, "starting_offsets": "latest"})
    client = run_job(settings, wait=False)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=0)
    reader = ProfileReader.from_settings(settings)
    first_written = FirstWrites(settings)
    try:
        _wait_for_job_to_consume(producer, settings, reader)
        sent: dict[str, float] = {}
        count, measured_from = int(rate * (warmup + seconds)), int(rate * warmup)
        started = time.perf_counter()
        for i, event in enumerate(islice(events, count)):
            if i % PROBE_EVERY == 0:
                event = {**event, "user_id": f"probe-{i}", "event_id": f"probe-{i}"}
            due = started + i / rate
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            producer.send(settings.kafka.topics.events, key=event["user_id"].encode(),
                          value=orjson.dumps(event), timestamp_ms=event["ts"])
            if i % PROBE_EVERY == 0:
                sent[event["user_id"]] = time.time() * 1000
        producer.flush()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not first_written.has_all(sent):
            time.sleep(0.2)
        latencies = {int(user.removeprefix("probe-")): first_written.at[user] - at   # by send index
                     for user, at in sent.items() if user in first_written.at}
        return ([ms for i, ms in latencies.items() if i < measured_from],
                [ms for i, ms in latencies.items() if i >= measured_from])
    finally:
        first_written.close()
        stop_with_savepoint(client, (tmp / uuid.uuid4().hex).as_uri())
        reader.delete_all()
        producer.close()


class FirstWrites:
    """Wall-clock ms of the first write of each profile whose user id starts with ``users``,
    from Redis keyspace notifications."""

    def __init__(self, settings: Settings, users: str = "probe-") -> None:
        self.at: dict[str, float] = {}
        self._client = connect(settings.redis)
        self._client.config_set("notify-keyspace-events", "Kh")  # keyspace events, hash commands
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(**{f"__keyspace@{settings.redis.db}__:"
                                   f"{profile_key_pattern(settings.redis.key_prefix, users)}": self._on_write})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def _on_write(self, message: dict) -> None:
        now = time.time() * 1000
        user = decode_id(message["channel"].decode().split("{", 1)[1].split("}", 1)[0])
        self.at.setdefault(user, now)

    def has_all(self, users) -> bool:
        return all(user in self.at for user in users)

    def close(self) -> None:
        self._thread.stop()
        self._thread.join()
        self._pubsub.close()


def _wait_for_job_to_consume(producer: KafkaProducer, settings: Settings, reader: ProfileReader) -> None:
    """The job reads from 'latest': send warm-up probes until one is visible in Redis."""
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline:
        event = {"schema_version": 1, "event_id": f"warm-{n}", "event_type": "page_view",
                 "ts": 1_511_658_000_000, "user_id": f"warm-{n}"}
        producer.send(settings.kafka.topics.events, key=b"warm", value=orjson.dumps(event),
                      timestamp_ms=event["ts"]).get(10)
        if any(reader.get(f"warm-{i}") for i in range(n + 1)):
            return
        n += 1
        time.sleep(1)
    raise TimeoutError("the latency job never consumed its warm-up events")


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": ordered[-1], "n": len(ordered)}


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    t = report["throughput"]
    lines = [
        "# Benchmark report", "",
        f"Machine: {report['machine']}. Command: `{report['command']}`. Events: {report['events']:,}.", "",
        "| run | events/s |", "|---|---|",
        f"| a. plain-Python core (the limit) | {t['core']:,.0f} |",
        f"| b. tuned job (default config) | {t['tuned']:,.0f} |",
        f"| c. PyFlink defaults | {t['defaults']:,.0f} |",
        f"| d. lean PyFlink floor (keyed state + Redis write per event, nothing else) | {t['lean']:,.0f} |", "",
        f"Ratios: b/a = {t['tuned'] / t['core']:.3f}, b/c = {t['tuned'] / t['defaults']:.2f}, "
        f"b/d = {t['tuned'] / t['lean']:.3f}.", "",
    ]
    if report["ablations"]:
        lines += ["Each default against the tuned job (b), one setting reverted at a time, same events:", "",
                  "| b, but | events/s | b is |", "|---|---|---|"]
        for row in report["ablations"]:
            speedup = t["tuned"] / row["events_per_s"]
            lines.append(f"| {row['change']} | {row['events_per_s']:,.0f} | {speedup:.2f}x |")
        lines.append("")
    lines += [f"Latency, produce -> first Redis write, over {report['latency_seconds']:.0f} s after a warm-up of "
              f"{report['warmup_seconds']:.0f} s at the same rate:", "",
              "| run | input rate (events/s) | p50 ms | p95 ms | p99 ms | max ms | probes |",
              "|---|---|---|---|---|---|---|"]
    for row in report["latency"]:
        p = row["ms"]
        lines.append(f"| {_run_name(row)} | {row['rate']:,.0f} | {p['p50']:.0f} | {p['p95']:.0f} | {p['p99']:.0f} "
                     f"| {p['max']:.0f} | {p['n']} |")
    lines += ["", "The warm-up's probes (the job's first seconds of traffic):", "",
              "| run | input rate (events/s) | p50 ms | p99 ms | max ms | probes |", "|---|---|---|---|---|---|"]
    for row in report["latency"]:
        if (p := row["warmup_ms"]) is not None:
            lines.append(f"| {_run_name(row)} | {row['rate']:,.0f} | {p['p50']:.0f} | {p['p99']:.0f} | {p['max']:.0f} "
                         f"| {p['n']} |")
    worker = report["worker_profile"]
    lines += ["", f"Where the tuned job's Python time goes (py-spy on the embedded interpreter, "
              f"{worker['samples']:,} samples while Python ran; shares of those; "
              f"{worker.get('unreadable_lines', 0):,} torn lines of py-spy's output skipped):", "",
              "| own time | share | | inclusive time | share |", "|---|---|---|---|---|"]
    for (own, own_share), (incl, incl_share) in zip(worker["own"], worker["inclusive"]):
        lines.append(f"| `{own}` | {own_share:.1%} | | `{incl}` | {incl_share:.1%} |")
    threads = worker["threads"]
    lines += ["", f"CPU per thread over the same {threads['seconds']:.0f} s (100 % = one core; the machine used "
              f"{threads['total']:.0%} of its {threads['cores']} cores, py-spy included):", "",
              "| process | thread | CPU |", "|---|---|---|"]
    lines += [f"| {process} | {thread} | {share:.0%} |" for process, thread, share in threads["threads"]]
    lines += ["", "Where the core's time goes (cProfile, top functions by own time):", "", "```",
              report["core_profile"], "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(report, out / "latency.png")


def _run_name(row: dict) -> str:
    return "b" if row["run"] == "tuned" else f"b, but {row['change']}"


def _plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    t = report["throughput"]
    left.bar(["core", "tuned job", "PyFlink\ndefaults", "lean PyFlink\nfloor"],
             [t["core"], t["tuned"], t["defaults"], t["lean"]])
    left.set_ylabel("events/s")
    left.set_title("throughput")
    tuned = [row for row in report["latency"] if row["run"] == "tuned"]
    for q in ("p50", "p95", "p99"):
        right.plot([row["rate"] for row in tuned], [row["ms"][q] for row in tuned], marker="o", label=q)
    right.set_xlabel("input rate (events/s)")
    right.set_ylabel("produce -> Redis (ms)")
    right.set_title(f"latency after a {report['warmup_seconds']:.0f} s warm-up")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@click.command()
@click.option("--events", "size", type=int, default=60_000, help="Events per throughput run.")
@click.option("--warmup-seconds", type=float, default=30.0,
              help="Input at each latency rate before the measured span (reported apart).")
@click.option("--latency-seconds", type=float, default=20.0, help="Measured span of each latency run.")
@click.option("--rates", default="0.1,0.25,0.5,0.75", help="Latency input rates, as fractions of the tuned max.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS)
@click.option("--ablate", multiple=True, type=click.Choice(list(ABLATIONS)), default=list(ABLATIONS),
              show_default=True, help="Defaults to revert one at a time (repeatable).")
@click.option("--latency-ablate", multiple=True, type=click.Choice(list(ABLATIONS)), default=["network-buffers"],
              show_default=True, help="Defaults to revert, one at a time, in latency runs too (repeatable).")
@click.option("--cost", type=click.Choice(list(COSTS)), default=None,
              help="Only measure the job with the feature on and off (bench/results/<feature>-cost.md; "
                   "learning-cost.md, reco-cost.md).")
def main(size: int, warmup_seconds: float, latency_seconds: float, rates: str, out: Path, ablate: tuple[str, ...],
         latency_ablate: tuple[str, ...], cost: str | None) -> None:
    try:
        _run_all(size, warmup_seconds, latency_seconds, rates, out, ablate, latency_ablate, cost)
    finally:
        remove_runs()


def _run_all(size: int, warmup_seconds: float, latency_seconds: float, rates: str, out: Path,
             ablate: tuple[str, ...], latency_ablate: tuple[str, ...], cost: str | None) -> None:
    settings = load_settings()
    events = workload(size)
    if cost:
        _report_cost(settings, events, out, cost)
        return
    core, core_profile = core_rate(settings, events)
    click.echo(f"core: {core:,.0f} events/s")
    tuned = job_rate(settings, events, {})
    click.echo(f"tuned job: {tuned:,.0f} events/s")
    defaults = job_rate(settings, events, PYFLINK_DEFAULTS)
    click.echo(f"PyFlink defaults: {defaults:,.0f} events/s")
    lean = job_rate(settings, events, {}, run_lean_job)
    click.echo(f"lean PyFlink floor: {lean:,.0f} events/s")
    ablations = ablation_rates(settings, events, list(ablate))
    for row in ablations:
        click.echo(f"tuned but {row['change']}: {row['events_per_s']:,.0f} events/s")
    worker = profile_worker(settings, events, tuned)
    click.echo(f"job's Python, top own time: {worker['own'][0][0]} {worker['own'][0][1]:.0%}")
    latency = latency_rows(settings, events, tuned, [float(f) for f in rates.split(",")], warmup_seconds,
                           latency_seconds, out / "savepoints", latency_ablate)
    write_report({
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "command": "make bench", "events": size, "warmup_seconds": warmup_seconds,
        "latency_seconds": latency_seconds,
        "throughput": {"core": core, "tuned": tuned, "defaults": defaults, "lean": lean},
        "ablations": ablations, "latency": latency, "core_profile": core_profile, "worker_profile": worker,
    }, out)
    click.echo(f"report: {out / 'report.md'}")


def _report_cost(settings: Settings, events: list[dict], out: Path, section: str) -> None:
    feature, report = COSTS[section]
    rates = measure_cost(settings, events, section)
    off, on = rates[False], rates[True]
    lines = [f"# Cost of {feature}", "",
             f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores. Command: "
             f"`make bench BENCH_ARGS=\"--cost {section} --events {len(events)}\"`. Events: {len(events):,} "
             "(the same events, one run after the other).", "",
             "| run | events/s |", "|---|---|",
             f"| tuned job, `{section}.enabled: false` | {off:,.0f} |",
             f"| tuned job, `{section}.enabled: true` | {on:,.0f} |", "",
             f"With {feature} the job runs at {on / off:.1%} of its rate without ({1 - on / off:.1%} slower)."]
    out.mkdir(parents=True, exist_ok=True)
    (out / report).write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
