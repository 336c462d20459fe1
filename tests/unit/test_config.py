"""Job configuration (personalization.config.settings): defaults documented in the packaged
config/default.yaml, overrides, path resolution, and a clear ConfigError for every bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from personalization.config.settings import (
    BASE_DIR,
    DEFAULT_CONFIG,
    DEFAULT_RULES,
    EVENT_SCHEMA,
    REPO_ROOT,
    ConfigError,
    Settings,
    load_settings,
    parse_duration_ms,
)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    return str(info.value)


# --- the documented defaults ----------------------------------------------------------------

def test_repo_root_and_the_packaged_defaults() -> None:
    """In a checkout relative paths start at its root; the default files are package data."""
    assert REPO_ROOT == BASE_DIR == ROOT
    package = ROOT / "personalization"
    assert (
        package / "config" / "default.yaml", package / "rules" / "default.yaml",
        package / "schemas" / "event-v1.schema.json") == (DEFAULT_CONFIG, DEFAULT_RULES, EVENT_SCHEMA)
    assert load_settings().rules.path == DEFAULT_RULES and Settings().validation.schema_path == EVENT_SCHEMA


def test_default_yaml_loads_and_equals_the_code_defaults() -> None:
    assert load_settings() == Settings()
    assert load_settings(DEFAULT_CONFIG) == Settings()


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= model_keys(annotation, f"{prefix}{name}.")
    return keys


def yaml_keys(node: dict, prefix: str = "", sections: set[str] = frozenset()) -> set[str]:
    keys = set()
    for name, value in node.items():
        keys.add(prefix + name)
        if isinstance(value, dict) and prefix + name in sections:
            keys |= yaml_keys(value, f"{prefix}{name}.", sections)
    return keys


def test_every_settings_key_is_documented_in_default_yaml_and_nothing_else() -> None:
    code = model_keys(Settings)
    assert {"kafka.topics.events", "time.windows.buckets", "flink.parallelism"} <= code
    sections = {key for key in code
                if any(other.startswith(key + ".") for other in code)}
    documented = yaml_keys(yaml.safe_load(DEFAULT_CONFIG.read_text()), sections=sections)
    assert code - documented == set(), "keys missing from config/default.yaml"
    assert documented - code == set(), "keys in config/default.yaml the code does not know"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()
    assert load_settings(write(tmp_path, "{}\n")) == Settings()


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
        time:
          session_gap: 10m
          windows:
            sizes: [1m, 2h]
    """))
    assert settings.time.session_gap == 600_000
    assert settings.time.windows.sizes == [60_000, 7_200_000]
    assert settings.time.windows.buckets == 60
    assert settings.time.allowed_lateness == 3_600_000
    assert settings.kafka == Settings().kafka


# --- durations ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "ms"), [
    ("250ms", 250), ("5s", 5_000), ("30m", 1_800_000), ("1h", 3_600_000), ("7d", 604_800_000),
    (" 2 s ", 2_000), ("0s", 0), (1_500, 1_500), (0, 0),
])
def test_parse_duration(text, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["5", "1.5h", "30 minutes", "-5s", "5S", "", True, 1.5, None, [1], -1])
def test_parse_duration_rejects(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(bad)


# --- overrides ------------------------------------------------------------------------------

def test_override_applies_and_parses_durations() -> None:
    settings = load_settings(overrides=["time.session_gap=10m"])
    assert settings.time.session_gap == 600_000
    assert settings.time.max_session_length == 14_400_000     # untouched


def test_overrides_apply_in_order_with_yaml_typed_values() -> None:
    settings = load_settings(overrides=[
        "flink.parallelism=4",
        "kafka.bounded=true",
        "time.windows.sizes=[1m, 2m]",
        "kafka.topics.events=clicks",
        "kafka.topics.events=views",
        "redis.port=6380",
    ])
    assert settings.flink.parallelism == 4
    assert settings.kafka.bounded is True
    assert settings.time.windows.sizes == [60_000, 120_000]
    assert settings.kafka.topics.events == "views"
    assert settings.redis.port == 6380


def test_override_creates_a_section_absent_from_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "redis:\n  port: 7000\n"),
                             overrides=["time.windows.buckets=10"])
    assert settings.time.windows.buckets == 10
    assert settings.redis.port == 7000


