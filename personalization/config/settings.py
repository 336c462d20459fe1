"""Job configuration: one YAML file, command-line overrides, validated before anything runs.

Every key has a documented default in ``personalization/config/default.yaml`` (package data,
like the shipped rules and event schema, so an installed ``pz`` finds them from any directory).
Validation is pydantic with ``extra="forbid"`` so a misspelt key is an error, not a silently
ignored setting.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, AnyHttpUrl, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from personalization.config.kafka import KafkaPropertiesError, check_properties
from personalization.core import durations
from personalization.core.experiments import Experiment
from personalization.core.recommend.config import RecoConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def packaged(name: str) -> Path:
    """A data file shipped inside the package (``config/default.yaml``, ``rules/default.yaml``,
    ``schemas/event-v1.schema.json``): the same file in a checkout and in an installed wheel."""
    return Path(str(resources.files("personalization").joinpath(name)))


def _base_dir() -> Path:
    """Where relative paths in the config start: the root of a source checkout (so the tools
    work from any directory in it), else the working directory (an installed package)."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


BASE_DIR = _base_dir()
DEFAULT_CONFIG = packaged("config/default.yaml")
DEFAULT_RULES = packaged("rules/default.yaml")
EVENT_SCHEMA = packaged("schemas/event-v1.schema.json")


class ConfigError(ValueError):
    """A configuration problem, phrased for the operator: key, value, what was expected."""


# Keys whose values are never echoed in an error: a secret typed in the wrong place (or with a
# typo in its key) must not end up in a terminal, a CI log or a support ticket.
_SECRET_KEY = re.compile(r"pass|secret|jaas|token|credential|private|auth", re.IGNORECASE)


