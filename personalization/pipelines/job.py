"""Job assembly: Kafka source with per-partition watermarks -> parse -> identity resolution ->
key by user -> profiles.

The source is declared with Flink SQL rather than the DataStream KafkaSource because the SQL
connector exposes the record's partition, offset and timestamp as metadata columns next to the
raw bytes (the DLQ needs all four), and pushes the watermark into the source, where it is
generated per Kafka partition with idleness. ``to_data_stream`` hands rows, record timestamps
and watermarks on to the Python DataStream operators. The DLQ sink is a SQL table too: only the
SQL connector writes Kafka headers, where a dead letter keeps what is not the original bytes.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path

import pyflink

from pyflink.common import Configuration, Duration, Row, Types, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema, SimpleStringSchema
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer, KafkaRecordSerializationSchema, KafkaSink, KafkaSource,
)
from pyflink.table import Schema, StreamTableEnvironment

from personalization.config.kafka import flink_connector_properties
from personalization.config.settings import REPO_ROOT, Settings
from personalization.core.dead_letter import DeadLetter, dlq_max_message_bytes
from personalization.core.identity import is_link
from personalization.core.rules import RuleSet
from personalization.operators.erasure import CONTROLS, ParseErasures
from personalization.operators.identity import IndexLinks, ResolveIdentities
from personalization.operators.outputs import DLQ, KIND_AND_JSON, SIDE_OUTPUTS, Output, output_topics
from personalization.operators.parse import ANONYMOUS, CLOCK, ParseEvents
from personalization.operators.recommend import WIDE, RecoItems, RecoShards, RecoTrending, RecoUsers, for_recommender
from personalization.operators.rate_alerts import RateAlerts
from personalization.operators.rules_updates import DecodeRules
from personalization.operators.trainer import ModelTrainer
from personalization.operators.user_profile import RouteOutputs, UserProfiles
from personalization.config.rules import load_rules
from personalization.state.descriptors import CONTROL_STATE, RECO_WIDE_LISTS
from personalization.udfs.keys import (context_key, item_key, link_index_key, model_key, rates_key, resolver_key,
                                       shard_key, user_key)

EMBEDDED_STARTUP = Path(__file__).parent / "embedded"  # sitecustomize of the JVM's interpreter
DLQ_ROW = Types.ROW_NAMED(["payload", "headers"], [Types.PRIMITIVE_ARRAY(Types.BYTE()),
                                                    Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()))])
_STARTUP_MODES = {"earliest": "earliest-offset", "latest": "latest-offset", "committed": "group-offsets"}


def flink_configuration(settings: Settings) -> Configuration:
    """Everything Flink reads from its configuration rather than from the job graph."""
    flink = settings.flink
    conf = Configuration()
    entries = {
        "parallelism.default": flink.parallelism,
        "python.execution-mode": flink.python_execution_mode,
        "python.fn-execution.bundle.size": flink.bundle_size,
        "python.fn-execution.bundle.time": flink.bundle_time,
        "python.state.cache-size": flink.state_cache_size,
        # A TaskManager setting: it applies to the local MiniCluster; a cluster takes it from its
        # own Flink configuration (docker/compose.yaml sets it).
        "taskmanager.memory.segment-size": flink.network_buffer_bytes,
        "python.executable": flink.python_executable or sys.executable,
        "python.client.executable": flink.python_executable or sys.executable,
        "pipeline.jars": flink.connector_jar.resolve().as_uri(),
        "pipeline.auto-watermark-interval": f"{settings.time.watermark_interval} ms",
        "state.backend.type": flink.state_backend,
        # RocksDB at a million users: a new user's first read is a miss, which without Bloom
        # filters probes every level; and whole index blocks, thrashing the small block cache,
        # were decompressed per read. Both made state reads the top cost and slowed as state grew.
        "state.backend.rocksdb.use-bloom-filter": "true",
        "state.backend.rocksdb.memory.partitioned-index-filters": "true",
        # RocksDB checkpoints write the files written since the last one, not the whole state
        # (the heap backend ignores it): at 130,000 users, 3.8 MB a checkpoint instead of 163 MB.
        "execution.checkpointing.incremental": "true",
        "execution.checkpointing.dir": flink.checkpoint_dir,
        # A task blocked while Redis cannot take writes (it back-pressures, see
        # serving.redis_store.retry_while_down) lets checkpoints time out: ride them out.
        "execution.checkpointing.timeout": f"{flink.checkpoint_timeout} ms",
        "execution.checkpointing.tolerable-failed-checkpoints": flink.tolerable_failed_checkpoints,
        # Keep the last checkpoint when the job is cancelled or dies: it is the restore point.
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "table.exec.source.idle-timeout": f"{settings.time.idle_timeout} ms",
        # Give the SQL source a stable uid of its own, so savepoints survive graph changes.
        "table.exec.uid.generation": "ALWAYS",
        # ...without the planner's node counter (<id>, JVM-global): two builds in one process
        # (tests, a resume) must give the source the same uid. One SQL source: <type> is unique.
        "table.exec.uid.format": "<type>_<transformation>",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": flink.restart_attempts,
        "restart-strategy.fixed-delay.delay": f"{flink.restart_delay} ms",
    }
    if flink.savepoint_path:
        entries["execution.savepoint.path"] = flink.savepoint_path
        entries["execution.savepoint.ignore-unclaimed-state"] = str(flink.savepoint_ignore_unclaimed_state).lower()
    if flink.rest_port is not None:
        entries["rest.port"] = flink.rest_port
    # Flink's default is every interface; its REST API is unauthenticated (cancel, jar upload).
    entries["rest.bind-address"] = flink.bind_address
    entries["rest.address"] = flink.bind_address
    if flink.prometheus_port:
        entries["metrics.reporter.prom.factory.class"] = (
            "org.apache.flink.metrics.prometheus.HostBoundPrometheusReporterFactory")
        entries["metrics.reporter.prom.host"] = flink.bind_address
        entries["metrics.reporter.prom.port"] = flink.prometheus_port
    for key, value in entries.items():
        conf.set_string(key, str(value))
    return conf


def _expose_interpreter_paths() -> None:
    """Thread mode runs Python embedded in the JVM (pemja), which starts from the base
    interpreter's sys.path and misses the virtualenv (FLINK-38585). PYTHONPATH, inherited by
    the JVM that PyFlink launches, puts the venv's site-packages and this project back, and a
    ``sitecustomize`` that imports the operators first (see ``embedded/sitecustomize.py``)."""
    paths = [p for p in (str(EMBEDDED_STARTUP), *site.getsitepackages(), str(REPO_ROOT)) if p]
    existing = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([existing] if existing else [])])


def _add_prometheus_reporter_to_classpath(settings: Settings) -> None:
    """The local MiniCluster loads metric reporters from the JVM classpath, not from plugins/.
    PyFlink's gateway launcher appends HADOOP_CLASSPATH to that classpath: its only hook. Flink's
    Prometheus jar and ``flink.prometheus_reporter_jar`` (its reporter, bound to one address)."""
    reporter = settings.flink.prometheus_reporter_jar
    if settings.flink.prometheus_port and not reporter.is_file():
        raise FileNotFoundError(f"flink.prometheus_reporter_jar: {reporter} does not exist "
                                "(run `make setup` to build it from jvm/metrics-reporter)")
    plugin = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    jars = [str(jar) for jar in (*plugin.glob("*.jar"), *([reporter] if reporter.is_file() else []))]
    existing = os.environ.get("HADOOP_CLASSPATH", "")
    missing = [jar for jar in jars if jar not in existing.split(os.pathsep)]
    os.environ["HADOOP_CLASSPATH"] = os.pathsep.join([*missing, *([existing] if existing else [])])


def create_environment(settings: Settings) -> StreamExecutionEnvironment:
    _expose_interpreter_paths()
    # Always, not only when this job wants it: the gateway JVM starts once per process, with the
    # classpath it had then (a later job that enables the reporter would not find it).
    _add_prometheus_reporter_to_classpath(settings)
    if not settings.flink.connector_jar.is_file():
        raise FileNotFoundError(
            f"flink.connector_jar: {settings.flink.connector_jar} does not exist "
            "(run `make setup` to fetch it from Maven Central)")
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(settings))
    env.enable_checkpointing(settings.flink.checkpoint_interval, CheckpointingMode.EXACTLY_ONCE)
    env.set_buffer_timeout(settings.flink.buffer_timeout)
    return env


def source_ddl(settings: Settings) -> str:
    kafka = settings.kafka
    options = {
        "connector": "kafka",
        "topic": kafka.topics.events,
        "properties.bootstrap.servers": kafka.bootstrap_servers,
        "properties.group.id": kafka.group_id,
        "scan.startup.mode": _STARTUP_MODES[kafka.starting_offsets],
        "value.format": "raw",
        **({"scan.bounded.mode": "latest-offset"} if kafka.bounded else {}),
        **{f"properties.{k}": v for k, v in flink_connector_properties(kafka.properties).items()},
    }
    with_clause = _with_clause(options)
    return f"""
