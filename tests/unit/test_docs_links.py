"""README.md and docs/*.md link only files inside the repository, and every link resolves.

A clone is all a reader has: a link or a "see ..." pointer to `../shared/` (the team's workspace
beside the checkout) or to an absolute path is a dead end there. Checked: every Markdown link
`[text](target)` resolves to a file in the repository (anchors: the heading exists), no link
leaves the repository or points at the web, and no doc sends its reader to a document under
`../shared/` (test fixtures under `../shared/fixtures` or `../shared/k8s` may be named, as what
the tests read, since they are not reading).

Not checked: whether the linked text says what the link promises.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SHARED_DOC = re.compile(r"\.\./shared/(?!fixtures/|k8s/)\S+")


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.+)$", doc.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def _links(doc: Path) -> list[str]:
    return LINK.findall(doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_stays_in_the_repository_and_resolves(doc: Path) -> None:
    bad = []
    for target in _links(doc):
        path, _, anchor = target.partition("#")
        if re.match(r"^[a-z][a-z0-9+.-]*:", path) or path.startswith("/"):
            bad.append(f"{target}: leaves the repository")
            continue
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.is_relative_to(ROOT):
            bad.append(f"{target}: leaves the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no such heading")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_doc_sends_its_reader_outside_the_clone(doc: Path) -> None:
    assert not SHARED_DOC.findall(doc.read_text()), doc.relative_to(ROOT)


def test_the_checks_catch_what_they_claim(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("# A title\n[a](../shared/DESIGN.md) [b](https://example.com) [c](#a-title)\n")
    assert _links(doc) == ["../shared/DESIGN.md", "https://example.com", "#a-title"]
    assert "a-title" in _anchors(doc)
    assert SHARED_DOC.findall(doc.read_text()) == ["../shared/DESIGN.md)"]
    assert not SHARED_DOC.findall("fixtures in `../shared/fixtures/k8s-api/`")
