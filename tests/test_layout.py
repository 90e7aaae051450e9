"""The package plan of ``common/`` holds: imports point only downward, and no module imports itself back.

The allowed edges are the ones ``common/__init__.py`` and each package's
docstring state; a new import that breaks them fails here, with the line.
"""
import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON = REPO_ROOT / "common"

# package -> the packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "synthetic": {"core", "data"},
    "model": {"core"},
    "analysis": {"core", "data"},
    "pipeline": {"core", "data", "model"},
    "run": {"core", "data", "model", "analysis", "pipeline"},
    "infer": {"core", "data", "model", "analysis", "pipeline"},
}


def module_name(path, root=COMMON):
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path, known):
    """The ``common`` modules a file imports, with line numbers; ``from common.x import y`` names y if it is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("common")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("common"):
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name if name in known else node.module, node.lineno) for name in submodules]
    return found


def module_level_imports(path, known):
    """Like ``imported_modules`` but only the imports that run when the module is imported."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("common")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("common"):
            found += [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names]
    return found


def find_modules(root=COMMON):
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_violations(modules):
    wrong = []
    for name, path in modules.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ALLOWED:
            continue  # common itself and the top-level commands may import anything
        for target, line in imported_modules(path, modules):
            segments = target.split(".")
            if len(segments) >= 2 and segments[1] != parts[1] and segments[1] not in ALLOWED[parts[1]]:
                wrong.append(f"{name}:{line} imports {target}")
    return wrong


@pytest.fixture(scope="module")
def modules():
    return find_modules()


def test_every_package_has_a_docstring_saying_what_it_may_import(modules):
    for package in ALLOWED:
        doc = ast.get_docstring(ast.parse((COMMON / package / "__init__.py").read_text()))
        assert doc and "import" in doc, f"common/{package}/__init__.py should say what lives there and what it may import"


def test_imports_point_only_downward(modules):
    wrong = layer_violations(modules)
    assert not wrong, "imports against the package plan:\n" + "\n".join(wrong)


def test_no_import_cycle(modules):
    graph = {name: {t for t in module_level_imports(path, modules) if t in modules and t != name}
             for name, path in modules.items()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_infer_stands_beside_run_not_on_it(tmp_path):
    """Inference reaches the model through the pipeline: an import of ``common.run`` in ``infer`` is reported."""
    assert "run" not in ALLOWED["infer"]
    root = tmp_path / "common"
    (root / "infer").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "run" / "evaluation.py").write_text("")
    (root / "infer" / "lifting.py").write_text("from common.run.evaluation import evaluate\n")
    assert layer_violations(find_modules(root)) == ["common.infer.lifting:1 imports common.run.evaluation"]


def test_importing_infer_loads_neither_run_nor_a_plotting_library():
    """``from common.infer import lift`` stays light: no training or process-group code, no matplotlib until a figure."""
    code = ("import sys; from common.infer import lift; "
            "print(' '.join(m for m in sys.modules if m.startswith(('common.run', 'matplotlib', 'diffusers'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert loaded.stdout.split() == [], f"importing common.infer loaded: {loaded.stdout.strip()}"


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The check above can fail: an upward import (model -> run) is reported, a downward one is not."""
    root = tmp_path / "common"
    (root / "model").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "model" / "bad.py").write_text("from common.pipeline.config import Config\n")
    (root / "run" / "good.py").write_text("from common.model import bad\n")
    assert layer_violations(find_modules(root)) == ["common.model.bad:1 imports common.pipeline.config"]


# Modules of the flat layout before the subpackages, and those split since; nothing may import them.
OLD_MODULES = ("common.data", "common.models", "common.training", "common.evaluation", "common.config",
               "common.original_config", "common.synthetic", "common.visualization", "common.sample_count",
               "common.infer", "common.inference_inputs", "common.inference_figures", "common.keypoints",
               "common.reliability", "common.metrics", "common.backbone", "common.context", "common.denoiser",
               "common.diffusion", "common.samplers", "common.acceleration", "common.checkpoints",
               "common.runlock", "common.distributed", "common.context_cache", "common.splits", "common.geometry",
               "common.skeleton", "common.safe_pickle", "common.body_model", "common.render", "common.cli",
               "common.data.shards")
# Packages now; importing them (not a module of the old name) is right.
PACKAGES_NOW = {"common.data", "common.synthetic", "common.infer"}


def test_nothing_imports_a_module_by_its_old_path():
    pattern = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w, ()]+)|import\s+([\w.]+))", re.M)
    found = []
    for path in [*REPO_ROOT.glob("*.py"), *REPO_ROOT.glob("common/**/*.py"), *REPO_ROOT.glob("benchmarks/*.py"),
                 *REPO_ROOT.glob("tests/**/*.py"), *REPO_ROOT.glob("docs/*.md"), REPO_ROOT / "README.md"]:
        for match in pattern.finditer(path.read_text()):
            module = match.group(1) or match.group(3)
            if module in OLD_MODULES and module not in PACKAGES_NOW:
                found.append(f"{path.relative_to(REPO_ROOT)}: {match.group(0).strip()}")
    assert not found, "imports of old module paths:\n" + "\n".join(found)
    for old in set(OLD_MODULES) - PACKAGES_NOW:
        assert importlib.util.find_spec(old) is None, f"{old} still exists"
