"""The docs stay true: the CLI reference is current, every docs page is linked, links resolve, the README is a front door."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_cli_reference_is_generated_from_the_current_help():
    from demseg.cli_reference import reference

    assert (DOCS / "cli.md").read_text() == reference(), \
        "docs/cli.md is out of date: python -m demseg.cli_reference > docs/cli.md"


def test_docs_index_links_every_docs_page():
    index = (DOCS / "index.md").read_text()
    linked = {Path(target).as_posix() for target, _ in LINK.findall(index)}
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.glob("*.md") if p.name != "index.md"}
    assert pages <= linked, f"docs/index.md does not link {sorted(pages - linked)}"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in [REPO / "README.md", REPO / "CHANGELOG.md", *DOCS.rglob("*.md")]:
        for target, _ in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    text = "\n".join(lines)
    assert "bash setup.sh && .venv/bin/demseg demo" in text
    assert "bash setup.sh --dev && .venv/bin/python -m pytest -q" in text


def test_the_architecture_page_lists_the_stages_in_the_order_the_architecture_test_enforces():
    from test_architecture import RANKS

    text = (DOCS / "architecture.md").read_text()
    line = re.search(r"Ranks, lowest first[^:]*:(.*?)\.\n", text, re.S).group(1)
    named = [part.strip() for part in re.split(r",|\band\b", " ".join(line.split())) if part.strip()]
    stages = [stage for stage in sorted(RANKS, key=RANKS.get) if stage not in ("__init__", "cli_flags", "qgis",
                                                                                  "cli_reference")]
    assert named == stages
