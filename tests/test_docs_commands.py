"""Every command the documentation shows runs as written: the fenced shell commands of README.md,
docs/ and checkpoint/README.md, the commands named in prose, and the commands under every table
of measured numbers (``doc_commands.dry_run``; the markers: ``doc_helpers``)."""
import re

import pytest
from doc_commands import dry_run, seed_layout
from doc_helpers import MARKERS, PAGES, commands, has_numbers, inline_code, is_command, shell_blocks, tables


def _block_commands():
    found = []
    for page in PAGES:
        for block in shell_blocks(page):
            if block.marker != "skip":
                found += [(f"{page.name}:{block.line}", line, block.marker != "flags-only")
                          for line in commands(block.text)]
    return found


def _prose_commands():
    """Commands in inline code: checked for module and flags (prose often abbreviates paths)."""
    found = []
    for page in PAGES:
        for span in inline_code(page):
            if is_command(span) and span.split()[0] not in ("make", "bash", "pip", "tensorboard", "torchrun") \
                    and not re.search(r"[\[\]|<>]", span):
                found.append((page.name, span, False))
    return found


def _table_commands():
    return [(f"{t.page.name}:{t.line}", c, False) for page in PAGES for t in tables(page) for c in t.commands]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seed_layout(tmp_path_factory.mktemp("released_layout"))


@pytest.mark.parametrize("where, command, deep", _block_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_fenced_command_runs_as_written(seeded, where, command, deep):
    assert dry_run(command, seeded, deep) == ""


@pytest.mark.parametrize("where, command, deep", _prose_commands() + _table_commands(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_command_named_in_the_text_exists_with_its_flags(seeded, where, command, deep):
    assert dry_run(command, seeded, deep, partial=True) == ""


def test_every_table_of_numbers_names_the_command_that_made_them():
    unnamed = [f"{t.page.name}:{t.line}" for page in PAGES for t in tables(page)
               if has_numbers(t) and t.marker != "definitions" and not t.commands]
    assert unnamed == []


def test_markers_are_known():
    text = "\n".join(page.read_text() for page in PAGES)
    used = set(re.findall(r"<!-- docs-test: ([a-z-]+)", text))
    assert used <= set(MARKERS)


@pytest.mark.parametrize("command, problem", [
    ("python main_diffusers_h36m.py --config config/human36m_train.yaml -c checkpoint/human36m --evaluate best_h36m.bin "
     "--proposals 20", "unrecognized arguments: --proposals"),
    ("python main_diffusers_mpi.py --config config/mpi_train.yaml -c checkpoint/elsewhere --evaluate best_mpi.bin",
     "no such file"),
    ("python main_diffusers_mpi.py --config config/mpi_train.yaml -w webdataset/mpi --evaluate best_mpi.bin",
     "missing: webdataset/mpi"),
    ("python -m common.infer photo.jpg --checkpoint checkpoint/best_h36m.bin",
     "the released layout expects checkpoint/human36m/best_h36m.bin"),
    ("python -m common.infer photo.jpg --checkpoint runs/best_h36m.bin", "missing: runs/best_h36m.bin"),
    ("python -m common.nothing --help", "no such runnable module"),
    ("python -m common.convert h36m --labels a.pkl --images i --out o --subjects S9 X", "not a subject"),
    ("make nothing", "no such target"),
    ("python -m benchmarks.accuracy --config c.yaml --weights w.bin --sampler-list dpm++", "unrecognized arguments: --sampler-list"),
    ("pip install av==0.1", "not the version the project pins"),
    ("conda env create -f environment.yml", "not a command of this project"),
])
def test_a_wrong_command_is_seen(seeded, command, problem):
    assert problem in dry_run(command, seeded)
