"""The documentation's links: every relative link in README.md and docs/*.md names a file that
exists and, for a Markdown file, a heading it has (GitHub's anchors: lower case, punctuation
dropped, spaces to hyphens, ``-1``, ``-2`` for repeated headings). The README stays a front page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from personalization.config.settings import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCED = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> Iterator[str]:
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.*?)\s*$", FENCED.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path):
    broken = []
    for link in LINK.findall(FENCED.sub("", doc.read_text())):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path) if path else doc
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in set(anchors(target)):
            broken.append(f"{link}: no such heading")
    assert not broken, f"{doc.name}: {broken}"


def test_the_readme_is_a_front_page():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 300
