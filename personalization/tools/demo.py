"""``make demo``: replay real behavioral data through the job on the local MiniCluster and show it.

Every run starts from a clean slate: it recreates the job's topics and deletes the Redis keys
under the configured prefix, so a second run shows the same numbers, not doubled ones.

The replayed data covers about 49 minutes of event time, too short for the 24 h deadline of the
cart-abandonment trigger: the demo compresses that one deadline (``--cart-window``, 10 min) in a
copy of the rules, and says so. The summary is also written to ``.stack/demo/summary.txt``, next
to a picture of the segment sizes over event time (``segment-sizes.png``).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import click
import httpx
import orjson
import yaml
from kafka import KafkaProducer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from personalization.activation.receiver import SignedReceiver
from personalization.config.cli import config_options
from personalization.config.settings import BASE_DIR, ConfigError, Settings, load_settings
from personalization.core.learning.evaluation import against_baselines, log_loss_against_baselines
from personalization.core.rules import RulesError
from personalization.pipelines.main import run_job
from personalization.tools.dlq import read_dlq
from personalization.tools.models import format_metric
from personalization.tools.monitor import FlinkRest, JobStatus
from personalization.tools.propensity_quality import REPLAYS
from personalization.config.rules import load_rules
from personalization.tools.story import (
    compress_trigger,
    describe_cause,
    plot_sizes,
    sizes_over_time,
    storyteller,
    timeline,
)
from personalization.config.kafka import client_config
from personalization.topics.admin import ensure_topics
from personalization.topics.records import read_topic, topic_size
from personalization.replay.datasets import JD_EPOCH_MS, locate_datasets
from personalization.replay.exposures import with_exposures
from personalization.replay.producer import RawRecord, produce, produce_raw, replay_events
from personalization.serving.api import api_process
from personalization.serving.experiments import experiment_report, render
from personalization.serving.reader import ProfileReader

console = Console(record=True)  # the summary is saved as text too
DEMO_OUT = BASE_DIR / ".stack" / "demo"
COMPRESSED_TRIGGER = "cart_abandoned"
WEBHOOK_SEGMENT, WEBHOOK_PATH = "cart_abandoner", "/hooks/cart-abandoners"

# An A/A experiment over the replay's first 10 minutes of event time (the exposures of ~1,200 users:
# seconds of job time): what no difference looks like on real data. Its window is where the datasets
# start; the synthetic fallback starts in 2024 and has no exposures.
DEMO_EXPERIMENT = {"name": "demo_aa", "variants": [{"name": "a1"}, {"name": "a2"}],
                   "start": JD_EPOCH_MS, "end": JD_EPOCH_MS + 10 * 60_000}

# A few hostile records so the DLQ path is visible in the summary.
MALFORMED = [
    b"{not json",
    b"\xff\xfe binary",
    orjson.dumps({"schema_version": 1, "event_id": "bad-1", "event_type": "product_view", "ts": 1}),
    orjson.dumps({"schema_version": 1, "event_id": "bad-2", "event_type": "teleport",
                  "ts": 1511658000000, "user_id": "tb-1"}),
    orjson.dumps({"schema_version": 1, "event_id": "bad-3", "event_type": "click",
                  "ts": "yesterday", "user_id": "tb-1"}),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _progress_table(status: JobStatus | None, elapsed: float, total: int, polled_at: float | None = None) -> Table:
    """The job's figures from its last REST poll; once it has finished (``polled_at`` given) the
    REST API is gone with the MiniCluster, so the figures say how long before the end they were read."""
    table = Table(title="job progress", show_header=False)
    counters = status.counters if status else {}
    rejected = sum(v for k, v in counters.items() if k.startswith("events_rejected_"))
    if polled_at is None:
        table.add_row("state", status.state if status else "starting")
    else:
        table.add_row("state", f"FINISHED (figures below: the last poll, at {polled_at:.1f} s; "
                               "final counts in the summary)")
    table.add_row("events read (parsed: valid + rejected)", f"{status.events_read if status else 0:,} / {total:,}")
    table.add_row("profiles written", f"{counters.get('profile_writes', 0):,}")
    table.add_row("rejected (DLQ)", f"{rejected:,}")
    if status and status.restarts:
        table.add_row("restarts", f"{status.restarts} (counters count again from the last checkpoint)")
    watermark = status.watermark if status else None
    table.add_row("event-time clock (watermark)",
                  _utc(watermark) if watermark is not None and 0 < watermark < 2**62 else "-")
    table.add_row("elapsed", f"{elapsed:.1f} s")
    return table


def run_with_progress(settings: Settings, total: int) -> float:
    rest_port = _free_port()
    settings = settings.with_overrides(flink={"rest_port": rest_port})
    if settings.flink.prometheus_port:
        console.print(f"Prometheus metrics while the job runs: http://127.0.0.1:"
                      f"{settings.flink.prometheus_port.split('-')[0]}/metrics (first free port of "
                      f"{settings.flink.prometheus_port})")
    started = time.monotonic()
    client = run_job(settings, wait=False)
    job_id = str(client.get_job_id())
    rest = FlinkRest(f"http://127.0.0.1:{rest_port}")
    status, polled_at = None, 0.0
    with Live(_progress_table(None, 0, total), console=console, refresh_per_second=4) as live:
        done = client.get_job_execution_result()
        while not done.done():
            polled = rest.try_status(job_id)
            if polled is not None:
                status, polled_at = polled, time.monotonic() - started
            live.update(_progress_table(status, time.monotonic() - started, total))
            time.sleep(0.5)
        done.result()  # raises if the job failed
        live.update(_progress_table(status, time.monotonic() - started, total, polled_at))
    return time.monotonic() - started


def show_summary(settings: Settings, produced: int, elapsed: float) -> None:
    topics = settings.kafka.topics
    dlq = list(read_dlq(settings))
    sessions = read_topic(settings, topics.sessions)
    late = topic_size(settings, topics.late)
    users = ProfileReader.from_settings(settings).all_profiles()
    processed = sum(p["events_total"] for p in users)
    net_sessions = sum({"closed": 1, "retracted": -1}.get(s["status"], 0) for s in sessions)

    table = Table(title="demo summary", show_header=False)
    table.add_row("events produced", f"{produced:,}")
    table.add_row("events processed", f"{processed:,}  ({processed / elapsed:,.0f} events/s over {elapsed:.1f} s)")
    table.add_row("users (profiles in Redis)", f"{len(users):,}")
    table.add_row("sessions closed", f"{net_sessions:,}  (converted: "
                  f"{sum(1 for s in sessions if s['status'] == 'closed' and s['converted']):,})")
    reasons = Counter(record.reason for record in dlq)
    table.add_row("rejected to DLQ", f"{len(dlq):,}  " + ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())))
    table.add_row("late (beyond allowed lateness)", f"{late:,}")
    console.print(table)
    console.print(segments_table(settings, len(users)))
    if users:
        shown = max(users, key=lambda p: (p["sessions_converted"], p["events_total"]))
        console.print(profile_table(shown))
        reco = ProfileReader.from_settings(settings).recommendations(shown["user_id"])
        if reco:
            console.print(recommendations_table(shown["user_id"], reco))
    model = ProfileReader.from_settings(settings).model()
    if model:
        console.print(model_table(model, read_topic(settings, topics.examples)))


def model_table(model: dict, examples: list[dict]) -> Table:
    """The online models' progressive validation (predict, then learn) at the end of the run,
    the propensity model beside two baselines scored over the same examples."""
    p = model["propensity"]
    table = Table(title="online models (progressive validation: each example scored before it is learned)",
                  show_header=False)
    table.add_row("propensity: examples learned", f"{p['examples_learned']:,} of {p['labels']:,} labels "
                  f"({p['positives']:,} converted, {p['negatives']:,} not; {p['unscored_sessions']:,} sessions "
                  "opened by their purchase, not scored)")
    table.add_row("propensity: ROC AUC / log loss, whole run",
                  f"{format_metric(p['roc_auc'])} / {format_metric(p['log_loss'])}")
    recent = f"{format_metric(p['recent_roc_auc'])} / {format_metric(p['recent_log_loss'])}"
    if p["recent_roc_auc"] is None:
        recent += "  (ROC AUC needs a converted and an unconverted session among them)"
    table.add_row(f"propensity: ROC AUC / log loss, last {p['recent_window']:,}", recent)
    if examples:
        auc = against_baselines(examples)
        table.add_row("propensity: ROC AUC against baselines, same examples",
                      f"model {auc['model']:.4f}, constant {auc['constant']:.4f}, "
                      f"session has an add-to-cart {auc['has_add_to_cart']:.4f}")
        log_loss = log_loss_against_baselines(examples)
        table.add_row("propensity: log loss against the base rate, same examples",
                      f"model {log_loss['model']:.4f}, base rate learned the same way {log_loss['base_rate']:.4f} "
                      f"(known in hindsight {log_loss['base_rate_hindsight']:.4f})")
    for c in model.get("clusters", []):
        # the members' mean, not the k-means centre: a centre sits near its last few members
        # (core.learning.clusters), one outlier among thousands can set it
        table.add_row(f"cluster {c['cluster']}: mean of its {c['assignments']:,} assignments", ", ".join(
            f"{k}: {v:,.2f}" for k, v in c["mean"].items() if k in ("events_per_session", "purchase_rate",
                                                                   "dwell_s_per_event", "max_scroll_depth")))
    trending = model.get("trending", {}).get("categories", [])
    table.add_row("trending categories (last hour)", ", ".join(c["category_id"] for c in trending) or "-")
    table.add_row("model size (pickled)", f"{model.get('model_bytes', 0):,} bytes")
    return table


def segments_table(settings: Settings, users: int) -> Table:
    """Members per segment, from the audience sets in Redis, in the rules file's order."""
    reader = ProfileReader.from_settings(settings)
    sizes = reader.segment_sizes()
    rules = load_rules(settings)
    changes = topic_size(settings, settings.kafka.topics.segment_changes)
    table = Table(title=f"segments (rules {rules.version!r}; {changes:,} enter/exit changes)")
    for column in ("segment", "members", "share of users", "parent", "priority"):
        table.add_column(column, justify="right" if column in ("members", "share of users", "priority") else "left")
    for segment in sorted(rules.segments, key=lambda s: -s.priority):
        members = sizes.pop(segment.name, 0)
        table.add_row(segment.name, f"{members:,}", f"{members / users:.1%}" if users else "-",
                      segment.parent or "", str(segment.priority))
    for name, members in sorted(sizes.items()):  # segments of earlier rules that still have members
        table.add_row(f"{name} (not in the rules)", f"{members:,}", f"{members / users:.1%}" if users else "-", "", "")
    return table