CREATE TEMPORARY TABLE raw_events (
  payload BYTES,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  record_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  -- A record stamped further ahead of the wall clock than the future skew (ts_in_future) must not
  -- move the watermark (one would make every later event late): its rowtime is the epoch, which
  -- cannot advance a watermark; the parse task reads record_ts and rejects it to the DLQ.
  event_time AS CASE WHEN record_ts > NOW() + {_day_to_second(settings.validation.max_future_skew)}
                     THEN TO_TIMESTAMP_LTZ(0, 3) ELSE record_ts END,
  WATERMARK FOR event_time AS event_time - {_day_to_second(settings.time.out_of_orderness)}
) WITH (
  {with_clause}
)"""


def _with_clause(options: dict[str, object]) -> str:
    """SQL ``WITH`` options; quotes doubled, so a property value (a JAAS config) cannot end its literal."""
    return ",\n  ".join("'{}' = '{}'".format(*(str(part).replace("'", "''") for part in item))
                         for item in options.items())


def _day_to_second(ms: int) -> str:
    """A SQL interval literal for any duration (``SECOND(3)`` alone stops at 999 s)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}' DAY TO SECOND(3)"


def kafka_sink(settings: Settings, topic: str) -> KafkaSink:
    kafka = settings.kafka
    exactly_once = kafka.delivery_guarantee == "exactly-once"
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build())
        .set_delivery_guarantee(
            DeliveryGuarantee.EXACTLY_ONCE if exactly_once else DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("max.request.size", str(kafka.max_message_bytes))  # RouteOutputs keeps records below it
        .set_property("acks", "all")  # the clients' default, stated: replicated topics lose no acknowledged output
    )
    if exactly_once:
        builder = (builder.set_transactional_id_prefix(f"{kafka.transactional_id_prefix}-{topic}")
                   .set_property("transaction.timeout.ms", "900000"))
    for key, value in flink_connector_properties(kafka.properties).items():
        builder = builder.set_property(key, value)
    return builder.build()


