"""``kafka.properties`` (Java client names, what the job passes to Flink's Kafka connector) as
kafka-python arguments, for the command-line tools: the one place that translates them, and the one
place that builds kafka-python clients from the config (``kafka_client``).

kafka-python names some settings differently (``sasl.jaas.config`` is two arguments, trust
stores are PEM files), so a plain ``.`` -> ``_`` renaming was rejected by it. Security settings
are translated or refused with a reason; other keys are passed on where kafka-python has the
same setting and left to the Java clients otherwise (``linger.ms`` means nothing to a consumer).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

if TYPE_CHECKING:
    from personalization.config.settings import Settings

# Java name -> kafka-python argument, values unchanged.
_RENAMED = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "ssl.key.password": "ssl_password",
}
# Read while translating others (or Java-only with PEM files): nothing to pass on.
_CONSUMED = {"ssl.truststore.type", "ssl.keystore.type", "ssl.truststore.location", "ssl.keystore.location",
             "ssl.endpoint.identification.algorithm", "sasl.jaas.config", "ssl.protocol",
             "ssl.enabled.protocols"}
_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"}
_LOGIN_MODULES = {"org.apache.kafka.common.security.plain.PlainLoginModule",
                  "org.apache.kafka.common.security.scram.ScramLoginModule"}
_JAAS = re.compile(r'^\s*(?P<module>[\w.$]+)\s+required\b(?P<options>.*?);?\s*$', re.DOTALL)
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')
_PLACEHOLDER = re.compile(r"\$\{(\w+):([^}]*)\}")
_ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"


# flink-sql-connector-kafka relocates the Kafka client: class names inside values must follow.
_SHADED = "org.apache.flink.kafka.shaded."


class KafkaPropertiesError(ValueError):
    """A ``kafka.properties`` entry the Python tools cannot honour; never quotes secret values."""


def check_properties(properties: Mapping[str, str]) -> None:
    """Refuse, at config load, what would fail later in a tool (without resolving secrets)."""
    _translate(properties, resolve=False)


def flink_connector_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """``kafka.properties`` for Flink's Kafka connector, whose relocated client finds a login module
    or config provider only under its shaded name (``No LoginModule found`` otherwise)."""
    return {key: re.sub(r"(?<![\w.])org\.apache\.kafka\.", _SHADED + "org.apache.kafka.", value)
            for key, value in properties.items()}


def python_client_config(properties: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """kafka-python arguments for a client whose ``DEFAULT_CONFIG`` is ``defaults``."""
    config = _translate(properties, resolve=True)
    return {key: value for key, value in config.items() if key in defaults}


def _translate(properties: Mapping[str, str], resolve: bool) -> dict[str, Any]:
    properties = {key: value.replace(_SHADED, "") for key, value in properties.items()}
    props = {key: (_resolved(key, value, properties) if resolve else value) for key, value in properties.items()
             if not key.startswith("config.providers")}
    config: dict[str, Any] = {}
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in _PROTOCOLS:
        raise KafkaPropertiesError(f"security.protocol {protocol!r}: expected one of {sorted(_PROTOCOLS)}")
    mechanism = props.get("sasl.mechanism", "GSSAPI" if protocol.startswith("SASL") else None)
    if mechanism is not None and mechanism not in _MECHANISMS:
        raise KafkaPropertiesError(f"sasl.mechanism {mechanism!r}: expected one of {sorted(_MECHANISMS)}")
    for key, value in props.items():
        if key in _RENAMED:
            config[_RENAMED[key]] = value
        elif key.startswith(("ssl.", "sasl.")) and key not in _CONSUMED:
            raise KafkaPropertiesError(f"{key}: not supported by the Python tools (kafka-python); supported: "
                                       f"{sorted({*_RENAMED, *_CONSUMED})}")
        elif key not in _CONSUMED:
            config[key.replace(".", "_")] = _typed(value)
    if "security.protocol" in props:
        config["security_protocol"] = protocol
    if mechanism is not None:
        config["sasl_mechanism"] = mechanism  # Java's default (GSSAPI), not kafka-python's (PLAIN)
    if "sasl.jaas.config" in props:
        config.update(_jaas(props["sasl.jaas.config"], resolve))
    for java, python in (("ssl.truststore.location", "ssl_cafile"), ("ssl.keystore.location", "ssl_certfile")):
        if java in props:
            kind = java.split(".")[1]
            if props.get(f"ssl.{kind}.type", "JKS").upper() != "PEM":
                raise KafkaPropertiesError(f"{java}: the Python tools read PEM files only: set ssl.{kind}.type: PEM "
                                           "(the Java clients read PEM too)")
            config[python] = props[java]  # a PEM key store holds the key and its certificate chain
    algorithm = props.get("ssl.endpoint.identification.algorithm")
    if algorithm is not None:
        config["ssl_check_hostname"] = algorithm.lower() == "https"
    return config


def _typed(value: str) -> Any:
    """Java properties are text; kafka-python wants numbers and booleans as such."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return {"true": True, "false": False}.get(value.lower(), value)


