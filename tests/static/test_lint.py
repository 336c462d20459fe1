"""Lint and types: ``ruff`` over the package, the benchmarks and the tests, and ``mypy --strict``
over ``personalization/core`` (both configured in pyproject.toml), each from the venv (beside the
interpreter, not on PATH) and each with zero findings. CI runs them here: ``.ci/run`` calls
``make test``, which runs ``pytest tests``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from personalization.config.settings import REPO_ROOT


def _tool(name: str) -> Path:
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path} is missing: `make setup` installs requirements-dev.txt"
    return path


def test_ruff_finds_nothing():
    result = subprocess.run([str(_tool("ruff")), "check", "--no-cache", "personalization", "bench", "tests"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_core_finds_nothing(tmp_path):
    # the files and the strictness come from [tool.mypy]; a fresh cache, so a stale one cannot hide a finding
    result = subprocess.run([str(_tool("mypy")), "--cache-dir", str(tmp_path / "mypy")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout, result.stdout + result.stderr
