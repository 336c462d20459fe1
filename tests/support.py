"""Helpers for integration tests: isolated settings, job control, polling, end-state snapshots."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import orjson
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from personalization.config.settings import REPO_ROOT, Settings, Topics, load_settings
from personalization.core.dead_letter import DeadLetter
from personalization.pipelines.control import stop_with_savepoint
from personalization.tools.dlq import read_dlq
from personalization.pipelines.main import run_job
from personalization.config.kafka import kafka_client
from personalization.topics.admin import ensure_topics
from personalization.topics.records import read_topic
from personalization.replay.producer import produce, replay_events
from personalization.serving.reader import ProfileReader
from personalization.serving.redis_store import connect

T = TypeVar("T")
PZ = (sys.executable, "-m", "personalization")  # `pz` of this checkout (test_cli runs the installed script)
TOPIC_KEYS = tuple(Topics.keys())
TEST_PREFIX = "pzt"       # Redis key prefix of every test run (pzt:<run>:...)
TEST_TOPIC_PREFIX = "t-"  # Kafka topics of every test run (t-<run>-<name>)
CREATED: list[Settings] = []  # what this test session made, for the clean-up at its end


def isolated_settings(tmp_path: Path, events_topic: str | None = None, **sections) -> Settings:
    """Settings with topics, consumer group and Redis prefix of their own, bounded mode.

    ``events_topic`` shares an input topic between runs that must see the same events.
    """
    run = uuid.uuid4().hex[:10]
    topics = {key: f"{TEST_TOPIC_PREFIX}{run}-{key}" for key in TOPIC_KEYS}
    if events_topic:
        topics["events"] = events_topic
    settings = load_settings().with_overrides(
        kafka={"topics": topics, "group_id": f"g-{run}", "bounded": True},
        redis={"key_prefix": f"{TEST_PREFIX}:{run}"},
        flink={"checkpoint_dir": (tmp_path / f"checkpoints-{run}").as_uri()},
        learning={"snapshot_dir": str(tmp_path / f"models-{run}")},
    )
    settings = settings.with_overrides(**sections) if sections else settings
    ensure_topics(settings)
    CREATED.append(settings)
    return settings


def replayed_run(tmp_path: Path, seed: int, limit: int | None, dataset: str = "taobao", augmented: bool = True,
                 **sections) -> tuple[Settings, list[dict]]:
    """A bounded run of the job over the first ``limit`` (None: all) real events (Taobao with seeded
    synthetic signals unless told otherwise), in topics of its own: the baseline that fault,
    cluster and model tests compare to."""
    return run_over(tmp_path, replay_events(dataset, augmented=augmented, seed=seed, limit=limit), **sections)


def run_over(tmp_path: Path, events: Iterable[dict], **sections) -> tuple[Settings, list[dict]]:
    """A bounded run of the job over ``events``, produced to topics of its own."""
    events = list(events)
    settings = isolated_settings(tmp_path, **sections)
    produce(events, settings.kafka.bootstrap_servers, settings.kafka.topics.events, progress=False)
    run_job(settings)
    return settings, events


def privacy_run_settings(tmp_path: Path) -> Settings:
    """An unbounded run on one partition (the input order is the order written), short sessions,
    refused events routed, no restarts: the privacy tests' runs, driven in phases."""
    return isolated_settings(tmp_path, kafka={"bounded": False, "topics": {"partitions": 1}},
                             time={"session_gap": "30s", "idle_timeout": "1h"},
                             privacy={"without_consent": "route"}, flink={"restart_attempts": 0})


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a YAML file, for running the job as a separate process (`--config`)."""
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return path


def free_port() -> int:
    """A loopback port nobody listens on (for a job's REST endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses listening on a TCP port, from /proc/net/tcp{,6} (Linux): which
    interfaces a server really bound."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                ip = ipaddress.ip_address(raw)
                found.add(str(getattr(ip, "ipv4_mapped", None) or ip))  # Java's IPv6 sockets
    return found


def latest_checkpoint(checkpoint_uri: str) -> str | None:
    """The newest completed checkpoint (a ``chk-N`` folder with its ``_metadata``) under a dir."""
    root = Path(checkpoint_uri.removeprefix("file://"))
    done = sorted(root.glob("*/chk-*/_metadata"), key=lambda p: int(p.parent.name.removeprefix("chk-")))
    return done[-1].parent.as_uri() if done else None


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def start_job(settings: Settings):
    """Submit the job without waiting; returns the JobClient."""
    return run_job(settings, wait=False)


def redis_state(settings: Settings) -> dict[str, object]:
    """Every key under the run's prefix with its content, minus what the wall clock decides:
    a hash's ``updated_at`` field and the ids of stream entries (a stream is compared as the
    sorted list of its entries: how users interleave in it depends on scheduling; a list, the
    erasure index of a user's stream ids, by its length)."""
    cfg = settings.redis
    client = connect(cfg)
    state: dict[str, object] = {}
    for key in client.scan_iter(match=f"{cfg.key_prefix}:*", count=1000):
        kind = client.type(key).decode()
        if kind == "hash":
            value = client.hgetall(key)
            value.pop(b"updated_at", None)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "stream":
            value = sorted(sorted(fields.items()) for _, fields in client.xrange(key))
        elif kind == "string":
            value = client.get(key)
        elif kind == "list":
            value = client.llen(key)
        else:
            raise AssertionError(f"unexpected {kind} key {key!r}")
        state[key.decode().removeprefix(cfg.key_prefix)] = value
    return state


def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter of the run's DLQ, read as the DLQ CLI reads them (a record that is not one fails)."""
    return [record.letter for record in read_dlq(settings)]


def read_all(settings: Settings, topic: str, timeout_s: float = 30.0,
             isolation_level: str = "read_uncommitted") -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its current end offsets (with ``read_committed``: up to the
    last stable offsets, committed transactions only)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False,
                             isolation_level=isolation_level)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


