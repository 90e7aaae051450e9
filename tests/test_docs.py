"""The documentation holds together: every relative link and #anchor in README.md and docs/*.md
resolves, every docs page is reachable from the front page, and the front page stays a front page."""
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FRONT_PAGE_LIMIT = 15 * 1024  # bytes


def without_code(text):
    return re.sub(r"```.*?```", "", text, flags=re.S)


def slug(heading):
    """The anchor a Markdown renderer gives a heading (GitHub's rule for plain text)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", without_code(page.read_text()), re.M)}


def broken_links(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        dest = (page.parent / path) if path else page
        if not dest.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    assert broken_links(page) == []


def test_a_broken_link_is_seen(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [no heading](#nowhere)\n")
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: #nowhere (no such heading)"]


def test_every_docs_page_is_linked_from_the_front_page():
    front = (REPO_ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in front] == []


def test_front_page_is_short_and_starts_with_the_two_commands():
    front = (REPO_ROOT / "README.md").read_text()
    assert len(front.encode()) <= FRONT_PAGE_LIMIT
    first_block = re.search(r"```bash\n(.*?)```", front, re.S).group(1)
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