def profile_table(profile: dict) -> Table:
    table = Table(title=f"profile of user {profile['user_id']}", show_header=False)
    table.add_row("first seen / last seen (event time, UTC)",
                  f"{_utc(profile['first_seen'])}  ->  {_utc(profile['last_seen'])}")
    table.add_row("events", ", ".join(f"{k}: {v}" for k, v in profile["counts"].items()))
    table.add_row("sessions (converted)", f"{profile['sessions_closed']} ({profile['sessions_converted']})")
    table.add_row("total dwell", f"{profile['dwell_ms_total'] / 1000:,.0f} s")
    table.add_row("max scroll depth", f"{profile['max_scroll_depth']:.0%}")
    table.add_row("top categories", ", ".join(f"{c['category_id']} ({c['events']})" for c in profile["top_categories"]))
    for name, counts in profile["windows"].items():
        table.add_row(f"last {name} before last event", ", ".join(f"{k}: {v}" for k, v in counts.items()) or "-")
    table.add_row("segments (primary first)", ", ".join(
        sorted(profile.get("segments", {}), key=lambda name: name != profile.get("primary_segment"))) or "-")
    table.add_row("scores", ", ".join(f"{k}: {v:,.2f}" for k, v in profile.get("scores", {}).items()) or "-")
    table.add_row("version", str(profile["version"]))
    return table


