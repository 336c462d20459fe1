"""The SQL tables of the job (personalization.pipelines.job): the DLQ sink's options, and option
values quoted so that a property (a JAAS config holds quotes) cannot end its SQL literal."""

from __future__ import annotations

from personalization.config.settings import load_settings
from personalization.core.dead_letter import HEADROOM_BYTES
from personalization.pipelines.job import dlq_sink_ddl, source_ddl

JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="a" password="it\'s";'


def test_the_dlq_sink_writes_headers_and_takes_the_headroom() -> None:
    settings = load_settings().with_overrides(kafka={"max_message_bytes": 2_000_000})
    ddl = dlq_sink_ddl(settings)
    assert "headers MAP<STRING, BYTES> METADATA" in ddl
    assert f"'properties.max.request.size' = '{2_000_000 + HEADROOM_BYTES}'" in ddl
    assert "'sink.delivery-guarantee' = 'at-least-once'" in ddl and "transactional" not in ddl
    assert "'properties.acks' = 'all'" in ddl  # no acknowledged dead letter lost with a replicated DLQ
    exactly_once = dlq_sink_ddl(settings.with_overrides(kafka={"delivery_guarantee": "exactly-once"}))
    assert "'sink.delivery-guarantee' = 'exactly-once'" in exactly_once
    assert f"'sink.transactional-id-prefix' = 'personalization-{settings.kafka.topics.dlq}'" in exactly_once


def test_option_values_are_quoted_as_sql_literals() -> None:
    settings = load_settings().with_overrides(kafka={"properties": {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.jaas.config": JAAS}})
    # the connector's Kafka clients are shaded: the login module is named in their package
    quoted = ("org.apache.flink.kafka.shaded." + JAAS).replace("'", "''")
    for ddl in (dlq_sink_ddl(settings), source_ddl(settings)):
        assert f"'properties.sasl.jaas.config' = '{quoted}'" in ddl
