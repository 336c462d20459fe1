"""The embedded interpreter's ``sitecustomize`` (pipelines/embedded): it imports the operators in
the JVM's own interpreter only, not in the ``python -c`` probes the JVM runs at every job start
under the same PYTHONPATH (four per start, one after the other)."""

from __future__ import annotations

import os
import subprocess
import sys

from personalization.config.settings import REPO_ROOT
from personalization.pipelines.job import EMBEDDED_STARTUP

OPERATORS_IMPORTED = "import sys; print(sorted(m for m in sys.modules if m.startswith('personalization.operators')))"


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EMBEDDED_STARTUP), str(REPO_ROOT)])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def test_a_process_with_a_command_line_does_not_import_the_operators() -> None:
    assert "sitecustomize" in _python("import sys; print(sorted(sys.modules))")  # the probe did read it
    assert _python(OPERATORS_IMPORTED) == "[]"


def test_an_interpreter_without_a_command_line_imports_them() -> None:
    """As pemja's interpreter starts: ``sys.orig_argv`` is empty."""
    code = ("import runpy, sys; sys.orig_argv = []; "
            f"runpy.run_path({str(EMBEDDED_STARTUP / 'sitecustomize.py')!r}); {OPERATORS_IMPORTED}")
    imported = _python(code)
    assert "'personalization.operators.user_profile'" in imported and "'personalization.operators.parse'" in imported