def control_source(settings: Settings, topic: str) -> KafkaSource:
    """A control topic (rules texts, erasure requests), read like the events (same start and
    bound), as bytes: the operators decode them, so a record that is not UTF-8 reaches the DLQ as it was."""
    kafka = settings.kafka
    starting = {"earliest": KafkaOffsetsInitializer.earliest(), "latest": KafkaOffsetsInitializer.latest(),
                "committed": KafkaOffsetsInitializer.committed_offsets()}[kafka.starting_offsets]
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(f"{kafka.group_id}-{topic}")
        .set_starting_offsets(starting)
        .set_value_only_deserializer(ByteArraySchema())
    )
    if kafka.bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    for key, value in flink_connector_properties(kafka.properties).items():
        builder = builder.set_property(key, value)
    return builder.build()


def build(env: StreamExecutionEnvironment, settings: Settings, rules: RuleSet | None = None) -> None:
    """Add the whole job to ``env``; operator uids keep savepoints restorable across changes.

    ``rules``: the start-up rules, already checked (default: load ``rules.path``).
    """
    rules = rules or load_rules(settings)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(settings))
    raw: DataStream = t_env.to_data_stream(t_env.from_path("raw_events"))

    events = (raw.process(ParseEvents(settings.validation, settings.enrichment, settings.privacy,
                                       {e.name: e.variant_names for e in settings.experiment_map().values()}))
              .uid("parse").name("parse + validate"))
    # Rule updates are rare and carry no event time: the source goes idle after a second, so it
    # never holds back the watermark of the user operator (the min of its two inputs).
    rule_updates = (
        env.from_source(control_source(settings, settings.kafka.topics.rules),
                        WatermarkStrategy.for_monotonous_timestamps().with_idleness(Duration.of_seconds(1)),
                        "rules updates")
        .uid("rules-source")
        .process(DecodeRules(settings.kafka.topics.rules), output_type=KIND_AND_JSON)
        .uid("rules-tag").name("rules updates")
    )
    clock = events.get_side_output(CLOCK).uid("parse-clock")
    control = rule_updates.union(clock).broadcast(CONTROL_STATE)
    # Identity stitching (core.identity): re-keys anonymous events, adds the records of a link.
    # Only events with an anonymous id take this hop; the resolver passes nothing else anyway.
    # Erasure requests pass it too, after the link index (keyed by user id) added a ForgetLink
    # per anonymous id that linked to the user.
    anonymous = events.get_side_output(ANONYMOUS).uid("parse-anonymous")
    erasures = _erasure_requests(env, settings)
    links = anonymous.filter(is_link).uid("identity-links").name("links")
    by_linked_user = links.union(erasures).key_by(link_index_key, key_type=Types.STRING())
    _set_key_by_uid(by_linked_user, "key-by-linked-user")
    indexed = by_linked_user.process(IndexLinks(settings)).uid("identity-index").name("identity link index")
    by_identity = anonymous.union(indexed).key_by(resolver_key, key_type=Types.STRING())
    _set_key_by_uid(by_identity, "key-by-identity")
    routed = by_identity.process(ResolveIdentities(settings)).uid("identity").name("identity resolution")
    controls = erasures.get_side_output(CONTROLS).uid("user-controls")  # reset, opt-out, opt-in
    by_user = events.union(routed, controls).key_by(user_key, key_type=Types.STRING())
    _set_key_by_uid(by_user, "key-by-user")
    users = (
        by_user.connect(control)
        .process(UserProfiles(settings, rules), output_type=KIND_AND_JSON)
        .uid("user-profiles").name("user profiles")
    )
    outputs = users.process(RouteOutputs(settings), output_type=Types.STRING()).uid("route-outputs").name("route outputs")
    dlq = events.get_side_output(DLQ).uid("parse-dlq").union(
        erasures.get_side_output(DLQ).uid("erasure-dlq"),
        rule_updates.get_side_output(DLQ).uid("rules-dlq"),
        outputs.get_side_output(DLQ).uid("route-dlq"))
    _add_dlq_sink(t_env, dlq, settings)
    for kind, topic in output_topics(settings).items():
        if kind is Output.NO_CONSENT and settings.privacy.without_consent != "route":
            continue
        stream = outputs.get_side_output(SIDE_OUTPUTS[kind]).uid(f"route-{kind}")
        stream.sink_to(kafka_sink(settings, topic)).uid(f"sink-{topic}").name(f"kafka: {topic}")
    if settings.learning.enabled:
        _add_trainer(settings, outputs)  # the learning records
    if settings.alerts.event_rates:
        _add_rate_alerts(t_env, raw, settings)
    if settings.recommendations.enabled:
        anonymous_events = routed.filter(for_recommender).uid("reco-anonymous").name("recommendations: anonymous ids")
        _add_recommendations(settings, events.union(anonymous_events, erasures, controls))


