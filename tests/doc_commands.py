"""Running a documented command without its heavy work: up to the point where it would start.

A ``python -m NAME`` or ``python SCRIPT`` command runs in this process with its
own ``sys.argv``. By default it stops right after its arguments parsed (so every
module, script and flag is checked). The entry scripts and ``common.infer`` go
further, in a folder seeded with placeholder files in the released layout
(``seed_layout``): they stop where training, evaluation or inference would
begin, after the configuration loaded and the files they name were looked up,
so a wrong path, folder or default fails here as it would on a real machine.
A released file found only at another known place (the note of
``common.core.layout.find_released``) is reported too: the docs name the layout.
"""
import contextlib
import importlib.util
import io
import logging
import re
import runpy
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from doc_helpers import PYTHONS, REPO_ROOT, words

from common.core import layout

# commands that run on to the seeded layout instead of stopping after their flags
DEEP = ("main_diffusers_h36m.py", "main_diffusers_mpi.py", "common.infer",
        "common.run.cli:h36m", "common.run.cli:mpi", "common.infer.cli:main")
PLACEHOLDER_FOLDERS = ("WDS_PATH",)
TIME_CAP_S = 60
# what the documented runs write, which later documented commands read (resume, the demo's model)
RUN_OUTPUTS = ("checkpoint/human36m/latest_epoch.bin", "checkpoint/mpi-inf-3dhpe/latest_epoch.bin",
               "demo_output/checkpoint/best_h36m.bin", "demo_output/inference/keypoints.json")  # the original README's name for the shard folder


class Reached(BaseException):
    """The command got as far as a dry run goes (a BaseException, so no ``except Exception`` catches it)."""


def seed_layout(root):
    """A folder with the repository's files linked in and placeholder files in the released layout."""
    root = Path(root)
    for entry in REPO_ROOT.iterdir():
        if entry.name not in ("checkpoint", "webdataset", ".git", ".venv") and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    for name in (*layout.released_files(), *RUN_OUTPUTS):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"placeholder")
    (root / "demo_output/inference/images").mkdir(parents=True, exist_ok=True)
    for dataset, data_root in layout.DATA_ROOTS.items():
        for base in (data_root, *PLACEHOLDER_FOLDERS):
            for split in layout.SPLIT_FOLDERS[dataset]:
                (root / base / split).mkdir(parents=True, exist_ok=True)
    return root