def test_with_overrides_validates_like_the_file() -> None:
    settings = Settings().with_overrides(time={"session_gap": "5m"}, kafka={"topics": {"dlq": "x"}})
    assert settings.time.session_gap == 300_000
    assert settings.kafka.topics.dlq == "x"
    assert settings.kafka.topics.events == "events"
    with pytest.raises(ConfigError) as info:
        Settings().with_overrides(time={"session_gap": "soon"})
    assert "time.session_gap" in str(info.value) and "'soon'" in str(info.value)


# --- paths ----------------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_repo_root_not_the_cwd(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(overrides=[
        "validation.schema_path=schemas/other.json",
        "flink.connector_jar=jars/x.jar",
        "flink.checkpoint_dir=state/cp",
    ])
    assert settings.validation.schema_path == ROOT / "schemas" / "other.json"
    assert settings.flink.connector_jar == ROOT / "jars" / "x.jar"
    assert settings.flink.checkpoint_dir == (ROOT / "state" / "cp").as_uri()
    defaults = load_settings()
    assert defaults.validation.schema_path == EVENT_SCHEMA
    assert defaults.validation.schema_path.is_file()
    assert defaults.flink.checkpoint_dir == (ROOT / ".stack" / "checkpoints").as_uri()


def test_absolute_paths_and_uris_are_kept(tmp_path: Path) -> None:
    settings = load_settings(overrides=[
        f"validation.schema_path={tmp_path / 's.json'}",
        "flink.checkpoint_dir=s3://bucket/checkpoints",
        f"flink.connector_jar={tmp_path / 'c.jar'}",
    ])
    assert settings.validation.schema_path == tmp_path / "s.json"
    assert settings.flink.checkpoint_dir == "s3://bucket/checkpoints"
    assert settings.flink.connector_jar == tmp_path / "c.jar"


# --- bad configs: ConfigError naming the key and the value ------------------------------------

def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "kafak:\n  group_id: x\n")
    message = error_of(path)
    assert str(path) in message
    assert "kafak: unknown key (got {'group_id': 'x'})" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "time:\n  windows:\n    bucket: 30\n"))
    assert "time.windows.bucket: unknown key (got 30)" in message


def test_unknown_key_from_an_override() -> None:
    message = error_of(overrides=["time.sesion_gap=10m"])
    assert "time.sesion_gap: unknown key (got '10m')" in message
    assert str(DEFAULT_CONFIG) in message


@pytest.mark.parametrize("value", ["thirty minutes", "1.5h", "5S", "-5s"])
def test_bad_duration(tmp_path: Path, value: str) -> None:
    message = error_of(write(tmp_path, f"time:\n  session_gap: '{value}'\n"))
    assert f"time.session_gap: expected a duration like 500ms, 5s, 30m, 1h or 7d (got '{value}')" in message


def test_negative_duration() -> None:
    message = error_of(overrides=["time.allowed_lateness=-1"])
    assert "time.allowed_lateness: expected a non-negative duration (got -1)" in message


@pytest.mark.parametrize("key", ["session_gap", "max_session_length", "watermark_interval"])
def test_zero_duration_where_a_positive_one_is_needed(key: str) -> None:
    message = error_of(overrides=[f"time.{key}=0"])
    assert f"{key} must be greater than 0" in message
    assert f"'{key}': 0" in message          # the offending value, within the section shown


@pytest.mark.parametrize(("override", "key", "got"), [
    ("flink.parallelism=0", "flink.parallelism", "0"),
    ("redis.port=0", "redis.port", "0"),
    ("redis.port=70000", "redis.port", "70000"),
    ("redis.db=-1", "redis.db", "-1"),
    ("kafka.topics.partitions=0", "kafka.topics.partitions", "0"),
    ("kafka.replication_factor=0", "kafka.replication_factor", "0"),
    ("kafka.min_insync_replicas=0", "kafka.min_insync_replicas", "0"),
    ("time.windows.buckets=0", "time.windows.buckets", "0"),
    ("profile.top_categories=0", "profile.top_categories", "0"),
    ("validation.max_event_bytes=100", "validation.max_event_bytes", "100"),
    ("flink.restart_attempts=-1", "flink.restart_attempts", "-1"),
])
def test_out_of_range_numbers(override: str, key: str, got: str) -> None:
    message = error_of(overrides=[override])
    assert f"\n  {key}: " in message
    assert message.endswith(f"(got {got})")


