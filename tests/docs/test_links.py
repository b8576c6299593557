"""Relative links in the README and docs/ resolve: the file exists (inside the repository) and a
``#anchor`` names a heading of the Markdown file it points to. External (``http``) links are not
fetched (CI has no network)."""

import pathlib

import pytest

from tests.docs.markdown import ROOT, anchors, links, markdown_files

# Pages another branch adds, linked before they land: accepted while absent, checked once present.
PENDING = {
    ROOT / "docs" / "neural_tangents.md": "jaxlearn.compat.neural_tangents's porting page (merged separately)",
}


def broken_links(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """One line per broken relative link of the Markdown file ``path`` (inside ``root``)."""
    problems = []
    for line, target in links(path):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{line}: {target}"
        if root not in dest.parents and dest != root:
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            if dest not in PENDING:
                problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where} (no heading with anchor #{anchor} in {dest.relative_to(root)})")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_check_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Title\n\n[ok](#title) [ok](../other.md#a-code-heading) [gone](missing.md)\n"
                    "[bad anchor](#nope) [outside](../../x.md) `[code](x.md)`\n\n```\n[block](y.md)\n```\n",
                    encoding="utf-8")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3, problems
    assert "missing.md" in problems[0] and "#nope" in problems[1] and "leaves the repository" in problems[2]
