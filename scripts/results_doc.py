"""The one way the results scripts write their part of docs/RESULTS.md.

Each script owns a section between `<!-- NAME:begin -->` and `<!-- NAME:end -->` and regenerates it from its JSON
records; everything outside the markers is left as written. A section not yet in the file is appended.
"""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), for the machine line of every published number."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def replace_section(doc: Path, section: str, begin: str, end: str) -> None:
    """Put `section` (which includes its own markers) in place of the old one, writing the file atomically."""
    from img2text2img.io import write_text_atomic

    old = doc.read_text(encoding="utf-8") if doc.exists() else "# Results\n"
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(doc, new)


def doc_for(results: Path, doc: Path, root: Path) -> Path:
    """The document a run may rewrite. The repository's RESULTS.md sections are generated from docs/results only: a
    run whose rows go to another folder (a scratch evaluation) and that names no --doc writes RESULTS.md beside its
    rows instead, or it would replace a published table with its own few rows (as a benchmark run once did)."""
    repo_results, repo_doc = root / "docs" / "results", root / "docs" / "RESULTS.md"
    if Path(results).resolve() != repo_results.resolve() and Path(doc).resolve() == repo_doc.resolve():
        return Path(results) / "RESULTS.md"
    return Path(doc)