@pytest.mark.parametrize(("override", "problem"), [
    ("redis.cluster_nodes=[127.0.0.1]", "cluster node '127.0.0.1' is not host:port"),
    ("redis.cluster_nodes=[':7101']", "cluster node ':7101' is not host:port"),
    ("redis.cluster_nodes=[h:99999]", "cluster node 'h:99999' is not host:port"),
])
def test_cluster_nodes_are_host_ports(override: str, problem: str) -> None:
    assert problem in error_of(overrides=[override])


def test_a_cluster_has_only_database_0() -> None:
    assert "a Redis Cluster has only database 0" in error_of(overrides=["redis.cluster_nodes=[h:7101]", "redis.db=1"])
    assert load_settings(overrides=["redis.cluster_nodes=[h:7101, '[::1]:7102']"]).redis.cluster_nodes == [
        "h:7101", "[::1]:7102"]


@pytest.mark.parametrize(("override", "key", "got"), [
    ("flink.state_backend=leveldb", "flink.state_backend", "'leveldb'"),
    ("kafka.delivery_guarantee=exactly-twice", "kafka.delivery_guarantee", "'exactly-twice'"),
    ("kafka.starting_offsets=newest", "kafka.starting_offsets", "'newest'"),
    ("flink.python_execution_mode=fork", "flink.python_execution_mode", "'fork'"),
])
def test_wrong_enum_value(override: str, key: str, got: str) -> None:
    message = error_of(overrides=[override])
    assert f"\n  {key}: Input should be " in message
    assert message.endswith(f"(got {got})")


def test_wrong_type_for_a_section(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "time: 5\n"))
    assert "\n  time: " in message and message.endswith("(got 5)")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "flink:\n  parallelism: 0\n  state_backend: x\nbogus: 1\n"))
    assert "flink.parallelism:" in message
    assert "flink.state_backend:" in message
    assert "bogus: unknown key (got 1)" in message


def test_window_size_not_divisible_by_buckets() -> None:
    message = error_of(overrides=["time.windows.sizes=[10m]", "time.windows.buckets=7"])
    # 600_000 ms = 7 * 85_714 + 2
    assert "time.windows: window size 600000 ms must be positive and divisible by buckets=7" in message


@pytest.mark.parametrize("value, problem", [("6000", "must be a power of 2"), ("2048", "greater than or equal to 4096")])
def test_network_buffer_bytes_is_a_flink_memory_page(value: str, problem: str) -> None:
    assert problem in error_of(overrides=[f"flink.network_buffer_bytes={value}"])


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    message = error_of(overrides=["kafka.replication_factor=2", "kafka.min_insync_replicas=3"])
    assert "kafka: kafka.min_insync_replicas (3) exceeds kafka.replication_factor (2)" in message
    settings = load_settings(overrides=["kafka.replication_factor=3", "kafka.min_insync_replicas=2"])
    assert (settings.kafka.replication_factor, settings.kafka.min_insync_replicas) == (3, 2)


def test_window_size_divisible_by_buckets_is_accepted() -> None:
    settings = load_settings(overrides=["time.windows.sizes=[7m]", "time.windows.buckets=7"])
    assert settings.time.windows.sizes == [420_000]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message == f"config file {path}: expected a mapping of sections at the top level"


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "time:\n  session_gap: [10m\n")
    message = error_of(path)
    assert message.startswith(f"config file {path}: not valid YAML (")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert error_of(path) == f"config file {path}: cannot be read (No such file or directory)"


def test_yaml_syntax_errors_say_where_without_quoting_the_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, f"redis:\n  password: [{SECRET}\n"))
    assert message.endswith("not valid YAML (expected ',' or ']', but got '<stream end>' at line 3, column 1)")
    assert SECRET not in message


@pytest.mark.parametrize(("override", "shown"), [("time.session_gap", "time.session_gap"), ("=10m", "=…"),
                                                  (" =10m", " =…"), ("", "")])