def dlq_sink_ddl(settings: Settings) -> str:
    """The DLQ as a Kafka SQL sink: the DataStream KafkaSink of PyFlink cannot write headers, the SQL
    connector can (its writable ``headers`` metadata column). Records may be larger than the
    producer's default 1 MiB by up to the dead-letter headers (see ``core.dead_letter``)."""
    kafka = settings.kafka
    topic = kafka.topics.dlq
    exactly_once = kafka.delivery_guarantee == "exactly-once"
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": kafka.bootstrap_servers,
        "value.format": "raw",
        "sink.delivery-guarantee": kafka.delivery_guarantee,
        **({"sink.transactional-id-prefix": f"{kafka.transactional_id_prefix}-{topic}",
            "properties.transaction.timeout.ms": "900000"} if exactly_once else {}),
        "properties.max.request.size": str(dlq_max_message_bytes(kafka.max_message_bytes)),
        "properties.acks": "all",
        **{f"properties.{k}": v for k, v in flink_connector_properties(kafka.properties).items()},
    }
    with_clause = _with_clause(options)
    return f"""
CREATE TEMPORARY TABLE dead_letters (
  payload BYTES,
  headers MAP<STRING, BYTES> METADATA
) WITH (
  {with_clause}
)"""


def dead_letter_row(wire: str) -> Row:
    """A side output's dead letter (``DeadLetter.to_wire``) as the DLQ sink's row."""
    letter = DeadLetter.from_wire(wire)
    return Row(payload=letter.value, headers=letter.headers())


