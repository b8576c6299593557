"""Studies share code through the library, not by copy: no two experiment files hold the same
block of six or more lines (imports and blank lines aside)."""

import itertools
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BLOCK = 6


def _code_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the lines that count: not blank, not part of an import."""
    lines, in_import = [], False
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        starts_import = text.startswith(("import ", "from ")) and not raw[:1].isspace()
        if starts_import or in_import:
            in_import = (starts_import or in_import) and text.endswith(("(", ",", "\\"))
            continue
        if text:
            lines.append((number, text))
    return lines


def shared_blocks(a: list[tuple[int, str]], b: list[tuple[int, str]], size: int = BLOCK) -> list[tuple[int, int]]:
    """Starting line numbers ``(in a, in b)`` of every run of ``size`` consecutive counted lines of
    ``a`` that also occurs, consecutively, in ``b``."""
    where = {}
    for i in range(len(b) - size + 1):
        where.setdefault(tuple(text for _, text in b[i:i + size]), b[i][0])
    return [(a[i][0], where[key]) for i in range(len(a) - size + 1)
            if (key := tuple(text for _, text in a[i:i + size])) in where]


def test_the_block_finder_finds_a_copied_block_and_ignores_imports(tmp_path):
    body = [f"    value_{i} = compute({i})" for i in range(BLOCK)]
    one, two, three = (tmp_path / f"{n}.py" for n in ("one", "two", "three"))
    one.write_text("import os\n\ndef f():\n" + "\n".join(body) + "\n")
    two.write_text("import sys\n\ndef g():\n" + "\n\n".join(body) + "\n")  # blank lines between: still a copy
    three.write_text("def h():\n" + "\n".join(body[:-1]) + "\n    other = 1\n")  # one line short
    assert shared_blocks(_code_lines(one), _code_lines(two)) == [(4, 4)]
    assert shared_blocks(_code_lines(one), _code_lines(three)) == []
    imports = tmp_path / "imports.py"
    imports.write_text("from jaxlearn import (\n    a,\n    b,\n    c,\n    d,\n    e,\n    f,\n)\nimport numpy\n")
    assert _code_lines(imports) == []


FILES = sorted((REPO / "experiments").glob("[!_]*.py"))


@pytest.mark.parametrize("a, b", list(itertools.combinations(FILES, 2)),
                         ids=[f"{a.stem}-{b.stem}" for a, b in itertools.combinations(FILES, 2)])
def test_no_two_experiments_share_a_block(a, b):
    blocks = shared_blocks(_code_lines(a), _code_lines(b))
    assert not blocks, (f"{a.name}:{blocks[0][0]} and {b.name}:{blocks[0][1]} share {BLOCK}+ lines: move them "
                        f"into the library (jaxlearn.runner.study, jaxlearn.train, ...)")
