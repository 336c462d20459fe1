"""Private Kafka brokers next to the shared stack's, which they never touch: a SASL_PLAINTEXT
(PLAIN) broker for security tests, and the 3-broker cluster of ``stack.sh kafka-cluster`` for
replication tests.

The SASL broker: KRaft (combined broker + controller) from the jars stack/stack.sh installs under
.stack/kafka, with its own data directory and free loopback ports. Every client, including the
broker itself, must authenticate: there is no PLAINTEXT listener.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from personalization.config.settings import REPO_ROOT
from tests.support import free_port, wait_until

KAFKA_LIBS = REPO_ROOT / ".stack" / "kafka" / "libs"
STACK = ("bash", str(REPO_ROOT / "stack" / "stack.sh"))
JAVA = os.environ.get("JAVA", "java")
ADMIN = ("admin", "admin-secret")  # the broker's own (inter-broker) login


class SaslKafka:
    """``users`` maps user name -> password (PLAIN logins the broker accepts besides its own)."""

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        self.workdir = workdir
        self.port, controller = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = workdir / "kafka.log"
        self._process: subprocess.Popen | None = None
        logins = " ".join(f'user_{name}="{password}"' for name, password in {ADMIN[0]: ADMIN[1], **users}.items())
        jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                f'username="{ADMIN[0]}" password="{ADMIN[1]}" {logins};')
        properties = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller}",
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT", "controller.listener.names": "CONTROLLER",
            "sasl.enabled.mechanisms": "PLAIN", "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
            "log.dirs": str(workdir / "data"),
            "num.partitions": "1", "default.replication.factor": "1", "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1", "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1", "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false", "log.retention.ms": "-1",
            "transaction.max.timeout.ms": "3600000",
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "server.properties"
        self.config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))

    def client_properties(self, user: str, password: str) -> dict[str, str]:
        """``kafka.properties`` of a client logging in as ``user``."""
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.jaas.config": ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                                     f'username="{user}" password="{password}";')}

    def start(self) -> SaslKafka:
        java = [JAVA, "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true", "-cp", f"{KAFKA_LIBS}/*"]
        subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(self.config)],
                       check=True, capture_output=True, timeout=120)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([*java, "kafka.Kafka", str(self.config)], stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
        wait_until(self._answers, 120, f"SASL Kafka broker on {self.bootstrap} (log: {self.log})", 0.5)
        return self

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"SASL Kafka broker exited with {self._process.returncode} (log: {self.log})")
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, security_protocol="SASL_PLAINTEXT",
                                     sasl_mechanism="PLAIN", sasl_plain_username=ADMIN[0],
                                     sasl_plain_password=ADMIN[1], request_timeout_ms=3000)
        except KafkaError:
            return False
        try:
            admin.describe_cluster()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None


class KafkaCluster:
    """The 3-node KRaft cluster (each node broker + controller) that ``stack.sh kafka-cluster``
    runs on its own ports, with its state under ``workdir``: a fresh cluster per test."""

    NODES = (1, 2, 3)

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.bootstrap = ""
        # three JVMs starting side by side on a busy machine may take longer than one broker
        self._env = {**os.environ, "KAFKA_CLUSTER_DIR": str(workdir), "STACK_TIMEOUT": "180"}

    def _stack(self, *args: str) -> str:
        done = subprocess.run([*STACK, "kafka-cluster", *args], env=self._env, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh kafka-cluster {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> KafkaCluster:
        """Start every node that is not running; returns once all three are unfenced brokers."""
        self.bootstrap = re.search(r"bootstrap (\S+)", self._stack("up")).group(1)
        return self

    def pid(self, node: int) -> int:
        return int((self.workdir / f"node{node}" / "kafka.pid").read_text())

    def kill(self, node: int) -> None:
        """SIGKILL, as a crash would; returns once the process is gone."""
        self._stack("kill", str(node))

    def partitions(self, topics: list[str]) -> dict[tuple[str, int], dict]:
        """(topic, partition) -> its metadata: ``leader_id`` (-1: none), ``replica_nodes``, ``isr_nodes``..."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            return {(topic["name"], partition["partition_index"]): partition
                    for topic in admin.describe_topics(topics) for partition in topic["partitions"]}
        finally:
            admin.close()

    def stop(self) -> None:
        self._stack("down")


def _cluster_id() -> str:
    """KRaft cluster ids are 16 bytes in URL-safe base64 without padding (what StorageTool random-uuid prints)."""
    import base64
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