EXACTLY_ONCE = {"delivery_guarantee": "exactly-once"}


def fault_run_settings(baseline: Settings, tmp_path: Path, **sections) -> Settings:
    """A run reading the baseline's input topic, unbounded and exactly-once, with outputs of its own.

    Fault runs are unbounded, as in production (a Kafka source restored from a checkpoint does not
    end at the bounded stopping offsets): once every event is processed, :func:`drain_when_done`
    stops them, which ends event time exactly as the end of a bounded baseline does. No idleness:
    Flink drops the drain's final watermark when the source is idle (FLINK-40499), and partitions
    read to the end go idle after time.idle_timeout."""
    kafka = {**EXACTLY_ONCE, "bounded": False, **sections.pop("kafka", {})}
    return isolated_settings(tmp_path, events_topic=baseline.kafka.topics.events, kafka=kafka,
                             time={"idle_timeout": "1h"}, **sections)


def processed_events(settings: Settings) -> int:
    """Events counted in the run's profiles."""
    return sum(p["events_total"] for p in ProfileReader.from_settings(settings).all_profiles())


def committed_offsets(settings: Settings) -> int:
    """Records of the events topic below the offsets the job's consumer group committed."""
    admin = kafka_client(KafkaAdminClient, settings)
    try:
        offsets = admin.list_group_offsets(settings.kafka.group_id).get(settings.kafka.group_id, {})
    except KafkaError:  # e.g. the group's coordinator still loading: nothing known committed yet
        return 0
    finally:
        admin.close()
    return sum(meta.offset for partition, meta in offsets.items() if partition.topic == settings.kafka.topics.events)


def kill_after_checkpoint(settings: Settings, tmp_path: Path) -> int:
    """Run the job as ``pz run`` and SIGKILL it, the Python client and its JVM (MiniCluster) at
    once, as soon as a completed checkpoint covers records: the source commits a checkpoint's
    offsets to Kafka only after the checkpoint completed (and a moment after its files), so
    committed offsets are the sign. Returns the process's exit status (``-SIGKILL``)."""
    job = subprocess.Popen([*PZ, "run", "--config", str(write_config(settings, tmp_path / "job.yaml"))],
                           cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: latest_checkpoint(settings.flink.checkpoint_dir) and processed_events(settings) > 0
                   and committed_offsets(settings) > 0, 180, "a completed checkpoint with offsets committed, and profiles")
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    return job.returncode


def drain_when_done(client, settings: Settings, total: int, tmp_path: Path) -> None:
    """Stop an unbounded run with ``--drain`` once its profiles count all ``total`` events."""
    wait_until(lambda: processed_events(settings) == total, 300, f"all {total} events to be processed")
    stop_with_savepoint(client, (tmp_path / "drained").as_uri(), drain=True)


def sessions_of(settings: Settings) -> list[dict]:
    """The sessions topic as a sorted list, for comparing runs regardless of output order."""
    records = read_topic(settings, settings.kafka.topics.sessions)
    return sorted(records, key=lambda r: (r["user_id"], r["start"], r["revision"], r["status"]))


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory / "ca.key", "-out", files.ca,
         "-days", "1", "-subj", "/CN=pz-test-ca"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files.key, "-out", directory / "server.csr",
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", directory / "server.csr", "-CA", files.ca, "-CAkey", directory / "ca.key",
         "-CAcreateserial", "-out", files.cert, "-days", "1", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return files


class RedisServer:
    """A private, real redis-server on a free loopback port (auth, TLS, outage and restart tests).

    With ``tls`` the port speaks TLS only (clients need not present a certificate)."""

    def __init__(self, data_dir: Path, *args: str, tls: TlsFiles | None = None) -> None:
        import shutil
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        ports = ["--port", str(self.port)] if tls is None else [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]
        self._cmd = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
                     *ports, "--dir", str(data_dir), "--appendonly", "yes",
                     "--save", "", *args]
        self._process = None
        data_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisServer:
        import socket
        import subprocess

        self._process = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(accepting, 15, f"redis-server on port {self.port}", 0.05)
        return self

    def stop(self, sig: int = 15) -> int | None:
        """Stop the server with ``sig`` (SIGTERM by default); its exit code (``-sig`` if the
        signal ended it), None when it was not running."""
        if self._process is None:
            return None
        self._process.send_signal(sig)
        code = self._process.wait(timeout=15)
        self._process = None
        return code


class SseListener(threading.Thread):
    """Reads one SSE response in the background, parsing events into dicts."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.events: list[dict] = []
        self.status: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=30)) as response:
            self.status = response.status_code
            event: dict = {}
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if not line:
                    if "event" in event:
                        self.events.append(event)
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    event[name] = orjson.loads(value) if name == "data" else value

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == kind]
