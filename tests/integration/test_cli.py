"""The installed ``pz`` command, run as a user runs it (a subprocess of the venv's script), at
least one subcommand of every group; the ones that read Kafka or Redis use the real local stack.
Only the check that every command loads and declares its options runs in this process.

``make setup`` installs the project into the venv (editable), which puts ``pz`` beside the
interpreter. PYTHONPATH makes the script import this checkout (a worktree sharing a venv whose
editable install points elsewhere tests its own code). The wheel built from the sdist, installed
into a fresh venv outside the repo, is checked by ``.ci/package-check`` (``make package-check``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from click.testing import CliRunner

from personalization import __version__, cli
from personalization.cli import COMMANDS
from personalization.config.settings import DEFAULT_CONFIG, DEFAULT_RULES, REPO_ROOT, load_settings
from personalization.topics.records import read_topic, topic_size
from tests.support import CREATED, TEST_PREFIX, TEST_TOPIC_PREFIX, TOPIC_KEYS, isolated_settings, write_config

PZ = Path(sys.executable).parent / "pz"


def pz(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    assert PZ.is_file(), f"{PZ} is missing: `make setup` installs the project (and its pz command) into the venv"
    return subprocess.run([str(PZ), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def ok(*args: str, cwd: Path = REPO_ROOT) -> str:
    result = pz(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_version_help_and_every_command_loads():
    assert ok("--version") == f"pz, version {__version__}\n"
    listed = ok("--help")
    assert all(f"\n  {name} " in listed for name in COMMANDS)
    runner = CliRunner()  # in this process: one import of PyFlink, not one per command
    for name in COMMANDS:  # each lazily imported module loads and declares its options
        result = runner.invoke(cli.pz, [name, "--help"], prog_name="pz")
        assert result.exit_code == 0 and result.output.startswith(f"Usage: pz {name} "), result.output
    assert pz("no-such-command").returncode == 2


def test_shell_completion_of_the_installed_script():
    result = subprocess.run([str(PZ)], env={**os.environ, "_PZ_COMPLETE": "bash_source"}, capture_output=True,
                            text=True, timeout=60)
    assert "_pz_completion" in result.stdout and "complete -o nosort -F _pz_completion pz" in result.stdout
    result = subprocess.run([str(PZ)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "_PZ_COMPLETE": "bash_complete", "COMP_WORDS": "pz dlq ",
                                 "COMP_CWORD": "2"})
    assert result.stdout.split() == ["plain,list", "plain,replay"]


def test_config_check_show_and_a_bad_key(tmp_path):
    assert ok("config", "check").startswith("config ok, rules ok (version 'default-")
    assert ok("config", "show") == DEFAULT_CONFIG.read_text()
    elsewhere = ok("config", "check", cwd=tmp_path)  # the packaged defaults, from any directory
    assert elsewhere.startswith("config ok, rules ok")
    bad = pz("config", "check", "--set", "time.session_gap=soon")
    assert bad.returncode == 2 and "time.session_gap: expected a duration" in bad.stderr


def test_run_refuses_a_bad_config_before_it_starts():
    result = pz("run", "--set", "kafka.no_such_key=1")
    assert result.returncode == 2 and "kafka.no_such_key: unknown key" in result.stderr


def test_rules_check_show_publish_and_diff_against_the_topic(stack, tmp_path):
    settings = isolated_settings(tmp_path)
    config = str(write_config(settings, tmp_path / "config.yaml"))
    assert ok("rules", "show") == DEFAULT_RULES.read_text()
    assert ok("rules", "check", str(DEFAULT_RULES)).startswith("rules ok: version 'default-")
    changed = tmp_path / "changed.yaml"
    changed.write_text(DEFAULT_RULES.read_text().replace('version: "default-', 'version: "changed-', 1))
    # nothing published yet: the job runs rules.path
    diff = pz("rules", "diff", str(changed), "--config", config)
    assert diff.returncode == 1, diff.stderr
    assert "version: 'default-" in diff.stdout and "-> 'changed-" in diff.stdout
    assert "segments added: -" in diff.stdout and '+version: "changed-' in diff.stdout
    assert ok("rules", "publish", str(changed), "--config", config).startswith("published rules version 'changed-")
    assert ok("rules", "diff", str(changed), "--config", config).startswith("no changes")
    assert pz("rules", "diff", str(DEFAULT_RULES), "--against", str(changed), "--config", config).returncode == 1


def test_topics_list_and_create(stack, tmp_path):
    run = uuid.uuid4().hex[:10]
    settings = load_settings().with_overrides(
        kafka={"topics": {key: f"{TEST_TOPIC_PREFIX}{run}-{key}" for key in TOPIC_KEYS}})
    CREATED.append(settings)  # the session's clean-up deletes them
    config = str(write_config(settings, tmp_path / "config.yaml"))
    assert [line.split("\t")[2] for line in ok("topics", "list", "--config", config).splitlines()] == \
        ["missing"] * len(TOPIC_KEYS)
    assert ok("topics", "create", "--config", config).startswith(f"created {len(TOPIC_KEYS)} topic(s): ")
    rows = [line.split("\t") for line in ok("topics", "list", "--config", config).splitlines()]
    assert {row[0]: (row[2], row[3]) for row in rows} == {
        key: ("1" if key == "rules" else str(settings.kafka.topics.partitions), "0") for key in TOPIC_KEYS}
    assert ok("topics", "create", "--config", config) == "created 0 topic(s)\n"


def test_produce_dlq_and_reads_on_the_stack(stack, tmp_path):
    settings = isolated_settings(tmp_path)
    config = str(write_config(settings, tmp_path / "config.yaml"))
    topics = settings.kafka.topics
    ok("produce", "--dataset", "synthetic", "--users", "20", "--limit", "20",
       "--bootstrap", settings.kafka.bootstrap_servers, "--topic", topics.events, "--no-progress")
    assert topic_size(settings, topics.events) == 20
    assert ok("dlq", "list", "--json", "--config", config) == ""  # read to the end offsets: empty
    assert ok("dlq", "replay", "--dry-run", "--config", config) == \
        f"dry run: would re-publish 0 record(s) to topic {topics.events!r}\n"
    assert ok("sizes", "--config", config) == "" and ok("members", "high_intent", "--config", config) == ""
    missing = pz("profile", "nobody", "--config", config)
    assert missing.returncode == 1 and "no profile for user 'nobody'" in missing.stderr
    request = orjson.loads(ok("erase", "someone", "--request-id", "r-1", "--config", config))
    assert (request["user_id"], request["request_id"]) == ("someone", "r-1")
    assert read_topic(settings, topics.erasure) == [request]
    assert settings.redis.key_prefix.startswith(f"{TEST_PREFIX}:")


def test_models_list_and_webhooks_replay_name_their_problem(tmp_path):
    assert ok("models", "list", "--dir", str(tmp_path)) == f"no snapshot files in {tmp_path}\n"
    unknown = pz("webhooks", "replay", "--endpoint", "nope")
    assert unknown.returncode == 2 and "no endpoint named 'nope' in activation.endpoints" in unknown.stderr
