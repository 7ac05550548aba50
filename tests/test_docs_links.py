"""Every relative link in the project's Markdown (README.md, docs/, web_widget/) resolves.

A link is `[text](target)` or `![alt](target)` outside code; a relative target must name
an existing file or directory, and a `#fragment` must name a heading of the file it points
into (GitHub's anchor rule: lower-case, punctuation dropped, spaces to hyphens, a `-N`
suffix for repeated headings). Absolute URLs (`https:`, `mailto:` ...) are not fetched.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold one level of brackets
# (e.g. a badge), target has no spaces unless in <...>.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    """The Markdown files git tracks or would track (not ignored), or, outside a git
    checkout, every one under the root but the virtualenv."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "*.md"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        files = [ROOT / p for p in out.split()]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*.md") if ".venv" not in p.parts]
    return sorted(p for p in files if p.exists())


def prose_lines(text: str, *, keep_code: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; inline code blanked out, or with
    keep_code only its backticks dropped (a heading's anchor keeps the code's text)."""
    lines, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((n, line.replace("`", "") if keep_code else _INLINE_CODE.sub("", line)))
    return lines


def links(text: str) -> list[tuple[int, str]]:
    return [(n, m.group(1).strip("<>")) for n, line in prose_lines(text)
            for m in _LINK.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a file's headings; a repeated heading gets -1, -2, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text, keep_code=True):
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text()
    broken = []
    for n, target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{n}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            broken.append(f"{where} (no heading #{fragment})")
    return broken


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_links_relative_links_resolve(path: Path):
    assert broken_links(path) == []


def test_docs_links_checker_finds_broken_links(tmp_path: Path):
    (tmp_path / "other.md").write_text(
        "# Other\n\n## A `code` heading, twice\n\n## A code heading, twice\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n"
        "[ok](other.md) [ok anchor](other.md#a-code-heading-twice-1) [self](#title)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) ![img](pic.png)\n"
        "`[not a link](nowhere.md)`\n"
        "```\n[also not](nowhere.md)\n```\n"
        "[web](https://example.org/x.md) [mail](mailto:a@b.c)\n"
    )
    assert broken_links(doc, tmp_path) == [
        "doc.md:4: missing.md (no such file)",
        "doc.md:4: other.md#nope (no heading #nope)",
        "doc.md:4: pic.png (no such file)",
    ]