def _add_dlq_sink(t_env: StreamTableEnvironment, dead_letters: DataStream, settings: Settings) -> None:
    """Dead letters -> the DLQ topic: original bytes as the value, the rest in headers. The SQL
    nodes get uids of their own prefix, as in ``_add_rate_alerts``."""
    rows = dead_letters.map(dead_letter_row, output_type=DLQ_ROW).uid("dlq-rows").name("dead letters")
    config = t_env.get_config()
    main_format = config.get("table.exec.uid.format", None)
    config.set("table.exec.uid.format", f"dlq_{main_format}")
    t_env.execute_sql(dlq_sink_ddl(settings))
    statements = t_env.create_statement_set()
    statements.add_insert("dead_letters", t_env.from_data_stream(rows))
    statements.attach_as_datastream()
    config.set("table.exec.uid.format", main_format)


def _erasure_requests(env: StreamExecutionEnvironment, settings: Settings) -> DataStream:
    """Erasure requests, parsed (and pseudonymized like the events) for the link index, the resolver
    and the user operator. Rare and
    not in event time: the source goes idle after a second, so it never holds back the watermark."""
    return (
        env.from_source(control_source(settings, settings.kafka.topics.erasure),
                        WatermarkStrategy.for_monotonous_timestamps().with_idleness(Duration.of_seconds(1)),
                        "erasure requests")
        .uid("erasure-source")
        .process(ParseErasures(settings)).uid("erasure-parse").name("parse erasure requests")
    )


def _add_trainer(settings: Settings, records: DataStream) -> None:
    """The shared models: one trainer task fed by every user task (see operators.trainer)."""
    by_model = records.key_by(model_key, key_type=Types.STRING())
    _set_key_by_uid(by_model, "key-by-model")
    examples = (by_model.process(ModelTrainer(settings), output_type=Types.STRING())
                .uid("model-trainer").name("model trainer").set_parallelism(1).set_max_parallelism(1))
    topic = settings.kafka.topics.examples
    examples.sink_to(kafka_sink(settings, topic)).uid(f"sink-{topic}").name(f"kafka: {topic}").set_parallelism(1)


