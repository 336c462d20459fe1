"""Static checks of docker/: the image, the compose stack, Prometheus and Grafana files.

No Docker engine is needed: the files are parsed and checked against the Compose Specification
schema (vendored, see tests/static/COMPOSE_SPEC_SOURCE.md), against each other, and against the
versions the rest of the project pins (requirements.txt, stack/pom.xml, personalization/config/default.yaml).
Nothing here imports Flink.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import yaml

from personalization.cli import COMMANDS
from personalization.config.settings import DEFAULT_CONFIG, load_settings
from personalization.core.dead_letter import dlq_max_message_bytes

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
STATIC = Path(__file__).resolve().parent

DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS = DOCKER / "prometheus.yml"
ALERTS = DOCKER / "alerts.yml"
ALERTS_TEST = DOCKER / "alerts.test.yml"
# Unpacked from Debian's prometheus package by `stack/stack.sh install` (run by `make setup`).
PROMTOOL = Path(os.environ.get("STACK_DIR", REPO / ".stack")) / "tools" / "promtool"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "personalization.json"
GRAFANA_DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARD_PROVIDERS = DOCKER / "grafana" / "provisioning" / "dashboards"
COMPOSE_SCHEMA = STATIC / "compose-spec.json"
COMPOSE_SCHEMA_SOURCE = STATIC / "COMPOSE_SPEC_SOURCE.md"

PROM_PORT = 9249
PROM_REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"

# The job's counters, registered in the operator metric group "personalization". Each entry lists
# substrings that must all occur in personalization/ sources, so a renamed counter fails here
# (the rejection counters and the outcome counters are built with f-strings from enum values).
REJECTION_REASONS = ("too_large", "not_utf8", "not_json", "missing_identity", "unknown_event_type",
                     "schema_violation", "ts_in_future", "timestamp_mismatch")
JOB_COUNTERS: dict[str, tuple[str, ...]] = {
    "events_valid": ('.counter("events_valid")',),
    **{f"events_rejected_{reason}": ('.counter(f"events_rejected_{', f'"{reason}"')
       for reason in REJECTION_REASONS},
    # The user operator's per-event counters, registered through operators.counters.BatchedCounters.
    "events_processed": ("BatchedCounters(metrics", 'f"events_{outcome.value}"', '"processed"'),
    "events_duplicate": ("BatchedCounters(metrics", 'f"events_{outcome.value}"', '"duplicate"'),
    "events_late": ("BatchedCounters(metrics", 'f"events_{outcome.value}"', '"late"'),
    "sessions_emitted": ("BatchedCounters(metrics", '"sessions_emitted"'),
    "profile_writes": ("BatchedCounters(metrics", '"profile_writes"'),
}
JOB_METRIC_GROUP = "personalization"

# Standard Flink metrics the dashboard may use, by Flink scope. The Prometheus reporter names a
# metric flink_<logical scope joined by "_">_<name>, every character outside [a-zA-Z0-9:_]
# replaced by "_"; key/value groups (topic, partition) keep their key in the name and become
# labels. Sources: Flink's metrics documentation (system metrics, FLIP-33 source metrics) and
# flink-connector-kafka's KafkaSourceReaderMetrics (KafkaSourceReader.*, Kafka consumer metrics
# under KafkaSourceReader.KafkaConsumer).
STANDARD_FLINK_METRICS: dict[str, tuple[str, ...]] = {
    "jobmanager": (
        "numRegisteredTaskManagers", "numRunningJobs", "taskSlotsAvailable", "taskSlotsTotal",
        "Status.JVM.CPU.Load", "Status.JVM.Memory.Heap.Used", "Status.JVM.Memory.Heap.Max",
    ),
    "jobmanager.job": (
        "numRestarts", "lastCheckpointDuration", "lastCheckpointSize", "lastCheckpointFullSize",
        "lastCheckpointRestoreTimestamp", "lastCheckpointCompletedTimestamp", "numberOfCompletedCheckpoints",
        "numberOfFailedCheckpoints", "numberOfInProgressCheckpoints", "totalNumberOfCheckpoints",
    ),
    "taskmanager": (
        "Status.JVM.CPU.Load", "Status.JVM.Memory.Heap.Used", "Status.JVM.Memory.Heap.Max",
        "Status.JVM.Memory.NonHeap.Used", "Status.JVM.GarbageCollector.All.Count",
        "Status.JVM.GarbageCollector.All.Time", "Status.Flink.Memory.Managed.Used",
        "Status.Flink.Memory.Managed.Total",
    ),
    "taskmanager.job.task": (
        "busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond",
        "numRecordsIn", "numRecordsOut", "numRecordsInPerSecond", "numRecordsOutPerSecond",
        "numBytesInPerSecond", "numBytesOutPerSecond", "isBackPressured",
    ),
    "taskmanager.job.task.operator": (
        "currentInputWatermark", "currentOutputWatermark",
        "numRecordsIn", "numRecordsOut", "numRecordsInPerSecond", "numRecordsOutPerSecond",
        # FLIP-33 source metrics
        "pendingRecords", "pendingBytes", "watermarkLag", "currentEmitEventTimeLag",
        "currentFetchEventTimeLag", "sourceIdleTime", "numRecordsInErrors",
        # flink-connector-kafka source
        "KafkaSourceReader.commitsSucceeded", "KafkaSourceReader.commitsFailed",
        "KafkaSourceReader.topic.partition.currentOffset",
        "KafkaSourceReader.topic.partition.committedOffset",
        "KafkaSourceReader.KafkaConsumer.records-lag-max",
        "KafkaSourceReader.KafkaConsumer.records-lag-avg",
        "KafkaSourceReader.KafkaConsumer.records-consumed-rate",
        "KafkaSourceReader.KafkaConsumer.records-consumed-total",
        "KafkaSourceReader.KafkaConsumer.bytes-consumed-rate",
        "KafkaSourceReader.KafkaConsumer.fetch-rate",
        "KafkaSourceReader.KafkaConsumer.fetch-latency-avg",
    ),
}


def prometheus_name(scope: str, name: str) -> str:
    return "flink_" + re.sub(r"[^a-zA-Z0-9:_]", "_", f"{scope}.{name}".replace(".", "_"))


def job_counter_metric(counter: str) -> str:
    return prometheus_name(f"taskmanager.job.task.operator.{JOB_METRIC_GROUP}", counter)


# ---------------------------------------------------------------------------------------------
# loading and parsing


@cache
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


_INTERPOLATION = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
                            r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str]):
    """Compose-style interpolation (${VAR}, ${VAR:-default}, ${VAR-default}, $$) with ``env``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op in (":-", "-"):
            return arg if (current is None or (op == ":-" and current == "")) else current
        if op in (":?", "?"):
            assert current, f"${{{name}}} is required by {COMPOSE.name}"
            return current
        if op in (":+", "+"):
            return arg if current else ""
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