def console_scripts():
    """{name: "module:function"} of pyproject.toml's [project.scripts]."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as stream:
        return tomllib.load(stream).get("project", {}).get("scripts", {})


def _missing(paths):
    return [str(p) for p in paths if p and not Path(p).exists()]


def _stop_training_or_evaluation(cfg, *args, **kwargs):
    """Stand-in of ``train`` and ``evaluate``: the files the run would read must be there."""
    missing = _missing([cfg.data.root, cfg.context_weights if cfg.weights.pretrained_context else None])
    if cfg.weights.pretrained_backbone and not any(Path(p).exists() for p in cfg.backbone_weights):
        missing.append(" or ".join(cfg.backbone_weights))
    if args and not Path(args[0]).is_file():
        missing.append(str(args[0]))
    raise Reached(f"missing: {', '.join(missing)}" if missing else "")


def _stop_inference(args):
    """Stand-in of ``common.infer.cli.run``: the checkpoint (and backbone file, if named) must be there."""
    missing = _missing([args.checkpoint, args.backbone_weights])
    raise Reached(f"missing: {', '.join(missing)}" if missing else "")


def _stop_after_parsing(monkeypatch, partial):
    import argparse
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        if partial:  # a command quoted in prose may leave out what it requires, never have a wrong flag
            for parser in (self, *[p for a in self._actions if a.choices and isinstance(a.choices, dict)
                                   for p in a.choices.values()]):
                for action in parser._actions:
                    action.required = False
                    action.nargs = "?" if action.nargs is None and not action.option_strings else action.nargs
        parse(self, args, namespace)
        raise Reached("")
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)


def _target(argv):
    """(kind, name, arguments) of a command: kind "module", "script", "entry" or "other"."""
    if argv[0] == "torchrun":
        rest = argv[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:] if "=" in rest[0] else rest[2:]
        return "script", rest[0], rest[1:]
    if argv[0] in PYTHONS and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2:
            return "module", argv[2], argv[3:]
        return "script", argv[1], argv[2:]
    if argv[0] in console_scripts():
        return "entry", console_scripts()[argv[0]], argv[1:]
    return "other", argv[0], argv[1:]


def dry_run(command, cwd, deep=True, partial=False):
    """Run ``command`` as far as a dry run goes, in ``cwd``; returns a problem as text, or "" if none.

    ``partial``: the command may leave out required arguments (a command quoted in prose).
    """
    argv = words(command)
    kind, name, arguments = _target(argv)
    if kind == "other":
        return other_program(argv)
    if kind == "module" and (importlib.util.find_spec(name) is None or
                             (importlib.util.find_spec(name).submodule_search_locations is not None
                              and importlib.util.find_spec(name + ".__main__") is None)):
        return f"python -m {name}: no such runnable module"
    if kind == "module" and name == "pytest":
        return pytest_arguments(arguments)
    if kind == "script" and not (Path(cwd) / name).is_file():
        return f"{name}: no such script"
    deep = deep and name in DEEP
    notes, stderr = [], io.StringIO()
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())
    handler.setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stderr(stderr), \
            contextlib.redirect_stdout(io.StringIO()):
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [name, *arguments])
        logging.getLogger("snappose").addHandler(handler)
        if deep:
            import common.infer.cli
            import common.run.evaluation
            import common.run.training
            monkeypatch.setattr(common.run.evaluation, "evaluate", _stop_training_or_evaluation)
            monkeypatch.setattr(common.run.training, "train", _stop_training_or_evaluation)
            monkeypatch.setattr(common.infer.cli, "run", _stop_inference)
        else:
            _stop_after_parsing(monkeypatch, partial)
        signal.signal(signal.SIGALRM, _too_long)
        signal.alarm(TIME_CAP_S)
        try:
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            elif kind == "script":
                runpy.run_path(str(Path(cwd) / name), run_name="__main__")
            else:
                module, function = name.split(":")
                sys.exit(getattr(importlib.import_module(module), function)())
        except Reached as reached:
            problem = str(reached)
        except SystemExit as exit:
            problem = "" if exit.code in (0, None) else f"exit {exit.code}: {stderr.getvalue().strip()[-600:]}"
        finally:
            signal.alarm(0)
            logging.getLogger("snappose").removeHandler(handler)
    moved = [note for note in notes if "the released layout expects" in note]
    return "; ".join(filter(None, [problem, *moved]))


def _too_long(signum, frame):
    raise Reached(f"did not stop within {TIME_CAP_S} s: does it parse its arguments with argparse first?")


def pytest_arguments(arguments):
    """``python -m pytest`` is not run (it would run the suite): its markers and paths must exist."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as stream:
        declared = {m.split(":")[0] for m in tomllib.load(stream)["tool"]["pytest"]["ini_options"]["markers"]}
    problems = []
    for i, word in enumerate(arguments):
        if word == "-m":
            problems += [f"marker {m}: not declared" for m in re.findall(r"\w+", arguments[i + 1])
                         if m not in declared | {"not", "and", "or"}]
        elif not word.startswith("-") and (i == 0 or arguments[i - 1] != "-m"):
            problems += [] if (REPO_ROOT / word.split("::")[0]).exists() else [f"{word}: no such test path"]
    return "; ".join(problems)


def _pinned(requirement):
    """Whether NAME==VERSION is pinned in a requirements file or pyproject.toml."""
    sources = [REPO_ROOT / "pyproject.toml", *REPO_ROOT.glob("requirements*.txt")]
    return any(requirement.lower() in path.read_text().lower() for path in sources)


def other_program(argv):
    """Checks for commands that are not Python: make targets, bash scripts, pip and the like."""
    program, arguments = argv[0], argv[1:]
    if program == "make":
        targets = {line.split(":")[0] for line in (REPO_ROOT / "Makefile").read_text().splitlines()
                   if line and not line[0].isspace() and ":" in line}
        return "; ".join(f"make {t}: no such target" for t in arguments if "=" not in t and t not in targets)
    if program == "bash":
        script = REPO_ROOT / arguments[0]
        if not script.is_file():
            return f"bash {arguments[0]}: no such script"
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        return check.stderr.strip()
    if program.endswith("pip"):
        problems = []
        for i, word in enumerate(arguments):
            if word in ("-r", "-f") and not (REPO_ROOT / arguments[i + 1]).is_file():
                problems.append(f"{arguments[i + 1]}: no such file")
            elif "==" in word and not _pinned(word.strip("'\"")):
                problems.append(f"{word}: not the version the project pins")
            elif word.startswith(".") and "[project]" not in (REPO_ROOT / "pyproject.toml").read_text():
                problems.append("pip install .: pyproject.toml has no [project] table")
            elif word.startswith(".[") and not all(
                    extra in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
                    .get("optional-dependencies", {}) for extra in word[2:].rstrip("]").split(",")):
                problems.append(f"{word}: no such extra")
        return "; ".join(problems)
    if program == "tensorboard":
        return "" if importlib.util.find_spec("tensorboard") else "tensorboard is not installed"
    return f"{program}: not a command of this project; mark the block <!-- docs-test: skip: REASON -->"
