"""Reading the Markdown of the README and docs/: fenced code blocks, relative links, heading anchors.

Shared by the link check (tests/docs/test_links.py) and the examples runner
(tests/docs/test_examples.py). A fenced block preceded by the line ``<!-- docs-test: skip REASON -->``
is listed with that reason and not run; the reason is required.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import unicodedata

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s+(\S.*?)\s*-->\s*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    path: pathlib.Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason given in a docs-test skip comment, or None

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"


def markdown_files() -> list[pathlib.Path]:
    """README.md and every Markdown file under docs/ (sorted)."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def code_blocks(path: pathlib.Path) -> list[Block]:
    """The fenced code blocks of ``path``, in order, with their language tag (``""`` when none)."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        skip = _SKIP.match(lines[i - 1]) if i else None
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        blocks.append(Block(path, i + 1, lang, "\n".join(body) + "\n", skip.group(1) if skip else None))
        i = j + 1
    return blocks


def prose_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of the lines outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            out.append((n, line))
    return out


def links(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line, target)`` of the Markdown links and images outside code blocks and inline code."""
    found = []
    for n, line in prose_lines(path):
        line = re.sub(r"``[^`]*``|`[^`]*`", "", line)
        for m in _LINK.finditer(line):
            found.append((n, m.group(1) or m.group(2)))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub (and the site: pymdownx.slugs with ``case: lower``) gives a heading: lower case,
    Markdown code marks and punctuation dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = unicodedata.normalize("NFC", text.replace("`", "")).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """The heading anchors of a Markdown file; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    for _, line in prose_lines(path):
        m = _HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)