def parse_duration_ms(value: Any) -> int:
    """Accept ``250ms``, ``5s``, ``30m``, ``1h``, ``7d`` or a non-negative integer of ms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 5s, 30m, 1h or 7d")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a non-negative duration")
        return value
    if isinstance(value, str):
        try:
            return durations.parse_duration_ms(value)
        except ValueError:
            pass  # the message below: it must not echo the value (it may be a misplaced secret)
    raise ValueError("expected a duration like 500ms, 5s, 30m, 1h or 7d")


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]


def parse_instant_ms(value: Any) -> int:
    """An instant as epoch ms: an ISO 8601 date-time with its offset (``2017-11-25T00:00:00Z``;
    YAML reads one unquoted as a datetime) or a non-negative integer of ms."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date-time with its offset, e.g. 2017-11-25T00:00:00Z") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("expected a date-time with its offset (Z or +hh:mm): event time is UTC")
        return round(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError("expected an ISO 8601 date-time with its offset or epoch milliseconds")


InstantMs = Annotated[int, BeforeValidator(parse_instant_ms)]


def _base_path(value: Any) -> Path:
    """Relative paths in the config start at ``BASE_DIR`` (the checkout's root), not the cwd."""
    path = Path(value)
    return path if path.is_absolute() else BASE_DIR / path


def _or_packaged(default: Path) -> BeforeValidator:
    """A path key whose empty value means the file shipped with the package."""
    return BeforeValidator(lambda value: _base_path(value) if value not in ("", None) else default)


def _file_or_empty(kind: str) -> AfterValidator:
    """A key that names a file (relative paths from ``BASE_DIR``), or "" for none: a name that is
    no file is refused when the config loads, not when the job first needs it."""
    def check(value: str) -> str:
        if value and not _base_path(value).is_file():
            raise ValueError(f"{value!r}: no such {kind}")
        return value
    return AfterValidator(check)


def _storage_uri(value: Any) -> str:
    value = str(value)
    return value if "://" in value else _base_path(value).resolve().as_uri()


def _ip_address(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValueError("expected an IP address, e.g. 127.0.0.1 (loopback) or 0.0.0.0 (every interface)") from None


def _http_url(value: str) -> str:
    """An http(s) URL a client can use, kept as written."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    AnyHttpUrl(value)
    return value


BasePath = Annotated[Path, BeforeValidator(_base_path)]
IpAddress = Annotated[str, BeforeValidator(_ip_address)]
StorageUri = Annotated[str, BeforeValidator(_storage_uri)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topics(_Section):
    events: str = "events"
    dlq: str = "events.dlq"
    late: str = "events.late"
    sessions: str = "sessions"
    segment_changes: str = "segment-changes"
    rules: str = "rules"
    examples: str = "model-examples"
    no_consent: str = "events.no-consent"
    erasure: str = "erasure-requests"
    audit: str = "erasure-audit"
    alerts: str = "pipeline-alerts"
    webhooks_dlq: str = "webhooks.dlq"
    partitions: int = Field(4, ge=1)

    @classmethod
    def keys(cls) -> list[str]:
        """The topic fields (every field but ``partitions``): the one list of the job's topics."""
        return [name for name in cls.model_fields if name != "partitions"]


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "personalization"
    topics: Topics = Topics()
    starting_offsets: Literal["earliest", "latest", "committed"] = "earliest"
    bounded: bool = False
    delivery_guarantee: Literal["at-least-once", "exactly-once"] = "at-least-once"
    transactional_id_prefix: str = "personalization"
    # The largest record the events topic accepts (the broker's message.max.bytes, Kafka's default,
    # or the topic's max.message.bytes): the DLQ topic and its producer take this plus the
    # dead-letter headers (core.dead_letter.HEADROOM_BYTES), so every accepted record fits there.
    max_message_bytes: int = Field(1_048_588, ge=1024)
    # Replicas of every topic the tools create, and how many must have a write before acks=all
    # succeeds (the topic's min.insync.replicas): 1 and 1 on the single-node stack; 3 and 2 on a
    # 3-broker cluster survive one broker's loss without refusing writes or losing acknowledged ones.
    replication_factor: int = Field(1, ge=1)
    min_insync_replicas: int = Field(1, ge=1)
    properties: dict[str, str] = {}

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> KafkaConfig:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"kafka.min_insync_replicas ({self.min_insync_replicas}) exceeds "
                             f"kafka.replication_factor ({self.replication_factor}): "
                             "every acks=all write would be refused")
        return self

    @field_validator("properties")
    @classmethod
    def _python_tools_understand(cls, properties: dict[str, str]) -> dict[str, str]:
        try:
            check_properties(properties)
        except KafkaPropertiesError as err:
            raise ValueError(str(err)) from None
        return properties


class RedisConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    username: str = ""
    tls: bool = False
    tls_ca_file: str = ""
    key_prefix: str = "pz:v2"
    profile_ttl: DurationMs = parse_duration_ms("30d")
    retry_backoff_max: DurationMs = parse_duration_ms("5s")
    batch_size: int = Field(256, ge=1)
    batch_delay: DurationMs = parse_duration_ms("20ms")
    # The largest profile written (its fields' JSON bytes): a larger one goes to the DLQ
    # (output_too_large) instead; below kafka.max_message_bytes so a refused write's dead letter fits.
    max_value_bytes: int = Field(512 * 1024, ge=1024)
    # Redis Cluster startup nodes ("host:port"); empty = the single server at host:port.
    cluster_nodes: list[str] = []

    @field_validator("cluster_nodes")
    @classmethod
    def _host_ports(cls, nodes: list[str]) -> list[str]:
        for node in nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"cluster node {node!r} is not host:port")
        return nodes

    @model_validator(mode="after")
    def _cluster_has_db_zero(self) -> RedisConfig:
        if self.cluster_nodes and self.db:
            raise ValueError(f"redis.db is {self.db}, but a Redis Cluster has only database 0")
        return self


class WindowsConfig(_Section):
    sizes: list[DurationMs] = [parse_duration_ms(w) for w in ("10m", "1h", "24h", "7d", "30d")]
    buckets: int = Field(60, ge=1, le=10_000)

    @model_validator(mode="after")
    def _sizes_divisible(self) -> WindowsConfig:
        for size in self.sizes:
            if size <= 0 or size % self.buckets:
                raise ValueError(
                    f"window size {size} ms must be positive and divisible by buckets={self.buckets}"
                )
        return self


