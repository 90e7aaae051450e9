"""Unpickling label files without running code from them.

A pickle names the functions and classes it needs ("globals") and calls them
while loading, so a file from someone else can run anything. Shard labels
(``.pyd``) and CA-PF's label files are dicts and lists of numbers, strings and
numpy arrays; ``loads`` and ``load`` allow exactly the globals those need and
refuse every other with ``RefusedGlobal`` before it is imported or called.

Numpy 2 pickles its functions under ``numpy._core``, numpy 1 under
``numpy.core``; the released shards were written with numpy 1, so both
spellings are allowed. ``torch_safe_globals`` gives the same numpy objects in
the form ``torch.serialization.safe_globals`` takes, for checkpoints whose
non-tensor entries (a learning rate, a best score) are numpy scalars.
"""
import builtins
import codecs
import collections
import io
import pickle

import numpy as np
from numpy._core import multiarray, numeric


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a function or class outside the allow-list; ``name`` is its dotted name."""

    def __init__(self, name):
        super().__init__(f"refused global {name}: only plain data and numpy arrays may be unpickled")
        self.name = name


def _latin1_encode(text, encoding):
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(str, "latin1"); no other codec is needed.
    if encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


def _both_spellings(name, obj):
    """numpy 2's ``numpy._core.X`` and numpy 1's ``numpy.core.X``."""
    return {f"numpy._core.{name}": obj, f"numpy.core.{name}": obj}


_NUMPY_FUNCTIONS = {
    **_both_spellings("multiarray._reconstruct", multiarray._reconstruct),  # ndarray, protocols 2-4
    **_both_spellings("multiarray.scalar", multiarray.scalar),  # numpy scalars (np.float64(...))
    **_both_spellings("numeric._frombuffer", numeric._frombuffer),  # ndarray, protocol 5
}

# Dotted name -> the object it stands for; nothing else can be loaded.
ALLOWED_GLOBALS = {
    **_NUMPY_FUNCTIONS,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "collections.OrderedDict": collections.OrderedDict,
    "_codecs.encode": _latin1_encode,
    # Protocol 2 has no opcodes for these; "__builtin__" is how Python 2 wrote them.
    **{f"{module}.{name}": getattr(builtins, name)
       for module in ("builtins", "__builtin__") for name in ("set", "frozenset", "complex")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        dotted = f"{module}.{name}"
        if dotted not in ALLOWED_GLOBALS:
            raise RefusedGlobal(dotted)
        return ALLOWED_GLOBALS[dotted]


def loads(data):
    """``pickle.loads`` restricted to plain data and numpy arrays.

    Raises:
        RefusedGlobal: the pickle asks for anything else.
        pickle.UnpicklingError: for any other damage (truncated, flipped bytes, nesting
            past the recursion limit, arguments an allowed function rejects): malformed
            content is always this one error, whatever the unpickler tripped over.
    """
    return load(io.BytesIO(data))


def load(stream):
    """``pickle.load`` of an open binary file, restricted and reporting damage like ``loads``."""
    try:
        return _RestrictedUnpickler(stream).load()
    except pickle.UnpicklingError:
        raise
    except OSError:
        raise  # the file, not its content: the caller names it
    except (Exception, RecursionError) as error:  # noqa: B902 - a damaged pickle can raise nearly anything
        raise pickle.UnpicklingError(f"damaged pickle ({type(error).__name__}: {error})") from error


def torch_safe_globals():
    """The numpy objects above for ``torch.serialization.safe_globals`` (both module spellings).

    ``torch.load(weights_only=True)`` also rebuilds a dtype's state, which
    names its class (``numpy.dtypes.Float64DType``, ...): those are listed too.
    """
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUS"]
    named = [(obj, dotted) for dotted, obj in _NUMPY_FUNCTIONS.items()]
    return named + [np.ndarray, np.dtype] + dtype_classes