def test_override_without_key_or_equals_sign(override: str, shown: str) -> None:
    assert error_of(overrides=[override]) == f"override {shown!r}: expected key.path=value"


def test_override_below_a_value_that_is_not_a_section() -> None:
    message = error_of(overrides=["time.session_gap.minutes=10"])
    assert message == "override of 'time.session_gap.minutes': 'session_gap' is not a section"


def test_override_with_unparseable_value_is_a_config_error() -> None:
    """load_settings promises ConfigError; main.py only catches ConfigError, so anything else
    becomes a traceback instead of a one-line message and exit code 2."""
    override = "time.windows.sizes=[10m"
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=[override])
    assert "override of 'time.windows.sizes': value is not valid YAML" in str(info.value)
    assert "[10m" not in str(info.value)  # the value is never echoed: it could be a secret


SECRET = "hunter2-do-not-print"


@pytest.mark.parametrize("text", [
    f"redis:\n  password: {SECRET}\n",                       # a password in a section that has none
    f"kafka:\n  sasl_password: {SECRET}\n",
    f"kafak:\n  sasl.jaas.config: x password='{SECRET}';\n",  # inside a misspelt section
    f"kafka:\n  properties:\n    ssl.key.password: [{SECRET}]\n",  # a known place, a bad type
])
def test_config_errors_never_echo_values_of_secret_keys(tmp_path: Path, text: str) -> None:
    message = error_of(write(tmp_path, text))
    assert "not shown: the key looks like a secret" in message
    assert SECRET not in message


@pytest.mark.parametrize("override", [f"redis.password={SECRET}", f"redis.password=[{SECRET}",
                                      f"redis.port.password={SECRET}"])
def test_override_errors_never_echo_the_value(override: str) -> None:
    message = error_of(overrides=[override])
    assert "redis." in message and SECRET not in message


def test_rest_api_binds_loopback_by_default() -> None:
    from personalization.pipelines.job import flink_configuration
    conf = flink_configuration(Settings().with_overrides(flink={"rest_port": 0}))
    assert conf.get_string("rest.bind-address", "") == "127.0.0.1"
    assert conf.get_string("rest.address", "") == "127.0.0.1"
    conf = flink_configuration(Settings().with_overrides(flink={"bind_address": "0.0.0.0"}))
    assert conf.get_string("rest.bind-address", "") == "0.0.0.0"
    assert "flink.bind_address: expected an IP address" in error_of(overrides=["flink.bind_address=localhost:1"])


def test_state_ttl_must_outlive_the_profile_the_longest_window_the_dedup_horizon_and_held_events() -> None:
    assert load_settings(overrides=["profile.state_ttl=30d"]).profile.state_ttl == 30 * 86_400_000
    for overrides, problem in ((["profile.state_ttl=40d", "redis.profile_ttl=0"], "redis.profile_ttl (0 ms)"),
                               (["profile.state_ttl=29d"], "at least redis.profile_ttl"),
                               (["profile.state_ttl=2h", "redis.profile_ttl=1h"], "shorter than the longest window"),
                               (["profile.state_ttl=30d", "profile.dedup_horizon=31d"], "shorter than profile.dedup"),
                               (["profile.state_ttl=30d", "time.max_session_length=30d"], "held for sessions")):
        with pytest.raises(ConfigError) as info:
            load_settings(overrides=overrides)
        assert problem in str(info.value) and "got" not in str(info.value)  # the whole file is not echoed


@pytest.mark.parametrize(("section", "key", "kind"), [("enrichment", "item_catalog", "file"),
                                                       ("learning", "start_from", "snapshot file")])
def test_a_file_key_naming_no_file_is_refused_with_its_key_and_value(tmp_path, section, key, kind):
    missing = tmp_path / "missing.csv"
    problem = error_of(overrides=[f"{section}.{key}={missing}"])
    assert f"{section}.{key}" in problem and f"{str(missing)!r}: no such {kind}" in problem
    present = tmp_path / "present.csv"
    present.write_text("item_id,category_id\n")
    settings = load_settings(overrides=[f"{section}.{key}={present}"])
    assert getattr(getattr(settings, section), key) == str(present)