class TimeConfig(_Section):
    out_of_orderness: DurationMs = Field(parse_duration_ms("5s"), lt=parse_duration_ms("100d"))  # SQL interval
    idle_timeout: DurationMs = parse_duration_ms("30s")
    watermark_interval: DurationMs = parse_duration_ms("200ms")
    allowed_lateness: DurationMs = parse_duration_ms("1h")
    session_gap: DurationMs = parse_duration_ms("30m")
    max_session_length: DurationMs = parse_duration_ms("4h")
    windows: WindowsConfig = WindowsConfig()

    @model_validator(mode="after")
    def _positive(self) -> TimeConfig:
        for key in ("session_gap", "max_session_length", "watermark_interval"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be greater than 0")
        return self


class ValidationConfig(_Section):
    max_event_bytes: int = Field(64 * 1024, ge=256)
    max_future_skew: DurationMs = parse_duration_ms("5m")
    max_event_age: DurationMs = 0  # 0 = no limit
    schema_path: Annotated[Path, _or_packaged(EVENT_SCHEMA)] = EVENT_SCHEMA


class ProfileConfig(_Section):
    top_categories: int = Field(5, ge=1, le=100)
    dedup_horizon: DurationMs = parse_duration_ms("24h")
    max_seen_ids: int = Field(10_000, ge=1)
    max_categories: int = Field(1_000, ge=1)
    max_session_events: int = Field(2_000, ge=1)
    state_ttl: DurationMs = Field(0, ge=0)  # 0 = a user's state is kept for ever


class IdentityConfig(_Section):
    max_anonymous_events: int = Field(1_000, ge=0)
    max_anonymous_ids: int = Field(10, ge=1, le=1_000)


class EnrichmentConfig(_Section):
    user_agent: bool = True
    item_catalog: Annotated[str, _file_or_empty("file")] = ""  # CSV item_id,category_id; "" = no catalog

    @property
    def catalog_path(self) -> Path | None:
        return _base_path(self.item_catalog) if self.item_catalog else None


class PrivacyConfig(_Section):
    pseudonymize: bool = False
    pseudonym_key_env: str = Field("PZ_PSEUDONYM_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    consent_default: Literal["granted", "denied"] = "granted"
    without_consent: Literal["drop", "route"] = "drop"


class LearningConfig(_Section):
    enabled: bool = True
    checkpoint_every: int = Field(20_000, ge=1)
    recent_window: int = Field(1_000, ge=10)
    clusters: int = Field(5, ge=1, le=100)
    interests_half_life: DurationMs = parse_duration_ms("3d")
    interests_top_k: int = Field(5, ge=1, le=100)
    interests_max_categories: int = Field(20, ge=1, le=1_000)
    cold_start_min_events: int = Field(5, ge=0)
    trending_window: DurationMs = parse_duration_ms("1h")
    snapshot_dir: BasePath = BASE_DIR / ".stack" / "models"
    export_every: int = Field(10_000, ge=0)
    start_from: Annotated[str, _file_or_empty("snapshot file")] = ""

    @model_validator(mode="after")
    def _checks(self) -> LearningConfig:
        if self.trending_window <= 0 or self.trending_window % 60_000:
            raise ValueError("trending_window must be a positive whole number of minutes")
        return self

    @property
    def start_from_path(self) -> Path | None:
        return _base_path(self.start_from) if self.start_from else None


class RecommendationsConfig(_Section):
    enabled: bool = False
    ttl: DurationMs = Field(parse_duration_ms("1d"), gt=0)
    state_ttl: DurationMs = Field(parse_duration_ms("30d"), gt=0)
    max_purchased: int = Field(200, ge=0, le=100_000)
    top_n: int = Field(10, ge=1, le=1_000)
    event_weights: dict[Literal["product_view", "favorite", "add_to_cart", "purchase"], Annotated[float, Field(ge=0)]] = {
        "product_view": 1.0, "favorite": 2.0, "add_to_cart": 3.0, "purchase": 4.0}
    history_length: int = Field(20, ge=1, le=1_000)
    session_gap: DurationMs = parse_duration_ms("30m")
    knn_neighbours: int = Field(50, ge=1, le=10_000)
    knn_half_life: DurationMs = Field(parse_duration_ms("7d"), gt=0)
    knn_max_items: int = Field(200_000, ge=1)
    mf_dim: int = Field(16, ge=1, le=512)
    mf_learning_rate: float = Field(0.05, gt=0, le=1)
    mf_regularization: float = Field(0.01, ge=0)
    mf_negatives: int = Field(3, ge=1, le=100)
    mf_max_items: int = Field(50_000, ge=1)
    mf_seed: int = 0
    blend_weights: dict[Literal["knn", "mf", "recent", "trending"], Annotated[float, Field(ge=0)]] = {
        "knn": 1.0, "mf": 0.3, "recent": 0.5, "trending": 0.2}
    blend_rank_offset: int = Field(10, ge=1)
    trending_window: DurationMs = parse_duration_ms("1h")
    trending_bucket: DurationMs = Field(parse_duration_ms("5m"), gt=0)
    trending_max_items: int = Field(1_000, ge=1)
    trending_shards: int = Field(8, ge=1, le=1_024)
    trending_max_contexts: int = Field(1_000, ge=1)
    cold_start_min_events: int = Field(1, ge=0)
    exclude_purchased: bool = True
    max_per_category: int = Field(3, ge=0)
    cap_impressions: int = Field(3, ge=1)
    cap_duration: DurationMs = parse_duration_ms("1d")
    cap_max_items: int = Field(200, ge=1, le=100_000)

    @model_validator(mode="after")
    def _checks(self) -> RecommendationsConfig:
        if self.trending_window <= 0 or self.trending_window % self.trending_bucket:
            raise ValueError("trending_window must be a positive multiple of trending_bucket")
        return self

    def core(self) -> RecoConfig:
        """The plain parameters the core recommender takes (durations in ms)."""
        values = self.model_dump()
        renamed = {f"{key}_ms" if f"{key}_ms" in RecoConfig.__dataclass_fields__ else key: value
                   for key, value in values.items()}
        return RecoConfig(**renamed)


class FlinkConfig(_Section):
    parallelism: int = Field(1, ge=1)
    python_execution_mode: Literal["thread", "process"] = "thread"
    bundle_size: int = Field(100, ge=1)
    bundle_time: DurationMs = parse_duration_ms("10ms")
    buffer_timeout: DurationMs = parse_duration_ms("5ms")
    network_buffer_bytes: int = Field(32_768, ge=4096)
    state_cache_size: int = Field(20_000, ge=1)
    python_gc_full_every: DurationMs = parse_duration_ms("1h")
    state_backend: Literal["hashmap", "rocksdb", "forst"] = "hashmap"
    checkpoint_interval: DurationMs = parse_duration_ms("10s")
    checkpoint_timeout: DurationMs = parse_duration_ms("10m")
    tolerable_failed_checkpoints: int = Field(6, ge=0)
    savepoint_path: str = ""
    savepoint_ignore_unclaimed_state: bool = False
    rest_port: int | None = Field(None, ge=0, le=65535)
    bind_address: IpAddress = "127.0.0.1"
    prometheus_port: str = ""
    restart_attempts: int = Field(3, ge=0)
    restart_delay: DurationMs = parse_duration_ms("2s")
    checkpoint_dir: StorageUri = (BASE_DIR / ".stack" / "checkpoints").as_uri()
    connector_jar: BasePath = BASE_DIR / ".stack" / "jars" / "flink-sql-connector-kafka-5.0.0-2.2.jar"
    prometheus_reporter_jar: BasePath = BASE_DIR / ".stack" / "jars" / "host-bound-prometheus-reporter.jar"
    python_executable: str = ""

    @model_validator(mode="after")
    def _power_of_two(self) -> FlinkConfig:
        if self.network_buffer_bytes & (self.network_buffer_bytes - 1):
            raise ValueError(f"network_buffer_bytes {self.network_buffer_bytes} must be a power of 2 (Flink's memory pages)")
        return self


class AlertsConfig(_Section):
    event_rates: bool = True
    history: DurationMs = parse_duration_ms("30m")
    min_history: DurationMs = parse_duration_ms("10m")
    threshold: float = Field(6.0, gt=0)
    min_deviation: int = Field(10, ge=0)

    @model_validator(mode="after")
    def _whole_minutes(self) -> AlertsConfig:
        for key in ("history", "min_history"):
            if getattr(self, key) <= 0 or getattr(self, key) % 60_000:
                raise ValueError(f"{key} must be a positive whole number of minutes")
        if self.min_history > self.history:
            raise ValueError("min_history must not exceed history")
        return self


class RulesConfig(_Section):
    path: Annotated[Path, _or_packaged(DEFAULT_RULES)] = DEFAULT_RULES
    stream_maxlen: int = Field(100_000, ge=1)


class WebhookEndpoint(_Section):
    """One receiver of segment changes: which changes go to it, and how hard to push."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: Annotated[str, AfterValidator(_http_url)]
    segments: list[str] = Field(min_length=1)  # segment names; ["*"] = every segment
    actions: list[Literal["enter", "exit"]] = Field(["enter", "exit"], min_length=1)
    timeout: DurationMs = parse_duration_ms("5s")
    retries: int = Field(5, ge=0, le=100)
    backoff_initial: DurationMs = parse_duration_ms("200ms")
    backoff_max: DurationMs = parse_duration_ms("30s")
    concurrency: int = Field(4, ge=1, le=1_000)
    rate_limit: float = Field(0, ge=0)  # requests per second, 0 = unlimited
    secret_env: str = Field("PZ_WEBHOOK_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    def wants(self, segment: str, action: str) -> bool:
        return action in self.actions and ("*" in self.segments or segment in self.segments)


class ActivationConfig(_Section):
    group_id: str = ""  # "" = <kafka.group_id>-activation
    batch_size: int = Field(500, ge=1)
    endpoints: list[WebhookEndpoint] = []

    @model_validator(mode="after")
    def _unique_names(self) -> ActivationConfig:
        names = [e.name for e in self.endpoints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"endpoint names must be unique: {duplicates}")
        return self


class ApiConfig(_Section):
    """The HTTP read API (``pz api``). API keys never live here:
    they come from the environment variable ``keys_env`` or the file ``keys_file``."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0 = any free port (printed at start)
    workers: int = Field(1, ge=1, le=64)      # uvicorn worker processes (one per core on a real host)
    keys_env: str = Field("PZ_API_KEYS", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    keys_file: str = ""
    public_reads: list[Literal["profile", "segments", "predictions", "experiments", "recommendations"]] = []
    cors_origins: list[str] = []
    batch_max: int = Field(100, ge=1, le=1_000)
    stream_poll: DurationMs = Field(parse_duration_ms("1s"), gt=0)


class VariantConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    weight: float = Field(1.0, gt=0)


class ExperimentConfig(_Section):
    """An A/B experiment (docs/experiments.md "Experiments"): the first variant is the control."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    variants: list[VariantConfig] = Field(min_length=2)
    audience: str | None = None  # a segment of the rules; None: every user
    start: InstantMs             # event time, inclusive
    end: InstantMs               # event time, exclusive

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: variant names must be unique (got {names})")
        if self.end <= self.start:
            raise ValueError(f"experiment {self.name!r}: end must be after start")
        return self

    def experiment(self) -> Experiment:
        return Experiment(self.name, tuple((v.name, v.weight) for v in self.variants), self.start, self.end,
                          self.audience)


class Settings(_Section):
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    time: TimeConfig = TimeConfig()
    validation: ValidationConfig = ValidationConfig()
    profile: ProfileConfig = ProfileConfig()
    enrichment: EnrichmentConfig = EnrichmentConfig()
    identity: IdentityConfig = IdentityConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    rules: RulesConfig = RulesConfig()
    learning: LearningConfig = LearningConfig()
    recommendations: RecommendationsConfig = RecommendationsConfig()
    alerts: AlertsConfig = AlertsConfig()
    activation: ActivationConfig = ActivationConfig()
    flink: FlinkConfig = FlinkConfig()
    api: ApiConfig = ApiConfig()
    experiments: list[ExperimentConfig] = []

    @model_validator(mode="after")
    def _unique_experiments(self) -> Settings:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique (got {names})")
        return self

    def experiment_map(self) -> dict[str, Experiment]:
        """The configured experiments by name, as the core takes them."""
        return {e.name: e.experiment() for e in self.experiments}

    @model_validator(mode="after")
    def _state_outlives_profile_and_windows(self) -> Settings:
        """A user's state may expire only after their Redis profile (else the next event starts a
        fresh state at version 1, which the profile's compare-and-set refuses until it catches
        up), after their longest window, after the dedup horizon and after the longest an event
        is held for sessions."""
        ttl = self.profile.state_ttl
        if ttl and (not self.redis.profile_ttl or ttl < self.redis.profile_ttl):
            raise ValueError(f"profile.state_ttl ({ttl} ms) must be at least redis.profile_ttl "
                             f"({self.redis.profile_ttl} ms), which must not be 0: the profile must expire first")
        if ttl and ttl < max(self.time.windows.sizes):
            raise ValueError(f"profile.state_ttl ({ttl} ms) is shorter than the longest window "
                             f"({max(self.time.windows.sizes)} ms)")
        if ttl and ttl < self.profile.dedup_horizon:  # each seen id expires on its own (state.user_store)
            raise ValueError(f"profile.state_ttl ({ttl} ms) is shorter than profile.dedup_horizon "
                             f"({self.profile.dedup_horizon} ms)")
        held_for = self.time.max_session_length + self.time.session_gap + self.time.allowed_lateness
        if ttl and ttl < held_for:  # each held event's entry expires on its own (state.user_store)
            raise ValueError(f"profile.state_ttl ({ttl} ms) is shorter than an event may be held for sessions: "
                             f"time.max_session_length + time.session_gap + time.allowed_lateness ({held_for} ms)")
        return self

    def with_overrides(self, **sections: Any) -> Settings:
        """A copy with some keys replaced, validated like the file (used by tests and tools)."""
        data = self.model_dump(mode="json")
        _deep_merge(data, sections)  # a section that is a list (experiments) is replaced whole
        return _validate(data, source="overrides")


def load_settings(path: Path | str | None = None, overrides: list[str] | None = None) -> Settings:
    """Read the YAML file, apply ``key.path=value`` overrides, validate; raise ConfigError."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML ({_yaml_problem(err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    for override in overrides or []:
        _apply_override(data, override)
    return _validate(data, source=str(path))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What and where, without PyYAML's quote of the offending line (it may hold a secret)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(err, 'problem', None) or type(err).__name__}{where}"


def _apply_override(data: dict, override: str) -> None:
    """Errors name the key, never the value (it may be a secret)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        shown = f"{key}=…" if sep else key
        raise ConfigError(f"override {shown!r}: expected key.path=value")
    node = data
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override of {key.strip()!r}: {part!r} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override of {key.strip()!r}: value is not valid YAML ({err.problem})") from None


def _deep_merge(target: dict, values: dict) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _validate(data: dict, source: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            key = ".".join(str(part) for part in error["loc"]) or "(top level)"
            got = _shown(key, error["input"])
            if error["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key (got {got})")
            else:
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{key}: {message}" + (f" (got {got})" if error["loc"] else ""))  # not the whole file
        raise ConfigError(f"invalid config {source}:\n  " + "\n  ".join(problems)) from None


def _shown(key: str, value: Any) -> str:
    """The offending value as the error shows it: hidden under a secret-looking key, and a
    section (a mapping) hidden if any key inside it looks secret."""
    if _SECRET_KEY.search(key) or (isinstance(value, dict) and _SECRET_KEY.search(repr(list(_keys(value))))):
        return "a value, not shown: the key looks like a secret"
    return repr(value)


def _keys(value: dict) -> Iterator[str]:
    for key, inner in value.items():
        yield str(key)
        if isinstance(inner, dict):
            yield from _keys(inner)


def redis_password() -> str | None:
    """Secrets come from the environment (or a file it names), never from the YAML file or the
    job graph: the operator reads them when it opens, on the TaskManager."""
    path = os.environ.get("PZ_REDIS_PASSWORD_FILE")
    if path:
        return Path(path).read_text().strip() or None
    return os.environ.get("PZ_REDIS_PASSWORD") or None