def _jaas(text: str, resolve: bool) -> dict[str, str]:
    if not resolve and _PLACEHOLDER.search(text):
        return {}
    match = _JAAS.match(text)
    if not match or match.group("module") not in _LOGIN_MODULES:
        raise KafkaPropertiesError("sasl.jaas.config: the Python tools understand PlainLoginModule and "
                                   "ScramLoginModule with username=\"...\" password=\"...\"")
    options = {key: value.replace('\\"', '"') for key, value in _JAAS_OPTION.findall(match.group("options"))}
    if "username" not in options or "password" not in options:
        raise KafkaPropertiesError("sasl.jaas.config: needs username=\"...\" and password=\"...\"")
    return {"sasl_plain_username": options["username"], "sasl_plain_password": options["password"]}


def _resolved(key: str, value: str, properties: Mapping[str, str]) -> str:
    """Kafka's config-provider placeholders ``${env:NAME}`` resolved like the Java clients do."""

    def substitute(match: re.Match) -> str:
        provider, name = match.groups()
        if properties.get(f"config.providers.{provider}.class") != _ENV_PROVIDER:
            raise KafkaPropertiesError(f"{key}: placeholder provider {provider!r} is not an "
                                       f"EnvVarConfigProvider (the one the Python tools resolve)")
        if name not in os.environ:
            raise KafkaPropertiesError(f"{key}: environment variable {name} is not set")
        return os.environ[name]

    return _PLACEHOLDER.sub(substitute, value)


def login_summary(properties: Mapping[str, str]) -> str:
    """How the tools log in, for error messages: protocol, mechanism, user; never the password."""
    protocol = properties.get("security.protocol", "PLAINTEXT")
    parts = [f"security.protocol {protocol}"]
    if protocol.upper().startswith("SASL"):
        parts.append(f"sasl.mechanism {properties.get('sasl.mechanism', 'GSSAPI')}")
        user = _JAAS_OPTION.findall(properties.get("sasl.jaas.config", ""))
        parts.append(f"user {dict(user).get('username', '(none: no sasl.jaas.config)')!r}")
    return ", ".join(parts)


Client = TypeVar("Client", KafkaAdminClient, KafkaConsumer, KafkaProducer)


def kafka_client(cls: type[Client], settings: Settings, *topics: str, **arguments: Any) -> Client:
    """A kafka-python client of the configured brokers, with ``kafka.properties`` (security) translated.
    Producers wait for every in-sync replica (acks=all, kafka-python's default is 1): a record
    acknowledged by a leader that dies before its followers copied it would be lost."""
    producing = {"acks": "all"} if cls is KafkaProducer else {}
    return cls(*topics, bootstrap_servers=settings.kafka.bootstrap_servers,
               **{**producing, **client_config(cls, settings), **arguments})


def client_config(cls: type, settings: Settings) -> dict[str, Any]:
    """``kafka.properties`` as arguments of the kafka-python client ``cls``."""
    return python_client_config(settings.kafka.properties, cls.DEFAULT_CONFIG)
