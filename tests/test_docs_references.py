"""Every name the documentation gives resolves in the code: imports, dotted names, config keys,
signatures, repository paths, the released layout, and the doc pages that help texts point to.
Reference pages say what is, not its history (that is CHANGELOG.md)."""
import ast
import dataclasses
import importlib
import inspect
import re
import subprocess

import pytest
from doc_helpers import PAGES, REPO_ROOT, blocks, inline_code, prose

from common.core import layout
from common.pipeline.config import Config

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
# A reference page that says this reads as a changelog; the history belongs in CHANGELOG.md.
HISTORY = ("today's", "since then", "before these additions", "before this change", "session", "predates",
           "no longer", "used to ")


def _code_and_python():
    """(page, text) of every inline code span and every Python block."""
    for page in PAGES:
        for span in inline_code(page):
            yield page, span
        for block in blocks(page):
            if block.language == "python":
                yield page, block.text


def _resolve(dotted):
    """The object a dotted name names (longest importable module, then attributes), or raise."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def _classes():
    """{class name: module} of every class defined in common/ (names defined once only)."""
    found = {}
    for path in (REPO_ROOT / "common").rglob("*.py"):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                found[node.name] = None if node.name in found else module
    return {name: module for name, module in found.items() if module}


def test_imports_resolve():
    wrong = []
    for page, text in _code_and_python():
        for module, names in re.findall(r"from ((?:common|benchmarks)[\w.]*) import ([\w, ]+)", text):
            for name in filter(None, (n.strip() for n in names.split(","))):
                try:
                    _resolve(f"{module}.{name}")
                except (ImportError, AttributeError):
                    wrong.append(f"{page.name}: from {module} import {name}")
    assert wrong == []


def test_dotted_names_resolve():
    """``common.x.y``, ``common.x.Name.attr`` and ``Name.attr`` (a class of common/) in code spans."""
    classes, wrong = _classes(), []
    for page, text in _code_and_python():
        for dotted in re.findall(r"(?<![\w/.])(common(?:\.\w+)+)", text):
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                wrong.append(f"{page.name}: {dotted}")
        for name, attribute in re.findall(r"(?<![\w.])([A-Z]\w+)\.([a-z_]\w*)\(", text):
            if name in classes and not hasattr(_resolve(f"{classes[name]}.{name}"), attribute):
                wrong.append(f"{page.name}: {name}.{attribute}")
    assert wrong == []


def _config_key(key):
    section, _, name = key.partition(".")
    return section in SECTIONS and dataclasses.is_dataclass(SECTIONS[section]) and \
        name in {f.name for f in dataclasses.fields(SECTIONS[section])}


def test_config_keys_exist():
    """``train.lr``, ``evaluation.sampler: ...``; keys of the original's format must be ones its reader knows."""
    original = (REPO_ROOT / "common" / "pipeline" / "original_config.py").read_text()
    wrong = []
    for page in PAGES:
        for span in inline_code(page):
            match = re.fullmatch(r"((?:data|model|weights|train|evaluation|val)\.[a-z_]+(?:\.[a-z_{}, ]+)?)(?:[:=].*)?", span)
            if not match:
                continue
            key = match.group(1).strip()
            if not _config_key(key) and not all(part in original for k in _expand(key) for part in k.split(".")):
                wrong.append(f"{page.name}: {key}")
    assert wrong == []


def _expand(key):
    """``model.poseformer.{a, b}`` -> the keys it names."""
    head, _, rest = key.partition("{")
    return [head + k.strip() for k in rest.rstrip("}").split(",")] if rest else [key]


