"""The one place each kind of text or array file from others is opened and parsed.

A reader of a JSON, YAML or npz file calls ``read_json`` / ``read_yaml`` /
``read_npz`` with the error type of its package (``ConfigError``,
``InputError``, ...) and a phrase for the file ("config file",
"annotation file"). Whatever is wrong with the path (missing, a folder, under
a file, a dangling link, unreadable) or the content (not UTF-8, not the
format, truncated, nested past the parser's depth, numbers too long to
convert) becomes that error, one line naming the file and what was expected;
nothing else escapes. What the parsed content must hold is the caller's to check.
"""
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import yaml

from common.core.errors import one_line

# libyaml's parser: fast, and it stops at a nesting depth limit, where PyYAML's pure-Python scanner
# takes quadratic time on deep flow nesting ("[[[[..." of 100 KB: minutes). Both build only plain data.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Past this many bytes a text file is not a config or an annotation list (the largest, COCO's
# person keypoints of 2017 train, is about 240 MB); refusing it spares reading it into memory.
MAX_TEXT_BYTES = 1 << 30


def require_file(path, what, error, hint=""):
    """``Path(path)`` if it names a readable regular file; else ``error`` saying what it is instead.

    ``hint``: what to do, appended to the message (e.g. "pass an existing YAML file to --config").
    """
    text = str(path)
    path = Path(path)
    hint = f"; {hint}" if hint else ""
    if not text:
        raise error(f"{what}: an empty path was given{hint}")
    if path.is_dir():
        raise error(f"{what} {path} is a folder, expected a file{hint}")
    if path.is_symlink() and not path.exists():
        raise error(f"{what} {path} is a link to {os.readlink(path)}, which does not exist{hint}")
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise error(f"{what} {path} not found: {parent} is a file, not a folder{hint}")
        raise error(f"{what} {path} not found{hint}")
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file (a device, pipe or socket){hint}")
    if not os.access(path, os.R_OK):
        raise error(f"{what} {path} is not readable by this user: change its permissions{hint}")
    return path


def read_text(path, what, error, hint=""):
    """The UTF-8 text of a file (a byte-order mark is allowed); ``error`` if it is none."""
    path = require_file(path, what, error, hint)
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise error(f"{what} {path} is {path.stat().st_size:,} bytes, more than {MAX_TEXT_BYTES:,}: refused{_h(hint)}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exn:
        raise error(f"{what} {path} is not UTF-8 text (byte {exn.start}: {exn.reason}); save it as UTF-8"
                    f"{_h(hint)}") from None
    except OSError as exn:
        raise error(f"cannot read {what} {path} ({exn.strerror or exn}){_h(hint)}") from None


def read_json(path, what, error, hint="", object_pairs_hook=None):
    """The parsed content of a JSON file; ``error`` for a bad path or anything that is not JSON."""
    text = read_text(path, what, error, hint)
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exn:
        problem = f"not valid JSON ({exn.msg} at line {exn.lineno} column {exn.colno})"
    except RecursionError:
        problem = "nested too deeply to parse"
    except ValueError as exn:  # e.g. an integer of more digits than Python converts
        problem = f"not usable JSON ({one_line(exn)})"
    raise error(f"{what} {path} is {problem}{_h(hint)}")


def read_yaml(path, what, error, hint=""):
    """The parsed content of a YAML file (``yaml.safe_load``: plain data, never objects); ``error`` otherwise."""
    text = read_text(path, what, error, hint)
    try:
        return yaml.load(text, Loader=YAML_LOADER)  # noqa: S506 - a safe loader, C or Python
    except yaml.MarkedYAMLError as exn:
        mark = exn.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = f"not valid YAML ({exn.problem or exn.context}{where})"
    except yaml.YAMLError as exn:
        problem = f"not valid YAML ({one_line(exn)})"
    except RecursionError:
        problem = "nested too deeply to parse"
    except ValueError as exn:
        problem = f"not usable YAML ({one_line(exn)})"
    raise error(f"{what} {path} is {problem}{_h(hint)}")


def read_npz(path, what, error, hint="", names=None):
    """{name: array} of an npz archive, read without pickle (object arrays are refused).

    ``names``: the arrays to read (None: all); the others are never decompressed.
    """
    path = require_file(path, what, error, hint)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an npz archive")
        with loaded as npz:
            wanted = npz.files if names is None else [n for n in names if n in npz.files]
            return {name: npz[name] for name in wanted}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, RecursionError, MemoryError) as exn:
        problem = f"not a readable npz archive ({type(exn).__name__}: {one_line(exn)})"
    raise error(f"cannot read {what} {path}: {problem}{_h(hint)}")


def _h(hint):
    return f"; {hint}" if hint else ""
