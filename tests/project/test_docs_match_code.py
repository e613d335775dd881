"""Code blocks in docs/derivations that say they are the code are the code.

A block marked ``<!-- the code: path/to/file.py ... -->`` on the line before its fence must appear in
that file verbatim, as consecutive lines (indentation aside). Any other code block must not be
introduced as "the code": then it is an illustration, and the text says so.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs" / "derivations").glob("*.md"))
MARKER = re.compile(r"<!--\s*the code:\s*(\S+)")


def code_blocks(page):
    """[(line number, the text before the block, marked file or None, the block's lines)]."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```") and lines[i].strip() != "```":  # an opening fence with a language
            start = i
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            before = [ln for ln in lines[max(0, start - 4):start] if ln.strip()]
            marked = MARKER.search(before[-1]) if before else None
            blocks.append((start + 1, "\n".join(before), marked.group(1) if marked else None, lines[start + 1:i]))
        i += 1
    return blocks


def test_every_page_is_checked_and_a_marked_block_exists():
    assert PAGES and any(marked for page in PAGES for _, _, marked, _ in code_blocks(page))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_that_claim_to_be_the_code_are_the_code(page):
    for line, before, marked, block in code_blocks(page):
        where = f"{page.name}:{line}"
        if marked is None:
            assert "the code" not in before.lower(), f"{where}: introduced as the code but not marked and checked"
            continue
        source = [ln.strip() for ln in (ROOT / marked).read_text().splitlines()]
        wanted = [ln.strip() for ln in block if ln.strip()]
        found = any(source[k:k + len(wanted)] == wanted for k in range(len(source) - len(wanted) + 1))
        assert found, f"{where}: this block is not in {marked} as written:\n" + "\n".join(wanted)


def test_the_conv_page_shows_the_slice_of_the_code():
    """conv.md spells out col2im's slice; it must be the one in scratchgan/nn/conv.py (which stops after the
    last patch, so that it fits when (H + 2p - k) % s != 0)."""
    page = (ROOT / "docs" / "derivations" / "conv.md").read_text()
    code = (ROOT / "scratchgan" / "nn" / "conv.py").read_text()
    assert "x_pad[:, i:i + s*(H_out - 1) + 1:s, j:j + s*(W_out - 1) + 1:s]" in page
    assert "x_pad[:, i:i + sH * (H_out - 1) + 1:sH, j:j + sW * (W_out - 1) + 1:sW, :]" in code
    assert "i::s" not in page.replace("`x_pad[:, i::s]` would", "") and "i::sH" not in code


USER_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in targets if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_the_link_check_sees_links():
    """The pattern finds the README's links to the guides (else the test above could not fail)."""
    targets = LINK.findall((ROOT / "README.md").read_text())
    assert "docs/faults.md" in targets and "docs/derivations/README.md" in targets


@pytest.mark.parametrize("page", [*USER_PAGES, ROOT / "benchmarks" / "RESULTS.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_user_facing_text_speaks_of_the_code_not_of_its_making(page):
    """No issue numbers, no paths outside the repository, no talk of who had which machine."""
    words = re.compile(r"\(issue [0-9]+\)|issue [0-9]+ |\.\./shared/|this project's (machine|development)|lent to this"
                       r"|this session|No GPU was")
    found = [line for line in page.read_text().splitlines() if words.search(line)]
    assert not found, f"{page.relative_to(ROOT)}:\n" + "\n".join(found)
