"""The package's layering (pyproject.toml ``[tool.importlinter]``): ``lint-imports`` from the venv
(beside the interpreter, not on PATH) keeps every contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from personalization.config.settings import REPO_ROOT


def test_every_import_contract_is_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.is_file(), f"{lint_imports} is missing: `make setup` installs requirements-dev.txt"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
