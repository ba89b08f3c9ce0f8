"""The results scripts rewrite docs/RESULTS.md only from docs/results (a scratch run once emptied a table)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from results_doc import doc_for, replace_section


def test_a_scratch_results_folder_never_rewrites_the_published_doc(tmp_path):
    repo_doc = ROOT / "docs" / "RESULTS.md"
    assert doc_for(ROOT / "docs" / "results", repo_doc, ROOT) == repo_doc
    assert doc_for(tmp_path / "scratch", repo_doc, ROOT) == tmp_path / "scratch" / "RESULTS.md"
    assert doc_for(tmp_path / "scratch", tmp_path / "mine.md", ROOT) == tmp_path / "mine.md"


def test_replace_section_keeps_everything_outside_its_markers(tmp_path):
    doc = tmp_path / "R.md"
    doc.write_text("intro\n<!-- x:begin -->old<!-- x:end -->\noutro\n")
    replace_section(doc, "<!-- x:begin -->new<!-- x:end -->", "<!-- x:begin -->", "<!-- x:end -->")
    assert doc.read_text() == "intro\n<!-- x:begin -->new<!-- x:end -->\noutro\n"
