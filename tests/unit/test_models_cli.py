"""The model snapshot CLI (``personalization.tools.models``) on real snapshot files."""

from __future__ import annotations

import json
import random

from click.testing import CliRunner

from personalization.core.learning.propensity import FEATURE_NAMES, TOP_LEVEL, encode
from personalization.core.learning.shared import SharedModels, export_snapshot
from personalization.tools.models import cli


def _models(examples: int) -> SharedModels:
    rng = random.Random(examples)
    models = SharedModels()
    for _ in range(examples):
        models.propensity.learn({f: rng.random() for f in FEATURE_NAMES}, rng.random() < 0.3, 0.5)
        models.clusters.assign({"events_per_session": rng.random() * 10, "purchase_rate": rng.random()})
    return models


def test_list_show_and_export(tmp_path) -> None:
    old = export_snapshot(_models(20), tmp_path, 1_511_658_000_000)
    new = export_snapshot(_models(40), tmp_path, 1_511_659_000_000)
    runner = CliRunner()

    listed = runner.invoke(cli, ["list", "--dir", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.index(old.name) < listed.output.index(new.name)   # oldest first

    shown = runner.invoke(cli, ["show", str(new)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["header"]["examples_learned"] == 40

    out = tmp_path / "params.json"
    exported = runner.invoke(cli, ["export", str(new), str(out)])
    assert exported.exit_code == 0, exported.output
    params = json.loads(out.read_text())
    counts = params["propensity"]["naive_bayes"]["presence_counts"]
    # the model's inputs as encode() names them: event types, and "level=bin" indicators
    levels = {name.split("=")[0] for name in encode({}) if "=" in name}
    bins = {f"{level}={n}" for level in levels for n in range(TOP_LEVEL + 1)}
    assert counts and set(counts) <= bins | {f for f in encode({}) if "=" not in f}
    assert sum(params["propensity"]["naive_bayes"]["class_counts"].values()) == 40
    assert params["propensity"]["calibration"]["slope"] != 0
    assert params["snapshot"]["sha256"] and params["clusters"]


def test_show_refuses_a_corrupted_file(tmp_path) -> None:
    path = export_snapshot(_models(5), tmp_path, 1_511_658_000_000)
    path.write_bytes(path.read_bytes()[:-10])
    shown = CliRunner().invoke(cli, ["show", str(path)])
    assert shown.exit_code == 1 and "does not match its header" in shown.output
