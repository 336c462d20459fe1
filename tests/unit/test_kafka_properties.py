"""kafka.properties (Java names) -> kafka-python arguments and Flink connector properties."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from personalization.config.kafka import (
    KafkaPropertiesError, check_properties, flink_connector_properties, login_summary, python_client_config,
)

JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="{}";'


@pytest.mark.parametrize("client", [KafkaAdminClient, KafkaConsumer, KafkaProducer])
def test_sasl_properties_become_kafka_python_arguments_every_client_accepts(client) -> None:
    config = python_client_config({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                   "sasl.jaas.config": JAAS.format("pw"), "ssl.truststore.type": "PEM",
                                   "ssl.truststore.location": "/ca.pem", "linger.ms": "5",
                                   "ssl.endpoint.identification.algorithm": ""}, client.DEFAULT_CONFIG)
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("alice", "pw")
    assert config["ssl_cafile"] == "/ca.pem" and config["ssl_check_hostname"] is False
    assert config.get("linger_ms") == (5 if client is KafkaProducer else None)  # typed, and only where it exists
    assert set(config) <= set(client.DEFAULT_CONFIG)


def test_env_placeholders_resolve_like_kafkas_env_config_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    properties = {"config.providers": "env",
                  "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
                  "sasl.mechanism": "PLAIN", "security.protocol": "SASL_PLAINTEXT",
                  "sasl.jaas.config": JAAS.format("${env:KAFKA_PW}")}
    check_properties(properties)  # at config load the variable need not be set (the job reads it on the cluster)
    with pytest.raises(KafkaPropertiesError, match="environment variable KAFKA_PW is not set"):
        python_client_config(properties, KafkaConsumer.DEFAULT_CONFIG)
    monkeypatch.setenv("KAFKA_PW", "from-env")
    assert python_client_config(properties, KafkaConsumer.DEFAULT_CONFIG)["sasl_plain_password"] == "from-env"


@pytest.mark.parametrize(("properties", "problem"), [
    ({"ssl.truststore.location": "/t.jks"}, "PEM files only"),
    ({"sasl.jaas.config": "com.example.Login required token=\"secret-x\";"}, "PlainLoginModule"),
    ({"sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required username="a";'},
     "needs username"),
    ({"ssl.cipher.suites": "X"}, "not supported by the Python tools"),
    ({"security.protocol": "SASL_TLS"}, "security.protocol"),
])
def test_what_kafka_python_cannot_do_is_refused_at_load_without_the_secret(properties, problem) -> None:
    with pytest.raises(KafkaPropertiesError, match=problem) as info:
        check_properties(properties)
    assert "secret-x" not in str(info.value)


def test_flink_connector_gets_the_shaded_class_names() -> None:
    shaded = flink_connector_properties({"sasl.jaas.config": JAAS.format("pw"), "security.protocol": "SASL_SSL"})
    assert shaded["sasl.jaas.config"].startswith(
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule required")
    assert flink_connector_properties(shaded) == shaded  # idempotent
    assert python_client_config(shaded, KafkaConsumer.DEFAULT_CONFIG)["sasl_plain_username"] == "alice"


def test_login_summary_names_the_user_never_the_password() -> None:
    summary = login_summary({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                             "sasl.jaas.config": JAAS.format("hunter2")})
    assert summary == "security.protocol SASL_SSL, sasl.mechanism PLAIN, user 'alice'"


def test_sasl_without_a_mechanism_means_gssapi_as_in_the_java_clients() -> None:
    config = python_client_config({"security.protocol": "SASL_PLAINTEXT"}, KafkaConsumer.DEFAULT_CONFIG)
    assert config["sasl_mechanism"] == "GSSAPI"
