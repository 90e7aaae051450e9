"""Reading the documentation as a test sees it: fenced blocks, inline code, tables and the
``<!-- docs-test: ... -->`` markers (docs/development.md, "Documentation that is tested").

A marker is an HTML comment on its own line right before a fenced block or a table:

- ``<!-- docs-test: flags-only -->``: the block's commands are checked for their
  module or script and flags only, not run against the seeded released layout
  (for commands on files that only a run makes, such as the demo's outputs);
- ``<!-- docs-test: skip: REASON -->``: the block is not checked (tools outside
  this project: conda, ffmpeg, a CUDA build of torch);
- ``<!-- docs-test: definitions -->``: a table of definitions (joint indices,
  field shapes, settings), whose numbers no command measured.
"""
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "checkpoint" / "README.md"]
MARKER = re.compile(r"^<!-- docs-test: ([a-z-]+)(?::\s*(.*?))? -->$")
MARKERS = ("flags-only", "skip", "definitions")
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
# Programs a fenced shell command may start with; anything else needs a skip marker.
PYTHONS = ("python", "python3", "python3.11", ".venv/bin/python")
PROGRAMS = (*PYTHONS, "make", "bash", "torchrun", "pip", ".venv/bin/pip", "tensorboard", "snappose-")


@dataclass
class Block:
    """A fenced code block: its page, first line number, language, text and the marker before it."""
    page: Path
    line: int
    language: str
    text: str
    marker: str = ""
    reason: str = ""


@dataclass
class Table:
    """A Markdown table: its page, first line, rows (cells), the marker before it and the paragraph under it."""
    page: Path
    line: int
    rows: list
    marker: str = ""
    under: str = ""
    commands: list = field(default_factory=list)


def _marker_before(lines, index):
    """The marker on the last non-blank line before ``lines[index]``, as (name, reason), else ("", "")."""
    j = index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = MARKER.match(lines[j].strip()) if j >= 0 else None
    return (match.group(1), match.group(2) or "") if match else ("", "")


def blocks(page):
    """Every fenced block of ``page``."""
    lines, found, i = page.read_text().splitlines(), [], 0
    while i < len(lines):
        opening = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        marker, reason = _marker_before(lines, i)
        found.append(Block(page, i + 1, opening.group(1), "\n".join(line.strip() for line in lines[i + 1:end]),
                           marker, reason))
        i = end + 1
    return found


def prose(page):
    """The text of ``page`` without its fenced blocks and markers."""
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(), flags=re.S | re.M)
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def inline_code(page):
    """Every inline code span outside fenced blocks, newlines inside a span joined."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(page))]


def commands(text):
    """The shell commands of a block: comments dropped, continuation lines joined, one string each."""
    joined = re.sub(r"\\\s*\n", " ", text.rstrip().rstrip("\\"))
    found = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            found.append(line)
    return found


def is_command(line):
    words = line.split()
    return bool(words) and (words[0] in PROGRAMS or words[0].startswith("snappose-"))


def shell_blocks(page):
    """Blocks that hold shell commands: bash/sh/shell/console, or unlabelled ones that start with a command."""
    found = []
    for block in blocks(page):
        lines = commands(block.text)
        if block.language in SHELL_LANGUAGES or (not block.language and lines and is_command(lines[0])):
            found.append(block)
    return found


def tables(page):
    """Every table of ``page`` with the marker before it and the paragraph right under it."""
    lines = page.read_text().splitlines()
    in_code, found, i = False, [], 0
    while i < len(lines):
        if lines[i].strip().startswith("```"):
            in_code = not in_code
        if in_code or not lines[i].startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[start:i]]
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        under = []
        while j < len(lines) and lines[j].strip() and not lines[j].startswith(("|", "#", "```")):
            under.append(lines[j])
            j += 1
        marker, _ = _marker_before(lines, start)
        under = " ".join(under)
        table = Table(page, start + 1, [rows[0], *rows[2:]], marker, under)
        table.commands = [c for c in re.findall(r"`([^`]+)`", " ".join(" ".join(r) for r in table.rows) + " " + under)
                          if is_command(" ".join(c.split()))] + _block_right_above(lines, start)
        found.append(table)
    return found


def _block_right_above(lines, start):
    """The commands of a fenced shell block that ends right above line ``start`` (blank lines between)."""
    j = start - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or lines[j].strip() != "```":
        return []
    opening = max(i for i in range(j) if lines[i].strip().startswith("```"))
    return [c for c in commands("\n".join(line.strip() for line in lines[opening + 1:j])) if is_command(c)]


def has_numbers(table):
    """Whether a body cell holds a number (digits outside code spans)."""
    return any(re.search(r"\d", re.sub(r"`[^`]*`", "", cell)) for row in table.rows[1:] for cell in row)


def words(command):
    """shlex words of a command, with ``...`` (an elided rest) dropped."""
    return [w for w in shlex.split(command) if w != "..."]