WHY = {"co-view": "viewed, carted or bought in the same session as {item} by other users",
       "recent": "the user touched it recently",
       "trending": "trending: among the most interacted items {context} lately (cold start)"}
# Where a trending item trends (its ``context``: ``category:<id>``, ``referrer:<host>``, ``device:<class>``, ``all``).
TRENDING_WHERE = {"category": "of {item}'s category", "referrer": "among users who came from {value}",
                  "device": "on {value} devices", "all": "on the whole site"}


def why(entry: dict[str, str], answered: str) -> str:
    """Why an item of a user's top-N is there, from its source (and, for trending, its context)."""
    kind, _, value = entry.get("context", "category:").partition(":")
    context = TRENDING_WHERE.get(kind, "in {value}").format(item=answered, value=value or kind)
    return WHY[entry["source"]].format(item=answered, context=context)


def recommendations_table(user_id: str, reco: dict) -> Table:
    """A user's top-N and why each item is there (its source in the blend)."""
    table = Table(title=f"recommendations for {user_id} (model {reco['model_version']}, "
                        f"answering item {reco['item']} at {_utc(reco['at'])})")
    for column in ("#", "item", "source", "why"):
        table.add_column(column)
    for rank, entry in enumerate(reco["items"], start=1):
        table.add_row(str(rank), entry["item"], entry["source"], why(entry, reco["item"]))
    return table