def _add_recommendations(settings: Settings, events: DataStream) -> None:
    """Events (those of anonymous ids as the identity resolver keyed them) and the erasure and
    control requests, keyed by user -> co-view updates and top-N requests keyed by item -> Redis,
    and interactions and answers with places left keyed by category -> trending fills -> Redis
    (``core.recommend.stream``); the interactions also keyed by part -> the parts' trending lists
    over all interactions, per referrer and per device class (``core.recommend.wide``), broadcast
    to the trending side. All four run at the job's parallelism."""
    by_user = events.key_by(user_key, key_type=Types.STRING())
    _set_key_by_uid(by_user, "key-by-reco-user")
    messages = by_user.process(RecoUsers(settings)).uid("reco-users").name("recommendations: users")
    by_item = messages.key_by(item_key, key_type=Types.STRING())
    _set_key_by_uid(by_item, "key-by-reco-item")
    to_trending = by_item.process(RecoItems(settings)).uid("reco-items").name("recommendations: items")
    by_shard = to_trending.get_side_output(WIDE).key_by(shard_key, key_type=Types.INT())
    _set_key_by_uid(by_shard, "key-by-reco-shard")
    lists = by_shard.process(RecoShards(settings)).uid("reco-shards").name("recommendations: trending parts")
    by_context = to_trending.key_by(context_key, key_type=Types.STRING())
    _set_key_by_uid(by_context, "key-by-reco-context")
    (by_context.connect(lists.broadcast(RECO_WIDE_LISTS)).process(RecoTrending(settings))
     .uid("reco-trending").name("recommendations: trending"))


def _add_rate_alerts(t_env: StreamTableEnvironment, raw: DataStream, settings: Settings) -> None:
    """Events per minute of event time and type, counted by a SQL window in the JVM (no Python
    per event), then the anomaly detector (``operators.rate_alerts``) -> the alerts topic.

    The SQL nodes get uids of their own prefix (the planner assigns them when the query is
    translated): the main source's format alone would give this plan's nodes the uids of
    nodes of the same type there. Event types outside the contract count as ``other``, so a
    flood of made-up types cannot grow the detector's state."""
    config = t_env.get_config()
    main_format = config.get("table.exec.uid.format", None)
    config.set("table.exec.uid.format", f"rates_{main_format}")
    with_time = Schema.new_builder().column_by_metadata("rowtime", "TIMESTAMP_LTZ(3)").watermark(
        "rowtime", "SOURCE_WATERMARK()").build()
    t_env.create_temporary_view("raw_rows", t_env.from_data_stream(raw, with_time))
    types = ", ".join(f"'{t}'" for t in event_types(settings))
    t_env.create_temporary_view("typed_rows", t_env.sql_query(f"""
        SELECT CASE WHEN JSON_VALUE(CAST(payload AS STRING), '$.event_type') IN ({types})
                    THEN JSON_VALUE(CAST(payload AS STRING), '$.event_type') ELSE 'other' END AS event_type,
               rowtime
        FROM raw_rows"""))
    # Columns in the window aggregate's own order: a reordering would add a second calc node.
    counts = t_env.to_data_stream(t_env.sql_query("""
        SELECT event_type, COUNT(*) AS events, window_start, window_end, window_time
        FROM TABLE(TUMBLE(TABLE typed_rows, DESCRIPTOR(rowtime), INTERVAL '1' MINUTE))
        GROUP BY event_type, window_start, window_end, window_time"""))
    config.set("table.exec.uid.format", main_format)
    by_detector = counts.key_by(rates_key, key_type=Types.STRING())
    _set_key_by_uid(by_detector, "key-by-rates")
    alerts = (by_detector.process(RateAlerts(settings.alerts), output_type=Types.STRING())
              .uid("rate-alerts").name("event rate anomalies").set_parallelism(1).set_max_parallelism(1))
    topic = settings.kafka.topics.alerts
    alerts.sink_to(kafka_sink(settings, topic)).uid(f"sink-{topic}").name(f"kafka: {topic}").set_parallelism(1)


def event_types(settings: Settings) -> list[str]:
    """The event types of the contract (the schema's enum)."""
    schema = json.loads(settings.validation.schema_path.read_text())
    return list(schema["properties"]["event_type"]["enum"])


def _set_key_by_uid(keyed, uid: str) -> None:
    """PyFlink's key_by adds an operator (``_stream_key_by_map_operator``) that computes the key
    and has no uid; without one its id follows the graph's shape, and a savepoint of a graph
    built in another order cannot be mapped back. Every operator here has a uid."""
    keyed._j_data_stream.getTransformation().getInputs().get(0).setUid(uid)