@cache
def compose() -> dict:
    """The compose file as Docker Compose sees it with no variables set (defaults applied)."""
    return interpolate(compose_raw(), {})


def services() -> dict[str, dict]:
    return compose()["services"]


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def flink_properties(service: dict) -> dict[str, str]:
    text = service["environment"]["FLINK_PROPERTIES"]
    properties = {}
    for line in text.splitlines():
        if line.strip():
            key, sep, value = line.partition(":")
            assert sep, f"FLINK_PROPERTIES line without 'key: value': {line!r}"
            properties[key.strip()] = value.strip()
    return properties


def flink_services() -> dict[str, dict]:
    """Services running the job image with FLINK_PROPERTIES (JobManager, TaskManagers, submitter, tools)."""
    return {name: svc for name, svc in services().items() if "FLINK_PROPERTIES" in svc.get("environment", {})}


def taskmanagers() -> dict[str, dict]:
    return {name: svc for name, svc in services().items() if command_text(svc) == "taskmanager"}


def jobmanager() -> tuple[str, dict]:
    (item,) = [(name, svc) for name, svc in services().items() if command_text(svc) == "jobmanager"]
    return item


def submitter() -> tuple[str, dict]:
    (item,) = [(name, svc) for name, svc in services().items() if "flink run" in command_text(svc)]
    return item


def submitter_script() -> str:
    return command_text(submitter()[1])


def flink_run_tokens() -> list[str]:
    """The words of the submitter's `flink run ...` command line (shell continuations joined)."""
    script = submitter_script()
    return shlex.split(script[script.index("flink run"):].replace("\\\n", " "))


def option_value(tokens: list[str], option: str) -> str:
    return tokens[tokens.index(option) + 1]


def set_overrides() -> dict[str, str]:
    tokens = flink_run_tokens()
    overrides = {}
    for i, token in enumerate(tokens[:-1]):
        if token == "--set":
            key, sep, value = tokens[i + 1].partition("=")
            assert sep, f"--set {tokens[i + 1]!r} is not key=value"
            overrides[key] = value
    return overrides


@cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not current and not stripped):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continuation line"
    return tuple(instructions)


def _arg_defaults(args: list[str]) -> dict[str, str]:
    defaults = {}
    for arg in args:
        name, _, value = arg.partition("=")
        defaults[name.strip()] = value.strip().strip('"')
    return defaults


def resolve(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


@cache
def dockerfile_stages() -> tuple[dict, ...]:
    """Stages: base image (global ARGs resolved), name, and the instructions of the stage."""
    global_args: list[str] = []
    stages: list[dict] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = resolve(parts[0], _arg_defaults(global_args))
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            stages.append({"base": base, "name": name, "instructions": []})
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, found {keyword}"
            global_args.append(rest)
        else:
            stages[-1]["instructions"].append((keyword, rest))
    return tuple(stages)


def stage_args(stage: dict) -> dict[str, str]:
    return _arg_defaults([rest for keyword, rest in stage["instructions"] if keyword == "ARG"])


def final_stage() -> dict:
    return dockerfile_stages()[-1]


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None if untagged); digests are ignored."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return (head + "/" if head else "") + last.split(":", 1)[0]


EXACT_VERSION_TAG = re.compile(r"^v?\d+\.\d+\.\d+([-_.+][A-Za-z0-9_.+-]*)?$")


