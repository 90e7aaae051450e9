"""Hypothesis strategies that turn a valid file into a hostile one, from its structure.

Two levels, as structure-aware fuzzers of file readers work:

- ``mutated_tree(valid)``: the parsed content (dicts, lists, numbers, strings,
  numpy arrays) with one to three edits: a value of another type (None, bool,
  string, list, dict, huge, tiny, negative, NaN, infinite numbers, very long
  strings, very deep nesting), a key removed, a value wrapped in a list, a list
  emptied or repeated, an array reshaped, cast to strings or filled with NaN.
- ``mutated_bytes(valid)``: the serialized file truncated at any byte, bytes
  flipped, inserted or repeated, a text file re-encoded (UTF-16, Latin-1 with
  non-ASCII characters, a byte-order mark) or replaced by very deep nesting.

The readers are then given the result; see ``harness.check_run`` for what must hold.
"""
import copy

import numpy as np
from hypothesis import strategies as st

DEEP = 100_000  # nesting far past the interpreter's recursion limit

REPLACEMENTS = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 2**31, 2**63, -(2**63), 10**400, 1e308, -1e308, 5e-324,
                     float("nan"), float("inf"), float("-inf"), "", "1", "nan", "x" * 10_000, "ü é 中", [], {},
                     [1, 2, 3], {"a": 1}, [[]] * 3, "../../outside", "-c", "--help"]),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.lists(st.floats(allow_nan=True), max_size=20),
)


class Deep:
    """Stands for a list or dict nested 2000 deep until ``materialize`` builds it (hypothesis prints
    what it draws, and its printer would itself recurse too deep on the real thing)."""

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"Deep({self.kind!r})"

    def build(self):
        value = [] if self.kind == "list" else {}
        for _ in range(2000):  # deep enough for recursive walkers and printers, small enough to build
            value = [value] if self.kind == "list" else {"a": value}
        return value


def materialize(tree):
    """``tree`` with every ``Deep`` placeholder built."""
    if isinstance(tree, Deep):
        return tree.build()
    if isinstance(tree, dict):
        return {key: materialize(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(materialize(value) for value in tree)
    return tree


def _paths(tree, prefix=()):
    """Every location inside ``tree`` as a tuple of keys and indices (the root is ())."""
    yield prefix
    if len(prefix) > 20:  # inside a very deep nesting an edit adds nothing
        return
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _paths(value, prefix + (index,))


def _get(tree, path):
    for step in path:
        tree = tree[step]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    parent = _get(tree, path[:-1])
    if isinstance(parent, tuple):
        parent = list(parent)
        parent[path[-1]] = value
        return _set(tree, path[:-1], parent)
    parent[path[-1]] = value
    return tree


def _array_edit(draw, array):
    edit = draw(st.sampled_from(["nan", "inf", "huge", "negative", "reshape", "strings", "empty", "ints",
                                 "bool", "scalar", "big_dims"]))
    array = np.array(array)
    if edit in ("nan", "inf", "huge", "negative") and array.size and np.issubdtype(array.dtype, np.floating):
        flat = array.reshape(-1).copy()
        flat[draw(st.integers(0, flat.size - 1))] = {"nan": np.nan, "inf": np.inf, "huge": 1e30,
                                                       "negative": -1e4}[edit]
        return flat.reshape(array.shape)
    if edit == "reshape" and array.size:
        return array.reshape(-1)
    if edit == "strings":
        return array.astype(str)
    if edit == "empty":
        return array[:0]
    if edit == "ints":
        return np.nan_to_num(array).astype(np.int64) if np.issubdtype(array.dtype, np.number) else array
    if edit == "bool":
        return array.astype(bool) if np.issubdtype(array.dtype, np.number) else array
    if edit == "scalar":
        return np.float64(7.0)
    if edit == "big_dims":
        return np.zeros((2,) * 6, dtype=np.float32)
    return array


@st.composite
def mutated_tree(draw, valid, max_edits=3):
    """``valid`` (a parsed file: dicts, lists, scalars, numpy arrays) with 1 to ``max_edits`` structural edits."""
    tree = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_edits))):
        locations = list(_paths(tree))
        path = draw(st.sampled_from(locations))
        value = _get(tree, path)
        edit = draw(st.sampled_from(["replace", "delete", "wrap", "unwrap", "repeat", "deep", "array", "rename"]))
        if edit == "delete" and path:
            parent = _get(tree, path[:-1])
            if isinstance(parent, dict):
                del parent[path[-1]]
                continue
            if isinstance(parent, list):
                del parent[path[-1]]
                continue
        if edit == "wrap":
            tree = _set(tree, path, [value])
        elif edit == "unwrap" and isinstance(value, (list, tuple)) and value:
            tree = _set(tree, path, value[0])
        elif edit == "repeat" and isinstance(value, list):
            tree = _set(tree, path, value * draw(st.sampled_from([0, 2, 50])))
        elif edit == "deep":
            tree = _set(tree, path, Deep(draw(st.sampled_from(["list", "dict"]))))
        elif edit == "array" and isinstance(value, np.ndarray):
            tree = _set(tree, path, _array_edit(draw, value))
        elif edit == "rename" and path and isinstance(_get(tree, path[:-1]), dict):
            parent = _get(tree, path[:-1])
            parent[draw(st.sampled_from(["unknown_key", str(path[-1]).upper(), 7, ""]))] = parent.pop(path[-1])
        else:
            tree = _set(tree, path, copy.deepcopy(draw(REPLACEMENTS)))  # later edits must not change the pool
    return tree


@st.composite
def mutated_bytes(draw, valid, text=False):
    """The bytes of a valid file, damaged at the byte level (see the module docstring)."""
    data = bytearray(valid)
    edit = draw(st.sampled_from(["truncate", "flip", "insert", "repeat", "empty", "garbage"]
                                + (["encoding", "bom", "deep_text", "nul"] if text else [])))
    if edit == "truncate":
        return bytes(data[:draw(st.integers(0, max(len(data) - 1, 0)))])
    if edit == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        return bytes(data)
    if edit == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at]) + draw(st.binary(min_size=1, max_size=64)) + bytes(data[at:])
    if edit == "repeat" and data:
        start = draw(st.integers(0, len(data) - 1))
        return bytes(data[:start]) + bytes(data[start:]) * 2
    if edit == "empty":
        return b""
    if edit == "encoding":
        decoded = bytes(data).decode("utf-8", errors="replace") + " ü"
        return decoded.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"])), errors="replace")
    if edit == "bom":
        return b"\xef\xbb\xbf" + bytes(data)
    if edit == "deep_text":
        return draw(st.sampled_from([b"[" * DEEP, b'{"a":' * DEEP, b"- " * DEEP, b"a: " + b"[" * DEEP,
                                     b"&a [*a, *a]"]))
    if edit == "nul":
        return bytes(data) + b"\x00\xff\xfe"
    return draw(st.binary(max_size=512))