def tell_story(settings: Settings, out: Path) -> None:
    """What happened, from the segment-change stream: one user's entries and exits with their
    causes, and every segment's size over event time as a PNG."""
    changes = read_topic(settings, settings.kafka.topics.segment_changes)
    user = storyteller(changes, prefer_segment="cart_abandoner")
    if user is None:
        console.print("no segment changes: nothing to tell")
        return
    table = Table(title=f"what happened to user {user} (from the segment-change stream)")
    for column in ("event time (UTC)", "", "segment", "because"):
        table.add_column(column)
    for change in timeline(changes, user):
        table.add_row(_utc(change["event_time"]), "entered" if change["action"] == "enter" else "left",
                      change["segment"], describe_cause(change["cause"]))
    console.print(table)
    png = plot_sizes(sizes_over_time(changes), out / "segment-sizes.png",
                     f"segment sizes over event time ({len(changes):,} changes)")
    console.print(f"segment sizes over event time: {png}")


def _compressed_rules(settings: Settings, window: str, out: Path) -> Path:
    """A copy of the rules whose cart-abandonment deadline is ``window`` (see the module docstring)."""
    path = out / "rules-compressed.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(compress_trigger(settings.rules.path.read_text(), COMPRESSED_TRIGGER, window))
    return path


def _utc(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


@click.command()
@config_options
@click.option("--dataset", type=click.Choice(["all", "taobao", "jd"]), default="all",
              help="Real dataset to replay (falls back to synthetic when the data is missing).")
@click.option("--limit", type=click.IntRange(min=0), default=REPLAYS["demo"].limit, show_default=True,
              help="Replay at most this many events (0 = all of them).")
@click.option("--user-share", type=click.FloatRange(min=0, max=1, min_open=True), default=REPLAYS["demo"].user_share,
              show_default=True,
              help="Real data: replay every event of this share of the users (by a hash of the id) and none of "
                   "the others'. 0.2 and 20,000 events span the event time of the first 100,000 events of all users.")
@click.option("--seed", type=int, default=7, help="Seed of the synthetic signals mixed into the replay.")
@click.option("--datasets-dir", type=click.Path(file_okay=False), default=None)
@click.option("--cart-window", default="10m", show_default=True,
              help=f"Time compression: the {COMPRESSED_TRIGGER} trigger's deadline in the demo's copy of the "
                   "rules (the replay spans ~49 minutes; 'off' keeps the rules file as it is).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEMO_OUT, show_default=True,
              help="Where the summary, the picture and the compressed rules are written.")
@click.option("--serve", is_flag=True, help="Keep the HTTP API up after the job has finished, until Ctrl-C.")
def main(config_path, overrides, dataset, limit, user_share, seed, datasets_dir, cart_window, out, serve) -> None:
    """Replay real data (else a synthetic stream) through the job on the local stack and show what it made
    (recreates the job's topics and deletes its Redis keys first)."""
    try:
        settings = load_settings(config_path, ["kafka.bounded=true", "flink.prometheus_port=9249-9259",
                                               "recommendations.enabled=true", *overrides])
        settings = settings.with_overrides(experiments=[*settings.model_dump(mode="json")["experiments"],
                                                        DEMO_EXPERIMENT])
        if cart_window != "off":
            compressed = _compressed_rules(settings, cart_window, out)
            settings = settings.with_overrides(rules={"path": str(compressed)})
            console.print(f"time compression: {COMPRESSED_TRIGGER} fires after {cart_window} without a purchase "
                          f"instead of the rules file's deadline (the replay spans ~49 minutes); rules: {compressed}")
        load_rules(settings)
    except (ConfigError, RulesError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        sys.exit(2)
    location = locate_datasets(datasets_dir)
    if location.missing:
        console.print(f"[yellow]{location.report()}[/yellow]\n"
                      "[yellow]-> replaying the seeded synthetic generator instead of real data[/yellow]")
        dataset, augmented = "synthetic", False
    else:
        console.print(f"replaying real data ({dataset}) from {location.root}: every event of {user_share:.0%} of "
                      "the users (by a hash of the id), mixed with seeded synthetic scroll/dwell/click/device signals")
        augmented = True

    console.print("resetting demo state: recreating topics, deleting "
                  f"{settings.redis.key_prefix}:* keys ...")
    ensure_topics(settings, recreate=True)
    console.print(f"  deleted {ProfileReader.from_settings(settings).delete_all():,} Redis keys")

    events = with_exposures(replay_events(dataset, datasets_dir=datasets_dir, seed=seed, augmented=augmented,
                                          limit=limit or None, user_share=1.0 if dataset == "synthetic" else user_share),
                            [settings.experiment_map()[DEMO_EXPERIMENT["name"]]])
    security = client_config(KafkaProducer, settings)
    summary = produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, config=security)
    produce_raw([RawRecord(value, None, 1511658000000) for value in MALFORMED],
                settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False, config=security)
    produced = summary.sent + len(MALFORMED)
    console.print(f"produced {summary}, plus {len(MALFORMED)} malformed records for the DLQ")

    key = secrets.token_urlsafe(24)  # this run's API key, handed to the API process only through its environment
    out.mkdir(parents=True, exist_ok=True)
    api_config = out / "api-config.yaml"
    api_config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    with api_process(api_config, settings.api.port or _free_port(), env={settings.api.keys_env: key}) as api_url, \
            webhooks_beside(settings, out) as receiver:
        console.print(f"HTTP API beside the job: {api_url} (docs: {api_url}/docs)")
        console.print(f"webhook service beside the job: {WEBHOOK_SEGMENT} entries to {receiver.url}{WEBHOOK_PATH}",
                      soft_wrap=True)
        elapsed = run_with_progress(settings, produced)
        show_summary(settings, produced, elapsed)
        tell_story(settings, out)
        show_api(settings, api_url, key)
        show_webhooks(settings, receiver)
        console.print(render(experiment_report(settings, DEMO_EXPERIMENT["name"])))
        console.save_text(str(out / "summary.txt"))
        console.print(f"summary saved: {out / 'summary.txt'}")
        if serve:
            console.print(f"serving {api_url} until Ctrl-C")
            with suppress(KeyboardInterrupt):
                threading.Event().wait()


@contextmanager
def webhooks_beside(settings: Settings, out: Path) -> Iterator[SignedReceiver]:
    """The activation service (a child process, as in production) posting the demo's
    ``WEBHOOK_SEGMENT`` entries to a signature-checking receiver on loopback."""
    secret = secrets.token_urlsafe(24)
    receiver = SignedReceiver(secret.encode())
    endpoint = {"name": "demo", "url": receiver.url + WEBHOOK_PATH, "segments": [WEBHOOK_SEGMENT], "actions": ["enter"]}
    config = out / "activation-config.yaml"
    config.write_text(yaml.safe_dump(settings.with_overrides(activation={"endpoints": [endpoint]}).model_dump(mode="json")))
    service = subprocess.Popen([sys.executable, "-m", "personalization", "webhooks", "run", "--config", str(config)],
                               env={**os.environ, "PZ_WEBHOOK_SECRET": secret}, stdout=subprocess.DEVNULL,
                               stderr=(out / "activation.log").open("w"))
    try:
        yield receiver
    finally:
        service.terminate()  # SIGTERM: it finishes the batch in hand
        service.wait(timeout=60)
        receiver.close()


def show_webhooks(settings: Settings, receiver: SignedReceiver, timeout_s: float = 60) -> None:
    """Wait until every ``WEBHOOK_SEGMENT`` entry the job wrote has reached the receiver, then show one."""
    entries = [c for c in read_topic(settings, settings.kafka.topics.segment_changes)
               if c["segment"] == WEBHOOK_SEGMENT and c["action"] == "enter"]
    deadline = time.monotonic() + timeout_s
    while len(receiver.deliveries()) < len(entries) and time.monotonic() < deadline:
        time.sleep(0.2)
    deliveries = receiver.deliveries()
    console.print(f"webhooks: {len(deliveries):,} of {len(entries):,} {WEBHOOK_SEGMENT} entries delivered, each "
                  f"signed (HMAC-SHA256, verified by the receiver; {receiver.refused} refused); one of them:")
    if deliveries:
        console.print(f"  Idempotency-Key: {deliveries[0].key}\n  {deliveries[0].body.decode()[:400]}", soft_wrap=True)


def show_api(settings: Settings, url: str, key: str) -> None:
    """A curl line for the segments of the first user with a segment change, and what it answers."""
    changes = ProfileReader.from_settings(settings).changes(count=1)
    if not changes:
        return
    path = f"/v1/users/{quote(changes[0][1]['user_id'], safe='')}/segments"
    answer = httpx.get(url + path, headers={"X-API-Key": key}, timeout=10)
    console.print(f"ask the API (HTTP {answer.status_code}; the API stops with the demo, keep it with --serve):\n"
                  f"  curl -H 'X-API-Key: {key}' {url}{path}\n  -> {answer.text[:300]}", soft_wrap=True)