def _signatures():
    """(page, name, parameter names) of code spans like ``name(a, b=1, c=None)`` with no ``...``."""
    found = []
    for page in PAGES:
        for span in inline_code(page):
            match = re.fullmatch(r"([\w.]+)\((.*)\)(?:\s*->.*)?", span)
            if not match or "..." in span or "=" not in match.group(2):
                continue
            items = re.split(r",\s*(?![^()]*\))", re.sub(r"\([^()]*\)", "", match.group(2)))
            names = [item.split("=")[0].strip() for item in items if item.strip()]
            if all(re.fullmatch(r"\*{0,2}[a-z_]\w*", n) for n in names) and \
                    any("=" in i and not re.fullmatch(r"\s*[a-z_]\w*=[a-z_]\w*\s*", i) for i in items):
                found.append((page.name, match.group(1), names))
    return found


def test_signatures_listed_whole_match_the_code():
    """A signature in the docs without ``...`` lists every parameter, in order (``...`` marks a partial list)."""
    classes, wrong = _classes(), []
    for page, name, names in _signatures():
        head = name.split(".")[0]
        dotted = name if name.startswith("common.") else (
            f"{classes[head]}.{name}" if head in classes else None)
        if dotted is None:
            continue
        obj = _resolve(dotted)
        real = [p.name if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) else
                ("**" if p.kind == p.VAR_KEYWORD else "*") + p.name
                for p in inspect.signature(obj).parameters.values() if p.name != "self"]
        if names[0] != real[0]:
            continue  # a call with keywords (``f(x=1)``), not a signature
        if names != real:
            wrong.append(f"{page}: {name}({', '.join(names)}) but the code has ({', '.join(real)})")
    assert wrong == []


def test_repository_paths_exist():
    wrong = []
    for page in PAGES:
        for span in inline_code(page):
            for path in re.findall(r"^((?:common|config|tests|benchmarks|docs)/[\w./-]+)", span):
                if not (REPO_ROOT / path.rstrip("/")).exists() and subprocess.run(
                        ["git", "check-ignore", "-q", path], cwd=REPO_ROOT).returncode != 0:
                    wrong.append(f"{page.name}: {path}")
    assert wrong == []


def test_released_paths_are_the_layout():
    """Every ``checkpoint/...`` file a page names is a place of the released layout (or an accepted older one)."""
    known = {*layout.released_files(), layout.ORIGINAL_BACKBONE_WEIGHTS,
             *[p for others in layout.OTHER_PLACES.values() for p in others]}
    wrong = []
    for page in PAGES:
        text = prose(page) + "\n".join(b.text for b in blocks(page))
        for path in re.findall(r"(?<![\w/])(checkpoint/[\w./-]+\.(?:bin|pth))", text):
            if path not in known:
                wrong.append(f"{page.name}: {path}")
    assert wrong == []


def test_the_layout_blocks_list_the_layout():
    for page in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "data.md"):
        block = next(b.text for b in blocks(page) if b.text.startswith("webdataset/"))
        assert [p for p in layout.released_files() if p not in block] == [], page.name


def test_help_texts_point_at_existing_pages_and_headings():
    from doc_helpers import REPO_ROOT as root
    from test_docs import anchors, slug
    wrong = []
    for path in [*root.glob("common/**/*.py"), *root.glob("benchmarks/*.py"), *root.glob("main_*.py")]:
        text = path.read_text()
        if re.search(r"README[,:]? ['\"]?[A-Z]", text):
            wrong += [f"{path.name}: {m}" for m in re.findall(r"README[,:]? ['\"]?[A-Z][\w ]+", text)]
        for page, heading in re.findall(r"docs/(\w+\.md),? '?([A-Z][\w ]+)?", text):
            target = root / "docs" / page
            if not target.exists() or (heading and slug(heading.strip()) not in anchors(target)):
                wrong.append(f"{path.name}: docs/{page} {heading}")
    assert wrong == []


@pytest.mark.parametrize("page", [p for p in PAGES if p.parent.name == "docs"], ids=lambda p: p.name)
def test_reference_pages_say_what_is(page):
    text = prose(page).lower()
    assert [word for word in HISTORY if word in text] == []
