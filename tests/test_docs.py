"""The docs stay readable for a newcomer: short README and RESULTS, few files in docs/, and no dead links."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def docs_listing() -> list[Path]:
    """Tracked files under docs/ in a git checkout (what a clone gets), else every file there."""
    try:
        out = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in DOCS.rglob("*") if p.is_file()]
    return [ROOT / line for line in out.splitlines() if line]


def relative_links(md: Path) -> list[str]:
    """Link targets outside code: fenced blocks and inline code are examples, not links."""
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [m.group(1).split("#", 1)[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_readme_lists_at_most_12_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What you can do", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert 1 <= len(commands) <= 12, commands


def test_results_is_short():
    assert len((DOCS / "RESULTS.md").read_text().splitlines()) <= 300


def test_docs_hold_at_most_40_files():
    files = docs_listing()
    assert len(files) <= 40, f"{len(files)} files in docs/"


@pytest.mark.parametrize("md", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md):
    dead = [t for t in relative_links(md) if not (md.parent / t).exists()]
    assert not dead, f"{md.relative_to(ROOT)} links to missing files: {dead}"


def test_every_file_in_docs_is_linked():
    linked = {(md.parent / t).resolve() for md in doc_files() for t in relative_links(md)}
    orphans = [str(p.relative_to(ROOT)) for p in docs_listing()
               if p.suffix != ".md" and p.resolve() not in linked]
    assert not orphans, f"files in docs/ that no doc links to: {orphans}"


def test_scripts_and_recipes_the_docs_name_exist():
    pattern = r"(?:scripts/[\w-]+\.py|recipes/[a-z0-9_-]+\.sh)"
    named = {m for md in doc_files() for m in re.findall(pattern, md.read_text())}
    missing = sorted(s for s in named if not (ROOT / s).exists())
    assert not missing, f"the docs name files that are not there: {missing}"