@cache
def pom() -> tuple[dict[str, str], list[dict[str, str]], set[str]]:
    """(properties, dependencies with properties resolved, execution ids) of stack/pom.xml."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(REPO / "stack" / "pom.xml").getroot()
    properties = {child.tag.split("}", 1)[1]: (child.text or "").strip()
                  for child in root.find("m:properties", ns)}

    def expand(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: properties.get(m.group(1), m.group(0)), text)

    dependencies = []
    for dep in root.findall("m:dependencies/m:dependency", ns):
        dependencies.append({field: expand(dep.findtext(f"m:{field}", default="", namespaces=ns))
                             for field in ("groupId", "artifactId", "version")})
    executions = {e.findtext("m:id", namespaces=ns) for e in root.iter("{http://maven.apache.org/POM/4.0.0}execution")}
    return properties, dependencies, executions


def pom_version(group: str, artifact: str) -> str:
    (version,) = [d["version"] for d in pom()[1] if (d["groupId"], d["artifactId"]) == (group, artifact)]
    assert "${" not in version, f"unresolved property in the version of {artifact}: {version}"
    return version


def connector_version() -> str:
    return pom_version("org.apache.flink", "flink-sql-connector-kafka")


def kafka_version() -> str:
    return pom_version("org.apache.kafka", "kafka_" + pom()[0]["kafka.scala.binary"])


def requirement_pin(name: str) -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(rf"^\s*{re.escape(name)}\s*==\s*([^\s#;]+)", line, re.IGNORECASE)
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned with == in requirements.txt")


@cache
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels of collapsed rows
    return panels


def dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]
    for variable in dashboard().get("templating", {}).get("list", []):
        query = variable.get("query")
        queries.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return queries


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\b(flink_[A-Za-z0-9_:]+)", promql))


# ---------------------------------------------------------------------------------------------
# Compose file


@cache
def compose_schema() -> dict:
    return json.loads(COMPOSE_SCHEMA.read_text())


def test_vendored_compose_schema_is_the_recorded_file():
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in COMPOSE_SCHEMA_SOURCE.read_text(), (
        f"{COMPOSE_SCHEMA.name} (sha256 {digest}) is not the file described in {COMPOSE_SCHEMA_SOURCE.name}")
    assert compose_schema()["title"] == "Compose Specification"


def test_compose_validates_against_the_compose_spec_schema():
    import fastjsonschema

    # fastjsonschema implements draft-07: it checks everything but the draft 2020-12 keyword
    # unevaluatedProperties (unknown service keys), which the next test covers.
    fastjsonschema.compile(compose_schema())(compose())
    try:
        import jsonschema  # installed with apache-beam (a dependency of apache-flink)
    except ImportError:
        return
    jsonschema.Draft202012Validator(compose_schema()).validate(compose())


def test_compose_services_use_only_keys_of_the_spec():
    """The spec forbids unknown service keys via unevaluatedProperties (draft 2020-12)."""
    defs = compose_schema()["$defs"]
    known = set(defs["service"]["properties"])
    for part in defs["service"]["allOf"]:
        known |= set(defs[part["$ref"].rsplit("/", 1)[-1]]["properties"])
    for name, service in services().items():
        unknown = {key for key in service if key not in known and not key.startswith("x-")}
        assert not unknown, f"service {name}: keys not in the Compose spec: {sorted(unknown)}"


def test_every_compose_image_is_pinned_to_an_exact_version():
    for name, service in compose_raw()["services"].items():
        image = service.get("image")
        assert image, f"service {name} has no image"
        assert "$" not in image, f"service {name}: image {image!r} depends on a variable"
        tag = image_tag(image)
        assert tag and tag != "latest", f"service {name}: image {image!r} has no version tag"
        if "build" in service:
            continue  # built from docker/Dockerfile: the tag only names the local build
        assert EXACT_VERSION_TAG.match(tag) or "@sha256:" in image, (
            f"service {name}: image {image!r} is not pinned to an exact version (x.y.z)")


def test_kafka_image_matches_the_broker_version_of_the_pom():
    kafka_images = {name: svc["image"] for name, svc in services().items()
                    if image_repository(svc["image"]) == "apache/kafka"}
    assert kafka_images, "no apache/kafka service"
    for name, image in kafka_images.items():
        assert image_tag(image) == kafka_version(), (
            f"service {name}: {image} but stack/pom.xml pins Kafka {kafka_version()}")


def test_flink_services_share_the_image_built_from_the_dockerfile():
    flink = flink_services()
    assert {name for name, svc in flink.items() if command_text(svc) in ("jobmanager", "taskmanager")}
    images = {svc["image"] for svc in flink.values()}
    assert len(images) == 1, f"Flink services use different images: {images}"
    for name, service in flink.items():
        build = service.get("build")
        assert build, f"service {name} does not build the image"
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"service {name}: build context {context} is not the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_one_jobmanager_and_two_taskmanagers():
    jm_name, _ = jobmanager()
    assert jm_name
    assert len(taskmanagers()) == 2
    for name, service in taskmanagers().items():
        assert service["depends_on"][jm_name]["condition"] == "service_healthy", name


def test_flink_configuration_of_the_cluster():
    jm_name, _ = jobmanager()
    # the job's flink.network_buffer_bytes only reaches a local MiniCluster: a cluster sets its own
    segment_size = f"{load_settings().flink.network_buffer_bytes // 1024}kb"
    named_volumes = set(compose().get("volumes") or {})
    for name, service in flink_services().items():
        props = flink_properties(service)
        assert props["metrics.reporter.prom.factory.class"] == PROM_REPORTER_FACTORY, name
        assert props["metrics.reporter.prom.port"] == str(PROM_PORT), name
        assert props["state.backend.type"] == "rocksdb", name
        assert props["taskmanager.memory.segment-size"] == segment_size, name
        assert props["jobmanager.rpc.address"] == jm_name, name
        checkpoint_dir = props["execution.checkpointing.dir"]
        assert checkpoint_dir.startswith("file:///"), name
        if command_text(service) not in ("jobmanager", "taskmanager"):
            continue
        # checkpoints must be on a named volume shared by the JobManager and every TaskManager
        mounts = [v for v in service.get("volumes", []) if isinstance(v, str)]
        on_volume = [m for m in mounts if m.split(":")[0] in named_volumes
                     and checkpoint_dir[len("file://"):].startswith(m.split(":")[1].rstrip("/") + "/")]
        assert on_volume, f"service {name}: checkpoint dir {checkpoint_dir} is not on a named volume"


def redis_server_args(service: dict) -> list[str]:
    """The redis-server command line, from the `exec ... redis-server ...` line of the script."""
    (script,) = service["command"]
    (line,) = [line for line in script.splitlines() if line.strip().startswith("exec ")]
    args = shlex.split(line)
    return args[args.index("redis-server"):]


def test_redis_appendonly_and_pinned():
    redis = [svc for svc in services().values() if image_repository(svc["image"]) == "redis"]
    assert len(redis) == 1
    command = redis_server_args(redis[0])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis[0]["volumes"]), "Redis data is not on a volume"


# --- secure by default: passwords are compose secrets, nothing has a default login ---------------

def secret_path(service: dict, name: str) -> str:
    """Where a service sees a secret it is granted (the Compose default: /run/secrets/<name>)."""
    granted = {s if isinstance(s, str) else s["source"]: s for s in service.get("secrets", [])}
    assert name in granted, f"secret {name} not granted"
    entry = granted[name]
    return f"/run/secrets/{name}" if isinstance(entry, str) else entry.get("target", f"/run/secrets/{name}")


def test_compose_secrets_are_git_ignored_files():
    secrets = compose()["secrets"]
    assert set(secrets) == {"redis_password", "grafana_admin_password", "api_keys", "webhook_secret"}
    for name, secret in secrets.items():
        assert secret["file"] == f"./secrets/{name}", name
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DOCKER / "secrets" / "redis_password")], cwd=REPO)
    assert ignored.returncode == 0, "docker/secrets/ must be git-ignored"


def test_no_service_has_a_password_in_its_environment():
    for name, service in services().items():
        environment = service.get("environment", {})
        environment = environment if isinstance(environment, dict) else dict(e.split("=", 1) for e in environment)
        for key, value in environment.items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, key)


def test_redis_requires_the_password_of_its_secret():
    redis = next(svc for svc in services().values() if image_repository(svc["image"]) == "redis")
    path = secret_path(redis, "redis_password")
    (script,) = redis["command"]
    assert f"requirepass \"%s\"\\n' \"$(cat {path})\"" in script
    config = script.split("> ", 1)[1].split()[0]
    assert redis_server_args(redis)[1] == config  # the config file with requirepass is what the server reads
    assert "requirepass" not in redis_server_args(redis)  # not on the command line (ps shows it)
    assert f"REDISCLI_AUTH=\"$(cat {path})\"" in redis["healthcheck"]["test"][1]


def test_flink_processes_read_the_redis_password_from_the_secret():
    for name, service in services().items():
        if service.get("image", "").startswith("personalization-job") and name != "activation":  # no Redis
            assert service["environment"]["PZ_REDIS_PASSWORD_FILE"] == secret_path(service, "redis_password"), name


def test_grafana_has_no_default_login_and_no_anonymous_access():
    grafana = next(svc for svc in services().values() if image_repository(svc["image"]) == "grafana/grafana")
    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment  # Grafana's default would be admin
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == secret_path(grafana, "grafana_admin_password")


def test_kafka_is_a_single_kraft_node():
    (kafka,) = [svc for name, svc in services().items()
                if image_repository(svc["image"]) == "apache/kafka" and "command" not in svc]
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"


def test_topics_created_match_the_job_config():
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    topics = config["kafka"]["topics"]
    # every topic of the config (a new one cannot be forgotten), rules apart: it has one partition,
    # and the DLQ apart: it takes records larger by the dead-letter headers
    expected = {name for key, name in topics.items() if key not in ("partitions", "rules", "dlq")}
    (script,) = [command_text(svc) for svc in services().values() if "kafka-topics.sh" in command_text(svc)]
    match = re.search(r"for topic in ([^;]+);", script)
    assert match, "topic creation loop not found"
    assert set(match.group(1).split()) == expected
    assert re.search(rf"--partitions {topics['partitions']}\b", script)
    dlq_size = dlq_max_message_bytes(config["kafka"]["max_message_bytes"])
    assert re.search(rf"create --topic {re.escape(topics['dlq'])} --partitions {topics['partitions']} "
                     rf"--config max.message.bytes={dlq_size}\b", script)
    # every create has the replicas and min.insync.replicas of the environment, the config's defaults
    assert len(re.findall(r"--create", script)) == 1 and script.count("create --topic") == 3
    assert ('--replication-factor "$REPLICATION_FACTOR" --config "min.insync.replicas=$MIN_INSYNC_REPLICAS"'
            in script)
    (init,) = [svc for svc in services().values() if "kafka-topics.sh" in command_text(svc)]
    assert int(init["environment"]["REPLICATION_FACTOR"]) == config["kafka"]["replication_factor"]
    assert int(init["environment"]["MIN_INSYNC_REPLICAS"]) == config["kafka"]["min_insync_replicas"]


def test_submitter_runs_the_python_entry_point():
    name, service = submitter()
    script = submitter_script()
    assert service.get("restart") == "no", "the submitter is one-shot"
    assert service["depends_on"][jobmanager()[0]]["condition"] == "service_healthy"
    tokens = flink_run_tokens()
    assert "--detached" in tokens or "-d" in tokens
    assert option_value(tokens, "--python") == "/opt/personalization/personalization/pipelines/main.py"
    assert (REPO / "personalization" / "pipelines" / "main.py").is_file()
    assert option_value(tokens, "--config") == "/opt/personalization/personalization/config/default.yaml"
    assert "personalization" in script.split("flink run")[0], "no check for an already running job"
    overrides = set_overrides()
    kafka_service = next(n for n, s in services().items()
                         if image_repository(s["image"]) == "apache/kafka" and "command" not in s)
    assert overrides["kafka.bootstrap_servers"] == f"{kafka_service}:9092"
    redis_service = next(n for n, s in services().items() if image_repository(s["image"]) == "redis")
    assert overrides["redis.host"] == redis_service
    assert overrides["flink.state_backend"] == "rocksdb"


def test_submitter_overrides_are_valid_job_config():
    """The --set overrides name real config keys with valid values (the job's own validation)."""
    from personalization.config.settings import load_settings

    overrides = {key: value.replace("$PZ_PARALLELISM", "4") for key, value in set_overrides().items()}
    settings = load_settings(DEFAULT_CONFIG, [f"{k}={v}" for k, v in overrides.items()])
    assert settings.kafka.bootstrap_servers == overrides["kafka.bootstrap_servers"]
    assert settings.flink.parallelism == 4


def test_api_service_serves_the_job_config_beside_redis():
    """The HTTP API: its entry point exists, its overrides are valid config that point it at the
    redis service, its published port is the one it listens on, bound to loopback, and its
    health check asks the readiness endpoint; its keys come from a secret."""
    service = services()["api"]
    entry = service["entrypoint"]
    assert entry[1:3] == ["pz", "api"] and "api" in COMMANDS
    assert option_value(entry, "--config") == "/opt/personalization/personalization/config/default.yaml"
    tokens = service["command"]
    overrides = dict(tokens[i + 1].split("=", 1) for i, token in enumerate(tokens) if token == "--set")
    settings = load_settings(DEFAULT_CONFIG, [f"{k}={v}" for k, v in overrides.items()])
    redis_service = next(n for n, s in services().items() if image_repository(s["image"]) == "redis")
    assert settings.redis.host == redis_service and settings.api.host == "0.0.0.0"
    assert service["ports"] == [f"127.0.0.1:{settings.api.port}:{settings.api.port}"]
    assert service["depends_on"][redis_service]["condition"] == "service_healthy"
    assert f"localhost:{settings.api.port}/readyz" in " ".join(service["healthcheck"]["test"])
    assert settings.api.keys_file == secret_path(service, "api_keys")
    assert image_repository(service["image"]) == image_repository(submitter()[1]["image"])


REDIS_CLUSTER_OVERLAY = DOCKER / "compose.redis-cluster.yaml"


def redis_cluster_overlay() -> dict:
    """The Redis Cluster overlay as Docker Compose sees it with no variables set."""
    return interpolate(yaml.safe_load(REDIS_CLUSTER_OVERLAY.read_text()), {})


def test_redis_cluster_overlay_validates_and_runs_six_cluster_nodes_of_the_pinned_image():
    import fastjsonschema

    overlay = redis_cluster_overlay()
    fastjsonschema.compile(compose_schema())(overlay)
    nodes = {name: svc for name, svc in overlay["services"].items() if re.fullmatch(r"redis-\d", name)}
    assert len(nodes) == 6
    single = services()["redis"]
    for name, node in nodes.items():
        text = command_text(node)
        assert node["image"] == single["image"] and "--cluster-enabled yes" in text, name
        assert "requirepass" in text and "masterauth" in text and "--appendonly yes" in text, name
        assert node["volumes"] == [f"{name}-data:/data"] and f"{name}-data" in overlay["volumes"]
        assert "ports" not in node, f"{name}: the nodes announce container addresses; nothing is published"
    init = overlay["services"]["redis-cluster-init"]
    assert init["image"] == single["image"]
    assert {name: "service_healthy" for name in nodes} == {n: dep["condition"] for n, dep in init["depends_on"].items()}
    script = command_text(init)
    assert "--cluster-replicas 1" in script and all(name in script for name in nodes)
    assert "cluster_state:ok" in script


def test_redis_cluster_overlay_points_the_job_and_the_api_at_the_nodes():
    """The overrides are valid config naming nodes of the overlay, and both wait for the cluster."""
    overlay = redis_cluster_overlay()
    submitter_name = submitter()[0]
    for name, tokens in ((submitter_name, shlex.split(overlay["services"][submitter_name]["environment"]["PZ_JOB_ARGS"])),
                         ("api", overlay["services"]["api"]["command"])):
        overrides = [tokens[i + 1] for i, token in enumerate(tokens) if token == "--set"]
        settings = load_settings(DEFAULT_CONFIG, overrides)
        assert settings.redis.cluster_nodes, name
        for node in settings.redis.cluster_nodes:
            host, port = node.rsplit(":", 1)
            assert host in overlay["services"] and port == "6379", f"{name}: {node}"
        condition = overlay["services"][name]["depends_on"]["redis-cluster-init"]["condition"]
        assert condition == "service_completed_successfully", name
    assert "$PZ_JOB_ARGS" in submitter_script()  # where the submitter passes PZ_JOB_ARGS to `flink run`
    def not_redis(tokens: list[str]) -> list[str]:
        return [tokens[i + 1] for i, token in enumerate(tokens) if token == "--set" and not tokens[i + 1].startswith("redis.")]
    assert not_redis(overlay["services"]["api"]["command"]) == not_redis(services()["api"]["command"])  # only redis.* differ


def test_audience_sweeper_runs_expire_audiences_in_a_loop_on_the_compose_redis():
    """Audience sets have no TTL: the sweeper service is what removes members whose profile
    expired. Its entry point exists and loops (``--every`` parses), and its overrides are valid
    config pointing at the compose Redis."""
    from click.testing import CliRunner

    from personalization.serving.cli import expire_audiences_command

    service = services()["audience-sweeper"]
    entry = service["entrypoint"]
    assert entry[1:3] == ["pz", "expire-audiences"] and "expire-audiences" in COMMANDS
    assert option_value(entry, "--every") == "1h"
    refused = CliRunner().invoke(expire_audiences_command, ["--every", "hourly"])
    assert refused.exit_code == 2 and "--every" in refused.output  # a bad interval is refused before any sweep
    tokens = service["command"]
    settings = load_settings(DEFAULT_CONFIG, [tokens[i + 1] for i, token in enumerate(tokens) if token == "--set"])
    assert (settings.redis.host, settings.redis.port) == ("redis", 6379) and "redis" in services()
    assert "profiles" not in service  # started with the stack, not on request


def test_activation_service_runs_the_webhook_service_on_the_job_config():
    """The webhook service: its entry point exists, its overrides are valid config pointing at the
    compose broker, endpoints come from PZ_WEBHOOK_ENDPOINTS, the secret from a compose secret, and
    it is started only on request (profile)."""
    service = services()["activation"]
    entry = service["entrypoint"]
    assert entry[1:4] == ["pz", "webhooks", "run"] and "webhooks" in COMMANDS
    assert option_value(entry, "--config") == "/opt/personalization/personalization/config/default.yaml"
    assert service["profiles"] == ["activation"]
    tokens = service["command"]
    overrides = dict(tokens[i + 1].split("=", 1) for i, token in enumerate(tokens) if token == "--set")
    assert "activation.endpoints=${PZ_WEBHOOK_ENDPOINTS:-[]}" in COMPOSE.read_text()
    assert overrides["activation.endpoints"] == "[]"  # unset: the service exits 2 (tests/integration/test_webhooks.py)
    overrides["activation.endpoints"] = '[{name: cms, url: "https://cms.example/hooks", segments: ["*"]}]'
    settings = load_settings(DEFAULT_CONFIG, [f"{k}={v}" for k, v in overrides.items()])
    kafka_service = next(n for n, s in services().items() if image_repository(s["image"]) == "apache/kafka")
    assert settings.kafka.bootstrap_servers == f"{kafka_service}:9092"
    assert [e.name for e in settings.activation.endpoints] == ["cms"]
    secret_env = settings.activation.endpoints[0].secret_env
    assert service["environment"][f"{secret_env}_FILE"] == secret_path(service, "webhook_secret")
    assert image_repository(service["image"]) == image_repository(submitter()[1]["image"])


# ---------------------------------------------------------------------------------------------
# the clustered Kafka variant (docker/compose.kafka-cluster.yaml, an override of compose.yaml)

KAFKA_CLUSTER = DOCKER / "compose.kafka-cluster.yaml"


def merged(base, override):
    """Docker Compose's merge of an override file, for the keys ours sets: mappings merge key by
    key; anything else (command, entrypoint, a new service's ports) replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: merged(base[key], value) if key in base else value
                           for key, value in override.items()}}
    return override


@cache
def kafka_cluster_compose() -> dict:
    """compose.yaml with the cluster override, as Docker Compose sees them with no variables set."""
    return interpolate(merged(compose_raw(), yaml.safe_load(KAFKA_CLUSTER.read_text())), {})


def kafka_nodes(project: dict) -> dict[str, dict]:
    return {name: svc for name, svc in project["services"].items()
            if image_repository(svc["image"]) == "apache/kafka" and "command" not in svc}


def test_kafka_cluster_override_validates_against_the_compose_spec_schema():
    import fastjsonschema

    project = kafka_cluster_compose()
    fastjsonschema.compile(compose_schema())(project)
    assert f"-f docker/compose.yaml -f docker/{KAFKA_CLUSTER.name}" in COMPOSE.read_text()
    base_kafka = {svc["image"] for svc in kafka_nodes(compose()).values()}
    assert {svc["image"] for svc in kafka_nodes(project).values()} == base_kafka  # one pinned broker image


def test_kafka_cluster_override_runs_three_kraft_nodes_with_replicated_internal_topics():
    nodes = kafka_nodes(kafka_cluster_compose())
    assert len(nodes) == 3
    ids = {name: int(svc["environment"]["KAFKA_NODE_ID"]) for name, svc in nodes.items()}
    assert sorted(ids.values()) == [1, 2, 3]
    voters = ",".join(f"{ids[name]}@{name}:9093" for name in sorted(nodes, key=ids.get))
    host_ports = []
    for name, svc in nodes.items():
        env = svc["environment"]
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters, f"{name}: another quorum"
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert f"INTERNAL://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert (env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"],
                env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 3, 2, 2)
        external = int(re.search(r"EXTERNAL://localhost:(\d+)", env["KAFKA_ADVERTISED_LISTENERS"]).group(1))
        assert svc["ports"] == [f"127.0.0.1:{external}:{external}"]  # published where it is advertised
        host_ports.append(external)
        assert any(v.endswith(":/var/lib/kafka/data") for v in svc["volumes"])
    assert len(set(host_ports)) == 3
    assert len({svc["environment"]["CLUSTER_ID"] for svc in nodes.values()}) == 1
    assert set(host_ports).isdisjoint({9092, 9093, 29092, 29093, 29094})  # stack.sh's single node and cluster


def test_kafka_cluster_override_creates_replicated_topics_and_runs_the_job_on_every_node():
    project = kafka_cluster_compose()
    nodes = kafka_nodes(project)
    every_node = {f"{name}:9092" for name in nodes}
    (init,) = [svc for svc in project["services"].values() if "kafka-topics.sh" in command_text(svc)]
    assert set(init["environment"]["KAFKA_BOOTSTRAP"].split(",")) == every_node
    assert set(init["depends_on"]) == set(nodes)
    # the submitter's PZ_JOB_ARGS ends its `flink run` line: valid job config, matching kafka-init
    job_args = shlex.split(project["services"][submitter()[0]]["environment"]["PZ_JOB_ARGS"])
    assert flink_run_tokens()[-1] == "$PZ_JOB_ARGS"
    overrides = {**set_overrides(), **dict(job_args[i + 1].split("=", 1) for i, token in enumerate(job_args)
                                          if token == "--set")}
    overrides["flink.parallelism"] = "4"
    settings = load_settings(DEFAULT_CONFIG, [f"{k}={v}" for k, v in overrides.items()])
    assert set(settings.kafka.bootstrap_servers.split(",")) == every_node
    assert settings.kafka.replication_factor == int(init["environment"]["REPLICATION_FACTOR"]) == 3
    assert settings.kafka.min_insync_replicas == int(init["environment"]["MIN_INSYNC_REPLICAS"]) == 2
    assert settings.kafka.delivery_guarantee == "exactly-once"
    activation = project["services"]["activation"]["command"]
    (bootstrap,) = [token.split("=", 1)[1] for token in activation if token.startswith("kafka.bootstrap_servers=")]
    assert set(bootstrap.split(",")) == every_node
    replay = project["services"]["replay"]["entrypoint"]
    assert set(option_value(replay, "--bootstrap").split(",")) == every_node


def test_connector_jar_matches_the_pom():
    version = connector_version()
    jar = f"/opt/flink/lib/flink-sql-connector-kafka-{version}.jar"
    assert set_overrides()["flink.connector_jar"] == jar, "compose points the job at another connector jar"
    args = stage_args(final_stage())
    assert args["FLINK_KAFKA_CONNECTOR_VERSION"] == version, "Dockerfile checks another connector version"
    # the jar is fetched with the pom's own execution, which only copies this artifact
    assert "flink-kafka-connector" in pom()[2]
    connector_stage = next(s for s in dockerfile_stages() if s["name"] == "connector")
    runs = " ".join(rest for keyword, rest in connector_stage["instructions"] if keyword == "RUN")
    copies = " ".join(rest for keyword, rest in connector_stage["instructions"] if keyword == "COPY")
    assert "stack/pom.xml" in copies
    assert "dependency:copy-dependencies@flink-kafka-connector" in runs
    assert "--strict-checksums" in runs or re.search(r"\s-C\s", runs)
    lib_copies = [rest for keyword, rest in final_stage()["instructions"]
                  if keyword == "COPY" and "--from=connector" in rest]
    assert lib_copies and all(resolve(c, {"FLINK_HOME": "/opt/flink"}).split()[-1].rstrip("/") == "/opt/flink/lib"
                              for c in lib_copies)


def test_compose_relative_paths_exist():
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"service {name}: {source} does not exist"


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_base_images_are_pinned():
    stage_names = set()
    for stage in dockerfile_stages():
        base = stage["base"]
        if base in stage_names:
            continue
        assert "$" not in base, f"FROM {base}: unresolved build argument"
        tag = image_tag(base)
        assert tag and tag != "latest", f"FROM {base} is not pinned"
        assert EXACT_VERSION_TAG.match(tag) or "@sha256:" in base, f"FROM {base}: not an exact version"
        if stage["name"]:
            stage_names.add(stage["name"])


def test_flink_base_image_matches_apache_flink_pin():
    flink_version = requirement_pin("apache-flink")
    flink_stages = [s for s in dockerfile_stages() if image_repository(s["base"]) in ("flink", "library/flink")]
    assert final_stage() in flink_stages, "the runtime image is not based on the official flink image"
    for stage in flink_stages:
        tag = image_tag(stage["base"])
        assert tag.split("-")[0] == flink_version, (
            f"{stage['base']} but requirements.txt pins apache-flink {flink_version}")
        assert "java17" in tag.split("-"), f"{stage['base']} is not the Java 17 image"


def test_dockerfile_installs_python_311():
    python_stage = next(s for s in dockerfile_stages() if "PYTHON_VERSION" in stage_args(s))
    args = stage_args(python_stage)
    assert args["PYTHON_VERSION"].startswith("3.11.")
    assert re.fullmatch(r"[0-9a-f]{64}", args["PYTHON_SHA256"]), "the Python source is not checksum-pinned"
    runs = " ".join(rest for keyword, rest in python_stage["instructions"] if keyword == "RUN")
    assert "sha256sum -c" in runs and "--enable-shared" in runs


def _pip_install_commands() -> list[list[str]]:
    """The arguments of every `pip install` / `python -m pip install` in RUN instructions."""
    commands = []
    for stage in dockerfile_stages():
        for keyword, rest in stage["instructions"]:
            if keyword != "RUN":
                continue
            for part in re.split(r";|&&|\|\||\bthen\b|\belse\b", rest):
                try:
                    tokens = shlex.split(part)
                except ValueError:
                    continue
                for i, token in enumerate(tokens[1:], start=1):
                    previous = tokens[i - 1].rsplit("/", 1)[-1]
                    if token == "install" and re.fullmatch(r"pip(3(\.\d+)?)?", previous):
                        commands.append(tokens[i + 1:])
                        break
    return commands


def test_dockerfile_installs_exactly_requirements_txt():
    options_with_value = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url",
                          "--extra-index-url", "-f", "--find-links", "--root-user-action"}
    requirement_files, constraint_files, packages = [], [], []
    for args in _pip_install_commands():
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in options_with_value:
                (requirement_files if arg in ("-r", "--requirement") else
                 constraint_files if arg in ("-c", "--constraint") else []).append(args[i + 1])
                i += 2
                continue
            if not arg.startswith("-"):
                packages.append(arg)
            i += 1
    assert any(f.endswith("/requirements.txt") for f in requirement_files), "requirements.txt is not installed"
    assert any(f.endswith("/requirements.lock") for f in constraint_files), "requirements.lock is not used"
    assert all(f.endswith("/requirements.txt") for f in requirement_files), requirement_files
    extra = [p for p in packages if not p.startswith("pip==")]
    assert not extra, f"packages installed outside requirements.txt: {extra}"
    copies = [rest for stage in dockerfile_stages() for keyword, rest in stage["instructions"] if keyword == "COPY"]
    assert any("requirements.txt" in c.split() and "requirements.loc[k]" in c.split() for c in copies), (
        "requirements.txt (and the optional lock) are not copied into the build")


def test_dockerfile_configures_the_python_executable():
    args = stage_args(final_stage())
    runs = " ".join(rest for keyword, rest in final_stage()["instructions"] if keyword == "RUN")
    python = f"{args['PYTHON_PREFIX']}/bin/python3.11"
    for key in ("python.executable", "python.client.executable"):
        match = re.search(rf'-D{re.escape(key)}=([^"\s]+)', runs)
        assert match, f"{key} is not set in the image's Flink config"
        assert resolve(match.group(1), args) == python
    assert set_overrides()["flink.python_executable"] == python


def test_dockerfile_copies_the_project():
    copies = [rest.split() for keyword, rest in final_stage()["instructions"]
              if keyword == "COPY" and "--from" not in rest]
    sources = {c[0].rstrip("/") for c in copies}
    assert "personalization" in sources  # with its package data: default config, rules, event schema
    home = {"PZ_HOME": "/opt/personalization"}
    targets = {c[0].rstrip("/"): resolve(c[-1], home).rstrip("/") for c in copies}
    assert targets["personalization"] == "/opt/personalization/personalization"
    assert (REPO / "personalization" / "config" / "default.yaml").is_file()


def test_dockerignore_lets_every_copied_file_in():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for stage in dockerfile_stages():
        for keyword, rest in stage["instructions"]:
            if keyword not in ("COPY", "ADD") or "--from" in rest:
                continue
            for source in [s for s in rest.split()[:-1] if not s.startswith("--")]:
                source = source.rstrip("/")
                assert any(a == source or fnmatch.fnmatch(a, source) for a in allowed), (
                    f"{source} is copied by the Dockerfile but excluded by {DOCKERIGNORE.name}")
                if not any(char in source for char in "*?["):  # a glob may match nothing (optional file)
                    assert (REPO / source).exists(), f"{source} does not exist in the repository"


# ---------------------------------------------------------------------------------------------
# Prometheus and Grafana


def test_prometheus_scrapes_every_flink_process_on_9249():
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {target for job in config["scrape_configs"] for static in job.get("static_configs", [])
               for target in static["targets"]}
    expected = {f"{jobmanager()[0]}:{PROM_PORT}"} | {f"{name}:{PROM_PORT}" for name in taskmanagers()}
    assert expected <= targets, f"not scraped: {sorted(expected - targets)}"
    prometheus = next(svc for svc in services().values() if image_repository(svc["image"]) == "prom/prometheus")
    assert "observability" in prometheus["profiles"]
    assert any(v.startswith("./prometheus.yml:") for v in prometheus["volumes"])


def test_grafana_provisioning():
    grafana = next(svc for svc in services().values() if image_repository(svc["image"]) == "grafana/grafana")
    assert "observability" in grafana["profiles"]
    (datasource_file,) = sorted(GRAFANA_DATASOURCES.glob("*.y*ml"))
    (datasource,) = yaml.safe_load(datasource_file.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    prometheus_name_ = next(n for n, s in services().items() if image_repository(s["image"]) == "prom/prometheus")
    assert datasource["url"] == f"http://{prometheus_name_}:9090"
    (provider_file,) = sorted(GRAFANA_DASHBOARD_PROVIDERS.glob("*.y*ml"))
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    host_dir = next(h for h, c in mounts.items() if c == provider["options"]["path"])
    assert (COMPOSE.parent / host_dir / DASHBOARD.name).resolve() == DASHBOARD
    for panel in dashboard_panels():
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_dashboard_is_valid_grafana_json():
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard_panels():
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel.get("title")
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                expr = target["expr"]
                assert expr.strip(), panel["title"]
                depth = {"(": 0, "{": 0, "[": 0}
                for char in expr:
                    if char in "({[":
                        depth[char] += 1
                    elif char in ")}]":
                        depth[{")": "(", "}": "{", "]": "["}[char]] -= 1
                        assert min(depth.values()) >= 0, f"{panel['title']}: unbalanced {expr}"
                assert not any(depth.values()), f"{panel['title']}: unbalanced {expr}"
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_queries_only_known_metrics():
    standard = {prometheus_name(scope, name) for scope, names in STANDARD_FLINK_METRICS.items() for name in names}
    job = {job_counter_metric(counter) for counter in JOB_COUNTERS}
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert used, "the dashboard queries no Flink metric"
    unknown = used - standard - job
    assert not unknown, f"neither standard Flink metrics nor job counters: {sorted(unknown)}"
    missing = job - used
    assert not missing, f"job counters without a panel: {sorted(missing)}"
    assert job_counter_metric("events_processed") == \
        "flink_taskmanager_job_task_operator_personalization_events_processed"


def test_dashboard_shows_kafka_lag_and_watermarks():
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert "flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_lag_max" in used
    assert "flink_taskmanager_job_task_operator_currentInputWatermark" in used


def promtool(*args: str, cwd: Path = DOCKER) -> subprocess.CompletedProcess:
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run `make setup` (stack/stack.sh install unpacks it)"
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_alert_rules_and_the_config_that_loads_them():
    checked = promtool("check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", PROMETHEUS.name)  # also loads its rule_files
    assert config.returncode == 0, config.stdout + config.stderr
    assert ALERTS.name in config.stdout + config.stderr, "prometheus.yml does not load the alert rules"


def test_promtool_rejects_a_broken_rule_file(tmp_path):
    """The check above is real: the same call fails on a bad expression and on a bad duration."""
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTS.read_text().replace("> 0.05", "> > 0.05", 1))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0 and "parse error" in result.stdout + result.stderr, result.stdout + result.stderr
    broken.write_text(ALERTS.read_text().replace("for: 10m", "for: ten minutes", 1))
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_alerts_fire_on_the_series_of_their_unit_tests():
    """docker/alerts.test.yml: every alert fires on series shaped like the job's, the rate-based
    ones stay quiet on healthy series (promtool's rule unit tests)."""
    result = promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    assert alerts <= tested, f"alerts without a unit test: {sorted(alerts - tested)}"


def test_alert_rules_cover_the_issues_and_use_exported_metrics():
    standard = {prometheus_name(scope, name) for scope, names in STANDARD_FLINK_METRICS.items() for name in names}
    known = standard | {job_counter_metric(counter) for counter in JOB_COUNTERS}
    recorded = {rule["record"] for rule in alert_rules() if "record" in rule}
    exprs = [rule["expr"] for rule in alert_rules()]
    # {__name__=~"..."} selects a family (one counter per rejection reason): it must match one we know
    for pattern in (p for expr in exprs for p in re.findall(r'__name__=~"([^"]+)"', expr)):
        assert any(re.fullmatch(pattern, name) for name in known), f"{pattern!r} matches no exported metric"
    used = set().union(*(metric_names(re.sub(r'"[^"]*"', '""', expr)) for expr in exprs))
    assert used, "the alert rules query no Flink metric"
    unknown = used - known - recorded
    assert not unknown, f"neither standard Flink metrics nor job counters: {sorted(unknown)}"
    for metric in ("currentEmitEventTimeLag", "pendingRecords", "numRestarts", "numberOfFailedCheckpoints"):
        assert any(metric in expr for expr in exprs), f"no alert on {metric}"
    assert any("events_rejected_" in expr for expr in exprs), "no alert on the DLQ rate"
    prometheus = next(svc for svc in services().values() if image_repository(svc["image"]) == "prom/prometheus")
    assert f"./{ALERTS.name}:/etc/prometheus/{ALERTS.name}:ro" in prometheus["volumes"]
    assert yaml.safe_load(PROMETHEUS.read_text())["rule_files"] == [ALERTS.name]


def test_job_counters_are_registered_by_the_job():
    sources = "\n".join(path.read_text() for path in sorted((REPO / "personalization").rglob("*.py")))
    assert f'add_group("{JOB_METRIC_GROUP}")' in sources, "metric group not found in personalization/"
    for counter, evidence in JOB_COUNTERS.items():
        missing = [snippet for snippet in evidence if snippet not in sources]
        assert not missing, f"counter {counter}: {missing} not found in personalization/ sources"


# ---------------------------------------------------------------------------------------------
# README


def test_readme_gives_the_commands():
    readme = (DOCKER / "README.md").read_text()
    for command in ("docker build -f docker/Dockerfile", "docker compose -f docker/compose.yaml",
                    "--profile observability", " down"):
        assert command in readme, f"docker/README.md does not show {command!r}"
    for rule in alert_rules():
        if "alert" in rule:
            assert f"`{rule['alert']}`" in readme, f"docker/README.md does not document {rule['alert']}"


def test_every_published_port_is_bound_to_loopback():
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"service {name} publishes {port} on every interface"
