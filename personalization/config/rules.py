"""The rules the config names (``rules.path``), read and checked exactly as the job runs them:
the rules language (``core.rules``) and what the job's config provides (the rolling windows)."""

from __future__ import annotations

from pathlib import Path

from personalization.config.settings import REPO_ROOT, Settings
from personalization.core import aggregates
from personalization.core.rules import RuleSet, RulesError


def display_path(path: Path) -> str:
    """``personalization/rules/default.yaml`` for files in the repository, the path as given elsewhere."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def compile_rules(text: str, source: str, settings: Settings) -> RuleSet:
    """Parse and check ``text`` as the job would run it; raises ``RulesError`` (file:line: ...)."""
    rules = RuleSet(text, source)
    aggregates.check_provided(rules, settings.time.windows.sizes)
    return rules


def read_rules(path: Path, settings: Settings) -> RuleSet:
    """A rules file checked as ``compile_rules`` does; an unreadable file is a ``RulesError`` too."""
    source = display_path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RulesError(f"{source}: cannot be read ({err.strerror})") from None
    return compile_rules(text, source, settings)


def load_rules(settings: Settings) -> RuleSet:
    """The start-up rules (``rules.path``)."""
    return read_rules(settings.rules.path, settings)
